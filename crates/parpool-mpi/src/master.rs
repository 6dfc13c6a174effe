//! Rank 0's side: one thread that makes every MPI call, holds the jobs
//! not yet sent, sends them to the serving ranks in batches, and resolves
//! their handles as results come back.
//!
//! # Scheduling
//!
//! * Each rank gets at most `workers + pipeline` jobs at a time, where the
//!   pipeline is sized from the rank's measured job time to hold about
//!   [`PIPELINE_TARGET`] of work per worker: tiny jobs are sent many to a
//!   message, long ones a job or two ahead of need. Jobs go first to idle
//!   workers, wherever they are, then to the pipelines in proportion to
//!   their room, so nodes of different sizes fill evenly.
//! * Nothing is stranded: when a rank has an idle worker and nothing waits
//!   on rank 0, the ranks holding jobs beyond their workers (behind a
//!   blocked job, or just at the end of a batch) are asked for as many
//!   unstarted ones back as there are idle workers, at most every
//!   [`REVOKE_EVERY`]; they go to the idle workers. A rank hands back only
//!   jobs its local pool has not started, so none runs twice.
//! * A rank that sends nothing, not even its heartbeat, for `lost_after`
//!   is lost: its jobs run again elsewhere while their `retries` last, and
//!   otherwise fail with [`JobError::Lost`].

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use parpool::JobError;

use crate::comm::Link;
use crate::log;
use crate::pace::{Pacer, busy_ceiling};
use crate::wire::{self, FromRank, JobMsg, Kind, Outcome, ToRank};

/// How much work, in time, a rank's pipeline aims to hold per worker: more
/// than a result's trip to rank 0 and the next job's trip back (each seen
/// up to [`busy_ceiling`] late), so that a busy rank never waits for work.
const PIPELINE_TARGET: Duration = Duration::from_millis(8);
/// The deepest pipeline per rank, in jobs.
const MAX_PIPELINE: usize = 4096;
/// The least time between two requests to a rank to give jobs back.
const REVOKE_EVERY: Duration = Duration::from_millis(1);
/// How often an idle pool still reads its messages (heartbeats).
const IDLE_SLEEP: Duration = Duration::from_millis(100);
/// The most input bytes one message carries.
const MAX_BATCH: usize = 16 << 20;
/// The most messages read in one round.
const MAX_MESSAGES: usize = 256;

/// Resolves a job's handle from its outcome.
pub(crate) trait Sink: Send {
    /// Marks the job sent; `false` if it was cancelled and must not be.
    fn start(&self) -> bool;
    fn finish(&self, outcome: Outcome, took: Duration);
    fn fail(&self, error: JobError);
}

/// A job on rank 0.
pub(crate) struct Queued {
    pub(crate) id: u64,
    pub(crate) task: &'static str,
    pub(crate) kind: Kind,
    pub(crate) timeout: Option<Duration>,
    pub(crate) input: Vec<u8>,
    pub(crate) sink: Box<dyn Sink>,
    /// Ranks lost while they held it.
    pub(crate) losses: u32,
}

/// What the pool asks of its thread.
pub(crate) enum Command {
    Submit(Queued),
    /// The job was cancelled or timed out: stop it where it runs.
    Cancel(u64),
    /// Stop: finish the jobs (`now`: cancel those not started), release
    /// the ranks, finalize MPI.
    Close {
        now: bool,
    },
}

/// A serving rank as rank 0 tracks it.
#[derive(Debug)]
pub(crate) struct Rank {
    pub(crate) mpi_rank: i32,
    pub(crate) host: String,
    pub(crate) pid: u32,
    pub(crate) workers: usize,
    /// Jobs sent and not answered.
    outstanding: usize,
    /// Mean time a worker of the rank spends on a job, in nanoseconds
    /// (0: unknown).
    mean_nanos: f64,
    /// When its last results arrived.
    last_done: Option<Instant>,
    last_heard: Instant,
    /// When rank 0 last asked it for jobs back, while no answer came.
    revoking: Option<Instant>,
    lost: bool,
    said_bye: bool,
}

impl Rank {
    pub(crate) fn new(mpi_rank: i32, host: String, pid: u32, workers: usize) -> Rank {
        let now = Instant::now();
        Rank {
            mpi_rank,
            host,
            pid,
            workers,
            outstanding: 0,
            mean_nanos: 0.0,
            last_done: None,
            last_heard: now,
            revoking: None,
            lost: false,
            said_bye: false,
        }
    }

