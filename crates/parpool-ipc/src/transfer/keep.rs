//! Mapping shared objects once: what lets a large segment handed to job
//! after job be mapped, and faulted in, only the first time.
//!
//! Mapping is cheap; filling the page table is not (about 130,000 page
//! faults for half of 1 GiB). Three pieces avoid repeating it:
//!
//! - [`Mapped`]: a process-wide table of weak references by [`ObjectId`].
//!   An object received again while this process still maps it reuses
//!   that mapping, and the descriptor that came with it is closed.
//! - [`Kept`]: a worker holds on to the objects its jobs received
//!   ([`collect_received`]), so that the next job finds them mapped.
//! - [`Watched`]: the parent watches what it sends; when its own last
//!   handle to an object goes, it tells the worker to let go (through a
//!   [`ReleaseSink`]), and the memory is freed as promptly as before.

use std::any::Any;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use serde::{Deserialize, Serialize};

/// Which memory file an object lives in: the same in every process that
/// maps it (device and inode of the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectId {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

impl ObjectId {
    /// The id of the memory file `fd`.
    pub fn of(fd: impl AsFd) -> std::io::Result<ObjectId> {
        Ok(ObjectId::from_stat(&rustix::fs::fstat(fd)?))
    }

    /// The id of the file `stat` describes.
    pub(crate) fn from_stat(stat: &rustix::fs::Stat) -> ObjectId {
        // Both are unsigned 64-bit on the 64-bit targets parpool supports.
        #[allow(clippy::unnecessary_cast)]
        ObjectId {
            dev: stat.st_dev as u64,
            ino: stat.st_ino as u64,
        }
    }
}

/// Where a watched object (one sent to a worker) reports that its last handle in this
/// process is gone.
pub trait ReleaseSink: Send + Sync {
    /// Called once, from the thread that dropped the last handle. Must not
    /// block on anything that thread may hold.
    fn released(&self, id: ObjectId);
}

/// An object's id and the sinks to tell when it is dropped; part of every
/// object a receiver may keep.
pub(crate) struct Watched {
    id: ObjectId,
    sinks: Mutex<Vec<Weak<dyn ReleaseSink>>>,
}

