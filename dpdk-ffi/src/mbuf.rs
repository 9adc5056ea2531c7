//! Owned mbufs and inline burst arrays.
//!
//! Fast-path code: no allocation, no lock, no syscall. A burst is an inline array of
//! raw mbuf pointers; ownership moves out as [`Mbuf`] values (one pointer wide), and
//! whatever is left is freed in bulk on drop.

use std::ptr::{self, NonNull};

use crate::mempool::Mempool;
use crate::sys;

/// Largest burst the switch moves in one call.
pub const MAX_BURST: usize = 64;
/// Capacity of a per-port output buffer (two bursts, so a full burst always fits
/// after a flush).
pub const TX_BUFFER_SIZE: usize = 2 * MAX_BURST;

/// One owned packet buffer (one reference of an `rte_mbuf`); freed on drop.
#[repr(transparent)]
pub struct Mbuf {
    ptr: NonNull<sys::rte_mbuf>,
}

// SAFETY: an Mbuf is the single owner of its reference; moving it between threads
// moves that ownership, and freeing goes back to a thread-safe mempool.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes a buffer from `pool`, empty (`None` when the pool is exhausted).
    #[inline]
    pub fn alloc(pool: &Mempool) -> Option<Mbuf> {
        // SAFETY: the pool pointer is valid while `pool` is borrowed.
        let p = unsafe { sys::fs_pktmbuf_alloc(pool.as_ptr()) };
        NonNull::new(p).map(|ptr| Mbuf { ptr })
    }

    /// A buffer holding a copy of `bytes` (`None` if the pool is empty or the bytes do
    /// not fit in one segment).
    pub fn from_slice(pool: &Mempool, bytes: &[u8]) -> Option<Mbuf> {
        let mut m = Mbuf::alloc(pool)?;
        let len = u16::try_from(bytes.len()).ok()?;
        let room = m.append(len)?;
        room.copy_from_slice(bytes);
        Some(m)
    }

    /// Takes ownership of a raw mbuf pointer.
    ///
    /// # Safety
    /// `ptr` must be a valid mbuf whose reference the caller owns and gives up.
    #[inline]
    pub unsafe fn from_raw(ptr: NonNull<sys::rte_mbuf>) -> Mbuf {
        Mbuf { ptr }
    }

    /// Gives up ownership without freeing.
    #[inline]
    pub fn into_raw(self) -> NonNull<sys::rte_mbuf> {
        let p = self.ptr;
        std::mem::forget(self);
        p
    }

    #[inline]
    pub fn as_ptr(&self) -> *mut sys::rte_mbuf {
        self.ptr.as_ptr()
    }

    /// The first segment's bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: the mbuf is valid and owned by self; fs_mbuf_data returns the
        // segment's data pointer and writes its data_len, which DPDK keeps within the
        // buffer. The slice borrows self, so the buffer outlives it.
        unsafe { seg_slice(self.ptr.as_ptr()) }
    }

    /// The first segment's bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`; &mut self makes the borrow exclusive. We hold the only
        // reference unless the mbuf was cloned (refcnt > 1), which this layer never does.
        unsafe { seg_slice_mut(self.ptr.as_ptr()) }
    }

    /// Length of the whole packet (all segments).
    #[inline]
    pub fn pkt_len(&self) -> u32 {
        // SAFETY: reads a field of the mbuf self owns.
        unsafe { pkt_len_of(self.ptr.as_ptr()) }
    }

    /// Number of segments.
    #[inline]
    pub fn nb_segs(&self) -> u16 {
        // SAFETY: reads a field of the mbuf self owns.
        unsafe { (*self.ptr.as_ptr()).nb_segs }
    }

    /// The RSS hash the NIC computed, if the port gave one.
    #[inline]
    pub fn rss_hash(&self) -> Option<u32> {
        // SAFETY: the mbuf is owned by self.
        unsafe { rss_hash_of(self.ptr.as_ptr()) }
    }

    /// A deep copy of the whole packet (all segments) into one new mbuf from `pool`
    /// (`None` if the pool is empty). For sending one packet to several ports when
    /// it changes between them.
    #[inline]
    pub fn copy(&self, pool: &Mempool) -> Option<Mbuf> {
        // SAFETY: self's mbuf and the pool are valid; DPDK allocates a new mbuf and
        // copies the data (offset 0, length UINT32_MAX = everything), or returns NULL.
        let p = unsafe { sys::rte_pktmbuf_copy(self.ptr.as_ptr(), pool.as_ptr(), 0, u32::MAX) };
        NonNull::new(p).map(|ptr| Mbuf { ptr })
    }

    /// Grows the packet by `len` bytes at the tail; the new bytes, or `None` if the
    /// last segment lacks tailroom.
    #[inline]
    pub fn append(&mut self, len: u16) -> Option<&mut [u8]> {
        // SAFETY: the mbuf is owned by self; DPDK checks the tailroom and returns NULL
        // if it is short. On success the returned pointer has `len` writable bytes
        // inside the buffer, borrowed for as long as &mut self.
        unsafe {
            let p = sys::fs_pktmbuf_append(self.ptr.as_ptr(), len);
            (!p.is_null()).then(|| std::slice::from_raw_parts_mut(p, len as usize))
        }
    }

    /// Grows the packet by `len` bytes at the head (false if headroom is short).
    /// Inline, as `rte_pktmbuf_prepend` does it (a tunnel push per packet
    /// went through the C shim for it).
    #[inline]
    pub fn prepend(&mut self, len: u16) -> bool {
        // The field updates of rte_pktmbuf_prepend after its headroom check
        // (the headroom is data_off), on the first segment.
        // SAFETY: self owns the mbuf (exclusive through &mut self); data_off only decreases by at most itself, so buf_addr + data_off stays in the buffer.
        unsafe {
            let m = &mut *self.ptr.as_ptr();
            if len > m.data_off {
                return false;
            }
            m.data_off -= len;
            m.data_len = m.data_len.wrapping_add(len);
            m.pkt_len = m.pkt_len.wrapping_add(u32::from(len));
        }
        true
    }

    /// Removes `len` bytes from the head (false if the first segment is shorter).
    #[inline]
    pub fn adj(&mut self, len: u16) -> bool {
        // rte_pktmbuf_adj, inline (a call per popped packet showed in `perf
        // vxlan-decap`).
        // SAFETY: self owns the mbuf (exclusive through &mut self); plain field writes that keep data_off + data_len within the buffer.
        unsafe {
            let m = &mut *self.ptr.as_ptr();
            if len > m.data_len {
                return false;
            }
            m.data_off += len;
            m.data_len -= len;
            m.pkt_len = m.pkt_len.wrapping_sub(u32::from(len));
        }
        true
    }

    /// Forgets the RSS hash the NIC computed (it described the packet as
    /// received: after a tunnel pop the inner packet is another flow).
    #[inline]
    pub fn clear_rss_hash(&mut self) {
        // The offload flags only say which metadata fields are valid.
        // SAFETY: self owns the mbuf (exclusive through &mut self); a plain write of one of its fields.
        unsafe { (*self.ptr.as_ptr()).ol_flags &= !sys::RTE_MBUF_F_RX_RSS_HASH }
    }

    /// Removes `len` bytes from the tail (false if the last segment is shorter).
    #[inline]
    pub fn trim(&mut self, len: u16) -> bool {
        // SAFETY: the mbuf is owned by self; DPDK checks the length.
        unsafe { sys::fs_pktmbuf_trim(self.ptr.as_ptr(), len) == 0 }
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own this reference and give it back exactly once.
        unsafe { sys::fs_pktmbuf_free(self.ptr.as_ptr()) }
    }
}

