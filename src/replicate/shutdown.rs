//! The shutdown signal passed into every replication task (only the command's edge knows
//! about OS signals): running, stopping with a deadline, or aborting.
//!
//! A stop gives the tasks until its deadline (`shutdown-sync-timeout`) for the final sync,
//! upload and verification; at the deadline, or on an abort (a second signal), whatever is
//! still in flight is cancelled. Tasks select on [`Shutdown::stopping`] while they run and
//! on [`Shutdown::aborted`] while they finish.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Where shutdown stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Finish the final sync and upload before `deadline`.
    Stopping {
        deadline: Instant,
    },
    /// Cancel everything now.
    Aborting,
}

/// The sending side, held by the command.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<Phase>);

/// The receiving side, cloned into every task.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<Phase>);

/// A new pair in the running phase.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(Phase::Running);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    /// Asks the tasks to finish within `timeout` (a no-op once stopping or aborting).
    pub fn stop(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        self.0.send_if_modified(|p| {
            if *p == Phase::Running {
                *p = Phase::Stopping { deadline };
                true
            } else {
                false
            }
        });
    }

    /// Cancels whatever is still running.
    pub fn abort(&self) {
        self.0.send_replace(Phase::Aborting);
    }

    /// A receiver for a task started later.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    pub fn phase(&self) -> Phase {
        *self.0.borrow()
    }

    pub fn is_running(&self) -> bool {
        self.phase() == Phase::Running
    }

    /// Resolves once a stop or an abort was asked for.
    pub async fn stopping(&mut self) {
        while self.phase() == Phase::Running {
            if self.0.changed().await.is_err() {
                return; // the trigger is gone: treat as a stop
            }
        }
    }

    /// Resolves on an abort or when the stop's deadline passes (never while running
    /// without a deadline).
    pub async fn aborted(&mut self) {
        loop {
            let deadline = match self.phase() {
                Phase::Aborting => return,
                Phase::Stopping { deadline } => Some(deadline),
                Phase::Running => None,
            };
            let changed = async {
                if self.0.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            match deadline {
                Some(d) => tokio::select! {
                    _ = tokio::time::sleep_until(d) => return,
                    _ = changed => {}
                },
                None => changed.await,
            }
        }
    }

    /// Time left before the deadline (zero when aborting, `None` while running).
    pub fn remaining(&self) -> Option<Duration> {
        match self.phase() {
            Phase::Running => None,
            Phase::Stopping { deadline } => {
                Some(deadline.saturating_duration_since(Instant::now()))
            }
            Phase::Aborting => Some(Duration::ZERO),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn aborted_fires_at_the_deadline_or_on_abort() {
        let (tx, mut rx) = channel();
        assert!(rx.is_running());
        tx.stop(Duration::from_secs(30));
        rx.stopping().await;
        let t0 = Instant::now();
        rx.aborted().await;
        assert_eq!(t0.elapsed(), Duration::from_secs(30));
        tx.stop(Duration::from_secs(1)); // ignored: already stopping
        let (tx, mut rx) = channel();
        tx.stop(Duration::from_secs(30));
        let waiter = tokio::spawn(async move {
            let t0 = Instant::now();
            rx.aborted().await;
            t0.elapsed()
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        tx.abort();
        assert_eq!(waiter.await.unwrap(), Duration::from_secs(2));
    }
}
