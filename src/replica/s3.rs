//! The `s3` replica backend in Litestream's S3 layout: `<path>/<level %04x>/<min>-<max>.ltx`,
//! with the `litestream-timestamp` object metadata (spec 2.1).
//!
//! Built for S3-compatible servers (MinIO, Garage, R2, B2) as well as AWS: custom endpoints,
//! path-style addressing, request checksums only "when required" (new SDK defaults break
//! non-AWS servers), extra CAs from a PEM bundle, and the SDK's standard retry strategy with
//! jittered exponential backoff on throttling, 5xx, timeouts and dropped connections, with an
//! unlimited retry-token bucket so long flaps never exhaust retries (spec 7 #25).

use std::time::SystemTime;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_sdk_s3::config::{
    Region, RequestChecksumCalculation, ResponseChecksumValidation, StalledStreamProtectionConfig,
    retry::RetryConfig, timeout::TimeoutConfig,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier, ServerSideEncryption,
};

use super::s3_net::{AttemptLogger, SharedAttempts, is_credentials_text, is_stall_text};
pub use super::s3_net::{DEFAULT_MAX_ATTEMPTS, S3Tuning};
use super::s3_net::{error_chain, http_client};
use super::sse::Sse;
use super::url::go_clean;
use super::{
    Body, ByteReader, LtxFileInfo, Precondition, RawEntry, ReplicaClient, S3Config, StorageError,
    Version,
};
use crate::ltx::{format_file_name, parse_file_name};
use crate::timefmt::{format_rfc3339_ms, parse_rfc3339};

/// Object metadata key holding the LTX header timestamp (RFC 3339, ms precision).
pub const TIMESTAMP_METADATA: &str = "litestream-timestamp";
/// CopyObject copies at most 5 GiB; larger files are uploaded instead.
const COPY_OBJECT_MAX: u64 = 5 << 30;
/// The characters of a key escaped in `x-amz-copy-source` (everything but unreserved
/// characters and the slashes between key segments).
const COPY_SOURCE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// DeleteObjects takes at most this many keys per request.
const DELETE_BATCH: usize = 1000;

/// A replica in an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Replica {
    client: aws_sdk_s3::Client,
    bucket: String,
    path: String,
    endpoint: String,
    part_size: u64,
    storage_class: Option<String>,
    sse: Option<Sse>,
    tuning: S3Tuning,
    attempts: std::sync::Arc<AttemptLogger>,
}

