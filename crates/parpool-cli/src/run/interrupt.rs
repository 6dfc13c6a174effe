//! SIGINT and SIGTERM, as GNU parallel takes them: start no new job,
//! kill the running ones (their output and joblog lines are dropped)
//! and exit with 255. SIGHUP is caught and changes nothing, as in GNU
//! parallel: the jobs go on (a closed terminal does not orphan them).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

use super::exec::Runner;

/// Watches for interrupts until dropped.
pub(crate) struct Watch {
    handle: Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(crate) fn watch(runner: Arc<Runner>) -> std::io::Result<Watch> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let handle = signals.handle();
    let thread = std::thread::Builder::new()
        .name("parpool-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    continue;
                }
                runner.interrupted.store(true, Ordering::SeqCst);
                runner.kill_all();
            }
        })?;
    Ok(Watch {
        handle,
        thread: Some(thread),
    })
}
