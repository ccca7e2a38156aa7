//! How the S3 client treats a server that stops answering: every request that makes no
//! progress for [`S3Tuning::stall_timeout`] is cancelled, its connection dropped, and the
//! attempt retried on a new connection; the stall is logged at once (then at most once per
//! [`STALL_LOG_INTERVAL`] with a count), and the error that finally surfaces says "no
//! progress", not "timeout".
//!
//! Progress means bytes: the SDK's stalled-stream protection fails a request or response
//! body that moves less than one byte per second over the stall timeout; a request whose
//! body was sent (or that has none) must see the response headers within the stall
//! timeout, plus the time its body needs at [`UPLOAD_MIN_RATE`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_s3::config::interceptors::FinalizerInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;

use aws_smithy_http_client::tls;

use super::{AttemptTrouble, S3Config, StorageError};

/// Idle pooled connections are closed after this long (hyper's default is 90 s): a
/// replicator is idle most of the time, and a connection to a server that froze cannot be
/// told from a healthy idle one until it is used.
const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Attempts per request, including the first. With the stall timeout this bounds an
/// unanswered request to about two minutes, and an unreachable endpoint (refused at once)
/// to a few seconds.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// No byte moving for this long ends an attempt. A healthy S3 server answers in
/// milliseconds; 20 s is the SDK's own stalled-stream grace period.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(20);
/// A request body is given this rate (64 KiB/s, about 0.5 Mbit/s: the slowest home
/// uplink a user may replicate over) before the wait for the response counts as a stall.
pub const UPLOAD_MIN_RATE: u64 = 64 * 1024;
/// One WARN per this interval while attempts keep stalling or failing to connect.
pub const STALL_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Retry and timeout tuning; tests shorten it.
#[derive(Debug, Clone)]
pub struct S3Tuning {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
    /// No progress for this long cancels an attempt.
    pub stall_timeout: Duration,
}

impl Default for S3Tuning {
    fn default() -> Self {
        S3Tuning {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            stall_timeout: DEFAULT_STALL_TIMEOUT,
        }
    }
}

impl S3Tuning {
    /// The time a request with a body of `len` bytes may take until its response headers.
    pub fn response_timeout(&self, len: u64) -> Duration {
        self.stall_timeout + Duration::from_secs(len / UPLOAD_MIN_RATE)
    }
}

/// Logs attempts that failed for lack of progress or connection, which the SDK then
/// retries silently: the first at once, then one line per interval with the count.
/// It also keeps the count and the latest failure ([`AttemptLogger::trouble`]) for the
/// replicator's health.
#[derive(Debug)]
pub struct AttemptLogger {
    endpoint: String,
    state: Mutex<(Option<Instant>, u64)>,
    trouble: Mutex<Option<AttemptTrouble>>,
}

/// The interceptor handle registered with the SDK (shares the logger with the client).
#[derive(Debug, Clone)]
pub struct SharedAttempts(pub std::sync::Arc<AttemptLogger>);

impl AttemptLogger {
    pub fn new(endpoint: String) -> Self {
        AttemptLogger {
            endpoint,
            state: Mutex::new((None, 0)),
            trouble: Mutex::new(None),
        }
    }

    /// Failed attempts so far and the latest one.
    pub fn trouble(&self) -> Option<AttemptTrouble> {
        self.trouble
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn note(&self, operation: &str, error: &str, stalled: bool) {
        {
            let mut t = self.trouble.lock().unwrap_or_else(|e| e.into_inner());
            let count = t.as_ref().map_or(0, |t| t.count) + 1;
            *t = Some(AttemptTrouble {
                count,
                stalled,
                message: format!("{operation}: {error}"),
            });
        }
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, suppressed) = &mut *g;
        if last.is_some_and(|t| t.elapsed() < STALL_LOG_INTERVAL) {
            *suppressed += 1;
            return;
        }
        let repeated = std::mem::take(suppressed);
        *last = Some(Instant::now());
        drop(g);
        if stalled {
            tracing::warn!(endpoint = %self.endpoint, operation, repeated, "S3 request made no progress within the stall timeout; cancelled, retrying on a new connection");
        } else {
            tracing::warn!(endpoint = %self.endpoint, operation, error, repeated, "S3 request attempt failed (no connection); retrying");
        }
    }
}

impl Intercept for SharedAttempts {
    fn name(&self) -> &'static str {
        "liteship-attempt-logger"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(Err(e)) = context.output_or_error()
            && (e.is_timeout_error() || e.is_connector_error() || is_stall_text(&e.to_string()))
        {
            let op = cfg.load::<Metadata>().map_or("request", |m| m.name());
            let stalled = e.is_timeout_error()
                || e.as_connector_error().is_some_and(|c| c.is_timeout())
                || is_stall_text(&e.to_string());
            let text = if stalled {
                "no progress within the stall timeout".to_string()
            } else {
                aws_smithy_types::error::display::DisplayErrorContext(e).to_string()
            };
            self.0.note(op, &text, stalled);
        }
        Ok(())
    }
}

/// Whether an error text is the SDK's stalled-stream protection firing.
pub fn is_stall_text(s: &str) -> bool {
    s.contains("minimum throughput") || s.contains("throughput of") || s.contains("stalled")
}

/// Whether an error text is the credential chain finding nothing.
pub fn is_credentials_text(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    l.contains("no credentials")
        || l.contains("credentials provider")
        || l.contains("credential provider")
        || l.contains("failed to load credentials")
        || l.contains("while loading credentials")
        || l.contains("identity resolver")
        || l.contains("credentialsnotloaded")
        || l.contains("provided credentials")
}

/// "outer: inner: root cause", each distinct message once (no Debug dumps).
pub(super) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let msg = e.to_string();
        if !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        cur = e.source();
    }
    // One line: chains from the credential provider carry newlines and indentation.
    parts
        .join(": ")
        .split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The HTTPS client: native roots plus the PEM bundle of `ca_bundle`, if any.
pub(super) fn http_client(
    cfg: &S3Config,
) -> Result<aws_smithy_runtime_api::client::http::SharedHttpClient, StorageError> {
    let mut trust = tls::TrustStore::default();
    if let Some(path) = &cfg.ca_bundle {
        let pem = std::fs::read(path)
            .map_err(|e| StorageError::io("read CA bundle", path.display(), e))?;
        trust = trust.with_pem_certificate(pem);
    }
    let ctx = tls::TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| StorageError::Other {
            op: "configure TLS",
            key: cfg
                .ca_bundle
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            message: e.to_string(),
        })?;
    Ok(aws_smithy_http_client::Builder::new()
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .tls_context(ctx)
        .build_https())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_timeout_grows_with_the_body() {
        let t = S3Tuning::default();
        assert_eq!(t.response_timeout(0), Duration::from_secs(20));
        assert_eq!(t.response_timeout(5 << 20), Duration::from_secs(20 + 80));
    }

    #[test]
    fn classifies_error_texts() {
        assert!(is_stall_text(
            "minimum throughput was specified at 1 B/s, but throughput of 0 B/s was observed"
        ));
        assert!(is_credentials_text(
            "failed to construct request: no providers in chain provided credentials"
        ));
        // The provider chain ending at an instance-metadata endpoint that answers 403.
        assert!(is_credentials_text(
            "dispatch failure: other: an error occurred while loading credentials: failed to load IMDS session token: service error: request forbidden: IMDS is disabled or the caller has insufficient permissions."
        ));
        assert!(!is_credentials_text("connection refused"));
    }
}
