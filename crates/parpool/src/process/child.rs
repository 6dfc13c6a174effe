//! The worker side: what a worker process runs instead of `main`.

use std::io::{self, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::capture::Streams;
use super::control::{Claim, Control};
use super::events::{EventSink, EventsOnly};
use super::fdpass::{FdStream, SendFds, TakeFds};
use super::os;
use super::registry::{Sharing, TaskEntry, WorkerState};
use super::reply_log::LogWriter;
use super::wire::{self, FromWorker, Items, LogLevel, ToWorker};
use crate::error::{CodecStage, JobError, Payload};
use parpool_ipc::transfer::{Encoded, Journal};

/// Diverts a worker process into the worker loop before `main` runs.
///
/// Because this is a constructor of the parpool library itself, every
/// binary that starts a `ProcessPool` — applications, integration tests,
/// doc tests, examples — serves as a worker with no line of its own.
/// `parpool::init()` does the same from `main` for setups where
/// constructors do not run.
///
/// It runs at `late` priority: after the constructors that register tasks
/// (`inventory`), so a worker knows every task of its binary.
#[ctor::ctor(unsafe, priority = late)]
fn divert_worker_process() {
    // SAFETY (constructor): runs before `main` on the main thread, with the
    // environment already set up by the loader and after the ordinary
    // constructors; it reads one variable and, only in a process started as
    // a parpool worker, runs the worker loop and exits without returning to
    // the runtime. It touches no state that std initializes in `main`.
    if os::started_as_worker() {
        run();
    }
}

/// Referenced by the pool builder so the object file holding the
/// constructor is always linked into binaries that use process pools.
#[inline(never)]
pub(crate) fn constructor_linked() -> bool {
    std::hint::black_box(true)
}

/// The job running now (0: none), to tag forwarded log events.
static CURRENT_JOB: AtomicU64 = AtomicU64::new(0);

/// What this worker's initializer returned.
static STATE: Mutex<Option<WorkerState>> = Mutex::new(None);

/// Runs `f` with this worker process's state: the value its pool's
/// [`initializer`](crate::ProcessPoolBuilder::initializer) task returned.
///
/// `None` outside a worker process, without an initializer, or when the
/// state is not an `S` (the initializer task's output type). Each worker
/// has its own state; it lives until the worker exits.
///
/// ```no_run
/// use parpool::{Executor, ProcessPool};
///
/// parpool::task!(fn connect(url: String) -> Vec<String> { vec![url] });
/// parpool::task!(fn query(q: String) -> usize {
///     parpool::with_worker_state(|log: &mut Vec<String>| { log.push(q); log.len() }).unwrap_or(0)
/// });
///
/// let pool = ProcessPool::builder().initializer(connect, "db://local".into()).build()?;
/// assert_eq!(pool.submit(query, "select 1".into()).join()?, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn with_worker_state<S: 'static, R>(f: impl FnOnce(&mut S) -> R) -> Option<R> {
    let mut state = crate::sync::lock(&STATE);
    state.as_mut()?.downcast_mut::<S>().map(f)
}

type Out = Arc<Replies<LogWriter>>;

/// A reply that waits in the worker's buffer is sent within this long,
/// even while the next job runs: a job that finished must not wait for
/// one that blocks (it may be what the blocked one waits for).
const FLUSH_AFTER: Duration = Duration::from_micros(500);

/// The worker's reply stream. Replies are buffered and flushed in batches
/// (when no request is waiting), and a flusher thread sends whatever has
/// waited in the buffer for [`FLUSH_AFTER`].
pub(crate) struct Replies<W> {
    out: Mutex<W>,
    /// When the oldest unsent frame was written, in nanoseconds since
    /// `epoch` (at least 1); 0: nothing waits.
    pending: AtomicU64,
    epoch: Instant,
    /// The flusher thread, once started (`None` if it could not be: then
    /// replies still leave when the worker next reads).
    flusher: std::sync::OnceLock<Option<std::thread::Thread>>,
}

