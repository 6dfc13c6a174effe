//! A shared memory region with a validated header: the storage of every
//! `ipc` object, and how it crosses the process wire.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapRaw;
use rustix::fs::{MemfdFlags, SealFlags};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::sys;
use crate::transfer::{self, Mapped, ObjectId, ReleaseSink, ShareFd, Watched};

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
    watched: Watched,
    /// Whether [`OPEN`] lists it (regions received from other processes).
    listed: bool,
}

/// The regions this process received and still maps, by file and whether
/// mapped writable (see `transfer::keep`).
static OPEN: Mapped<(ObjectId, bool), Region> = Mapped::new();

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
        let id = ObjectId::of(&fd)?;
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
        // `len` came in a message: any value.
        let Some(expected) = HEADER.checked_add(len) else {
            return Err(invalid(format!(
                "a region of kind {} with a payload of {len} bytes cannot exist",
                kind.name()
            )));
        };
        if size != expected {
            return Err(invalid(format!(
                "the region holds {size} bytes where kind {} with this payload type needs {expected}",
                kind.name()
            )));
        }
        let file = File::from(fd);
        let map = sys::map_shared(&file, size, writable)?;
        let region = Region::new(file, map, len, kind, writable, ObjectId::from_stat(&stat));
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
            watched: Watched::new(id),
            listed: false,
        }
    }

    /// Like [`open`](Self::open), but reuses this process's mapping of the
    /// same file with the same access if it has one.
    fn open_shared(fd: OwnedFd, kind: Kind, len: usize, writable: bool) -> io::Result<Arc<Region>> {
        let id = ObjectId::of(&fd)?;
        if let Some(region) = OPEN.get(&(id, writable))
            && region.kind == kind
            && region.len == len
        {
            return Ok(region);
        }
        // Not mapped here yet, or not as this kind (which `open` refuses).
        let mut region = Region::open(fd, kind, len, writable)?;
        region.listed = true;
        let region = Arc::new(region);
        OPEN.insert((id, writable), &region);
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
        Some(self.watched.watch(sink))
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if self.listed {
            OPEN.forget(&(self.watched.id(), self.writable));
        }
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
    match transfer::send_descriptor(region.clone()) {
        Some(index) => index.serialize(s),
        None => Err(S::Error::custom(transfer::refuse(
            format!(
                "a {} can only be sent in the input or output of a parpool job",
                kind.name()
            ),
            kind.name(),
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
    let fd = transfer::take_descriptor(index).ok_or_else(|| {
        transfer::fail::<D::Error>(format!(
            "the {} (descriptor #{index}) did not arrive with the message",
            kind.name()
        ))
    })?;
    let region = Region::open_shared(fd, kind, len, writable)
        .map_err(|e| transfer::fail::<D::Error>(format!("the {} is unusable: {e}", kind.name())))?;
    transfer::note_received(region.watched.id(), region.clone());
    Ok(region)
}

/// Serde for a region type with a fixed payload size: a descriptor
/// reference on the process wire, an error anywhere else. The names it
/// uses (`Serialize`, `Serializer`, `Deserialize`, `Deserializer`,
/// `region`, `RegionSeed`) are those in scope where it is invoked.
macro_rules! fixed_region_serde {
    ($ty:ident, $kind:expr, $len:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                region::serialize(&self.region, $kind, s)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                use serde::de::DeserializeSeed;
                let region = RegionSeed {
                    kind: $kind,
                    len: $len,
                }
                .deserialize(d)?;
                Ok($ty { region })
            }
        }
    };
}
pub(crate) use fixed_region_serde;

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
        // A length from a message may be anything (the region fuzz target
        // sent one that overflowed the size check).
        let huge = Region::open(fd_of(&r), Kind::Event, usize::MAX, true).unwrap_err();
        assert!(huge.to_string().contains("cannot exist"), "{huge}");
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
