//! [`SharedMap`] and [`SharedList`]: serde values in shared memory, shared
//! by processes, as Python's `Manager().dict()` and `ShareableList` — without
//! a manager process, and robust to a holder's death.
//!
//! Both are a `Table`: a robust lock whose value is the table's header, and
//! one memory holding a hash index and two halves of an append-only log.
//! Every change appends an entry to the active half's log (a key and its
//! value, or a key's removal) and commits it by advancing the log's length,
//! one aligned word; the index, which points into the log, only makes
//! lookups fast. When the half is full, the live entries are copied into
//! the other half, which becomes the active one by one word as well. So a
//! process that dies anywhere in an operation leaves the log as it was
//! before that operation, or after it; the next locker, finding the lock's
//! holder dead, rebuilds the index from the log and goes on. Nothing a
//! caller sees is ever half-done, and there is nothing for the caller to
//! repair.
//!
//! Everything read from the memory is checked (bounds, lengths, the key's
//! hash) before use: memory another process corrupted is an error, never a
//! wrong answer from the wrong entry or a read out of bounds.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io;
use std::marker::PhantomData;

use bytemuck::{Pod, Zeroable};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::mem::SharedMem;
use crate::mutex::{LockError, Mutex, MutexGuard};

/// Why a [`SharedMap`] or [`SharedList`] operation failed. Nothing was
/// changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// The table has no room for this change: all its entries are in use,
    /// or its log cannot hold the live entries and this one.
    #[error(
        "the shared table is full: {0} (create it larger with `with_capacity(entries, bytes)`)"
    )]
    Full(String),
    /// A key or value did not encode.
    #[error("a key or value could not be encoded: {0}")]
    Encode(String),
    /// A stored value did not decode as the type asked for (the processes
    /// disagree on the types).
    #[error("a stored value could not be decoded: {0} (do all processes use the same types?)")]
    Decode(String),
    /// A [`SharedList`] index past its end.
    #[error("index {index} is out of range for a list of {len}")]
    OutOfRange {
        /// The index asked for.
        index: usize,
        /// The list's length.
        len: usize,
    },
    /// The memory does not hold a valid table (corrupted by something
    /// other than this crate).
    #[error("the shared table is corrupt: {0}")]
    Corrupt(String),
    /// The system refused (this should not happen with a valid table).
    #[error("shared table failure: {0}")]
    Io(#[from] io::Error),
}

impl From<LockError> for MapError {
    fn from(e: LockError) -> Self {
        match e {
            LockError::Io(e) => MapError::Io(e),
            other => MapError::Io(io::Error::other(other.to_string())),
        }
    }
}

/// The table's header: the lock's value.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
struct Header {
    /// Slots in the index (a power of two).
    slots: u64,
    /// Bytes in each half of the log.
    half: u64,
    /// Which half is the log now (0 or 1).
    active: u64,
    /// Committed bytes of each half's log.
    used: [u64; 2],
    /// Live keys.
    live: u64,
    /// Removed keys whose slots are not yet reused.
    tombs: u64,
}

/// A slot of the index: the key's hash and where its entry is.
const SLOT: usize = 16;
const EMPTY: u64 = 0;
const TOMB: u64 = u64::MAX;
/// An entry: `[key length | flags: u32][value length: u32][key][value]`.
const ENTRY_HEAD: usize = 8;
/// In an entry's key length: the key was removed.
const REMOVED: u32 = 1 << 31;

/// The table both types are made of.
#[derive(Clone, Serialize, Deserialize)]
struct Table {
    head: Mutex<Header>,
    mem: SharedMem,
}

/// A live key and value, encoded.
type RawEntry = (Vec<u8>, Vec<u8>);

/// An entry of the log, as read back.
struct Entry {
    key: Vec<u8>,
    /// `None`: a removal.
    value: Option<Vec<u8>>,
    len: usize,
}