impl<W: Write> Replies<W> {
    pub(crate) fn new(out: W) -> Self {
        Replies {
            out: Mutex::new(out),
            pending: AtomicU64::new(0),
            epoch: Instant::now(),
            flusher: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, W> {
        crate::sync::lock(&self.out)
    }

    /// Flushes `w` (this stream, locked).
    fn flush(&self, w: &mut W) -> io::Result<()> {
        self.pending.store(0, SeqCst);
        w.flush()
    }
}

impl<W: Write + Send + 'static> Replies<W> {
    /// Notes that a frame was written and not flushed; starts the flusher
    /// thread the first time (a worker whose replies always leave at once
    /// never needs it).
    fn unsent(self: &Arc<Self>) {
        let now = u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        if self
            .pending
            .compare_exchange(0, now, SeqCst, SeqCst)
            .is_err()
        {
            return;
        }
        if let Some(t) = self.flusher.get_or_init(|| self.start_flusher().ok()) {
            t.unpark();
        }
    }

    /// Starts the flusher thread.
    fn start_flusher(self: &Arc<Self>) -> io::Result<std::thread::Thread> {
        let replies = Arc::downgrade(self);
        let thread = std::thread::Builder::new()
            .name("parpool-flush".into())
            .spawn(move || {
                loop {
                    let Some(r) = replies.upgrade() else { return };
                    let since = r.pending.load(SeqCst);
                    if since == 0 {
                        drop(r);
                        std::thread::park();
                        continue;
                    }
                    let due = r.epoch + Duration::from_nanos(since) + FLUSH_AFTER;
                    let now = Instant::now();
                    if now < due {
                        drop(r);
                        std::thread::sleep(due - now);
                        continue;
                    }
                    let mut w = r.lock();
                    if r.pending.load(SeqCst) == since {
                        // An error here is the main loop's to see.
                        let _ = r.flush(&mut w);
                    }
                }
            })?;
        Ok(thread.thread().clone())
    }
}

/// Runs the worker loop on the socket passed as stdin, then exits.
pub(crate) fn run() -> ! {
    let code = match serve_process() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("parpool worker {}: {e}", os::pid());
            71
        }
    };
    std::process::exit(code)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Serves the pool on the socket passed as stdin, until it lets this
/// worker go.
pub(crate) fn serve_process() -> io::Result<()> {
    let socket = UnixStream::from(os::take_stdin_socket()?);
    os::die_with_parent(env_u64(os::PARENT_ENV).and_then(|p| u32::try_from(p).ok()))?;
    if let Some(bytes) = env_u64(os::MEMORY_ENV) {
        os::limit_memory(bytes)?;
    }
    crate::panic::install_hook();
    let limits = Limits {
        max_frame: env_u64(os::MAX_FRAME_ENV).map_or(wire::DEFAULT_MAX_FRAME, |v| v as usize),
        max_output: env_u64(os::MAX_OUTPUT_ENV).map_or(wire::DEFAULT_MAX_FRAME as u64, |v| v),
        sharing: if std::env::var_os(os::BY_VALUE_ENV).is_some() {
            Sharing::ByValue
        } else {
            Sharing::Descriptors
        },
        spin: Duration::from_nanos(env_u64(os::SPIN_ENV).unwrap_or(0)),
    };
    let out: Out = Arc::new(Replies::new(LogWriter::new(socket.try_clone()?)));
    let _ = tracing::subscriber::set_global_default(EventsOnly(Forwarder { out: out.clone() }));
    {
        let mut w = out.lock();
        wire::write_frame(
            &mut *w,
            &FromWorker::Hello {
                pid: os::pid(),
                version: wire::VERSION.to_owned(),
            },
        )?;
        out.flush(&mut w)?;
    }
    let streams = Streams::from_env(limits.max_output);
    serve(
        BufReader::with_capacity(64 * 1024, FdStream::new(socket)),
        &out,
        limits,
        &streams,
    )
}

/// Size limits the worker enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_frame: usize,
    pub(crate) max_output: u64,
    /// How outputs carry shared objects.
    pub(crate) sharing: Sharing,
    /// How long to poll for the next request before sleeping (zero: not
    /// at all).
    pub(crate) spin: Duration,
}

