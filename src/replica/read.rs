//! Reading a replica, shared by restore and replication: the listing of every level
//! ([`list_levels`]) and parallel ranged downloads delivered in order.
//!
//! The plan's files are cut into chunks of at most `chunk_size` bytes. Downloads run under
//! a byte budget of `parallelism * chunk_size` in flight, with at most [`MAX_IN_FLIGHT`]
//! requests: eight full chunks of a large file, or dozens of small level-0 files at once
//! (a young replica is hundreds of files of a few KiB, where per-request latency, not
//! bandwidth, is the limit). Chunks are delivered in plan order, each finished one handed
//! to the applier through a small bounded channel. Memory is therefore bounded by about
//! `(parallelism + CHANNEL_DEPTH) * chunk_size`, whatever the database size.
//!
//! A response body that breaks off is resumed with a new ranged GET from the byte where it
//! stopped, with backoff ([`Backoff::RESUME`]); the S3 SDK retries the requests themselves.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::{LtxFileInfo, MAX_LEVEL, ReplicaClient, StorageError};
use crate::retry::{Backoff, is_retryable};

/// Concurrent HEAD requests when creation times are read from object metadata.
const HEAD_CONCURRENCY: usize = 32;

/// Lists levels 0..=9, `concurrency` at a time (a restore wants them at once; the
/// replicator, one after the other, so that a server that stops answering holds one
/// connection, not ten). With `recorded_times`, replaces each creation time by the one
/// recorded at write time (S3 `litestream-timestamp` metadata, one HEAD per file), as
/// Litestream does for timestamp restores.
pub async fn list_levels(
    client: &dyn ReplicaClient,
    recorded_times: bool,
    concurrency: usize,
) -> Result<Vec<Vec<LtxFileInfo>>, StorageError> {
    let lists: Vec<Result<Vec<LtxFileInfo>, StorageError>> =
        futures::stream::iter((0..=MAX_LEVEL).map(|l| client.list(l)))
            .buffered(concurrency.max(1))
            .collect()
            .await;
    let mut levels: Vec<Vec<LtxFileInfo>> = lists.into_iter().collect::<Result<_, _>>()?;
    if recorded_times {
        for files in &mut levels {
            let ids: Vec<(u8, u64, u64)> = files
                .iter()
                .map(|f| (f.level, f.min_txid, f.max_txid))
                .collect();
            let times: Vec<Result<std::time::SystemTime, StorageError>> =
                futures::stream::iter(ids)
                    .map(|(l, a, b)| client.created_at(l, a, b))
                    .buffered(HEAD_CONCURRENCY)
                    .collect()
                    .await;
            for (f, t) in files.iter_mut().zip(times) {
                f.created_at = t?;
            }
        }
    }
    Ok(levels)
}

/// Finished chunks waiting for the applier.
const CHANNEL_DEPTH: usize = 2;

/// One byte range of one plan file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSpec {
    /// Index of the file in the plan.
    pub file: usize,
    pub level: u8,
    pub min_txid: u64,
    pub max_txid: u64,
    pub offset: u64,
    pub len: u64,
}

/// A downloaded chunk, or the error that stopped the downloads.
pub type ChunkResult = Result<(ChunkSpec, Bytes), StorageError>;

/// Cuts every file into ranges of at most `chunk_size` bytes, in plan order.
pub fn chunk_specs(files: &[LtxFileInfo], chunk_size: u64) -> Vec<ChunkSpec> {
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let mut off = 0;
        while off < f.size {
            let len = chunk_size.min(f.size - off);
            out.push(ChunkSpec {
                file: i,
                level: f.level,
                min_txid: f.min_txid,
                max_txid: f.max_txid,
                offset: off,
                len,
            });
            off += len;
        }
    }
    out
}

/// Requests in flight at most, however small the chunks (a young replica's level-0 files
/// are a few KiB each). Each in-flight request holds one pooled connection. Hundreds are
/// needed where a response arrives in two parts a delayed ACK apart: an S3 server that
/// leaves Nagle's algorithm on (Garage does) answers every small GET in ~40 ms whatever
/// its load, and a remote endpoint adds its round trip to each request the same way; 500
/// files at 64 in flight took eight such waits. Also bounded by the open-file limit
/// ([`max_in_flight`]).
pub const MAX_IN_FLIGHT: usize = 256;

/// [`MAX_IN_FLIGHT`], or fewer when the open-file limit leaves less than twice that many
/// descriptors spare (one socket each, and the rest for the process).
pub fn max_in_flight() -> usize {
    let soft = crate::fsutil::nofile_limit().map_or(1024, |(soft, _)| soft);
    let spare = usize::try_from(soft.saturating_sub(128) / 2).unwrap_or(usize::MAX);
    spare.clamp(8, MAX_IN_FLIGHT)
}

