//! CPU time of one thread of another process, from /proc. Benchmarks divide packets
//! by the forwarding thread's own CPU time too, since the machine is shared.

use std::path::Path;

/// Clock ticks per second of /proc's utime/stime (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// The thread of `pid` whose name (`comm`) starts with `prefix`.
pub fn find_thread(pid: u32, prefix: &str) -> Option<u32> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for e in dir.flatten() {
        let tid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with(prefix) {
            return Some(tid);
        }
    }
    None
}

/// User + system CPU seconds used so far by thread `tid` of `pid`.
pub fn thread_cpu_seconds(pid: u32, tid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(Path::new(&format!("/proc/{pid}/task/{tid}/stat"))).ok()?;
    // Fields after the parenthesised comm: state is field 3; utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}