fn hash_of(key: &[u8]) -> u64 {
    // SipHash with fixed keys: the same in every process of this binary.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, MapError> {
    postcard::to_allocvec(value).map_err(|e| MapError::Encode(e.to_string()))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, MapError> {
    postcard::from_bytes(bytes).map_err(|e| MapError::Decode(e.to_string()))
}

fn corrupt(what: impl fmt::Display) -> MapError {
    MapError::Corrupt(what.to_string())
}

impl Table {
    fn new(entries: usize, bytes: usize) -> Result<Table, MapError> {
        let too_large = || MapError::Io(io::Error::new(io::ErrorKind::InvalidInput, "too large"));
        let slots = entries
            .max(1)
            .checked_mul(4)
            .map(|n| n / 3 + 1)
            .and_then(usize::checked_next_power_of_two)
            .ok_or_else(too_large)?
            .max(8);
        let half = bytes
            .max(64)
            .checked_next_power_of_two()
            .ok_or_else(too_large)?;
        if half > u32::MAX as usize / 2 {
            return Err(too_large());
        }
        let len = slots
            .checked_mul(SLOT)
            .and_then(|n| n.checked_add(half.checked_mul(2)?))
            .ok_or_else(too_large)?;
        let mem = SharedMem::new(len)?;
        let head = Mutex::new(Header {
            slots: slots as u64,
            half: half as u64,
            active: 0,
            used: [0; 2],
            live: 0,
            tombs: 0,
        })?;
        Ok(Table { head, mem })
    }

    /// The lock; a holder that died is repaired here, by rebuilding the
    /// index from the log (see the module's docs).
    fn lock(&self) -> Result<MutexGuard<'_, Header>, MapError> {
        match self.head.lock() {
            Err(LockError::OwnerDied) => {
                let mut guard = self.head.lock_for_repair()?;
                if self.head.is_poisoned() {
                    // Poisoned until the index is whole again.
                    self.rebuild_from_log(&mut guard)?;
                    self.head.clear_poison();
                }
                Ok(guard)
            }
            locked => Ok(locked?),
        }
    }

    fn geometry(&self, h: &Header) -> Result<(usize, usize), MapError> {
        let slots = usize::try_from(h.slots).map_err(corrupt)?;
        let half = usize::try_from(h.half).map_err(corrupt)?;
        let need = slots
            .checked_mul(SLOT)
            .and_then(|n| n.checked_add(half.checked_mul(2)?));
        if !slots.is_power_of_two() || need != Some(self.mem.len()) || h.active > 1 {
            return Err(corrupt("its header does not match its memory"));
        }
        Ok((slots, half))
    }

    /// Where half `which`'s log starts in the memory.
    fn log_base(&self, h: &Header, which: u64) -> Result<usize, MapError> {
        let (slots, half) = self.geometry(h)?;
        Ok(slots * SLOT + half * usize::from(which == 1))
    }

    fn slot(&self, i: usize) -> Result<(u64, u64), MapError> {
        let mut raw = [0u8; SLOT];
        self.mem.read(i * SLOT, &mut raw).map_err(corrupt)?;
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        Ok((word(&raw[..8]), word(&raw[8..])))
    }

    fn set_slot(&self, i: usize, hash: u64, at: u64) -> Result<(), MapError> {
        let mut raw = [0u8; SLOT];
        raw[..8].copy_from_slice(&hash.to_le_bytes());
        raw[8..].copy_from_slice(&at.to_le_bytes());
        self.mem.write(i * SLOT, &raw).map_err(corrupt)
    }

    /// Reads the entry at `offset` of the active log, checked against the
    /// log's committed length.
    fn entry(&self, h: &Header, offset: usize) -> Result<Entry, MapError> {
        let base = self.log_base(h, h.active)?;
        let used = usize::try_from(h.used[usize::from(h.active == 1)]).map_err(corrupt)?;
        let bad = || {
            corrupt(format!(
                "an entry at {offset} runs past the log's {used} bytes"
            ))
        };
        let mut head = [0u8; ENTRY_HEAD];
        if offset.checked_add(ENTRY_HEAD).is_none_or(|end| end > used) {
            return Err(bad());
        }
        self.mem.read(base + offset, &mut head).map_err(corrupt)?;
        let klen_flags = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let vlen = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let klen = (klen_flags & !REMOVED) as usize;
        let len = ENTRY_HEAD + klen + vlen;
        if offset.checked_add(len).is_none_or(|end| end > used) {
            return Err(bad());
        }
        let mut key = vec![0u8; klen];
        self.mem
            .read(base + offset + ENTRY_HEAD, &mut key)
            .map_err(corrupt)?;
        let value = if klen_flags & REMOVED != 0 {
            None
        } else {
            let mut value = vec![0u8; vlen];
            self.mem
                .read(base + offset + ENTRY_HEAD + klen, &mut value)
                .map_err(corrupt)?;
            Some(value)
        };
        Ok(Entry { key, value, len })
    }

    /// The slot holding `key`, if any, and the slot a new key would take.
    fn find(
        &self,
        h: &Header,
        key: &[u8],
        hash: u64,
    ) -> Result<(Option<(usize, Entry)>, usize), MapError> {
        let (slots, _) = self.geometry(h)?;
        let mut free = None;
        let mut i = (hash as usize) & (slots - 1);
        for _ in 0..slots {
            let (slot_hash, at) = self.slot(i)?;
            match at {
                EMPTY => return Ok((None, free.unwrap_or(i))),
                TOMB => {
                    free.get_or_insert(i);
                }
                _ if slot_hash == hash => {
                    let entry = self.entry(h, (at - 1) as usize)?;
                    if entry.key == key {
                        return Ok((Some((i, entry)), free.unwrap_or(i)));
                    }
                }
                _ => {}
            }
            i = (i + 1) & (slots - 1);
        }
        match free {
            Some(i) => Ok((None, i)),
            None => Err(MapError::Full(format!(
                "all {slots} index slots are in use"
            ))),
        }
    }

    /// Appends an entry to the active log and commits it; its offset.
    fn append(&self, h: &mut Header, key: &[u8], value: Option<&[u8]>) -> Result<u64, MapError> {
        let len = ENTRY_HEAD + key.len() + value.map_or(0, <[u8]>::len);
        let half = usize::try_from(h.half).map_err(corrupt)?;
        let active = usize::from(h.active == 1);
        if h.used[active] as usize + len > half {
            self.compact(h, len, None)?;
        }
        let active = usize::from(h.active == 1);
        let offset = usize::try_from(h.used[active]).map_err(corrupt)?;
        let base = self.log_base(h, h.active)?;
        let klen = u32::try_from(key.len()).ok().filter(|&k| k < REMOVED);
        let vlen = u32::try_from(value.map_or(0, <[u8]>::len)).ok();
        let (Some(klen), Some(vlen)) = (klen, vlen) else {
            return Err(MapError::Full("the entry is larger than 2 GiB".into()));
        };
        let flags = if value.is_none() { REMOVED } else { 0 };
        let mut bytes = Vec::with_capacity(len);
        bytes.extend_from_slice(&(klen | flags).to_le_bytes());
        bytes.extend_from_slice(&vlen.to_le_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value.unwrap_or_default());
        self.mem.write(base + offset, &bytes).map_err(corrupt)?;
        // The commit: one aligned word.
        h.used[active] = (offset + len) as u64;
        Ok(offset as u64)
    }

    /// Copies the live entries (but `leave_out`'s) into the other half,
    /// which becomes the log, and rebuilds the index over them; fails if
    /// they and `room` more bytes do not fit a half.
    fn compact(
        &self,
        h: &mut Header,
        room: usize,
        leave_out: Option<&[u8]>,
    ) -> Result<(), MapError> {
        let mut live = self.live_entries(h)?;
        if let Some(key) = leave_out {
            live.retain(|(k, _)| k != key);
        }
        let half = usize::try_from(h.half).map_err(corrupt)?;
        let need: usize = live
            .iter()
            .map(|(k, v)| ENTRY_HEAD + k.len() + v.len())
            .sum();
        if need + room > half {
            return Err(MapError::Full(format!(
                "its log of {half} bytes holds {need} bytes of live entries and cannot take \
                 {room} more"
            )));
        }
        let target = 1 - h.active;
        let base = self.log_base(h, target)?;
        let mut log = Vec::with_capacity(need);
        let mut offsets = Vec::with_capacity(live.len());
        for (k, v) in &live {
            offsets.push(log.len());
            log.extend_from_slice(&(k.len() as u32).to_le_bytes());
            log.extend_from_slice(&(v.len() as u32).to_le_bytes());
            log.extend_from_slice(k);
            log.extend_from_slice(v);
        }
        self.mem.write(base, &log).map_err(corrupt)?;
        let t = usize::from(target == 1);
        h.used[t] = log.len() as u64;
        // The commit: the other half is the log from here on.
        h.active = target;
        self.reindex(h, live.iter().map(|(k, _)| k.as_slice()).zip(offsets))
    }

    /// Every live key and value, from the index.
    fn live_entries(&self, h: &Header) -> Result<Vec<RawEntry>, MapError> {
        let (slots, _) = self.geometry(h)?;
        let mut live = Vec::with_capacity(h.live as usize);
        for i in 0..slots {
            let (_, at) = self.slot(i)?;
            if at != EMPTY && at != TOMB {
                let entry = self.entry(h, (at - 1) as usize)?;
                if let Some(value) = entry.value {
                    live.push((entry.key, value));
                }
            }
        }
        Ok(live)
    }

    /// Clears the index and fills it with `entries` (key, offset).
    fn reindex<'k>(
        &self,
        h: &mut Header,
        entries: impl Iterator<Item = (&'k [u8], usize)>,
    ) -> Result<(), MapError> {
        let (slots, _) = self.geometry(h)?;
        self.mem
            .write(0, &vec![0u8; slots * SLOT])
            .map_err(corrupt)?;
        let mut live = 0u64;
        for (key, offset) in entries {
            let hash = hash_of(key);
            let mut i = (hash as usize) & (slots - 1);
            while self.slot(i)?.1 != EMPTY {
                i = (i + 1) & (slots - 1);
            }
            self.set_slot(i, hash, offset as u64 + 1)?;
            live += 1;
        }
        h.live = live;
        h.tombs = 0;
        Ok(())
    }

    /// After a holder died: the index again, from the active log. An entry
    /// that does not read back (the log's tail past a corrupt entry) ends
    /// the log there.
    fn rebuild_from_log(&self, h: &mut Header) -> Result<(), MapError> {
        let active = usize::from(h.active == 1);
        let mut latest: HashMap<Vec<u8>, Option<usize>> = HashMap::new();
        let mut order: Vec<Vec<u8>> = Vec::new();
        let mut offset = 0usize;
        while (offset as u64) < h.used[active] {
            let Ok(entry) = self.entry(h, offset) else {
                h.used[active] = offset as u64;
                break;
            };
            if !latest.contains_key(&entry.key) {
                order.push(entry.key.clone());
            }
            latest.insert(entry.key, entry.value.map(|_| offset));
            offset += entry.len;
        }
        let live: Vec<(&[u8], usize)> = order
            .iter()
            .filter_map(|k| {
                latest
                    .get(k)
                    .copied()
                    .flatten()
                    .map(|at| (k.as_slice(), at))
            })
            .collect();
        self.reindex(h, live.into_iter())
    }

    fn get(&self, h: &Header, key: &[u8]) -> Result<Option<Vec<u8>>, MapError> {
        Ok(self
            .find(h, key, hash_of(key))?
            .0
            .and_then(|(_, e)| e.value))
    }

    /// Sets `key` to `value`; the old value's bytes, if there was one.
    fn put(&self, h: &mut Header, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, MapError> {
        let hash = hash_of(key);
        let (found, _) = self.find(h, key, hash)?;
        if found.is_none() {
            let (slots, _) = self.geometry(h)?;
            if (h.live + h.tombs + 1) * 4 > slots as u64 * 3 {
                if h.tombs == 0 {
                    return Err(MapError::Full(format!(
                        "it holds {} entries, as many as it was made for",
                        h.live
                    )));
                }
                self.compact(h, 0, None)?;
            }
        }
        // Appending may compact, which moves every entry: look again after.
        let offset = self.append(h, key, Some(value))?;
        let (found, free) = self.find(h, key, hash)?;
        match found {
            Some((i, old)) => {
                self.set_slot(i, hash, offset + 1)?;
                Ok(old.value)
            }
            None => {
                if self.slot(free)?.1 == TOMB {
                    h.tombs -= 1;
                }
                self.set_slot(free, hash, offset + 1)?;
                h.live += 1;
                Ok(None)
            }
        }
    }

    /// Removes `key`; its value's bytes, if it had one.
    fn delete(&self, h: &mut Header, key: &[u8]) -> Result<Option<Vec<u8>>, MapError> {
        let hash = hash_of(key);
        if self.find(h, key, hash)?.0.is_none() {
            return Ok(None);
        }
        let active = usize::from(h.active == 1);
        if h.used[active] + (ENTRY_HEAD + key.len()) as u64 > h.half {
            // No room to log the removal: the compaction leaves the key
            // out instead, which removes it as well.
            let old = self.find(h, key, hash)?.0.and_then(|(_, e)| e.value);
            self.compact(h, 0, Some(key))?;
            return Ok(old);
        }
        self.append(h, key, None)?;
        let Some((i, old)) = self.find(h, key, hash)?.0 else {
            return Ok(None);
        };
        self.set_slot(i, hash, TOMB)?;
        h.live -= 1;
        h.tombs += 1;
        Ok(old.value)
    }

    /// Empties the table: an empty log, committed by its length.
    fn clear(&self, h: &mut Header) -> Result<(), MapError> {
        let active = usize::from(h.active == 1);
        h.used[active] = 0;
        self.reindex(h, std::iter::empty())
    }
}

/// A dictionary of serde keys and values in shared memory, shared by every
/// process and thread that has a handle — Python's
/// `multiprocessing.Manager().dict()`, without the manager process.
///
/// Each call is atomic: it takes the map's lock, reads or changes the map,
/// and lets go. [`update`](Self::update) reads and writes a key in one
/// step (Python's `d[k] += 1` is not). Keys are compared by their encoded
/// bytes, so a `SharedMap<String, _>` is looked up with a `&str`.
///
/// A process that dies in the middle of a call leaves the map as it was
/// before that call or after it, never in between; the next caller finds
/// out and repairs the map's index on its own. The capacity — how many
/// entries, and how many bytes of encoded keys and values — is fixed when
/// the map is made; a change past it fails with [`MapError::Full`] and
/// changes nothing.
///
/// ```
/// use parpool::ipc::SharedMap;
/// use parpool::{Executor, ProcessPool};
///
/// parpool::task! {
///     fn count_words(args: (SharedMap<String, u64>, String)) {
///         let (counts, text) = args;
///         for word in text.split_whitespace() {
///             counts.update(word, |n| Some(n.unwrap_or(0) + 1)).unwrap();
///         }
///     }
/// }
///
/// let counts: SharedMap<String, u64> = SharedMap::new()?;
/// let pool = ProcessPool::builder().workers(2).build()?;
/// let texts = ["a b a", "b a", "c"];
/// let jobs: Vec<_> = texts
///     .iter()
///     .map(|t| pool.submit(count_words, (counts.clone(), t.to_string())))
///     .collect();
/// for job in jobs {
///     job.join()?;
/// }
/// assert_eq!(counts.get("a")?, Some(3));
/// assert_eq!(counts.get("c")?, Some(1));
/// assert_eq!(counts.len()?, 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct SharedMap<K, V> {
    table: Table,
    _types: PhantomData<fn(K) -> V>,
}

