//! Parallel decoding of one large snapshot file (the first file of most restores, and most
//! of their bytes). The page index at the file's end gives every frame's offset, so the page
//! block is split at frame boundaries into a few long ranges, each streamed by one ranged
//! GET and decoded on its own thread, pages written straight to their offsets. Each range
//! is checksummed separately and the CRCs are combined, so the file checksum is still
//! verified over every byte before the output can appear.
//!
//! Few long requests instead of many short ones: the per-request cost on the S3 server,
//! not decoding, bounds a restore's speed. Memory: one read buffer and one page per range;
//! the index is streamed and checked entry by entry, keeping only the range boundaries, so
//! memory does not grow with the database (26 million index entries at 100 GiB).

use std::fs::File;
use std::io::{BufReader, Read};
use std::sync::Arc;

use tokio::io::AsyncReadExt;

use super::RestoreError;
use super::apply::{Merge, PageWriter};
use super::progress::Progress;
use crate::ltx::{
    CHECKSUM_FLAG, Decoder, FileHasher, HEADER_SIZE, Header, INDEX_LEN_SIZE, IndexReader,
    PAGE_HEADER_SIZE, TRAILER_SIZE, crc64, crc64_combine, lock_page,
};
use crate::replica::{ByteReader, LtxFileInfo, ReplicaClient, StorageError};
use crate::retry::{Backoff, is_retryable};

/// Files at least this large are decoded in parallel ranges.
pub const PARALLEL_MIN_SIZE: u64 = 16 * 1024 * 1024;
/// Each range covers at least this many bytes.
const MIN_RANGE: u64 = 8 * 1024 * 1024;
/// Read buffer per range.
const RANGE_BUFFER: usize = 256 * 1024;

/// What the parallel decode established about the snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    pub header: Header,
}

async fn get(
    client: &dyn ReplicaClient,
    f: &LtxFileInfo,
    off: u64,
    len: u64,
) -> Result<Vec<u8>, StorageError> {
    let mut r = client
        .open(f.level, f.min_txid, f.max_txid, off, Some(len))
        .await?;
    let mut buf = Vec::with_capacity(len as usize);
    r.read_to_end(&mut buf)
        .await
        .map_err(|e| StorageError::read(client.key(f.level, f.min_txid, f.max_txid), e))?;
    Ok(buf)
}

/// Decodes the snapshot `f` into `out` with up to `parallelism` ranges. It is the oldest
/// file of the plan, applied last: pages that `merge` says newer files wrote (or cut off)
/// are verified but not written.
pub async fn apply_snapshot(
    client: Arc<dyn ReplicaClient>,
    f: &LtxFileInfo,
    out: Arc<File>,
    parallelism: usize,
    merge: &mut Merge,
    progress: &Arc<Progress>,
) -> Result<Snapshot, RestoreError> {
    let key = client.key(f.level, f.min_txid, f.max_txid);
    let corrupt = |reason: String| RestoreError::Corrupt {
        key: key.clone(),
        reason,
    };
    let tail_len = (TRAILER_SIZE + INDEX_LEN_SIZE) as u64;
    if f.size < HEADER_SIZE as u64 + PAGE_HEADER_SIZE as u64 + tail_len {
        return Err(corrupt(format!(
            "{} bytes is too small for an LTX file",
            f.size
        )));
    }
    let head = get(client.as_ref(), f, 0, HEADER_SIZE as u64).await?;
    let header = Header::from_bytes(
        head.as_slice()
            .try_into()
            .map_err(|_| corrupt("short header".into()))?,
    )
    .map_err(|e| corrupt(e.to_string()))?;
    if (header.min_txid, header.max_txid) != (f.min_txid, f.max_txid) || !header.is_snapshot() {
        return Err(corrupt("header txids differ from the file name".into()));
    }
    merge.begin_file(f, &header).map_err(corrupt)?;
    let skip = Arc::new(merge.clone());
    let tail = get(client.as_ref(), f, f.size - tail_len, tail_len).await?;
    let index_len = u64::from_be_bytes(tail[..8].try_into().expect("8 bytes"));
    let index_start = (f.size - tail_len)
        .checked_sub(index_len)
        .ok_or_else(|| corrupt("page index longer than the file".into()))?;
    let stream = RangeStream {
        rt: tokio::runtime::Handle::current(),
        client: client.clone(),
        progress: progress.clone(),
    };
    let (f2, n) = (f.clone(), parallelism);
    let (ranges, index_crc) = tokio::task::spawn_blocking(move || {
        plan_ranges(stream, &f2, header, index_start, index_len, n)
    })
    .await
    .map_err(|e| RestoreError::Inconsistent(format!("restore task failed: {e}")))??;
    let mut tasks = Vec::new();
    for r in ranges {
        let (client, out, f2, skip) = (client.clone(), out.clone(), f.clone(), skip.clone());
        let rt = tokio::runtime::Handle::current();
        let progress = progress.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            let stream = RangeStream {
                rt,
                client,
                progress,
            };
            decode_range(stream, &f2, header, r, &out, &skip)
        }));
    }
    let mut crc = crc64(&head);
    for t in tasks {
        let (c, len) = t
            .await
            .map_err(|e| RestoreError::Inconsistent(format!("restore task failed: {e}")))??;
        crc = crc64_combine(crc, c, len);
    }
    let terminator = [0u8; PAGE_HEADER_SIZE];
    crc = crc64_combine(crc, crc64(&terminator), terminator.len() as u64);
    crc = crc64_combine(crc, index_crc, index_len);
    crc = crc64_combine(crc, crc64(&tail[..16]), 16); // index length + post-apply checksum
    let stored = u64::from_be_bytes(tail[16..24].try_into().expect("8 bytes"));
    if crc | CHECKSUM_FLAG != stored {
        return Err(corrupt(format!(
            "LTX file checksum mismatch: stored {stored:#018x}, computed {:#018x}",
            crc | CHECKSUM_FLAG
        )));
    }
    if u64::from_be_bytes(tail[8..16].try_into().expect("8 bytes")) != 0 && header.no_checksum() {
        return Err(corrupt(
            "post-apply checksum must be zero when NoChecksum is set".into(),
        ));
    }
    merge.snapshot_applied(&header);
    Ok(Snapshot { header })
}

