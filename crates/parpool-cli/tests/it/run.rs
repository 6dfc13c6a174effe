//! `parpool run`, end to end: the built binary on real commands.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod compress;
mod edges;
mod fifo;
mod limits;
mod onall;
mod order;
mod pack;
mod perl;
mod pipepart;
mod results;
mod sem;
mod sql;

/// `parpool`, without the user's default options (`~/.parallel/config`,
/// `$PARALLEL`): a test names its own.
fn parpool() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_parpool"));
    c.env(
        "PARALLEL_HOME",
        std::env::temp_dir().join("parpool-test-home"),
    )
    .env_remove("PARALLEL");
    c
}

fn run(args: &[&str]) -> Output {
    parpool().arg("run").args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// A seed from `$var` (to replay a run), else `default`, and a
/// xorshift draw from it: `next(n)` is in `0..n`.
fn seeded(var: &str, default: u64) -> (u64, impl FnMut(u64) -> u64) {
    let seed: u64 = std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    let mut state = seed | 1;
    let next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    (seed, next)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("parpool-run-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn replacement_strings_on_tricky_paths() {
    let inputs = [
        "dir with space/file.tar.gz",
        "it's \"quoted\".txt",
        "ünïcödé/ファイル.md",
        "plain",
    ];
    // The command is shell code (so the format is quoted for the shell)
    // and the values are quoted for it: the same words arrive.
    let mut args = vec![
        "-k",
        "printf",
        "'%s|%s|%s|%s|%s\\n'",
        "{}",
        "{.}",
        "{/}",
        "{//}",
        "{/.}",
        ":::",
    ];
    args.extend(inputs);
    let shell = run(&args);
    assert!(shell.status.success());
    let want = "dir with space/file.tar.gz|dir with space/file.tar|file.tar.gz|dir with space|file.tar\n\
                it's \"quoted\".txt|it's \"quoted\"|it's \"quoted\".txt|.|it's \"quoted\"\n\
                ünïcödé/ファイル.md|ünïcödé/ファイル|ファイル.md|ünïcödé|ファイル\n\
                plain|plain|plain|.|plain\n";
    assert_eq!(stdout(&shell), want);
    // With -q the command's own words are quoted too: the format needs no
    // quoting of its own.
    args[2] = "%s|%s|%s|%s|%s\\n";
    args.insert(0, "-q");
    assert_eq!(stdout(&run(&args)), want);
}

#[test]
fn job_number_slot_and_several_sources() {
    let o = run(&[
        "-k", "-j", "2", "echo", "{#}", "{1}{2}", ":::", "a", "b", ":::", "x", "y",
    ]);
    assert_eq!(stdout(&o), "1 ax\n2 ay\n3 bx\n4 by\n");
    let o = run(&[
        "-k", "echo", "{1}{2}", ":::", "a", "b", "c", ":::+", "1", "2",
    ]);
    assert_eq!(stdout(&o), "a1\nb2\n");
    let o = run(&[
        "-j",
        "3",
        "-q",
        "sh",
        "-c",
        "echo $PARALLEL_JOBSLOT",
        ":::",
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
    ]);
    for line in stdout(&o).lines() {
        let slot: usize = line.parse().unwrap();
        assert!((1..=3).contains(&slot), "slot {slot}");
    }
}

#[test]
fn without_a_replacement_string_inputs_are_appended() {
    let o = run(&["-k", "echo", "got", ":::", "a b", "c"]);
    assert_eq!(stdout(&o), "got a b\ngot c\n");
    // No command at all: each input is a shell command.
    let o = run(&["-k", ":::", "echo one", "echo two | tr a-z A-Z"]);
    assert_eq!(stdout(&o), "one\nTWO\n");
}

#[test]
fn keep_order_holds_under_random_durations() {
    let mut args = vec![
        "-k",
        "-j",
        "4",
        "-q",
        "sh",
        "-c",
        "sleep 0.0$(( $1 * 7 % 10 )); echo $1",
        "sh",
        ":::",
    ];
    let inputs: Vec<String> = (1..=24).map(|i| i.to_string()).collect();
    args.extend(inputs.iter().map(String::as_str));
    let o = run(&args);
    let got: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    assert_eq!(got, inputs);
}

#[test]
fn output_of_concurrent_jobs_is_grouped_per_job() {
    let script = "for i in 1 2 3 4 5 6 7 8 9 10; do echo \"$1 $i\"; sleep 0.002; done";
    let mut args = vec!["-j", "4", "-q", "sh", "-c", script, "sh", ":::"];
    let inputs: Vec<String> = (1..=8).map(|i| format!("job{i}")).collect();
    args.extend(inputs.iter().map(String::as_str));
    let o = run(&args);
    let lines: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 80);
    for block in lines.chunks(10) {
        let job = block[0].split(' ').next().unwrap();
        for (i, line) in block.iter().enumerate() {
            assert_eq!(
                line,
                &format!("{job} {}", i + 1),
                "lines interleaved: {block:?}"
            );
        }
    }
}

#[test]
fn tag_prefixes_every_line() {
    let o = run(&["-k", "--tag", "printf", "'a\\nb\\n'", ":::", "x"]);
    assert_eq!(stdout(&o), "x\ta\nx\tb\n");
}

fn processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|&b| b == 0).any(|w| w == marker.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn timeout_kills_the_whole_process_tree() {
    let marker = "987.654321";
    let t = Instant::now();
    let o = run(&[
        "--timeout",
        "0.5",
        "-q",
        "sh",
        "-c",
        "sleep $1 & sleep $1 & sleep $1",
        "sh",
        ":::",
        marker,
    ]);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("timed out"));
    std::thread::sleep(Duration::from_millis(100));
    assert!(processes_with(marker).is_empty(), "sleep children survived");
}

#[test]
fn retries_rerun_a_failing_job() {
    let dir = scratch("retries");
    let counter = dir.join("n");
    let script =
        "n=$(cat \"$1\" 2>/dev/null || echo 0); n=$((n+1)); echo $n > \"$1\"; [ $n -ge 3 ]";
    let c = counter.to_str().unwrap();
    let o = run(&["--retries", "3", "-q", "sh", "-c", script, "sh", ":::", c]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&counter).unwrap().trim(), "3");
    std::fs::remove_file(&counter).unwrap();
    let o = run(&["--retries", "2", "-q", "sh", "-c", script, "sh", ":::", c]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&counter).unwrap().trim(), "2");
}

