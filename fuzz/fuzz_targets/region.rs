//! Shared regions received from another process: a memory file of any
//! size, seals and contents, named by a message of any bytes, opened as
//! each kind of `ipc` object and used without blocking. The header checks
//! must refuse what is not a region of that kind; what they accept must
//! be safe to use.
#![no_main]

use std::io::Write;
use std::os::fd::OwnedFd;
use std::time::Duration;

use parpool_ipc::{Barrier, Condvar, Event, Mutex, Queue, Semaphore, SharedMem};
use rustix::fs::{MemfdFlags, SealFlags};

/// A memory file holding `contents`, sealed against resizing if `seal`.
fn memfd(contents: &[u8], seal: bool) -> Option<OwnedFd> {
    let fd =
        rustix::fs::memfd_create("fuzz", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).ok()?;
    let mut file = std::fs::File::from(fd);
    file.write_all(contents).ok()?;
    let fd = OwnedFd::from(file);
    if seal {
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW).ok()?;
    }
    Some(fd)
}

/// Decodes a `T` from `message` with `fd` as the descriptor that came
/// with it.
fn receive<T: serde::de::DeserializeOwned>(message: &[u8], fd: OwnedFd) -> Option<T> {
    parpool_ipc::transfer::receiving(vec![fd], || postcard::from_bytes::<T>(message).ok())
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [kind, seal, split, rest @ ..] = data else {
        return;
    };
    let at = (*split as usize).min(rest.len());
    let (message, contents) = rest.split_at(at);
    let Some(fd) = memfd(contents, seal & 1 == 1) else {
        return;
    };
    let short = Duration::from_millis(1);
    match kind % 7 {
        0 => {
            if let Some(m) = receive::<SharedMem>(message, fd) {
                let mut buf = [0u8; 16];
                let _ = m.read(0, &mut buf);
                let _ = m.write(m.len().saturating_sub(1), &[1]);
                let _ = m
                    .atomic_u64(0)
                    .map(|a| a.load(std::sync::atomic::Ordering::SeqCst));
            }
        }
        1 => {
            if let Some(e) = receive::<Event>(message, fd) {
                let _ = e.is_set();
                let _ = e.wait_timeout(short);
                e.set();
            }
        }
        2 => {
            if let Some(m) = receive::<Mutex<u64>>(message, fd) {
                if let Ok(mut g) = m.try_lock() {
                    *g += 1;
                }
                let _ = m.is_poisoned();
            }
        }
        3 => {
            if let Some(s) = receive::<Semaphore>(message, fd) {
                let _ = s.try_acquire();
            }
        }
        4 => {
            if let Some(b) = receive::<Barrier>(message, fd) {
                let _ = b.is_broken();
                if let Ok(party) = b.party() {
                    let _ = party.wait_timeout(short);
                }
            }
        }
        5 => {
            if let Some(q) = receive::<Queue<Vec<u8>>>(message, fd) {
                let _ = q.len();
                let _ = q.try_recv();
                let _ = q.try_send(vec![1, 2, 3]);
                let _ = q.try_recv();
            }
        }
        _ => {
            if let Some(c) = receive::<Condvar>(message, fd) {
                c.notify_all();
            }
        }
    }
});
