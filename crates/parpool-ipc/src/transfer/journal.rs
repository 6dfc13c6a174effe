//! A map chunk's output as it is written, in shared memory: what a worker
//! process finished before it crashed survives it.
//!
//! A worker runs a chunk's items one by one and encodes each result
//! straight into the journal, a memory file its supervisor gave it; at the
//! end the whole output leaves in one copy. The supervisor reads the
//! journal only after the worker died: the items it holds keep their
//! results, and its header says which item was running.
//!
//! Layout: a header of four little-endian `u64`: the job id, the position
//! of the item running plus one (0: none), the bytes of entries, the
//! entries; then the entries back to back (each an encoded
//! `Result<Output, JobError>`).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

const HEADER: usize = 32;
/// The journal starts at this size and doubles as it fills.
const FIRST_SIZE: usize = 64 << 10;

/// What a dead worker's journal says about job `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRecord {
    /// The position (in the run order) of the item that was running.
    pub running: Option<u32>,
    /// How many items finished.
    pub finished: u32,
    /// Their encoded results, back to back.
    pub entries: Vec<u8>,
}

/// A chunk journal (see the module docs), the worker's end.
#[derive(Debug)]
pub struct Journal {
    file: File,
    /// `None` until the first chunk.
    map: Option<memmap2::MmapMut>,
    /// Bytes of entries written for the current chunk.
    len: usize,
    items: u64,
    /// Largest size the file may grow to.
    limit: usize,
}

impl Journal {
    /// A new journal file, for a supervisor to give its worker.
    pub fn create_file() -> io::Result<File> {
        let fd = rustix::fs::memfd_create("parpool-journal", rustix::fs::MemfdFlags::CLOEXEC)?;
        Ok(File::from(fd))
    }

    /// Opens the worker's end on `file`, growing at most to `limit` bytes.
    /// The file is sized and mapped on the first chunk ([`begin`](Self::begin)).
    pub fn open(file: File, limit: u64) -> Journal {
        let limit = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .max(HEADER + FIRST_SIZE);
        Journal {
            file,
            map: None,
            len: 0,
            items: 0,
            limit,
        }
    }

    fn map(&mut self) -> &mut memmap2::MmapMut {
        self.map.as_mut().expect("mapped by `begin`")
    }

    fn word(&mut self, index: usize, value: u64) {
        self.map()[index * 8..index * 8 + 8].copy_from_slice(&value.to_le_bytes());
    }

    /// Starts the journal of chunk `job`.
    pub fn begin(&mut self, job: u64) -> io::Result<()> {
        if self.map.is_none() {
            self.file.set_len((HEADER + FIRST_SIZE) as u64)?;
            self.map = Some(super::memfd::map_journal(&self.file)?);
        }
        self.len = 0;
        self.items = 0;
        self.word(0, job);
        self.word(1, 0);
        self.commit();
        Ok(())
    }

    /// Records that the item at `position` starts.
    #[inline]
    pub fn starting(&mut self, position: u32) {
        self.word(1, u64::from(position) + 1);
    }

    /// Records that no item runs (the chunk's loop is done).
    pub fn idle(&mut self) {
        self.word(1, 0);
    }

    /// The bytes of entries written so far.
    pub fn written(&self) -> usize {
        self.len
    }

    /// The entries written so far.
    pub fn entries(&self) -> &[u8] {
        self.map
            .as_ref()
            .map_or(&[], |m| &m[HEADER..HEADER + self.len])
    }

    /// Forgets entry bytes past `len` (an encode that failed midway).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Counts one more finished item: the bytes written since the last
    /// commit are its entry.
    #[inline]
    pub fn commit_item(&mut self) {
        self.items += 1;
        self.commit();
    }

    #[inline]
    fn commit(&mut self) {
        let counts = (u128::from(self.items) << 64 | self.len as u128).to_le_bytes();
        self.map()[16..32].copy_from_slice(&counts);
    }

