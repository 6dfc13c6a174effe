//! `Pool`: a thread or process pool picked at run time, from a flag.

use parpool::{BuildError, Executor, Pool, PoolKind};

parpool::task! {
    /// The id of the process the job ran in.
    fn where_am_i(_x: u32) -> u32 { std::process::id() }
}

parpool::task! {
    fn fails(message: String) -> () { panic!("{message}") }
}

/// What a program does with `--pool KIND` on its command line.
fn pool_from_args(args: &[&str]) -> Result<Pool, Box<dyn std::error::Error>> {
    let mut kind = PoolKind::Threads;
    let mut it = args.iter();
    while let Some(&arg) = it.next() {
        if arg == "--pool" {
            kind = it.next().ok_or("--pool needs a value")?.parse()?;
        }
    }
    Ok(Pool::new(kind, 2)?)
}

#[test]
fn kinds_parse_from_flags_and_bad_ones_say_what_is_expected() {
    assert_eq!("threads".parse::<PoolKind>(), Ok(PoolKind::Threads));
    assert_eq!(" Processes ".parse::<PoolKind>(), Ok(PoolKind::Processes));
    assert_eq!("process".parse::<PoolKind>(), Ok(PoolKind::Processes));
    let err = "fibers".parse::<PoolKind>().unwrap_err().to_string();
    assert!(
        err.contains("\"fibers\"") && err.contains("threads"),
        "{err}"
    );
    assert_eq!(PoolKind::Processes.to_string(), "processes");
    let err = pool_from_args(&["prog", "--pool"]).unwrap_err().to_string();
    assert!(err.contains("needs a value"), "{err}");
}

#[test]
fn the_flag_picks_threads() {
    let pool = pool_from_args(&["prog", "--pool", "threads"]).unwrap();
    assert!(matches!(pool, Pool::Threads(_)));
    assert_eq!(pool.workers(), 2);
    let pids: Vec<u32> = pool
        .map_task(where_am_i, 0..8)
        .map(Result::unwrap)
        .collect();
    assert!(pids.iter().all(|&p| p == std::process::id()));
    let err = pool.submit(fails, "on a thread".into()).join().unwrap_err();
    assert_eq!(err.panic_message(), Some("on a thread"));
    pool.shutdown();
    assert_eq!(pool.stats().completed, 8);
}

#[cfg(all(feature = "process", target_os = "linux"))]
#[test]
fn the_flag_picks_processes() {
    let pool = pool_from_args(&["prog", "--pool", "processes"]).unwrap();
    assert!(matches!(pool, Pool::Processes(_)));
    assert_eq!(pool.kind(), PoolKind::Processes);
    let pids: Vec<u32> = pool
        .map_task(where_am_i, 0..8)
        .map(Result::unwrap)
        .collect();
    assert!(pids.iter().all(|&p| p != std::process::id()), "{pids:?}");
    let err = pool.submit(fails, "in a worker".into()).join().unwrap_err();
    assert!(matches!(err, parpool::JobError::Panicked(_)), "{err:?}");
    assert_eq!(err.panic_message(), Some("in a worker"));
    // A configured pool converts too.
    let pool: Pool = crate::common::quiet_pool(1).into();
    assert_ne!(pool.submit(where_am_i, 0).join(), Ok(std::process::id()));
}

#[cfg(not(all(feature = "process", target_os = "linux")))]
#[test]
fn processes_are_refused_with_a_typed_error_where_unavailable() {
    let err = Pool::new(PoolKind::Processes, 2).unwrap_err();
    assert!(matches!(err, BuildError::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("thread pool"), "{err}");
}

#[test]
fn zero_workers_is_a_build_error_for_either_kind() {
    for kind in [PoolKind::Threads, PoolKind::Processes] {
        match Pool::new(kind, 0) {
            Err(BuildError::InvalidSetting { setting, .. }) => assert_eq!(setting, "workers"),
            Err(BuildError::Unsupported { .. }) if kind == PoolKind::Processes => {}
            other => panic!("{kind}: {other:?}"),
        }
    }
}
