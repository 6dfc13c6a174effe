//! `MpiPool` under a real MPI: each scenario runs this binary again under
//! `mpirun` (or on its own, for spawn mode and the build errors), where
//! rank 0 runs the scenario and the other ranks serve. A scenario passes
//! when its process exits 0 and leaves no process of this binary behind.
//!
//! Without `mpirun` on `PATH` the whole file prints one line saying it was
//! skipped. `cargo test -p parpool-mpi -- NAME` runs the scenarios whose
//! name contains `NAME`.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parpool::ipc::{Mutex as IpcMutex, Queue, SharedMem};
use parpool::{BuildError, Executor, JobError, Payload};
use parpool_mpi::MpiPool;

mod explore;
#[path = "../../parpool/tests/shared/executor.rs"]
mod shared;

parpool::task!(
    fn read_shared(mem: SharedMem) -> u64 {
        mem.len() as u64
    }
);
parpool::task!(
    fn queue_len(queue: Queue<u64>) -> u64 {
        queue.len() as u64
    }
);
parpool::task!(
    fn make_mutex(_x: ()) -> IpcMutex<u64> {
        IpcMutex::new(0).unwrap()
    }
);
parpool::task!(
    fn log_and_echo(x: u64) -> u64 {
        tracing::info!(item = x, "hello from a task");
        x
    }
);
parpool::task!(
    /// Creates `path`, then naps `ms`: the file says the job started.
    fn mark_then_nap((path, ms): (String, u64)) -> u64 {
        std::fs::write(&path, b"started").unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
);
parpool::task!(
    fn pid_of_rank(_x: ()) -> u32 {
        std::os::unix::process::parent_id()
    }
);

/// How a scenario is started.
#[derive(Clone, Copy)]
enum Start {
    /// `mpirun -n ranks`, with extra arguments.
    Launcher(u32, &'static [&'static str]),
    /// `mpirun -n 1 <this binary> : -n ranks <the `pools` example>`: serving
    /// ranks that run another program, which registers none of this one's
    /// tasks (mismatched binaries across nodes).
    OtherProgram(u32),
    /// On its own, with extra environment (`(name, None)` removes one).
    Alone(&'static [(&'static str, Option<&'static str>)]),
}

struct Scenario {
    name: &'static str,
    start: Start,
    body: fn(),
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "every_executor_case_holds_on_an_mpi_pool",
        start: Start::Launcher(3, &[]),
        body: executor_cases,
    },
    Scenario {
        name: "the_low_latency_mode_keeps_every_case_then_rests",
        start: Start::Launcher(3, &[]),
        body: the_low_latency_mode_keeps_every_case_then_rests,
    },
    Scenario {
        name: "tiny_jobs_all_arrive",
        start: Start::Launcher(3, &[]),
        body: tiny_jobs_all_arrive,
    },
    Scenario {
        name: "ipc_objects_are_refused_by_name",
        start: Start::Launcher(2, &[]),
        body: ipc_objects_are_refused_by_name,
    },
    Scenario {
        name: "task_logs_reach_rank_0_with_rank_and_host",
        start: Start::Launcher(3, &[]),
        body: task_logs_reach_rank_0_with_rank_and_host,
    },
    Scenario {
        name: "no_job_is_stranded_behind_a_blocked_one",
        start: Start::Launcher(3, &[]),
        body: no_job_is_stranded_behind_a_blocked_one,
    },
    Scenario {
        name: "a_lost_rank_s_jobs_run_elsewhere",
        start: Start::Launcher(3, &["--enable-recovery"]),
        body: a_lost_rank_s_jobs_run_elsewhere,
    },
    Scenario {
        name: "a_lost_rank_s_jobs_fail_without_retries",
        start: Start::Launcher(3, &["--enable-recovery"]),
        body: a_lost_rank_s_jobs_fail_without_retries,
    },
    Scenario {
        name: "a_task_a_rank_does_not_know_fails_that_job_alone",
        start: Start::OtherProgram(2),
        body: a_task_a_rank_does_not_know_fails_that_job_alone,
    },
    Scenario {
        name: "shutdown_now_cancels_what_has_not_started",
        start: Start::Launcher(2, &[]),
        body: shutdown_now_cancels_what_has_not_started,
    },
    Scenario {
        name: "explore_random_scenarios_on_an_mpi_pool",
        start: Start::Launcher(3, &[]),
        body: explore::explore,
    },
    Scenario {
        name: "a_program_that_never_builds_a_pool_ends_cleanly",
        start: Start::Launcher(3, &[]),
        body: a_program_that_never_builds_a_pool_ends_cleanly,
    },
    Scenario {
        name: "spawn_mode_runs_the_same_code",
        start: Start::Alone(&[("OMPI_MCA_rmaps_base_oversubscribe", Some("1"))]),
        body: spawn_mode_runs_the_same_code,
    },
    Scenario {
        name: "without_a_launcher_build_is_a_clear_error",
        start: Start::Alone(&[]),
        body: without_a_launcher_build_is_a_clear_error,
    },
    Scenario {
        name: "settings_no_pool_can_work_under_are_refused_first",
        start: Start::Alone(&[]),
        body: settings_no_pool_can_work_under_are_refused_first,
    },
    Scenario {
        name: "spawn_without_the_mpi_runtime_is_a_clear_error",
        start: Start::Alone(&[("PATH", Some("/nonexistent"))]),
        body: spawn_without_the_mpi_runtime_is_a_clear_error,
    },
];

