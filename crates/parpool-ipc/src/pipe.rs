//! [`Pipe`]: a typed two-way channel between two processes (or threads),
//! as Python's `multiprocessing.Pipe()`: two [`Queue`]s, one each way.

use std::fmt;
use std::io;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::queue::{Queue, RecvError, SendError};

/// One end of a two-way channel: it sends `S` and receives `R`, and the
/// other end sends `R` and receives `S` — Python's
/// `parent, child = multiprocessing.Pipe()`, typed (one type both ways by
/// default). Give an end to a job as part of its input, as any `ipc`
/// object; messages are encoded with postcard into shared memory.
///
/// ```
/// use parpool::ipc::Pipe;
/// use parpool::{Executor, ProcessPool};
///
/// parpool::task! {
///     /// Answers each number with its square until the other end closes.
///     fn squarer(end: Pipe<u64>) {
///         while let Ok(x) = end.recv() {
///             end.send(x * x).unwrap();
///         }
///     }
/// }
///
/// let (here, there) = Pipe::<u64>::new()?;
/// let pool = ProcessPool::builder().workers(1).build()?;
/// let served = pool.submit(squarer, there);
/// for x in 1..=3 {
///     here.send(x)?;
///     assert_eq!(here.recv()?, x * x);
/// }
/// here.close();
/// served.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Each direction is a [`Queue`] of 1 MiB (a larger message streams
/// through it): a send waits only when the other end has that much
/// unread. An end may be cloned and used from several threads or
/// processes at once; each message is received once.
#[derive(Serialize, Deserialize)]
#[serde(bound = "", from = "Ends<S, R>")]
pub struct Pipe<S, R = S> {
    tx: Queue<S>,
    rx: Queue<R>,
}

/// A pipe end as it crosses: its queues, made prompt again on arrival.
#[derive(Deserialize)]
#[serde(bound = "")]
struct Ends<S, R> {
    tx: Queue<S>,
    rx: Queue<R>,
}

impl<S, R> From<Ends<S, R>> for Pipe<S, R> {
    fn from(ends: Ends<S, R>) -> Self {
        Pipe {
            tx: ends.tx,
            rx: ends.rx.prompt(),
        }
    }
}

impl<S, R> Clone for Pipe<S, R> {
    fn clone(&self) -> Self {
        Pipe {
            tx: self.tx.clone(),
            rx: self.rx.clone(),
        }
    }
}

impl<S, R> fmt::Debug for Pipe<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipe").finish_non_exhaustive()
    }
}

impl<S, R> Pipe<S, R>
where
    S: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    /// The two ends of a new pipe: the first sends `S` and receives `R`,
    /// the second the other way round.
    ///
    /// # Errors
    /// When the system cannot create the shared memory.
    pub fn new() -> io::Result<(Pipe<S, R>, Pipe<R, S>)> {
        let forth: Queue<S> = Queue::new()?;
        let back: Queue<R> = Queue::new()?;
        Ok((
            Pipe {
                tx: forth.clone(),
                rx: back.clone(),
            },
            Pipe {
                tx: back,
                rx: forth,
            },
        ))
    }

    /// Sends `value` to the other end, waiting for room as long as it
    /// takes.
    ///
    /// # Errors
    /// [`SendError::Closed`] (with the value) once either end closed this
    /// direction; [`SendError::Encode`] if it does not encode.
    pub fn send(&self, value: S) -> Result<(), SendError<S>> {
        self.tx.send(value)
    }

    /// Sends `value`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// As [`send`](Self::send), and [`SendError::Full`] when the time ran
    /// out.
    pub fn send_timeout(&self, value: S, timeout: Duration) -> Result<(), SendError<S>> {
        self.tx.send_timeout(value, timeout)
    }

    /// Receives the next message from the other end, waiting as long as it
    /// takes.
    ///
    /// # Errors
    /// [`RecvError::Disconnected`] once the other end has closed and every
    /// message it sent has been received.
    pub fn recv(&self) -> Result<R, RecvError> {
        self.rx.recv()
    }

    /// Receives a message if one is waiting (Python's `poll()` and `recv()`
    /// in one).
    ///
    /// # Errors
    /// [`RecvError::Empty`] if none is; otherwise as [`recv`](Self::recv).
    pub fn try_recv(&self) -> Result<R, RecvError> {
        self.rx.try_recv()
    }

    /// Receives the next message, waiting at most `timeout` (Python's
    /// `poll(timeout)` then `recv()`).
    ///
    /// # Errors
    /// [`RecvError::Empty`] when the time ran out; otherwise as
    /// [`recv`](Self::recv).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<R, RecvError> {
        self.rx.recv_timeout(timeout)
    }

    /// Receives the next message without blocking a thread, from any async
    /// runtime.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub async fn recv_async(&self) -> Result<R, RecvError> {
        self.rx.recv_async().await
    }

    /// Sends `value` without blocking a thread, from any async runtime.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn send_async(&self, value: S) -> Result<(), SendError<S>> {
        self.tx.send_async(value).await
    }

    /// Whether a message from the other end is waiting.
    pub fn has_message(&self) -> bool {
        !self.rx.is_empty()
    }

    /// Closes this end's sending direction, as Python's `close()`: the
    /// other end receives what was sent, then
    /// [`RecvError::Disconnected`]; sends from this end fail. (Messages
    /// still come the other way until the other end closes too.)
    pub fn close(&self) {
        self.tx.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_carry_their_own_types_and_close_separately() {
        let (client, server) = Pipe::<String, usize>::new().unwrap();
        let server_thread = std::thread::spawn(move || {
            let mut served = 0;
            while let Ok(word) = server.recv() {
                server.send(word.len()).unwrap();
                served += 1;
            }
            // The client closed its side; this side still sends.
            server.send(served).unwrap();
            served
        });
        for word in ["a", "bb", "ccc"] {
            client.send(word.to_owned()).unwrap();
            assert_eq!(client.recv().unwrap(), word.len());
        }
        assert!(client.try_recv().is_err());
        client.close();
        assert!(matches!(client.send("x".into()), Err(SendError::Closed(_))));
        assert_eq!(server_thread.join().unwrap(), 3);
        assert_eq!(client.recv_timeout(Duration::from_secs(10)).unwrap(), 3);
    }
}
