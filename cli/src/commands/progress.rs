//! Progress bars for byte counts (uploads, transfers, downloads) on stderr, shown only to a
//! person: never with `--json` and never when stdout is not a terminal (a script or a pipe reads
//! it), so that everything a program might parse stays clean.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output::Output;

/// Redraws per second: enough to look live, few enough not to cost anything.
const REFRESH_HZ: u8 = 8;
const TEMPLATE: &str =
    "{prefix:>10} {msg:<9} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}";

/// A bar, or nothing when bars are off; every method is a no-op then.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar over `total` bytes labelled `prefix` (e.g. "upload"), when `out` is for a person.
    pub fn bytes(out: Output, prefix: &str, total: u64) -> Self {
        if !wanted(out) {
            return Self { bar: None };
        }
        let style = ProgressStyle::with_template(TEMPLATE)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(REFRESH_HZ))
            .with_style(style)
            .with_prefix(prefix.to_owned());
        Self { bar: Some(bar) }
    }

    pub fn set(&self, done: u64, total: u64) {
        if let Some(bar) = &self.bar {
            if bar.length() != Some(total) {
                bar.set_length(total);
            }
            // A resumed transfer may jump; a restarted upload may go back to zero.
            if done < bar.position() {
                bar.reset_eta();
            }
            bar.set_position(done);
        }
    }

    pub fn message(&self, text: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(text.to_owned());
        }
    }

    /// Print a line above the bar without tearing it (or on stderr when there is no bar).
    pub fn notice(&self, out: Output, text: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| out.notice(text)),
            None => out.notice(text),
        }
    }

    /// Remove the bar from the screen.
    pub fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Bars are for a person at a terminal reading text.
fn wanted(out: Output) -> bool {
    !out.is_json() && std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}
