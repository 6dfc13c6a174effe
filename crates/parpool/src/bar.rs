//! Progress bars for maps (the `progress` feature): an `indicatif` bar
//! driven by a map's progress hook.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// The bar takes what the terminal has left after position, rate and
/// times (`12,345,678/99,999,999 4.56M/s 12m ETA 3h`: about 45 columns at
/// most), so the line never wraps.
const TEMPLATE: &str = "{wide_bar} {human_pos}/{human_len} {rate} {elapsed} ETA {eta}";

/// A bar on standard error with position, rate and ETA, as wide as the
/// terminal; hidden when standard error is not a terminal (indicatif's
/// default).
pub(crate) fn new_bar() -> ProgressBar {
    bar_on(ProgressDrawTarget::stderr())
}

fn bar_on(target: ProgressDrawTarget) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, target);
    let style = ProgressStyle::with_template(TEMPLATE)
        .map(|s| {
            s.with_key(
                "rate",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&rate(state.per_sec()));
                },
            )
        })
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// Items per second with three significant digits at most: `7.50/s`,
/// `512/s`, `12.3k/s`, `4.56M/s`; below one a second, the time per item
/// (`4.0s/it`, `10.0m/it`), as jobs that long are counted.
fn rate(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec <= 0.0 {
        return "-/s".to_owned();
    }
    if per_sec < 0.995 {
        let secs = 1.0 / per_sec;
        return match secs {
            s if s < 99.95 => format!("{s:.1}s/it"),
            s if s < 5_970.0 => format!("{:.1}m/it", s / 60.0),
            s => format!("{:.1}h/it", s / 3600.0),
        };
    }
    // A unit up from where rounding to three digits would give 1000.
    let (value, unit) = match per_sec {
        r if r >= 999.5e6 => (r / 1e9, "G"),
        r if r >= 999.5e3 => (r / 1e6, "M"),
        r if r >= 999.5 => (r / 1e3, "k"),
        r => (r, ""),
    };
    let digits = match value {
        v if v >= 99.95 => 0,
        v if v >= 9.995 => 1,
        _ => 2,
    };
    // Whole numbers of items below a thousand need no decimals.
    let digits = if unit.is_empty() && value >= 9.995 {
        0
    } else {
        digits
    };
    format!("{value:.digits$}{unit}/s")
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn rates_have_three_significant_digits_at_most() {
        assert_eq!(rate(0.25), "4.0s/it");
        assert_eq!(rate(1.0 / 600.0), "10.0m/it");
        assert_eq!(rate(1.0 / 36_000.0), "10.0h/it");
        assert_eq!(rate(1.0), "1.00/s");
        assert_eq!(rate(7.5), "7.50/s");
        assert_eq!(rate(2056.5438), "2.06k/s");
        assert_eq!(rate(512.4), "512/s");
        assert_eq!(rate(12_345.0), "12.3k/s");
        assert_eq!(rate(999_999.0), "1.00M/s");
        assert_eq!(rate(999.7), "1.00k/s");
        assert_eq!(rate(4_560_000.0), "4.56M/s");
        assert_eq!(rate(0.0), "-/s");
        assert_eq!(rate(f64::NAN), "-/s");
    }

    /// A terminal of 80 columns that keeps what is drawn on it.
    #[derive(Debug, Clone, Default)]
    struct Screen(Arc<Mutex<Vec<String>>>);

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            80
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push(s.to_owned());
            Ok(())
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.write_line(s)
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The bar once took 40 columns and the line after it about 50: on an
    /// 80-column terminal every redraw wrapped.
    #[test]
    fn the_bar_fits_an_80_column_terminal() {
        let screen = Screen::default();
        let bar = bar_on(ProgressDrawTarget::term_like(Box::new(screen.clone())));
        let hook = drive(bar);
        hook(1_234_567, Some(99_999_999));
        hook(99_999_999, Some(99_999_999));
        let lines = screen.0.lock().unwrap();
        assert!(!lines.is_empty(), "nothing was drawn");
        for line in lines.iter().filter(|l| !l.is_empty()) {
            let width = line.chars().count();
            assert!(width <= 80, "{width} columns: {line:?}");
            assert!(line.contains("/99,999,999 "), "{line:?}");
        }
    }
}
