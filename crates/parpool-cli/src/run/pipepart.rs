//! What a `--pipe` job reads: a block of standard input, or with
//! `--pipepart` a part of a file (`-a FILE`, `:::: FILE`) cut at record
//! boundaries without reading it through parpool, as GNU parallel cuts it,
//! spliced into the job's stdin (or `--fifo`'s named pipe) straight from
//! the file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use super::pipe::Cut;

/// What a job reads on its stdin.
#[derive(Debug, Clone)]
pub(crate) enum Feed {
    /// A block held in memory (`--pipe`).
    Bytes(Arc<Vec<u8>>),
    /// Bytes `start..end` of a file (`--pipepart`).
    Part {
        file: Arc<File>,
        start: u64,
        end: u64,
    },
    /// `--roundrobin`: a first block, then every `n`-th block after it,
    /// `n` the number of jobs sharing the input.
    Turns {
        first: Arc<Vec<u8>>,
        seat: Arc<Seat>,
    },
}

/// A job's place in `--roundrobin`'s round: when the last copy of its feed
/// is gone (fed to the end, or never fed: a job skipped, halted, or that
/// could not start), it leaves the round, so the others never wait on it.
#[derive(Debug)]
pub(crate) struct Seat {
    shared: Arc<RoundRobin>,
    me: usize,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.shared.leave(self.me);
    }
}

/// `--roundrobin`: the rest of standard input's blocks, dealt to the jobs
/// in turn (job `k` gets blocks `k`, `k + n`, …, so the same input gives
/// each job the same blocks every run); a job that stops reading leaves
/// the round.
pub(crate) struct RoundRobin {
    state: std::sync::Mutex<Round>,
    turn: std::sync::Condvar,
}

struct Round {
    blocks: super::pipe::Blocks<std::io::Stdin>,
    /// Whose turn it is to take the next block.
    next: usize,
    gone: Vec<bool>,
    done: bool,
}

impl std::fmt::Debug for RoundRobin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoundRobin")
    }
}

impl RoundRobin {
    /// Deals the first of `blocks` one to a job, up to `jobs` of them: the
    /// jobs' feeds (fewer where the input has fewer blocks).
    pub(crate) fn deal(
        mut blocks: super::pipe::Blocks<std::io::Stdin>,
        jobs: usize,
    ) -> io::Result<Vec<Feed>> {
        let mut firsts = Vec::new();
        while firsts.len() < jobs.max(1) {
            match blocks.next() {
                Some(block) => firsts.push(block?),
                None => break,
            }
        }
        let n = firsts.len();
        let shared = Arc::new(RoundRobin {
            state: std::sync::Mutex::new(Round {
                blocks,
                next: 0,
                gone: vec![false; n],
                done: n == 0,
            }),
            turn: std::sync::Condvar::new(),
        });
        Ok(firsts
            .into_iter()
            .enumerate()
            .map(|(me, first)| Feed::Turns {
                first,
                seat: Arc::new(Seat {
                    shared: shared.clone(),
                    me,
                }),
            })
            .collect())
    }

    /// Job `me`'s next block, once it is its turn; `None` at the end. A
    /// read error ends the input for every job, and is the error of the
    /// job that met it.
    fn next_for(&self, me: usize) -> io::Result<Option<Arc<Vec<u8>>>> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if st.done {
                return Ok(None);
            }
            if st.next == me {
                let block = st.blocks.next().transpose();
                st.done = !matches!(block, Ok(Some(_)));
                st.pass();
                drop(st);
                self.turn.notify_all();
                return block;
            }
            st = self.turn.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Job `me` takes no more blocks (again: no change).
    fn leave(&self, me: usize) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.gone[me] {
            return;
        }
        st.gone[me] = true;
        if st.gone.iter().all(|g| *g) {
            st.done = true;
        } else if st.next == me {
            st.pass();
        }
        drop(st);
        self.turn.notify_all();
    }
}