const SCENARIO_ARG: &str = "--scenario";

fn main() {
    parpool_mpi::init();
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == SCENARIO_ARG) {
        let name = args.get(at + 1).map(String::as_str).unwrap_or_default();
        let scenario = SCENARIOS
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no scenario {name}"));
        (scenario.body)();
        return;
    }
    drive(&args[1..]);
}

/// Runs every scenario matching the filters, as `cargo test` does.
fn drive(args: &[String]) {
    if which("mpirun").is_none() {
        println!(
            "parpool-mpi: MPI tests skipped: `mpirun` is not on PATH \
             (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi-dev libclang-dev)"
        );
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let picked: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| filters.is_empty() || filters.iter().any(|f| s.name.contains(f.as_str())))
        .collect();
    println!("\nrunning {} MPI scenarios", picked.len());
    let mut failed = Vec::new();
    for scenario in &picked {
        let start = Instant::now();
        match run_scenario(scenario) {
            Ok(()) => println!("test {} ... ok ({:.1?})", scenario.name, start.elapsed()),
            Err(output) => {
                println!("test {} ... FAILED", scenario.name);
                failed.push((scenario.name, output));
            }
        }
    }
    for (name, output) in &failed {
        println!("\n---- {name} ----\n{output}");
    }
    println!(
        "\ntest result: {}. {} passed; {} failed\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        picked.len() - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(101);
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Runs one scenario in its own processes; `Err` holds their output.
fn run_scenario(scenario: &Scenario) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut command = match scenario.start {
        Start::Launcher(ranks, extra) => {
            let mut c = Command::new("mpirun");
            c.args(["--oversubscribe", "-n", &ranks.to_string()]);
            c.args(extra);
            c.arg(&exe);
            c
        }
        Start::OtherProgram(ranks) => {
            // `cargo test` builds the examples beside the test binaries.
            let other = exe
                .parent()
                .and_then(std::path::Path::parent)
                .map(|dir| dir.join("examples").join("pools"))
                .filter(|p| p.is_file());
            let Some(other) = other else {
                println!(
                    "({} needs the `pools` example built: skipped)",
                    scenario.name
                );
                return Ok(());
            };
            let mut c = Command::new("mpirun");
            c.args(["--oversubscribe", "-n", "1"]);
            c.arg(&exe).args([SCENARIO_ARG, scenario.name]);
            c.args([":", "-n", &ranks.to_string()]).arg(other);
            c
        }
        Start::Alone(env) => {
            let mut c = Command::new(&exe);
            for (key, value) in env {
                match value {
                    Some(v) => c.env(key, v),
                    None => c.env_remove(key),
                };
            }
            c
        }
    };
    if !matches!(scenario.start, Start::OtherProgram(_)) {
        command.args([SCENARIO_ARG, scenario.name]);
    }
    command
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = format!(
        "status: {status:?}\nstdout:\n{}\nstderr:\n{}",
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default()
    );
    let left = leftover_processes(&exe);
    match status {
        Some(s) if s.success() && left.is_empty() => Ok(()),
        Some(s) if s.success() => Err(format!(
            "processes of this binary left behind: {left:?}\n{output}"
        )),
        Some(_) => Err(output),
        None => Err(format!("timed out after 180 s\n{output}")),
    }
}

/// Processes running `exe` other than this one, after a grace period.
fn leftover_processes(exe: &std::path::Path) -> Vec<u32> {
    let me = std::process::id();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<u32> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != me)
            .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == exe))
            .collect();
        if found.is_empty() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pool(workers_per_rank: usize) -> MpiPool {
    MpiPool::builder()
        .workers_per_rank(workers_per_rank)
        .quiet()
        .build()
        .expect("the MPI pool starts")
}

