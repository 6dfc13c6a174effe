//! Cases where a run must neither hang nor tell untruths: jobs that leave
//! `--roundrobin`'s round early, fifos removed unread, perl code that dies,
//! perl strings on jobs without values, and `-j FILE`'s number used for
//! everything that depends on the jobs at once.

use super::*;

#[test]
fn jobs_leaving_early_never_hang_the_run() {
    let many: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
    // A halt stops jobs dealt blocks before they start.
    let o = run_with_stdin_output(
        &[
            "--roundrobin",
            "-j3",
            "--block",
            "10k",
            "--halt",
            "now,fail=1",
            "exit 1",
        ],
        many.as_bytes(),
    );
    assert_ne!(o.status.code(), Some(0));
    // A skipped job leaves the round; the others get every other block.
    let o = run_with_stdin_output(
        &[
            "--roundrobin",
            "-j3",
            "--block",
            "10k",
            "-k",
            "wc -l {= skip() if seq() == 2; $_ = ''; uq() =}",
        ],
        many.as_bytes(),
    );
    let counted: u64 = stdout(&o)
        .lines()
        .map(|l| l.trim().parse::<u64>().unwrap())
        .sum();
    assert!(counted > 0 && counted < 200_000, "{counted}");
    // A fifo removed unread.
    let o = run_with_stdin_output(&["--pipe", "--fifo", "-N1", "rm {}"], b"1\n2\n3\n");
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn perl_that_dies_fails_its_job_and_perl_runs_on_jobs_without_values() {
    let o = run(&["-k", "echo", "{= $_ = 1 / $_ =}", ":::", "1", "0", "4"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "1\n0.25\n");
    assert!(String::from_utf8_lossy(&o.stderr).contains("Illegal division by zero"));
    // GNU parallel's output (its exit status, 1, counts a job that is
    // not there).
    let o = run_with_stdin_output(
        &["--pipe", "-N1", "-k", "echo", "{= $_ = seq() =}"],
        b"a\nb\nc\n",
    );
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "1\n2\n3\n");
}

#[test]
fn a_jobs_file_s_number_is_the_jobs_at_once_everywhere() {
    let d = scratch("jobs-file-everywhere");
    let procs = d.join("procs");
    std::fs::write(&procs, "2\n").unwrap();
    let p = procs.to_str().unwrap();
    same_as_gnu(&["-j", p, "-X", "-k", "echo", ":::", "1", "2", "3", "4"]);
    // The first jobs hold slots 1 and 2 however fast the first ends. (GNU
    // parallel's second job gets slot 1 back when GNU happens to reap the
    // first before it starts the second: its answer depends on timing, so
    // it is only checked to be slots of the two.)
    let o = run(&["-j", p, "--plus", "-k", "echo", "{0%}", ":::", "a", "b"]);
    assert_eq!(stdout(&o), "1\n2\n");
    if let Some(mut gnu) = gnu() {
        let theirs = gnu
            .args(["-j", p, "--plus", "-k", "echo", "{0%}", ":::", "a", "b"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let slots = String::from_utf8_lossy(&theirs.stdout).into_owned();
        assert!(slots.lines().all(|l| l == "1" || l == "2"), "{slots}");
        assert_eq!(slots.lines().count(), 2);
    }
    let o = run(&["-j", p, "--roundrobin", "wc"]);
    assert_eq!(
        o.status.code(),
        Some(255),
        "--roundrobin with -j FILE is refused"
    );
}

/// `--termseq`: a job past its timeout gets the given signals (it may
/// catch them) and counts as failed however it ends, as in GNU parallel;
/// an interrupt stops the running jobs by the same sequence.
#[test]
fn termseq_stops_jobs_by_its_signals() {
    same_as_gnu(&[
        "--timeout",
        "0.3",
        "--termseq",
        "USR1,200,KILL,25",
        "trap 'echo got-usr1' USR1; sleep 5 & wait; echo after",
        ":::",
        "1",
    ]);
    let dir = scratch("termseq-interrupt");
    let marker = dir.join("got-usr1");
    let started = dir.join("started.1");
    let script = format!(
        "trap 'touch {}; exit 0' USR1; touch {}; sleep 30 & wait; : {{}}",
        marker.display(),
        started.display()
    );
    let mut child = parpool()
        .args(["run", "--termseq", "USR1,2000,KILL,25", &script, ":::", "1"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_starts(&dir, 1);
    interrupt(&child);
    let status = wait_within(&mut child, Duration::from_secs(30)).expect("no exit after SIGINT");
    assert_eq!(status.code(), Some(255));
    assert!(marker.exists(), "the job did not get --termseq's USR1");
    for bad in ["FOO", "TERM,x"] {
        let o = run(&["--termseq", bad, "echo", ":::", "a"]);
        assert_eq!(o.status.code(), Some(255), "{bad}");
    }
}

/// A halt decided by a timed-out or skipped job
/// exits as GNU parallel's (255, 254), never 0; `--roundrobin` with
/// `--retries` is refused; a job whose background child holds its stdin
/// unread does not hold up the run; perl code that dies under `--dry-run`,
/// or with a wide character, fails its job with perl's words.
#[test]
fn halts_retries_held_stdin_and_dying_perl() {
    same_as_gnu(&[
        "--timeout",
        "0.5",
        "--halt",
        "now,fail=1",
        "trap 'exit 0' TERM; sleep 5; : {}",
        ":::",
        "a",
    ]);
    same_as_gnu(&["--halt", "now,fail=1", "echo {= skip() =}", ":::", "a"]);
    // Killed by the timeout: 255; killed by a signal of its own: 128 + it.
    same_as_gnu(&[
        "--timeout",
        "0.2",
        "--halt",
        "now,fail=1",
        "sleep 5; : {}",
        ":::",
        "a",
    ]);
    same_as_gnu(&["--halt", "now,fail=1", "kill -TERM $$; : {}", ":::", "a"]);
    let o = run(&["--roundrobin", "--retries", "2", "wc"]);
    assert_eq!(o.status.code(), Some(255));
    let line = [vec![b'y'; 99], vec![b'\n']].concat();
    let input: Vec<u8> = line.repeat((3 << 20) / 100);
    let t = Instant::now();
    let o = run_with_stdin_output(&["--pipe", "--block", "1M", "sleep 3 <&0 & echo x"], &input);
    assert!(o.status.success());
    let out = stdout(&o);
    assert!(
        out.lines().count() >= 3 && out.lines().all(|l| l == "x"),
        "{out}"
    );
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
    let o = run(&["--dry-run", "echo", "{= die 'no' =}", ":::", "a"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("died: no"));
    let o = run(&[
        "-k",
        "echo",
        "{= die \"\\x{263a}\" if /a/; $_ = \"\\x{263a}\" =}",
        ":::",
        "a",
        "b",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "☺\n");
}

/// The adversary for "never hangs, leaves nothing behind" on `--pipe`'s
/// ways of feeding jobs: 48 runs drawn from a seed (`EDGES_SEED` replays
/// one) combine `--pipe`, `--roundrobin`, `--fifo`, `--cat`, `-k`,
/// `--line-buffer`, `--halt now,fail=1`, `--timeout`, `-j1..4` and jobs
/// that read all, part or none of their input, fail, or outlive their
/// timeout. Each must end within a minute with a status in 0..=101 or
/// 255, and leave no file in its `--tmpdir`.
#[test]
fn random_pipe_feeding_never_hangs_or_leaves_files() {
    let (seed, mut next) = seeded("EDGES_SEED", 0x9e37_79b9_7f4a_7c15);
    let input: String = (1..=30_000).map(|i| format!("{i}\n")).collect();
    let jobs = [
        "cat > /dev/null",
        "head -c 10 > /dev/null",
        "true",
        "exit 1",
        "wc -l",
        "sleep 0.3; cat > /dev/null",
    ];
    for run_no in 0..48 {
        let dir = scratch(&format!("edges-random-{run_no}"));
        let tmp = dir.to_str().unwrap().to_owned();
        let mut args: Vec<String> = vec![
            "--tmpdir".into(),
            tmp.clone(),
            "--block".into(),
            "20k".into(),
        ];
        let feeding = next(4);
        args.push(["--pipe", "--roundrobin", "--pipe", "--pipe"][feeding as usize].into());
        let files = match (feeding, next(3)) {
            (0 | 2 | 3, 0) => Some("--fifo"),
            (0 | 2 | 3, 1) => Some("--cat"),
            _ => None,
        };
        args.extend(files.map(String::from));
        for (flag, odds) in [("-k", 2), ("--line-buffer", 3)] {
            if next(odds) == 0 {
                args.push(flag.into());
            }
        }
        if next(4) == 0 {
            args.extend(["--halt".into(), "now,fail=1".into()]);
        }
        if next(4) == 0 {
            args.extend(["--timeout".into(), "0.2".into()]);
        }
        args.push(format!("-j{}", 1 + next(4)));
        let job = jobs[next(jobs.len() as u64) as usize];
        let job = match files {
            // The block is in the file `{}` names.
            Some(_) => job
                .replace("cat > /dev/null", "cat {} > /dev/null")
                .replace("head -c 10 > /dev/null", "head -c 10 {} > /dev/null"),
            None => job.to_owned(),
        };
        args.push(job);
        let case: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run_with_stdin_output(&case, input.as_bytes());
        let code = o.status.code();
        assert!(
            matches!(code, Some(0..=101) | Some(255)),
            "seed {seed}, run {run_no}: {case:?} ended with {:?}",
            o.status
        );
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(
            left.is_empty(),
            "seed {seed}, run {run_no}: {case:?} left {left:?}"
        );
    }
}
