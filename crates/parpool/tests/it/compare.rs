//! `parpool::compare`: the user's function timed every way, the outputs
//! checked against the sequential run's, a verdict only beyond the spread.

use parpool::compare::{Compare, CompareError, Measurement, Model, rank};

parpool::task!(
    /// The function below, as a task a worker process runs.
    fn spin_task(n: u64) -> u64 {
        spin(n)
    }
);

fn spin(n: u64) -> u64 {
    (0..n * 2000).fold(0u64, |a, x| a.wrapping_add(x.wrapping_mul(x)))
}

/// With a task and an async version, all four ways are measured, in
/// order; each row's figures hold together and the table shows them all
/// with the verdict.
#[test]
fn every_way_is_measured_and_the_table_names_them() {
    let report = Compare::new(1..=40u64, spin)
        .task(spin_task)
        .async_fn(|n| async move { spin(n) })
        .workers(2)
        .repeat(2)
        .run()
        .unwrap();
    let models: Vec<Model> = report.measurements().iter().map(|m| m.model).collect();
    assert_eq!(
        models,
        [
            Model::Sequential,
            Model::Threads,
            Model::Processes,
            Model::Async
        ]
    );
    for m in report.measurements() {
        assert!(
            m.min_seconds <= m.seconds && m.seconds <= m.max_seconds,
            "{m:?}"
        );
        assert!(m.speedup > 0.0 && m.peak_mib > 0.0, "{m:?}");
    }
    assert_eq!(report.measurements()[0].speedup, 1.0);
    assert!(models.contains(&report.fastest()));
    assert!(!report.tied_with().contains(&report.fastest()));
    let text = report.to_string();
    for label in [
        "sequential",
        "ThreadPool",
        "ProcessPool",
        "async (tokio)",
        "verdict:",
    ] {
        assert!(text.contains(label), "{text}");
    }
    match report.winner() {
        Some(w) => assert!(report.verdict().starts_with(&format!("{w} wins"))),
        None => assert!(report.verdict().starts_with("tie between")),
    }
}

/// A way that computes something else than the sequential run is an
/// error that names it and the input, not a timing.
#[test]
fn a_way_that_computes_otherwise_is_caught() {
    let main = std::thread::current().id();
    let err = Compare::new(0..8u64, move |x| {
        x + u64::from(std::thread::current().id() != main)
    })
    .repeat(1)
    .run()
    .unwrap_err();
    assert!(
        matches!(
            err,
            CompareError::Mismatch {
                model: Model::Threads,
                index: 0
            }
        ),
        "{err}"
    );
    // A job that panics: the way cannot be timed.
    let err = Compare::new(0..4u64, |x| if x == 3 { panic!("three") } else { x })
        .repeat(1)
        .run()
        .unwrap_err();
    assert!(err.to_string().contains("three"), "{err}");
    assert!(matches!(
        Compare::new(Vec::<u64>::new(), |x| x).run(),
        Err(CompareError::Empty)
    ));
}

/// The fastest by median wins only when its slowest run beats the
/// others' fastest (and by more than 3%); otherwise they tie.
#[test]
fn a_lead_within_the_spread_is_a_tie() {
    let m = |model, seconds: f64, lo: f64, hi: f64| Measurement {
        model,
        workers: 2,
        seconds,
        min_seconds: lo,
        max_seconds: hi,
        speedup: 1.0,
        cpu_percent: 100.0,
        peak_mib: 1.0,
    };
    let results = [
        m(Model::Sequential, 1.0, 1.0, 1.0),
        m(Model::Threads, 0.5, 0.45, 0.62),
        m(Model::Async, 0.58, 0.55, 0.7),
    ];
    assert_eq!(rank(&results), Some((Model::Threads, vec![Model::Async])));
    let results = [
        m(Model::Sequential, 1.0, 1.0, 1.0),
        m(Model::Threads, 0.5, 0.45, 0.52),
        m(Model::Async, 0.58, 0.55, 0.7),
    ];
    assert_eq!(rank(&results), Some((Model::Threads, vec![])));
    let one = Measurement::median(vec![
        m(Model::Threads, 0.3, 0.3, 0.3),
        m(Model::Threads, 0.9, 0.9, 0.9),
        m(Model::Threads, 0.5, 0.5, 0.5),
    ])
    .unwrap();
    assert_eq!(
        (one.seconds, one.min_seconds, one.max_seconds),
        (0.5, 0.3, 0.9)
    );
    assert_eq!(rank(&[]), None);
}