    /// Appends bytes of the current item's entry.
    #[inline]
    pub fn extend(&mut self, data: &[u8]) -> io::Result<()> {
        if data.len() > 16 {
            let at = HEADER + self.len;
            if at + data.len() > self.map().len() {
                self.grow(data.len())?;
            }
            self.map()[at..at + data.len()].copy_from_slice(data);
            self.len += data.len();
            return Ok(());
        }
        // Most pieces are a byte or a few: byte by byte beats a call to
        // memcpy (the check in the loop keeps it a loop).
        for &b in data {
            self.push(b)?;
        }
        Ok(())
    }

    /// Appends one byte of the current item's entry.
    #[inline]
    pub fn push(&mut self, byte: u8) -> io::Result<()> {
        let at = HEADER + self.len;
        match self.map().get_mut(at) {
            Some(slot) => *slot = byte,
            None => {
                self.grow(1)?;
                self.map()[at] = byte;
            }
        }
        self.len += 1;
        Ok(())
    }

    #[cold]
    fn grow(&mut self, more: usize) -> io::Result<()> {
        let need = HEADER + self.len + more;
        if need > self.limit {
            return Err(io::Error::other(format!(
                "a chunk's output is over the limit of {} bytes",
                self.limit
            )));
        }
        let size = need.next_power_of_two().min(self.limit);
        self.file.set_len(size as u64)?;
        self.map = Some(super::memfd::map_journal(&self.file)?);
        Ok(())
    }

    /// Reads what a dead worker's journal says about job `id`; `None` when
    /// it is about another job.
    pub fn read(file: &File, id: u64) -> Option<JournalRecord> {
        let mut header = [0u8; HEADER];
        file.read_exact_at(&mut header, 0).ok()?;
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&header[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        if id == 0 || word(0) != id {
            return None;
        }
        let running = word(1).checked_sub(1).and_then(|p| u32::try_from(p).ok());
        let len = usize::try_from(word(2)).ok()?;
        let finished = u32::try_from(word(3)).ok()?;
        let mut entries = vec![0u8; len];
        file.read_exact_at(&mut entries, HEADER as u64).ok()?;
        Some(JournalRecord {
            running,
            finished,
            entries,
        })
    }
}

/// Encodes into a [`Journal`] (a postcard flavor).
#[derive(Debug)]
pub struct JournalFlavor<'a>(pub &'a mut Journal);

impl postcard::ser_flavors::Flavor for JournalFlavor<'_> {
    type Output = ();
    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0
            .extend(data)
            .map_err(|_| postcard::Error::SerializeBufferFull)
    }
    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0
            .push(data)
            .map_err(|_| postcard::Error::SerializeBufferFull)
    }
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_workers_journal_tells_what_finished_and_what_ran() {
        let file = Journal::create_file().unwrap();
        let mut j = Journal::open(file.try_clone().unwrap(), 1 << 20);
        j.begin(7).unwrap();
        j.starting(0);
        j.extend(b"abc").unwrap();
        j.commit_item();
        j.starting(1);
        j.extend(&[9; 100_000]).unwrap();
        j.commit_item();
        j.starting(2);
        j.extend(b"half").unwrap(); // not committed: the crash came first
        let r = Journal::read(&file, 7).unwrap();
        assert_eq!(
            (r.running, r.finished, r.entries.len()),
            (Some(2), 2, 100_003)
        );
        assert_eq!(Journal::read(&file, 8), None);
        j.begin(9).unwrap();
        let r = Journal::read(&file, 9).unwrap();
        assert_eq!((r.running, r.finished, r.entries.len()), (None, 0, 0));
    }

    #[test]
    fn a_journal_past_its_limit_refuses_more() {
        let file = Journal::create_file().unwrap();
        let mut j = Journal::open(file, 0);
        j.begin(1).unwrap();
        assert!(j.extend(&[0; FIRST_SIZE]).is_ok());
        assert!(j.extend(&[0; 64]).is_err());
    }
}
