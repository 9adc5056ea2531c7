//! QEMU guests for the tests: the diskless image of `scripts/vm-image.sh` and
//! one emulated guest with a virtio-net NIC on a vhost-user socket.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Runs `scripts/vm-image.sh DIR [FLAVOR]`; the guest kernel's path. Fails
/// (does not skip) when QEMU or the image's packages are missing.
pub fn build_image(dir: &Path, flavor: Option<&str>) -> PathBuf {
    let qemu = Command::new("qemu-system-x86_64").arg("--version").output();
    assert!(
        qemu.as_ref().is_ok_and(|o| o.status.success()),
        "qemu-system-x86_64 is missing: install package qemu-system-x86 (bash scripts/setup.sh)"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/vm-image.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .args(flavor)
        .output()
        .expect("run scripts/vm-image.sh");
    assert!(
        out.status.success(),
        "building the guest image failed (bash scripts/setup.sh installs its packages): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// One boot of a guest.
pub struct Guest<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    /// Settings for `/init` (`fs_ip=... fs_role=...`), after the console's.
    pub append: String,
    /// QEMU's `-chardev` of the vhost-user socket, without its id.
    pub chardev: String,
    pub mac: &'a str,
    /// The serial console's file.
    pub serial: &'a Path,
    /// Where QEMU's own messages go.
    pub log: &'a Path,
}

impl Guest<'_> {
    /// Starts QEMU under TCG pinned to CPU 0 (the PMD gets CPU 1).
    pub fn spawn(&self) -> Child {
        let qlog = std::fs::File::create(self.log).expect("qemu log");
        Command::new("taskset")
            .args(["-c", "0", "qemu-system-x86_64"])
            .args(["-accel", "tcg,tb-size=16", "-cpu", "max", "-smp", "1"])
            .args(["-m", "96"])
            .args(["-object", "memory-backend-memfd,id=mem,size=96M,share=on"])
            .args(["-numa", "node,memdev=mem"])
            .arg("-kernel")
            .arg(self.kernel)
            .arg("-initrd")
            .arg(self.initrd)
            .arg("-append")
            .arg(format!(
                "console=ttyS0 quiet loglevel=1 panic=-1 {}",
                self.append
            ))
            .args(["-chardev", &format!("{},id=c0", self.chardev)])
            .args(["-netdev", "type=vhost-user,id=n0,chardev=c0"])
            // vectors=0: QEMU 7.2 under TCG crashes with vhost-user and MSI-X.
            .arg("-device")
            .arg(format!(
                "virtio-net-pci,netdev=n0,mac={},romfile=,vectors=0",
                self.mac
            ))
            // -nodefaults: no user-mode NIC that could reach outside.
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-monitor", "none", "-no-reboot", "-serial"])
            .arg(format!("file:{}", self.serial.display()))
            .stdin(Stdio::null())
            .stdout(qlog.try_clone().expect("log"))
            .stderr(qlog)
            .spawn()
            .expect("start taskset/qemu-system-x86_64")
    }
}