#[test]
fn halt_now_kills_running_jobs_and_soon_lets_them_finish() {
    let script = "if [ $1 = 2 ]; then exit 1; fi; sleep 3";
    let t = Instant::now();
    let o = run(&[
        "-j",
        "4",
        "--halt",
        "now,fail=1",
        "-q",
        "sh",
        "-c",
        script,
        "sh",
        ":::",
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
    ]);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(o.status.code(), Some(1), "the failing job's exit status");

    let dir = scratch("halt");
    let log = dir.join("log");
    let script = "if [ $1 = 1 ]; then exit 1; fi; sleep 0.3";
    let o = parpool()
        .args(["run", "-j", "2", "--halt", "soon,fail=1", "--joblog"])
        .arg(&log)
        .args([
            "-q", "sh", "-c", script, "sh", ":::", "1", "2", "3", "4", "5", "6",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let log = std::fs::read_to_string(&log).unwrap();
    let ran = log.lines().count() - 1;
    // Job 1 failed at once; few or no others started (on a busy machine
    // job 1 can fail before job 2 starts: then none does), and those that
    // had started were let finish, not killed (`soon`, not `now`).
    assert!((1..=3).contains(&ran), "{log}");
    for line in log.lines().skip(1) {
        let fields: Vec<&str> = line.split('\t').collect();
        let (seq, exitval, signal) = (fields[0], fields[6], fields[7]);
        let expected = if seq == "1" { "1" } else { "0" };
        assert_eq!((exitval, signal), (expected, "0"), "{log}");
    }
}

#[test]
fn joblog_is_in_gnu_parallel_format() {
    let dir = scratch("joblog");
    let log = dir.join("jobs.log");
    let o = parpool()
        .args(["run", "-k", "--joblog"])
        .arg(&log)
        .args(["-q", "sh", "-c", "echo $1; exit $1", "sh", ":::", "0", "3"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand"
    );
    let mut rows: Vec<Vec<String>> = lines
        .map(|l| l.split('\t').map(|f| f.trim().to_owned()).collect())
        .collect();
    rows.sort();
    assert_eq!(rows.len(), 2);
    for (row, exit) in rows.iter().zip(["0", "3"]) {
        assert_eq!(row.len(), 9);
        assert_eq!(row[1], ":");
        assert!(row[2].parse::<f64>().unwrap() > 1.6e9);
        assert!(row[3].parse::<f64>().unwrap() >= 0.0);
        assert_eq!(row[5], "2", "bytes received");
        assert_eq!(row[6], exit);
        assert_eq!(row[7], "0");
        assert_eq!(row[8], format!("sh -c 'echo $1; exit $1' sh {exit}"));
    }
}

#[test]
fn exit_status_counts_failures_up_to_101() {
    assert_eq!(run(&["true", ":::", "1", "2"]).status.code(), Some(0));
    assert_eq!(run(&["false", ":::", "1", "2", "3"]).status.code(), Some(3));
    let many: Vec<String> = (0..105).map(|i| i.to_string()).collect();
    let mut args = vec!["false", ":::"];
    args.extend(many.iter().map(String::as_str));
    assert_eq!(run(&args).status.code(), Some(101));
}

#[test]
fn bad_input_is_a_clear_error_and_nothing_runs() {
    let dir = scratch("bad");
    let touched = dir.join("touched");
    let t = touched.to_str().unwrap();
    for (args, needle) in [
        (
            vec!["touch", t, "::::", "/no/such/file"],
            "cannot read input file",
        ),
        (vec!["-j", "lots", "touch", t, ":::", "x"], "-j lots"),
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(255), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!Path::new(&touched).exists(), "{args:?} ran something");
    }
    // A program that does not exist: the shell says so, and the job fails.
    let o = run(&["no-such-program-xyz", ":::", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no-such-program-xyz"));
}

#[test]
fn stdin_lines_non_utf8_null_and_columns() {
    // 100k lines on stdin, as a dry run, in order.
    let mut child = parpool()
        .args(["run", "--dry-run", "echo"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let mut buf = Vec::new();
        for i in 0..100_000 {
            writeln!(buf, "line{i}").unwrap();
        }
        stdin.write_all(&buf).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 100_000);
    assert_eq!(text.lines().nth(99_999), Some("echo line99999"));

    // Bytes that are not UTF-8 pass through untouched.
    let out = run_with_stdin(&["-k", "printf", "'%s\\n'"], b"caf\xe9\nok\n");
    assert_eq!(out, b"caf\xe9\nok\n");
    // NUL-separated input, and columns.
    let out = run_with_stdin(&["-k", "-0", "echo", "[{}]"], b"a\nb\0c\0");
    assert_eq!(out, b"[a\nb]\n[c]\n");
    let out = run_with_stdin(&["-k", "--colsep", ",", "echo", "{2}-{1}"], b"a,1\nb,2\n");
    assert_eq!(out, b"1-a\n2-b\n");
}

/// Runs `parpool run ARGS` with `input` on its stdin; returns its stdout.
fn run_with_stdin(args: &[&str], input: &[u8]) -> Vec<u8> {
    run_with_stdin_output(args, input).stdout
}

/// Waits until `n` files named `started.*` are in `dir` (the jobs write
/// them first): the jobs are running, and parpool's interrupt handler,
/// installed before any job starts, is in place. Panics after a minute.
fn wait_for_starts(dir: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let started = std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("started."))
            })
            .count();
        if started >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{started} of {n} jobs started");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `child`'s exit status within `limit`, or `None` (it is then killed).
fn wait_within(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn interrupt(child: &std::process::Child) {
    rustix::process::kill_process(
        rustix::process::Pid::from_child(child),
        rustix::process::Signal::INT,
    )
    .unwrap();
}

#[test]
fn an_interrupt_kills_the_running_jobs_and_a_hangup_changes_nothing() {
    for signal in [rustix::process::Signal::INT, rustix::process::Signal::TERM] {
        // As GNU parallel: the running jobs are killed at once, neither
        // their output nor their joblog lines are kept, and the run ends
        // with 255; no job process is left.
        let marker = if signal == rustix::process::Signal::INT {
            "876.54321"
        } else {
            "876.54322"
        };
        let dir = scratch("interrupt");
        let log = dir.join("log");
        let job = format!(
            "touch {}/started.$1; echo out.$1; exec sleep {marker}",
            dir.display()
        );
        let mut child = parpool()
            .args(["run", "-j", "2", "--joblog"])
            .arg(&log)
            .args(["-q", "sh", "-c", &job, "sh", ":::", "1", "2", "3"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_starts(&dir, 2);
        let t = Instant::now();
        rustix::process::kill_process(rustix::process::Pid::from_child(&child), signal).unwrap();
        let status = wait_within(&mut child, Duration::from_secs(60)).expect("parpool exits");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{signal:?}: {:?}",
            t.elapsed()
        );
        assert_eq!(
            status.code(),
            Some(255),
            "{signal:?}: an interrupted run, as GNU parallel's"
        );
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "", "{signal:?}: the killed jobs' output is dropped");
        let logged = std::fs::read_to_string(&log).unwrap().lines().count();
        assert_eq!(logged, 1, "{signal:?}: the joblog has its header only");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !processes_with(marker).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            processes_with(marker).is_empty(),
            "{signal:?}: jobs survived"
        );
    }
    // A hangup: the jobs go on and the run ends as it would have.
    let dir = scratch("hangup");
    let job = format!("touch {}/started.$1; sleep 1; echo done.$1", dir.display());
    let mut child = parpool()
        .args([
            "run", "-k", "-j", "2", "-q", "sh", "-c", &job, "sh", ":::", "1", "2",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_starts(&dir, 2);
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::HUP,
    )
    .unwrap();
    let status = wait_within(&mut child, Duration::from_secs(60)).expect("parpool exits");
    assert_eq!(status.code(), Some(0));
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "done.1\ndone.2\n");
}

/// Where GNU parallel's semantics match, the output is the same.
#[test]
fn output_matches_gnu_parallel() {
    if gnu().is_none() {
        return;
    }
    let cases: &[&[&str]] = &[
        &[
            "-k", "echo", "{}", "{.}", "{/}", "{//}", "{/.}", ":::", "a/b.c", "d.e/f", "g",
        ],
        &[
            "-k", "echo", "{#}", "{1}", "{2}", ":::", "x", "y", ":::", "1", "2", "3",
        ],
        &[
            "-k", "echo", "{1}{2}", ":::", "a", "b", "c", ":::+", "1", "2", "3",
        ],
        &["-k", "--tag", "echo", "hi", ":::", "p", "q"],
        &["-k", "echo", "pre", ":::", "a", "b"],
    ];
    for case in cases {
        let ours = run(case);
        let theirs = gnu_cmd().args(*case).output().unwrap();
        assert_eq!(
            stdout(&ours),
            String::from_utf8_lossy(&theirs.stdout),
            "{case:?}"
        );
    }
}

#[test]
fn resume_skips_logged_jobs_and_resume_failed_reruns_failures() {
    let dir = scratch("resume");
    let log = dir.join("log");
    let ran = dir.join("ran");
    let script = "echo $1 >> \"$2\"; [ $1 != 3 ]";
    let go = |extra: &[&str], inputs: &[&str]| {
        parpool()
            .arg("run")
            .args(extra)
            .arg("--joblog")
            .arg(&log)
            .args([
                "-q",
                "sh",
                "-c",
                script,
                "sh",
                "{}",
                ran.to_str().unwrap(),
                ":::",
            ])
            .args(inputs)
            .output()
            .unwrap()
    };
    // A first run that got through jobs 1-3 only (3 failed).
    assert_eq!(go(&[], &["1", "2", "3"]).status.code(), Some(1));
    // --resume runs only the jobs the log does not list.
    assert_eq!(
        go(&["--resume"], &["1", "2", "3", "4", "5"]).status.code(),
        Some(0)
    );
    let mut seen: Vec<String> = std::fs::read_to_string(&ran)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    seen.sort();
    assert_eq!(seen, ["1", "2", "3", "4", "5"]);
    // --resume-failed runs job 3 again, and nothing else.
    std::fs::remove_file(&ran).unwrap();
    assert_eq!(
        go(&["--resume-failed"], &["1", "2", "3", "4", "5"])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "3\n");
    // The log was appended to: one header, 3 + 2 + 1 jobs.
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().filter(|l| l.starts_with("Seq\t")).count(), 1);
    assert_eq!(text.lines().count(), 1 + 6);
    // A log that is not a joblog is an error, and nothing runs.
    std::fs::write(&log, "Seq\nrubbish\n").unwrap();
    std::fs::remove_file(&ran).unwrap();
    let o = go(&["--resume"], &["1"]);
    assert_eq!(o.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a joblog line"));
    assert!(!ran.exists());
}

#[test]
fn line_buffer_passes_whole_lines_on_as_they_come() {
    let script = "printf 'first '; sleep 0.05; echo $1; sleep 0.4; echo late $1";
    let mut child = parpool()
        .args([
            "run",
            "--line-buffer",
            "--tag",
            "-j",
            "2",
            "-q",
            "sh",
            "-c",
            script,
            "sh",
            ":::",
            "a",
            "b",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The first lines arrive while the jobs are still running.
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let t = Instant::now();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(350),
        "{:?}",
        t.elapsed()
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    let mut lines: Vec<String> = std::iter::once(first.trim_end().to_owned())
        .chain(rest.lines().map(str::to_owned))
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        ["a\tfirst a", "a\tlate a", "b\tfirst b", "b\tlate b"]
    );
}

#[test]
fn delay_spaces_out_job_starts() {
    let o = run(&[
        "-j",
        "4",
        "--delay",
        "0.15",
        "-q",
        "sh",
        "-c",
        "date +%s.%N",
        ":::",
        "1",
        "2",
        "3",
    ]);
    let mut starts: Vec<f64> = stdout(&o).lines().map(|l| l.parse().unwrap()).collect();
    starts.sort_by(f64::total_cmp);
    // Spaced by the delay (0.15 s), less the clock's and a shell's start
    // jitter.
    for pair in starts.windows(2) {
        assert!(pair[1] - pair[0] >= 0.12, "{starts:?}");
    }
}

#[test]
fn bar_draws_progress_on_a_terminal_only() {
    // Not a terminal: nothing but the jobs' own output.
    let o = run(&["--bar", "-k", "echo", ":::", "a", "b"]);
    assert_eq!(stdout(&o), "a\nb\n");
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // On a terminal (`script` gives it one): jobs done out of how many.
    let have_script = Command::new("script").arg("--version").output().is_ok();
    if !have_script {
        return;
    }
    let cmd = format!(
        "{} run --bar -j 2 true ::: 1 2 3 4 5",
        env!("CARGO_BIN_EXE_parpool")
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let screen = String::from_utf8_lossy(&o.stdout);
    assert!(screen.contains("5/5 jobs"), "{screen}");
}

/// GNU parallel, if installed, with a throwaway home (no citation notice
/// state, no user config).
fn gnu() -> Option<Command> {
    let have = Command::new("parallel")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        eprintln!("GNU parallel is not installed; skipping");
        return None;
    }
    Some(gnu_cmd())
}

/// `theirs` through GNU parallel (`gnu`) and `ours` through `parpool
/// run`, both with standard input closed and `setup` applied: their
/// outputs, ours first.
fn both<A: AsRef<std::ffi::OsStr>>(
    gnu: &mut Command,
    theirs: &[A],
    ours: &[A],
    setup: impl Fn(&mut Command),
) -> (Output, Output) {
    let mut parpool = parpool();
    parpool.arg("run").args(ours);
    gnu.args(theirs);
    let output = |c: &mut Command| {
        setup(c);
        c.stdin(Stdio::null()).output().unwrap()
    };
    (output(&mut parpool), output(gnu))
}

/// Runs `case` with both tools: same stdout and exit status.
fn same_as_gnu(case: &[&str]) {
    same_as_gnu_in(case, Path::new("."), &[]);
}

#[test]
fn option_syntax_matches_gnu_parallel() {
    let cases: &[&[&str]] = &[
        &["-j4", "-k", "echo", ":::", "a", "b"],
        &["-kj1", "echo", ":::", "a", "b"],
        &["-j", "0", "-k", "echo", ":::", "a", "b"],
        &["--jobs=2", "--keep-order", "echo", ":::", "x", "y"],
        &["--keep", "-P", "2", "echo", ":::", "x"],
        &["-k", "--", "echo", "-j", ":::", "z"],
        &["--will-cite", "-k", "echo", ":::", "w"],
    ];
    for case in cases {
        same_as_gnu(case);
    }
    // Unknown options: a usage error (255) and nothing runs, in both (GNU
    // prints its usage text on stdout; ours goes to stderr).
    for case in [
        &["--bogus", "echo", "xyzzy", ":::", "a"][..],
        &["-kZ", "echo", "xyzzy", ":::", "a"][..],
        &["--jobs"][..],
    ] {
        let out = run(case);
        assert_eq!(out.status.code(), Some(255), "{case:?}");
        assert!(stdout(&out).is_empty(), "nothing ran: {case:?}");
        if let Some(mut gnu) = gnu() {
            let theirs = gnu.args(case).stdin(Stdio::null()).output().unwrap();
            assert_eq!(theirs.status.code(), Some(255), "{case:?}");
            assert!(!String::from_utf8_lossy(&theirs.stdout).contains("xyzzy"));
        }
    }
    let out = run(&["--bogus", "echo", ":::", "a"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown option: --bogus"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `case` with both tools in `dir` with `env`: same stdout and exit
/// status.
fn same_as_gnu_in(case: &[&str], dir: &Path, env: &[(&str, &str)]) {
    let Some(mut gnu) = gnu() else { return };
    let (ours, theirs) = both(&mut gnu, case, case, |c| {
        c.current_dir(dir).envs(env.iter().copied());
    });
    assert_eq!(
        stdout(&ours),
        String::from_utf8_lossy(&theirs.stdout),
        "stdout of {case:?}; our stderr: {}",
        String::from_utf8_lossy(&ours.stderr)
    );
    assert_eq!(
        ours.status.code(),
        theirs.status.code(),
        "exit status of {case:?}"
    );
}

#[test]
fn commands_run_through_the_shell_as_gnu_parallel_s_do() {
    let dir = scratch("shell-semantics");
    let d = dir.as_path();
    let cases: &[&[&str]] = &[
        &["-k", "echo", "$HOME", "{}", ":::", "a", "b"],
        // The shell's builtin echo, not /usr/bin/echo's help page.
        &["-k", "echo", ":::", "--help", "--version", "-n", "x"],
        &["-k", "echo", "{}", ":::", "--help"],
        &["-k", "true", ":::", "--help"],
        &["-k", "echo", "{}", ";", "echo", "x", ":::", "a", "b"],
        &["-k", "echo {} > {}.out; cat {}.out", ":::", "f1", "f2"],
        &["-k", "echo \"{}\"", ":::", "a b", "c"],
        &["-k", "cd {} && pwd | wc -c", ":::", "/", "/tmp"],
        &[
            "-k", "echo", "{}", ":::", "a\\b", "c\\nd", "$x", "*", "it's", "",
        ],
        &["-k", "-q", "echo", "a  b", "$HOME", "{}", ":::", "x y"],
        &[
            "-k",
            "--dry-run",
            "echo",
            "{}",
            ":::",
            "a b",
            "it's",
            "x$y",
            "*",
            "",
            "a:b",
            "-n",
        ],
        &["-k", "printf", "'%s\\n'", ":::", "one two", "three"],
        &[
            "-k", "echo", "{}", "|", "tr", "a-z", "A-Z", ":::", "up", "case",
        ],
        &[
            "-k",
            "test",
            "-d",
            "{}",
            "&&",
            "echo",
            "dir",
            "{}",
            ":::",
            "/",
            "/nonexistent",
        ],
        &["-k", "exit {}", ":::", "0", "3", "0"],
    ];
    for case in cases {
        same_as_gnu_in(case, d, &[]);
    }
    // Exported bash functions, and bash syntax, under bash.
    let bash = [
        ("PARALLEL_SHELL", "/bin/bash"),
        ("BASH_FUNC_greet%%", "() {  echo \"hello $1\"\n}"),
    ];
    same_as_gnu_in(&["-k", "greet", ":::", "a", "b c"], d, &bash);
    same_as_gnu_in(
        &[
            "-k",
            "[[ {} == a* ]] && echo yes || echo no",
            ":::",
            "ab",
            "ba",
        ],
        d,
        &bash,
    );
    // Under dash, whose echo reads backslashes.
    let dash = [("PARALLEL_SHELL", "/bin/dash")];
    same_as_gnu_in(&["-k", "echo", "{}", ":::", "x\\ny", "plain"], d, &dash);
}

#[test]
fn replacement_strings_match_gnu_parallel() {
    let tricky = [
        ".bashrc", "a/.b", ".", "a/b/", "a//b.c", "/", "a.b.c", "a/b.c/d", "x.", "..", "../x.y",
    ];
    for string in ["{}", "{.}", "{/}", "{//}", "{/.}"] {
        let mut case = vec!["-k", "echo", string, ":::"];
        case.extend(tricky);
        same_as_gnu(&case);
    }
    let cases: &[&[&str]] = &[
        // Any replacement string, even one that takes no input, means the
        // inputs are not appended.
        &["-k", "echo", "{#}", ":::", "a", "b"],
        // Both run at once, so each has its own slot.
        &["-k", "-j2", "sleep 0.5; echo x{%}", ":::", "a", "b"],
        &["-k", "echo", "{0}", ":::", "a", "b", ":::", "1"],
        &["-k", "echo", "{-1}", "{-2}", ":::", "a", ":::", "1", "2"],
        &["-k", "echo", "[{3}]", ":::", "a", ":::", "b"],
        &[
            "-k", "echo", "{1.}", "{2/}", "{1//}", "{2/.}", ":::", "x/a.b", ":::", "y/c.d",
        ],
        // Not replacement strings: literal, and the input is appended.
        &["-k", "echo", "{..}", "{x}", "{ }", "{}}", ":::", "a.b.c"],
        &["-k", "echo", "{..}", ":::", "a"],
    ];
    for case in cases {
        same_as_gnu(case);
    }
}

/// A joblog's lines without the two time columns.
fn joblog_without_times(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(9, '\t').collect();
            if f.len() == 9 {
                [f[0], f[1], f[4], f[5], f[6], f[7], f[8]].join("\t")
            } else {
                l.to_owned()
            }
        })
        .collect()
}

#[test]
fn joblog_columns_match_gnu_parallel() {
    let Some(mut gnu) = gnu() else { return };
    let dir = scratch("joblog-gnu");
    let (ours, theirs) = (dir.join("ours"), dir.join("theirs"));
    let case = |log: &Path| -> Vec<String> {
        vec![
            "-j1".into(),
            "--timeout".into(),
            "1".into(),
            "--joblog".into(),
            log.display().to_string(),
            "echo out{}; echo err >&2; case {} in 3) exit 3;; 4) sleep 5;; esac".into(),
            ":::".into(),
            "1".into(),
            "3".into(),
            "4".into(),
        ]
    };
    let (o, t) = both(&mut gnu, &case(&theirs), &case(&ours), |_| {});
    assert_eq!(o.status.code(), t.status.code());
    let read = |p: &Path| joblog_without_times(&std::fs::read_to_string(p).unwrap());
    // The timed-out job: TERM (15), and Receive counts stdout only.
    assert_eq!(read(&ours), read(&theirs));
    assert!(read(&ours)[3].contains("\t-1\t15\t"), "{:?}", read(&ours));

    // `--joblog -` writes to stdout, each line after its job's output;
    // `+FILE` appends.
    let mut gnu_again = gnu_cmd();
    let t = gnu_again
        .args(["-k", "--joblog", "-", "echo", ":::", "a", "b"])
        .output()
        .unwrap();
    let o = run(&["-k", "--joblog", "-", "echo", ":::", "a", "b"]);
    assert_eq!(
        joblog_without_times(&stdout(&o)),
        joblog_without_times(&String::from_utf8_lossy(&t.stdout))
    );
    let appended = dir.join("appended");
    let spec = format!("+{}", appended.display());
    for _ in 0..2 {
        assert!(
            run(&["--joblog", &spec, "true", ":::", "x"])
                .status
                .success()
        );
    }
    let text = std::fs::read_to_string(&appended).unwrap();
    assert_eq!(text.lines().count(), 3, "one header, two jobs: {text}");
}

fn gnu_cmd() -> Command {
    let mut c = Command::new("parallel");
    c.env(
        "PARALLEL_HOME",
        std::env::temp_dir().join("parpool-gnu-home"),
    );
    c
}

/// The peak resident memory of a running process, sampled until it exits.
fn peak_rss_kib(child: &mut std::process::Child) -> u64 {
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", child.id())) {
            for line in status.lines() {
                if let Some(v) = line.strip_prefix("VmHWM:") {
                    peak = peak.max(v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0));
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    peak
}

#[test]
fn a_gigabyte_of_grouped_output_is_spooled_not_held_in_memory() {
    let mut child = parpool()
        .args(["run", "head -c {} /dev/zero", ":::", "1000000000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()).unwrap());
    let peak = peak_rss_kib(&mut child);
    assert_eq!(reader.join().unwrap(), 1_000_000_000, "every byte came out");
    assert!(child.wait().unwrap().success());
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
}

#[test]
fn a_closed_output_or_a_daemon_holding_it_does_not_hang_the_run() {
    // A reader that goes away: parpool stops the job and dies of SIGPIPE,
    // as GNU parallel does.
    let start = std::time::Instant::now();
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} run --line-buffer yes ::: 1 | head -1; exit ${{PIPESTATUS:-0}}",
            env!("CARGO_BIN_EXE_parpool")
        ))
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "1\n");
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
    // A job that leaves a daemon holding its output: the job's end ends it,
    // also when a timeout ends the job.
    let marker = "59.1234";
    for args in [
        vec![
            "setsid sleep 59.1234 & echo started {#}".to_owned(),
            ":::".into(),
            "1".into(),
        ],
        vec![
            "--timeout".to_owned(),
            "1".into(),
            "setsid sleep 59.1234 & echo started {#}; sleep 30".into(),
            ":::".into(),
            "1".into(),
        ],
    ] {
        let start = std::time::Instant::now();
        let o = parpool().arg("run").args(&args).output().unwrap();
        assert!(
            start.elapsed() < std::time::Duration::from_secs(15),
            "{args:?}"
        );
        assert_eq!(stdout(&o), "started 1\n", "{args:?}");
        let _ = Command::new("pkill")
            .args(["-f", &format!("sleep {marker}")])
            .status();
    }
}

#[test]
fn a_low_descriptor_limit_caps_the_jobs_and_every_job_runs() {
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 40 && {} run -j0 'sleep 0.1; echo {{}}' ::: $(seq 30)",
            env!("CARGO_BIN_EXE_parpool")
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(stdout(&o).lines().count(), 30);
    assert!(String::from_utf8_lossy(&o.stderr).contains("file handles"));
}

#[test]
fn halt_matches_gnu_parallel() {
    let cases: &[&[&str]] = &[
        // No job starts after the deciding one.
        &[
            "-k",
            "-j1",
            "--halt",
            "soon,fail=1",
            "echo {}; exit {}",
            ":::",
            "0",
            "1",
            "0",
            "0",
        ],
        &[
            "-k",
            "-j1",
            "--halt",
            "now,fail=1",
            "echo {}; exit {}",
            ":::",
            "0",
            "3",
            "0",
        ],
        // The old numeric forms.
        &[
            "-k",
            "-j1",
            "--halt",
            "2",
            "echo {}; exit {}",
            ":::",
            "0",
            "3",
            "0",
        ],
        &[
            "-k",
            "-j1",
            "--halt",
            "1",
            "echo {}; exit {}",
            ":::",
            "0",
            "3",
            "0",
        ],
        &[
            "-k",
            "-j1",
            "--halt",
            "0",
            "echo {}; exit {}",
            ":::",
            "0",
            "3",
            "0",
        ],
        // Counts above one: the number of failures.
        &[
            "-k",
            "-j1",
            "--halt",
            "soon,fail=2",
            "echo {}; exit {}",
            ":::",
            "3",
            "0",
            "4",
            "0",
        ],
        // Percentages: of all the jobs, and the exit status is one.
        &[
            "-k",
            "-j1",
            "--halt",
            "soon,fail=50%",
            "echo {}; exit {}",
            ":::",
            "1",
            "1",
            "0",
            "0",
        ],
        &[
            "-k",
            "-j1",
            "--halt",
            "soon,fail=30%",
            "exit {}",
            ":::",
            "0",
            "1",
            "0",
            "1",
            "0",
            "0",
        ],
        &[
            "-k",
            "-j1",
            "--halt",
            "now,success=1",
            "echo {}; exit {}",
            ":::",
            "1",
            "0",
            "1",
        ],
        &[
            "-k",
            "-j1",
            "--halt",
            "soon,done=1",
            "echo {}; exit 2",
            ":::",
            "a",
            "b",
        ],
    ];
    for case in cases {
        same_as_gnu(case);
    }
}

#[test]
fn an_interrupted_run_exits_255_as_gnu_parallel_does() {
    let dir = scratch("sigint-255");
    let job = format!("touch {}/started.{{}}; sleep 1; echo {{}}", dir.display());
    let mut child = parpool()
        .args(["run", "-j1", &job, ":::", "a", "b", "c"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_starts(&dir, 1);
    interrupt(&child);
    let mut stdout = child.stdout.take().unwrap();
    let status = wait_within(&mut child, Duration::from_secs(60)).expect("parpool exits");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
    assert_eq!(status.code(), Some(255));
    assert_eq!(out, "", "the running job was killed and its output dropped");
}

/// Runs `case` with `input` on stdin in both tools: same stdout and exit
/// status.
fn same_as_gnu_with_stdin(case: &[&str], input: &[u8], dir: &Path) {
    let Some(mut theirs) = gnu() else { return };
    theirs.args(case).current_dir(dir);
    let t = fed(theirs, input);
    let mut ours = parpool();
    ours.arg("run").args(case).current_dir(dir);
    let o = fed(ours, input);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&t.stdout),
        "stdout of {case:?} on {input:?}; our stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), t.status.code(), "exit status of {case:?}");
}

#[test]
fn inputs_match_gnu_parallel() {
    let dir = scratch("inputs-gnu");
    for (name, text) in [("f1", "1\n2\n3\n"), ("f2", "a\nb\nc\n"), ("f3", "x\ny\n")] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let d = dir.as_path();
    for case in [
        &["-k", "echo", "::::+", "f1", "f2", "f3"][..],
        &["-k", "echo", "::::", "f1", "::::+", "f2", "f3"][..],
        &["-k", "echo", "::::", "f1", "f2"][..],
        &["-k", "-a", "f1", "echo"][..],
        &["-k", "-a", "f1", "-a", "f3", "echo"][..],
    ] {
        same_as_gnu_in(case, d, &[]);
    }
    let stdin_cases: &[(&[&str], &[u8])] = &[
        (&["-k", "echo", "[{}]"], b"a\0b\nc\n"),
        (
            &["-k", "--colsep", "\\t", "echo", "{2}-{1}"],
            b"a\tb\nc  d\n",
        ),
        (&["-k", "--colsep", " +", "echo", "{2}-{1}"], b"a  b\nc d\n"),
        (&["-k", "-C", ",", "echo", "{3}{1}"], b"a,b,c\n1,2,3\n"),
        (&["-k", "-d", ",", "echo", "[{}]"], b"a,b,c"),
        (&["-k", "-d", "\\t", "echo", "[{}]"], b"a\tb"),
        (&["-k", "--trim", "lr", "echo", "[{}]"], b"  a  \n\tb\n"),
        (&["-k", "--trim", "l", "echo", "[{}]"], b"  a  \n"),
        (
            &[
                "-k",
                "--header",
                ":",
                "--colsep",
                ",",
                "echo",
                "{name} is {age}",
            ],
            b"name,age\nbob,3\nann,5\n",
        ),
        (
            &["-k", "--header", ":", "--colsep", ",", "echo", "{1}/{2}"],
            b"name,age\nbob,3\n",
        ),
    ];
    for (case, input) in stdin_cases {
        same_as_gnu_with_stdin(case, input, d);
    }
    // A bad regular expression is a usage error, and nothing runs.
    let o = run_with_stdin_output(&["--colsep", "(", "echo", "ran"], b"x\n");
    assert_eq!(o.status.code(), Some(255));
    assert!(o.stdout.is_empty());
}

/// Runs `parpool run ARGS` with `input` on its stdin; returns what it left.
fn run_with_stdin_output(args: &[&str], input: &[u8]) -> Output {
    let mut c = parpool();
    c.arg("run").args(args);
    fed(c, input)
}

/// `command`'s output, `input` fed to its stdin from a thread while its
/// stdout and stderr are read (neither side can block the other); a run
/// still going after a minute is killed and fails the test. A command
/// that stops reading early (a usage error) is no error.
fn fed(mut command: Command, input: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let bytes = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&bytes);
    });
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let status = wait_within(&mut child, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("{command:?} still running after a minute"));
    writer.join().unwrap();
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

#[test]
fn everyday_options_match_gnu_parallel() {
    let cases: &[&[&str]] = &[
        &["-k", "-I", "@@", "echo", "@@", "x@@", "{}", ":::", "a", "b"],
        &["-k", "-I", "XX", "echo", "XX.{#}", ":::", "a"],
        &["-k", "-v", "echo", ":::", "a", "b"],
        &["-k", "-v", "echo {}; echo e >&2", ":::", "a"],
        &[
            "-k",
            "--tagstring",
            "<{}-{#}>",
            "echo",
            "hi",
            ":::",
            "a",
            "b",
        ],
        &[
            "-k",
            "--tagstring",
            "T{}",
            "--tag",
            "echo",
            "hi",
            ":::",
            "a",
        ],
        &["-k", "--env", "HOME", "echo", ":::", "a"],
    ];
    for case in cases {
        same_as_gnu(case);
    }
}

#[test]
fn several_inputs_per_job_match_gnu_parallel() {
    let cases: &[&[&str]] = &[
        &["-k", "-N2", "echo", ":::", "a", "b", "c", "d", "e"],
        &[
            "-k", "-N2", "echo", "{1}-{2}", ":::", "a", "b", "c", "d", "e",
        ],
        &["-k", "-N2", "echo", "[{}]", ":::", "a", "b", "c"],
        &["-k", "-n2", "echo", ":::", "a", "b", "c", "d", "e"],
        &["-k", "-n2", "echo", "[{}]", ":::", "a", "b", "c"],
        &["-k", "-n2", "echo", "{#}", ":::", "a", "b", "c"],
        &["-k", "-j1", "-X", "echo", "x{}y", ":::", "a", "b", "c"],
        &[
            "-k", "-j2", "-X", "echo", "x{}y", ":::", "a", "b", "c", "d", "e",
        ],
        &["-k", "-j1", "-m", "echo", "x{}y", ":::", "a", "b", "c"],
        &["-k", "-j2", "-m", "echo", ":::", "a", "b", "c", "d", "e"],
        &["-k", "-N2", "echo", ":::", "a", "b", "c", ":::", "1", "2"],
        &["-k", "-N0", "echo", "x", ":::", "a", "b"],
    ];
    for case in cases {
        same_as_gnu(case);
    }
    let dir = scratch("lines-gnu");
    same_as_gnu_with_stdin(&["-k", "-L2", "echo"], b"a b\nc\nd\n", &dir);
}

#[test]
fn pipe_cuts_stdin_as_gnu_parallel_does() {
    let dir = scratch("pipe-gnu");
    let seq: Vec<u8> = (1..=100_000)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    let twenty: Vec<u8> = (1..=20)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    let cases: &[(&[&str], &[u8])] = &[
        (&["--pipe", "--block", "10k", "-k", "wc", "-l"], &seq),
        (&["--pipe", "--block", "1K", "-k", "wc", "-c"], &seq),
        (&["--pipe", "-k", "cat"], b"a\nb\nc\n"),
        (
            &["--pipe", "--block", "10", "-k", "echo {#}; wc -l"],
            &twenty,
        ),
        (
            &[
                "--pipe", "--block", "100", "-k", "--recend", "0\\n", "wc", "-c",
            ],
            &seq[..300],
        ),
        (
            &[
                "--pipe",
                "--recstart",
                "HDR",
                "--block",
                "20",
                "-k",
                "echo ==; cat",
            ],
            b"HDRa\n1\nHDRb\n2\n3\n",
        ),
    ];
    for (case, input) in cases {
        same_as_gnu_with_stdin(case, input, &dir);
    }
}

#[test]
fn plus_results_and_relative_timeouts_match_gnu_parallel() {
    same_as_gnu(&[
        "-k",
        "--plus",
        "echo",
        "'{+/}|{/}|{+.}|{..}|{+..}|{/..}|{##}|{0#}|{...}|{+...}|{/...}'",
        ":::",
        "a/b.c.d.e",
        "e.f",
        "g",
    ]);
    same_as_gnu(&[
        "-k",
        "-j1",
        "--timeout",
        "300%",
        "sleep {}; echo {}",
        ":::",
        "0.1",
        "0.1",
        "0.1",
        "3",
        "0.1",
    ]);
    // --results: the same files with the same contents, and nothing printed.
    let Some(mut gnu) = gnu() else { return };
    let dir = scratch("results-gnu");
    let (ours, theirs) = (dir.join("ours"), dir.join("theirs"));
    let case = |d: &Path| -> Vec<String> {
        [
            "-k",
            "--results",
            &d.display().to_string(),
            "echo {}; echo e{} >&2",
            ":::",
            "a",
            "b c",
            "x/y",
        ]
        .map(String::from)
        .to_vec()
    };
    let (o, t) = both(&mut gnu, &case(&theirs), &case(&ours), |_| {});
    assert_eq!(stdout(&o), String::from_utf8_lossy(&t.stdout));
    let listing = |root: &Path| -> Vec<(String, String)> {
        let mut files = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(root).unwrap().display().to_string();
                    files.push((rel, std::fs::read_to_string(&p).unwrap()));
                }
            }
        }
        files.sort();
        files
    };
    assert_eq!(listing(&ours), listing(&theirs));
    assert_eq!(listing(&ours).len(), 9);
}