impl S3Replica {
    /// Builds the client. No request is sent to the server.
    pub async fn new(cfg: &S3Config, tuning: &S3Tuning) -> Result<Self, StorageError> {
        let endpoint = cfg
            .endpoint
            .clone()
            .unwrap_or_else(|| "https://s3.amazonaws.com".into());
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client(cfg)?)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(tuning.max_attempts)
                    .with_initial_backoff(tuning.initial_backoff)
                    .with_max_backoff(tuning.max_backoff),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(tuning.connect_timeout)
                    .read_timeout(tuning.stall_timeout)
                    .build(),
            )
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .grace_period(tuning.stall_timeout)
                    .build(),
            );
        if let (Some(id), Some(secret)) = (&cfg.access_key_id, &cfg.secret_access_key) {
            loader =
                loader.credentials_provider(Credentials::new(id, secret, None, None, "config"));
        }
        let region = cfg
            .region
            .clone()
            .or_else(|| cfg.endpoint.as_ref().map(|_| "us-east-1".to_string()));
        if let Some(r) = region {
            loader = loader.region(Region::new(r));
        }
        let sdk = loader.load().await;
        let attempts = SharedAttempts(std::sync::Arc::new(AttemptLogger::new(endpoint.clone())));
        let mut b = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(cfg.force_path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .interceptor(attempts.clone())
            .retry_partition(
                aws_sdk_s3::config::retry::RetryPartition::custom("liteship")
                    .token_bucket(aws_smithy_runtime::client::retries::TokenBucket::unlimited())
                    .build(),
            );
        if sdk.region().is_none() {
            b = b.region(Region::new("us-east-1"));
        }
        if let Some(ep) = &cfg.endpoint {
            b = b.endpoint_url(ep);
        }
        Ok(S3Replica {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            bucket: cfg.bucket.clone(),
            path: cfg.path.clone(),
            endpoint,
            part_size: cfg.part_size,
            storage_class: cfg.storage_class.clone(),
            sse: cfg.sse.clone(),
            tuning: tuning.clone(),
            attempts: attempts.0,
        })
    }

    /// Timeouts for a request carrying `len` body bytes: the response may take as long as
    /// the body needs at the minimum upload rate, plus the stall timeout.
    fn body_timeouts(&self, len: u64) -> aws_sdk_s3::config::Builder {
        aws_sdk_s3::config::Builder::default().timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(self.tuning.connect_timeout)
                .read_timeout(self.tuning.response_timeout(len))
                .build(),
        )
    }

    /// SSE-C request fields (algorithm, key, key MD5), or `None`s.
    fn sse_c(&self) -> (Option<String>, Option<String>, Option<String>) {
        Sse::customer_fields(self.sse.as_ref())
    }

    /// SSE-KMS request fields (`aws:kms`, key id), or `None`s.
    fn sse_kms(&self) -> (Option<ServerSideEncryption>, Option<String>) {
        match &self.sse {
            Some(Sse::Kms { key_id }) => (Some(ServerSideEncryption::AwsKms), key_id.clone()),
            _ => (None, None),
        }
    }

    fn lease_key(&self) -> String {
        format!("{}/{}", self.path, super::LEASE_NAME)
    }

    fn level_prefix(&self, level: u8) -> String {
        format!("{}/{level:04x}/", self.path)
    }

    fn object_key(&self, level: u8, min_txid: u64, max_txid: u64) -> String {
        format!(
            "{}{}",
            self.level_prefix(level),
            format_file_name(min_txid, max_txid)
        )
    }

    /// Converts an SDK error into the storage error contract.
    fn map_err<E>(&self, op: &'static str, key: &str, err: SdkError<E>) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match &err {
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                let code = se.err().code().unwrap_or("");
                let message = se.err().message().unwrap_or("").to_string();
                let lower = message.to_ascii_lowercase();
                if (status == 400 || status == 403)
                    && (lower.contains("encrypt") || lower.contains("sse-c"))
                {
                    return StorageError::Other {
                        op,
                        key: key.into(),
                        message: format!(
                            "{code} {message} (HTTP {status}); the object is encrypted with SSE-C: set sse-customer-key (or sse-customer-key-path) in the replica's config to the key it was written with"
                        ),
                    };
                }
                if status == 412
                    || code == "PreconditionFailed"
                    || code == "ConditionalRequestConflict"
                {
                    return StorageError::PreconditionFailed { key: key.into() };
                }
                match code {
                    "RequestTimeTooSkewed" => StorageError::Other {
                        op,
                        key: key.into(),
                        message: format!(
                            "{code} {message} (HTTP {status}): this host's clock differs from the server's; synchronise it (NTP)"
                        ),
                    },
                    "NoSuchKey" => StorageError::NotFound { key: key.into() },
                    "NoSuchBucket" => self.no_such_bucket(),
                    "InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "AccessDenied"
                    | "InvalidToken"
                    | "ExpiredToken" => self.auth(code, &message),
                    _ if status == 403 => self.auth(code, &message),
                    _ if status == 404 && op == "head" => {
                        StorageError::NotFound { key: key.into() }
                    }
                    _ => StorageError::Other {
                        op,
                        key: key.into(),
                        message: format!("{code} {message} (HTTP {status})")
                            .trim()
                            .to_string(),
                    },
                }
            }
            _ => {
                let chain = error_chain(&err);
                if is_credentials_text(&chain) {
                    StorageError::NoCredentials {
                        location: format!("{} (bucket {:?})", self.endpoint, self.bucket),
                        message: chain,
                    }
                } else if matches!(err, SdkError::TimeoutError(_))
                    || is_stall_text(&chain)
                    || matches!(&err, SdkError::DispatchFailure(d) if d.is_timeout())
                {
                    StorageError::Stalled {
                        op,
                        key: key.into(),
                        endpoint: self.endpoint.clone(),
                        after: self.tuning.stall_timeout,
                    }
                } else if matches!(err, SdkError::DispatchFailure(_)) {
                    let message = if chain.contains("invalid peer certificate") {
                        format!(
                            "{chain} (the server's TLS certificate is not trusted: if a private certificate authority signed it, set AWS_CA_BUNDLE to that authority's PEM file)"
                        )
                    } else {
                        chain
                    };
                    StorageError::Unreachable {
                        endpoint: self.endpoint.clone(),
                        message,
                    }
                } else {
                    StorageError::Other {
                        op,
                        key: key.into(),
                        message: chain,
                    }
                }
            }
        }
    }

    fn auth(&self, code: &str, message: &str) -> StorageError {
        StorageError::Auth {
            location: format!("{} (bucket {:?})", self.endpoint, self.bucket),
            message: format!("{code} {message}").trim().to_string(),
        }
    }

    fn no_such_bucket(&self) -> StorageError {
        StorageError::NoSuchBucket {
            bucket: self.bucket.clone(),
            endpoint: self.endpoint.clone(),
        }
    }

    /// Creates `key` (never replacing it: `If-None-Match: *`).
    async fn put(
        &self,
        key: &str,
        body: ByteStream,
        len: u64,
        ts: &str,
    ) -> Result<(), StorageError> {
        let (c_alg, c_key, c_md5) = self.sse_c();
        let (kms, kms_key) = self.sse_kms();
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .if_none_match("*")
            .content_length(len as i64)
            .metadata(TIMESTAMP_METADATA, ts)
            .set_storage_class(self.storage_class.as_deref().map(Into::into))
            .set_sse_customer_algorithm(c_alg)
            .set_sse_customer_key(c_key)
            .set_sse_customer_key_md5(c_md5)
            .set_server_side_encryption(kms)
            .set_ssekms_key_id(kms_key)
            .body(body)
            .customize()
            .config_override(self.body_timeouts(len))
            .send()
            .await
            .map_err(|e| self.map_err("put", key, e))?;
        Ok(())
    }

    async fn put_multipart(
        &self,
        key: &str,
        path: &std::path::Path,
        size: u64,
        ts: &str,
    ) -> Result<(), StorageError> {
        let (c_alg, c_key, c_md5) = self.sse_c();
        let (kms, kms_key) = self.sse_kms();
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .metadata(TIMESTAMP_METADATA, ts)
            .set_storage_class(self.storage_class.as_deref().map(Into::into))
            .set_sse_customer_algorithm(c_alg)
            .set_sse_customer_key(c_key)
            .set_sse_customer_key_md5(c_md5)
            .set_server_side_encryption(kms)
            .set_ssekms_key_id(kms_key)
            .send()
            .await
            .map_err(|e| self.map_err("create multipart upload", key, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let res = self.upload_parts(key, path, size, &upload_id).await;
        match res {
            Ok(parts) => {
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .if_none_match("*")
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| self.map_err("complete multipart upload", key, e))?;
                Ok(())
            }
            Err(e) => {
                let abort = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                if let Err(ae) = abort {
                    tracing::warn!(key, error = %DisplayErrorContext(&ae), "abort multipart upload failed");
                }
                Err(e)
            }
        }
    }

    /// Uploads `path` as the parts of `upload_id`. Each part's body streams from its range
    /// of the file (64 KiB at a time; a retried attempt reads the range again), so memory
    /// does not grow with the part size: a 5 MiB part held in a buffer was a replicator's
    /// peak RSS at every level-1 compaction of a busy database.
    async fn upload_parts(
        &self,
        key: &str,
        path: &std::path::Path,
        size: u64,
        upload_id: &str,
    ) -> Result<Vec<CompletedPart>, StorageError> {
        let part_size = super::url::effective_part_size(self.part_size, size);
        let count = size.div_ceil(part_size).max(1);
        let mut parts = Vec::new();
        for number in 1..=count {
            let offset = (number - 1) * part_size;
            let len = part_size.min(size - offset);
            let body = file_body(path, offset, len).await?;
            let (c_alg, c_key, c_md5) = self.sse_c();
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number as i32)
                .content_length(len as i64)
                .set_sse_customer_algorithm(c_alg)
                .set_sse_customer_key(c_key)
                .set_sse_customer_key_md5(c_md5)
                .body(body)
                .customize()
                .config_override(self.body_timeouts(len))
                .send()
                .await
                .map_err(|e| self.map_err("upload part", key, e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number as i32)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build(),
            );
        }
        Ok(parts)
    }
}

