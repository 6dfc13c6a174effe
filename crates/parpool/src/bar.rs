//! Progress bars for maps (the `progress` feature): an `indicatif` bar
//! driven by a map's progress hook.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar on standard error with position, rate and ETA; hidden when
/// standard error is not a terminal (indicatif's default).
pub(crate) fn new_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{bar:40} {human_pos}/{human_len} items, {per_sec}, {elapsed} elapsed, ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// A progress hook that moves `bar`: its length once the total is known,
/// its position as results arrive, finished at the total.
pub(crate) fn drive(bar: ProgressBar) -> impl Fn(u64, Option<u64>) + Send + Sync + 'static {
    move |done, total| {
        if let Some(total) = total {
            bar.set_length(total);
        }
        bar.set_position(done);
        if total == Some(done) {
            bar.finish();
        }
    }
}
