//! [`Event`]: a flag that processes and threads wait on, also from async
//! code ([`EventWait`]).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::wait::wait_on;
use super::mem::RegionSeed;
use super::region::{self, HEADER, Kind, Region, fixed_region_serde};
use super::sys;
use crate::wait::Registration;

/// A flag that processes and threads wait on until another sets it, like
/// `multiprocessing.Event`.
///
/// ```
/// use parpool::ipc::Event;
/// use std::time::Duration;
///
/// let ready = Event::new()?;
/// assert!(!ready.wait_timeout(Duration::from_millis(1)));
/// ready.set();
/// ready.wait();
/// assert!(ready.is_set());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Event {
    region: Arc<Region>,
}

impl Event {
    /// A new event, not set.
    ///
    /// # Errors
    /// When the system cannot create the shared memory.
    pub fn new() -> io::Result<Self> {
        Ok(Event {
            region: Arc::new(Region::create(Kind::Event, 4)?),
        })
    }

    fn flag(&self) -> &AtomicU32 {
        sys::atomic_at(self.region.map(), HEADER).expect("in bounds")
    }

    /// Sets the flag and wakes every waiter, in every process.
    pub fn set(&self) {
        self.flag().store(1, Ordering::Release);
        sys::futex_wake(self.flag(), sys::WAKE_ALL);
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.flag().store(0, Ordering::Release);
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.flag().load(Ordering::Acquire) != 0
    }

    /// Waits until the flag is set.
    pub fn wait(&self) {
        wait_on(self.flag(), None, || (!self.is_set()).then_some(0));
    }

    /// Waits at most `timeout`; whether the flag was set.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        wait_on(self.flag(), Instant::now().checked_add(timeout), || {
            (!self.is_set()).then_some(0)
        })
    }

    /// Waits until the flag is set, as a future for any async runtime.
    ///
    /// ```
    /// use parpool::ipc::Event;
    ///
    /// let ready = Event::new()?;
    /// let setter = ready.clone();
    /// std::thread::spawn(move || setter.set());
    /// futures::executor::block_on(ready.wait_async());
    /// assert!(ready.is_set());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wait_async(&self) -> EventWait<'_> {
        EventWait {
            event: self,
            registration: Registration::default(),
        }
    }
}

/// The future of [`Event::wait_async`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct EventWait<'a> {
    event: &'a Event,
    registration: Registration,
}

impl Future for EventWait<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.event.is_set() {
            return Poll::Ready(());
        }
        let region = self.event.region.clone();
        self.registration.wait(&region, 0, 0, cx.waker());
        // Set between the check and the registration: the waiter thread
        // sees the changed word at once, but answer now anyway.
        if self.event.is_set() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish_non_exhaustive()
    }
}

fixed_region_serde!(Event, Kind::Event, 4);
