//! Job slots (`{%}`): jobs take them in the order they were dispatched, as
//! GNU parallel's do. GNU starts as many jobs as may run before it reaps
//! any, so its first jobs always hold slots 1, 2, … N, however fast the
//! first ends; here too a slot never used yet is taken before one given
//! back while the jobs allowed at once have not all been numbered, and
//! after that a starting job takes the lowest slot given back.
//! With `-j FILE`, how many may be taken at once is read from FILE, and
//! read again whenever a job ends and the file has changed.

use std::path::PathBuf;
use std::sync::{Condvar, Mutex};
use std::time::SystemTime;

use super::options::values::job_slots;

/// The most jobs at once `-j FILE` can ask for (the pool's threads).
pub(crate) const MOST_FROM_FILE: usize = 256;

/// `-j FILE`: the file and what it said last.
#[derive(Debug)]
pub(crate) struct JobsFile {
    path: PathBuf,
    cores: usize,
    modified: Option<SystemTime>,
    wanted: usize,
}

impl JobsFile {
    /// `-j`'s value as a file, if it names one (`None` otherwise).
    pub(crate) fn open(jobs: Option<&str>, cores: usize) -> anyhow::Result<Option<JobsFile>> {
        let Some(path) = jobs.map(PathBuf::from).filter(|p| p.is_file()) else {
            return Ok(None);
        };
        let mut file = JobsFile {
            path,
            cores,
            modified: None,
            wanted: 1,
        };
        file.reread()
            .map_err(|e| anyhow::anyhow!("-j {}: {e}", file.path.display()))?;
        Ok(Some(file))
    }

    pub(crate) fn wanted(&self) -> usize {
        self.wanted
    }

    /// Reads the file again if it changed; an unreadable or bad one keeps
    /// the number it gave before.
    fn reread(&mut self) -> Result<(), String> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .map_err(|e| e.to_string())?;
        if self.modified == Some(modified) {
            return Ok(());
        }
        let text = std::fs::read_to_string(&self.path).map_err(|e| e.to_string())?;
        let spec = text.trim();
        self.wanted = job_slots(spec, self.cores)
            .map_err(|_| format!("holds `{spec}`, not N, N%, +N or -N"))?
            .clamp(1, MOST_FROM_FILE);
        self.modified = Some(modified);
        Ok(())
    }
}

/// The slots, and whose turn it is to take one.
pub(crate) struct Slots {
    state: Mutex<State>,
    turn: Condvar,
}

struct State {
    /// Slots given back, the lowest last.
    free: Vec<usize>,
    /// The lowest slot never taken.
    fresh: usize,
    /// How many there are in all.
    all: usize,
    /// The dispatch order of the next job to take one.
    next: u64,
    file: Option<JobsFile>,
}

impl State {
    /// How many may be taken at once now.
    fn allowed(&self) -> usize {
        self.file
            .as_ref()
            .map_or(self.all, |f| f.wanted.min(self.all))
    }

    /// How many are taken now.
    fn taken(&self) -> usize {
        self.fresh - 1 - self.free.len()
    }

    /// The slot the next job takes, if one may be taken now.
    fn pick(&mut self) -> Option<usize> {
        if self.taken() >= self.allowed() {
            return None;
        }
        if self.fresh <= self.allowed() || self.free.is_empty() {
            // `taken < allowed <= all`, so a fresh one is left.
            self.fresh += 1;
            return Some(self.fresh - 1);
        }
        self.free.pop()
    }
}

impl Slots {
    pub(crate) fn new(n: usize, file: Option<JobsFile>) -> Slots {
        Slots {
            state: Mutex::new(State {
                free: Vec::new(),
                fresh: 1,
                all: n.max(1),
                next: 0,
                file,
            }),
            turn: Condvar::new(),
        }
    }

    /// A slot for the job dispatched `order`-th (0-based), once every job
    /// before it has taken one and fewer than allowed are taken; `first`
    /// runs with the slot before the next job's turn (jobs' perl code runs
    /// in start order).
    pub(crate) fn take<R>(&self, order: u64, first: impl FnOnce(usize) -> R) -> (usize, R) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let slot = loop {
            if st.next == order
                && let Some(slot) = st.pick()
            {
                break slot;
            }
            st = self.turn.wait(st).unwrap_or_else(|p| p.into_inner());
        };
        let r = first(slot);
        st.next += 1;
        drop(st);
        self.turn.notify_all();
        (slot, r)
    }

    pub(crate) fn give_back(&self, slot: usize) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.free.push(slot);
        // Lowest first.
        st.free.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(file) = st.file.as_mut()
            && let Err(why) = file.reread()
        {
            eprintln!("parpool: warning: -j {}: {why}", file.path.display());
        }
        drop(st);
        self.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job that ends before the next starts does not lend it its slot
    /// while slots never used are left (GNU starts before it reaps); once
    /// all are numbered, the lowest given back is taken.
    #[test]
    fn the_first_jobs_hold_distinct_slots_however_fast_they_end() {
        let slots = Slots::new(3, None);
        let mut order = 0..;
        let mut take = || slots.take(order.next().unwrap(), |_| ()).0;
        let first = take();
        slots.give_back(first);
        assert_eq!([first, take(), take()], [1, 2, 3]);
        slots.give_back(3);
        assert_eq!(take(), 1, "the lowest given back");
        assert_eq!(take(), 3);
        // Many slots, fewer allowed (-j FILE): numbers stay within those
        // allowed at once.
        let dir = std::env::temp_dir().join(format!("parpool-jobs-few-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("procs");
        std::fs::write(&path, "2\n").unwrap();
        let file = JobsFile::open(path.to_str(), 4).unwrap().unwrap();
        let slots = Slots::new(MOST_FROM_FILE, Some(file));
        let mut order = 0..;
        let mut take = || slots.take(order.next().unwrap(), |_| ()).0;
        let first = take();
        slots.give_back(first);
        let second = take();
        slots.give_back(second);
        assert_eq!([first, second, take(), take()], [1, 2, 1, 2]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_jobs_file_is_read_again_when_it_changes() {
        let dir = std::env::temp_dir().join(format!("parpool-jobs-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("procs");
        std::fs::write(&path, "3\n").unwrap();
        let spec = path.to_str().unwrap();
        let file = JobsFile::open(Some(spec), 4).unwrap().unwrap();
        assert_eq!(file.wanted(), 3);
        assert!(JobsFile::open(Some("4"), 4).unwrap().is_none());
        let slots = Slots::new(8, Some(file));
        let taken: Vec<usize> = (0..3).map(|i| slots.take(i, |_| ()).0).collect();
        assert_eq!(taken, [1, 2, 3]);
        // A fourth must wait: three are allowed.
        assert_eq!(slots.state.lock().unwrap().allowed(), 3);
        std::fs::write(&path, "50%\n").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        slots.give_back(2);
        assert_eq!(slots.state.lock().unwrap().allowed(), 2);
        std::fs::write(&path, "nonsense").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later + std::time::Duration::from_secs(5))
            .unwrap();
        slots.give_back(1);
        // A bad file keeps the last good number.
        assert_eq!(slots.state.lock().unwrap().allowed(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
