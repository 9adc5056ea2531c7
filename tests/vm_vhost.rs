//! Real VMs on vhost-user ports: two QEMU guests (the Debian cloud kernel and a
//! busybox initramfs that `scripts/vm-image.sh` builds into the test's
//! directory, no disk) on one bridge with the default `NORMAL` flow.
//!
//! Guest `a` answers pings and sinks TCP on port 5001, printing the byte count
//! and SHA-256 of each connection on its serial console; guest `b` pings `a` 5
//! times, sends `seq 1 100000` (588,895 bytes) over TCP, then pings `a` every
//! 0.2 s for good. The test reads both serial logs.
//!
//! - `dpdkvhostuserclient` ports (QEMU owns the sockets, `server=on`): ping and
//!   TCP (exact bytes and checksum on both sides); guest `b` killed and booted
//!   again: pings and TCP again; the switch restarted while both guests run:
//!   `b`'s pings come back within 2 s of the switch answering its control socket.
//! - `dpdkvhostuser` ports (the switch owns the sockets, QEMU `reconnect=1`):
//!   ping and TCP; the switch restarted: QEMU reconnects and pings come back.
//!
//! Needs root, `qemu-system-x86_64` (TCG: `-accel tcg -cpu max`, no KVM here),
//! and the packages of `scripts/setup.sh` (`qemu-system-x86`, `busybox-static`,
//! `cpio`, `kmod`, `linux-image-cloud-amd64`); without them the tests fail and
//! say what is missing. QEMU runs on CPU 0, the switch's PMD on CPU 1. The tests
//! take turns (each boots two guests); about a minute each.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::daemon::{ctl, ctl_json, stop};
use common::vm::{build_image, Guest};

use common::netns::BIN;
/// Guest `b` sends `seq 1 LINES` to guest `a`.
const LINES: u32 = 100_000;
const IP_A: &str = "10.77.0.1";
const IP_B: &str = "10.77.0.2";
const MAC_A: &str = "52:54:00:77:00:01";
const MAC_B: &str = "52:54:00:77:00:02";

/// One test at a time: each runs two emulated guests and a busy PMD.
static TURN: Mutex<()> = Mutex::new(());

/// How a guest's NIC reaches the switch.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// `dpdkvhostuserclient`: QEMU listens (`server=on,wait=off`).
    QemuServer,
    /// `dpdkvhostuser`: the switch listens, QEMU connects (`reconnect=1`).
    SwitchServer,
}

/// One guest: its settings and the running QEMU, if any.
struct Vm {
    name: &'static str,
    port: &'static str,
    ip: &'static str,
    peer: &'static str,
    mac: &'static str,
    role: &'static str,
    qemu: Option<Child>,
    /// The serial log of the current boot (a new file per boot).
    serial: PathBuf,
    boots: u32,
}

/// The switch, the guests and the files of a test, removed on drop (also when
/// the test fails).
struct Lab {
    dir: PathBuf,
    prefix: String,
    mode: Mode,
    kernel: PathBuf,
    initrd: PathBuf,
    switch: Option<Child>,
    vms: [Vm; 2],
}

impl Drop for Lab {
    fn drop(&mut self) {
        for vm in &mut self.vms {
            if let Some(mut q) = vm.qemu.take() {
                let _ = q.kill();
                let _ = q.wait();
            }
        }
        if let Some(mut sw) = self.switch.take() {
            stop(&mut sw);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.prefix));
    }
}

/// The lines `b` prints for each reply from `a`.
fn replies(serial: &str) -> usize {
    serial
        .lines()
        .filter(|l| l.contains(&format!("bytes from {IP_A}: seq=")))
        .count()
}