    /// How many jobs it may hold: one per worker, and enough more to keep
    /// each worker busy for [`PIPELINE_TARGET`] (at least one each).
    fn capacity(&self) -> usize {
        let pipeline = if self.mean_nanos > 0.0 {
            let per_worker = (PIPELINE_TARGET.as_nanos() as f64 / self.mean_nanos).ceil();
            (per_worker * self.workers as f64) as usize
        } else {
            self.workers
        };
        self.workers + pipeline.clamp(self.workers, MAX_PIPELINE)
    }

    fn describe(&self) -> String {
        format!(
            "MPI rank {} on {} (pid {})",
            self.mpi_rank, self.host, self.pid
        )
    }
}

/// A job sent to a rank.
struct Sent {
    job: Queued,
    rank: usize,
    seq: u64,
}

/// Rank 0's thread state.
pub(crate) struct Master {
    link: Link,
    ranks: Vec<Rank>,
    /// What `MpiPool::ranks` reports: a lost rank is marked there too.
    info: crate::Ranks,
    queue: VecDeque<Queued>,
    sent: HashMap<u64, Sent>,
    commands: mpsc::Receiver<Command>,
    closing: Option<bool>,
    retries: u32,
    lost_after: Duration,
    seq: u64,
    /// Where the next dispatch starts among the ranks, for the shares of
    /// the pipelines (it turns, so that no rank always gets the rounding).
    turn: usize,
    /// The rank that sent results last: in the low-latency mode, idle
    /// workers are looked for there first. Its threads are awake (spinning
    /// after activity), so a lone job there meets nobody asleep, and on a
    /// machine with few cores the other ranks' threads stay asleep instead
    /// of taking turns with it. Several jobs at once still spread to every
    /// idle worker. (Not in the default mode: a batch of jobs of a few
    /// milliseconds measured 5% slower, the warm rank getting more than
    /// its share.)
    warm: usize,
    /// The low-latency window (`MpiPoolBuilder::spin`; zero: off).
    spin: Duration,
}

impl Master {
    pub(crate) fn new(
        link: Link,
        ranks: Vec<Rank>,
        info: crate::Ranks,
        commands: mpsc::Receiver<Command>,
        retries: u32,
        lost_after: Duration,
        spin: Duration,
    ) -> Master {
        Master {
            link,
            ranks,
            info,
            queue: VecDeque::new(),
            sent: HashMap::new(),
            commands,
            closing: None,
            retries,
            lost_after,
            spin,
            seq: 0,
            turn: 0,
            warm: 0,
        }
    }

    /// Runs until the pool closes and every job is settled, then releases
    /// the ranks; returns the link, and whether MPI may be finalized
    /// (not after a rank was lost: `MPI_Finalize` would wait for it).
    pub(crate) fn run(mut self) -> (Link, bool) {
        let mut pace = Pacer::new();
        loop {
            let mut active = self.take_commands();
            active |= self.read_messages();
            active |= self.dispatch();
            self.rebalance();
            self.find_lost();
            let sending = self.link.progress() > 0;
            if self.closing.is_some() && self.queue.is_empty() && self.sent.is_empty() {
                break;
            }
            if active {
                pace.active();
                continue;
            }
            let waiting = !self.sent.is_empty() || sending;
            // In the low-latency mode, also for the next command after
            // the last activity: a job submitted right after a result.
            if pace.within(self.spin) {
                pace.idle_spin();
                continue;
            }
            if waiting && pace.spin() {
                std::thread::yield_now();
                continue;
            }
            let longest = if waiting {
                busy_ceiling(self.shortest_job())
            } else {
                IDLE_SLEEP
            };
            let wait = pace.sleep(longest);
            match self.commands.recv_timeout(wait) {
                Ok(command) => {
                    self.command(command);
                    pace.active();
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // The pool was dropped without closing (it always closes):
                // treat it as a close.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.closing.get_or_insert(false);
                }
            }
        }
        let finalize = self.release_ranks();
        (self.link, finalize)
    }

    /// The shortest mean job time of the ranks that hold jobs (zero while
    /// unknown): how soon a result may come.
    fn shortest_job(&self) -> Duration {
        let shortest = self
            .ranks
            .iter()
            .filter(|r| !r.lost && r.outstanding > 0)
            .map(|r| r.mean_nanos)
            .fold(f64::INFINITY, f64::min);
        if shortest.is_finite() {
            Duration::from_nanos(shortest as u64)
        } else {
            Duration::ZERO
        }
    }