impl<K, V> Clone for SharedMap<K, V> {
    fn clone(&self) -> Self {
        SharedMap {
            table: self.table.clone(),
            _types: PhantomData,
        }
    }
}

impl<K, V> fmt::Debug for SharedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMap").finish_non_exhaustive()
    }
}

impl<K, V> SharedMap<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// A map for up to 4,096 entries and 1 MiB of encoded keys and values.
    ///
    /// # Errors
    /// When the system cannot create the shared memory.
    pub fn new() -> Result<Self, MapError> {
        Self::with_capacity(4096, 1 << 20)
    }

    /// A map for up to `entries` entries and `bytes` bytes of encoded keys
    /// and values (each entry takes 8 more). It takes about
    /// `entries × 21 + bytes × 2` bytes of memory.
    ///
    /// # Errors
    /// When the system cannot create the shared memory, or the sizes are
    /// too large.
    pub fn with_capacity(entries: usize, bytes: usize) -> Result<Self, MapError> {
        Ok(SharedMap {
            table: Table::new(entries, bytes)?,
            _types: PhantomData,
        })
    }

    /// The value of `key`, if it has one.
    ///
    /// # Errors
    /// [`MapError::Decode`] if the stored value is not a `V`; `Encode` if
    /// the key does not encode.
    pub fn get<Q>(&self, key: &Q) -> Result<Option<V>, MapError>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        let key = encode(key)?;
        let h = self.table.lock()?;
        let bytes = self.table.get(&h, &key)?;
        drop(h);
        bytes.map(|b| decode(&b)).transpose()
    }

    /// Whether `key` has a value.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn contains_key<Q>(&self, key: &Q) -> Result<bool, MapError>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        let key = encode(key)?;
        let h = self.table.lock()?;
        Ok(self.table.get(&h, &key)?.is_some())
    }

    /// Sets `key` to `value`; the value it had, if any.
    ///
    /// # Errors
    /// [`MapError::Full`] when the map has no room (nothing changes);
    /// `Encode`/`Decode` as for [`get`](Self::get).
    pub fn insert(&self, key: K, value: V) -> Result<Option<V>, MapError> {
        let (key, value) = (encode(&key)?, encode(&value)?);
        let mut h = self.table.lock()?;
        let old = self.table.put(&mut h, &key, &value)?;
        drop(h);
        old.map(|b| decode(&b)).transpose()
    }

    /// Removes `key`; the value it had, if any.
    ///
    /// # Errors
    /// [`MapError::Full`] when the map's log has no room even for the
    /// removal (nothing changes); otherwise as [`get`](Self::get).
    pub fn remove<Q>(&self, key: &Q) -> Result<Option<V>, MapError>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        let key = encode(key)?;
        let mut h = self.table.lock()?;
        let old = self.table.delete(&mut h, &key)?;
        drop(h);
        old.map(|b| decode(&b)).transpose()
    }

    /// Reads and changes `key` in one step, as no other call can come
    /// between: `f` gets the value (`None` if there is none) and returns
    /// the new one (`None` removes the key). Returns the new value.
    ///
    /// ```
    /// let hits = parpool::ipc::SharedMap::<String, u32>::new()?;
    /// hits.update("home", |n| Some(n.unwrap_or(0) + 1))?;
    /// assert_eq!(hits.update("home", |n| Some(n.unwrap_or(0) + 1))?, Some(2));
    /// # Ok::<(), parpool::ipc::MapError>(())
    /// ```
    ///
    /// # Errors
    /// As [`insert`](Self::insert); if `f` panics, nothing changes and the
    /// lock is released.
    pub fn update<Q>(
        &self,
        key: &Q,
        f: impl FnOnce(Option<V>) -> Option<V>,
    ) -> Result<Option<V>, MapError>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        let key = encode(key)?;
        let mut h = self.table.lock()?;
        let old = self.table.get(&h, &key)?.map(|b| decode(&b)).transpose()?;
        let new = f(old);
        match &new {
            Some(v) => {
                self.table.put(&mut h, &key, &encode(v)?)?;
            }
            None => {
                self.table.delete(&mut h, &key)?;
            }
        }
        Ok(new)
    }

    /// How many keys have a value.
    ///
    /// # Errors
    /// When the system refuses the lock, or the memory is corrupt.
    pub fn len(&self) -> Result<usize, MapError> {
        let h = self.table.lock()?;
        usize::try_from(h.live).map_err(corrupt)
    }

    /// Whether no key has a value.
    ///
    /// # Errors
    /// As [`len`](Self::len).
    pub fn is_empty(&self) -> Result<bool, MapError> {
        Ok(self.len()? == 0)
    }

    /// Removes every key.
    ///
    /// # Errors
    /// As [`len`](Self::len).
    pub fn clear(&self) -> Result<(), MapError> {
        let mut h = self.table.lock()?;
        self.table.clear(&mut h)
    }

    /// Every key and value, as they are at one moment (Python's
    /// `dict(d.items())`), in no particular order.
    ///
    /// # Errors
    /// [`MapError::Decode`] if a stored key or value is not of its type.
    pub fn entries(&self) -> Result<Vec<(K, V)>, MapError> {
        let h = self.table.lock()?;
        let raw = self.table.live_entries(&h)?;
        drop(h);
        raw.iter()
            .map(|(k, v)| Ok((decode(k)?, decode(v)?)))
            .collect()
    }

    /// Every key, as at one moment, in no particular order.
    ///
    /// # Errors
    /// As [`entries`](Self::entries).
    pub fn keys(&self) -> Result<Vec<K>, MapError> {
        let h = self.table.lock()?;
        let raw = self.table.live_entries(&h)?;
        drop(h);
        raw.iter().map(|(k, _)| decode(k)).collect()
    }
}

