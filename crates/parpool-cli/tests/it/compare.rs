//! `parpool compare`, end to end.

use std::process::Command;

fn compare(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_parpool"))
        .arg("compare")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn json_has_every_workload_on_every_model_with_a_verdict() {
    let o = compare(&["--quick", "--json", "--repeat", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["cores"].as_u64().unwrap() >= 1);
    let workloads = v["workloads"].as_array().unwrap();
    let kinds: Vec<&str> = workloads
        .iter()
        .map(|w| w["workload"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["cpu", "io", "mixed", "tiny"]);
    for w in workloads {
        let results = w["results"].as_array().unwrap();
        let models: Vec<&str> = results
            .iter()
            .map(|r| r["model"].as_str().unwrap())
            .collect();
        // The table's names.
        assert_eq!(
            models,
            ["sequential", "ThreadPool", "ProcessPool", "async (tokio)"]
        );
        assert!(!w["title"].as_str().unwrap().is_empty());
        let sequential = results[0]["seconds"].as_f64().unwrap();
        let mut fastest = ("", f64::INFINITY);
        for r in results {
            let secs = r["seconds"].as_f64().unwrap();
            assert!(secs > 0.0);
            let (lo, hi) = (
                r["min_seconds"].as_f64().unwrap(),
                r["max_seconds"].as_f64().unwrap(),
            );
            assert!(lo <= secs && secs <= hi, "{r}");
            let speedup = r["speedup"].as_f64().unwrap();
            assert!((speedup - sequential / secs).abs() < 1e-6 * speedup.max(1.0));
            assert!(r["peak_mib"].as_f64().unwrap() > 0.0);
            assert!(r["cpu_percent"].as_f64().unwrap() >= 0.0);
            if secs < fastest.1 {
                fastest = (r["model"].as_str().unwrap(), secs);
            }
        }
        assert_eq!(w["fastest"].as_str().unwrap(), fastest.0);
        let verdict = w["verdict"].as_str().unwrap();
        // A winner is named only when no other model is within its spread.
        let tied = w["tied_with"].as_array().unwrap();
        assert_eq!(
            verdict.starts_with("tie between"),
            !tied.is_empty(),
            "{verdict}"
        );
        assert!(verdict.contains("sequential"), "{verdict}");
    }
    // Waiting jobs overlap on threads: the I/O workload must show it.
    assert_eq!(v["repeat"].as_u64(), Some(2));
    // (Its fastest repetition: the others may meet a busy machine.)
    let io = workloads[1]["results"].as_array().unwrap();
    let sequential = io[0]["seconds"].as_f64().unwrap();
    let threads = io[1]["min_seconds"].as_f64().unwrap();
    assert!(sequential / threads > 4.0, "{:?}", io[1]);
}

#[test]
fn text_output_is_a_table_per_workload() {
    let o = compare(&["--quick", "--repeat", "1"]);
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    assert_eq!(text.matches("verdict: ").count(), 4);
    assert_eq!(text.matches("peak memory").count(), 4);
    for title in [
        "CPU-bound:",
        "Waits like I/O:",
        "Computes, then waits:",
        "Tiny jobs:",
    ] {
        assert!(text.contains(title), "{title}");
    }
    for model in ["sequential", "ThreadPool", "ProcessPool", "async (tokio)"] {
        assert!(text.matches(model).count() >= 4, "{model}");
    }
}

/// `compare -- CMD ::: INPUTS`: the user's own command at several numbers
/// of jobs at once; jobs that only wait are fastest with more at once
/// than there are cores, and the verdict says so.
#[test]
fn a_users_own_command_is_timed_at_several_levels() {
    let o = compare(&[
        "--json",
        "--repeat",
        "2",
        "--",
        "sleep 0.2; echo {}",
        ":::",
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "7",
        "8",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let results = v["results"].as_array().unwrap();
    let labels: Vec<&str> = results
        .iter()
        .map(|r| r["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels.first(), Some(&"one at a time (-j 1)"));
    assert_eq!(labels.last(), Some(&"all at once (-j 0)"));
    let one = results[0]["seconds"].as_f64().unwrap();
    assert!(one >= 1.6, "8 × 0.2 s one at a time took {one}");
    let cores = v["cores"].as_u64().unwrap() as usize;
    let fastest = v["fastest"].as_str().unwrap();
    let jobs = results.iter().find(|r| r["label"] == fastest).unwrap()["jobs"]
        .as_u64()
        .unwrap() as usize;
    assert!(
        jobs == 0 || jobs > cores.min(8).saturating_sub(1),
        "{fastest} on {cores} cores"
    );
    assert!(
        v["verdict"].as_str().unwrap().contains("wait"),
        "{}",
        v["verdict"]
    );
    // Without inputs: a clear error.
    let o = compare(&["--", "echo", "x"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains(":::"));
}
