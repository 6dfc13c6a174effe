//! Shared mappings and the raw accesses to mapped memory: atomics viewed
//! in place, pages faulted in, bytes copied in and out.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64};

use memmap2::{MmapOptions, MmapRaw};

/// Maps all of `file` (`len` bytes, checked by the caller against its
/// size and sealed against shrinking) shared, read-write or read-only.
pub(crate) fn map_shared(file: &File, len: usize, writable: bool) -> io::Result<MmapRaw> {
    if writable {
        MmapOptions::new().len(len).map_raw(file)
    } else {
        MmapOptions::new().len(len).map_raw_read_only(file)
    }
}

/// The atomic at byte `offset` of `map`, if it lies inside and is aligned.
pub(crate) fn atomic_at<A: AtomicCell>(map: &MmapRaw, offset: usize) -> Option<&A> {
    let size = std::mem::size_of::<A>();
    if offset.checked_add(size)? > map.len() || !offset.is_multiple_of(std::mem::align_of::<A>()) {
        return None;
    }
    // The mapping is page-aligned, so `offset`'s alignment is the address's.
    let ptr = map.as_mut_ptr().wrapping_add(offset).cast::<A>();
    // SAFETY: in bounds and aligned (checked above); the mapping lives as
    // long as the borrow of `map`; atomics have no invalid bit patterns
    // and are made for access from many threads — other processes write
    // them through the same instructions.
    Some(unsafe { &*ptr })
}

/// Atomic types that may be viewed in shared memory.
pub(crate) trait AtomicCell {}
impl AtomicCell for AtomicU32 {}
impl AtomicCell for AtomicU64 {}

/// Faults in `len` bytes of `map` at `offset` (writable or readable) in
/// one call; errors (an older kernel, a range past the end) are ignored,
/// as the pages then simply fault in on first touch.
pub(crate) fn populate(map: &MmapRaw, offset: usize, len: usize, write: bool) {
    let advice = if write {
        memmap2::Advice::PopulateWrite
    } else {
        memmap2::Advice::PopulateRead
    };
    if offset.checked_add(len).is_some_and(|end| end <= map.len()) {
        let _ = map.advise_range(advice, offset, len);
    }
}

/// Copies `buf.len()` bytes out of `map` at `offset` (bounds checked by
/// the caller). Concurrent writers elsewhere may leave them torn.
pub(crate) fn copy_out(map: &MmapRaw, offset: usize, buf: &mut [u8]) {
    assert!(offset + buf.len() <= map.len(), "copy_out out of bounds");
    // SAFETY: the source range is inside the mapping (asserted) and the
    // destination is a distinct Rust buffer; bytes have no invalid values.
    unsafe {
        std::ptr::copy_nonoverlapping(
            map.as_ptr().wrapping_add(offset),
            buf.as_mut_ptr(),
            buf.len(),
        );
    }
}

/// Appends `n` bytes of `map` at `offset` to `out` (bounds checked by the
/// caller), without zeroing the room they land in first.
pub(crate) fn copy_out_append(map: &MmapRaw, offset: usize, n: usize, out: &mut Vec<u8>) {
    assert!(
        offset.checked_add(n).is_some_and(|end| end <= map.len()),
        "copy_out out of bounds"
    );
    out.reserve(n);
    // SAFETY: `reserve` made room for `n` bytes past `len`; the source is
    // inside the mapping (asserted) and is not the Vec's own buffer; the
    // copy initializes exactly the `n` bytes that `set_len` then exposes.
    unsafe {
        std::ptr::copy_nonoverlapping(
            map.as_ptr().wrapping_add(offset),
            out.as_mut_ptr().add(out.len()),
            n,
        );
        out.set_len(out.len() + n);
    }
}

/// Copies `data` into `map` at `offset` (bounds checked by the caller).
pub(crate) fn copy_in(map: &MmapRaw, offset: usize, data: &[u8]) {
    assert!(offset + data.len() <= map.len(), "copy_in out of bounds");
    // SAFETY: the destination range is inside the writable mapping
    // (asserted); the source is a distinct Rust buffer.
    unsafe {
        std::ptr::copy_nonoverlapping(
            data.as_ptr(),
            map.as_mut_ptr().wrapping_add(offset),
            data.len(),
        );
    }
}
