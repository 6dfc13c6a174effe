//! Output order: `-k` with `--line-buffer`, against GNU parallel.

use super::*;

/// `-k --line-buffer`: the oldest running job's lines pass on as they
/// come (job 1's first line arrives while it still waits), the later
/// jobs' are held and printed in input order after it, as GNU parallel
/// does; the same bytes as GNU parallel's, tags included.
#[test]
fn keep_order_with_line_buffer_streams_the_oldest_job_only() {
    let dir = scratch("keep-order-line-buffer");
    let gate = dir.join("gate");
    let script = format!(
        "if [ $1 = 1 ]; then echo 1-a; while [ ! -e {} ]; do sleep 0.01; done; fi; echo $1-b",
        gate.display()
    );
    let mut child = parpool()
        .args(["run", "-k", "--lb", "-j3", "-q", "sh", "-c", &script, "sh"])
        .args([":::", "1", "2", "3"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    // Should the line be held, the gate opens anyway after 30 s, and the
    // test fails instead of hanging.
    let opener = gate.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(30));
        let _ = std::fs::write(opener, "");
    });
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    // Job 1 is still waiting for the gate: its line came as it wrote it.
    assert!(!gate.exists(), "job 1's first line was held until it ended");
    assert_eq!(first, "1-a\n");
    std::fs::write(&gate, "").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(rest, "1-b\n2-b\n3-b\n");

    for case in [
        &[
            "-k",
            "--lb",
            "echo {}-a; sleep 0.{}; echo {}-b",
            ":::",
            "3",
            "1",
            "2",
        ][..],
        &[
            "-k",
            "--lb",
            "--tag",
            "echo {}-a; sleep 0.{}; echo {}-b",
            ":::",
            "3",
            "1",
            "2",
        ],
    ] {
        same_as_gnu(case);
    }
}
