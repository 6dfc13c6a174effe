//! What a job wrote to its standard output and error, as its handle
//! hands it over (see [`WorkerOutput::Capture`](crate::WorkerOutput::Capture)).

use serde::{Deserialize, Serialize};

/// What a process job wrote to its standard output and error, when its
/// pool was built with [`WorkerOutput::Capture`](crate::WorkerOutput::Capture).
///
/// Child processes the job started write to the same place and are
/// included, as long as they wrote before the job returned.
///
/// ```
/// # #[cfg(all(feature = "process", target_os = "linux"))]
/// # fn main() -> Result<(), parpool::BuildError> {
/// use parpool::{Executor, ProcessPool, WorkerOutput};
///
/// parpool::task! {
///     fn greet(name: String) -> () {
///         println!("hello, {name}");
///         eprintln!("(from a worker)");
///     }
/// }
///
/// let pool = ProcessPool::builder()
///     .workers(1)
///     .stdout(WorkerOutput::Capture)
///     .stderr(WorkerOutput::Capture)
///     .build()?;
/// let (result, output) = pool.submit(greet, "Ada".into()).join_captured();
/// assert_eq!(result, Ok(()));
/// assert_eq!(output.stdout, b"hello, Ada\n");
/// assert_eq!(output.stderr, b"(from a worker)\n");
/// # Ok(())
/// # }
/// # #[cfg(not(all(feature = "process", target_os = "linux")))]
/// # fn main() {}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedOutput {
    /// Bytes written to standard output.
    #[serde(with = "serde_bytes")]
    pub stdout: Vec<u8>,
    /// Bytes written to standard error.
    #[serde(with = "serde_bytes")]
    pub stderr: Vec<u8>,
}

impl CapturedOutput {
    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.stdout.is_empty() && self.stderr.is_empty()
    }

    /// Writes the captured bytes to this process's own stdout and stderr,
    /// each in one piece.
    #[cfg(all(feature = "process", target_os = "linux"))]
    pub(crate) fn pass_on(&self) {
        use std::io::{self, Write};
        if !self.stdout.is_empty() {
            let _ = io::stdout().lock().write_all(&self.stdout);
        }
        if !self.stderr.is_empty() {
            let _ = io::stderr().lock().write_all(&self.stderr);
        }
    }
}
