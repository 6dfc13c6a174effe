//! Which part a process plays: rank 0, which runs `main` and owns the
//! pool, or a serving rank, which must never run `main`.
//!
//! A launcher (`mpirun`, `mpiexec`, `srun`) tells each process its rank in
//! the environment before MPI starts; a worker that `MPI_Comm_spawn`
//! started gets [`SPAWNED_ARG`] on its command line. A constructor that
//! runs before `main` reads both and diverts serving ranks into
//! [`serve`](crate::serve::run), so user code runs on rank 0 only.

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
}

/// Referenced by the builder so that the object file holding the
/// constructor is linked into every binary that builds an `MpiPool`.
#[inline(never)]
pub(crate) fn constructor_linked() -> bool {
    std::hint::black_box(true)
}
