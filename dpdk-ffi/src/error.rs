//! Typed errors naming the DPDK call and the `rte_errno` text.

use std::ffi::CStr;

use crate::sys;

/// An error from a DPDK call or from the safe layer's own checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpdkError {
    /// A DPDK function failed; `errno` is positive, `reason` is `rte_strerror(errno)`.
    #[error("{call}: {reason} (errno {errno})")]
    Call {
        call: String,
        errno: i32,
        reason: String,
    },
    /// A request the safe layer refused before calling DPDK.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, DpdkError>;

/// The text DPDK gives for an errno value (its own codes included).
pub fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local
    // NUL-terminated string for any errno value; we copy it out at once.
    let p = unsafe { sys::rte_strerror(errno) };
    if p.is_null() {
        return format!("errno {errno}");
    }
    // SAFETY: p is non-null and NUL-terminated (see above), valid until the next
    // rte_strerror call on this thread, and we copy before returning.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The calling thread's `rte_errno`, read through the C shim (never from Rust TLS).
pub(crate) fn last_errno() -> i32 {
    // SAFETY: fs_errno only reads the calling thread's rte_errno.
    unsafe { sys::fs_errno() }
}

/// Error for a call that returned a negative errno (`ret < 0`), or, when `ret` is -1
/// and DPDK's convention is "-1 and rte_errno", the thread's rte_errno.
pub(crate) fn call_error(call: impl Into<String>, ret: i32) -> DpdkError {
    let errno = if ret == -1 {
        match last_errno() {
            0 => 1,
            e => e,
        }
    } else {
        -ret
    };
    DpdkError::Call {
        call: call.into(),
        errno,
        reason: strerror(errno),
    }
}

/// Error for a call that returned NULL and set rte_errno.
pub(crate) fn errno_error(call: impl Into<String>) -> DpdkError {
    let errno = last_errno();
    DpdkError::Call {
        call: call.into(),
        errno,
        reason: strerror(errno),
    }
}
