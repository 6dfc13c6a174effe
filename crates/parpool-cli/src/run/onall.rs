//! `--onall` and `--nonall`: every job on every machine of `-S` (with
//! `--nonall`, the command once on each, with no input), `-j` machines at
//! a time, one job at a time on each, each machine's output together;
//! and `--basefile`, files sent to every other machine before its first
//! job (and removed afterwards with `--cleanup`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::exec::{Outcome, Runner};
use super::halt::Tally;
use super::options::RunArgs;
use super::{Numbered, remote, report};

/// Runs every job on every machine; the exit status, as the jobs' make
/// it (each job on each machine counts).
pub(crate) fn execute(
    args: &RunArgs,
    runner: &Arc<Runner>,
    jobs: impl Iterator<Item = Numbered>,
    mut reporter: report::Reporter,
) -> anyhow::Result<i32> {
    let interrupts = super::interrupt::watch(runner.clone())?;
    let jobs: Arc<Vec<Numbered>> = Arc::new(jobs.collect());
    let machines = runner.hosts.len();
    // `-j`: how many machines at a time.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let at_once = super::options::values::job_slots(args.jobs.as_deref().unwrap_or("100%"), cores)?
        .clamp(1, machines.max(1));
    let pool = parpool::ThreadPool::builder()
        .workers(at_once)
        .name("parpool-onall")
        .build()?;
    let (on, job_runner) = (jobs.clone(), runner.clone());
    let tag_machine = args.nonall && args.tag;
    // One machine's jobs, one at a time, in order.
    let one_machine = move |machine: usize| -> Vec<Outcome> {
        let name = job_runner.hosts[machine].name.clone();
        on.iter()
            .map(|(values, _, seq, order)| {
                // Each machine's own slot: `{%}` is the machine's number.
                let slot = machine + 1;
                let mut outcome = match job_runner.evaluate(*seq, values, slot) {
                    Ok(perl) => job_runner.run((*seq, *order), values.clone(), slot, None, perl),
                    Err(e) => Outcome::not_started(
                        *seq,
                        values.clone(),
                        format!("perl stopped answering: {e}"),
                    ),
                };
                if tag_machine {
                    outcome.tag = Some(format!("{name}\t").into_bytes());
                }
                outcome
            })
            .collect()
    };
    let mut tally = Tally::default();
    let mut report_all = |outcomes: Vec<Outcome>| -> anyhow::Result<()> {
        for outcome in outcomes {
            tally.count(&outcome, args.halt, runner);
            reporter.report(outcome)?;
        }
        Ok(())
    };
    // Machines in GNU parallel's order: by their names.
    let mut order: Vec<usize> = (0..machines).collect();
    order.sort_by(|&a, &b| runner.hosts[a].name.cmp(&runner.hosts[b].name));
    if args.keep_order {
        for r in pool.map(one_machine, order).chunk_size(1) {
            report_all(r?)?;
        }
    } else {
        for (_, r) in pool.map_unordered(one_machine, order).chunk_size(1) {
            report_all(r?)?;
        }
    }
    drop(interrupts);
    reporter.finish();
    Ok(if runner.interrupted.load(Ordering::SeqCst) {
        255
    } else {
        tally.status(args.halt)
    })
}

/// `--basefile`: each file sent to every other machine before any job.
pub(crate) fn send_basefiles(args: &RunArgs, runner: &Runner) -> anyhow::Result<()> {
    for host in &runner.hosts {
        let Some(ssh) = host.ssh.as_deref() else {
            continue;
        };
        for file in &args.basefiles {
            remote::send(ssh, file.as_bytes()).map_err(|why| {
                anyhow::anyhow!("cannot send --basefile {file} to {}: {why}", host.name)
            })?;
        }
    }
    Ok(())
}

/// `--basefile` with `--cleanup`: the files removed from every other
/// machine once the jobs are done.
pub(crate) fn remove_basefiles(args: &RunArgs, runner: &Runner) {
    if !args.cleanup || args.basefiles.is_empty() {
        return;
    }
    let files: Vec<Vec<u8>> = args
        .basefiles
        .iter()
        .map(|f| f.clone().into_bytes())
        .collect();
    for host in &runner.hosts {
        if let Some(ssh) = host.ssh.as_deref()
            && let Err(why) = remote::remove(ssh, &files)
        {
            eprintln!(
                "parpool: warning: cannot remove the --basefile files on {}: {why}",
                host.name
            );
        }
    }
}