fn executor_cases() {
    let pool = pool(2);
    assert_eq!(pool.ranks().len(), 2);
    assert_eq!(pool.workers(), 4);
    shared::run(&pool, shared::cases());
    shared::run(&pool, shared::isolation_cases());
}

/// User and system clock ticks process `pid` and its children have used
/// (a serving rank's workers are its children).
fn ticks_with_children(pid: u32) -> u64 {
    let own = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<u64> = own
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    ticks
        + children
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .map(ticks_with_children)
            .sum::<u64>()
}

/// `MpiPoolBuilder::spin`: every executor case and isolation case holds,
/// round trips one after another come back right, and once the pool has
/// been idle past its window, no process of it (rank 0, the serving
/// ranks, their workers) uses CPU.
fn the_low_latency_mode_keeps_every_case_then_rests() {
    let pool = MpiPool::builder()
        .workers_per_rank(1)
        .spin(Duration::from_micros(200))
        .quiet()
        .build()
        .expect("the MPI pool starts");
    shared::run(&pool, shared::cases());
    shared::run(&pool, shared::isolation_cases());
    for i in 0..2_000u64 {
        assert_eq!(pool.submit(shared::square, i).join(), Ok(i * i));
    }
    // The ranks run on this node (the launcher's `-n 3` here).
    let mut pids: Vec<u32> = pool.ranks().iter().map(|r| r.pid).collect();
    pids.push(std::process::id());
    std::thread::sleep(Duration::from_millis(300));
    let before: Vec<u64> = pids.iter().map(|&p| ticks_with_children(p)).collect();
    std::thread::sleep(Duration::from_secs(1));
    let after: Vec<u64> = pids.iter().map(|&p| ticks_with_children(p)).collect();
    // A spinning thread would use about 100 ticks in that second; an idle
    // rank probes MPI every millisecond, which costs a few.
    for ((pid, b), a) in pids.iter().zip(&before).zip(&after) {
        assert!(a - b <= 10, "process {pid} used {} ticks while idle", a - b);
    }
}

fn tiny_jobs_all_arrive() {
    let pool = pool(1);
    let n = 100_000u64;
    let handles: Vec<_> = (0..n).map(|i| pool.submit(shared::square, i)).collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join(), Ok(i as u64 * i as u64));
    }
    let sum: u64 = pool
        .map_task(shared::square, 0..200_000u64)
        .map(Result::unwrap)
        .fold(0, u64::wrapping_add);
    let expected = (0..200_000u64).map(|i| i * i).fold(0, u64::wrapping_add);
    assert_eq!(sum, expected);
}

fn ipc_objects_are_refused_by_name() {
    let pool = pool(1);
    let mem = SharedMem::new(4096).unwrap();
    let err = pool.submit(read_shared, mem).join().unwrap_err();
    assert_eq!(
        err,
        JobError::Unsendable {
            what: Payload::Input,
            object: "SharedMem".into()
        }
    );
    assert!(err.to_string().contains("SharedMem"), "{err}");
    let queue = Queue::<u64>::new().unwrap();
    let err = pool.submit(queue_len, queue).join().unwrap_err();
    assert!(
        matches!(&err, JobError::Unsendable { object, .. } if object == "Queue"),
        "{err}"
    );
    let err = pool.submit(make_mutex, ()).join().unwrap_err();
    assert_eq!(
        err,
        JobError::Unsendable {
            what: Payload::Output,
            object: "Mutex".into()
        }
    );
    assert_eq!(pool.submit(shared::square, 9).join(), Ok(81));
}

