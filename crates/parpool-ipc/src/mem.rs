//! [`SharedMem`] and its typed view [`SharedSlice`].

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64};

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::region::{self, HEADER, Kind, Region};
use super::sys;

/// A block of memory shared between processes and threads, like Python's
/// `multiprocessing.shared_memory.SharedMemory`.
///
/// Put a `SharedMem` (or a clone: clones are the same memory) in a job's
/// input and the job, in a worker process or on a thread, works on the
/// **same** bytes; return one from a job and the parent gets them. The
/// memory is an anonymous memory file, never world-readable and never in
/// `/dev/shm`; it is freed when the last handle in any process is dropped
/// or its process dies. Its size is fixed at creation.
///
/// A worker process (parpool's `ProcessPool`) maps a `SharedMem` once
/// and keeps it mapped while the parent holds a handle, so an array handed
/// to job after job costs its page faults only the first time.
///
/// Access is by copying ([`read`](Self::read), [`write`](Self::write)),
/// by atomics ([`atomic_u64`](Self::atomic_u64), like
/// `multiprocessing.Value`), or, when the program guarantees nobody writes
/// the same bytes concurrently, as a slice ([`SharedSlice`]).
///
/// ```
/// use parpool::ipc::SharedMem;
/// use parpool::{Executor, ProcessPool};
/// use std::sync::atomic::Ordering;
///
/// parpool::task! {
///     fn tally(mem: SharedMem) -> () {
///         mem.atomic_u64(0).unwrap().fetch_add(1, Ordering::SeqCst);
///     }
/// }
///
/// let mem = SharedMem::new(64)?;
/// let pool = ProcessPool::builder().workers(2).build()?;
/// let handles: Vec<_> = (0..10).map(|_| pool.submit(tally, mem.clone())).collect();
/// for h in handles {
///     h.join()?;
/// }
/// assert_eq!(mem.atomic_u64(0).unwrap().load(Ordering::SeqCst), 10);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct SharedMem {
    region: Arc<Region>,
    /// Whether this handle may write (and, sent to a worker, is mapped
    /// writable there).
    writable: bool,
}

/// Why an access to a [`SharedMem`] was refused; nothing was touched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// The range is outside the memory.
    #[error("bytes {offset}..{end} are outside the shared memory's {len} bytes", end = offset.saturating_add(*size))]
    OutOfRange {
        /// Where the access started.
        offset: usize,
        /// How many bytes it covered.
        size: usize,
        /// The memory's size.
        len: usize,
    },
    /// The handle is read-only ([`SharedMem::read_only`]).
    #[error("this shared memory handle is read-only")]
    ReadOnly,
}

impl SharedMem {
    /// `len` bytes of zeroed shared memory.
    ///
    /// # Errors
    /// When the system cannot create or map it.
    pub fn new(len: usize) -> io::Result<SharedMem> {
        Ok(SharedMem {
            region: Arc::new(Region::create(Kind::Mem, len)?),
            writable: true,
        })
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.region.len()
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A handle to the same memory that can only read. Sent to a worker,
    /// it is mapped read-only there: the worker cannot write it even by
    /// mistake.
    pub fn read_only(&self) -> SharedMem {
        SharedMem {
            region: self.region.clone(),
            writable: false,
        }
    }

    /// Whether this handle may write.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// The address of its first byte, for code that hands the memory to
    /// another keeper of raw bytes (a Python buffer, say). It stays valid
    /// while this handle or a clone of it lives. Writing through it is for
    /// a writable handle only (a read-only one received from another
    /// process is mapped read-only: a write faults), and like any access to
    /// shared memory it races with other processes' unless they order it.
    pub fn as_ptr(&self) -> *mut u8 {
        self.region.payload()
    }

    fn check(&self, offset: usize, size: usize) -> Result<(), AccessError> {
        match offset.checked_add(size) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(AccessError::OutOfRange {
                offset,
                size,
                len: self.len(),
            }),
        }
    }

