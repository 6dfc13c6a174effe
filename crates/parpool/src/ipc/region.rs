//! A shared memory region with a validated header: the storage of every
//! `ipc` object, and how it crosses the process wire.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

use memmap2::MmapRaw;
use rustix::fs::{MemfdFlags, SealFlags};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::sys;
use crate::shm::{self, ObjectId, ReleaseSink, ShareFd};

/// Bytes before the payload: magic, version and kind, payload length.
pub(crate) const HEADER: usize = 64;
const MAGIC: u64 = u64::from_le_bytes(*b"PARPOOL\0");
const VERSION: u32 = 2;

/// What a region holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Kind {
    Mem = 1,
    Mutex = 2,
    Semaphore = 3,
    Event = 4,
    Queue = 5,
    Barrier = 6,
    Condvar = 7,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Mem => "SharedMem",
            Kind::Mutex => "Mutex",
            Kind::Semaphore => "Semaphore",
            Kind::Event => "Event",
            Kind::Queue => "Queue",
            Kind::Barrier => "Barrier",
            Kind::Condvar => "Condvar",
        }
    }
}

/// A mapped region: a sealed-size anonymous memory file, mapped shared.
pub(crate) struct Region {
    file: File,
    map: MmapRaw,
    len: usize,
    kind: Kind,
    writable: bool,
    id: ObjectId,
    /// Whether [`OPEN`] lists it (regions received from other processes).
    listed: bool,
    /// Told when this region is dropped ([`ShareFd::watch`]).
    watchers: Mutex<Vec<Weak<dyn ReleaseSink>>>,
}

/// The regions this process received and still maps, by file and access:
/// a region received again (the same array in job after job) reuses the
/// mapping instead of mapping, and faulting in, the memory anew.
static OPEN: LazyLock<Mutex<OpenRegions>> = LazyLock::new(Default::default);

/// By file and whether mapped writable.
type OpenRegions = HashMap<(ObjectId, bool), Weak<Region>>;

fn open_regions() -> std::sync::MutexGuard<'static, OpenRegions> {
    OPEN.lock().unwrap_or_else(PoisonError::into_inner)
}

