//! Exponential backoff with full jitter, and the policy of which errors are worth retrying.
//!
//! S3 requests are already retried inside the SDK (standard mode). This module covers what
//! the SDK cannot: a response body that breaks off mid-stream (resumed from the current
//! offset) and loops of our own (upload retries, shutdown sync). The randomness is
//! injectable so tests are deterministic.

use std::time::Duration;

use crate::replica::StorageError;

/// A backoff schedule: `base * 2^attempt`, capped at `max`, with full jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
}

impl Backoff {
    /// The schedule used to resume a dropped download: 250 ms, 500 ms, 1 s (+ jitter),
    /// as Litestream's resumable reader does, but with more tries.
    pub const RESUME: Backoff = Backoff {
        base: Duration::from_millis(250),
        max: Duration::from_secs(4),
        max_retries: 5,
    };

    /// The delay before retry number `attempt` (0-based), given `jitter` in `[0, 1)`.
    /// Half the delay is fixed and half is jitter, so retries never bunch up at zero.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempt.min(16));
        let capped = exp.min(self.max);
        capped / 2 + capped.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
    }

    /// The delay with jitter drawn from the thread RNG.
    pub fn delay_random(&self, attempt: u32) -> Duration {
        self.delay(attempt, rand::random::<f64>())
    }
}

/// Whether a storage error may go away by itself (network trouble, throttling, 5xx).
pub fn is_retryable(e: &StorageError) -> bool {
    match e {
        StorageError::NotFound { .. }
        | StorageError::Auth { .. }
        | StorageError::NoCredentials { .. }
        | StorageError::PreconditionFailed { .. }
        | StorageError::NoSuchBucket { .. } => false,
        StorageError::Unreachable { .. }
        | StorageError::Stalled { .. }
        | StorageError::Other { .. } => true,
        StorageError::Io { source, .. } => !matches!(
            source.kind(),
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::NotFound
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_cap() {
        let b = Backoff::RESUME;
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(125));
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(250));
        assert_eq!(b.delay(2, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(10, 1.0), Duration::from_secs(4), "capped");
        assert!(b.delay(30, 0.5) <= Duration::from_secs(4), "no overflow");
        for j in [0.0, 0.3, 0.99] {
            let d = b.delay(1, j);
            assert!(d >= Duration::from_millis(250) && d <= Duration::from_millis(500));
        }
    }

    #[test]
    fn retry_policy() {
        assert!(!is_retryable(&StorageError::NotFound { key: "k".into() }));
        assert!(!is_retryable(&StorageError::Auth {
            location: "l".into(),
            message: "m".into()
        }));
        assert!(is_retryable(&StorageError::Unreachable {
            endpoint: "e".into(),
            message: "m".into()
        }));
    }
}