    /// Copies bytes from `offset` into `buf`. Bytes another process writes
    /// at the same time may arrive torn: order such accesses with a
    /// [`Mutex`](super::Mutex) or an [`Event`](super::Event).
    ///
    /// # Errors
    /// When the range is outside the memory; nothing is read.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), AccessError> {
        self.check(offset, buf.len())?;
        sys::copy_out(self.region.map(), HEADER + offset, buf);
        Ok(())
    }

    /// Copies `data` into the memory at `offset`.
    ///
    /// # Errors
    /// When the range is outside the memory or the handle is read-only;
    /// nothing is written.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<(), AccessError> {
        if !self.writable {
            return Err(AccessError::ReadOnly);
        }
        self.check(offset, data.len())?;
        sys::copy_in(self.region.map(), HEADER + offset, data);
        Ok(())
    }

    /// Maps in the pages of `offset..offset + len` now, in one system
    /// call, instead of one page fault per page at first touch: worth it
    /// before reading or writing a large part of the memory (tens of
    /// megabytes cost a fault every 4 KiB otherwise). Writable on a
    /// writable handle, readable on a read-only one; the contents do not
    /// change. Best effort: kernels before 5.14 ignore it, and the range
    /// is clipped to the memory.
    pub fn prefault(&self, offset: usize, len: usize) {
        let end = offset.saturating_add(len).min(self.len());
        if offset < end {
            sys::populate(
                self.region.map(),
                HEADER + offset,
                end - offset,
                self.writable,
            );
        }
    }

    /// The `index`-th 8-byte word as an atomic shared by every process
    /// that has this memory; `None` past the end or on a read-only handle.
    pub fn atomic_u64(&self, index: usize) -> Option<&AtomicU64> {
        if !self.writable {
            return None;
        }
        let offset = index.checked_mul(8)?;
        self.check(offset, 8).ok()?;
        sys::atomic_at(self.region.map(), HEADER + offset)
    }

    /// The `index`-th 4-byte word as a shared atomic; `None` past the end
    /// or on a read-only handle.
    pub fn atomic_u32(&self, index: usize) -> Option<&AtomicU32> {
        if !self.writable {
            return None;
        }
        let offset = index.checked_mul(4)?;
        self.check(offset, 4).ok()?;
        sys::atomic_at(self.region.map(), HEADER + offset)
    }

    /// A typed view of the memory as `len() / size_of::<T>()` elements.
    /// `T` may need an alignment of at most 64 bytes (checked when
    /// compiling).
    pub fn slice<T: Pod>(&self) -> SharedSlice<T> {
        const { assert!(std::mem::align_of::<T>() <= 64) };
        SharedSlice {
            mem: self.clone(),
            _t: PhantomData,
        }
    }

    /// Whether `self` and `other` are the same mapping in this process.
    pub fn ptr_eq(&self, other: &SharedMem) -> bool {
        Arc::ptr_eq(&self.region, &other.region)
    }
}

impl fmt::Debug for SharedMem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMem")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// Serializes as a descriptor: only inside a parpool job's input or output.
impl Serialize for SharedMem {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.len() as u64, self.writable, SendRegion(&self.region)).serialize(s)
    }
}

struct SendRegion<'a>(&'a Arc<Region>);

impl Serialize for SendRegion<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        region::serialize(self.0, Kind::Mem, s)
    }
}

impl<'de> Deserialize<'de> for SharedMem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SharedMem;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a shared memory reference")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SharedMem, A::Error> {
                let len: u64 = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                let len = usize::try_from(len).map_err(A::Error::custom)?;
                let writable: bool = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                let region = seq
                    .next_element_seed(MemSeed { len, writable })?
                    .ok_or_else(|| A::Error::invalid_length(2, &self))?;
                Ok(SharedMem { region, writable })
            }
        }
        d.deserialize_tuple(3, V)
    }
}

/// Deserializes a region of a known kind and payload size.
pub(crate) struct RegionSeed {
    pub(crate) kind: Kind,
    pub(crate) len: usize,
}