fn object_id(stat: &rustix::fs::Stat) -> ObjectId {
    // Both are unsigned 64-bit on the 64-bit targets parpool supports.
    #[allow(clippy::unnecessary_cast)]
    ObjectId {
        dev: stat.st_dev as u64,
        ino: stat.st_ino as u64,
    }
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Region {
    /// A new zeroed region of `kind` with `len` payload bytes.
    pub(crate) fn create(kind: Kind, len: usize) -> io::Result<Region> {
        let total = HEADER
            .checked_add(len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "size overflows"))?;
        let fd = rustix::fs::memfd_create(
            "parpool-ipc",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        rustix::fs::ftruncate(&fd, total as u64)?;
        // Its size can never change: a mapping can never reach past the
        // end of the file (which would raise SIGBUS), in any process.
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        let id = object_id(&rustix::fs::fstat(&fd)?);
        let file = File::from(fd);
        let map = sys::map_shared(&file, total, true)?;
        let region = Region::new(file, map, len, kind, true, id);
        region.word(0).store(MAGIC, Ordering::Relaxed);
        region.word(8).store(
            u64::from(VERSION) | (u64::from(kind as u32) << 32),
            Ordering::Relaxed,
        );
        region.word(16).store(len as u64, Ordering::Release);
        Ok(region)
    }

    /// Maps a region received from another process, after checking it is
    /// a sealed memory file with a header of the expected kind.
    /// `writable: false` maps it read-only (only for plain memory).
    pub(crate) fn open(fd: OwnedFd, kind: Kind, len: usize, writable: bool) -> io::Result<Region> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let seals = rustix::fs::fcntl_get_seals(&fd)
            .map_err(|_| invalid("the descriptor is not a sealable memory file".into()))?;
        if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
            return Err(invalid(
                "the memory file is not sealed against resizing".into(),
            ));
        }
        let stat = rustix::fs::fstat(&fd)?;
        let size = stat.st_size.max(0) as usize;
        let expected = HEADER + len;
        if size != expected {
            return Err(invalid(format!(
                "the region holds {size} bytes where kind {} with this payload type needs {expected}",
                kind.name()
            )));
        }
        let file = File::from(fd);
        let map = sys::map_shared(&file, size, writable)?;
        let region = Region::new(file, map, len, kind, writable, object_id(&stat));
        let version_kind = region.word(8).load(Ordering::Acquire);
        if region.word(0).load(Ordering::Acquire) != MAGIC {
            return Err(invalid("the region has no parpool header".into()));
        }
        if version_kind as u32 != VERSION {
            return Err(invalid(format!(
                "the region's format version is {}, this build reads {VERSION}",
                version_kind as u32
            )));
        }
        if (version_kind >> 32) as u32 != kind as u32
            || region.word(16).load(Ordering::Acquire) != len as u64
        {
            return Err(invalid(format!(
                "the region is not of kind {} with this payload type",
                kind.name()
            )));
        }
        Ok(region)
    }

    fn new(file: File, map: MmapRaw, len: usize, kind: Kind, writable: bool, id: ObjectId) -> Self {
        Region {
            file,
            map,
            len,
            kind,
            writable,
            id,
            listed: false,
            watchers: Mutex::new(Vec::new()),
        }
    }

    /// Like [`open`](Self::open), but reuses this process's mapping of the
    /// same file with the same access if it has one.
    fn open_shared(fd: OwnedFd, kind: Kind, len: usize, writable: bool) -> io::Result<Arc<Region>> {
        let id = object_id(&rustix::fs::fstat(&fd)?);
        // The guard is a temporary: it is released before `found` can drop.
        let found = open_regions().get(&(id, writable)).and_then(Weak::upgrade);
        if let Some(region) = found
            && region.kind == kind
            && region.len == len
        {
            return Ok(region);
        }
        // Not mapped here yet, or not as this kind (which `open` refuses).
        let mut region = Region::open(fd, kind, len, writable)?;
        region.listed = true;
        let region = Arc::new(region);
        open_regions().insert((region.id, writable), Arc::downgrade(&region));
        Ok(region)
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        sys::atomic_at(&self.map, offset).expect("header words are in bounds and aligned")
    }

    /// Payload bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The mapping (header included).
    pub(crate) fn map(&self) -> &MmapRaw {
        &self.map
    }

    /// The payload's first byte.
    pub(crate) fn payload(&self) -> *mut u8 {
        self.map.as_mut_ptr().wrapping_add(HEADER)
    }
}

impl ShareFd for Region {
    fn share_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    fn watch(&self, sink: &Arc<dyn ReleaseSink>) -> Option<ObjectId> {
        let mut watchers = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
        // Sinks whose receiver is gone (a pool shut down) are dropped here,
        // so a long-lived region handed to many pools does not pile them up.
        watchers.retain(|w| w.strong_count() > 0);
        let sink = Arc::downgrade(sink);
        if !watchers.iter().any(|w| Weak::ptr_eq(w, &sink)) {
            watchers.push(sink);
        }
        Some(self.id)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if self.listed {
            let mut open = open_regions();
            let key = (self.id, self.writable);
            // Another region for the same file may have been listed since
            // this one's last handle went; that one stays.
            if open.get(&key).is_some_and(|w| w.strong_count() == 0) {
                open.remove(&key);
            }
        }
        let watchers = std::mem::take(
            self.watchers
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for sink in watchers.iter().filter_map(Weak::upgrade) {
            sink.released(self.id);
        }
    }
}

thread_local! {
    /// While a worker decodes a job's input: the regions it received.
    static RECEIVED: RefCell<Option<Vec<Arc<Region>>>> = const { RefCell::new(None) };
}

/// Runs `f` (a job, in a worker) and returns, with its result, the
/// regions its input brought in, for [`Kept`].
pub(crate) fn collect_received<R>(f: impl FnOnce() -> R) -> (R, Vec<Arc<Region>>) {
    struct Restore(Option<Vec<Arc<Region>>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            RECEIVED.with(|r| *r.borrow_mut() = previous);
        }
    }
    let restore = Restore(RECEIVED.with(|r| r.borrow_mut().replace(Vec::new())));
    let out = f();
    let received = RECEIVED.with(|r| r.borrow_mut().take()).unwrap_or_default();
    drop(restore);
    (out, received)
}

