//! Where a pool is in its life: open, draining (finishing what it has) or
//! cancelling (dropping what it has not started). Both pools use it; a
//! pool only moves forward through it.

/// A pool's shutdown state, in the order it goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Lifecycle {
    /// Taking jobs.
    Open = 0,
    /// Refusing new jobs, running the queued ones.
    Draining = 1,
    /// Refusing new jobs, dropping the queued ones.
    Cancelling = 2,
}

impl Lifecycle {
    /// The state stored as `byte` (see `as u8`); anything past the last is
    /// the last.
    pub(crate) fn from_u8(byte: u8) -> Lifecycle {
        match byte {
            0 => Lifecycle::Open,
            1 => Lifecycle::Draining,
            _ => Lifecycle::Cancelling,
        }
    }
}
