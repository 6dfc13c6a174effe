//! How jobs are stopped: `--termseq`'s signals and waits (a timeout, a
//! halt, an interrupt), each sent to the job's whole process group.

use std::time::{Duration, Instant};

/// `--termseq`: the signals that stop a job, each followed by how long to
/// wait for it to end before the next.
pub(crate) type TermSeq = Vec<(rustix::process::Signal, Duration)>;

/// GNU parallel's default `--termseq`: TERM, and again after 200 ms,
/// 100 ms and 50 ms while it lives, then KILL after 25 ms more.
pub(crate) fn default_termseq() -> TermSeq {
    use rustix::process::Signal;
    let ms = Duration::from_millis;
    vec![
        (Signal::TERM, ms(200)),
        (Signal::TERM, ms(100)),
        (Signal::TERM, ms(50)),
        (Signal::KILL, ms(25)),
    ]
}

/// Reads `--termseq`'s value: `SIG,ms,SIG,ms,…` (signal names with or
/// without `SIG`, or numbers; the last wait may be left out).
pub(crate) fn parse_termseq(text: &str) -> Result<TermSeq, String> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let mut seq = Vec::new();
    for pair in parts.chunks(2) {
        let name = pair[0].trim_start_matches("SIG");
        let signal = match name.parse::<i32>() {
            Ok(n) => rustix::process::Signal::from_named_raw(n),
            Err(_) => signal_by_name(name),
        }
        .ok_or_else(|| format!("`{}` is not a signal", pair[0]))?;
        let wait = match pair.get(1) {
            Some(ms) => ms
                .parse::<u64>()
                .map_err(|_| format!("`{ms}` is not a number of milliseconds"))?,
            None => 0,
        };
        seq.push((signal, Duration::from_millis(wait)));
    }
    Ok(seq)
}

fn signal_by_name(name: &str) -> Option<rustix::process::Signal> {
    use rustix::process::Signal;
    Some(match name {
        "TERM" => Signal::TERM,
        "KILL" => Signal::KILL,
        "INT" => Signal::INT,
        "HUP" => Signal::HUP,
        "QUIT" => Signal::QUIT,
        "USR1" => Signal::USR1,
        "USR2" => Signal::USR2,
        "ALRM" => Signal::ALARM,
        "CONT" => Signal::CONT,
        "STOP" => Signal::STOP,
        _ => return None,
    })
}

/// Stops process group `pgid` as `--termseq` says: each signal, then up
/// to its wait for `ended` to say the job is gone.
pub(crate) fn terminate(
    pgid: i32,
    seq: &[(rustix::process::Signal, Duration)],
    ended: impl Fn(Duration) -> bool,
) {
    let Some(pid) = rustix::process::Pid::from_raw(pgid) else {
        return;
    };
    for &(signal, wait) in seq {
        let _ = rustix::process::kill_process_group(pid, signal);
        if ended(wait) {
            return;
        }
    }
}

/// Whether process group `pgid` is gone, looked at every 5 ms for up to
/// `wait`.
pub(crate) fn group_gone_within(pgid: i32, wait: Duration) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pgid) else {
        return true;
    };
    let deadline = Instant::now() + wait;
    loop {
        if rustix::process::test_kill_process_group(pid).is_err() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGKILLs process group `pgid`.
pub(crate) fn kill_group(pgid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}
