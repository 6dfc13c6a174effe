//! `tracing` across ranks: a serving rank gathers its events (those its
//! local pool re-emits for its worker processes' tasks included) and sends
//! them to rank 0, which emits them to its own subscriber tagged with the
//! rank, the host, the worker's pid and the job.

use std::sync::{Arc, Mutex};

use parpool::__private::EventSink;
use tracing_core::field::{Field, Visit};
use tracing_core::{Event, Level, Metadata};

use crate::wire::LogMsg;

/// Events waiting to be sent to rank 0.
pub(crate) type Gathered = Arc<Mutex<Vec<LogMsg>>>;

/// Most events a serving rank keeps unsent (past that, new ones are
/// dropped and counted, so a flood of logs cannot exhaust its memory).
const MAX_PENDING: usize = 100_000;

/// The level as a number, 0 (error) to 4 (trace).
pub(crate) fn level_number(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 0,
        Level::WARN => 1,
        Level::INFO => 2,
        Level::DEBUG => 3,
        _ => 4,
    }
}

/// The most verbose level rank 0's subscriber wants, as a number.
pub(crate) fn wanted_level() -> u8 {
    match tracing_core::LevelFilter::current().into_level() {
        None => 0,
        Some(level) => level_number(&level) + 1,
    }
}

/// A serving rank's subscriber: every event at or above `max` (a level
/// number + 1; 0 takes none) goes to `gathered`.
pub(crate) struct Forwarder {
    pub(crate) gathered: Gathered,
    pub(crate) max: u8,
    pub(crate) dropped: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Fields {
    message: String,
    worker_pid: Option<u32>,
    job: Option<u64>,
    origin: Option<String>,
    rest: String,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "worker_pid" => self.worker_pid = u32::try_from(value).ok(),
            "job" => self.job = Some(value),
            _ => self.record_debug(field, &value),
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "origin" => self.origin = Some(value.to_owned()),
            _ => self.record_debug(field, &value),
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            name => {
                use std::fmt::Write;
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }
}

impl EventSink for Forwarder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        level_number(metadata.level()) < self.max
    }
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut message = fields.message;
        message.push_str(&fields.rest);
        let msg = LogMsg {
            level: level_number(event.metadata().level()),
            target: event.metadata().target().to_owned(),
            message,
            worker_pid: fields.worker_pid,
            job: fields.job,
            origin: fields.origin,
        };
        let mut gathered = parpool_lock(&self.gathered);
        if gathered.len() < MAX_PENDING {
            gathered.push(msg);
        } else {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Locks `m`, also if a panic poisoned it (the data is a plain list).
pub(crate) fn parpool_lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Emits on rank 0 an event that serving rank `rank` on `host` sent.
pub(crate) fn emit(rank: i32, host: &str, log: &LogMsg) {
    let LogMsg {
        level,
        target,
        message,
        worker_pid,
        job,
        origin,
    } = log;
    // A task's event (its worker's pid is known) keeps parpool's worker
    // target, as a `ProcessPool` emits it; the rank's own events say where
    // they came from.
    macro_rules! emit_at {
        ($lvl:expr) => {
            if worker_pid.is_some() {
                tracing::event!(
                    target: "parpool::worker",
                    $lvl,
                    rank,
                    host,
                    worker_pid = *worker_pid,
                    job = *job,
                    origin = origin.as_deref(),
                    "{message}"
                )
            } else {
                tracing::event!(
                    target: "parpool_mpi::rank",
                    $lvl,
                    rank,
                    host,
                    job = *job,
                    origin = target.as_str(),
                    "{message}"
                )
            }
        };
    }
    match level {
        0 => emit_at!(Level::ERROR),
        1 => emit_at!(Level::WARN),
        2 => emit_at!(Level::INFO),
        3 => emit_at!(Level::DEBUG),
        _ => emit_at!(Level::TRACE),
    }
}