/// An sshd on 127.0.0.1 with a throwaway host key and user key, for as
/// long as it lives; `None` (with a line saying why) where sshd is missing
/// or cannot start.
struct LoopbackSshd {
    child: std::process::Child,
    dir: PathBuf,
    port: u16,
}

impl LoopbackSshd {
    fn start(name: &str) -> Option<LoopbackSshd> {
        let sshd = Path::new("/usr/sbin/sshd");
        if !sshd.exists() || rustix::process::geteuid().as_raw() != 0 {
            eprintln!("ssh tests skipped: they need /usr/sbin/sshd (openssh-server) and root");
            return None;
        }
        let dir = scratch(name);
        for key in ["hostkey", "userkey"] {
            let _ = std::fs::remove_file(dir.join(key));
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(key))
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("ssh tests skipped: ssh-keygen failed");
                return None;
            }
        }
        std::fs::copy(dir.join("userkey.pub"), dir.join("authorized_keys")).unwrap();
        let _ = std::fs::create_dir_all("/run/sshd");
        for attempt in 0..20u16 {
            let port = 20000 + (std::process::id() as u16 % 20000) + attempt * 7;
            let config = dir.join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/hostkey\n\
                     AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\nUsePAM no\n\
                     StrictModes no\nPasswordAuthentication no\nPermitRootLogin yes\n",
                    d = dir.display()
                ),
            )
            .unwrap();
            let mut child = Command::new(sshd)
                .arg("-D")
                .arg("-f")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()?;
            let server = LoopbackSshd {
                child: {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    if child.try_wait().ok().flatten().is_some() {
                        continue;
                    }
                    child
                },
                dir: dir.clone(),
                port,
            };
            let up = Command::new("sh")
                .arg("-c")
                .arg(format!("{} root@127.0.0.1 true", server.ssh()))
                .status()
                .is_ok_and(|s| s.success());
            if up {
                return Some(server);
            }
        }
        eprintln!("ssh tests skipped: sshd did not start");
        None
    }

    /// The `--ssh` command that reaches it.
    fn ssh(&self) -> String {
        format!(
            "ssh -i {}/userkey -p {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
             -o LogLevel=ERROR",
            self.dir.display(),
            self.port
        )
    }
}

