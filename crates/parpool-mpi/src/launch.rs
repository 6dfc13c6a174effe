//! Which part a process plays: rank 0, which runs `main` and owns the
//! pool, or a serving rank, which must never run `main`.
//!
//! A launcher (`mpirun`, `mpiexec`, `srun`) tells each process its rank in
//! the environment before MPI starts; a worker that `MPI_Comm_spawn`
//! started gets [`SPAWNED_ARG`] on its command line. A constructor that
//! runs before `main` reads both and diverts serving ranks into
//! [`serve`](crate::serve::run), so user code runs on rank 0 only.
//!
//! The serving ranks wait for rank 0's pool from the start. A program
//! that links this crate but whose `main` never builds an `MpiPool` (it
//! chose a thread pool this time, or failed before) would leave them
//! waiting, and the launcher would end the job as failed. So on rank 0
//! the constructor also registers an exit handler: when the process exits
//! without ever having started a pool, it starts MPI, tells every serving
//! rank to finalize and exit, and finalizes; the job ends cleanly.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::SeqCst;

/// The argument a spawned worker is started with.
pub(crate) const SPAWNED_ARG: &str = "--parpool-mpi-serve";

/// The variables launchers set to a process's rank, checked in order.
const RANK_VARS: &[&str] = &[
    "OMPI_COMM_WORLD_RANK",
    "PMIX_RANK",
    "PMI_RANK",
    "MV2_COMM_WORLD_RANK",
    "SLURM_PROCID",
];

/// What the environment says this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Not under a launcher, not spawned.
    Alone,
    /// Under a launcher, with this rank.
    Launched(u32),
    /// Started by `MPI_Comm_spawn` to serve a pool.
    Spawned,
}

/// This process's role.
pub(crate) fn role() -> Role {
    if std::env::args_os().skip(1).any(|a| a == SPAWNED_ARG) {
        return Role::Spawned;
    }
    RANK_VARS
        .iter()
        .find_map(|var| std::env::var(var).ok())
        .and_then(|v| v.trim().parse().ok())
        .map_or(Role::Alone, Role::Launched)
}

/// Whether this process is a worker of a local `ProcessPool` (which
/// inherits the launcher's variables, and is parpool's to divert).
fn is_process_worker() -> bool {
    std::env::var_os("PARPOOL_WORKER").is_some()
}

/// Whether this process serves jobs rather than running `main`.
pub(crate) fn serves() -> bool {
    !is_process_worker() && matches!(role(), Role::Spawned | Role::Launched(1..))
}

/// Diverts a serving rank before `main` runs (see the module docs). At
/// `late` priority, after the constructors that register tasks.
#[ctor::ctor(unsafe, priority = late)]
fn divert_serving_rank() {
    // SAFETY (constructor): runs before `main` on the main thread, after
    // the ordinary constructors; it reads the environment and arguments,
    // and only in a serving rank runs the serving loop and exits without
    // returning to the runtime. It touches no state `main` sets up.
    if serves() {
        crate::serve::run();
    }
    watch_rank_0();
}

/// Set once rank 0 starts a pool's MPI thread: from then on the pool
/// releases the serving ranks (see the module docs).
static POOL_BUILT: AtomicBool = AtomicBool::new(false);

/// Notes that rank 0 started a pool.
pub(crate) fn pool_built() {
    POOL_BUILT.store(true, SeqCst);
}

/// The variables launchers set to the number of processes, checked in
/// order.
const SIZE_VARS: &[&str] = &[
    "OMPI_COMM_WORLD_SIZE",
    "PMIX_SIZE",
    "PMI_SIZE",
    "MV2_COMM_WORLD_SIZE",
    "SLURM_NTASKS",
];

/// Whether the launcher started other processes beside this one (`true`
/// when it does not say).
fn has_peers() -> bool {
    SIZE_VARS
        .iter()
        .find_map(|var| std::env::var(var).ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .is_none_or(|n| n > 1)
}

/// Rank 0's exit handler: releases the serving ranks if no pool ever did.
extern "C" fn release_unused_ranks() {
    if POOL_BUILT.swap(true, SeqCst) {
        return;
    }
    // Nothing may unwind out of an exit handler.
    let _ = std::panic::catch_unwind(crate::serve::release_from_rank_0);
}

/// Registers [`release_unused_ranks`] on rank 0 under a launcher.
fn watch_rank_0() {
    if is_process_worker() || role() != Role::Launched(0) || !has_peers() {
        return;
    }
    // SAFETY: `atexit` with a plain `extern "C" fn()` that never unwinds
    // (it catches panics); registering has no other effect.
    unsafe {
        libc::atexit(release_unused_ranks);
    }
}

/// Referenced by the builder so that the object file holding the
/// constructor is linked into every binary that builds an `MpiPool`.
#[inline(never)]
pub(crate) fn constructor_linked() -> bool {
    std::hint::black_box(true)
}
