//! `--results` trees and tables, against GNU parallel.

use super::*;

/// Every file under `dir`, with its contents, sorted.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                out.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// A table's bytes with its start times and run times blanked.
fn without_times(bytes: &[u8]) -> String {
    blank_times(&String::from_utf8_lossy(bytes))
}

/// `text` with start times (10 digits, a dot and 3) and run times
/// (`0.NNN`) written `T`.
fn blank_times(text: &str) -> String {
    let mut out = String::new();
    for field in text.split_inclusive([',', '\t', ' ']) {
        let core = field.trim_end_matches([',', '\t', ' ']);
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let timeish = core.split_once('.').is_some_and(|(a, b)| {
            digits(a) && b.len() == 3 && digits(b) && (a.len() == 10 || a == "0")
        });
        if timeish {
            out.push('T');
            out.push_str(&field[core.len()..]);
        } else {
            out.push_str(field);
        }
    }
    out
}

/// `--results DIR`: the same tree (names by source number, or by
/// `--header` name; records of `-N`; `\`, tab and `/` escaped) and the
/// same files as GNU parallel's; `.csv`, `.tsv`, `.json` and `-.csv`
/// tables with the same rows but for times.
#[test]
fn results_trees_and_tables_match_gnu_parallel() {
    if gnu().is_none() {
        return;
    }
    let dir = scratch("results-gnu");
    let trees: &[&[&str]] = &[
        &["--header", ":", "echo", "{a}", ":::", "a", "1", "2"],
        &["-N2", "echo", ":::", "a", "b", "c", "d"],
        &["echo", ":::", "a\\b", "x\ty", "p/q", ":::", "1"],
    ];
    for (n, case) in trees.iter().enumerate() {
        let (ours, theirs) = (dir.join(format!("ours{n}")), dir.join(format!("gnu{n}")));
        let with = |out: &Path| {
            let mut c = vec!["--results", out.to_str().unwrap()];
            c.extend_from_slice(case);
            c.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        };
        let (o, t) = both(&mut gnu_cmd(), &with(&theirs), &with(&ours), |_| {});
        assert_eq!(o.status.code(), t.status.code(), "{case:?}");
        assert!(o.stdout.is_empty() && t.stdout.is_empty(), "{case:?}");
        assert_eq!(tree(&ours), tree(&theirs), "{case:?}");
    }
    for ext in ["csv", "tsv", "json"] {
        for header in [false, true] {
            let (ours, theirs) = (
                dir.join(format!("ours.{ext}")),
                dir.join(format!("gnu.{ext}")),
            );
            let with = |out: &Path| {
                let mut c = vec![
                    "-k".to_string(),
                    "--results".into(),
                    out.display().to_string(),
                ];
                if header {
                    c.extend(["--header".into(), ":".into()]);
                }
                c.extend(
                    [
                        "echo {}; echo err >&2",
                        ":::",
                        "h",
                        "x,y",
                        "q\"z",
                        "a b",
                        ":::",
                        "g",
                        "1",
                    ]
                    .map(String::from),
                );
                c
            };
            let (o, t) = both(&mut gnu_cmd(), &with(&theirs), &with(&ours), |_| {});
            assert_eq!(o.status.code(), t.status.code());
            assert_eq!(o.stdout, t.stdout);
            let read = |p: &Path| without_times(&std::fs::read(p).unwrap());
            assert_eq!(read(&ours), read(&theirs), "{ext} header={header}");
        }
    }
    let (o, t) = both(
        &mut gnu_cmd(),
        &["-k", "--results", "-.csv", "echo", ":::", "a", "b"],
        &["-k", "--results", "-.csv", "echo", ":::", "a", "b"],
        |_| {},
    );
    assert_eq!(without_times(&o.stdout), without_times(&t.stdout));
}
