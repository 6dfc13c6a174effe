//! `{= perl =}` replacement strings and `--rpl`, against GNU parallel.

use super::*;

/// Every expression form GNU parallel's manual shows gives what GNU
/// parallel gives: `$_`, positions, `@arg`, `$job`, `uq()`, `Q()`,
/// `skip()`, state kept from job to job, `--rpl` with and without
/// groups, `--plus`'s perl-defined strings, in tags and dry runs.
#[test]
fn perl_expressions_match_gnu_parallel() {
    let cases: &[&[&str]] = &[
        &["-k", "echo", "{= s/a/b/ =}", ":::", "a", "ca", "x y"],
        &[
            "-k",
            "echo",
            "{= $_=$arg[1] =}",
            ":::",
            "a",
            "b",
            ":::",
            "c",
            "d",
        ],
        &[
            "-k",
            "echo",
            "{=2 s/c/X/ =}",
            ":::",
            "a",
            "b",
            ":::",
            "c",
            "d",
        ],
        &[
            "-k",
            "echo",
            "{=-1 $_.='z' =}",
            "{=1 $_=\"<$_>\" =}",
            ":::",
            "a",
            ":::",
            "c",
        ],
        &["-k", "-N2", "echo", "{= $_.='!' =}", ":::", "a", "b", "c"],
        &["-k", "echo", "{= $a++; $_=$a =}", ":::", "a", "b", "c"],
        &["-k", "echo", "{= uq() =}", ":::", "a b", "c;echo d"],
        &["-k", "echo", "{= $_=Q($_) =}", ":::", "x y", "it's"],
        &[
            "-k",
            "-j1",
            "echo",
            "{= $_=$job->seq().':'.seq().':'.slot().':'.total_jobs() =}",
            ":::",
            "a",
            "b",
        ],
        &["-k", "-X", "echo", "{= s/a/A/ =}", ":::", "a", "b", "ab"],
        &[
            "-j1",
            "-N2",
            "echo",
            "{= $_=scalar(@arg).':'.$arg[1].':'.$arg[2] =}",
            ":::",
            "a",
            "b",
        ],
        &[
            "-k",
            "echo",
            "{=",
            "s/a/b/",
            "=}",
            "{= $_=\"x y\" =}",
            ":::",
            "a",
        ],
        &["-q", "echo", "{= $_=\"a b\" =}", ":::", "x"],
        &[
            "-k",
            "echo",
            "pre{= s/x/y z/ =}post",
            "{= $_ = undef =}x",
            ":::",
            "x",
        ],
        &["-k", "echo {= $_ = 'a;b' =} {}", ":::", "x"],
        &["-k", "--tag", "echo", "{= s/x/y/ =}", ":::", "x"],
        &["-k", "--tagstring", "{= s/x/T/ =}", "echo", ":::", "x"],
        &[
            "-j1",
            "--tag",
            "echo",
            "{= skip() if /b/ =}",
            ":::",
            "a",
            "b",
            "c",
        ],
        &[
            "--dry-run",
            "-j1",
            "echo",
            "{= skip() if /b/ =}",
            ":::",
            "a",
            "b",
            "c",
        ],
        &[
            "--rpl",
            "{r} s/x/R/",
            "-k",
            "echo",
            "{r}",
            "{2r}",
            ":::",
            "x",
            ":::",
            "xx",
        ],
        &[
            "--rpl",
            "{/(.+?)/(.*?)} s/$$1/$$2/g;",
            "-k",
            "echo",
            "{/a/b}",
            "{/an/}",
            ":::",
            "banana",
        ],
        &[
            "--rpl",
            "{..} s:\\.[^.]+$::;s:\\.[^.]+$::;",
            "echo",
            "{..}",
            ":::",
            "a.tar.gz",
        ],
        &[
            "--plus",
            "-k",
            "echo",
            "{choose_k}",
            ":::",
            "A",
            "B",
            "C",
            ":::",
            "A",
            "B",
            "C",
        ],
        &[
            "--plus", "-k", "echo", "{uniq}", ":::", "A", "B", ":::", "A", "B",
        ],
        &["--plus", "-j3", "echo", "{0%}", ":::", "A"],
    ];
    for case in cases {
        same_as_gnu(case);
    }
}

/// A skipped job is in the joblog with exit -2 and counts as failed, as
/// in GNU parallel; the others run.
#[test]
fn skip_logs_minus_two_and_counts_as_failed() {
    let dir = scratch("perl-skip");
    let log = dir.join("log");
    let o = run(&[
        "-j1",
        "--joblog",
        log.to_str().unwrap(),
        "echo",
        "{= skip() if /b/ =}",
        ":::",
        "a",
        "b",
        "c",
    ]);
    assert_eq!(stdout(&o), "a\nc\n");
    assert_eq!(o.status.code(), Some(1));
    let log = std::fs::read_to_string(&log).unwrap();
    let exits: Vec<&str> = log
        .lines()
        .skip(1)
        .map(|l| l.split('\t').nth(6).unwrap())
        .collect();
    assert_eq!(exits, ["0", "-2", "0"], "{log}");
}

/// Perl's state lives for the run and jobs are evaluated in the order
/// they start: a counter equals the job number in every one of 500 jobs
/// on 8 slots of random length.
#[test]
fn expressions_are_evaluated_once_per_job_in_start_order() {
    let inputs: Vec<String> = (0..500).map(|i| format!("{}", i % 7)).collect();
    let mut args = vec!["-j8", "echo {#} {= $n++; $_ = $n =}; sleep 0.00{}", ":::"];
    args.extend(inputs.iter().map(String::as_str));
    let o = run(&args);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 500);
    for line in out.lines() {
        let (seq, n) = line.split_once(' ').unwrap();
        assert_eq!(seq, n, "{out}");
    }
}

/// Code perl cannot compile stops the run before any job, with perl's
/// words and GNU parallel's; without perl, a clear error; both 255.
#[test]
fn bad_perl_and_missing_perl_are_refused_before_anything_runs() {
    let dir = scratch("perl-refused");
    let marker = dir.join("ran");
    let cmd = format!("touch {} {{= s/a/ =}}", marker.display());
    let o = run(&[&cmd, ":::", "a"]);
    assert_eq!(o.status.code(), Some(255));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Cannot use s/a/ : Substitution replacement not terminated"),
        "{err}"
    );
    assert!(!marker.exists());

    let empty = dir.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let o = parpool()
        .env("PATH", &empty)
        .args(["run", "/bin/echo", "{= s/a/b/ =}", ":::", "a"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(255));
    assert!(o.stdout.is_empty());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("need `perl`"), "{err}");
}