/// A list of serde values in shared memory, shared by every process and
/// thread that has a handle — Python's `ShareableList` (which holds only
/// numbers, strings and bytes, and cannot grow) or a `Manager().list()`.
///
/// Each call is atomic, and a process that dies in the middle of one
/// leaves the list as before or after it, as for [`SharedMap`], of which
/// it is a kind: items are kept under their indices. Its capacity is fixed
/// when it is made.
///
/// ```
/// use parpool::ipc::SharedList;
///
/// let list: SharedList<String> = SharedList::new()?;
/// list.push("a".into())?;
/// list.push("b".into())?;
/// list.set(0, "z".into())?;
/// assert_eq!(list.to_vec()?, ["z", "b"]);
/// assert_eq!(list.pop()?, Some("b".into()));
/// assert_eq!(list.len()?, 1);
/// # Ok::<(), parpool::ipc::MapError>(())
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct SharedList<T> {
    table: Table,
    _types: PhantomData<fn(T) -> T>,
}

impl<T> Clone for SharedList<T> {
    fn clone(&self) -> Self {
        SharedList {
            table: self.table.clone(),
            _types: PhantomData,
        }
    }
}

impl<T> fmt::Debug for SharedList<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedList").finish_non_exhaustive()
    }
}

impl<T: Serialize + DeserializeOwned> SharedList<T> {
    /// A list for up to 4,096 items and 1 MiB of encoded items.
    ///
    /// # Errors
    /// When the system cannot create the shared memory.
    pub fn new() -> Result<Self, MapError> {
        Self::with_capacity(4096, 1 << 20)
    }