impl Drop for LoopbackSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn jobs_run_on_other_machines_through_ssh() {
    let Some(server) = LoopbackSshd::start("sshd") else {
        return;
    };
    let ssh = server.ssh();
    // The same as GNU parallel's, through the same sshd.
    same_as_gnu_in(
        &[
            "--ssh",
            &ssh,
            "-S",
            "2/root@127.0.0.1",
            "-k",
            "echo {} seq $PARALLEL_SEQ",
            ":::",
            "a",
            "b",
        ],
        &server.dir,
        &[],
    );
    same_as_gnu_in(
        &[
            "--ssh",
            &ssh,
            "-S",
            "1/root@127.0.0.1,1/:",
            "-k",
            "echo {}",
            ":::",
            "a",
            "b",
            "c",
        ],
        &server.dir,
        &[],
    );
    // A machine that cannot be reached is reported, and its jobs run on
    // the others.
    let o = parpool()
        .args([
            "run",
            "--ssh",
            &ssh,
            "-S",
            "1/root@127.0.0.1",
            "-S",
            "1/nosuchhost.invalid",
        ])
        .args(["-k", "echo {}", ":::", "a", "b", "c"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(stdout(&o), "a\nb\nc\n");
    assert!(String::from_utf8_lossy(&o.stderr).contains("nosuchhost.invalid cannot be reached"));
    // --trc: files go there, results come back, and nothing is left there.
    // Inputs in a subdirectory, made there as here.
    let work = server.dir.join("work");
    std::fs::create_dir_all(work.join("parpool-t")).unwrap();
    std::fs::write(work.join("parpool-t/in1.txt"), "hello\n").unwrap();
    std::fs::write(work.join("parpool-t/in2.txt"), "hi\n").unwrap();
    let o = parpool()
        .current_dir(&work)
        .args([
            "run",
            "--ssh",
            &ssh,
            "-S",
            "1/root@127.0.0.1",
            "--trc",
            "{}.out",
        ])
        .args([
            "-k",
            "wc -c < {} > {}.out; echo done {}",
            ":::",
            "parpool-t/in1.txt",
            "parpool-t/in2.txt",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        stdout(&o),
        "done parpool-t/in1.txt\ndone parpool-t/in2.txt\n"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("parpool-t/in1.txt.out"))
            .unwrap()
            .trim(),
        "6"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("parpool-t/in2.txt.out"))
            .unwrap()
            .trim(),
        "3"
    );
    let left = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{ssh} root@127.0.0.1 'ls parpool-t 2>/dev/null | wc -l'"
        ))
        .output()
        .unwrap();
    assert_eq!(
        stdout(&left).trim(),
        "0",
        "--cleanup removed the files there"
    );
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("{ssh} root@127.0.0.1 'rmdir parpool-t'"))
        .status();
}