/// Serves requests from `input` until `Exit` or end of input, writing
/// replies to `out`. Replies are flushed when no request is waiting in the
/// input buffer, so a batch of requests is answered with one write.
pub(crate) fn serve<R: Read + TakeFds, W: SendFds + Send + 'static>(
    mut input: BufReader<R>,
    out: &Arc<Replies<W>>,
    limits: Limits,
    streams: &Streams,
) -> io::Result<()> {
    let mut buf = Vec::new();
    // Claims, the running job, and the chunk journal (`ToWorker::Control`,
    // sent first).
    let mut shared_state: Option<(Control, Journal)> = None;
    // Shared objects of past jobs, kept mapped for the jobs to come.
    let mut kept = parpool_ipc::transfer::Kept::default();
    loop {
        let msg = match wire::read_frame::<_, ToWorker>(&mut input, limits.max_frame, &mut buf) {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(()),
            Err(wire::FrameError::Io(e)) => return Err(e),
            // The parent sent something we cannot read: the stream is no
            // longer in sync, so stop; the parent sees the worker exit.
            Err(e) => return Err(io::Error::other(e)),
        };
        match msg {
            ToWorker::Exit => return Ok(()),
            ToWorker::Wake => {}
            ToWorker::Release { ids } => kept.release(&ids),
            ToWorker::Control {
                shared,
                input: bytes,
            } => {
                let fds = input.take_fds(shared as usize)?;
                let (control, journal) = attach_control(&bytes, fds, out, &limits)?;
                input.use_ring(&control, limits.spin);
                shared_state = Some((control, journal));
            }
            ToWorker::Init {
                task,
                shared,
                input: payload,
            } => {
                // Missing descriptors mean the stream is out of step: stop.
                let fds = input.take_fds(shared as usize)?;
                run_init(task, &payload, fds, out, streams)?;
            }
            ToWorker::Run {
                id,
                seq,
                task,
                items,
                shared,
                input: payload,
            } => {
                let fds = input.take_fds(shared as usize)?;
                let Some((control, journal)) = shared_state.as_mut() else {
                    return Err(io::Error::other("a job came before the control block"));
                };
                if !limits.spin.is_zero() {
                    // The supervisor reads the reply ring once it sends jobs.
                    out.lock().use_ring();
                }
                match control.claim(seq) {
                    Claim::Won => {}
                    // Taken back by the parent, which gave it to another
                    // worker: skip it, without a reply.
                    Claim::Revoked => continue,
                    // Cancelled before it started: say so, in its turn.
                    Claim::Withdrawn => {
                        let mut w = out.lock();
                        wire::write_frame(&mut *w, &FromWorker::Skipped { id })?;
                        flush_unless_more(out, &mut *w, input.buffer().is_empty())?;
                        continue;
                    }
                }
                CURRENT_JOB.store(id, Relaxed);
                // Only a chunk's time is used (to size the next chunks).
                let started = (items != Items::One).then(Instant::now);
                if started.is_some() {
                    // Without its journal a chunk's finished items would be
                    // lost in a crash: stop, the parent replaces us.
                    journal.begin(id)?;
                }
                let (result, received) = parpool_ipc::transfer::collect_received(|| {
                    run_one(&task, &items, &payload, fds, limits, journal)
                });
                let nanos = started.map_or(0, |t| {
                    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
                });
                kept.keep(received);
                CURRENT_JOB.store(0, Relaxed);
                if !control.finish(seq) {
                    // Cancelled (or timed out) while it ran: its result
                    // must not be sent, and the pool kills this worker once
                    // the replies of the jobs before it have arrived. Send
                    // those now and end here, running nothing more.
                    let mut w = out.lock();
                    out.flush(&mut w)?;
                    return Ok(());
                }
                let output = streams.take();
                let (result, segments) = match result {
                    Ok(encoded) => (Ok(wire::Bytes(encoded.bytes)), encoded.shared),
                    Err(e) => (Err(e), Vec::new()),
                };
                let done = FromWorker::Done {
                    id,
                    // At most one descriptor per output byte, so this fits.
                    shared: segments.len() as u32,
                    nanos,
                    result,
                    output,
                };
                let mut w = out.lock();
                wire::write_frame_with_fds(&mut *w, &done, &segments)?;
                flush_unless_more(out, &mut *w, input.buffer().is_empty())?;
            }
        }
    }
}

/// Takes the control block (`ToWorker::Control`: its encoded handle in
/// `bytes`, then the chunk journal's file as the last descriptor): watches
/// its allocation-failure word and logs replies in it from now on.
fn attach_control<W: SendFds + Send + 'static>(
    bytes: &[u8],
    mut fds: Vec<std::os::fd::OwnedFd>,
    out: &Arc<Replies<W>>,
    limits: &Limits,
) -> io::Result<(Control, Journal)> {
    let file = fds.pop().map(std::fs::File::from);
    let block = crate::codec::decode(CodecStage::DecodeInput, bytes, fds)
        .ok()
        .and_then(Control::from_shared);
    let (Some(block), Some(file)) = (block, file) else {
        return Err(io::Error::other("the control block did not arrive intact"));
    };
    // The handler needs the word for the rest of the process.
    let flag: &'static Control = Box::leak(Box::new(block.clone()));
    os::watch_allocation_failures(flag.allocation_flag());
    let journal = Journal::open(file, limits.max_output.saturating_add(4096));
    // From here on, replies wait in the block's reply log.
    out.lock().attach_log(&block)?;
    Ok((block, journal))
}

/// Flushes the replies now if no request waits in the input (`idle`);
/// otherwise leaves them to the flusher, so that a batch of requests is
/// answered with one write.
fn flush_unless_more<W: Write + Send + 'static>(
    out: &Arc<Replies<W>>,
    w: &mut W,
    idle: bool,
) -> io::Result<()> {
    if idle {
        out.flush(w)
    } else {
        out.unsent();
        Ok(())
    }
}

