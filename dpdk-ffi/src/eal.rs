//! EAL initialisation (once per process) and per-thread registration.

use std::ffi::CString;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::error::{call_error, DpdkError, Result};
use crate::sys;

/// 0: never initialised; 1: initialised and live; 2: init failed or cleaned up.
/// EAL cannot be initialised twice in one process, not even after a failure.
static EAL_STATE: AtomicU8 = AtomicU8::new(0);

/// Proof that the EAL of this process is initialised. Dropping it does not clean the
/// EAL up (ports and mempools may still exist); call [`Eal::cleanup`] last.
#[derive(Debug)]
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Initialises the EAL with `args` (`args[0]` is the program name).
    ///
    /// Fails if the EAL of this process was already initialised (or failed before):
    /// DPDK cannot retry in the same process.
    pub fn init(args: &[String]) -> Result<Eal> {
        // AcqRel: the winner's later DPDK state must be visible to any thread that
        // later observes the state; losers only need the value.
        if EAL_STATE
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(DpdkError::Invalid(
                "rte_eal_init: the EAL of this process was already initialised \
                 (DPDK allows one init per process)"
                    .into(),
            ));
        }
        let mut cargs = Vec::with_capacity(args.len());
        for a in args {
            match CString::new(a.as_str()) {
                Ok(c) => cargs.push(c),
                Err(_) => {
                    EAL_STATE.store(2, Ordering::Release);
                    return Err(DpdkError::Invalid(format!(
                        "rte_eal_init: argument {a:?} contains a NUL byte"
                    )));
                }
            }
        }
        // EAL keeps pointers into argv (it permutes it and may keep option strings),
        // so the strings live for the rest of the process: leaked on purpose, once.
        let argv: &'static mut [*mut libc::c_char] = Vec::leak(
            cargs
                .into_iter()
                .map(|c| c.into_raw())
                .chain(std::iter::once(std::ptr::null_mut()))
                .collect(),
        );
        let argc = (argv.len() - 1) as libc::c_int;
        // SAFETY: argv holds argc valid NUL-terminated strings followed by NULL, all
        // leaked above so they outlive the EAL; this is the only init of this process
        // (guarded by EAL_STATE).
        let ret = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            EAL_STATE.store(2, Ordering::Release);
            return Err(call_error("rte_eal_init", ret));
        }
        Ok(Eal { _private: () })
    }

    /// Whether an EAL is live in this process.
    pub fn is_initialised() -> bool {
        EAL_STATE.load(Ordering::Acquire) == 1
    }

    /// Releases the EAL's resources (hugepage files, memory). Call it after every
    /// port, mempool and registered thread is gone.
    pub fn cleanup(self) -> Result<()> {
        EAL_STATE.store(2, Ordering::Release);
        // SAFETY: the EAL was initialised (we hold the token) and the caller has
        // released every DPDK object, as this method's contract says.
        let ret = unsafe { sys::rte_eal_cleanup() };
        if ret < 0 {
            return Err(call_error("rte_eal_cleanup", ret));
        }
        Ok(())
    }
}

/// Registers the calling (non-EAL) thread with DPDK so it gets an lcore id and with it
/// per-lcore mempool caches (without them forwarding runs ~0.6-0.7x). Returns the lcore.
pub fn register_thread() -> Result<u32> {
    if !Eal::is_initialised() {
        return Err(DpdkError::Invalid(
            "rte_thread_register: EAL is not initialised".into(),
        ));
    }
    // SAFETY: EAL is initialised; registration only touches this thread's state.
    let ret = unsafe { sys::rte_thread_register() };
    if ret < 0 {
        return Err(call_error("rte_thread_register", ret));
    }
    Ok(lcore_id())
}

/// Releases the calling thread's lcore id (before the thread exits).
pub fn unregister_thread() {
    // SAFETY: harmless for a thread that was never registered (DPDK checks).
    unsafe { sys::rte_thread_unregister() }
}

/// The calling thread's lcore id (`u32::MAX`, LCORE_ID_ANY, when not registered).
#[inline]
pub fn lcore_id() -> u32 {
    // SAFETY: reads the calling thread's per-lcore variable through the shim.
    unsafe { sys::fs_lcore_id() }
}

/// The time-stamp counter.
#[inline(always)]
pub fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: rdtsc reads a counter and has no memory effects; every x86_64 CPU has it.
    let t = unsafe { core::arch::x86_64::_rdtsc() };
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: the shim's rte_rdtsc has no memory effects.
    let t = unsafe { sys::fs_rdtsc() };
    t
}

/// Starts loading the cache line holding `*p` into all cache levels (DPDK's
/// `rte_prefetch0`), inline: the PMD issues one for each level of a burst's
/// lookups before reading it.
#[inline(always)]
pub fn prefetch0<T>(p: &T) {
    // A prefetch is a hint: it never faults and has no effect on memory or program
    // state; SSE is part of the x86_64 baseline.
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a hint on any address (above).
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            (p as *const T).cast::<i8>(),
        )
    };
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: rte_prefetch0 is a hint with no effect on memory.
    unsafe {
        sys::fs_prefetch0((p as *const T).cast::<libc::c_void>())
    };
}

/// TSC ticks per second as EAL measured them (0 before EAL init).
pub fn tsc_hz() -> u64 {
    if !Eal::is_initialised() {
        return 0;
    }
    // SAFETY: EAL is initialised, which is when the TSC frequency is known.
    unsafe { sys::rte_get_tsc_hz() }
}