/// A request body streamed from `len` bytes of `path` at `offset` (64 KiB reads; a
/// retried attempt reads the range again). A file shorter than that fails the request.
async fn file_body(
    path: &std::path::Path,
    offset: u64,
    len: u64,
) -> Result<ByteStream, StorageError> {
    ByteStream::read_from()
        .path(path)
        .offset(offset)
        .length(aws_smithy_types::byte_stream::Length::Exact(len))
        .build()
        .await
        .map_err(|e| StorageError::Other {
            op: "read",
            key: path.display().to_string(),
            message: e.to_string(),
        })
}

#[async_trait]
impl ReplicaClient for S3Replica {
    fn kind(&self) -> &'static str {
        "s3"
    }

    fn location(&self) -> String {
        format!("s3://{}/{} at {}", self.bucket, self.path, self.endpoint)
    }

    fn attempt_trouble(&self) -> Option<super::AttemptTrouble> {
        self.attempts.trouble()
    }

    async fn read_lease(&self) -> Result<Option<(bytes::Bytes, Version)>, StorageError> {
        let key = self.lease_key();
        let (c_alg, c_key, c_md5) = self.sse_c();
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .set_sse_customer_algorithm(c_alg)
            .set_sse_customer_key(c_key)
            .set_sse_customer_key_md5(c_md5)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) => {
                return match self.map_err("get", &key, e) {
                    StorageError::NotFound { .. } => Ok(None),
                    other => Err(other),
                };
            }
        };
        let version = Version(out.e_tag().unwrap_or_default().to_string());
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| StorageError::Other {
                op: "read",
                key: key.clone(),
                message: e.to_string(),
            })?
            .into_bytes();
        Ok(Some((body, version)))
    }

    async fn write_lease(
        &self,
        body: bytes::Bytes,
        cond: Precondition,
    ) -> Result<Version, StorageError> {
        let key = self.lease_key();
        let (c_alg, c_key, c_md5) = self.sse_c();
        let (kms, kms_key) = self.sse_kms();
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_length(body.len() as i64)
            .set_sse_customer_algorithm(c_alg)
            .set_sse_customer_key(c_key)
            .set_sse_customer_key_md5(c_md5)
            .set_server_side_encryption(kms)
            .set_ssekms_key_id(kms_key)
            .body(ByteStream::from(body));
        req = match cond {
            Precondition::Absent => req.if_none_match("*"),
            Precondition::Matches(v) => req.if_match(v.0),
        };
        let out = req.send().await.map_err(|e| self.map_err("put", &key, e))?;
        Ok(Version(out.e_tag().unwrap_or_default().to_string()))
    }

    fn key(&self, level: u8, min_txid: u64, max_txid: u64) -> String {
        self.object_key(level, min_txid, max_txid)
    }

    async fn list(&self, level: u8) -> Result<Vec<LtxFileInfo>, StorageError> {
        let prefix = self.level_prefix(level);
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.map_err("list", &prefix, e))?;
            for obj in page.contents() {
                let Some(name) = obj.key().and_then(|k| k.strip_prefix(prefix.as_str())) else {
                    continue;
                };
                let Some((min_txid, max_txid)) = parse_file_name(name) else {
                    continue;
                };
                let created_at = obj
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                out.push(LtxFileInfo {
                    level,
                    min_txid,
                    max_txid,
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    created_at,
                });
            }
        }
        out.sort_by_key(|f| (f.min_txid, f.max_txid));
        Ok(out)
    }

    async fn open(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
        offset: u64,
        len: Option<u64>,
    ) -> Result<ByteReader, StorageError> {
        let key = self.object_key(level, min_txid, max_txid);
        let range = match len {
            Some(0) => return Ok(Box::pin(tokio::io::empty())),
            Some(n) => format!("bytes={offset}-{}", offset + n - 1),
            None => format!("bytes={offset}-"),
        };
        let (c_alg, c_key, c_md5) = self.sse_c();
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .range(range)
            .set_sse_customer_algorithm(c_alg)
            .set_sse_customer_key(c_key)
            .set_sse_customer_key_md5(c_md5)
            .send()
            .await
            .map_err(|e| self.map_err("get", &key, e))?;
        Ok(Box::pin(out.body.into_async_read()))
    }

    async fn write(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
        body: Body,
        timestamp_ms: i64,
    ) -> Result<LtxFileInfo, StorageError> {
        let key = self.object_key(level, min_txid, max_txid);
        let ts = format_rfc3339_ms(timestamp_ms);
        let size = match body {
            Body::Bytes(b) => {
                let n = b.len() as u64;
                self.put(&key, ByteStream::from(b), n, &ts).await?;
                n
            }
            Body::File(path) => {
                let n = tokio::fs::metadata(&path)
                    .await
                    .map_err(|e| StorageError::io("stat", path.display(), e))?
                    .len();
                if n < self.part_size {
                    let stream = file_body(&path, 0, n).await?;
                    self.put(&key, stream, n, &ts).await?;
                } else {
                    self.put_multipart(&key, &path, n, &ts).await?;
                }
                n
            }
        };
        Ok(LtxFileInfo {
            level,
            min_txid,
            max_txid,
            size,
            created_at: super::system_time_from_ms(timestamp_ms),
        })
    }

    async fn copy(&self, src: &LtxFileInfo, level: u8) -> Result<LtxFileInfo, StorageError> {
        let (from, key) = (
            self.object_key(src.level, src.min_txid, src.max_txid),
            self.object_key(level, src.min_txid, src.max_txid),
        );
        if src.size > COPY_OBJECT_MAX {
            return Err(StorageError::Other {
                op: "copy",
                key: from,
                message: "larger than one CopyObject can copy (5 GiB)".into(),
            });
        }
        let source = format!(
            "{}/{}",
            self.bucket,
            percent_encoding::utf8_percent_encode(&from, COPY_SOURCE)
        );
        let (c_alg, c_key, c_md5) = self.sse_c();
        let (kms, kms_key) = self.sse_kms();
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(&key)
            .copy_source(source)
            .if_none_match("*")
            .set_storage_class(self.storage_class.as_deref().map(Into::into))
            .set_copy_source_sse_customer_algorithm(c_alg.clone())
            .set_copy_source_sse_customer_key(c_key.clone())
            .set_copy_source_sse_customer_key_md5(c_md5.clone())
            .set_sse_customer_algorithm(c_alg)
            .set_sse_customer_key(c_key)
            .set_sse_customer_key_md5(c_md5)
            .set_server_side_encryption(kms)
            .set_ssekms_key_id(kms_key)
            .customize()
            .config_override(self.body_timeouts(src.size))
            .send()
            .await
            .map_err(|e| self.map_err("copy", &key, e))?;
        Ok(LtxFileInfo {
            level,
            ..src.clone()
        })
    }

    async fn delete(&self, level: u8, files: &[(u64, u64)]) -> Result<(), StorageError> {
        for batch in files.chunks(DELETE_BATCH) {
            let ids = batch
                .iter()
                .map(|(a, b)| {
                    ObjectIdentifier::builder()
                        .key(self.object_key(level, *a, *b))
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StorageError::Other {
                    op: "delete",
                    key: self.level_prefix(level),
                    message: e.to_string(),
                })?;
            let delete = Delete::builder()
                .set_objects(Some(ids))
                .quiet(true)
                .build()
                .map_err(|e| StorageError::Other {
                    op: "delete",
                    key: self.level_prefix(level),
                    message: e.to_string(),
                })?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| self.map_err("delete", &self.level_prefix(level), e))?;
            if let Some(err) = out.errors().iter().find(|e| e.code() != Some("NoSuchKey")) {
                return Err(StorageError::Other {
                    op: "delete",
                    key: err.key().unwrap_or_default().to_string(),
                    message: format!(
                        "{} {}",
                        err.code().unwrap_or_default(),
                        err.message().unwrap_or_default()
                    ),
                });
            }
        }
        Ok(())
    }

    async fn created_at(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
    ) -> Result<SystemTime, StorageError> {
        let key = self.object_key(level, min_txid, max_txid);
        let (c_alg, c_key, c_md5) = self.sse_c();
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .set_sse_customer_algorithm(c_alg)
            .set_sse_customer_key(c_key)
            .set_sse_customer_key_md5(c_md5)
            .send()
            .await
            .map_err(|e| self.map_err("head", &key, e))?;
        let from_meta = out
            .metadata()
            .and_then(|m| m.get(TIMESTAMP_METADATA))
            .and_then(|s| parse_rfc3339(s));
        let modified = out
            .last_modified()
            .and_then(|t| SystemTime::try_from(*t).ok());
        Ok(from_meta.or(modified).unwrap_or(SystemTime::UNIX_EPOCH))
    }

    async fn list_raw(&self, dir: &str) -> Result<Vec<RawEntry>, StorageError> {
        // Litestream 0.3 joined keys with path.Join, which cleans the path.
        let prefix = format!("{}/", go_clean(&format!("{}/{dir}", self.path)));
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.map_err("list", &prefix, e))?;
            for p in page.common_prefixes() {
                if let Some(name) = p.prefix().and_then(|k| k.strip_prefix(prefix.as_str())) {
                    out.push(RawEntry {
                        name: name.trim_end_matches('/').to_string(),
                        size: 0,
                        modified: SystemTime::UNIX_EPOCH,
                        is_dir: true,
                    });
                }
            }
            for obj in page.contents() {
                if let Some(name) = obj.key().and_then(|k| k.strip_prefix(prefix.as_str())) {
                    out.push(RawEntry {
                        name: name.to_string(),
                        size: obj.size().unwrap_or(0).max(0) as u64,
                        modified: obj
                            .last_modified()
                            .and_then(|t| SystemTime::try_from(*t).ok())
                            .unwrap_or(SystemTime::UNIX_EPOCH),
                        is_dir: false,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn open_raw(&self, path: &str) -> Result<ByteReader, StorageError> {
        let key = go_clean(&format!("{}/{path}", self.path));
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| self.map_err("get", &key, e))?;
        Ok(Box::pin(out.body.into_async_read()))
    }
}
