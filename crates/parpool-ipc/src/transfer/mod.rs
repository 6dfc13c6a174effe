//! Shared memory: [`SharedBytes`], and the side channel that lets shared
//! objects cross the process wire as descriptors instead of bytes.
//!
//! When a process job's input or output is encoded, every `SharedBytes`
//! in it adds its segment to a per-thread list ([`collecting`]) and
//! encodes only its index; the wire sends the segments' descriptors with
//! the frame (`SCM_RIGHTS`). The receiver installs the descriptors it got
//! ([`receiving`]) while it decodes, and each `SharedBytes` maps its own.
//! Outside those two windows a `SharedBytes` serializes as plain bytes.

mod journal;
mod keep;
mod memfd;

pub use journal::{Journal, JournalFlavor, JournalRecord};

pub use keep::{Held, Kept, ObjectId, ReleaseSink, collect_received};
pub(crate) use keep::{Mapped, Watched, note_received};

use std::cell::RefCell;
use std::fmt;
use std::fs::File;
use std::io;
use std::ops::Deref;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One shared memory segment, mapped read-only in this process.
pub(crate) struct Segment {
    file: File,
    map: memmap2::Mmap,
    watched: Watched,
    /// Whether [`SEGMENTS`] lists it (segments received from elsewhere).
    listed: bool,
}

/// The segments this process received and still maps (see [`keep`]).
static SEGMENTS: Mapped<ObjectId, Segment> = Mapped::new();

impl Segment {
    /// A new segment of `len` (> 0) bytes filled by `fill`, then sealed.
    fn create(len: usize, fill: impl FnOnce(&mut [u8])) -> io::Result<Segment> {
        let file = memfd::create(len)?;
        let mut map = memfd::map_fresh(&file, len)?;
        fill(&mut map);
        let map = map.make_read_only()?;
        memfd::seal(&file)?;
        let watched = Watched::new(ObjectId::of(&file)?);
        Ok(Segment {
            file,
            map,
            watched,
            listed: false,
        })
    }

    /// Maps a segment received from another process, or reuses this
    /// process's mapping of it.
    fn open(fd: OwnedFd, len: usize) -> io::Result<Arc<Segment>> {
        let id = ObjectId::of(&fd)?;
        if let Some(segment) = SEGMENTS.get(&id)
            && segment.map.len() == len
        {
            return Ok(segment);
        }
        let file = File::from(fd);
        let map = memfd::map_received(&file, len)?;
        let segment = Arc::new(Segment {
            file,
            map,
            watched: Watched::new(id),
            listed: true,
        });
        SEGMENTS.insert(id, &segment);
        Ok(segment)
    }

    /// The segment's descriptor, to send it to another process.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Anything that crosses the process wire as a descriptor: a
/// `SharedBytes` segment, an `ipc` object.
pub trait ShareFd: Send + Sync {
    /// The descriptor to send.
    fn share_fd(&self) -> BorrowedFd<'_>;

    /// Tells `sink` when the last handle to this object in this process
    /// is dropped, so that a receiver keeping it mapped between messages
    /// ([`Kept`]) can let it go; returns the id it will report. Objects
    /// receivers never keep ignore it and return `None`.
    fn watch(&self, sink: &Arc<dyn ReleaseSink>) -> Option<ObjectId> {
        let _ = sink;
        None
    }
}

impl ShareFd for Segment {
    fn share_fd(&self) -> BorrowedFd<'_> {
        self.fd()
    }

    fn watch(&self, sink: &Arc<dyn ReleaseSink>) -> Option<ObjectId> {
        Some(self.watched.watch(sink))
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.listed {
            SEGMENTS.forget(&self.watched.id());
        }
    }
}

/// A shared object kept alive while its descriptor is in transit.
pub type SharedObject = Arc<dyn ShareFd>;

/// An encoded payload: its bytes and the objects its descriptors refer to.
#[derive(Default, Clone)]
pub struct Encoded {
    /// The encoded bytes.
    pub bytes: Vec<u8>,
    /// The objects whose descriptors travel with them, in index order.
    pub shared: Vec<SharedObject>,
}