    /// A list for up to `items` items and `bytes` bytes of encoded items.
    ///
    /// # Errors
    /// As [`SharedMap::with_capacity`].
    pub fn with_capacity(items: usize, bytes: usize) -> Result<Self, MapError> {
        Ok(SharedList {
            table: Table::new(items, bytes)?,
            _types: PhantomData,
        })
    }

    fn index_key(i: usize) -> Result<Vec<u8>, MapError> {
        encode(&(i as u64))
    }

    /// How many items it holds.
    ///
    /// # Errors
    /// When the system refuses the lock, or the memory is corrupt.
    pub fn len(&self) -> Result<usize, MapError> {
        let h = self.table.lock()?;
        usize::try_from(h.live).map_err(corrupt)
    }

    /// Whether it holds no item.
    ///
    /// # Errors
    /// As [`len`](Self::len).
    pub fn is_empty(&self) -> Result<bool, MapError> {
        Ok(self.len()? == 0)
    }

    /// Adds `value` at the end.
    ///
    /// # Errors
    /// [`MapError::Full`] when the list has no room (nothing changes).
    pub fn push(&self, value: T) -> Result<(), MapError> {
        let value = encode(&value)?;
        let mut h = self.table.lock()?;
        let key = Self::index_key(h.live as usize)?;
        self.table.put(&mut h, &key, &value)?;
        Ok(())
    }

