//! MPI itself: starting it, spawning ranks, and moving byte messages
//! between rank 0 and the serving ranks without ever blocking on a peer.
//!
//! Sends are non-blocking (`MPI_Isend`), each buffer kept until MPI says it
//! is sent: a blocking send of a large message waits for the peer to post
//! its receive, and two ranks sending large messages to each other at once
//! would wait forever. rsmpi's safe non-blocking sends tie the buffer to a
//! lexical scope, which a long-lived outbox cannot be, so this module calls
//! `MPI_Isend`/`MPI_Test` directly; it is the only place that does.
//! Receives probe first (`MPI_Improbe`), so nothing waits for a message
//! that has not arrived.

use std::process::Command;
use std::time::{Duration, Instant};

use mpi::environment::Universe;
use mpi::ffi;
use mpi::point_to_point::{MatchedReceiveVec, Source};
use mpi::raw::AsRaw;
use mpi::topology::{Communicator, InterCommunicator, SimpleCommunicator};
use mpi::traits::Root;

use crate::wire::TAG;

/// MPI, started for this process. Dropping it finalizes MPI (which MPI
/// allows once per process).
pub(crate) struct Mpi {
    universe: Universe,
}

impl Mpi {
    /// Starts MPI with calls allowed from any one thread at a time.
    pub(crate) fn start() -> Result<Mpi, String> {
        if mpi::environment::is_finalized() {
            return Err(
                "MPI was already finalized in this process: an MPI job allows one \
                        MpiPool, built once (keep the pool for the whole program)"
                    .into(),
            );
        }
        let Some((universe, level)) = mpi::initialize_with_threading(mpi::Threading::Serialized)
        else {
            return Err(
                "MPI was already initialized in this process by other code; \
                        build the MpiPool before (or instead of) initializing MPI yourself"
                    .into(),
            );
        };
        if level < mpi::Threading::Serialized {
            return Err(format!(
                "this MPI library offers thread level {level:?}; parpool-mpi needs \
                 MPI_THREAD_SERIALIZED (rebuild MPI with thread support)"
            ));
        }
        let mpi = Mpi { universe };
        // Errors come back as codes rather than aborting the whole job.
        // SAFETY: `MPI_COMM_WORLD` is valid while MPI runs (it was started
        // above) and `MPI_ERRORS_RETURN` is a predefined handler.
        unsafe {
            ffi::MPI_Comm_set_errhandler(mpi.world().as_raw(), ffi::RSMPI_ERRORS_RETURN);
        }
        Ok(mpi)
    }

    pub(crate) fn world(&self) -> SimpleCommunicator {
        self.universe.world()
    }

    /// The parent's inter-communicator, in a process started by
    /// `MPI_Comm_spawn`.
    pub(crate) fn parent(&self) -> Option<InterCommunicator> {
        self.world().parent()
    }

    /// Spawns `n` processes running `command`: the link to them.
    pub(crate) fn spawn(&self, command: &Command, n: i32) -> Result<InterCommunicator, String> {
        self.world()
            .process_at_rank(0)
            .spawn(command, n)
            .map_err(|e| format!("MPI_Comm_spawn of {n} workers failed: {e:?}"))
    }
}

/// The communicator rank 0 and the serving ranks talk over: the world
/// (under a launcher) or the inter-communicator of a spawn.
pub(crate) enum Comm {
    World(SimpleCommunicator),
    Inter(InterCommunicator),
}

impl Comm {
    fn raw(&self) -> ffi::MPI_Comm {
        match self {
            Comm::World(c) => c.as_raw(),
            Comm::Inter(c) => c.as_raw(),
        }
    }

    /// The ranks this process can send to: the world's size, or the
    /// remote group's.
    pub(crate) fn peers(&self) -> i32 {
        match self {
            Comm::World(c) => c.size(),
            Comm::Inter(c) => c.remote_size(),
        }
    }
}

/// A message on its way out.
struct Outgoing {
    dest: i32,
    /// Read by MPI until the request completes: never touched, moved or
    /// freed before then (a `Vec`'s heap buffer stays put when the `Vec`
    /// moves).
    bytes: Vec<u8>,
    request: ffi::MPI_Request,
}

