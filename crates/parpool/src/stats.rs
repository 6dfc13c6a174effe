//! What a pool reports about itself ([`Stats`]), the same for every pool.

/// A snapshot of a pool's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Jobs accepted and not yet started (on a process pool this includes
    /// jobs sent ahead into a busy worker's pipeline).
    pub queued: u64,
    /// Jobs being run right now.
    pub running: u64,
    /// Jobs that ran and delivered their value.
    pub completed: u64,
    /// Jobs that ran and panicked, or whose value was discarded because they
    /// were cancelled or timed out while running.
    pub failed: u64,
    /// Jobs that never ran: cancelled while queued, dropped by
    /// `shutdown_now`, or refused after shutdown.
    pub cancelled: u64,
}
