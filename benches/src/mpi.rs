//! MPI rows: parpool's `MpiPool` against `mpi4py.futures`, on the same
//! ranks and cores (rank 0 plus two serving ranks of one worker each).
//!
//! The suite runs inside an MPI job: `bench --suite mpi` starts itself
//! again under `mpirun -n 3`, and rank 0 of that job measures (the other
//! ranks serve the pool). The Python peer runs as its own MPI job, started
//! from rank 0 with the launcher's variables removed.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use parpool::{Executor, ProcessPool};
use parpool_mpi::MpiPool;

use crate::process::{LatencyContender, TimedContender, burn_batch, ident, trips, wall};

/// Serving ranks (each with one worker), as mpi4py's worker ranks.
pub(crate) const SERVING_RANKS: usize = 2;

/// Whether this process is rank 0 of an MPI job (the relaunched suite).
pub(crate) fn under_launcher() -> bool {
    std::env::var_os("OMPI_COMM_WORLD_RANK").is_some() || std::env::var_os("PMIX_RANK").is_some()
}

/// Why the suite cannot run here, if it cannot.
pub(crate) fn missing() -> Option<String> {
    let on_path = |p: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()))
    };
    if !on_path("mpirun") {
        return Some("`mpirun` is not on PATH (apt-get install openmpi-bin libopenmpi-dev)".into());
    }
    let mpi4py = Command::new("python3")
        .args(["-c", "import mpi4py.futures"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !mpi4py {
        return Some("Python's mpi4py is missing (pip install mpi4py)".into());
    }
    None
}

/// Runs this benchmark binary again under `mpirun` with `args`; rank 0
/// of that job runs the suite and writes its results.
pub(crate) fn relaunch(args: &[String]) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let ranks = (SERVING_RANKS + 1).to_string();
    let status = Command::new("mpirun")
        .args(["--oversubscribe", "-n", &ranks])
        .arg(exe)
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .status()
        .map_err(|e| format!("cannot start mpirun: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the MPI suite failed under mpirun ({status})"))
    }
}

/// The pool every MPI row of a launch shares (MPI starts once per
/// process): in the low-latency mode with a `spin` window (the suite
/// `mpi-spin`, a launch of its own), else in the default mode.
pub(crate) fn pool(spin: Duration) -> Arc<MpiPool> {
    Arc::new(
        MpiPool::builder()
            .workers_per_rank(1)
            .spin(spin)
            .build()
            .expect("MPI pool under mpirun"),
    )
}

fn process_pool() -> ProcessPool {
    ProcessPool::builder()
        .workers(SERVING_RANKS)
        .build()
        .expect("process pool")
}

/// Runs the mpi4py peer as an MPI job of its own.
fn python(mode: &str, n: u64) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/mpi_peers.py");
    let ranks = (SERVING_RANKS + 1).to_string();
    let mut command = Command::new("mpiexec");
    // This process is itself a rank: the peer must not think it is one.
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if ["OMPI_", "PMIX_", "PMI_", "OPAL_", "ORTE_", "HWLOC_"]
            .iter()
            .any(|p| key_text.starts_with(p))
        {
            command.env_remove(&key);
        }
    }
    let out = command
        .args([
            "--oversubscribe",
            "-n",
            &ranks,
            "python3",
            "-m",
            "mpi4py.futures",
        ])
        .args([script, mode, &n.to_string()])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .unwrap_or_else(|e| panic!("mpiexec python3 {mode}: {e}"));
    assert!(
        out.status.success(),
        "mpi4py peer {mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("mpi4py peer printed JSON")
}

