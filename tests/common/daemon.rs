//! Helpers for tests that run the real daemon: stop it, ask it over `ctl`.
//! Each test binary uses some of them.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use super::netns::BIN;

/// SIGINT, then SIGKILL after 10 s; the exit status if it stopped by itself.
pub fn stop(c: &mut Child) -> Option<std::process::ExitStatus> {
    let _ = Command::new("kill")
        .args(["-INT", &c.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(st)) = c.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
    None
}

/// `ferroswitch ctl --socket SOCK ARGS`.
pub fn ctl(sock: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(sock)
        .args(args)
        .output()
        .expect("run ferroswitch ctl")
}

/// `ctl --json ARGS`, which must succeed: its output.
pub fn ctl_json(sock: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let out = ctl(sock, &a);
    assert!(
        out.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}
