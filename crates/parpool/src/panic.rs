//! Catching panics inside jobs with their message and location.
//!
//! `catch_unwind` hands back only the payload; the location is known only to
//! the panic hook. parpool chains one hook in front of whatever hook was set
//! (once, when the first pool is built): on a thread that is running a job it
//! records the location in a thread-local and stays quiet, since the panic is
//! delivered to the job's handle as a value; elsewhere it defers to the
//! previous hook.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use crate::error::{Location, PanicInfo};

thread_local! {
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    static LAST_LOCATION: RefCell<Option<Location>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Installs the capturing hook, once per process.
pub(crate) fn install_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            // `try_with`: a panic during thread-local teardown must not
            // panic again in here.
            if CAPTURING.try_with(Cell::get).unwrap_or(false) {
                let location = info.location().map(|l| Location {
                    file: l.file().to_owned(),
                    line: l.line(),
                    column: l.column(),
                });
                tracing::debug!(
                    location = ?location,
                    panic = %message_of(info.payload()),
                    "job panicked"
                );
                let _ = LAST_LOCATION.try_with(|slot| *slot.borrow_mut() = location);
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into a [`PanicInfo`].
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, PanicInfo> {
    capturing(|| catch_captured(f))
}

/// Runs `f` with panics on this thread captured by the hook (quiet, their
/// location kept) rather than reported: for a loop of [`catch_captured`]s.
pub(crate) fn capturing<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = CAPTURING.try_with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CAPTURING.try_with(|c| c.replace(true)).unwrap_or(false));
    f()
}

/// [`catch`], inside [`capturing`].
#[inline]
pub(crate) fn catch_captured<R>(f: impl FnOnce() -> R) -> Result<R, PanicInfo> {
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    result.map_err(|payload| {
        let info = PanicInfo {
            message: message_of(&*payload),
            location: LAST_LOCATION
                .try_with(|slot| slot.borrow_mut().take())
                .ok()
                .flatten(),
            item: None,
        };
        // A payload whose destructor panics must not take the worker down.
        if let Err(inner) = panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            std::mem::forget(inner);
        }
        info
    })
}

/// The text of a panic payload.
pub(crate) fn message_of(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_owned()
    }
}