// The accessors below read `rte_mbuf` fields directly (bindgen's layout, checked by
// its generated layout assertions) instead of calling the shim: on the fast path a
// non-inlinable call per packet costs more than the whole forwarding budget.

/// # Safety
/// `m` must be a valid mbuf that outlives the returned slice and is not written
/// while it is borrowed.
#[inline(always)]
unsafe fn seg_slice<'a>(m: *mut sys::rte_mbuf) -> &'a [u8] {
    // SAFETY: m is valid (caller); buf_addr + data_off is the first data byte and
    // data_len bytes from there lie inside the segment's buffer (DPDK invariant).
    unsafe {
        let mb = &*m;
        let p = (mb.buf_addr as *const u8).add(mb.data_off as usize);
        std::slice::from_raw_parts(p, mb.data_len as usize)
    }
}

/// # Safety
/// As [`seg_slice`], and the caller holds the only access to the data.
#[inline(always)]
unsafe fn seg_slice_mut<'a>(m: *mut sys::rte_mbuf) -> &'a mut [u8] {
    // SAFETY: as in seg_slice, plus exclusive access (caller).
    unsafe {
        let mb = &*m;
        let p = (mb.buf_addr as *mut u8).add(mb.data_off as usize);
        std::slice::from_raw_parts_mut(p, mb.data_len as usize)
    }
}

