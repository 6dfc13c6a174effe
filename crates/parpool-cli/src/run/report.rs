//! What a run shows of its jobs: their output (grouped, in order or not),
//! `--dry-run`'s commands, and how the run ends.

use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use anyhow::Context;

use super::exec::{Outcome, Runner};
use super::options::RunArgs;
use super::{joblog, progress, results, sql, template};

/// Reports each job as it ends: removes its `--cat` file or fifo, saves
/// `--results`, prints its output (around `--bar`), logs it.
pub(crate) struct Reporter {
    runner: Arc<Runner>,
    results: Option<results::Results>,
    results_spec: Option<std::path::PathBuf>,
    joblog: Option<Box<dyn Write + Send>>,
    bar: Option<indicatif::ProgressBar>,
    remove_files: bool,
    verbose: bool,
    /// `--sqlworker`: each job's row written when it ends.
    pub(crate) table: Option<Arc<sql::Table>>,
}

impl Reporter {
    pub(crate) fn new(
        args: &RunArgs,
        runner: Arc<Runner>,
        results: Option<results::Results>,
        joblog: Option<Box<dyn Write + Send>>,
        left: Option<u64>,
    ) -> Reporter {
        Reporter {
            runner,
            results,
            results_spec: args.results.clone(),
            joblog,
            bar: args.bar.then(|| progress::bar(left.map(|n| n as usize))),
            remove_files: args.cat || args.fifo,
            verbose: args.verbose,
            table: None,
        }
    }

    pub(crate) fn report(&mut self, mut outcome: Outcome) -> anyhow::Result<()> {
        if self.remove_files {
            // The job's `--cat` file or `--fifo` is gone with the job.
            for file in &outcome.values {
                let _ = std::fs::remove_file(file);
            }
        }
        if self.runner.output_closed.load(Ordering::SeqCst) {
            output_closed(&self.runner);
        }
        // A job the interrupt killed is neither printed nor logged, as in
        // GNU parallel.
        let killed = self.runner.interrupted.load(Ordering::SeqCst) && outcome.exit == -1;
        if outcome.skipped || killed {
            if let Some(table) = &self.table {
                // Never run to its end: ready again for a worker.
                table.release(outcome.seq)?;
            }
            return Ok(());
        }
        if let Some(table) = &self.table {
            table.save(&mut outcome)?;
        }
        if let Some(results) = self.results.as_mut() {
            let spec = self
                .results_spec
                .as_deref()
                .unwrap_or(std::path::Path::new(""));
            results
                .save(&mut outcome)
                .with_context(|| format!("cannot write --results {}", spec.display()))?;
        }
        let verbose = self.verbose;
        // As GNU parallel's --results: the output goes to the files.
        let to_terminal = self.results.is_none();
        let print = |o: &mut Outcome| {
            if to_terminal {
                print_output(o, verbose)
            } else {
                Ok(())
            }
        };
        let printed = match &self.bar {
            Some(bar) => {
                let printed = bar.suspend(|| print(&mut outcome));
                bar.inc(1);
                printed
            }
            None => print(&mut outcome),
        };
        if let Err(e) = printed {
            if e.kind() == io::ErrorKind::BrokenPipe {
                output_closed(&self.runner);
            }
            return Err(e.into());
        }
        if let Some(log) = self.joblog.as_mut() {
            joblog::write(log.as_mut(), &outcome)?;
        }
        Ok(())
    }

    pub(crate) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}

/// `--dry-run`: each job's command, as the shell would read it, one a
/// line, the jobs taking the slots in turn; how many jobs `skip()` would
/// skip or whose perl code died (GNU parallel counts them as failed).
pub(crate) fn dry_run(
    jobs: impl Iterator<Item = (super::input::Values, u64)>,
    runner: &Runner,
    slots: usize,
) -> io::Result<usize> {
    let mut out = io::stdout().lock();
    let mut skipped = 0;
    for (order, (values, seq)) in jobs.enumerate() {
        let slot = order % slots.max(1) + 1;
        let perl = runner.evaluate(seq, &values, slot)?;
        if let Some(why) = perl.as_ref().and_then(|p| p.died.as_ref()) {
            // The job's perl code died: no command to show; it fails.
            eprintln!("parpool: {{= perl =}} died: {why}");
            skipped += 1;
            continue;
        }
        skipped += usize::from(perl.as_ref().is_some_and(|p| p.skip));
        let fill = template::Fill {
            perl: perl.as_ref(),
            ..template::Fill::new(&values, seq, slot, runner.total())
        };
        out.write_all(&runner.plan.argv(&fill).display())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(skipped)
}

/// parpool's stdout was closed (its reader went away): like GNU parallel,
/// which dies of `SIGPIPE`, stop every job and die of it too.
pub(crate) fn output_closed(runner: &Runner) -> ! {
    runner.kill_all();
    let _ = signal_hook::low_level::emulate_default_handler(signal_hook::consts::SIGPIPE);
    std::process::exit(141)
}

pub(crate) fn finish_status(status: i32, input_error: &Mutex<Option<io::Error>>) -> i32 {
    match input_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        Some(e) => {
            eprintln!("parpool: {e}");
            255
        }
        None => status,
    }
}

/// Writes a job's held output, each stream in one piece (after its
/// command, with `-v`).
pub(crate) fn print_output(o: &mut Outcome, verbose: bool) -> io::Result<()> {
    let prefix = o.tag.as_deref();
    let mut stdout = io::stdout().lock();
    if verbose {
        stdout.write_all(&o.command)?;
        stdout.write_all(b"\n")?;
    }
    o.stdout.write_to(&mut stdout, prefix)?;
    drop(stdout);
    o.stderr.write_to(&mut io::stderr().lock(), prefix)
}