    fn take_commands(&mut self) -> bool {
        let mut any = false;
        while let Ok(command) = self.commands.try_recv() {
            any = true;
            self.command(command);
        }
        any
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Submit(job) => {
                if self.closing == Some(true) {
                    // It raced `shutdown_now`, which cancels what has not
                    // started.
                    job.sink.fail(JobError::Shutdown);
                } else if self.live_ranks() == 0 {
                    job.sink.fail(no_rank_left());
                } else {
                    self.queue.push_back(job);
                }
            }
            Command::Cancel(id) => {
                if let Some(sent) = self.sent.get(&id) {
                    let rank = self.ranks[sent.rank].mpi_rank;
                    self.send(rank, &ToRank::Cancel(vec![id]));
                }
                // A queued job was resolved by the cancel: dispatch drops it.
            }
            Command::Close { now } => {
                let now = now || self.closing == Some(true);
                self.closing = Some(now);
                if now {
                    for job in self.queue.drain(..) {
                        job.sink.fail(JobError::Cancelled);
                    }
                    // Jobs sent and not started come back and are cancelled.
                    let mut by_rank: HashMap<usize, Vec<u64>> = HashMap::new();
                    for (id, sent) in &self.sent {
                        by_rank.entry(sent.rank).or_default().push(*id);
                    }
                    for (rank, ids) in by_rank {
                        let mpi_rank = self.ranks[rank].mpi_rank;
                        self.send(mpi_rank, &ToRank::Revoke(ids));
                    }
                }
            }
        }
    }

    fn send(&mut self, mpi_rank: i32, msg: &ToRank<'_>) {
        if let Err(e) = self.link.send(mpi_rank, wire::encode(msg)) {
            tracing::warn!(rank = mpi_rank, "parpool-mpi could not send to a rank: {e}");
        }
    }

    fn live_ranks(&self) -> usize {
        self.ranks.iter().filter(|r| !r.lost).count()
    }

    fn rank_index(&self, mpi_rank: i32) -> Option<usize> {
        self.ranks.iter().position(|r| r.mpi_rank == mpi_rank)
    }

    /// Reads what the ranks sent, at most [`MAX_MESSAGES`] messages (so
    /// that commands and dispatch keep their turn under a flood of logs);
    /// `true` if there was any.
    fn read_messages(&mut self) -> bool {
        let mut read = 0;
        while read < MAX_MESSAGES {
            let Some((source, bytes)) = self.link.receive() else {
                break;
            };
            read += 1;
            let Some(index) = self.rank_index(source) else {
                continue;
            };
            if self.ranks[index].lost {
                // It came back after all; its jobs have moved on.
                continue;
            }
            self.ranks[index].last_heard = Instant::now();
            match postcard::from_bytes::<FromRank>(&bytes) {
                Ok(msg) => self.on_message(index, msg),
                Err(e) => {
                    tracing::error!(
                        rank = source,
                        "a message from a serving rank did not decode: {e}"
                    );
                }
            }
        }
        read > 0
    }

    fn on_message(&mut self, index: usize, msg: FromRank) {
        match msg {
            FromRank::Done(done) => {
                let now = Instant::now();
                let rank = &mut self.ranks[index];
                // A saturated rank's pace tells a worker's time per job:
                // `workers` jobs per interval between results; otherwise a
                // job's stay on the rank is its time.
                let saturated = rank.outstanding > rank.workers;
                let pace = rank
                    .last_done
                    .filter(|_| saturated)
                    .map(|at| now.duration_since(at).as_nanos() as f64 * rank.workers as f64);
                rank.last_done = Some(now);
                self.warm = index;
                let count = done.len().max(1) as f64;
                for d in done {
                    let Some(sent) = self.sent.remove(&d.id) else {
                        continue;
                    };
                    let rank = &mut self.ranks[sent.rank];
                    rank.outstanding = rank.outstanding.saturating_sub(1);
                    let sample = pace.map_or(d.nanos as f64, |p| p / count);
                    rank.mean_nanos = if rank.mean_nanos == 0.0 {
                        sample
                    } else {
                        0.9 * rank.mean_nanos + 0.1 * sample
                    };
                    sent.job
                        .sink
                        .finish(d.outcome, Duration::from_nanos(d.nanos));
                }
            }
            FromRank::Revoked(ids) => {
                self.ranks[index].revoking = None;
                // Back to the front of the queue, in their first order.
                let mut back: Vec<Sent> =
                    ids.iter().filter_map(|id| self.sent.remove(id)).collect();
                back.sort_by_key(|s| std::cmp::Reverse(s.seq));
                for sent in back {
                    let rank = &mut self.ranks[sent.rank];
                    rank.outstanding = rank.outstanding.saturating_sub(1);
                    if self.closing == Some(true) {
                        sent.job.sink.fail(JobError::Cancelled);
                    } else {
                        self.queue.push_front(sent.job);
                    }
                }
            }
            FromRank::Log(logs) => {
                let rank = &self.ranks[index];
                for l in &logs {
                    log::emit(rank.mpi_rank, &rank.host, l);
                }
            }
            FromRank::Heartbeat | FromRank::Hello { .. } => {}
            FromRank::Bye => self.ranks[index].said_bye = true,
        }
    }

    /// Sends queued jobs to the ranks with room; `true` if it sent any.
    fn dispatch(&mut self) -> bool {
        if self.queue.is_empty() {
            return false;
        }
        let n = self.ranks.len();
        self.turn = (self.turn + 1) % n;
        let order: Vec<usize> = (0..n).map(|k| (self.turn + k) % n).collect();
        let mut left = self.queue.len();
        let mut counts = vec![0; n];
        // Idle workers first, wherever they are (in the low-latency mode,
        // the warm rank's first)...
        let first = if self.spin.is_zero() {
            self.turn
        } else {
            self.warm
        };
        for i in (0..n).map(|k| (first + k) % n) {
            let r = &self.ranks[i];
            if !r.lost {
                let idle = r.workers.saturating_sub(r.outstanding).min(left);
                counts[i] = idle;
                left -= idle;
            }
        }
        // ...then the pipelines, in proportion to their room.
        let rooms: Vec<usize> = (0..n)
            .map(|i| {
                let r = &self.ranks[i];
                if r.lost {
                    0
                } else {
                    r.capacity().saturating_sub(r.outstanding + counts[i])
                }
            })
            .collect();
        let total: usize = rooms.iter().sum();
        if total > 0 {
            let waiting = left;
            for &i in &order {
                let share = (waiting * rooms[i]).div_ceil(total).min(rooms[i]).min(left);
                counts[i] += share;
                left -= share;
            }
        }
        let mut any = false;
        for &i in &order {
            if counts[i] > 0 {
                any |= self.send_jobs(i, counts[i]);
            }
        }
        any
    }

    /// Sends up to `count` queued jobs to rank `index`.
    fn send_jobs(&mut self, index: usize, count: usize) -> bool {
        let mut batch = Vec::with_capacity(count.min(self.queue.len()));
        let mut bytes = 0;
        while batch.len() < count && bytes < MAX_BATCH {
            let Some(job) = self.queue.pop_front() else {
                break;
            };
            // A job cancelled while queued is already resolved.
            if !job.sink.start() {
                continue;
            }
            bytes += job.input.len() + job.task.len() + 32;
            batch.push(job);
        }
        if batch.is_empty() {
            return false;
        }
        let msg = ToRank::Jobs(
            batch
                .iter()
                .map(|j| JobMsg {
                    id: j.id,
                    task: j.task,
                    kind: j.kind,
                    timeout_nanos: j
                        .timeout
                        .map(|t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)),
                    input: &j.input,
                })
                .collect(),
        );
        let encoded = wire::encode(&msg);
        drop(msg);
        let rank = &mut self.ranks[index];
        if let Err(e) = self.link.send(rank.mpi_rank, encoded) {
            // Too large for one MPI message, or MPI refused: fail the jobs
            // rather than retry forever.
            for job in batch {
                job.sink.fail(JobError::Lost {
                    detail: format!(
                        "MPI could not send the job to {} ({e}); it did not run",
                        rank.describe()
                    ),
                });
            }
            return true;
        }
        rank.outstanding += batch.len();
        for job in batch {
            self.seq += 1;
            self.sent.insert(
                job.id,
                Sent {
                    job,
                    rank: index,
                    seq: self.seq,
                },
            );
        }
        true
    }

    /// Takes unstarted jobs back from a rank that is stuck while another
    /// idles (see the module docs).
    fn rebalance(&mut self) {
        if !self.queue.is_empty() || self.closing == Some(true) {
            return;
        }
        let mut spare: usize = self
            .ranks
            .iter()
            .filter(|r| !r.lost)
            .map(|r| r.workers.saturating_sub(r.outstanding))
            .sum();
        if spare == 0 {
            return;
        }
        let now = Instant::now();
        // The ranks holding most beyond their workers give first.
        let mut loaded: Vec<usize> = (0..self.ranks.len())
            .filter(|&i| {
                let r = &self.ranks[i];
                !r.lost
                    && r.outstanding > r.workers
                    && r.revoking
                        .is_none_or(|at| now.duration_since(at) >= REVOKE_EVERY)
            })
            .collect();
        loaded
            .sort_by_key(|&i| std::cmp::Reverse(self.ranks[i].outstanding - self.ranks[i].workers));
        for index in loaded {
            if spare == 0 {
                break;
            }
            let rank = &self.ranks[index];
            let take = (rank.outstanding - rank.workers).min(spare);
            spare -= take;
            // The newest: the oldest are likeliest to have started.
            let mut held: Vec<(u64, u64)> = self
                .sent
                .iter()
                .filter(|(_, s)| s.rank == index)
                .map(|(id, s)| (s.seq, *id))
                .collect();
            held.sort_unstable_by(|a, b| b.cmp(a));
            let ids: Vec<u64> = held.into_iter().take(take).map(|(_, id)| id).collect();
            let mpi_rank = rank.mpi_rank;
            self.ranks[index].revoking = Some(now);
            self.send(mpi_rank, &ToRank::Revoke(ids));
        }
    }

    /// Marks ranks that went silent as lost, and moves or fails their jobs.
    fn find_lost(&mut self) {
        let now = Instant::now();
        for index in 0..self.ranks.len() {
            let rank = &self.ranks[index];
            if rank.lost || now.duration_since(rank.last_heard) < self.lost_after {
                continue;
            }
            let detail = format!(
                "{} sent nothing for {:?} while it held the job, which may have run in part",
                rank.describe(),
                now.duration_since(rank.last_heard)
            );
            tracing::error!(
                target: "parpool_mpi",
                "{} went silent; its jobs run again elsewhere or fail",
                rank.describe()
            );
            let mpi_rank = rank.mpi_rank;
            self.ranks[index].lost = true;
            if let Some(info) = crate::log::parpool_lock(&self.info).get_mut(index) {
                info.lost = true;
            }
            self.ranks[index].outstanding = 0;
            self.link.abandon(mpi_rank);
            let ids: Vec<u64> = self
                .sent
                .iter()
                .filter(|(_, s)| s.rank == index)
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                let Some(mut sent) = self.sent.remove(&id) else {
                    continue;
                };
                sent.job.losses += 1;
                if sent.job.losses <= self.retries && self.live_ranks() > 0 {
                    self.queue.push_front(sent.job);
                } else {
                    sent.job.sink.fail(JobError::Lost {
                        detail: detail.clone(),
                    });
                }
            }
        }
        if self.live_ranks() == 0 {
            for job in self.queue.drain(..) {
                job.sink.fail(no_rank_left());
            }
        }
    }

    /// Tells every live rank to exit, waits for each to say goodbye (or
    /// to be found lost), then tells every rank whether to finalize MPI:
    /// only if none was ever lost (`MPI_Finalize` would wait for a lost
    /// one forever). Returns that decision for this process too.
    fn release_ranks(&mut self) -> bool {
        // Jobs submitted while the pool closed: too late.
        while let Ok(command) = self.commands.try_recv() {
            if let Command::Submit(job) = command {
                job.sink.fail(JobError::Shutdown);
            }
        }
        let live: Vec<i32> = self
            .ranks
            .iter()
            .filter(|r| !r.lost)
            .map(|r| r.mpi_rank)
            .collect();
        for mpi_rank in live {
            self.send(mpi_rank, &ToRank::Exit);
        }
        while self.ranks.iter().any(|r| !r.lost && !r.said_bye) {
            if !self.read_messages() {
                std::thread::sleep(Duration::from_micros(100));
            }
            self.find_lost();
            self.link.progress();
        }
        let finalize = self.live_ranks() == self.ranks.len();
        // The lost ones too, in case one was only slow.
        let all: Vec<i32> = self.ranks.iter().map(|r| r.mpi_rank).collect();
        for mpi_rank in all {
            self.send(mpi_rank, &ToRank::Finalize(finalize));
        }
        // MPI may not be finalized with a send still pending.
        let drained = self.link.drain(Duration::from_secs(5));
        finalize && drained
    }
}

fn no_rank_left() -> JobError {
    JobError::Lost {
        detail: "every serving rank of the MPI job was lost, so the job did not run".into(),
    }
}