/// # Safety
/// `m` must be a valid mbuf.
#[inline(always)]
unsafe fn pkt_len_of(m: *const sys::rte_mbuf) -> u32 {
    // SAFETY: m is valid (caller); a plain field read.
    unsafe { (*m).pkt_len }
}

/// # Safety
/// `m` must be a valid mbuf.
#[inline(always)]
unsafe fn rss_hash_of(m: *const sys::rte_mbuf) -> Option<u32> {
    // SAFETY: m is valid (caller); `hash` is a union of plain integers, and `rss` is
    // what the driver wrote when it set RTE_MBUF_F_RX_RSS_HASH.
    unsafe {
        let mb = &*m;
        (mb.ol_flags & sys::RTE_MBUF_F_RX_RSS_HASH != 0).then_some(mb.__bindgen_anon_2.hash.rss)
    }
}

/// # Safety
/// `m` must be a valid mbuf.
#[inline(always)]
unsafe fn data_len_of(m: *const sys::rte_mbuf) -> u16 {
    // SAFETY: m is valid (caller); a plain field read.
    unsafe { (*m).data_len }
}

/// Up to [`MAX_BURST`] received mbufs in an inline array. Entries are taken out with
/// [`MbufBurst::take`]; whatever is still inside is freed in bulk on drop or
/// [`MbufBurst::clear`].
pub struct MbufBurst {
    pkts: [*mut sys::rte_mbuf; MAX_BURST],
    len: usize,
    /// Entries taken out since the last fill (their slots are null).
    taken: usize,
}

// SAFETY: the burst owns the references of the non-null pointers it holds, like a
// Vec<Mbuf>; moving it moves that ownership.
unsafe impl Send for MbufBurst {}

impl Default for MbufBurst {
    fn default() -> Self {
        Self::new()
    }
}

