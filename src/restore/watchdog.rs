//! A restore against a server that stops answering must fail in bounded time, not hang a
//! prestart task for minutes of silent retries. [`Watched`] wraps the replica client and
//! notes the time of every answer and every byte received; [`Watchdog::expired`] resolves
//! when nothing arrived for the stall timeout (`-stall-timeout`, default
//! [`DEFAULT_STALL_TIMEOUT`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use async_trait::async_trait;
use tokio::io::{AsyncRead, ReadBuf};

use crate::replica::{
    Body, ByteReader, LtxFileInfo, Precondition, RawEntry, ReplicaClient, StorageError, Version,
};

/// No answer and no byte from the replica for this long fails the restore. Long enough for
/// the S3 client's own retries of a dropped connection (a few stall periods), short enough
/// that a prestart task fails within about two minutes.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(120);

/// How often the watchdog looks at the clock.
const TICK: Duration = Duration::from_millis(250);

/// The time of the last progress, shared by the wrapper and the watchdog.
#[derive(Debug)]
pub struct Watchdog {
    start: Instant,
    last_ms: AtomicU64,
    timeout: Duration,
}

impl Watchdog {
    pub fn new(timeout: Duration) -> Arc<Watchdog> {
        Arc::new(Watchdog {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            timeout,
        })
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    /// Resolves once nothing arrived for the timeout (never, for a zero timeout).
    pub async fn expired(&self) -> Duration {
        if self.timeout.is_zero() {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(TICK).await;
            let idle = self.idle();
            if idle >= self.timeout {
                return idle;
            }
        }
    }
}

/// A client whose answers and bytes feed a [`Watchdog`].
#[derive(Debug)]
pub struct Watched {
    inner: Arc<dyn ReplicaClient>,
    dog: Arc<Watchdog>,
}

impl Watched {
    pub fn wrap(inner: Arc<dyn ReplicaClient>, dog: Arc<Watchdog>) -> Arc<dyn ReplicaClient> {
        Arc::new(Watched { inner, dog })
    }

    fn seen<T>(&self, r: Result<T, StorageError>) -> Result<T, StorageError> {
        if r.is_ok() {
            self.dog.touch();
        }
        r
    }
}

struct Reader {
    inner: ByteReader,
    dog: Arc<Watchdog>,
}

impl AsyncRead for Reader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = self.inner.as_mut().poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.dog.touch();
        }
        res
    }
}

#[async_trait]
impl ReplicaClient for Watched {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    fn key(&self, level: u8, min_txid: u64, max_txid: u64) -> String {
        self.inner.key(level, min_txid, max_txid)
    }

    async fn list(&self, level: u8) -> Result<Vec<LtxFileInfo>, StorageError> {
        self.seen(self.inner.list(level).await)
    }

    async fn open(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
        offset: u64,
        len: Option<u64>,
    ) -> Result<ByteReader, StorageError> {
        let r = self.seen(
            self.inner
                .open(level, min_txid, max_txid, offset, len)
                .await,
        )?;
        Ok(Box::pin(Reader {
            inner: r,
            dog: self.dog.clone(),
        }))
    }

    async fn write(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
        body: Body,
        timestamp_ms: i64,
    ) -> Result<LtxFileInfo, StorageError> {
        self.seen(
            self.inner
                .write(level, min_txid, max_txid, body, timestamp_ms)
                .await,
        )
    }

    async fn delete(&self, level: u8, files: &[(u64, u64)]) -> Result<(), StorageError> {
        self.seen(self.inner.delete(level, files).await)
    }

    async fn created_at(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
    ) -> Result<SystemTime, StorageError> {
        self.seen(self.inner.created_at(level, min_txid, max_txid).await)
    }

    async fn read_lease(&self) -> Result<Option<(bytes::Bytes, Version)>, StorageError> {
        self.seen(self.inner.read_lease().await)
    }

    async fn write_lease(
        &self,
        body: bytes::Bytes,
        cond: Precondition,
    ) -> Result<Version, StorageError> {
        self.seen(self.inner.write_lease(body, cond).await)
    }

    async fn list_raw(&self, dir: &str) -> Result<Vec<RawEntry>, StorageError> {
        self.seen(self.inner.list_raw(dir).await)
    }

    async fn open_raw(&self, path: &str) -> Result<ByteReader, StorageError> {
        let r = self.seen(self.inner.open_raw(path).await)?;
        Ok(Box::pin(Reader {
            inner: r,
            dog: self.dog.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn expires_only_after_the_timeout_without_progress() {
        let dog = Watchdog::new(Duration::from_secs(10));
        let d2 = dog.clone();
        let t0 = tokio::time::Instant::now();
        let waiter = tokio::spawn(async move { d2.expired().await });
        tokio::time::sleep(Duration::from_secs(6)).await;
        dog.touch();
        let idle = waiter.await.unwrap();
        assert!(idle >= Duration::from_secs(10));
        assert!(
            t0.elapsed() >= Duration::from_secs(16),
            "{:?}",
            t0.elapsed()
        );
    }
}