    /// Removes and returns the last item (`None` if it is empty).
    ///
    /// # Errors
    /// [`MapError::Decode`] if the item is not a `T`.
    pub fn pop(&self) -> Result<Option<T>, MapError> {
        let mut h = self.table.lock()?;
        let Some(last) = (h.live as usize).checked_sub(1) else {
            return Ok(None);
        };
        let old = self.table.delete(&mut h, &Self::index_key(last)?)?;
        drop(h);
        old.map(|b| decode(&b)).transpose()
    }

    /// The item at `index`.
    ///
    /// # Errors
    /// [`MapError::OutOfRange`] past the end; `Decode` as for
    /// [`pop`](Self::pop).
    pub fn get(&self, index: usize) -> Result<T, MapError> {
        let h = self.table.lock()?;
        let len = h.live as usize;
        if index >= len {
            return Err(MapError::OutOfRange { index, len });
        }
        let bytes = self.table.get(&h, &Self::index_key(index)?)?;
        drop(h);
        let bytes = bytes.ok_or_else(|| corrupt(format!("item {index} of {len} is missing")))?;
        decode(&bytes)
    }

    /// Replaces the item at `index`; the item it held.
    ///
    /// # Errors
    /// [`MapError::OutOfRange`] past the end; `Full` when the list's log
    /// has no room.
    pub fn set(&self, index: usize, value: T) -> Result<T, MapError> {
        let value = encode(&value)?;
        let mut h = self.table.lock()?;
        let len = h.live as usize;
        if index >= len {
            return Err(MapError::OutOfRange { index, len });
        }
        let old = self.table.put(&mut h, &Self::index_key(index)?, &value)?;
        drop(h);
        let old = old.ok_or_else(|| corrupt(format!("item {index} of {len} was missing")))?;
        decode(&old)
    }

