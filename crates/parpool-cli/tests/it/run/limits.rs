//! `--memfree`, `--load`, `--noswap`, `--progress` and `--eta`.

use super::*;

/// Limits the machine meets change nothing (the same output as GNU
/// parallel's); one it cannot meet holds every job back until an
/// interrupt ends the run (255, nothing ran); a bad value is a usage
/// error.
#[test]
fn memory_load_and_swap_limits_hold_jobs_back() {
    same_as_gnu(&[
        "-k",
        "--memfree",
        "1k",
        "--load",
        "1000",
        "--noswap",
        "echo",
        ":::",
        "a",
        "b",
    ]);
    let dir = scratch("memfree");
    let marker = dir.join("ran");
    let mut child = parpool()
        .args([
            "run",
            "--memfree",
            "1000T",
            "touch",
            marker.to_str().unwrap(),
        ])
        .args([":::", "a"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "the run did not wait");
    assert!(!marker.exists(), "a job started without the memory");
    interrupt(&child);
    let status = wait_within(&mut child, Duration::from_secs(30)).expect("no exit after SIGINT");
    assert_eq!(status.code(), Some(255));
    assert!(!marker.exists());
    for bad in [&["--memfree", "lots"][..], &["--load", "x"]] {
        let mut args = bad.to_vec();
        args.extend(["echo", ":::", "a"]);
        let o = run(&args);
        assert_eq!(o.status.code(), Some(255), "{bad:?}");
        assert!(o.stdout.is_empty());
    }
}

/// `--progress` and `--eta` write GNU parallel's header and status line
/// on stderr and leave stdout as it is.
#[test]
fn progress_and_eta_report_on_stderr() {
    for option in ["--progress", "--eta"] {
        let o = run(&["-k", "-j2", option, "echo", ":::", "a", "b", "c"]);
        assert_eq!(o.status.code(), Some(0));
        assert_eq!(stdout(&o), "a\nb\nc\n");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("Computers / CPU cores / Max jobs to run\n1:local / "),
            "{err}"
        );
        assert!(err.contains(" / 2\n"), "{err}");
        let last = err.rsplit('\r').next().unwrap();
        assert!(last.contains("local:0/3/100%/"), "{err:?}");
        assert_eq!(
            last.starts_with("ETA: 0s Left: 0 AVG: "),
            option == "--eta",
            "{err:?}"
        );
    }
}

/// `-j FILE`: the number of jobs at once is read from FILE (as GNU
/// parallel reads it), and read again when a job ends and FILE changed.
#[test]
fn jobs_at_once_are_read_from_a_file_again_as_it_changes() {
    let dir = scratch("jobs-file");
    let procs = dir.join("procs");
    std::fs::write(&procs, "1\n").unwrap();
    let procs_arg = procs.to_str().unwrap();
    same_as_gnu(&["-k", "-j", procs_arg, "echo {%}", ":::", "a", "b", "c"]);
    // One at a time while the file says 1; two once it says 2 and a job
    // has ended since.
    let gate = dir.join("gate");
    let script = format!(
        "if [ {{}} = 1 ]; then while [ ! -e {} ]; do sleep 0.01; done; fi; sleep 0.2; echo {{#}}:{{%}}",
        gate.display()
    );
    let child = parpool()
        .args([
            "run", "-k", "-j", procs_arg, &script, ":::", "1", "2", "3", "4", "5",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&procs, "2\n").unwrap();
    std::fs::write(&gate, "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let slots: Vec<&str> = text.lines().map(|l| l.split(':').nth(1).unwrap()).collect();
    assert_eq!(slots[0], "1", "{text}");
    assert!(slots.contains(&"2"), "the new number was not read: {text}");
    assert!(slots.iter().all(|s| *s == "1" || *s == "2"), "{text}");
}