impl Watched {
    pub(crate) fn new(id: ObjectId) -> Watched {
        Watched {
            id,
            sinks: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn id(&self) -> ObjectId {
        self.id
    }

    /// Tells `sink` when the object is dropped; returns the id it will
    /// report.
    pub(crate) fn watch(&self, sink: &Arc<dyn ReleaseSink>) -> ObjectId {
        let mut sinks = crate::lock(&self.sinks);
        // Sinks whose receiver is gone (a pool shut down) are dropped here,
        // so a long-lived object handed to many pools does not pile them up.
        sinks.retain(|s| s.strong_count() > 0);
        let sink = Arc::downgrade(sink);
        if !sinks.iter().any(|s| Weak::ptr_eq(s, &sink)) {
            sinks.push(sink);
        }
        self.id
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let sinks = std::mem::take(self.sinks.get_mut().unwrap_or_else(PoisonError::into_inner));
        for sink in sinks.iter().filter_map(Weak::upgrade) {
            sink.released(self.id);
        }
    }
}

/// The objects of type `T` this process maps, by key: a process maps each
/// object (in each access mode the key tells apart) once.
pub(crate) struct Mapped<K, T> {
    table: Mutex<BTreeMap<K, Weak<T>>>,
}

impl<K: Ord, T> Mapped<K, T> {
    pub(crate) const fn new() -> Self {
        Mapped {
            table: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<K, Weak<T>>> {
        crate::lock(&self.table)
    }

    /// The live object mapped under `key`, if any.
    pub(crate) fn get(&self, key: &K) -> Option<Arc<T>> {
        self.lock().get(key).and_then(Weak::upgrade)
    }

    /// Lists `object` under `key`.
    pub(crate) fn insert(&self, key: K, object: &Arc<T>) {
        self.lock().insert(key, Arc::downgrade(object));
    }

    /// From the `Drop` of an object listed under `key`: forgets it, unless
    /// another object has been listed under that key since its last handle
    /// went.
    pub(crate) fn forget(&self, key: &K) {
        let mut table = self.lock();
        if table.get(key).is_some_and(|w| w.strong_count() == 0) {
            table.remove(key);
        }
    }
}

/// A received object, type-erased: a worker only holds it.
/// A received object a worker keeps alive (and so mapped) between jobs.
pub type Held = Arc<dyn Any + Send + Sync>;

thread_local! {
    /// While a worker runs a job: the objects its input brought in.
    static RECEIVED: RefCell<Option<Vec<(ObjectId, Held)>>> = const { RefCell::new(None) };
}

/// Notes `object`, just received, for [`collect_received`] if one runs on
/// this thread.
pub(crate) fn note_received(id: ObjectId, object: Held) {
    RECEIVED.with(|r| {
        if let Some(list) = r.borrow_mut().as_mut() {
            list.push((id, object));
        }
    });
}

/// Runs `f` (a job, in a worker) and returns, with its result, the objects
/// its input brought in, for [`Kept`].
pub fn collect_received<R>(f: impl FnOnce() -> R) -> (R, Vec<(ObjectId, Held)>) {
    super::gathering(&RECEIVED, f)
}

/// The shared objects a worker keeps mapped after the jobs that brought
/// them end, until the parent says its last handle is gone
/// ([`release`](Kept::release)). At most [`Kept::LIMIT`] (each holds a
/// descriptor); past that the least recently used goes early.
#[derive(Default)]
pub struct Kept {
    /// Least recently used first.
    objects: Vec<(ObjectId, Held)>,
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kept")
            .field("objects", &self.objects.len())
            .finish()
    }
}

impl Kept {
    /// How many objects a worker keeps at most.
    pub const LIMIT: usize = 64;

    /// Keeps `received`, the objects a job just brought in.
    pub fn keep(&mut self, received: Vec<(ObjectId, Held)>) {
        for (id, object) in received {
            self.objects.retain(|(_, o)| !Arc::ptr_eq(o, &object));
            self.objects.push((id, object));
        }
        let over = self.objects.len().saturating_sub(Self::LIMIT);
        self.objects.drain(..over);
    }

    /// Lets go of the objects in `ids` (every access mode of each).
    pub fn release(&mut self, ids: &[ObjectId]) {
        self.objects.retain(|(id, _)| !ids.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ino: u64) -> ObjectId {
        ObjectId { dev: 1, ino }
    }

    #[test]
    fn kept_objects_are_bounded_least_recently_used_first() {
        let objects: Vec<Held> = (0..Kept::LIMIT + 2).map(|i| Arc::new(i) as Held).collect();
        let mut kept = Kept::default();
        kept.keep(vec![
            (id(0), objects[0].clone()),
            (id(1), objects[1].clone()),
        ]);
        // Used again: 0 is now the most recent.
        kept.keep(vec![(id(0), objects[0].clone())]);
        kept.keep(
            (2..Kept::LIMIT + 1)
                .map(|i| (id(i as u64), objects[i].clone()))
                .collect(),
        );
        assert_eq!(kept.objects.len(), Kept::LIMIT);
        // 1 was the least recently used: it went first.
        assert!(!kept.objects.iter().any(|(i, _)| *i == id(1)));
        assert!(kept.objects.iter().any(|(i, _)| *i == id(0)));
        kept.release(&[id(0), id(2)]);
        assert_eq!(kept.objects.len(), Kept::LIMIT - 2);
        assert_eq!(
            Arc::strong_count(&objects[0]),
            1,
            "released: no longer held"
        );
    }

    #[test]
    fn a_watched_object_reports_its_drop_once_to_each_live_sink() {
        struct Sink(Mutex<Vec<ObjectId>>);
        impl ReleaseSink for Sink {
            fn released(&self, id: ObjectId) {
                self.0.lock().unwrap().push(id);
            }
        }
        let sink = Arc::new(Sink(Mutex::new(Vec::new())));
        let a: Arc<dyn ReleaseSink> = sink.clone();
        let gone: Arc<dyn ReleaseSink> = Arc::new(Sink(Mutex::new(Vec::new())));
        let watched = Watched::new(id(7));
        assert_eq!(watched.watch(&a), id(7));
        // Watching twice with one sink still reports once.
        watched.watch(&a);
        watched.watch(&gone);
        drop(gone);
        drop(watched);
        assert_eq!(*sink.0.lock().unwrap(), [id(7)]);
    }

    #[test]
    fn mapped_forgets_only_dead_entries() {
        static TABLE: Mapped<u32, u32> = Mapped::new();
        let one = Arc::new(1);
        TABLE.insert(5, &one);
        assert_eq!(TABLE.get(&5).as_deref(), Some(&1));
        // Listed again under the same key by a newer object: the old
        // one's drop leaves it.
        let two = Arc::new(2);
        TABLE.insert(5, &two);
        drop(one);
        TABLE.forget(&5);
        assert_eq!(TABLE.get(&5).as_deref(), Some(&2));
        drop(two);
        TABLE.forget(&5);
        assert!(TABLE.get(&5).is_none());
    }
}