/// Sends and receives parpool's messages over a [`Comm`].
pub(crate) struct Link {
    comm: Comm,
    outbox: Vec<Outgoing>,
}

impl Link {
    pub(crate) fn new(comm: Comm) -> Link {
        Link {
            comm,
            outbox: Vec::new(),
        }
    }

    pub(crate) fn comm(&self) -> &Comm {
        &self.comm
    }

    /// Starts sending `bytes` to `dest`; [`progress`](Self::progress)
    /// finishes it.
    pub(crate) fn send(&mut self, dest: i32, bytes: Vec<u8>) -> Result<(), String> {
        let count = i32::try_from(bytes.len())
            .map_err(|_| format!("a message of {} bytes is over MPI's limit", bytes.len()))?;
        let mut out = Outgoing {
            dest,
            bytes,
            // SAFETY: reads a constant that mpi-sys exports for C's
            // `MPI_REQUEST_NULL`.
            request: unsafe { ffi::RSMPI_REQUEST_NULL },
        };
        // SAFETY: the buffer holds `count` bytes and stays alive and
        // unmodified until `MPI_Test` reports the request complete (it is
        // owned by `out`, kept in `outbox` until then, or leaked by
        // `abandon`); the communicator is valid while MPI runs, and this
        // process makes MPI calls from one thread at a time.
        let rc = unsafe {
            ffi::MPI_Isend(
                out.bytes.as_ptr().cast(),
                count,
                ffi::RSMPI_UINT8_T,
                dest,
                TAG,
                self.comm.raw(),
                &mut out.request,
            )
        };
        if rc != 0 {
            // Not started: MPI holds no reference to the buffer.
            return Err(format!("MPI_Isend to rank {dest} failed (error {rc})"));
        }
        self.outbox.push(out);
        Ok(())
    }

    /// Lets MPI move pending sends along and drops those that are done;
    /// returns how many are still pending.
    pub(crate) fn progress(&mut self) -> usize {
        self.outbox.retain_mut(|out| {
            let mut done = 0;
            // SAFETY: `out.request` came from `MPI_Isend` and was not
            // completed yet (completed requests are removed here).
            let rc =
                unsafe { ffi::MPI_Test(&mut out.request, &mut done, ffi::RSMPI_STATUS_IGNORE) };
            // Kept while pending; an error completes nothing, and the peer
            // is then lost (heartbeats tell), so the send is abandoned with
            // it.
            rc == 0 && done == 0
        });
        self.outbox.len()
    }

    /// Gives up on the pending sends to `dest` (a lost rank): their buffers
    /// are leaked, since MPI may still read them.
    pub(crate) fn abandon(&mut self, dest: i32) {
        let (lost, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.outbox)
            .into_iter()
            .partition(|o| o.dest == dest);
        self.outbox = kept;
        for out in lost {
            std::mem::forget(out.bytes);
        }
    }

    /// Waits up to `timeout` for every pending send to finish; the ones
    /// left are abandoned.
    pub(crate) fn drain(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.progress() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(50));
        }
        for out in std::mem::take(&mut self.outbox) {
            std::mem::forget(out.bytes);
        }
    }

    /// The next message that has arrived, with its sender's rank.
    pub(crate) fn receive(&self) -> Option<(i32, Vec<u8>)> {
        match &self.comm {
            Comm::World(c) => receive_on(c),
            Comm::Inter(c) => receive_on(c),
        }
    }
}

fn receive_on<C: Communicator>(c: &C) -> Option<(i32, Vec<u8>)> {
    let probed = c.any_process().immediate_matched_probe_with_tag(TAG)?;
    let (bytes, status) = probed.matched_receive_vec::<u8>();
    Some((status.source_rank(), bytes))
}

/// This node's name, as MPI knows it.
pub(crate) fn host_name() -> String {
    mpi::environment::processor_name().unwrap_or_else(|_| "unknown-host".into())
}