/// `--pipe` with `-N` (records a job, FASTA records by `--recstart`) and
/// with `--header` (the header before every block) cuts as GNU parallel
/// does; what parpool does not do with `--pipe` is refused, never run
/// otherwise.
#[test]
fn pipe_records_and_headers_match_gnu_parallel() {
    let dir = scratch("pipe-gnu");
    let d = dir.as_path();
    let fasta = b">a\nAC\nGT\n>b\nTT\n>c\nGG\n";
    let cases: &[(&[&str], &[u8])] = &[
        (
            &["-k", "--pipe", "-N3", "echo ---; cat"],
            b"1\n2\n3\n4\n5\n6\n7\n",
        ),
        (
            &["-k", "--pipe", "-N1", "--block", "1", "echo ---; cat"],
            b"1\n2\n",
        ),
        (
            &["-k", "--pipe", "--recstart", ">", "-N1", "echo ---; cat"],
            fasta,
        ),
        (
            &["-k", "--pipe", "--recstart", ">", "-N2", "echo ---; cat"],
            fasta,
        ),
        (
            &["-k", "--pipe", "--header", ":", "-N2", "echo ---; cat"],
            b"h\n1\n2\n3\n4\n5\n",
        ),
        (
            &["-k", "--pipe", "--header", ":", "echo ---; cat"],
            b"h\n1\n2\n3\n",
        ),
        (
            &["-k", "--pipe", "--header", "(.*\\n){2}", "echo ---; cat"],
            b"h\ng\n1\n2\n",
        ),
        (
            &[
                "-k",
                "--pipe",
                "--header",
                ":",
                "--block",
                "4",
                "echo ---; cat",
            ],
            b"h\n1\n2\n3\n4\n",
        ),
        // --cat: the block in a file named by {} (appended when absent).
        (
            &["-k", "--pipe", "-N4", "--cat", "wc -l < {}"],
            b"1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n",
        ),
        (&["-k", "--pipe", "-N2", "--cat", "cat"], b"a\nb\nc\n"),
    ];
    for (case, input) in cases {
        same_as_gnu_with_stdin(case, input, d);
    }
    // No --cat file is left behind.
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let args = [
        "--tmpdir",
        tmp.to_str().unwrap(),
        "--pipe",
        "-N1",
        "--cat",
        "cat {}",
    ];
    let o = run_with_stdin_output(&args, b"x\ny\n");
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "--cat files left"
    );
    for refused in [&["--pipe", "-L1", "cat"][..], &["--pipe", "-n2", "cat"][..]] {
        let o = run_with_stdin_output(refused, b"1\n2\n");
        assert_eq!(o.status.code(), Some(255), "{refused:?}");
        assert!(o.stdout.is_empty(), "{refused:?}");
    }
}

