//! Progress on stderr, drawn only when stderr is a terminal (indicatif hides it otherwise), so
//! piped and scheduled runs print only their logs and the summary.
#![allow(clippy::disallowed_macros)]

use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Default)]
pub struct Progress {
    enabled: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress {
    pub fn new(enabled: bool) -> Progress {
        Progress { enabled, bar: Mutex::new(None) }
    }

    /// A bar for `total` objects of `stream`.
    pub fn start(&self, stream: &str, total: u64) {
        if !self.enabled || total == 0 {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} objects, {msg} ({elapsed}, eta {eta})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(stream.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        *self.bar.lock().expect("progress lock") = Some(bar);
    }

    pub fn inc(&self) {
        if let Some(b) = self.bar.lock().expect("progress lock").as_ref() {
            b.inc(1);
        }
    }

    pub fn records(&self, n: u64) {
        if let Some(b) = self.bar.lock().expect("progress lock").as_ref() {
            b.set_message(format!("{n} records"));
        }
    }

    pub fn finish(&self) {
        if let Some(b) = self.bar.lock().expect("progress lock").take() {
            b.finish_and_clear();
        }
    }
}