impl MbufBurst {
    pub const fn new() -> Self {
        MbufBurst {
            pkts: [ptr::null_mut(); MAX_BURST],
            len: 0,
            taken: 0,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The raw array for an rx call to fill (`set_len` afterwards). Must be empty.
    #[inline]
    pub(crate) fn raw_for_fill(&mut self) -> *mut *mut sys::rte_mbuf {
        debug_assert_eq!(self.len, 0);
        self.pkts.as_mut_ptr()
    }

    /// Clears the burst and lets `recv` (an rx call: given the array and a
    /// count of at most [`MAX_BURST`], it returns how many entries it filled)
    /// fill it with up to `max` packets. Returns the count.
    ///
    /// # Safety
    /// `recv` must fill the first entries it counts with valid mbufs whose
    /// ownership passes to the burst, and write no further than the count given.
    #[inline(always)]
    pub(crate) unsafe fn fill(
        &mut self,
        max: usize,
        recv: impl FnOnce(*mut *mut sys::rte_mbuf, u16) -> u16,
    ) -> usize {
        self.clear();
        let n = usize::from(recv(self.raw_for_fill(), max.min(MAX_BURST) as u16)).min(MAX_BURST);
        // SAFETY: `recv` filled the first n entries with owned mbufs (the contract).
        unsafe { self.set_len(n) };
        n
    }

    /// # Safety
    /// The first `len` entries must be valid mbufs whose references this burst owns.
    #[inline]
    pub(crate) unsafe fn set_len(&mut self, len: usize) {
        debug_assert!(len <= MAX_BURST);
        self.len = len;
        self.taken = 0;
    }

    /// Bytes of packet `i`'s first segment; `None` if `i` is out of range or taken.
    #[inline]
    pub fn data(&self, i: usize) -> Option<&[u8]> {
        let m = *self.pkts.get(i..self.len)?.first()?;
        if m.is_null() {
            return None;
        }
        // SAFETY: non-null entries below len are mbufs this burst owns (set_len's
        // contract); the slice borrows self, which keeps the mbuf alive.
        Some(unsafe { seg_slice(m) })
    }

    /// Length of packet `i` (all segments); 0 if out of range or taken.
    #[inline]
    pub fn pkt_len(&self, i: usize) -> u32 {
        match self.pkts.get(i) {
            // SAFETY: non-null entries below len are mbufs this burst owns.
            Some(&m) if i < self.len && !m.is_null() => unsafe { pkt_len_of(m) },
            _ => 0,
        }
    }

    /// The RSS hash of packet `i`, if its port gave one.
    #[inline]
    pub fn rss_hash(&self, i: usize) -> Option<u32> {
        match self.pkts.get(i) {
            // SAFETY: non-null entries below len are mbufs this burst owns.
            Some(&m) if i < self.len && !m.is_null() => unsafe { rss_hash_of(m) },
            _ => None,
        }
    }

    /// Mutable access to packet `i` as an [`Mbuf`] (for actions that grow or shrink
    /// it), without taking it out of the burst.
    #[inline]
    pub fn get_mut(&mut self, i: usize) -> Option<&mut Mbuf> {
        if i >= self.len {
            return None;
        }
        let slot = self.pkts.get_mut(i)?;
        if slot.is_null() {
            return None;
        }
        // SAFETY: Mbuf is repr(transparent) over NonNull<rte_mbuf>, which has the
        // layout of a non-null *mut rte_mbuf; the slot is non-null (checked) and owned
        // by the burst, and the &mut borrows the burst so the slot cannot change or be
        // freed meanwhile. The Mbuf is never dropped through this reference.
        Some(unsafe { &mut *(slot as *mut *mut sys::rte_mbuf as *mut Mbuf) })
    }

    /// Length of packet `i`'s first segment; 0 if out of range or taken.
    #[inline]
    pub fn data_len(&self, i: usize) -> u16 {
        match self.pkts.get(i) {
            // SAFETY: non-null entries below len are mbufs this burst owns.
            Some(&m) if i < self.len && !m.is_null() => unsafe { data_len_of(m) },
            _ => 0,
        }
    }

    /// Writable bytes of packet `i`'s first segment.
    #[inline]
    pub fn data_mut(&mut self, i: usize) -> Option<&mut [u8]> {
        let m = *self.pkts.get(i..self.len)?.first()?;
        if m.is_null() {
            return None;
        }
        // SAFETY: as in `data`; &mut self gives exclusive access.
        Some(unsafe { seg_slice_mut(m) })
    }

    /// Prefetches packet `i`'s first data cache line.
    #[inline]
    pub fn prefetch(&self, i: usize) {
        if let Some(&m) = self.pkts.get(i) {
            if i < self.len && !m.is_null() {
                // SAFETY: m is an mbuf this burst owns; its data pointer is computed
                // from its fields and prefetching has no effect on memory.
                unsafe {
                    let p = ((*m).buf_addr as *const u8).add((*m).data_off as usize);
                    sys::fs_prefetch0(p as *const libc::c_void)
                }
            }
        }
    }

    /// Appends a packet (for bursts the switch makes itself, such as the
    /// packets a tunnel pop recirculates); gives it back when the burst is full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        match self.pkts.get_mut(self.len) {
            Some(slot) => {
                // Ownership of the reference moves into the burst.
                *slot = m.into_raw().as_ptr();
                self.len += 1;
                Ok(())
            }
            None => Err(m),
        }
    }

    /// Moves every packet of `other` into this burst, which must be empty
    /// (false, and nothing moved, if it is not): only the held slots are
    /// copied, not the whole array as a swap of the two would.
    #[inline]
    pub fn move_from(&mut self, other: &mut MbufBurst) -> bool {
        if self.len != 0 {
            return false;
        }
        let n = other.len;
        match (self.pkts.get_mut(..n), other.pkts.get(..n)) {
            (Some(dst), Some(src)) => dst.copy_from_slice(src),
            _ => return false,
        }
        // Ownership of the references moves with the pointers.
        self.len = n;
        self.taken = other.taken;
        other.len = 0;
        other.taken = 0;
        true
    }

    /// Moves packet `i` out of the burst.
    #[inline]
    pub fn take(&mut self, i: usize) -> Option<Mbuf> {
        if i >= self.len {
            return None;
        }
        let slot = self.pkts.get_mut(i)?;
        let p = std::mem::replace(slot, ptr::null_mut());
        if !p.is_null() {
            self.taken += 1;
        }
        // SAFETY: non-null entries below len are references this burst owns; the
        // slot was nulled, so ownership moves to the Mbuf exactly once.
        NonNull::new(p).map(|p| unsafe { Mbuf::from_raw(p) })
    }

