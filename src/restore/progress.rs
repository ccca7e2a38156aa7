//! Progress of a long restore: bytes and files done, counted by every download path (the
//! streamed files and the parallel snapshot ranges), drawn as a progress bar on stderr
//! (bytes, files, rate, ETA) by indicatif when stderr is a terminal, and not at all
//! otherwise (logs and Nomad's task output stay clean).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shared counters of one restore, and the bar that shows them.
#[derive(Debug)]
pub struct Progress {
    total_bytes: u64,
    total_files: usize,
    bytes: AtomicU64,
    files: AtomicUsize,
    start: Instant,
    bar: ProgressBar,
}

impl Progress {
    /// Counters only; nothing is drawn.
    pub fn new(total_bytes: u64, total_files: usize) -> Arc<Progress> {
        Self::with_bar(total_bytes, total_files, ProgressBar::hidden())
    }

    /// Counters and a bar on stderr when `show` (stderr is a terminal and the caller wants
    /// one); indicatif also hides it by itself when stderr is not a terminal.
    pub fn shown(total_bytes: u64, total_files: usize, show: bool) -> Arc<Progress> {
        if !show {
            return Self::new(total_bytes, total_files);
        }
        let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes}, {msg}, {bytes_per_sec}, ETA {eta}",
        )
        .expect("valid progress template")
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix("restoring");
        bar.set_message(format!("0/{total_files} files"));
        bar.enable_steady_tick(Duration::from_millis(500));
        Self::with_bar(total_bytes, total_files, bar)
    }

    fn with_bar(total_bytes: u64, total_files: usize, bar: ProgressBar) -> Arc<Progress> {
        Arc::new(Progress {
            total_bytes,
            total_files,
            bytes: AtomicU64::new(0),
            files: AtomicUsize::new(0),
            start: Instant::now(),
            bar,
        })
    }

    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        self.bar.inc(n);
    }

    pub fn file_done(&self) {
        let done = self.files.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.bar.is_hidden() {
            self.bar
                .set_message(format!("{done}/{} files", self.total_files));
        }
    }

    /// Leaves the bar's final state on the terminal (no-op when hidden).
    pub fn finish(&self) {
        self.bar.finish();
    }

    /// `restoring: 12.0/100.0 MiB, 1/3 files, 40.0 MiB/s` (for logs and tests).
    pub fn line(&self) -> String {
        let mib = |b: u64| b as f64 / 1048576.0;
        let bytes = self.bytes.load(Ordering::Relaxed);
        let secs = self.start.elapsed().as_secs_f64().max(0.001);
        format!(
            "restoring: {:.1}/{:.1} MiB, {}/{} files, {:.1} MiB/s",
            mib(bytes),
            mib(self.total_bytes),
            self.files.load(Ordering::Relaxed),
            self.total_files,
            mib(bytes) / secs
        )
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // A restore that failed midway leaves no half-drawn bar behind its error.
        if !self.bar.is_finished() {
            self.bar.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_counts_bytes_and_files_from_every_path() {
        let p = Progress::new(3 * 1048576, 3);
        p.add_bytes(1048576);
        p.file_done();
        p.add_bytes(524288);
        let line = p.line();
        assert!(
            line.starts_with("restoring: 1.5/3.0 MiB, 1/3 files, "),
            "{line}"
        );
        assert!(line.ends_with(" MiB/s"), "{line}");
    }

    #[test]
    fn a_hidden_bar_counts_but_draws_nothing() {
        let p = Progress::shown(10, 2, false);
        p.add_bytes(10);
        p.file_done();
        p.finish();
        assert!(p.bar.is_hidden());
        assert_eq!(p.bar.position(), 10);
        assert!(p.line().starts_with("restoring: 0.0/0.0 MiB, 1/2 files"));
    }
}
