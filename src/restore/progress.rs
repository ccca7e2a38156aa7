//! Progress of a long restore: bytes and files done, counted by every download path (the
//! streamed files and the parallel snapshot ranges), shown on stderr twice a second when
//! stderr is a terminal.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Shared counters of one restore.
#[derive(Debug)]
pub struct Progress {
    total_bytes: u64,
    total_files: usize,
    bytes: AtomicU64,
    files: AtomicUsize,
    start: Instant,
}

impl Progress {
    pub fn new(total_bytes: u64, total_files: usize) -> Arc<Progress> {
        Arc::new(Progress {
            total_bytes,
            total_files,
            bytes: AtomicU64::new(0),
            files: AtomicUsize::new(0),
            start: Instant::now(),
        })
    }

    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub fn file_done(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
    }

    /// `restoring: 12.0/100.0 MiB, 1/3 files, 40.0 MiB/s`.
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

/// Prints [`Progress::line`] on stderr every 500 ms until dropped, then the final line.
pub struct Ticker {
    task: Option<(tokio::task::JoinHandle<()>, Arc<Progress>)>,
}

impl Ticker {
    /// A ticker that prints only when `enabled` (stderr is a terminal).
    pub fn start(p: Arc<Progress>, enabled: bool) -> Ticker {
        let task = enabled.then(|| {
            let shown = p.clone();
            let task = tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_millis(500));
                every.tick().await;
                loop {
                    every.tick().await;
                    eprint!("\r{}   ", p.line());
                }
            });
            (task, shown)
        });
        Ticker { task }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        if let Some((task, p)) = self.task.take() {
            task.abort();
            eprintln!("\r{}   ", p.line());
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
}