/// One contiguous run of frames: pages `first..=last` (the lock page excluded) in the
/// bytes `start..end` of the file.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Range {
    first: u32,
    last: u32,
    start: u64,
    end: u64,
}

/// Streams the page index (`len` bytes at `index_start`), checks that it lists exactly the
/// pages `1..=commit` but the lock page, and cuts the page block into contiguous runs of
/// roughly equal bytes, at most `parallelism` and each at least [`MIN_RANGE`]. Returns the
/// runs and the plain CRC of the index bytes.
fn plan_ranges(
    stream: RangeStream,
    f: &LtxFileInfo,
    h: Header,
    index_start: u64,
    len: u64,
    parallelism: usize,
) -> Result<(Vec<Range>, u64), RestoreError> {
    let key = stream.client.key(f.level, f.min_txid, f.max_txid);
    let corrupt = |reason: String| RestoreError::Corrupt {
        key: key.clone(),
        reason,
    };
    let reader = RangeReader::new(stream, f, index_start, index_start + len);
    let hashing = HashingReader {
        inner: reader,
        hasher: FileHasher::new(),
    };
    let mut index = IndexReader::new(
        BufReader::with_capacity(RANGE_BUFFER, hashing),
        index_start,
        len,
    );
    let total = index_start.saturating_sub((HEADER_SIZE + PAGE_HEADER_SIZE) as u64);
    let n = (total / MIN_RANGE).clamp(1, parallelism.max(1) as u64);
    let per = total.div_ceil(n);
    let lock = lock_page(h.page_size);
    let mut want = (1..=h.commit).filter(|p| *p != lock);
    let (mut out, mut acc): (Vec<Range>, u64) = (Vec::new(), 0);
    loop {
        let e = match index.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(err) => {
                let inner = index.into_inner().into_inner();
                return Err(match inner.inner.failure {
                    Some(s) => RestoreError::Storage(s),
                    None => corrupt(err.to_string()),
                });
            }
        };
        if want.next() != Some(e.pgno) {
            return Err(corrupt(format!(
                "snapshot page index is not the sequence 1..={} (at page {})",
                h.commit, e.pgno
            )));
        }
        match out.last_mut() {
            Some(r) if acc < per => r.last = e.pgno,
            _ => {
                out.push(Range {
                    first: e.pgno,
                    last: e.pgno,
                    start: e.offset,
                    end: 0,
                });
                acc = 0;
            }
        }
        acc += e.len;
        out.last_mut().expect("one range").end = e.offset + e.len;
    }
    if want.next().is_some() {
        return Err(corrupt(format!(
            "snapshot page index ends before page {}",
            h.commit
        )));
    }
    let hashing = index.into_inner().into_inner();
    let (crc, hashed) = hashing.hasher.raw();
    if hashed != len {
        return Err(corrupt(format!("page index read {hashed} of {len} bytes")));
    }
    Ok((out, crc))
}