/// The `FS rx ...`/`FS tx ...` line the guests print for the transfer.
fn transfer_line(dir: &str) -> String {
    let data: String = (1..=LINES).map(|i| format!("{i}\n")).collect();
    let mut sha = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    std::io::Write::write_all(&mut sha.stdin.take().expect("stdin"), data.as_bytes())
        .expect("write");
    let out = sha.wait_with_output().expect("sha256sum");
    let hex = String::from_utf8_lossy(&out.stdout);
    let hex = hex.split_whitespace().next().expect("digest");
    format!("FS {dir} bytes={} sha256={hex}", data.len())
}

impl Lab {
    /// Builds the guest image and writes the switch's config; starts nothing.
    fn new(tag: &str, mode: Mode) -> Lab {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("fs-vm{tag}-{pid}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let vm = |name, port, ip, peer, mac, role| Vm {
            name,
            port,
            ip,
            peer,
            mac,
            role,
            qemu: None,
            serial: PathBuf::new(),
            boots: 0,
        };
        let mut lab = Lab {
            prefix: format!("fs-vm{tag}-{pid}"),
            mode,
            kernel: PathBuf::new(),
            initrd: dir.join("initramfs.cpio.gz"),
            switch: None,
            vms: [
                vm("a", "vm1", IP_A, IP_B, MAC_A, "responder"),
                vm("b", "vm2", IP_B, IP_A, MAC_B, "client"),
            ],
            dir,
        };
        lab.kernel = build_image(&lab.dir, None);
        let ports: String = lab
            .vms
            .iter()
            .map(|vm| match mode {
                Mode::QemuServer => format!(
                    "  [[bridge.port]]\n  name = \"{}\"\n  type = \"dpdkvhostuserclient\"\n  \
                     options = {{ vhost-server-path = \"{}\" }}\n",
                    vm.port,
                    lab.dir.join(format!("{}.sock", vm.name)).display()
                ),
                Mode::SwitchServer => format!(
                    "  [[bridge.port]]\n  name = \"{}\"\n  type = \"dpdkvhostuser\"\n",
                    vm.port
                ),
            })
            .collect();
        std::fs::write(
            lab.dir.join("switch.toml"),
            format!(
                r#"[dpdk]
hugepages = false
memory_mb = 256
file_prefix = "{prefix}"
vhost_sock_dir = "{dir}/socks"
[pmd]
cpus = [1]
[control]
socket = "{dir}/fs.ctl"
[metrics]
listen = "off"
console = false
[[bridge]]
name = "fsvm{tag}{pid}"
{ports}"#,
                prefix = lab.prefix,
                dir = lab.dir.display(),
            ),
        )
        .expect("config");
        lab
    }

    /// The socket of guest `i`'s NIC.
    fn socket(&self, i: usize) -> PathBuf {
        match self.mode {
            Mode::QemuServer => self.dir.join(format!("{}.sock", self.vms[i].name)),
            Mode::SwitchServer => self.dir.join("socks").join(self.vms[i].port),
        }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        ctl(&self.dir.join("fs.ctl"), args)
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        ctl_json(&self.dir.join("fs.ctl"), args)
    }