impl fmt::Debug for Encoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoded")
            .field("bytes", &self.bytes.len())
            .field("shared", &self.shared.len())
            .finish()
    }
}

thread_local! {
    static OUTGOING: RefCell<Option<Vec<SharedObject>>> = const { RefCell::new(None) };
    /// Set while code that is not an encode for the wire runs inside a
    /// collecting window ([`outside_collecting`]): objects it serializes
    /// serialize as plain bytes.
    static PAUSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };

    static INCOMING: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
    /// Why the last shared segment could not be received. Some formats
    /// (postcard) keep no custom error text, so it is kept here.
    static FAILURE: RefCell<Option<String>> = const { RefCell::new(None) };
}

thread_local! {
    /// The kind of the last object an encode refused to write: an `ipc`
    /// object serialized outside a collecting window.
    static REFUSED: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// Notes that an object of kind `object` refused to serialize (it can only
/// travel as a descriptor, and no collecting window is open); returns
/// `message` for the serializer's error.
pub(crate) fn refuse(message: String, object: &'static str) -> String {
    REFUSED.with(|r| r.set(Some(object)));
    message
}

/// Takes the kind (`"SharedMem"`, `"Queue"`, ...) of the last object that
/// refused to serialize on this thread, because it lives in this
/// machine's shared memory and no collecting window was open: an encode
/// for another machine clears it first ([`forget_refused`]) and reads it
/// after a failure, to say which object was to blame.
pub fn take_refused() -> Option<&'static str> {
    REFUSED.with(std::cell::Cell::take)
}

/// Clears what [`take_refused`] would return.
pub fn forget_refused() {
    REFUSED.with(|r| r.set(None));
}

/// Takes the reason the last [`receiving`] failed to map a segment.
pub fn take_failure() -> Option<String> {
    FAILURE.with(|f| f.borrow_mut().take())
}

/// While an encode is collecting ([`collecting`]), adds `object` to the
/// descriptors to send and returns its index; `None` otherwise.
pub(crate) fn send_descriptor(object: SharedObject) -> Option<u32> {
    if PAUSED.with(std::cell::Cell::get) {
        return None;
    }
    OUTGOING.with(|o| {
        let mut o = o.borrow_mut();
        let list = o.as_mut()?;
        list.push(object);
        u32::try_from(list.len() - 1).ok()
    })
}

/// While a decode is receiving ([`receiving`]), takes descriptor `index`
/// (each can be taken once).
pub(crate) fn take_descriptor(index: u32) -> Option<OwnedFd> {
    INCOMING.with(|i| {
        i.borrow_mut()
            .as_mut()
            .and_then(|fds| fds.get_mut(index as usize))
            .and_then(Option::take)
    })
}

/// A deserialization error whose text survives formats that drop it.
pub(crate) fn fail<E: serde::de::Error>(message: String) -> E {
    let e = E::custom(&message);
    FAILURE.with(|f| *f.borrow_mut() = Some(message));
    e
}

/// Runs `f` (an encode) with segment collection on: each `SharedBytes`
/// it serializes is sent as a descriptor. Returns the segments in order.
pub fn collecting<R>(f: impl FnOnce() -> R) -> (R, Vec<SharedObject>) {
    let _unpaused = Paused::set(false);
    gathering(&OUTGOING, f)
}

/// Sets [`PAUSED`] until dropped, then puts back what it was.
struct Paused(bool);

impl Paused {
    fn set(paused: bool) -> Paused {
        Paused(PAUSED.with(|p| p.replace(paused)))
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        PAUSED.with(|p| p.set(self.0));
    }
}

/// Pauses (or resumes) the open collecting window, cheaply: for user code
/// (a task) that runs between the encodes of one window, so that what it
/// serializes for its own purposes is not taken for the wire. The window
/// (`collecting`, `collecting_onto`) resumes it when it closes.
#[inline]
pub fn pause_collecting(paused: bool) {
    PAUSED.with(|p| p.set(paused));
}