/// A subscriber that keeps each event's fields as text.
#[derive(Clone, Default)]
struct Keep(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl tracing_core::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing_core::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl parpool::__private::EventSink for Keep {
    fn event(&self, event: &tracing_core::Event<'_>) {
        let mut fields = Fields(format!("target={} ", event.metadata().target()));
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
}

fn task_logs_reach_rank_0_with_rank_and_host() {
    let keep = Keep::default();
    tracing::subscriber::set_global_default(parpool::__private::EventsOnly(keep.clone())).unwrap();
    let pool = pool(1);
    let handle = pool.submit(log_and_echo, 41);
    let id = handle.id().get();
    assert_eq!(handle.join(), Ok(41));
    let host = &pool.ranks()[0].host;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = keep.0.lock().unwrap().clone();
        let found = events.iter().find(|e| e.contains("hello from a task"));
        if let Some(event) = found {
            assert!(event.contains("target=parpool::worker"), "{event}");
            assert!(
                event.contains("rank=1") || event.contains("rank=2"),
                "{event}"
            );
            assert!(event.contains(&format!("host={host:?}")), "{event}");
            assert!(event.contains("worker_pid="), "{event}");
            assert!(event.contains(&format!("job={id} ")), "{event}");
            assert!(event.contains("item=41"), "{event}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no task event arrived: {events:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn no_job_is_stranded_behind_a_blocked_one() {
    // Two ranks of one worker each: one job blocks a rank for 4 s while
    // quick jobs keep coming; none of them may wait for it.
    let pool = pool(1);
    for round in 0..3 {
        let blocker = pool.submit(shared::sleep_hard, 4000);
        std::thread::sleep(Duration::from_millis(50));
        let start = Instant::now();
        let quick: Vec<_> = (0..40)
            .map(|_| pool.submit(shared::sleep_hard, 10))
            .collect();
        for h in quick {
            assert_eq!(h.join(), Ok(10));
        }
        let took = start.elapsed();
        assert!(
            took < Duration::from_millis(3000),
            "round {round}: the quick jobs took {took:?}, waiting for the blocked rank"
        );
        assert_eq!(blocker.join(), Ok(4000));
    }
}

fn kill_rank(pid: u32) {
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn a_lost_rank_s_jobs_run_elsewhere() {
    let pool = MpiPool::builder()
        .workers_per_rank(1)
        .retries(1)
        .lost_after(Duration::from_secs(3))
        .quiet()
        .build()
        .unwrap();
    let victim = pool.ranks()[0].pid;
    let handles: Vec<_> = (0..6).map(|_| pool.submit(shared::nap, 1500)).collect();
    std::thread::sleep(Duration::from_millis(300));
    kill_rank(victim);
    for h in handles {
        assert_eq!(
            h.join(),
            Ok(1500),
            "each job ran, again if its rank was lost"
        );
    }
    // Later jobs all go to the rank that is left.
    let pids: Vec<u32> = (0..8)
        .map(|_| pool.submit(pid_of_rank, ()).join().unwrap())
        .collect();
    assert!(pids.iter().all(|&p| p != victim), "{pids:?}");
    // The pool says so: the lost rank is marked, and its workers no longer
    // count.
    let ranks = pool.ranks();
    let lost: Vec<u32> = ranks.iter().filter(|r| r.lost).map(|r| r.pid).collect();
    assert_eq!(lost, [victim], "{ranks:?}");
    assert_eq!(pool.workers(), 1);
}

/// The `pools` example with its default `threads` once ended under
/// `mpirun -n 3` with an abnormal termination: the serving ranks waited for
/// a pool rank 0 never built. They are released when rank 0 exits.
fn a_program_that_never_builds_a_pool_ends_cleanly() {
    let pool = parpool::ThreadPool::builder().workers(2).build().unwrap();
    assert_eq!(pool.submit(shared::square, 7).join(), Ok(49));
}

fn a_lost_rank_s_jobs_fail_without_retries() {
    let pool = MpiPool::builder()
        .workers_per_rank(1)
        .lost_after(Duration::from_secs(3))
        .quiet()
        .build()
        .unwrap();
    let victim = pool.ranks()[0].clone();
    let handles: Vec<_> = (0..4).map(|_| pool.submit(shared::nap, 2000)).collect();
    std::thread::sleep(Duration::from_millis(300));
    kill_rank(victim.pid);
    let start = Instant::now();
    let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
    assert!(start.elapsed() < Duration::from_secs(20));
    let lost = results
        .iter()
        .filter(|r| r.as_ref().is_err_and(JobError::is_lost))
        .count();
    let ok = results.iter().filter(|r| **r == Ok(2000)).count();
    assert!(lost >= 1, "{results:?}");
    assert_eq!(lost + ok, 4, "{results:?}");
    let err = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert!(err.to_string().contains(&victim.pid.to_string()), "{err}");
    assert_eq!(
        pool.submit(shared::square, 3).join(),
        Ok(9),
        "rank 0 carries on"
    );
}

fn a_task_a_rank_does_not_know_fails_that_job_alone() {
    let pool = pool(1);
    // The serving ranks run the `pools` example, which registers its own
    // tasks only.
    let err = pool.submit(shared::square, 3).join().unwrap_err();
    assert_eq!(
        err,
        JobError::UnknownTask {
            name: <shared::square as parpool::Task>::NAME.into()
        }
    );
    let results: Vec<_> = pool.map_task(shared::square, 0..10).collect();
    assert_eq!(results.len(), 10);
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_err_and(JobError::is_unknown_task)),
        "{results:?}"
    );
}

fn shutdown_now_cancels_what_has_not_started() {
    let pool = pool(1);
    let marker = std::env::temp_dir().join(format!("parpool-mpi-started-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let path = marker.display().to_string();
    let handles: Vec<_> = (0..10)
        .map(|_| pool.submit(mark_then_nap, (path.clone(), 300)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "no job started");
        std::thread::sleep(Duration::from_millis(5));
    }
    pool.shutdown_now();
    let _ = std::fs::remove_file(&marker);
    let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
    let cancelled = results
        .iter()
        .filter(|r| **r == Err(JobError::Cancelled))
        .count();
    let finished = results.iter().filter(|r| **r == Ok(300)).count();
    assert!(finished >= 1, "the running job finished: {results:?}");
    assert!(cancelled >= 1, "queued jobs were cancelled: {results:?}");
    assert_eq!(cancelled + finished, 10, "{results:?}");
    assert_eq!(
        pool.submit(shared::square, 2).join(),
        Err(JobError::Shutdown)
    );
}

fn spawn_mode_runs_the_same_code() {
    let pool = MpiPool::builder()
        .spawn(2)
        .workers_per_rank(1)
        .quiet()
        .build()
        .expect("spawned MPI pool starts");
    assert_eq!(pool.ranks().len(), 2);
    let me = std::process::id();
    let pids: Vec<u32> = (0..4)
        .map(|_| pool.submit(pid_of_rank, ()).join().unwrap())
        .collect();
    assert!(
        pids.iter().all(|&p| p != me),
        "jobs ran in spawned ranks: {pids:?}"
    );
    shared::run(&pool, shared::cases());
    shared::run(&pool, shared::isolation_cases());
}

fn without_a_launcher_build_is_a_clear_error() {
    let err = MpiPool::builder().build().unwrap_err();
    let BuildError::Remote { reason } = &err else {
        panic!("unexpected {err}");
    };
    assert!(reason.contains("mpirun -n"), "{reason}");
    assert!(reason.contains("spawn"), "{reason}");
}

/// The settings shared with `ProcessPoolBuilder` are checked as it checks
/// them, before any rank is asked to start (even with no launcher).
fn settings_no_pool_can_work_under_are_refused_first() {
    let refused = |builder: parpool_mpi::MpiPoolBuilder, setting: &str| {
        let err = builder.build().unwrap_err();
        let BuildError::InvalidSetting { setting: named, .. } = &err else {
            panic!("{setting}: unexpected {err}");
        };
        assert_eq!(*named, setting, "{err}");
    };
    refused(
        MpiPool::builder().max_jobs_per_worker(0),
        "max_jobs_per_worker",
    );
    refused(MpiPool::builder().workers_per_rank(0), "workers_per_rank");
    refused(MpiPool::builder().max_payload(4 << 30), "max_payload");
    refused(MpiPool::builder().lost_after(Duration::ZERO), "lost_after");
}

fn spawn_without_the_mpi_runtime_is_a_clear_error() {
    let err = MpiPool::builder().spawn(2).build().unwrap_err();
    let BuildError::Remote { reason } = &err else {
        panic!("unexpected {err}");
    };
    assert!(reason.contains("openmpi-bin"), "{reason}");
}
