//! Helpers shared by the integration tests.
// Some helpers serve only the process-pool modules, absent from a
// portable build.
#![cfg_attr(not(all(feature = "process", target_os = "linux")), allow(dead_code))]

use std::io::Write;
use std::sync::{Arc, Mutex};

/// A seeded xorshift generator for randomized tests: its seed comes from
/// an environment variable, to replay a run, or else from the clock.
pub(crate) struct Seeded {
    /// The seed, for the failure message that tells how to replay.
    pub(crate) seed: u64,
    state: u64,
}

impl Seeded {
    /// Seeded from `var` if it holds a number, else from the clock.
    pub(crate) fn from_env(var: &str) -> Seeded {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        Seeded {
            seed,
            state: seed | 1,
        }
    }

    /// The next number below `n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state % n
    }
}

/// A `tracing_subscriber` writer that keeps everything written to it.
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything written so far, as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The variable that tells a child process of this binary which test it
/// runs alone.
const ISOLATED_ENV: &str = "PARPOOL_TEST_ISOLATED";

/// Runs test `name` (`module::function`) alone in a fresh process of this
/// test binary, for tests that measure the whole process (its descriptors,
/// threads, memory) and would see other tests' work otherwise.
///
/// In the test's own process this runs the child, checks that it ran the
/// test and passed (panicking with its output if not), and returns
/// `true`: the caller returns. In the child it returns `false`: the caller
/// runs its body.
pub(crate) fn isolated(name: &str) -> bool {
    if std::env::var_os(ISOLATED_ENV).is_some_and(|v| v == name) {
        return false;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env(ISOLATED_ENV, name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name}, run alone, failed or did not run:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// A process pool of `workers` whose workers' stderr is discarded (tests
/// that crash workers on purpose would print their last words).
#[cfg(all(feature = "process", target_os = "linux"))]
pub(crate) fn quiet_pool(workers: usize) -> parpool::ProcessPool {
    parpool::ProcessPool::builder()
        .workers(workers)
        .stderr(parpool::WorkerOutput::Null)
        .build()
        .unwrap()
}

/// How long a test waits for any one job before it calls it a hang.
pub(crate) const PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits until `done` says so, polling; a wait past [`PATIENCE`] fails
/// the test, naming `what`, instead of hanging it.
pub(crate) fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: still waiting after {PATIENCE:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// `join` with a deadline: a job that has not finished within
/// [`PATIENCE`] fails the test instead of hanging it.
pub(crate) trait JoinWithin<T> {
    /// The job's result, or a panic naming the job that hung.
    fn join_within(self) -> Result<T, parpool::JobError>;
}

impl<T: Send + 'static> JoinWithin<T> for parpool::JobHandle<T> {
    fn join_within(self) -> Result<T, parpool::JobError> {
        self.join_timeout(PATIENCE)
            .unwrap_or_else(|h| panic!("job {} did not finish within {PATIENCE:?}", h.id().get()))
    }
}