/// `--plus`'s editing strings edit as GNU parallel's Perl does, by
/// position too; without `--plus` they are text. An editing string whose
/// regular expression parpool cannot read is refused (255, nothing
/// runs), never passed on as text.
#[test]
fn plus_editing_strings_match_gnu_parallel() {
    let values = ["dir/a.tar.gz", "", "0", "abca", "AbcA", "x.gz.gz"];
    for string in [
        "{%.gz}",
        "{%%.*}",
        "{#dir/}",
        "{##d.r/}",
        "{:-def}",
        "{:2}",
        "{:1:2}",
        "{:9}",
        "{/a/X}",
        "{//a/X}",
        "{^a}",
        "{^^a}",
        "{,A}",
        "{,,A}",
        "{%.gz}.out",
    ] {
        let mut case = vec!["-k", "--plus", "echo", "[", string, "]", ":::"];
        case.extend(values);
        same_as_gnu(&case);
    }
    same_as_gnu(&[
        "-k", "--plus", "echo", "{2%.gz}", "{1:-x}", ":::", "a.gz", ":::", "b.gz",
    ]);
    // Without --plus: text, and the inputs appended.
    same_as_gnu(&[
        "-k", "echo", "{2%.gz}", "{%.gz}", ":::", "a.gz", ":::", "b.gz",
    ]);
    let o = run(&["--plus", "echo", "{##*/}", ":::", "a/b"]);
    assert_eq!(o.status.code(), Some(255));
    assert!(o.stdout.is_empty());
}