/// Runs the pool's initializer `task` and replies (as job 0).
fn run_init<W: SendFds + Send + 'static>(
    task: String,
    payload: &[u8],
    fds: Vec<std::os::fd::OwnedFd>,
    out: &Arc<Replies<W>>,
    streams: &Streams,
) -> io::Result<()> {
    let result = TaskEntry::find(&task)
        .ok_or(JobError::UnknownTask { name: task })
        .and_then(|entry| entry.run_init(payload, fds))
        .map(|state| {
            *crate::sync::lock(&STATE) = Some(state);
            wire::Bytes(Vec::new())
        });
    let done = FromWorker::Done {
        id: 0,
        shared: 0,
        nanos: 0,
        result,
        output: streams.take(),
    };
    let mut w = out.lock();
    wire::write_frame(&mut *w, &done)?;
    out.flush(&mut w)
}

fn run_one(
    task: &str,
    items: &Items,
    input: &[u8],
    fds: Vec<OwnedFd>,
    limits: Limits,
    journal: &mut Journal,
) -> Result<Encoded, JobError> {
    let entry = TaskEntry::find(task).ok_or_else(|| JobError::UnknownTask {
        name: task.to_owned(),
    })?;
    let output = match items {
        Items::One => entry.run(input, fds, limits.sharing)?,
        Items::All => entry.run_chunk(input, fds, None, journal, limits.sharing)?,
        Items::Only(positions) => {
            entry.run_chunk(input, fds, Some(positions), journal, limits.sharing)?
        }
    };
    if output.bytes.len() as u64 > limits.max_output {
        return Err(JobError::TooLarge {
            what: Payload::Output,
            size: output.bytes.len() as u64,
            limit: limits.max_output,
        });
    }
    Ok(output)
}

/// A `tracing` subscriber that sends every event to the parent, tagged with
/// the running job. Spans are not forwarded; the parent wraps each event in
/// its own span for the worker and job.
struct Forwarder {
    out: Out,
}

struct MessageVisitor {
    message: String,
    fields: String,
}

impl tracing_core::field::Visit for MessageVisitor {
    fn record_debug(&mut self, field: &tracing_core::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &tracing_core::Field, value: &str) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

impl EventSink for Forwarder {
    fn event(&self, event: &tracing_core::Event<'_>) {
        let meta = event.metadata();
        let mut v = MessageVisitor {
            message: String::new(),
            fields: String::new(),
        };
        event.record(&mut v);
        let level = match *meta.level() {
            tracing_core::Level::ERROR => LogLevel::Error,
            tracing_core::Level::WARN => LogLevel::Warn,
            tracing_core::Level::INFO => LogLevel::Info,
            tracing_core::Level::DEBUG => LogLevel::Debug,
            tracing_core::Level::TRACE => LogLevel::Trace,
        };
        let job = Some(CURRENT_JOB.load(Relaxed)).filter(|&j| j != 0);
        let msg = FromWorker::Log {
            job,
            level,
            target: meta.target().to_owned(),
            message: v.message + &v.fields,
        };
        let mut w = self.out.lock();
        if wire::write_frame(&mut *w, &msg).is_ok() {
            self.out.unsent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_frame: 1 << 20,
            max_output: 1 << 20,
            sharing: Sharing::Descriptors,
            spin: Duration::ZERO,
        }
    }

    fn run_frames(frames: &[u8]) -> (io::Result<()>, Vec<u8>) {
        let out = Arc::new(Replies::new(Vec::new()));
        let r = serve(BufReader::new(frames), &out, limits(), &Streams::default());
        let bytes = std::mem::take(&mut *out.lock());
        (r, bytes)
    }

    #[test]
    fn a_job_before_the_control_block_ends_the_connection() {
        // Without its claim cell the worker cannot know whether the job
        // was moved to another worker: it must not run it.
        let mut req = Vec::new();
        let run = ToWorker::Run {
            id: 9,
            seq: 1,
            task: "no::such".into(),
            items: Items::One,
            shared: 0,
            input: vec![],
        };
        wire::write_frame(&mut req, &run).unwrap();
        let (r, out) = run_frames(&req);
        assert!(r.is_err());
        assert!(out.is_empty(), "no reply: {out:?}");
    }

    proptest::proptest! {
        #[test]
        fn garbage_input_never_panics_the_worker_loop(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)
        ) {
            // Either the loop ends cleanly or with an error: it never panics.
            let _ = run_frames(&bytes);
        }
    }
}
