//! Operating-system calls for shared memory (Linux): memfd segments and
//! their mappings. Every `unsafe` block of the shared-memory code is here.

use std::fs::File;
use std::io;

use memmap2::{Mmap, MmapMut, MmapOptions};
use rustix::fs::{MemfdFlags, SealFlags};

/// Seals every segment carries once filled: its size can never change (so
/// a mapping can never reach past the end of the file, which would raise
/// `SIGBUS`), and no new writable mapping or `write` can be made.
const SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::FUTURE_WRITE)
    .union(SealFlags::SEAL);

/// Creates an anonymous memory file of `len` bytes. It has no name in any
/// file system, is never world-readable, and is freed by the kernel when
/// its last descriptor and mapping are gone, in whatever process.
pub(crate) fn create(len: usize) -> io::Result<File> {
    let fd = rustix::fs::memfd_create(
        "parpool-shared",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    rustix::fs::ftruncate(&fd, len as u64)?;
    Ok(File::from(fd))
}

/// Maps a new segment for writing, before it is sealed and shared.
pub(crate) fn map_fresh(file: &File, len: usize) -> io::Result<MmapMut> {
    // SAFETY: `file` was just created by `create` and has not been shared:
    // no other descriptor or mapping of it exists, so nothing else can
    // resize or write it while this mapping lives; its size is `len`.
    unsafe { MmapOptions::new().len(len).map_mut(file) }
}

/// Seals a filled segment (see [`SEALS`]).
pub(crate) fn seal(file: &File) -> io::Result<()> {
    rustix::fs::fcntl_add_seals(file, SEALS)?;
    Ok(())
}

/// Maps a segment received from another process, read-only, after
/// checking it is a sealed memory file at least `len` bytes long.
pub(crate) fn map_received(file: &File, len: usize) -> io::Result<Mmap> {
    let seals = rustix::fs::fcntl_get_seals(file).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the descriptor is not a sealable memory file",
        )
    })?;
    let fixed = seals.contains(SealFlags::SHRINK | SealFlags::GROW);
    let frozen = seals.intersects(SealFlags::WRITE | SealFlags::FUTURE_WRITE);
    if !(fixed && frozen) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the memory file is not sealed against resizing and writing",
        ));
    }
    let size = rustix::fs::fstat(file)?.st_size;
    if u64::try_from(size).map_or(true, |size| size < len as u64) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the memory file holds {size} bytes, fewer than the {len} announced"),
        ));
    }
    // SAFETY: the file is sealed against shrinking, so the `len` bytes
    // checked above stay backed for the mapping's whole life (no SIGBUS);
    // it is sealed against new writable mappings and writes, so its bytes
    // do not change under the shared references handed out.
    unsafe { MmapOptions::new().len(len).map(file) }
}

/// Maps a chunk journal ([`Journal`](super::Journal)) shared and writable,
/// at the file's current size.
pub(crate) fn map_journal(file: &File) -> io::Result<MmapMut> {
    // SAFETY: the journal is a memory file shared only by one worker and
    // its supervisor. It only ever grows (the worker's `set_len` to a
    // larger size), so every mapping made of it stays backed for its whole
    // life; the supervisor only reads it with `pread`, after the worker is
    // gone, so no other mapping writes it meanwhile.
    unsafe { MmapOptions::new().map_mut(file) }
}
