//! Packet-buffer pools.

use std::ffi::CString;
use std::ptr::NonNull;

use crate::error::{errno_error, DpdkError, Result};
use crate::sys;
use crate::Eal;

/// A pool of packet buffers (`rte_pktmbuf_pool_create`).
///
/// Thread safety: DPDK's default mempool ops are multi-producer/multi-consumer, so a
/// pool is shared by reference between PMD threads and the management thread.
/// Keep it alive (an `Arc`) as long as any port or mbuf uses it; [`crate::EthPort`]
/// holds one for that reason.
pub struct Mempool {
    ptr: NonNull<sys::rte_mempool>,
    name: String,
}

// SAFETY: the pool's default ops (ring_mp_mc) are safe to use from any thread; the
// pointer itself is only freed by Drop, which needs exclusive ownership.
unsafe impl Send for Mempool {}
// SAFETY: as above, concurrent get/put from several threads is what the pool is for.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `n` mbufs with a per-lcore cache of `cache` and
    /// `data_room` bytes of data room each (headroom included).
    pub fn pktmbuf(name: &str, n: u32, cache: u32, data_room: u16) -> Result<Mempool> {
        if !Eal::is_initialised() {
            return Err(DpdkError::Invalid(format!(
                "rte_pktmbuf_pool_create({name}): EAL is not initialised"
            )));
        }
        let cname = CString::new(name)
            .map_err(|_| DpdkError::Invalid(format!("mempool name {name:?} has a NUL byte")))?;
        // SAFETY: cname is a valid C string for the call; the other arguments are
        // plain values DPDK validates itself. SOCKET_ID_ANY lets EAL pick memory.
        let p = unsafe {
            sys::rte_pktmbuf_pool_create(cname.as_ptr(), n, cache, 0, data_room, sys::SOCKET_ID_ANY)
        };
        let ptr = NonNull::new(p)
            .ok_or_else(|| errno_error(format!("rte_pktmbuf_pool_create({name}, n={n})")))?;
        Ok(Mempool {
            ptr,
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.ptr.as_ptr()
    }

    /// Mbufs currently free in the pool (caches included).
    pub fn available(&self) -> u32 {
        // SAFETY: the pool pointer is valid for self's lifetime; the count is a read.
        unsafe { sys::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }

    /// Mbufs currently taken from the pool.
    pub fn in_use(&self) -> u32 {
        // SAFETY: as in `available`.
        unsafe { sys::rte_mempool_in_use_count(self.ptr.as_ptr()) }
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // Mbufs still out (held by a leaked Mbuf or a driver) would dangle if the pool's
        // memory went away: then the pool is leaked instead, until EAL cleanup.
        if self.in_use() != 0 {
            return;
        }
        // SAFETY: we own the pool, ports holding it keep an Arc so none is left, and
        // no mbuf is out (checked just above), so nothing points into its memory.
        unsafe { sys::rte_mempool_free(self.ptr.as_ptr()) }
    }
}
