//! The queue's ring, apart from its locks and waits: two positions that
//! only grow, and copies that wrap around the capacity. This is the part
//! whose memory ordering the loom model below checks: a writer fills free
//! cells and then publishes `tail` (Release); a reader sees `tail`
//! (Acquire), reads the cells, and publishes `head` (Release) before the
//! writer reuses them.

use std::sync::atomic::Ordering::{Acquire, Release};

/// A position (`tail` or `head`): read with Acquire, published with
/// Release.
pub(crate) trait Position {
    fn get(&self) -> u64;
    fn set(&self, v: u64);
}

impl Position for std::sync::atomic::AtomicU64 {
    fn get(&self) -> u64 {
        self.load(Acquire)
    }
    fn set(&self, v: u64) {
        self.store(v, Release);
    }
}

#[cfg(parpool_loom)]
impl Position for loom::sync::atomic::AtomicU64 {
    fn get(&self) -> u64 {
        self.load(Acquire)
    }
    fn set(&self, v: u64) {
        self.store(v, Release);
    }
}

/// The ring's bytes.
pub(crate) trait Cells {
    /// Writes `data` at offset `at` (in bounds; the caller owns the cells).
    fn put(&self, at: usize, data: &[u8]);
    /// Reads `out.len()` bytes at offset `at` (in bounds, published).
    fn take(&self, at: usize, out: &mut [u8]);
    /// Appends the `n` bytes at offset `at` (in bounds, published) to `out`.
    fn append(&self, at: usize, n: usize, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + n, 0);
        self.take(at, &mut out[start..]);
    }
}

/// A ring over `cap` cells (a power of two), between one writer and one
/// reader at a time.
pub(crate) struct Ring<'a, P, C> {
    pub(crate) tail: &'a P,
    pub(crate) head: &'a P,
    pub(crate) cells: C,
    pub(crate) cap: u64,
}

impl<C: Cells> Cells for &C {
    fn put(&self, at: usize, data: &[u8]) {
        (**self).put(at, data);
    }
    fn take(&self, at: usize, out: &mut [u8]) {
        (**self).take(at, out);
    }
    fn append(&self, at: usize, n: usize, out: &mut Vec<u8>) {
        (**self).append(at, n, out);
    }
}

impl<P: Position, C: Cells> Ring<'_, P, C> {
    /// Free cells.
    pub(crate) fn space(&self) -> u64 {
        self.cap - self.available()
    }

    /// Published bytes not yet read. (A head past the tail, or more than
    /// the capacity between them, only a corrupted region shows: it reads
    /// as empty, or full, never as a count that wrapped around; every
    /// access is modulo the capacity, so garbage positions read garbage
    /// bytes, never outside the ring.)
    pub(crate) fn available(&self) -> u64 {
        self.tail
            .get()
            .saturating_sub(self.head.get())
            .min(self.cap)
    }

    /// Writes `data` at stream position `pos`, wrapping at the end.
    pub(crate) fn write(&self, pos: u64, data: &[u8]) {
        let at = (pos % self.cap) as usize;
        let first = data.len().min(self.cap as usize - at);
        self.cells.put(at, &data[..first]);
        self.cells.put(0, &data[first..]);
    }

    /// Reads `out.len()` bytes at stream position `pos`, wrapping.
    pub(crate) fn read(&self, pos: u64, out: &mut [u8]) {
        let at = (pos % self.cap) as usize;
        let first = out.len().min(self.cap as usize - at);
        let (a, b) = out.split_at_mut(first);
        self.cells.take(at, a);
        self.cells.take(0, b);
    }

    /// Appends the `n` bytes at stream position `pos` to `out`, wrapping.
    pub(crate) fn read_append(&self, pos: u64, n: usize, out: &mut Vec<u8>) {
        let at = (pos % self.cap) as usize;
        let first = n.min(self.cap as usize - at);
        self.cells.append(at, first, out);
        self.cells.append(0, n - first, out);
    }
}

#[cfg(all(test, parpool_loom))]
mod tests {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicU64;

    struct LoomCells(Vec<UnsafeCell<u8>>);

    impl Cells for LoomCells {
        fn put(&self, at: usize, data: &[u8]) {
            for (i, &b) in data.iter().enumerate() {
                // SAFETY: the ring protocol gives the writer these cells
                // alone until it publishes them; loom checks that claim.
                self.0[at + i].with_mut(|p| unsafe { *p = b });
            }
        }
        fn take(&self, at: usize, out: &mut [u8]) {
            for (i, o) in out.iter_mut().enumerate() {
                // SAFETY: published cells are not written again until the
                // reader publishes `head` past them; loom checks it.
                *o = self.0[at + i].with(|p| unsafe { *p });
            }
        }
    }

    /// A writer and a reader hand framed messages (`[len][bytes]`) over a
    /// 4-cell ring, wrapping around it; every interleaving delivers them
    /// intact and in order, with no data race on the cells.
    #[test]
    fn loom_ring_hands_messages_over_intact() {
        loom::model(|| {
            let tail = Arc::new(AtomicU64::new(0));
            let head = Arc::new(AtomicU64::new(0));
            let cells = Arc::new(LoomCells((0..4).map(|_| UnsafeCell::new(0)).collect()));
            let messages: [&[u8]; 2] = [&[7, 8], &[9, 10, 11]];
            let writer = {
                let (tail, head, cells) = (tail.clone(), head.clone(), cells.clone());
                loom::thread::spawn(move || {
                    let ring = Ring {
                        tail: &*tail,
                        head: &*head,
                        cells: &*cells,
                        cap: 4,
                    };
                    for m in messages {
                        let need = 1 + m.len() as u64;
                        while ring.space() < need {
                            loom::thread::yield_now();
                        }
                        let pos = ring.tail.get();
                        ring.write(pos, &[m.len() as u8]);
                        ring.write(pos + 1, m);
                        ring.tail.set(pos + need);
                    }
                })
            };
            let ring = Ring {
                tail: &*tail,
                head: &*head,
                cells: &*cells,
                cap: 4,
            };
            for m in messages {
                while ring.available() < 1 {
                    loom::thread::yield_now();
                }
                let pos = ring.head.get();
                let mut len = [0u8];
                ring.read(pos, &mut len);
                assert_eq!(len[0] as usize, m.len());
                while ring.available() < 1 + m.len() as u64 {
                    loom::thread::yield_now();
                }
                let mut got = vec![0u8; m.len()];
                ring.read(pos + 1, &mut got);
                assert_eq!(got, m);
                ring.head.set(pos + 1 + m.len() as u64);
            }
            writer.join().unwrap();
        });
    }
}
