//! A network namespace of one contender's run (the tunnel scenarios).
//!
//! Native tunneling needs an address on the switch's internal port (the
//! tunnel endpoint, a tap device in the kernel) and the kernel's route to the
//! remote endpoint through it. Each contender runs in a namespace of its own,
//! made for the run and deleted after it: the address, the route and the
//! taps (OVS's userspace datapath leaves its taps behind) never reach the
//! host's namespace, two contenders' bridges may have the same names, and
//! nothing the kernel does with the endpoint's addresses leaves the
//! namespace (the outer packets themselves go to a `net_null` device).
//! IPv6 is off in it, so the kernel sends no router solicitations or MLD
//! reports out of the taps while the switch forwards.

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// A namespace, deleted (with every virtual device left in it) when dropped.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Makes namespace `name` (an existing one of that name, a leftover of a
    /// killed run, is deleted first), with loopback up and IPv6 disabled for
    /// every interface made in it.
    pub fn create(name: &str) -> Result<Netns> {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        run(Command::new("ip").args(["netns", "add", name]))
            .with_context(|| format!("making network namespace {name}"))?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        for key in [
            "net.ipv6.conf.default.disable_ipv6=1",
            "net.ipv6.conf.all.disable_ipv6=1",
        ] {
            ns.exec("sysctl").args(["-q", "-w", key]).status().ok();
        }
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME PROGRAM`: the program itself runs in the namespace
    /// (`ip` execs it, so the child's pid is the program's).
    pub fn exec(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// The arguments that run a program in the namespace (`ip netns exec
    /// NAME`), to put before it in another command line (`taskset -c 0 ip
    /// netns exec NAME ovs-vswitchd ...`).
    pub fn exec_prefix(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }

    /// `ip -n NAME ARGS`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs a command to completion: its stdout, or an error with its stderr.
fn run(c: &mut Command) -> Result<String> {
    let what = format!("{c:?}");
    let out = c
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