    /// Removes every item.
    ///
    /// # Errors
    /// As [`len`](Self::len).
    pub fn clear(&self) -> Result<(), MapError> {
        let mut h = self.table.lock()?;
        self.table.clear(&mut h)
    }

    /// Every item, in order, as they are at one moment.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn to_vec(&self) -> Result<Vec<T>, MapError> {
        let h = self.table.lock()?;
        let len = h.live as usize;
        let mut raw = Vec::with_capacity(len);
        for i in 0..len {
            raw.push(
                self.table
                    .get(&h, &Self::index_key(i)?)?
                    .ok_or_else(|| corrupt(format!("item {i} of {len} is missing")))?,
            );
        }
        drop(h);
        raw.iter().map(|b| decode(b)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_inserts_overwrites_removes_and_compacts() {
        let m: SharedMap<String, Vec<u32>> = SharedMap::with_capacity(64, 256).unwrap();
        assert_eq!(m.insert("a".into(), vec![1]).unwrap(), None);
        assert_eq!(m.insert("a".into(), vec![2, 3]).unwrap(), Some(vec![1]));
        assert_eq!(m.get("a").unwrap(), Some(vec![2, 3]));
        assert_eq!(m.get("b").unwrap(), None);
        // Many overwrites in a small log: it compacts, nothing is lost.
        for i in 0..10_000u32 {
            m.insert("k".into(), vec![i]).unwrap();
        }
        assert_eq!(m.get("k").unwrap(), Some(vec![9_999]));
        assert_eq!(m.get("a").unwrap(), Some(vec![2, 3]));
        assert_eq!(m.remove("a").unwrap(), Some(vec![2, 3]));
        assert_eq!(m.remove("a").unwrap(), None);
        assert_eq!(m.len().unwrap(), 1);
        m.clear().unwrap();
        assert!(m.is_empty().unwrap());
    }

    #[test]
    fn a_full_map_says_so_and_changes_nothing() {
        let m: SharedMap<u32, u32> = SharedMap::with_capacity(6, 4096).unwrap();
        let mut stored = 0;
        let err = loop {
            match m.insert(stored, stored) {
                Ok(_) => stored += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, MapError::Full(_)), "{err}");
        assert!(stored >= 6, "holds at least what it was made for: {stored}");
        assert_eq!(m.len().unwrap(), stored as usize);
        // Room comes back with a removal, through compaction.
        m.remove(&0).unwrap();
        m.insert(1_000, 1).unwrap();
        let big: SharedMap<u32, Vec<u8>> = SharedMap::with_capacity(8, 64).unwrap();
        assert!(matches!(
            big.insert(1, vec![0; 100]),
            Err(MapError::Full(_))
        ));
        assert_eq!(big.len().unwrap(), 0);
    }

    #[test]
    fn the_map_agrees_with_a_hash_map_over_random_operations() {
        let m: SharedMap<u16, u64> = SharedMap::with_capacity(300, 8192).unwrap();
        let mut model = std::collections::HashMap::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for step in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = (x % 256) as u16;
            match x % 5 {
                0 => assert_eq!(m.remove(&key).unwrap(), model.remove(&key)),
                1 => assert_eq!(m.get(&key).unwrap(), model.get(&key).copied()),
                _ => assert_eq!(m.insert(key, step).unwrap(), model.insert(key, step)),
            }
        }
        assert_eq!(m.len().unwrap(), model.len());
        let mut entries = m.entries().unwrap();
        entries.sort_unstable();
        let mut expected: Vec<_> = model.into_iter().collect();
        expected.sort_unstable();
        assert_eq!(entries, expected);
    }