    /// Frees every packet still in the burst (in bulk) and empties it.
    #[inline]
    pub fn clear(&mut self) {
        if self.len == 0 || self.taken == self.len {
            // Nothing left to free (every packet was taken): skip the call.
            // Both counts reset: a stale `taken` would make a later clear of
            // pushed packets skip ones still held.
            self.len = 0;
            self.taken = 0;
            return;
        }
        // SAFETY: rte_pktmbuf_free_bulk skips NULL entries; the others are owned
        // references, freed once, after which len is reset so none is reused.
        unsafe { sys::rte_pktmbuf_free_bulk(self.pkts.as_mut_ptr(), self.len as u32) };
        self.len = 0;
        self.taken = 0;
    }
}

impl Drop for MbufBurst {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Output buffer of one tx queue: packets queued during an iteration and sent with
/// one `tx_burst` when flushed.
pub struct TxBuffer {
    pkts: [*mut sys::rte_mbuf; TX_BUFFER_SIZE],
    len: usize,
    /// Sum of the queued packets' lengths.
    bytes: u64,
}

/// What [`TxBuffer::append_burst`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Packets moved to the buffer, and their bytes.
    pub packets: u64,
    pub bytes: u64,
    /// Packets too short, freed, and their bytes.
    pub runts: u64,
    pub runt_bytes: u64,
}

/// What a flush did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxResult {
    pub sent: usize,
    pub sent_bytes: u64,
    /// Packets the port would not take, freed.
    pub dropped: usize,
    /// Extra tx bursts needed because the port took only part of the packets
    /// (OVS's `tx_retries`: a guest's ring filling up, for vhost).
    pub retries: usize,
}

// SAFETY: owns the references it holds, as MbufBurst does.
unsafe impl Send for TxBuffer {}

impl Default for TxBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl TxBuffer {
    pub const fn new() -> Self {
        TxBuffer {
            pkts: [ptr::null_mut(); TX_BUFFER_SIZE],
            len: 0,
            bytes: 0,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == TX_BUFFER_SIZE
    }

    /// Queues `m`; gives it back if the buffer is full (flush, then push again).
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        match self.pkts.get_mut(self.len) {
            Some(slot) => {
                self.bytes += u64::from(m.pkt_len());
                *slot = m.into_raw().as_ptr();
                self.len += 1;
                Ok(())
            }
            None => Err(m),
        }
    }

    /// Free slots.
    #[inline]
    pub fn room(&self) -> usize {
        TX_BUFFER_SIZE - self.len
    }

    /// Moves every packet still in `burst` (skipping taken slots) to the end of this
    /// buffer, in order, and empties the burst; packets whose first segment is
    /// shorter than `min_len` are freed instead (counted as runts). Moves nothing and
    /// returns `None` if the burst might not fit (flush first: an empty buffer always
    /// has room for a burst).
    #[inline]
    pub fn append_burst(&mut self, burst: &mut MbufBurst, min_len: u16) -> Option<Appended> {
        let a = self.append_range(burst, 0..burst.len, min_len)?;
        burst.len = 0;
        burst.taken = 0;
        Some(a)
    }