/// Hashes every byte read through it.
struct HashingReader<R> {
    inner: R,
    hasher: FileHasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// What a range decoder needs to stream its bytes.
struct RangeStream {
    rt: tokio::runtime::Handle,
    client: Arc<dyn ReplicaClient>,
    progress: Arc<Progress>,
}

/// Streams and decodes one range; returns its CRC and length.
fn decode_range(
    stream: RangeStream,
    f: &LtxFileInfo,
    header: Header,
    range: Range,
    out: &File,
    skip: &Merge,
) -> Result<(u64, u64), RestoreError> {
    let key = stream.client.key(f.level, f.min_txid, f.max_txid);
    let reader = RangeReader::new(stream, f, range.start, range.end);
    let mut dec = Decoder::range(
        BufReader::with_capacity(RANGE_BUFFER, reader),
        header,
        range.start,
    );
    let mut page = vec![0u8; header.page_size as usize];
    let mut writer = PageWriter::new(header.page_size);
    let write_err = |source: std::io::Error| RestoreError::Write {
        path: "the restore's temporary file".into(),
        db_bytes: Some(u64::from(header.commit) * u64::from(header.page_size)),
        source,
    };
    let lock = lock_page(header.page_size);
    let mut want = (range.first..=range.last).filter(|p| *p != lock);
    while dec.offset() < range.end {
        let at = dec.offset();
        let got = match dec.next_page(&mut page) {
            Ok(g) => g,
            Err(err) => {
                if let Some(s) = dec_failure(&mut dec) {
                    return Err(RestoreError::Storage(s));
                }
                return Err(RestoreError::Corrupt {
                    key,
                    reason: err.to_string(),
                });
            }
        };
        let Some(pgno) = got.filter(|p| want.next() == Some(*p) && dec.offset() <= range.end)
        else {
            return Err(RestoreError::Corrupt {
                key,
                reason: format!("the frame at offset {at} is not where the page index puts it"),
            });
        };
        if !skip.skips(pgno) {
            writer.put(out, pgno, &page).map_err(write_err)?;
        }
    }
    if want.next().is_some() {
        return Err(RestoreError::Corrupt {
            key,
            reason: format!(
                "the frames end at offset {} before page {} of the page index",
                range.end, range.last
            ),
        });
    }
    writer.flush(out).map_err(write_err)?;
    Ok(dec.range_checksum())
}

fn dec_failure(dec: &mut Decoder<BufReader<RangeReader>>) -> Option<StorageError> {
    dec.reader_mut().get_mut().failure.take()
}

/// A blocking `Read` over one byte range of an object, reopened from the current offset
/// when the stream breaks (with [`Backoff::RESUME`]).
struct RangeReader {
    rt: tokio::runtime::Handle,
    client: Arc<dyn ReplicaClient>,
    progress: Arc<Progress>,
    f: LtxFileInfo,
    pos: u64,
    end: u64,
    cur: Option<ByteReader>,
    failure: Option<StorageError>,
}

impl RangeReader {
    fn new(stream: RangeStream, f: &LtxFileInfo, start: u64, end: u64) -> RangeReader {
        RangeReader {
            rt: stream.rt,
            client: stream.client,
            progress: stream.progress,
            f: f.clone(),
            pos: start,
            end,
            cur: None,
            failure: None,
        }
    }
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.end {
            return Ok(0);
        }
        let mut attempt = 0;
        loop {
            let res = self.rt.block_on(async {
                if self.cur.is_none() {
                    let f = &self.f;
                    self.cur = Some(
                        self.client
                            .open(
                                f.level,
                                f.min_txid,
                                f.max_txid,
                                self.pos,
                                Some(self.end - self.pos),
                            )
                            .await?,
                    );
                }
                let want = buf.len().min((self.end - self.pos) as usize);
                let r = self.cur.as_mut().expect("opened");
                r.read(&mut buf[..want]).await.map_err(|e| {
                    StorageError::read(
                        self.client
                            .key(self.f.level, self.f.min_txid, self.f.max_txid),
                        e,
                    )
                })
            });
            let err = match res {
                Ok(0) => StorageError::Other {
                    op: "read",
                    key: self
                        .client
                        .key(self.f.level, self.f.min_txid, self.f.max_txid),
                    message: format!("object ended at byte {} of {}", self.pos, self.end),
                },
                Ok(n) => {
                    self.pos += n as u64;
                    self.progress.add_bytes(n as u64);
                    return Ok(n);
                }
                Err(e) => e,
            };
            self.cur = None;
            if !is_retryable(&err) || attempt >= Backoff::RESUME.max_retries {
                let msg = err.to_string();
                self.failure = Some(err);
                return Err(std::io::Error::other(msg));
            }
            tracing::warn!(offset = self.pos, error = %err, "download interrupted; resuming");
            std::thread::sleep(Backoff::RESUME.delay_random(attempt));
            attempt += 1;
        }
    }
}