/// Default options from `$PARALLEL_HOME/config` and `$PARALLEL` come
/// before the command line's, as in GNU parallel; one parpool does not
/// know is refused like any other.
#[test]
fn default_options_from_the_config_file_and_the_environment() {
    let dir = scratch("default-options");
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join("config"),
        "# my defaults\n-k\n--tagstring x\\ y\n",
    )
    .unwrap();
    let home = home.to_str().unwrap();
    let d = dir.as_path();
    same_as_gnu_in(
        &["echo", ":::", "a", "b", "c"],
        d,
        &[("PARALLEL_HOME", home)],
    );
    same_as_gnu_in(
        &["echo", ":::", "a", "b"],
        d,
        &[("PARALLEL_HOME", home), ("PARALLEL", "--tag")],
    );
    same_as_gnu_in(&["echo", ":::", "a", "b"], d, &[("PARALLEL", "-k --tag")]);
    let o = parpool()
        .env("PARALLEL", "--no-such-option")
        .args(["run", "echo", ":::", "a"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(255));
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--no-such-option"));
}

/// `--halt` and `--timeout` say GNU parallel's words on stderr, which
/// scripts and people look for.
#[test]
fn halt_and_timeout_messages_are_gnu_parallel_s() {
    let stderr = |args: &[&str]| String::from_utf8_lossy(&run(args).stderr).into_owned();
    let failed = stderr(&[
        "--halt",
        "now,fail=1",
        "sleep {}; exit 1",
        ":::",
        "0.1",
        "5",
    ]);
    assert!(
        failed.contains("This job failed:\nsleep 0.1; exit 1\n"),
        "{failed}"
    );
    let done = stderr(&["--halt", "now,done=1", "sleep {}", ":::", "0.1", "5"]);
    assert!(done.contains("This job finished:\nsleep 0.1\n"), "{done}");
    let ok = stderr(&["--halt", "now,success=1", "sleep {}", ":::", "0.1", "5"]);
    assert!(ok.contains("This job succeeded:\nsleep 0.1\n"), "{ok}");
    let late = stderr(&["--timeout", "0.5", "sleep {}", ":::", "5"]);
    assert!(
        late.contains("Warning: This job was killed because it timed out:\n")
            && late.contains("Warning: sleep 5\n"),
        "{late}"
    );
}