/// Submit `n` tiny jobs, then collect.
pub(crate) fn tiny(pool: &Arc<MpiPool>, n: u64) -> Vec<TimedContender> {
    let mp = pool.clone();
    let pp = process_pool();
    let expect = n * (n - 1) / 2;
    let submit_all = move |exec: &dyn Fn(u64) -> parpool::JobHandle<u64>| {
        let hs: Vec<_> = (0..n).map(exec).collect();
        let sum: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(sum, expect);
    };
    vec![
        (
            "parpool MpiPool",
            wall(move || submit_all(&|i| mp.submit(ident, i))),
        ),
        (
            "mpi4py.futures MPIPoolExecutor submit",
            Box::new(move || python("submit_tiny", n)["seconds"].as_f64()),
        ),
        (
            "parpool ProcessPool, one node (MpiPool's overhead)",
            wall(move || submit_all(&|i| pp.submit(ident, i))),
        ),
    ]
}

/// Submit one job, wait, `n` times. The floor, a process pool on one
/// node, runs in the same mode as the MPI pool (`spin`).
pub(crate) fn round_trip(pool: &Arc<MpiPool>, n: u64, spin: Duration) -> Vec<LatencyContender> {
    let mp = pool.clone();
    let pp = ProcessPool::builder()
        .workers(1)
        .spin(spin)
        .build()
        .expect("process pool");
    vec![
        (
            "parpool MpiPool",
            Box::new(move || trips(n, |i| assert_eq!(mp.submit(ident, i).join(), Ok(i)))),
        ),
        (
            // The physical floor: each rank runs its jobs in a local process
            // pool (crash isolation), so a job makes this trip too.
            "floor: ProcessPool round trip on one node",
            Box::new(move || trips(n, |i| assert_eq!(pp.submit(ident, i).join(), Ok(i)))),
        ),
        (
            "mpi4py.futures MPIPoolExecutor",
            Box::new(move || {
                python("roundtrip", n)["samples"]
                    .as_array()
                    .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
                    .unwrap_or_default()
            }),
        ),
    ]
}

/// An ordered map over `n` tiny items.
pub(crate) fn map(pool: &Arc<MpiPool>, n: u64) -> Vec<TimedContender> {
    let mp = pool.clone();
    vec![
        (
            "parpool MpiPool",
            wall(move || {
                let mut count = 0u64;
                for (i, r) in mp.map_task(ident, 0..n).enumerate() {
                    assert_eq!(r, Ok(i as u64));
                    count += 1;
                }
                assert_eq!(count, n);
            }),
        ),
        (
            "mpi4py.futures map, best chunksize of 100/1000/10000",
            Box::new(move || python("map_best_chunksize", n)["seconds"].as_f64()),
        ),
    ]
}

/// `jobs` CPU-bound jobs of about `ms` each.
pub(crate) fn cpu(pool: &Arc<MpiPool>, jobs: u64, ms: u64) -> Vec<TimedContender> {
    let mp = pool.clone();
    let pp = Arc::new(process_pool());
    let (floor_mp, floor_pp) = (pool.clone(), pp.clone());
    let (mut mpi_batch, mut pp_batch) = (
        burn_batch(floor_mp, jobs, ms),
        burn_batch(floor_pp, jobs, ms),
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    vec![
        ("parpool MpiPool", burn_batch(mp, jobs, ms)),
        ("parpool ProcessPool, same cores", burn_batch(pp, jobs, ms)),
        (
            "floor: the ProcessPool, plus the CPU MPI's polling threads took meanwhile, over the cores",
            Box::new(move || {
                let before = polling_seconds();
                mpi_batch()?;
                let polled = polling_seconds() - before;
                Some(pp_batch()? + polled / cores)
            }),
        ),
    ]
}

/// CPU time used so far by every MPI thread of the job's ranks (threads
/// named `parpool-mpi`, all on this machine), in seconds (nanosecond
/// counts from `schedstat`). MPI cannot wake a sleeping thread when a
/// message arrives, so these threads poll; what they use, the workers
/// lack.
fn polling_seconds() -> f64 {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut ns = 0u64;
    for p in procs.flatten() {
        let Ok(tasks) = std::fs::read_dir(p.path().join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if comm.trim_end() != "parpool-mpi" {
                continue;
            }
            let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            ns += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    ns as f64 / 1e9
}
