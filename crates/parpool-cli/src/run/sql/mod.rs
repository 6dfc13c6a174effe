//! `--sqlmaster`, `--sqlworker`, `--sqlandworker`: jobs kept in an SQLite
//! table, as GNU parallel keeps them in its SQL table, so workers on other
//! machines (or later) run them and leave their output beside them.
//!
//! The table is GNU parallel's, column for column: `Seq`, `Host`,
//! `Starttime`, `JobRuntime`, `Send`, `Receive`, `Exitval`, `_Signal`,
//! `Command`, `V1` … `Vn` (a job's values), `Stdout`, `Stderr`. The master
//! writes one row a job with `Exitval` -1000 (ready) and the command in
//! GNU's form: its words joined by `\257 `, each replacement string as
//! `\257<`perl`\257>` (GNU's definition of it). A worker takes the lowest
//! ready row in a transaction (`Exitval` -1220: taken), runs the row's
//! command on the row's values, and writes back what the joblog holds and
//! the output. So a GNU parallel worker runs parpool's rows and the other
//! way round.

mod form;
mod table;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use anyhow::bail;

use super::exec::Runner;
use super::options::RunArgs;
use super::report::{Reporter, finish_status};
use super::{Numbered, Shape, execute, input, runner, slots, where_jobs_run};
use table::DbUrl;
pub(crate) use table::Table;

/// Options that make no sense with the table, refused before anything.
pub(crate) fn check(args: &RunArgs) -> anyhow::Result<()> {
    if args.sql_master.is_none() && args.sql_worker.is_none() {
        return Ok(());
    }
    let refused = [
        (args.pipe || args.pipepart, "--pipe"),
        (args.onall || args.nonall, "--onall/--nonall"),
        (
            args.results.is_some(),
            "--results (the table holds the output)",
        ),
        (args.joblog.is_some(), "--joblog (the table is the log)"),
        (args.dry_run, "--dry-run"),
    ];
    if let Some((_, what)) = refused.iter().find(|(given, _)| *given) {
        bail!("{what} cannot be used with --sqlmaster or --sqlworker");
    }
    Ok(())
}

/// `--sqlmaster`: writes the jobs to the table (the runner's command in
/// GNU's form, the jobs' values); then with `--sqlandworker` runs them,
/// else with `--wait` waits until workers have. The exit status.
pub(crate) fn submit(
    args: RunArgs,
    runner: &Runner,
    jobs: input::Jobs,
    cores: usize,
) -> anyhow::Result<i32> {
    let url = DbUrl::parse(args.sql_master.as_deref().unwrap_or_default())?;
    let command = form::encode(&runner.plan.words, runner.plan.append)?;
    let mut table = Table::open(url, false)?;
    table.submit(&command, jobs)?;
    if args.sql_worker.is_none() {
        if args.sem_wait {
            table.wait_done()?;
        }
        return Ok(0);
    }
    drop(table);
    work(args, cores)
}

/// `--sqlworker`: runs the table's ready rows until none is left, those
/// with one command at a time (a table appended to may hold several),
/// each row written back as its job ends. The exit status: as a run's,
/// the failures of all of them counted.
pub(crate) fn work(mut args: RunArgs, cores: usize) -> anyhow::Result<i32> {
    let url = DbUrl::parse(args.sql_worker.as_deref().unwrap_or_default())?;
    let table = Arc::new(Table::open(url, true)?);
    // The command and its values come from the table: the master grouped
    // them (-N), and its `{}` is GNU's.
    args.replace = None;
    args.group = None;
    args.rest.clear();
    let mut failed = 0;
    // A command none of whose ready rows could be taken, twice in a row:
    // not a race with another worker, but rows this worker cannot take.
    let mut took_none: Option<Vec<u8>> = None;
    while let Some(command) = table.next_command()? {
        let before = table.taken();
        let machines = where_jobs_run(&args, cores)?;
        let at_once = machines
            .jobs_file
            .as_ref()
            .map_or(machines.slot_host.len(), slots::JobsFile::wanted);
        let runner = runner(
            &args,
            form::decode(&command),
            &Vec::new(),
            (table.values(), 0, at_once),
            machines.hosts,
            machines.slot_host,
        )?;
        runner.total.store(table.rows()?, Ordering::Relaxed);
        let input_error: Arc<Mutex<Option<std::io::Error>>> = Arc::default();
        let jobs = taken(
            table.clone(),
            command.clone(),
            runner.clone(),
            input_error.clone(),
        );
        let mut reporter = Reporter::new(&args, runner.clone(), None, None, None);
        reporter.table = Some(table.clone());
        let shape = Shape {
            listed: &machines.listed,
            left: None,
            at_once,
        };
        let status = execute(&args, &runner, jobs, machines.jobs_file, shape, reporter)?;
        let status = finish_status(status, &input_error);
        if status == 255 || runner.stop.load(Ordering::SeqCst) {
            return Ok(status);
        }
        failed += status;
        if table.taken() == before {
            if took_none.as_ref() == Some(&command) {
                bail!(
                    "--sqlworker: the ready rows of the table cannot be taken (their Command \
                     column is not text?)"
                );
            }
            took_none = Some(command);
        }
    }
    Ok(failed.min(101))
}

/// The ready rows with `command`, each taken as the run asks for its next
/// job (so other workers share the rest), none once the run is stopping
/// (a halt: the rows it gave back stay for other workers); a database
/// error ends them, kept in `error`.
fn taken(
    table: Arc<Table>,
    command: Vec<u8>,
    runner: Arc<Runner>,
    error: Arc<Mutex<Option<std::io::Error>>>,
) -> impl Iterator<Item = Numbered> + Send + 'static {
    (0u64..).map_while(move |order| {
        if runner.stop.load(Ordering::SeqCst) || runner.interrupted.load(Ordering::SeqCst) {
            return None;
        }
        take_one(&table, &command, &error).map(|(seq, values)| (values, None, seq, order))
    })
}

/// The next row taken, if any; a database error kept in `error`.
fn take_one(
    table: &Table,
    command: &[u8],
    error: &Mutex<Option<std::io::Error>>,
) -> Option<(u64, input::Values)> {
    match table.take(command) {
        Ok(taken) => taken,
        Err(e) => {
            *error.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(std::io::Error::other(format!("--sqlworker: {e:#}")));
            None
        }
    }
}