    /// Moves the packets of `burst` at positions `range` (skipping taken slots) to
    /// the end of this buffer, in order; those shorter than `min_len` are freed
    /// instead (runts). Moves nothing and returns `None` if they might not fit.
    ///
    /// Not inlined: as a function of its own the loop keeps its counters in
    /// registers; inlined into the PMD loop it spilled them (`perf p2p`).
    #[inline(never)]
    pub fn append_range(
        &mut self,
        burst: &mut MbufBurst,
        range: std::ops::Range<usize>,
        min_len: u16,
    ) -> Option<Appended> {
        let end = range.end.min(burst.len);
        let src = burst.pkts.get_mut(range.start..end)?;
        let dst = self.pkts.get_mut(self.len..)?;
        if src.len() > dst.len() {
            return None;
        }
        // Plain locals, and no call inside the loop (runts are freed after it, in
        // bulk), so the loop keeps its counters in registers (`perf p2p`: with the
        // free call inside, `moved` and `bytes` lived on the stack).
        let (mut moved, mut taken, mut bytes, mut runt_bytes) = (0usize, 0usize, 0u64, 0u64);
        // Uninitialised: zeroing it would cost a memset per burst; only the first
        // n_runts entries are ever written and read.
        let mut runts =
            [const { std::mem::MaybeUninit::<*mut sys::rte_mbuf>::uninit() }; MAX_BURST];
        let mut n_runts = 0usize;
        for slot in src.iter_mut() {
            let m = std::mem::replace(slot, ptr::null_mut());
            if m.is_null() {
                continue;
            }
            taken += 1;
            // SAFETY: a non-null entry below burst.len is an mbuf the burst owns; its
            // slot was nulled above (and counted as taken), so it moves once.
            let (pkt_len, data_len) = unsafe { (pkt_len_of(m), data_len_of(m)) };
            if data_len < min_len {
                if let Some(r) = runts.get_mut(n_runts) {
                    r.write(m);
                    n_runts += 1;
                    runt_bytes += u64::from(pkt_len);
                }
                continue;
            }
            // Always Some: src.len() <= dst.len() was checked above.
            if let Some(d) = dst.get_mut(moved) {
                *d = m;
                moved += 1;
                bytes += u64::from(pkt_len);
            }
        }
        if n_runts > 0 {
            // The first n_runts entries were written above (MaybeUninit has the
            // layout of its contents) with mbufs we own (taken out of the burst).
            // SAFETY: n_runts owned, initialised mbufs (above), freed once here.
            unsafe {
                sys::rte_pktmbuf_free_bulk(
                    runts.as_mut_ptr() as *mut *mut sys::rte_mbuf,
                    n_runts as u32,
                )
            };
        }
        let runts = n_runts as u64;
        burst.taken += taken;
        self.len += moved;
        self.bytes += bytes;
        Some(Appended {
            packets: moved as u64,
            bytes,
            runts,
            runt_bytes,
        })
    }

    /// Frees every packet queued (a port that is gone); they count as dropped.
    pub fn discard(&mut self) -> TxResult {
        // Nothing was handed to a driver: every entry below len is still owned
        // by this buffer.
        // SAFETY: owned entries only (above); `finish(0)` frees each once.
        unsafe { self.finish(0) }
    }

    /// Sends what the buffer holds through `send` (a tx call: given the first
    /// unsent entry and how many follow, it returns how many it took), again
    /// while it takes some (each call after the first is a retry); frees what
    /// it did not take. The buffer is empty afterwards.
    ///
    /// # Safety
    /// `send` must take ownership of exactly the first entries it counts.
    #[inline(always)]
    pub(crate) unsafe fn send_all(
        &mut self,
        mut send: impl FnMut(*mut *mut sys::rte_mbuf, u16) -> u16,
    ) -> TxResult {
        let (ptr, len) = (self.pkts.as_mut_ptr(), self.len);
        let mut sent = 0usize;
        let mut bursts = 0usize;
        while sent < len {
            bursts += 1;
            let n = send(ptr.wrapping_add(sent), (len - sent) as u16);
            if n == 0 {
                break;
            }
            sent += usize::from(n);
        }
        // SAFETY: `send` took exactly the first `sent` entries (the contract).
        let mut r = unsafe { self.finish(sent) };
        r.retries = bursts.saturating_sub(1);
        r
    }

    /// Marks the first `sent` packets as handed to the driver and frees the rest
    /// (what the port could not take).
    ///
    /// # Safety
    /// The driver must have taken ownership of exactly the first `sent` entries.
    #[inline]
    pub(crate) unsafe fn finish(&mut self, sent: usize) -> TxResult {
        let sent = sent.min(self.len);
        let unsent = self.len - sent;
        let mut unsent_bytes = 0u64;
        if unsent > 0 {
            for &m in self.pkts.get(sent..self.len).unwrap_or(&[]) {
                // SAFETY: entries sent..len are valid mbufs still owned by this buffer.
                unsent_bytes += u64::from(unsafe { pkt_len_of(m) });
            }
            // SAFETY: entries sent..len are still owned by this buffer (caller's
            // contract); they are freed once and len is reset below.
            unsafe { sys::rte_pktmbuf_free_bulk(self.pkts.as_mut_ptr().add(sent), unsent as u32) };
        }
        let result = TxResult {
            sent,
            sent_bytes: self.bytes - unsent_bytes,
            dropped: unsent,
            retries: 0,
        };
        self.len = 0;
        self.bytes = 0;
        result
    }
}

impl Drop for TxBuffer {
    fn drop(&mut self) {
        // SAFETY: nothing was sent; every entry below len is owned and freed once.
        let _ = unsafe { self.finish(0) };
    }
}