/// Like [`collecting`], with the objects already in `list` counted first:
/// what `f` encodes gets the indices that follow them, so items encoded
/// one by one make up one frame's list. What `f` adds is appended to
/// `list`, also if `f` panics.
pub fn collecting_onto<R>(list: &mut Vec<SharedObject>, f: impl FnOnce() -> R) -> R {
    struct Back<'a> {
        list: &'a mut Vec<SharedObject>,
        previous: Option<Vec<SharedObject>>,
    }
    impl Drop for Back<'_> {
        fn drop(&mut self) {
            let previous = self.previous.take();
            if let Some(all) = OUTGOING.with(|s| std::mem::replace(&mut *s.borrow_mut(), previous))
            {
                *self.list = all;
            }
        }
    }
    let _unpaused = Paused::set(false);
    let previous = OUTGOING.with(|s| s.borrow_mut().replace(std::mem::take(list)));
    let _back = Back { list, previous };
    f()
}

/// Runs `f` with an empty list installed in `slot`, a thread-local that
/// code deep inside `f` appends to; returns `f`'s result and the list.
/// Whatever `slot` held before is put back afterwards, also if `f`
/// panics, so gatherings nest.
fn gathering<T: 'static, R>(
    slot: &'static std::thread::LocalKey<RefCell<Option<Vec<T>>>>,
    f: impl FnOnce() -> R,
) -> (R, Vec<T>) {
    struct Restore<T: 'static> {
        slot: &'static std::thread::LocalKey<RefCell<Option<Vec<T>>>>,
        previous: Option<Vec<T>>,
    }
    impl<T> Drop for Restore<T> {
        fn drop(&mut self) {
            let previous = self.previous.take();
            self.slot.with(|s| *s.borrow_mut() = previous);
        }
    }
    let restore = Restore {
        slot,
        previous: slot.with(|s| s.borrow_mut().replace(Vec::new())),
    };
    let out = f();
    let list = slot.with(|s| s.borrow_mut().take()).unwrap_or_default();
    drop(restore);
    (out, list)
}

/// Runs `f` (a decode) with `fds`, the descriptors that came with the
/// frame, available to the `SharedBytes` it deserializes. Descriptors it
/// does not claim are closed.
pub fn receiving<R>(fds: Vec<OwnedFd>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Vec<Option<OwnedFd>>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            INCOMING.with(|i| *i.borrow_mut() = previous);
        }
    }
    FAILURE.with(|f| f.borrow_mut().take());
    let installed = fds.into_iter().map(Some).collect();
    let _restore = Restore(INCOMING.with(|i| i.borrow_mut().replace(installed)));
    f()
}

/// Immutable bytes in shared memory that cross to and from worker
/// processes without being copied.
///
/// In a process job's input or output (parpool's `ProcessPool`), a
/// `SharedBytes` travels as a file descriptor: the receiving process maps
/// the same memory, so handing a worker 1 GiB costs the same as handing it
/// 1 byte. On a thread pool it is simply moved.
/// Cloning is cheap (the segment is reference-counted), and the memory is
/// freed when the last `SharedBytes` for it is dropped in every process, or
/// those processes die: nothing is left in `/dev/shm` or anywhere else.
///
/// The segment is an anonymous memory file (`memfd`), readable only by
/// processes it is passed to, and sealed once filled: nobody can resize or
/// write it afterwards, so its bytes never change under a reader.
///
/// Serialized by anything other than the process pool's wire (to JSON,
/// say), a `SharedBytes` is written as its plain bytes.
///
/// Each live `SharedBytes` holds one file descriptor; it is meant for
/// large payloads. For small ones the ordinary copy is faster.
///
/// A worker maps a `SharedBytes` once and keeps it mapped while the parent
/// holds a handle, so a dataset handed to job after job costs its page
/// faults only the first time.
///
/// ```
/// use parpool::{Executor, ProcessPool};
/// use parpool::SharedBytes;
///
/// parpool::task! {
///     fn checksum(data: SharedBytes) -> u64 {
///         data.iter().map(|&b| u64::from(b)).sum()
///     }
/// }
///
/// let data = SharedBytes::new(1 << 20, |buf| buf.fill(1))?;
/// let pool = ProcessPool::builder().workers(1).build()?;
/// assert_eq!(pool.submit(checksum, data).join(), Ok(1 << 20));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct SharedBytes {
    segment: Option<Arc<Segment>>,
}

