//! DPDK rings, used to build `net_ring` ports in tests.

use std::ffi::CString;
use std::ptr::NonNull;

use crate::error::{errno_error, DpdkError, Result};
use crate::mbuf::Mbuf;
use crate::sys;

/// A multi-producer/multi-consumer ring of mbuf pointers.
pub struct Ring {
    ptr: NonNull<sys::rte_ring>,
}

// SAFETY: a ring created with default flags is multi-producer/multi-consumer safe.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Ring {
    /// Creates a ring of `count` slots (a power of two; one slot stays unused).
    pub fn create(name: &str, count: u32) -> Result<Ring> {
        let c = CString::new(name)
            .map_err(|_| DpdkError::Invalid(format!("ring name {name:?} has a NUL byte")))?;
        // SAFETY: c is a valid C string; flags 0 = MP/MC.
        let p = unsafe { sys::rte_ring_create(c.as_ptr(), count, sys::SOCKET_ID_ANY, 0) };
        NonNull::new(p)
            .map(|ptr| Ring { ptr })
            .ok_or_else(|| errno_error(format!("rte_ring_create({name}, {count})")))
    }

    pub fn as_ptr(&self) -> *mut sys::rte_ring {
        self.ptr.as_ptr()
    }

    /// Enqueues one mbuf; gives it back if the ring is full.
    pub fn enqueue(&self, m: Mbuf) -> std::result::Result<(), Mbuf> {
        let p = m.into_raw();
        let objs = [p.as_ptr() as *mut libc::c_void];
        // SAFETY: the ring is valid; objs holds one pointer, read during the call.
        let n = unsafe { sys::fs_ring_enqueue_burst(self.ptr.as_ptr(), objs.as_ptr(), 1) };
        if n == 1 {
            Ok(())
        } else {
            // SAFETY: not enqueued, so the reference is still ours.
            Err(unsafe { Mbuf::from_raw(p) })
        }
    }

    /// Dequeues one mbuf.
    pub fn dequeue(&self) -> Option<Mbuf> {
        let mut obj: *mut libc::c_void = std::ptr::null_mut();
        // SAFETY: the ring is valid; room for one object.
        let n = unsafe { sys::fs_ring_dequeue_burst(self.ptr.as_ptr(), &mut obj, 1) };
        if n != 1 {
            return None;
        }
        // SAFETY: only mbufs are put on these rings (by `enqueue` or a ring port's tx),
        // and dequeuing moves their ownership to us.
        NonNull::new(obj as *mut sys::rte_mbuf).map(|p| unsafe { Mbuf::from_raw(p) })
    }

    /// Entries in the ring.
    pub fn count(&self) -> u32 {
        // SAFETY: the ring is valid.
        unsafe { sys::fs_ring_count(self.ptr.as_ptr()) }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        while self.dequeue().is_some() {}
        // SAFETY: we own the ring; ports using it hold an Arc, so none is left.
        unsafe { sys::rte_ring_free(self.ptr.as_ptr()) }
    }
}
