//! Quiescent points of the PMDs: each iteration of a PMD's loop begins with one.
//! A thread outside the PMDs that has withdrawn something the PMDs read between
//! two such points (a vhost device's id, when its guest goes away) waits here
//! until every running PMD has passed its next point; from then on none can
//! still be using what was withdrawn.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One PMD's counter, alone in its cache line (the PMD writes it every
/// iteration; others read it only while waiting).
#[repr(align(64))]
#[derive(Default)]
struct Epoch {
    passed: AtomicU64,
    running: AtomicBool,
}

/// The quiescent-point counters of a datapath's PMDs, by PMD index.
pub struct Quiescence {
    pmds: Box<[Epoch]>,
}

/// How long [`Quiescence::wait`] waits for a PMD before it gives up and says so
/// (a PMD iteration takes microseconds; only a stalled thread takes this long).
const WAIT_LIMIT: Duration = Duration::from_secs(2);

impl Quiescence {
    pub fn new(n_pmds: usize) -> Quiescence {
        Quiescence {
            pmds: (0..n_pmds).map(|_| Epoch::default()).collect(),
        }
    }

    /// PMD `pmd` is between iterations: nothing it read before is in use.
    #[inline(always)]
    pub(crate) fn pass(&self, pmd: usize) {
        if let Some(e) = self.pmds.get(pmd) {
            // SeqCst (a locked add): later reads of this PMD are ordered after it,
            // against the waiter's SeqCst withdrawal and reads (see `wait`).
            e.passed.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// PMD `pmd` starts (`true`) or has stopped (`false`) polling.
    pub(crate) fn set_running(&self, pmd: usize, running: bool) {
        if let Some(e) = self.pmds.get(pmd) {
            e.running.store(running, Ordering::SeqCst);
        }
    }

    /// Returns once every running PMD has passed a quiescent point after the
    /// call began. The caller withdraws (with a SeqCst store) before calling.
    pub fn wait(&self) {
        let seen: Vec<u64> = self
            .pmds
            .iter()
            .map(|e| e.passed.load(Ordering::SeqCst))
            .collect();
        let deadline = Instant::now() + WAIT_LIMIT;
        for (i, (e, &s)) in self.pmds.iter().zip(&seen).enumerate() {
            while e.running.load(Ordering::SeqCst) && e.passed.load(Ordering::SeqCst) == s {
                if Instant::now() > deadline {
                    eprintln!(
                        "ferroswitch: PMD {i} passed no quiescent point in {WAIT_LIMIT:?}; going on"
                    );
                    break;
                }
                std::thread::yield_now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn waits_for_running_pmds_only() {
        let q = Arc::new(Quiescence::new(2));
        // Nothing runs: no wait.
        let t = Instant::now();
        q.wait();
        assert!(t.elapsed() < Duration::from_millis(500));
        q.set_running(1, true);
        let q2 = q.clone();
        let waiter = std::thread::spawn(move || {
            q2.wait();
            Instant::now()
        });
        std::thread::sleep(Duration::from_millis(100));
        let passed_at = Instant::now();
        q.pass(1);
        let done = waiter.join().expect("waiter");
        assert!(done >= passed_at, "returned before PMD 1 passed a point");
    }
}
