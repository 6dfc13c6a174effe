//! MPI itself: starting it, spawning ranks, and moving byte messages
//! between rank 0 and the serving ranks without ever blocking on a peer.
//!
//! Sends are non-blocking (`MPI_Isend`), each buffer kept until MPI says it
//! is sent: a blocking send of a large message waits for the peer to post
//! its receive, and two ranks sending large messages to each other at once
//! would wait forever. rsmpi's safe non-blocking sends tie the buffer to a
//! lexical scope, which a long-lived outbox cannot be, so this module calls
//! `MPI_Isend`/`MPI_Test` directly; it is the only place that does.
//! Receives probe first (`MPI_Improbe`, then `MPI_Mrecv` of what it
//! matched), so nothing waits for a message that has not arrived; they
//! call MPI directly too, to check every return code (errors are returned,
//! not fatal, on parpool's communicators).

use std::mem::MaybeUninit;
use std::process::Command;
use std::time::{Duration, Instant};

use mpi::environment::Universe;
use mpi::ffi;
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
        let Some((universe, level)) = (!mpi::environment::is_finalized())
            .then(|| mpi::initialize_with_threading(mpi::Threading::Serialized))
            .flatten()
        else {
            return Err(
                "MPI was already started in this process, by an earlier MpiPool or by \
                        other code, and MPI starts once per process: build one MpiPool per \
                        program and keep it while you need it"
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
        errors_return(mpi.world().as_raw());
        Ok(mpi)
    }

    pub(crate) fn world(&self) -> SimpleCommunicator {
        self.universe.world()
    }

    /// The parent's inter-communicator, in a process started by
    /// `MPI_Comm_spawn`.
    pub(crate) fn parent(&self) -> Option<InterCommunicator> {
        let parent = self.world().parent()?;
        errors_return(parent.as_raw());
        Some(parent)
    }

    /// Spawns `n` processes running `command`: the link to them.
    pub(crate) fn spawn(&self, command: &Command, n: i32) -> Result<InterCommunicator, String> {
        let inter = self
            .world()
            .process_at_rank(0)
            .spawn(command, n)
            .map_err(|e| {
                format!(
                    "MPI_Comm_spawn of {n} serving processes failed ({e:?}): Open MPI may have \
                 fewer free slots than that (spawn fewer, give it hosts, or allow \
                 oversubscription with OMPI_MCA_rmaps_base_oversubscribe=1)"
                )
            })?;
        errors_return(inter.as_raw());
        Ok(inter)
    }
}

/// Makes MPI errors on `comm` come back as return codes rather than
/// aborting the job.
fn errors_return(comm: ffi::MPI_Comm) {
    // SAFETY: `comm` is a communicator of this running MPI (the world, a
    // spawn's inter-communicator or the parent's), and
    // `MPI_ERRORS_RETURN` is a predefined handler; one thread at a time.
    unsafe {
        ffi::MPI_Comm_set_errhandler(comm, ffi::RSMPI_ERRORS_RETURN);
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
            if rc != 0 {
                // The request may still be live: its buffer must outlive
                // it, so it is leaked. The peer is then lost (heartbeats
                // tell).
                std::mem::forget(std::mem::take(&mut out.bytes));
                return false;
            }
            done == 0
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
    /// left are abandoned. Returns whether every one finished (MPI may not
    /// be finalized with a send pending).
    pub(crate) fn drain(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.progress() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(50));
        }
        let all_sent = self.outbox.is_empty();
        for out in std::mem::take(&mut self.outbox) {
            std::mem::forget(out.bytes);
        }
        all_sent
    }

    /// The next message that has arrived, with its sender's rank; `None`
    /// if none has, or if MPI failed to deliver one (logged at debug
    /// level: its sender is then found lost by its silence).
    pub(crate) fn receive(&self) -> Option<(i32, Vec<u8>)> {
        match self.try_receive() {
            Ok(message) => message,
            Err(e) => {
                tracing::debug!(target: "parpool_mpi", "receiving a message failed: {e}");
                None
            }
        }
    }

    fn try_receive(&self) -> Result<Option<(i32, Vec<u8>)>, String> {
        let mut flag = 0;
        // SAFETY: reads constants mpi-sys exports for C's
        // `MPI_MESSAGE_NULL` and `MPI_ANY_SOURCE`.
        let (mut message, any_source) = unsafe { (ffi::RSMPI_MESSAGE_NULL, ffi::RSMPI_ANY_SOURCE) };
        let mut status = MaybeUninit::<ffi::MPI_Status>::uninit();
        // SAFETY: every pointer is to a live local of the type MPI writes
        // there; the communicator is valid while MPI runs; one thread at a
        // time makes MPI calls.
        let rc = unsafe {
            ffi::MPI_Improbe(
                any_source,
                TAG,
                self.comm.raw(),
                &mut flag,
                &mut message,
                status.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(format!("MPI_Improbe failed (error {rc})"));
        }
        if flag == 0 {
            return Ok(None);
        }
        // SAFETY: a successful probe that matched a message wrote its
        // status.
        let status = unsafe { status.assume_init() };
        let mut count = 0;
        // SAFETY: `status` describes the matched message; `count` is a
        // live local.
        let rc = unsafe { ffi::MPI_Get_count(&status, ffi::RSMPI_UINT8_T, &mut count) };
        let len = usize::try_from(count).ok().filter(|_| rc == 0);
        // The matched message is received in any case, so that MPI does
        // not keep it; into nothing if its size is unknown (an error).
        let mut bytes = vec![0u8; len.unwrap_or(0)];
        let mut received = MaybeUninit::<ffi::MPI_Status>::uninit();
        // SAFETY: `bytes` holds as many bytes as the count passed; the
        // message came from the probe above and is received exactly once,
        // here.
        let rc = unsafe {
            ffi::MPI_Mrecv(
                bytes.as_mut_ptr().cast(),
                i32::try_from(bytes.len()).unwrap_or(0),
                ffi::RSMPI_UINT8_T,
                &mut message,
                received.as_mut_ptr(),
            )
        };
        match (len, rc) {
            (Some(_), 0) => Ok(Some((status.MPI_SOURCE, bytes))),
            (None, _) => Err("MPI_Get_count failed on a probed message".into()),
            (_, rc) => Err(format!("MPI_Mrecv failed (error {rc})")),
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Sends MPI may still read from (only after an error or a panic:
        // every normal path drains first): their buffers must outlive
        // them.
        for out in std::mem::take(&mut self.outbox) {
            std::mem::forget(out.bytes);
        }
    }
}

/// This node's name, as MPI knows it.
pub(crate) fn host_name() -> String {
    mpi::environment::processor_name().unwrap_or_else(|_| "unknown-host".into())
}
