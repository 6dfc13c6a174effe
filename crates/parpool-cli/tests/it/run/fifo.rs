//! `--pipe --fifo`: each block through a named pipe named by `{}`.

use super::*;

/// The jobs read their blocks from the fifo `{}` names, as with GNU
/// parallel; a job that never opens its fifo does not hang the run (GNU
/// parallel's would); no fifo is left behind.
#[test]
fn fifo_blocks_reach_the_jobs_and_nothing_is_left() {
    let d = scratch("fifo");
    let input: String = (1..=10).map(|i| format!("{i}\n")).collect();
    same_as_gnu_with_stdin(
        &["--pipe", "--fifo", "-N3", "-k", "wc -l < {}"],
        input.as_bytes(),
        &d,
    );
    let tmp = d.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let tmp_arg = tmp.to_str().unwrap();
    let out = run_with_stdin_output(
        &[
            "--pipe",
            "--fifo",
            "-N3",
            "-k",
            "--tmpdir",
            tmp_arg,
            "test -p {} && cat {}",
        ],
        input.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), input);
    let mut child = parpool()
        .args([
            "run", "--pipe", "--fifo", "-N3", "--tmpdir", tmp_arg, "true",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let status =
        wait_within(&mut child, Duration::from_secs(60)).expect("a fifo nobody read hung the run");
    assert!(status.success());
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "a fifo was left"
    );
}