/// Reading inputs from a terminal says so, as GNU parallel does, instead
/// of waiting silently (run in a pseudo-terminal by `script`, where it is
/// installed).
#[test]
fn inputs_from_a_terminal_get_gnu_parallel_s_hint() {
    let bin = env!("CARGO_BIN_EXE_parpool");
    let Ok(mut child) = Command::new("script")
        .args(["-qc", &format!("{bin} run echo"), "/dev/null"])
        .env(
            "PARALLEL_HOME",
            std::env::temp_dir().join("parpool-test-home"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        eprintln!("`script` is not installed; skipping");
        return;
    };
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&text).contains("Press CTRL-D") {
                break;
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = reader.join().unwrap();
    assert!(
        text.contains("Input is read from the terminal") && text.contains("Press CTRL-D to exit."),
        "{text:?}"
    );
}

/// `parpool help run` is `parpool run --help`; every error `run` reports,
/// usage or not, starts `parpool run:` and exits 255.
#[test]
fn help_run_and_one_error_prefix() {
    let help = parpool().args(["help", "run"]).output().unwrap();
    let direct = parpool().args(["run", "--help"]).output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    assert_eq!(help.stdout, direct.stdout);
    assert!(String::from_utf8_lossy(&help.stdout).contains("--pipe"));
    // Grouped, and wrapped to $COLUMNS where standard output is no terminal.
    for columns in ["64", "120"] {
        let o = parpool()
            .args(["run", "--help"])
            .env("COLUMNS", columns)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        for heading in [
            "INPUT SOURCES:",
            "JOBS:",
            "OUTPUT:",
            "OTHER MACHINES:",
            "EXAMPLES:",
        ] {
            assert!(text.contains(heading), "{heading}");
        }
        let width: usize = columns.parse().unwrap();
        assert!(text.lines().all(|l| l.chars().count() <= width.max(80)));
        assert_eq!(text.lines().any(|l| l.chars().count() > 80), width > 80);
    }
    for bad in [&["--bogus"][..], &["-j", "x", "echo", ":::", "a"][..]] {
        let o = run(bad);
        assert_eq!(o.status.code(), Some(255), "{bad:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.starts_with("parpool run: "), "{bad:?}: {err}");
    }
}

/// `-r`, `--group`, `--linebuffer` and the CPU counts, as GNU parallel's.
#[test]
fn more_gnu_options_match_gnu_parallel() {
    let d = scratch("more-options");
    same_as_gnu_with_stdin(&["-k", "-r", "echo", "x{}y"], b"a\n\n  \nb\n", &d);
    same_as_gnu_with_stdin(&["-k", "--no-run-if-empty", "echo", "x{}y"], b"\n\n", &d);
    same_as_gnu_with_stdin(&["-k", "echo", "x{}y"], b"a\n\n  \n", &d);
    same_as_gnu(&["-k", "--group", "echo", ":::", "a", "b"]);
    same_as_gnu(&["--linebuffer", "echo", ":::", "a"]);
    same_as_gnu(&["--number-of-threads"]);
    same_as_gnu(&["--number-of-sockets"]);
    same_as_gnu(&["--number-of-cores"]);
    // --nice: the job and what it starts run at that niceness.
    same_as_gnu(&["-k", "--nice", "7", "nice; echo {}", ":::", "a", "b"]);
    same_as_gnu(&["-k", "--nice", "3", "nice", ":::", "-n2"]);
    // --link (--xapply): every source linked, the shorter recycled.
    same_as_gnu(&[
        "-k", "--link", "echo", ":::", "a", "b", "c", ":::", "1", "2",
    ]);
    same_as_gnu(&[
        "-k", "--xapply", "echo", ":::", "a", "b", "c", ":::", "1", "2", ":::", "x",
    ]);
    same_as_gnu(&[
        "-k", "--link", "echo", "{2}{1}", ":::", "a", ":::", "1", "2", "3",
    ]);
}

/// `--shuf` runs every job once, in a random order that `{#}` follows.
#[test]
fn shuf_runs_every_job_once_in_a_random_order() {
    let inputs: Vec<String> = (0..200).map(|i| i.to_string()).collect();
    let mut args = vec!["-k", "--shuf", "echo", "{#}", "{}", ":::"];
    args.extend(inputs.iter().map(String::as_str));
    let out = stdout(&run(&args));
    let lines: Vec<(u64, u64)> = out
        .lines()
        .map(|l| {
            let (seq, v) = l.split_once(' ').unwrap();
            (seq.parse().unwrap(), v.parse().unwrap())
        })
        .collect();
    // -k: in job-number order, 1..=200.
    assert_eq!(
        lines.iter().map(|l| l.0).collect::<Vec<_>>(),
        (1..=200).collect::<Vec<_>>()
    );
    let mut values: Vec<u64> = lines.iter().map(|l| l.1).collect();
    let in_input_order = values.windows(2).all(|w| w[0] < w[1]);
    assert!(!in_input_order, "200 jobs in input order: not shuffled");
    values.sort_unstable();
    assert_eq!(values, (0..200).collect::<Vec<_>>(), "each job ran once");
}

/// `--tmpdir DIR`: the jobs' `$TMPDIR`, as GNU parallel's; output past
/// what is held in memory is spooled there, and nothing is left.
#[test]
fn tmpdir_is_the_jobs_tmpdir_and_holds_the_spool() {
    let dir = scratch("tmpdir");
    let spool = dir.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let s = spool.to_str().unwrap();
    same_as_gnu(&["--tmpdir", s, "echo $TMPDIR", ":::", "a"]);
    let o = run(&["--tmpdir", s, "head -c {} /dev/zero", ":::", "3000000"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(o.stdout.len(), 3_000_000);
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "nothing left"
    );
    let o = run(&["--tmpdir", "/no/such/dir", "echo", ":::", "a"]);
    assert_eq!(o.status.code(), Some(255));
    assert!(o.stdout.is_empty());
}