    /// `vhost.status` of port `name` in `ctl --json show`.
    fn status(&self, name: &str) -> String {
        let show = self.json(&["show"]);
        show["bridges"][0]["ports"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .map(|p| {
                p["vhost"]["status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_else(|| panic!("no port {name} in {show}"))
    }

    fn switch_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("switch.log")).unwrap_or_default()
    }

    fn serial(&self, i: usize) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.vms[i].serial).unwrap_or_default())
            .into_owned()
    }

    /// Starts the switch (its stderr appended to switch.log) and returns when
    /// its control socket answers: the moment the switch is up.
    fn start_switch(&mut self) -> Instant {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("switch.log"))
            .expect("log");
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(self.dir.join("switch.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ferroswitch");
        self.switch = Some(child);
        self.wait("the switch's control socket", 30, |l| {
            l.ctl(&["show"]).status.success()
        });
        Instant::now()
    }

    /// Stops the switch with SIGINT; it must exit cleanly.
    fn stop_switch(&mut self) {
        let mut sw = self.switch.take().expect("switch running");
        let st = stop(&mut sw).expect("the switch stops on SIGINT");
        assert!(st.success(), "switch exit status {st}");
    }

    /// Boots guest `i` (QEMU under TCG, pinned to CPU 0) with a fresh serial log.
    fn boot(&mut self, i: usize) {
        let sock = self.socket(i);
        let chardev = match self.mode {
            Mode::QemuServer => format!("socket,path={},server=on,wait=off", sock.display()),
            Mode::SwitchServer => format!("socket,path={},reconnect=1", sock.display()),
        };
        let vm = &mut self.vms[i];
        vm.boots += 1;
        vm.serial = self.dir.join(format!("{}-{}.serial", vm.name, vm.boots));
        let log = self.dir.join(format!("{}-{}.qemu", vm.name, vm.boots));
        let guest = Guest {
            kernel: &self.kernel,
            initrd: &self.initrd,
            append: format!(
                "fs_ip={} fs_peer={} fs_role={} fs_lines={LINES}",
                vm.ip, vm.peer, vm.role
            ),
            chardev,
            mac: vm.mac,
            serial: &vm.serial,
            log: &log,
        };
        vm.qemu = Some(guest.spawn());
    }

    /// Kills guest `i`'s QEMU (a VM that dies).
    fn kill(&mut self, i: usize) {
        let mut q = self.vms[i].qemu.take().expect("guest running");
        q.kill().expect("kill qemu");
        q.wait().expect("wait qemu");
    }

    /// Asserts both QEMUs still run.
    fn guests_alive(&mut self) {
        for vm in &mut self.vms {
            let q = vm.qemu.as_mut().expect("guest started");
            assert!(
                q.try_wait().expect("qemu").is_none(),
                "guest {}'s QEMU exited",
                vm.name
            );
        }
    }

    /// Polls `done` every 20 ms for up to `secs`; on timeout fails with the
    /// serial logs, QEMU's messages and the switch's log.
    fn wait(&mut self, what: &str, secs: u64, mut done: impl FnMut(&mut Lab) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done(self) {
            if Instant::now() >= deadline {
                let mut msg = format!("timed out ({secs} s) waiting for {what}\n");
                for (i, vm) in self.vms.iter().enumerate() {
                    let qemu = std::fs::read_to_string(
                        self.dir.join(format!("{}-{}.qemu", vm.name, vm.boots)),
                    )
                    .unwrap_or_default();
                    msg += &format!(
                        "--- guest {} serial:\n{}\n--- its QEMU:\n{qemu}\n",
                        vm.name,
                        self.serial(i)
                    );
                }
                msg += &format!("--- switch:\n{}", self.switch_log());
                panic!("{msg}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for `b` to finish its pings and transfer (boot included) and
    /// checks both guests' results; `transfers` is how many `a` has received.
    fn ping_and_tcp(&mut self, secs: u64, transfers: usize) {
        let t = Instant::now();
        self.wait("guest b's transfer", secs, |l| {
            l.serial(1).contains("FS tx ") && l.serial(0).matches("FS rx ").count() >= transfers
        });
        let (a, b) = (self.serial(0), self.serial(1));
        assert!(
            b.contains("5 packets transmitted, 5 packets received"),
            "guest b: 5 pings, 5 replies:\n{b}"
        );
        assert!(b.contains(&transfer_line("tx")), "guest b sent:\n{b}");
        let rx: Vec<&str> = a.lines().filter(|l| l.starts_with("FS rx ")).collect();
        assert_eq!(rx.len(), transfers, "guest a's transfers:\n{a}");
        assert_eq!(
            rx[transfers - 1].trim_end(),
            transfer_line("rx"),
            "guest a received every byte:\n{a}"
        );
        eprintln!(
            "guest b pinged and sent {} bytes {:.1} s after its boot began",
            LINES,
            t.elapsed().as_secs_f64()
        );
    }

    /// Restarts the switch while both guests run; returns how long after the
    /// switch answered its control socket guest `b` saw a reply again.
    fn restart_switch(&mut self) -> Duration {
        // b is in its endless ping.
        self.wait("guest b's pings after the transfer", 30, |l| {
            let s = l.serial(1);
            s.split("FS tx ").nth(1).map(replies).unwrap_or(0) >= 3
        });
        let down = Instant::now();
        self.stop_switch();
        let before = replies(&self.serial(1));
        let up = self.start_switch();
        let mut connected = None;
        self.wait("guest b's replies after the switch's restart", 30, |l| {
            if connected.is_none() && l.vms.iter().all(|vm| l.status(vm.port) == "connected") {
                connected = Some(up.elapsed());
            }
            replies(&l.serial(1)) > before
        });
        let resumed = up.elapsed();
        eprintln!(
            "switch restart: stopped and up again in {:.2} s; once up, both ports connected \
             after {:.2} s, replies again after {:.2} s",
            (up - down).as_secs_f64(),
            connected.map_or(f64::NAN, |c| c.as_secs_f64()),
            resumed.as_secs_f64()
        );
        self.guests_alive();
        for vm in &self.vms {
            assert_eq!(
                self.status(vm.port),
                "connected",
                "{} after the restart",
                vm.port
            );
        }
        resumed
    }

    /// `fdb-show` of the bridge: each guest's MAC on its port.
    fn assert_learned(&self) {
        let bridge = format!(
            "fsvm{}{}",
            if self.mode == Mode::QemuServer {
                "c"
            } else {
                "s"
            },
            std::process::id()
        );
        let fdb = self.json(&["fdb-show", &bridge]);
        for (port, mac) in [(1, MAC_A), (2, MAC_B)] {
            assert!(
                fdb.as_array()
                    .is_some_and(|es| es.iter().any(|e| e["mac"] == mac && e["port"] == port)),
                "{mac} on port {port} in {fdb}"
            );
        }
    }
}

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn vms_on_client_ports_ping_tcp_and_survive_guest_and_switch_restarts() {
    let _turn = turn();
    let mut lab = Lab::new("c", Mode::QemuServer);
    lab.start_switch();
    // QEMU waits for the switch to connect to its socket, then boots.
    lab.boot(0);
    lab.boot(1);
    lab.ping_and_tcp(120, 1);
    lab.assert_learned();
    let log = lab.switch_log();
    for event in ["port vm1: link up", "port vm2: link up"] {
        assert!(log.contains(event), "{event:?} not logged:\n{log}");
    }

    // Guest b dies: its port goes down; booted again, it pings and sends again.
    lab.kill(1);
    lab.wait("vm2 down and logged", 20, |l| {
        l.status("vm2") == "disconnected" && l.switch_log().contains("port vm2: link down")
    });
    lab.boot(1);
    lab.ping_and_tcp(90, 2);
    assert_eq!(lab.status("vm2"), "connected");

    // The switch restarts with the same config; the guests keep running, it
    // connects to their sockets again and b's pings come back within 2 s.
    let resumed = lab.restart_switch();
    assert!(
        resumed < Duration::from_secs(2),
        "pings came back {resumed:?} after the switch was up, want < 2 s"
    );
}

#[test]
fn vms_on_server_ports_ping_tcp_and_reconnect_after_switch_restart() {
    let _turn = turn();
    let mut lab = Lab::new("s", Mode::SwitchServer);
    lab.start_switch();
    for i in 0..2 {
        assert!(
            lab.socket(i).exists(),
            "the switch made {:?}",
            lab.socket(i)
        );
    }
    lab.boot(0);
    lab.boot(1);
    lab.ping_and_tcp(120, 1);
    lab.assert_learned();

    // The switch restarts: it removes and makes its sockets again; QEMU
    // (reconnect=1) retries every second, so replies come back within a few.
    let resumed = lab.restart_switch();
    assert!(
        resumed < Duration::from_secs(10),
        "pings came back {resumed:?} after the switch was up"
    );
}
