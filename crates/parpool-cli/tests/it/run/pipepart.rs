//! `--pipepart`: a file's parts, cut as GNU parallel cuts them.

use super::*;

/// The same parts as GNU parallel's, byte for byte (each part's line
/// count and first line, in order), for default and given block sizes,
/// records by --recstart, `-a FILE` or `:::: FILE`, with --cat and
/// --fifo; what it cannot do is refused (255) before anything runs.
#[test]
fn parts_match_gnu_parallel_s() {
    let dir = scratch("pipepart");
    let file = dir.join("input");
    let text: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
    std::fs::write(&file, &text).unwrap();
    let f = file.to_str().unwrap();
    let each = "echo $(wc -l) lines";
    let cases: &[&[&str]] = &[
        &["-k", "--pipepart", "-a", f, each],
        &["-k", "-j3", "--pipepart", "-a", f, each],
        &["-k", "--pipepart", "--block", "100k", "-a", f, each],
        &["-k", "--pipepart", "--block", "1k", "-a", f, "head -n 1"],
        &[
            "-k",
            "--pipepart",
            "--recstart",
            "5",
            "--recend",
            "\n",
            "--block",
            "50k",
            "-a",
            f,
            "head -n 1",
        ],
        &["-k", "--pipepart", "--block", "300k", each, "::::", f],
        &[
            "-k",
            "--pipepart",
            "--cat",
            "--block",
            "300k",
            "-a",
            f,
            "wc -l < {}",
        ],
        &[
            "-k",
            "--pipepart",
            "--fifo",
            "--block",
            "300k",
            "-a",
            f,
            "wc -l < {}",
        ],
    ];
    for case in cases {
        same_as_gnu(case);
    }
    for bad in [
        &["--pipepart", "wc", "-l"][..],
        &["--pipepart", "-N", "2", "-a", f, "wc", "-l"],
        &["--pipepart", "-a", f, "-a", f, "wc", "-l"],
        &["--pipepart", "wc", "-l", "::::", "/no/such/file"],
    ] {
        let o = run(bad);
        assert_eq!(o.status.code(), Some(255), "{bad:?}");
        assert!(o.stdout.is_empty(), "{bad:?}");
    }
}

/// `--pipe`: a record longer than the block grows the block for good, as
/// GNU parallel grows it (by 30% and a byte), with GNU's warning: the
/// same jobs as GNU parallel's.
#[test]
fn a_record_longer_than_the_block_grows_it_for_good() {
    let d = scratch("pipe-grow");
    let input = b"aaaaaaaaaaaaaaaaaaaaaaaa\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\n";
    same_as_gnu_with_stdin(&["--pipe", "--block", "3", "-k", "wc", "-c"], input, &d);
    let o = run_with_stdin_output(&["--pipe", "--block", "3", "-k", "wc", "-c"], input);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Warning: A record was longer than 3. Increasing to --blocksize 5."),
        "{err}"
    );
}

/// `--roundrobin`: one job a slot, the blocks dealt to them in turn, the
/// same blocks to the same jobs as GNU parallel's; jobs that stop
/// reading early leave the round without hanging the others.
#[test]
fn roundrobin_deals_blocks_as_gnu_parallel_does() {
    let d = scratch("roundrobin");
    let ten: String = (1..=10).map(|i| format!("{i}\n")).collect();
    let many: String = (1..=100_000).map(|i| format!("{i}\n")).collect();
    same_as_gnu_with_stdin(
        &[
            "--pipe",
            "--roundrobin",
            "-j2",
            "--block",
            "4",
            "-k",
            "echo {#} {%}; cat",
        ],
        ten.as_bytes(),
        &d,
    );
    same_as_gnu_with_stdin(
        &[
            "--pipe",
            "--roundrobin",
            "-j3",
            "--block",
            "10k",
            "-k",
            "wc",
            "-l",
        ],
        many.as_bytes(),
        &d,
    );
    same_as_gnu_with_stdin(
        &[
            "--pipe",
            "--roundrobin",
            "-j4",
            "--block",
            "2",
            "-k",
            "wc",
            "-l",
        ],
        b"1\n2\n3\n",
        &d,
    );
    let o = run_with_stdin_output(
        &["--roundrobin", "-j3", "-k", "--block", "10k", "head -n 1"],
        many.as_bytes(),
    );
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "1\n2222\n4222\n");
}
