//! Progress bars on stderr (`indicatif`) for the slow parts of a run: connecting thousands of
//! clients, and publishing phases that last more than a few seconds.
//!
//! Bars draw only when stderr is a terminal (indicatif hides them otherwise) and not at all
//! after [`hide`] (called for `--json`, whose human summary goes to stderr too). A bar is
//! cleared when it is dropped, so an error leaves no half-drawn line behind.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};
use tokio_util::sync::CancellationToken;

static HIDDEN: AtomicBool = AtomicBool::new(false);

/// Draws no bar from now on.
pub fn hide() {
    HIDDEN.store(true, Ordering::Relaxed);
}

/// A bar of `len` steps saying `what`; the caller advances it with `inc`.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let target = if HIDDEN.load(Ordering::Relaxed) {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    let style = ProgressStyle::with_template(
        "{msg:>24} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({per_sec}, {eta} left)",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::with_draw_target(Some(len), target)
        .with_style(style)
        .with_message(what.to_owned())
        .with_finish(ProgressFinish::AndClear)
}

/// Advances a bar by one when dropped: whichever way a step ends, it counts.
pub struct Advance<'a>(pub &'a ProgressBar);

impl Drop for Advance<'_> {
    fn drop(&mut self) {
        self.0.inc(1);
    }
}

/// A bar whose position follows something counted elsewhere (or the clock), redrawn every
/// 200 ms until dropped.
pub struct Ticker {
    bar: ProgressBar,
    stop: CancellationToken,
}

impl Ticker {
    /// A bar of `len` steps whose position is read from `counter`.
    pub fn counting(len: u64, what: &str, counter: Arc<AtomicU64>) -> Self {
        let bar = bar(len, what);
        Self::follow(bar, move || counter.load(Ordering::Relaxed))
    }

    /// A bar over `duration`, in seconds, advanced by the clock.
    pub fn timed(duration: Duration, what: &str) -> Self {
        let bar = bar(duration.as_secs().max(1), what);
        bar.set_style(
            ProgressStyle::with_template("{msg:>24} {wide_bar} {pos}/{len} s")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let started = std::time::Instant::now();
        Self::follow(bar, move || started.elapsed().as_secs())
    }

    fn follow(bar: ProgressBar, position: impl Fn() -> u64 + Send + 'static) -> Self {
        let stop = CancellationToken::new();
        if !bar.is_hidden() {
            let (bar, stop) = (bar.clone(), stop.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        _ = tick.tick() => bar.set_position(position()),
                    }
                }
            });
        }
        Self { bar, stop }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.cancel();
        self.bar.finish_and_clear();
    }
}