impl Round {
    /// The turn passes to the next job still taking blocks.
    fn pass(&mut self) {
        let n = self.gone.len();
        for step in 1..=n {
            let k = (self.next + step) % n;
            if !self.gone[k] {
                self.next = k;
                return;
            }
        }
    }
}

impl Feed {
    pub(crate) fn len(&self) -> usize {
        match self {
            Feed::Bytes(b) => b.len(),
            Feed::Part { start, end, .. } => (end - start) as usize,
            Feed::Turns { first, .. } => first.len(),
        }
    }

    /// The bytes, read into memory (for `--cat`; not `--roundrobin`'s).
    pub(crate) fn bytes(&self) -> io::Result<Vec<u8>> {
        match self {
            Feed::Bytes(b) => Ok(b.to_vec()),
            Feed::Turns { first, .. } => Ok(first.to_vec()),
            Feed::Part { file, start, end } => {
                let mut buf = vec![0; (end - start) as usize];
                file.read_exact_at(&mut buf, *start)?;
                Ok(buf)
            }
        }
    }

    /// Writes it all to `to` (a job's stdin); a file part goes from the
    /// page cache to the pipe without a copy through parpool.
    /// `job_done` tells when the job has ended (`--roundrobin` then deals
    /// it no more blocks).
    pub(crate) fn write_to(
        &self,
        to: &mut (impl io::Write + std::os::fd::AsFd),
        job_done: &std::sync::atomic::AtomicBool,
    ) -> io::Result<()> {
        match self {
            Feed::Bytes(b) => to.write_all(b),
            Feed::Turns { first, seat } => {
                let mut block = Some(first.clone());
                let fed = (|| {
                    while let Some(b) = block.take() {
                        to.write_all(&b)?;
                        // A job that has ended takes no more blocks: they
                        // go to the jobs still reading.
                        if job_done.load(std::sync::atomic::Ordering::Acquire) {
                            break;
                        }
                        block = seat.shared.next_for(seat.me)?;
                    }
                    Ok(())
                })();
                seat.shared.leave(seat.me);
                fed
            }
            Feed::Part { file, start, end } => {
                let mut at = *start;
                while at < *end {
                    let want = ((end - at) as usize).min(1 << 30);
                    match rustix::pipe::splice(
                        &**file,
                        Some(&mut at),
                        &*to,
                        None,
                        want,
                        rustix::pipe::SpliceFlags::MORE,
                    ) {
                        Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                        Ok(_) => {}
                        Err(rustix::io::Errno::INTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            }
        }
    }
}

/// `--pipe`: the block goes in from its own thread while the output
/// comes out of the job (through the fifo `{}` names with `--fifo`); a job
/// that stops reading early just ends it. The thread's error, if feeding
/// failed otherwise (a file part that could not be read).
pub(crate) fn feed(
    stdin: Option<&Feed>,
    fifo: Option<&std::path::Path>,
    pipe: Option<std::process::ChildStdin>,
    job_done: Arc<std::sync::atomic::AtomicBool>,
) -> Option<std::thread::JoinHandle<io::Result<()>>> {
    match (stdin, fifo, pipe) {
        (Some(block), Some(path), _) => {
            let (block, path) = (block.clone(), path.to_owned());
            Some(std::thread::spawn(move || {
                match open_fifo(&path, &job_done)? {
                    Some(mut f) => quiet_epipe(block.write_to(&mut f, &job_done)),
                    None => Ok(()),
                }
            }))
        }
        (Some(block), None, Some(mut pipe)) => {
            let block = block.clone();
            // A bigger pipe, fewer trips between this thread and the job
            // (the kernel may refuse: then the default stays).
            let _ = rustix::pipe::fcntl_setpipe_size(&pipe, block.len().clamp(1 << 16, 1 << 20));
            Some(std::thread::spawn(move || {
                quiet_epipe(block.write_to(&mut pipe, &job_done))
            }))
        }
        _ => None,
    }
}

/// A job that stops reading early is no error.
fn quiet_epipe(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

/// `--fifo`: the fifo opened for writing once the job opens it for
/// reading; `None` if the job ends first (or removed it) without.
fn open_fifo(
    path: &std::path::Path,
    job_done: &std::sync::atomic::AtomicBool,
) -> io::Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(path)
        {
            Ok(f) => {
                // Writes wait for the job to read, as on any pipe.
                rustix::fs::fcntl_setfl(&f, rustix::fs::OFlags::empty())?;
                return Ok(Some(f));
            }
            // No reader yet (ENXIO), or the fifo is gone.
            Err(_) if job_done.load(std::sync::atomic::Ordering::Acquire) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The parts of `file`: about `block` bytes each, every cut after a
/// record end followed by a record start, searched from each multiple of
/// `block` on, as GNU parallel finds them.
pub(crate) fn parts(file: File, block: u64, cut: &Cut) -> io::Result<Vec<Feed>> {
    let size = file.metadata()?.len();
    let pattern: Vec<u8> = [cut.recend.as_slice(), &cut.recstart].concat();
    let mut positions = vec![0u64];
    let mut pos = block.max(1);
    while pos < size {
        if pattern.is_empty() {
            positions.push(pos);
        } else if let Some(at) = find_from(&file, pos, &pattern)? {
            pos = at + cut.recend.len() as u64;
            positions.push(pos);
        } else {
            break;
        }
        pos += block.max(1);
    }
    if positions.last() != Some(&size) {
        positions.push(size);
    }
    let file = Arc::new(file);
    Ok(positions
        .windows(2)
        .filter(|w| w[1] > w[0])
        .map(|w| Feed::Part {
            file: file.clone(),
            start: w[0],
            end: w[1],
        })
        .collect())
}

/// Where `pattern` first occurs in `file` at or after `from`.
fn find_from(file: &File, from: u64, pattern: &[u8]) -> io::Result<Option<u64>> {
    const CHUNK: usize = 128 << 10;
    let mut buf = vec![0u8; CHUNK + pattern.len()];
    let mut at = from;
    let mut carried = 0;
    loop {
        let n = file.read_at(&mut buf[carried..carried + CHUNK], at)?;
        if n == 0 {
            return Ok(None);
        }
        let seen = carried + n;
        if let Some(i) = buf[..seen]
            .windows(pattern.len())
            .position(|w| w == pattern)
        {
            return Ok(Some(at - carried as u64 + i as u64));
        }
        // Keep the tail: the pattern may straddle two reads.
        let keep = (pattern.len() - 1).min(seen);
        buf.copy_within(seen - keep..seen, 0);
        carried = keep;
        at += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut_of(data: &[u8], block: u64, cut: &Cut) -> Vec<Vec<u8>> {
        let path =
            std::env::temp_dir().join(format!("parpool-pipepart-{}-{}", std::process::id(), block));
        std::fs::write(&path, data).unwrap();
        let parts = parts(File::open(&path).unwrap(), block, cut).unwrap();
        std::fs::remove_file(&path).unwrap();
        parts.iter().map(|p| p.bytes().unwrap()).collect()
    }

    #[test]
    fn parts_end_at_record_ends_and_cover_the_file() {
        let data: Vec<u8> = (1..=1000)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        for block in [1, 7, 100, 1000, 10_000] {
            let parts = cut_of(&data, block, &Cut::default());
            assert_eq!(parts.concat(), data, "block {block}");
            assert!(parts.iter().all(|p| p.ends_with(b"\n")), "block {block}");
        }
        let fasta = b">a\nAC\n>b\nGT\n>c\nTT\n";
        let cut = Cut {
            recstart: b">".to_vec(),
            recend: b"\n".to_vec(),
            ..Cut::default()
        };
        let parts = cut_of(fasta, 4, &cut);
        assert_eq!(parts.concat(), fasta);
        assert!(parts.iter().all(|p| p.starts_with(b">")), "{parts:?}");
    }
}
