//! ProcessPool: round trips through real worker processes.

use std::time::Duration;

use parpool::{Executor, JobError, ProcessPool, Task};

parpool::task!(
    fn double(x: u64) -> u64 {
        x * 2
    }
);
parpool::task!(
    fn whoami(_x: ()) -> u32 {
        std::process::id()
    }
);

#[test]
fn a_job_runs_in_another_process() {
    let pool = ProcessPool::builder().workers(2).build().unwrap();
    assert_eq!(pool.submit(double, 21).join(), Ok(42));
    let pid = pool.submit(whoami, ()).join().unwrap();
    assert_ne!(pid, std::process::id(), "the job ran in a worker process");
    assert!(pool.worker_pids().contains(&pid));
    let out: Vec<u64> = pool
        .map_task(double, 0..1000)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(out, (0..1000).map(|x| x * 2).collect::<Vec<_>>());
    pool.shutdown();
    assert_eq!(pool.submit(double, 1).join(), Err(JobError::Shutdown));
    let _ = Duration::ZERO;
}

#[test]
fn big_frames_both_ways_do_not_deadlock_the_pipeline() {
    // Automatic chunking starts with tiny chunks (the pipeline deepens),
    // then sends chunks of tens of thousands of items: frames of hundreds
    // of KiB in both directions while many are in flight.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let total: u64 = pool
            .map_task(double, 0..1_000_000u64)
            .map(Result::unwrap)
            .sum();
        let _ = tx.send(total);
    });
    let total = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the pipeline deadlocked");
    assert_eq!(total, 999_999 * 1_000_000);
}

parpool::task!(
    fn shared_out(len: usize) -> parpool::SharedBytes {
        parpool::SharedBytes::copy_from_slice(&vec![3u8; len]).unwrap()
    }
);
parpool::task!(
    fn lock_out(_x: ()) -> parpool::ipc::Mutex<u64> {
        parpool::ipc::Mutex::new(1).unwrap()
    }
);

/// What a pool serving another machine (an MPI rank) does: jobs arrive
/// encoded, outputs leave by value.
#[test]
fn encoded_jobs_run_by_name_and_answer_by_value() {
    let pool = ProcessPool::builder()
        .workers(1)
        .outputs_by_value()
        .build()
        .unwrap();
    let input = parpool::remote::encode_input(&21u64).unwrap();
    let out = pool
        .submit_encoded(double::NAME, input, None)
        .join()
        .unwrap();
    assert_eq!(parpool::remote::decode_output::<u64>(&out), Ok(42));

    // Shared bytes come back inline: no descriptor needed to decode them.
    let input = parpool::remote::encode_input(&10usize).unwrap();
    let out = pool
        .submit_encoded(shared_out::NAME, input, None)
        .join()
        .unwrap();
    let bytes: parpool::SharedBytes = parpool::remote::decode_output(&out).unwrap();
    assert_eq!(&bytes[..], &[3u8; 10]);

    // An ipc object cannot leave: a typed error naming it.
    let input = parpool::remote::encode_input(&()).unwrap();
    let err = pool
        .submit_encoded(lock_out::NAME, input, None)
        .join()
        .unwrap_err();
    assert_eq!(
        err,
        JobError::Unsendable {
            what: parpool::Payload::Output,
            object: "Mutex".into()
        }
    );

    let err = pool
        .submit_encoded("no::such::task", Vec::new(), None)
        .join();
    assert_eq!(
        err,
        Err(JobError::UnknownTask {
            name: "no::such::task".into()
        })
    );

    // A chunk: one result per item, each its own encoded output.
    let input = parpool::remote::encode_input(&vec![1u64, 2, 3]).unwrap();
    let out = pool
        .submit_encoded_chunk(double::NAME, input, 3)
        .join()
        .unwrap();
    let values: Vec<u64> = out
        .into_results()
        .into_iter()
        .map(|r| parpool::remote::decode_output(&r.unwrap()).unwrap())
        .collect();
    assert_eq!(values, [2, 4, 6]);
}

#[test]
fn a_queued_job_can_be_withdrawn_and_a_running_one_cannot() {
    parpool::task!(
        fn hold(ms: u64) -> u64 {
            std::thread::sleep(Duration::from_millis(ms));
            ms
        }
    );
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    let running = pool.submit(hold, 60_000);
    std::thread::sleep(Duration::from_millis(200));
    let input = parpool::remote::encode_input(&5u64).unwrap();
    let queued = pool.submit_encoded(hold::NAME, input, None);
    // Sent ahead to the busy worker, it comes back to the queue within a
    // millisecond or so (the pool takes back what waits behind a job).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !pool.withdraw(queued.id()) {
        assert!(
            std::time::Instant::now() < deadline,
            "never back in the queue"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(queued.join(), Err(JobError::Cancelled));
    assert!(!pool.withdraw(running.id()), "it runs already");
    assert!(running.cancel());
    assert_eq!(running.join(), Err(JobError::Cancelled));
}

/// Two `call!`s a macro expands at one place share a name: a worker
/// refuses it rather than run one closure for the other.
macro_rules! two_closures_here {
    () => {
        (
            parpool::call!(|x: u64| x + 1),
            parpool::call!(|x: u64| x + 1_000),
        )
    };
}

#[test]
fn two_closures_under_one_name_are_refused_not_confused() {
    let (plus_one, plus_thousand) = two_closures_here!();
    let pool = parpool::ProcessPool::builder().workers(1).build().unwrap();
    for result in [
        parpool::Executor::submit(&pool, plus_one, 1).join(),
        parpool::Executor::submit(&pool, plus_thousand, 1).join(),
    ] {
        assert!(
            matches!(result, Err(parpool::JobError::UnknownTask { .. })),
            "{result:?}"
        );
    }
    // On threads nothing is looked up by name: each runs as written.
    let threads = parpool::ThreadPool::builder().workers(1).build().unwrap();
    assert_eq!(
        parpool::Executor::submit(&threads, plus_thousand, 1).join(),
        Ok(1_001)
    );
}