/// Starts the downloads; chunks arrive on the returned channel in plan order. The task
/// stops at the first error (which it sends) or when the receiver is dropped. In flight:
/// at most `parallelism * chunk_size` bytes (one chunk, whatever its size, when nothing
/// else is) and [`max_in_flight`] requests.
pub fn spawn_fetcher(
    client: Arc<dyn ReplicaClient>,
    specs: Vec<ChunkSpec>,
    parallelism: usize,
    chunk_size: u64,
) -> mpsc::Receiver<ChunkResult> {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let budget = chunk_size.max(1).saturating_mul(parallelism.max(1) as u64);
    let max_requests = max_in_flight().max(parallelism);
    tokio::spawn(async move {
        let mut pending = specs.into_iter().peekable();
        let mut inflight = futures::stream::FuturesOrdered::new();
        let mut bytes = 0u64;
        loop {
            while let Some(next) = pending.peek() {
                let fits = bytes + next.len <= budget && inflight.len() < max_requests;
                if !inflight.is_empty() && !fits {
                    break;
                }
                let spec = pending.next().expect("peeked");
                bytes += spec.len;
                let client = client.clone();
                inflight.push_back(async move {
                    let len = spec.len;
                    let res = fetch_chunk(client.as_ref(), &spec, &Backoff::RESUME).await;
                    (len, res.map(|data| (spec, data)))
                });
            }
            let Some((len, item)) = inflight.next().await else {
                return;
            };
            bytes -= len;
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// The last 8 bytes (the file checksum) of a replica file of `size` bytes.
pub async fn trailer(
    client: &dyn ReplicaClient,
    level: u8,
    min: u64,
    max: u64,
    size: u64,
) -> Result<[u8; 8], StorageError> {
    let mut r = client
        .open(level, min, max, size.saturating_sub(8), Some(8))
        .await?;
    let mut b = [0u8; 8];
    r.read_exact(&mut b)
        .await
        .map_err(|e| StorageError::read(client.key(level, min, max), e))?;
    Ok(b)
}

/// Chunk size of [`download_to_file`].
const DOWNLOAD_CHUNK: u64 = 1 << 20;

/// Downloads a whole file into `path` (created or truncated) in ranged chunks, two at a
/// time, each resumed where it broke off. Compaction reads its remote inputs this way.
pub async fn download_to_file(
    client: Arc<dyn ReplicaClient>,
    file: &LtxFileInfo,
    path: &std::path::Path,
) -> Result<(), StorageError> {
    use tokio::io::AsyncWriteExt;
    let io = |op, e| StorageError::io(op, path.display(), e);
    let mut out = tokio::fs::File::create(path)
        .await
        .map_err(|e| io("create", e))?;
    // Every chunk arrives whole or as an error (`fetch_chunk`), so the file ends up exactly
    // `file.size` bytes long without a separate check.
    let specs = chunk_specs(std::slice::from_ref(file), DOWNLOAD_CHUNK);
    let mut rx = spawn_fetcher(client, specs, 2, DOWNLOAD_CHUNK);
    while let Some(item) = rx.recv().await {
        let (_, data) = item?;
        out.write_all(&data).await.map_err(|e| io("write", e))?;
    }
    out.flush().await.map_err(|e| io("write", e))
}

/// Downloads one range, resuming from the current offset when the body breaks off.
pub async fn fetch_chunk(
    client: &dyn ReplicaClient,
    spec: &ChunkSpec,
    backoff: &Backoff,
) -> Result<Bytes, StorageError> {
    let key = || client.key(spec.level, spec.min_txid, spec.max_txid);
    let mut buf = BytesMut::with_capacity(spec.len as usize);
    let mut attempt = 0;
    loop {
        let got = buf.len() as u64;
        let res = read_range(client, spec, got, &mut buf).await;
        let err = match res {
            Ok(()) if buf.len() as u64 == spec.len => return Ok(buf.freeze()),
            Ok(()) => StorageError::Other {
                op: "read",
                key: key(),
                message: format!(
                    "object ended at byte {} of {}; it is shorter than listed (truncated object?)",
                    spec.offset + buf.len() as u64,
                    spec.offset + spec.len
                ),
            },
            Err(e) => e,
        };
        let progressed = buf.len() as u64 > got;
        if !is_retryable(&err) || attempt >= backoff.max_retries {
            return Err(err);
        }
        tracing::warn!(key = %key(), offset = spec.offset + buf.len() as u64, error = %err, "download interrupted; resuming");
        tokio::time::sleep(backoff.delay_random(attempt)).await;
        // A stream that made progress before breaking gets a fresh set of retries.
        attempt = if progressed { 0 } else { attempt + 1 };
    }
}

async fn read_range(
    client: &dyn ReplicaClient,
    spec: &ChunkSpec,
    done: u64,
    buf: &mut BytesMut,
) -> Result<(), StorageError> {
    let want = spec.len - done;
    let r = client
        .open(
            spec.level,
            spec.min_txid,
            spec.max_txid,
            spec.offset + done,
            Some(want),
        )
        .await?;
    // Never read past the range, even if a backend sends more.
    let mut r = r.take(want);
    loop {
        let n = r.read_buf(buf).await.map_err(|e| {
            StorageError::read(client.key(spec.level, spec.min_txid, spec.max_txid), e)
        })?;
        if n == 0 || buf.len() as u64 >= spec.len {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_byte_in_order() {
        let mk = |min, size| LtxFileInfo {
            level: 0,
            min_txid: min,
            max_txid: min,
            size,
            created_at: std::time::UNIX_EPOCH,
        };
        let specs = chunk_specs(&[mk(1, 10), mk(2, 3), mk(3, 0)], 4);
        let got: Vec<_> = specs.iter().map(|s| (s.file, s.offset, s.len)).collect();
        assert_eq!(got, vec![(0, 0, 4), (0, 4, 4), (0, 8, 2), (1, 0, 3)]);
    }
}
