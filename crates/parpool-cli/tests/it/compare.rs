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
    let o = compare(&["--quick", "--json"]);
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
        assert_eq!(models, ["sequential", "threads", "processes", "async"]);
        let sequential = results[0]["seconds"].as_f64().unwrap();
        let mut fastest = ("", f64::INFINITY);
        for r in results {
            let secs = r["seconds"].as_f64().unwrap();
            assert!(secs > 0.0);
            let speedup = r["speedup"].as_f64().unwrap();
            assert!((speedup - sequential / secs).abs() < 1e-6 * speedup.max(1.0));
            assert!(r["peak_mib"].as_f64().unwrap() > 0.0);
            assert!(r["cpu_percent"].as_f64().unwrap() >= 0.0);
            if secs < fastest.1 {
                fastest = (r["model"].as_str().unwrap(), secs);
            }
        }
        assert_eq!(w["winner"].as_str().unwrap(), fastest.0);
        assert!(w["verdict"].as_str().unwrap().contains("sequential"));
    }
    // Waiting jobs overlap on threads: the I/O workload must show it.
    let io = &workloads[1]["results"].as_array().unwrap()[1];
    assert!(io["speedup"].as_f64().unwrap() > 4.0, "{io}");
}

#[test]
fn text_output_is_a_table_per_workload() {
    let o = compare(&["--quick"]);
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    assert_eq!(text.matches("verdict: ").count(), 4);
    assert_eq!(text.matches("peak memory").count(), 4);
    for model in ["sequential", "ThreadPool", "ProcessPool", "async (tokio)"] {
        assert!(text.matches(model).count() >= 4, "{model}");
    }
}