/// The shared objects a worker keeps mapped after the jobs that brought
/// them end, so that an object handed to job after job (a large array,
/// say) is mapped and faulted in once, not once per job.
///
/// The parent [watches](ShareFd::watch) what it sends and tells the
/// worker to [`release`](Kept::release) an object when the parent's last
/// handle to it goes: then the worker's mapping goes too, and the memory
/// is freed unless some other process still holds it. At most
/// [`Kept::LIMIT`] objects are kept (each holds a descriptor); past that
/// the least recently used is let go early.
#[derive(Debug, Default)]
pub(crate) struct Kept {
    /// Least recently used first.
    regions: Vec<Arc<Region>>,
}

impl Kept {
    /// How many objects a worker keeps at most.
    pub(crate) const LIMIT: usize = 64;

    /// Keeps `received`, the objects a job just brought in.
    pub(crate) fn keep(&mut self, received: Vec<Arc<Region>>) {
        for region in received {
            self.regions.retain(|r| !Arc::ptr_eq(r, &region));
            self.regions.push(region);
        }
        let over = self.regions.len().saturating_sub(Self::LIMIT);
        self.regions.drain(..over);
    }

    /// Lets go of the objects in `ids` (every access mode of each).
    pub(crate) fn release(&mut self, ids: &[ObjectId]) {
        self.regions.retain(|r| !ids.contains(&r.id));
    }
}

/// Writes `region` as a descriptor reference; only possible inside a
/// parpool job's input or output.
pub(crate) fn serialize<S: Serializer>(
    region: &Arc<Region>,
    kind: Kind,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::Error;
    match shm::send_descriptor(region.clone()) {
        Some(index) => index.serialize(s),
        None => Err(S::Error::custom(format!(
            "a {} can only be sent in the input or output of a parpool job",
            kind.name()
        ))),
    }
}

/// Reads a descriptor reference and maps the region it names.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    d: D,
    kind: Kind,
    len: usize,
    writable: bool,
) -> Result<Arc<Region>, D::Error> {
    let index = u32::deserialize(d)?;
    let fd = shm::take_descriptor(index).ok_or_else(|| {
        shm::fail::<D::Error>(format!(
            "the {} (descriptor #{index}) did not arrive with the message",
            kind.name()
        ))
    })?;
    let region = Region::open_shared(fd, kind, len, writable)
        .map_err(|e| shm::fail::<D::Error>(format!("the {} is unusable: {e}", kind.name())))?;
    RECEIVED.with(|r| {
        if let Some(list) = r.borrow_mut().as_mut() {
            list.push(region.clone());
        }
    });
    Ok(region)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd_of(r: &Region) -> OwnedFd {
        r.share_fd().try_clone_to_owned().unwrap()
    }

    #[test]
    fn a_region_reopens_with_its_kind_and_size_only() {
        let r = Region::create(Kind::Event, 4).unwrap();
        assert!(Region::open(fd_of(&r), Kind::Event, 4, true).is_ok());
        let wrong_kind = Region::open(fd_of(&r), Kind::Mutex, 4, true).unwrap_err();
        assert!(
            wrong_kind.to_string().contains("not of kind Mutex"),
            "{wrong_kind}"
        );
        let wrong_len = Region::open(fd_of(&r), Kind::Event, 8, true).unwrap_err();
        assert!(wrong_len.to_string().contains("needs"), "{wrong_len}");
        let r2 = Region::create(Kind::Mem, 4).unwrap();
        let err = Region::open(fd_of(&r2), Kind::Event, 4, true).unwrap_err();
        assert!(err.to_string().contains("not of kind Event"), "{err}");
    }

    #[test]
    fn garbage_and_unsealed_files_are_refused() {
        // Sealed, right size, but no header.
        let fd =
            rustix::fs::memfd_create("t", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
        rustix::fs::ftruncate(&fd, (HEADER + 4) as u64).unwrap();
        rustix::io::pwrite(&fd, b"garbage garbage garbage", 0).unwrap();
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW).unwrap();
        let err = Region::open(fd, Kind::Event, 4, true).unwrap_err();
        assert!(err.to_string().contains("no parpool header"), "{err}");
        // Not sealed: another process could shrink it under us.
        let fd = rustix::fs::memfd_create("t", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, (HEADER + 4) as u64).unwrap();
        let err = Region::open(fd, Kind::Event, 4, true).unwrap_err();
        assert!(
            err.to_string().contains("sealable") || err.to_string().contains("sealed"),
            "{err}"
        );
    }
}