    #[test]
    fn a_holder_that_dies_mid_change_leaves_a_whole_map() {
        let m: SharedMap<u32, u32> = SharedMap::with_capacity(64, 1024).unwrap();
        for i in 0..20 {
            m.insert(i, i).unwrap();
        }
        // A thread that dies holding the lock after scribbling over the
        // index: the next caller rebuilds it from the log.
        let dying = m.clone();
        std::thread::spawn(move || {
            let h = dying.table.head.lock().unwrap();
            dying.table.mem.write(0, &[0xAB; 64 * SLOT]).unwrap();
            std::mem::forget(h);
        })
        .join()
        .unwrap();
        for i in 0..20 {
            assert_eq!(m.get(&i).unwrap(), Some(i));
        }
        assert_eq!(m.len().unwrap(), 20);
        m.insert(20, 20).unwrap();
        assert_eq!(m.len().unwrap(), 21);
    }

    #[test]
    fn a_list_pushes_pops_sets_and_checks_bounds() {
        let l: SharedList<u64> = SharedList::with_capacity(100, 4096).unwrap();
        for i in 0..50 {
            l.push(i).unwrap();
        }
        assert_eq!(l.get(49).unwrap(), 49);
        assert!(matches!(
            l.get(50),
            Err(MapError::OutOfRange { index: 50, len: 50 })
        ));
        assert_eq!(l.set(3, 300).unwrap(), 3);
        assert_eq!(l.pop().unwrap(), Some(49));
        assert_eq!(l.len().unwrap(), 49);
        assert_eq!(l.to_vec().unwrap()[..4], [0, 1, 2, 300]);
        l.clear().unwrap();
        assert_eq!(l.pop().unwrap(), None);
    }
}
