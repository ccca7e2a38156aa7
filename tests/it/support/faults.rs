//! A fault-injecting `ReplicaClient` wrapper: bodies break off after some bytes, and the
//! number of downloads in flight is recorded.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::SystemTime;

use async_trait::async_trait;
use liteship::replica::{
    Body, ByteReader, LtxFileInfo, Precondition, RawEntry, ReplicaClient, StorageError, Version,
};
use tokio::io::{AsyncRead, ReadBuf};

#[derive(Debug)]
pub struct Flaky<C> {
    pub inner: C,
    /// How many more opened bodies will break off.
    pub breaks_left: AtomicUsize,
    /// Bytes a breaking body delivers before the error.
    pub break_after: usize,
    pub in_flight: Arc<AtomicUsize>,
    pub max_in_flight: Arc<AtomicUsize>,
    /// Bytes requested by the reads in flight (ranged reads; a read to the end counts 0).
    pub in_flight_bytes: Arc<AtomicUsize>,
    pub max_in_flight_bytes: Arc<AtomicUsize>,
    pub opens: AtomicUsize,
    /// Only reads of at least this many bytes (or to the end) may break.
    pub break_min_len: u64,
    /// The level of every opened read, in order.
    pub opened_levels: std::sync::Mutex<Vec<u8>>,
    /// How many more writes at level `fail_writes_from` or above fail.
    pub write_failures_left: AtomicUsize,
    pub fail_writes_from: u8,
    /// Simulates a compaction by a running replicator during a restore: level 1 is hidden
    /// from listings until the first read of a level-0 file, which finds every level-0
    /// file gone (and later listings show level 1 instead of level 0).
    pub compaction_on_first_read: bool,
    pub compacted: std::sync::atomic::AtomicBool,
}

impl<C> Flaky<C> {
    pub fn new(inner: C, breaks: usize, break_after: usize) -> Self {
        Flaky {
            inner,
            breaks_left: AtomicUsize::new(breaks),
            break_after,
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            in_flight_bytes: Arc::default(),
            max_in_flight_bytes: Arc::default(),
            opens: AtomicUsize::new(0),
            break_min_len: 0,
            opened_levels: Default::default(),
            write_failures_left: AtomicUsize::new(0),
            fail_writes_from: u8::MAX,
            compaction_on_first_read: false,
            compacted: Default::default(),
        }
    }

    /// See [`Flaky::compaction_on_first_read`].
    pub fn compacting_on_first_read(mut self) -> Self {
        self.compaction_on_first_read = true;
        self
    }

    /// Fails the next `n` writes at `level` or above (as a server error would).
    pub fn failing_writes(mut self, n: usize, level: u8) -> Self {
        self.write_failures_left = AtomicUsize::new(n);
        self.fail_writes_from = level;
        self
    }

    /// Breaks only reads of at least `n` bytes (long ranged streams).
    pub fn breaking_long_reads(mut self, n: u64) -> Self {
        self.break_min_len = n;
        self
    }
}

struct Body2 {
    inner: ByteReader,
    left: Option<usize>,
    in_flight: Arc<AtomicUsize>,
    in_flight_bytes: Arc<AtomicUsize>,
    bytes: usize,
}

impl Drop for Body2 {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.in_flight_bytes.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

impl AsyncRead for Body2 {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.left == Some(0) {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "injected: connection reset",
            )));
        }
        let cap = self
            .left
            .map_or(buf.remaining(), |l| l.min(buf.remaining()));
        let mut limited = buf.take(cap);
        let res = self.inner.as_mut().poll_read(cx, &mut limited);
        let n = limited.filled().len();
        // SAFETY: `limited` wrote n initialized bytes into buf's unfilled region.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        if let Some(l) = self.left.as_mut() {
            *l -= n;
        }
        res
    }
}

#[async_trait]
impl<C: ReplicaClient> ReplicaClient for Flaky<C> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    fn key(&self, l: u8, a: u64, b: u64) -> String {
        self.inner.key(l, a, b)
    }
    async fn list(&self, level: u8) -> Result<Vec<LtxFileInfo>, StorageError> {
        if self.compaction_on_first_read {
            let compacted = self.compacted.load(Ordering::SeqCst);
            if (level == 0 && compacted) || (level == 1 && !compacted) {
                return Ok(Vec::new());
            }
        }
        self.inner.list(level).await
    }
    async fn open(
        &self,
        l: u8,
        a: u64,
        b: u64,
        off: u64,
        len: Option<u64>,
    ) -> Result<ByteReader, StorageError> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        self.opened_levels.lock().unwrap().push(l);
        if self.compaction_on_first_read && l == 0 {
            self.compacted.store(true, Ordering::SeqCst);
            return Err(StorageError::NotFound {
                key: self.inner.key(l, a, b),
            });
        }
        let inner = self.inner.open(l, a, b, off, len).await?;
        let long = len.is_none_or(|l| l >= self.break_min_len);
        let breaking = long
            && self
                .breaks_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let bytes = len.unwrap_or(0) as usize;
        let now = self.in_flight_bytes.fetch_add(bytes, Ordering::SeqCst) + bytes;
        self.max_in_flight_bytes.fetch_max(now, Ordering::SeqCst);
        // Hold the stream open a moment so concurrent downloads overlap measurably.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        Ok(Box::pin(Body2 {
            inner,
            left: breaking.then_some(self.break_after),
            in_flight: self.in_flight.clone(),
            in_flight_bytes: self.in_flight_bytes.clone(),
            bytes,
        }))
    }
    async fn write(
        &self,
        l: u8,
        a: u64,
        b: u64,
        body: Body,
        ts: i64,
    ) -> Result<LtxFileInfo, StorageError> {
        let fail = l >= self.fail_writes_from
            && self
                .write_failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if fail {
            return Err(StorageError::Other {
                op: "write",
                key: self.inner.key(l, a, b),
                message: "injected: 503 Service Unavailable".into(),
            });
        }
        self.inner.write(l, a, b, body, ts).await
    }
    async fn delete(&self, l: u8, f: &[(u64, u64)]) -> Result<(), StorageError> {
        self.inner.delete(l, f).await
    }
    async fn created_at(&self, l: u8, a: u64, b: u64) -> Result<SystemTime, StorageError> {
        self.inner.created_at(l, a, b).await
    }
    async fn read_lease(&self) -> Result<Option<(bytes::Bytes, Version)>, StorageError> {
        self.inner.read_lease().await
    }
    async fn write_lease(
        &self,
        body: bytes::Bytes,
        cond: Precondition,
    ) -> Result<Version, StorageError> {
        self.inner.write_lease(body, cond).await
    }
    async fn list_raw(&self, dir: &str) -> Result<Vec<RawEntry>, StorageError> {
        self.inner.list_raw(dir).await
    }
    async fn open_raw(&self, path: &str) -> Result<ByteReader, StorageError> {
        self.inner.open_raw(path).await
    }
}