/// [`RegionSeed`] for plain memory that may be mapped read-only.
struct MemSeed {
    len: usize,
    writable: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for MemSeed {
    type Value = Arc<Region>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Arc<Region>, D::Error> {
        region::deserialize(d, Kind::Mem, self.len, self.writable)
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for RegionSeed {
    type Value = Arc<Region>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Arc<Region>, D::Error> {
        region::deserialize(d, self.kind, self.len, true)
    }
}

/// A typed view of a [`SharedMem`]: `len() / size_of::<T>()` elements of
/// a plain-data type (like `multiprocessing.Array`, or a NumPy array on
/// shared memory).
///
/// Element access copies ([`get`](Self::get), [`set`](Self::set),
/// [`copy_to`](Self::copy_to), [`copy_from`](Self::copy_from)); borrowing
/// the elements in place is `unsafe`, because Rust cannot see writes made
/// by other processes.
#[derive(Clone)]
pub struct SharedSlice<T> {
    mem: SharedMem,
    _t: PhantomData<T>,
}

impl<T: Pod> SharedSlice<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.mem.len() / std::mem::size_of::<T>().max(1)
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The memory behind the view.
    pub fn mem(&self) -> &SharedMem {
        &self.mem
    }

    /// Element `i`, copied out; `None` past the end.
    pub fn get(&self, i: usize) -> Option<T> {
        let mut v = T::zeroed();
        let offset = i.checked_mul(std::mem::size_of::<T>())?;
        self.mem.read(offset, bytemuck::bytes_of_mut(&mut v)).ok()?;
        Some(v)
    }

    /// Sets element `i`.
    ///
    /// # Errors
    /// When `i` is past the end; nothing is written.
    pub fn set(&self, i: usize, value: T) -> Result<(), AccessError> {
        let size = std::mem::size_of::<T>();
        let offset = i.saturating_mul(size);
        self.mem.write(offset, bytemuck::bytes_of(&value))
    }

    /// Copies elements from `start` into `out`.
    ///
    /// # Errors
    /// When the range is past the end; nothing is read.
    pub fn copy_to(&self, start: usize, out: &mut [T]) -> Result<(), AccessError> {
        let offset = start.saturating_mul(std::mem::size_of::<T>());
        self.mem.read(offset, bytemuck::cast_slice_mut(out))
    }

    /// Copies `data` into the elements from `start`.
    ///
    /// # Errors
    /// When the range is past the end; nothing is written.
    pub fn copy_from(&self, start: usize, data: &[T]) -> Result<(), AccessError> {
        let offset = start.saturating_mul(std::mem::size_of::<T>());
        self.mem.write(offset, bytemuck::cast_slice(data))
    }

    /// The elements, borrowed in place (no copy).
    ///
    /// # Safety
    /// While the slice lives, no thread or process may write the elements
    /// (for example: workers fill their parts, then signal an [`Event`]
    /// or finish their job, and only then is this called).
    ///
    /// [`Event`]: super::Event
    pub unsafe fn as_slice(&self) -> &[T] {
        let ptr = self.mem.region.payload().cast::<T>();
        // SAFETY: the payload is 64-byte aligned (after a 64-byte header in
        // a page-aligned mapping), enough for `T` (asserted by `slice`, the
        // only constructor);
        // it holds `len()` elements; any bit pattern is a valid `T`; the
        // caller promises no concurrent writes while it is borrowed.
        unsafe { std::slice::from_raw_parts(ptr, self.len()) }
    }

    /// The elements, mutably borrowed in place (no copy); `None` on a
    /// read-only handle.
    ///
    /// # Safety
    /// While the slice lives, no other thread or process may read or
    /// write the elements it covers.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> Option<&mut [T]> {
        if !self.mem.writable {
            return None;
        }
        let ptr = self.mem.region.payload().cast::<T>();
        // SAFETY: as in `as_slice` (alignment, size, any bit pattern
        // valid); the mapping is writable (a read-only handle stopped
        // above); the caller promises exclusive access to the elements.
        Some(unsafe { std::slice::from_raw_parts_mut(ptr, self.len()) })
    }
}

impl<T> fmt::Debug for SharedSlice<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSlice")
            .field(
                "elements",
                &(self.mem.len() / std::mem::size_of::<T>().max(1)),
            )
            .finish_non_exhaustive()
    }
}

impl<T> Serialize for SharedSlice<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.mem.serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for SharedSlice<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(SharedMem::deserialize(d)?.slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `as_ptr` is the mapping the accessors read and write, clones
    /// included.
    #[test]
    fn as_ptr_is_the_memory_itself() {
        let mem = SharedMem::new(64).unwrap();
        mem.write(10, b"abc").unwrap();
        let clone = mem.clone();
        assert_eq!(mem.as_ptr(), clone.as_ptr());
        // SAFETY: 64 bytes are mapped at `as_ptr` while `mem` lives, and
        // no other thread or process touches them during this test.
        let seen = unsafe { std::slice::from_raw_parts(mem.as_ptr(), 64) };
        assert_eq!(&seen[10..13], b"abc");
        // SAFETY: as above; the handle is writable.
        unsafe { *clone.as_ptr().add(20) = b'z' };
        let mut one = [0u8];
        mem.read(20, &mut one).unwrap();
        assert_eq!(one, [b'z']);
    }

    /// An access past the end names its range, even one that does not fit
    /// in a `usize` (formatting it once overflowed).
    #[test]
    fn an_access_out_of_range_says_where_whatever_its_numbers() {
        let m = SharedMem::new(16).unwrap();
        let mut buf = [0u8; 4];
        let err = m.read(usize::MAX, &mut buf).unwrap_err();
        assert!(
            err.to_string()
                .contains("outside the shared memory's 16 bytes"),
            "{err}"
        );
        assert!(matches!(
            m.write(12, &[0; 8]),
            Err(AccessError::OutOfRange { .. })
        ));
    }
}