impl SharedBytes {
    /// Creates `len` bytes of shared memory, zero-filled, and lets `fill`
    /// write them before they are sealed.
    ///
    /// # Errors
    /// When the system cannot create or map the memory (out of memory or of
    /// file descriptors).
    pub fn new(len: usize, fill: impl FnOnce(&mut [u8])) -> io::Result<SharedBytes> {
        if len == 0 {
            let mut empty = [0u8; 0];
            fill(&mut empty);
            return Ok(SharedBytes::default());
        }
        Ok(SharedBytes {
            segment: Some(Arc::new(Segment::create(len, fill)?)),
        })
    }

    /// Copies `data` into new shared memory.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn copy_from_slice(data: &[u8]) -> io::Result<SharedBytes> {
        SharedBytes::new(data.len(), |buf| buf.copy_from_slice(data))
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.segment.as_ref().map_or(&[], |s| &s.map[..])
    }

    /// Whether `self` and `other` are the same shared segment in this
    /// process (not merely equal bytes).
    pub fn ptr_eq(&self, other: &SharedBytes) -> bool {
        match (&self.segment, &other.segment) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl Deref for SharedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for SharedBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for SharedBytes {}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBytes")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// How a `SharedBytes` is written: by reference to a descriptor sent with
/// the frame, or inline.
#[derive(Serialize)]
enum Repr<'a> {
    Inline(#[serde(with = "serde_bytes")] &'a [u8]),
    Descriptor { index: u32, len: u64 },
}

#[derive(Deserialize)]
enum OwnedRepr {
    Inline(serde_bytes::ByteBuf),
    Descriptor { index: u32, len: u64 },
}

impl Serialize for SharedBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let index = match &self.segment {
            Some(segment) => send_descriptor(segment.clone()),
            None => None,
        };
        match index {
            Some(index) => Repr::Descriptor {
                index,
                len: self.len() as u64,
            },
            None => Repr::Inline(self.as_slice()),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SharedBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match OwnedRepr::deserialize(deserializer)? {
            OwnedRepr::Inline(bytes) => SharedBytes::copy_from_slice(&bytes)
                .map_err(|e| fail::<D::Error>(format!("cannot create shared memory: {e}"))),
            OwnedRepr::Descriptor { index, len } => {
                let len = usize::try_from(len)
                    .map_err(|_| fail::<D::Error>(format!("shared segment of {len} bytes")))?;
                let fd = take_descriptor(index).ok_or_else(|| {
                    fail::<D::Error>(format!(
                        "shared segment #{index} did not arrive with the message"
                    ))
                })?;
                if len == 0 {
                    return Ok(SharedBytes::default());
                }
                let segment = Segment::open(fd, len).map_err(|e| {
                    fail::<D::Error>(format!("shared segment #{index} is unusable: {e}"))
                })?;
                note_received(segment.watched.id(), segment.clone());
                Ok(SharedBytes {
                    segment: Some(segment),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_what_fill_wrote_and_clones_share_the_segment() {
        let a = SharedBytes::new(10_000, |b| {
            for (i, x) in b.iter_mut().enumerate() {
                *x = i as u8;
            }
        })
        .unwrap();
        assert_eq!(a.len(), 10_000);
        assert_eq!(a[255], 255);
        assert_eq!(a[256], 0);
        let b = a.clone();
        assert!(a.ptr_eq(&b));
        let c = SharedBytes::copy_from_slice(&a).unwrap();
        assert_eq!(a, c);
        assert!(!a.ptr_eq(&c));
    }

    #[test]
    fn empty_needs_no_segment() {
        let e = SharedBytes::new(0, |_| {}).unwrap();
        assert!(e.is_empty());
        assert_eq!(e, SharedBytes::default());
    }

    #[test]
    fn outside_the_wire_it_serializes_as_plain_bytes() {
        let a = SharedBytes::copy_from_slice(b"hello").unwrap();
        let bytes = postcard::to_allocvec(&a).unwrap();
        let back: SharedBytes = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, a);
        assert!(!back.ptr_eq(&a));
    }

    #[test]
    fn on_the_wire_it_travels_as_a_descriptor() {
        let a = SharedBytes::copy_from_slice(&[7u8; 5000]).unwrap();
        let (bytes, shared) = collecting(|| postcard::to_allocvec(&(1u8, a.clone())).unwrap());
        assert_eq!(shared.len(), 1);
        assert!(bytes.len() < 16, "only a reference is encoded");
        let fds = vec![shared[0].share_fd().try_clone_to_owned().unwrap()];
        let (n, back): (u8, SharedBytes) = receiving(fds, || postcard::from_bytes(&bytes).unwrap());
        assert_eq!(n, 1);
        assert_eq!(back, a);
    }

    #[test]
    fn a_missing_descriptor_is_an_error() {
        let a = SharedBytes::copy_from_slice(b"xyz").unwrap();
        let (bytes, _) = collecting(|| postcard::to_allocvec(&a).unwrap());
        let r: Result<SharedBytes, _> = receiving(Vec::new(), || postcard::from_bytes(&bytes));
        assert!(r.is_err());
        let r: Result<SharedBytes, _> = postcard::from_bytes(&bytes);
        assert!(r.is_err());
    }

    #[test]
    fn an_unsealed_or_short_file_is_refused() {
        // A plain memfd, not sealed: a sender could shrink it under us.
        let unsealed = memfd::create(4096).unwrap();
        let (bytes, _) = collecting(|| {
            postcard::to_allocvec(&Repr::Descriptor {
                index: 0,
                len: 4096,
            })
            .unwrap()
        });
        let r: Result<SharedBytes, _> = receiving(vec![OwnedFd::from(unsealed)], || {
            postcard::from_bytes(&bytes)
        });
        assert!(r.is_err());
        let err = take_failure().unwrap();
        assert!(err.contains("not sealed"), "{err}");

        // Sealed, but shorter than announced.
        let short = SharedBytes::copy_from_slice(&[1u8; 100]).unwrap();
        let fd = short
            .segment
            .as_ref()
            .unwrap()
            .fd()
            .try_clone_to_owned()
            .unwrap();
        let bytes = postcard::to_allocvec(&Repr::Descriptor {
            index: 0,
            len: 1 << 20,
        })
        .unwrap();
        let r: Result<SharedBytes, _> = receiving(vec![fd], || postcard::from_bytes(&bytes));
        assert!(r.is_err());
        let err = take_failure().unwrap();
        assert!(err.contains("fewer than"), "{err}");

        // A pipe is no memory file at all.
        let (rd, _wr) = rustix::pipe::pipe().unwrap();
        let bytes = postcard::to_allocvec(&Repr::Descriptor { index: 0, len: 1 }).unwrap();
        let r: Result<SharedBytes, _> = receiving(vec![rd], || postcard::from_bytes(&bytes));
        assert!(r.is_err());
    }

    #[test]
    fn a_sealed_segment_cannot_be_written_or_resized() {
        let a = SharedBytes::copy_from_slice(&[1u8; 4096]).unwrap();
        let fd = a.segment.as_ref().unwrap().fd();
        assert!(rustix::fs::ftruncate(fd, 10).is_err());
        assert!(rustix::io::pwrite(fd, b"x", 0).is_err());
    }
}
