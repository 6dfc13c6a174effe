//! Several inputs a job (`-X`, `-m`, `-n`, `-s`) and the command line's
//! length limit, against GNU parallel.

use super::*;

/// GNU parallel's output for `args` with `input` on stdin, if it is here.
fn gnu_with_stdin(args: &[&str], input: &[u8]) -> Option<Output> {
    let mut gnu = gnu()?;
    gnu.args(args);
    Some(fed(gnu, input))
}

/// `-X` and `-m` fill each job's command line up to GNU parallel's
/// length (63664 bytes) and spread what is left at the end over the
/// slots: the same jobs, byte for byte, as GNU parallel runs, from
/// 100,000 inputs on stdin; `-s` sets a shorter length.
#[test]
fn several_inputs_a_job_are_packed_as_gnu_parallel_packs_them() {
    let input: String = (1..=100_000).map(|i| format!("{i}\n")).collect();
    let cases: &[&[&str]] = &[
        &["-k", "-X", "echo"],
        &["-k", "-m", "-j4", "echo"],
        &["-k", "-X", "echo", "x{}y"],
        &["-k", "-X", "-n", "30000", "echo"],
        &["-k", "-n", "700", "echo"],
        &["-k", "-X", "-s", "200", "echo"],
    ];
    for case in cases {
        let Some(theirs) = gnu_with_stdin(case, input.as_bytes()) else {
            return;
        };
        let ours = run_with_stdin_output(case, input.as_bytes());
        assert_eq!(ours.status.code(), Some(0), "{case:?}");
        assert!(
            ours.stdout == theirs.stdout,
            "{case:?}: {} jobs here, {} with GNU parallel",
            ours.stdout.split(|&b| b == b'\n').count(),
            theirs.stdout.split(|&b| b == b'\n').count()
        );
    }
}

/// A command line over the limit is refused in GNU parallel's words,
/// exit 255: before any job runs when the inputs are on the command
/// line; from stdin, the jobs before it run and none after.
#[test]
fn a_command_line_too_long_is_refused() {
    let long = "a".repeat(70_000);
    let o = run(&["echo", ":::", "first", &long, "last"]);
    assert_eq!(o.status.code(), Some(255));
    assert!(o.stdout.is_empty(), "{}", stdout(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "Command line too long (70005 >= 63664) at input 0: {}...",
            "a".repeat(50)
        )),
        "{err}"
    );
    let input = format!("first\n{long}\nlast\n");
    let o = run_with_stdin_output(&["-j1", "echo"], input.as_bytes());
    assert_eq!(o.status.code(), Some(255));
    assert_eq!(stdout(&o), "first\n");
    if let Some(theirs) = gnu_with_stdin(&["-j1", "echo"], input.as_bytes()) {
        assert_eq!(theirs.status.code(), Some(255));
        assert_eq!(String::from_utf8_lossy(&theirs.stdout), "first\n");
    }
}
