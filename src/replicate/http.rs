//! `addr`: `/metrics` (Prometheus text), `/healthz` (the process is alive), `/readyz`
//! (200 when every database is ready; 503 with each database's state and reason) and
//! `/status` (JSON per database, for `liteship status`).
//!
//! Built so that nothing a client does can take resources from replication: at most
//! [`MAX_CONNECTIONS`] connections are accepted at once (further ones wait in the kernel's
//! backlog and cost no descriptor of ours), request headers must arrive within
//! [`HEADER_READ_TIMEOUT`], and a connection lives at most [`CONNECTION_TIMEOUT`] with no
//! keep-alive. A plain hyper server: three fixed routes need no framework.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use super::StartError;
use super::health::Health;
use super::metrics::Metrics;

/// Concurrent connections served. A Nomad check and a Prometheus scrape need one each;
/// 16 leaves room for people with curl without letting a client exhaust descriptors.
pub const MAX_CONNECTIONS: usize = 16;
/// A client must send its request headers within this time (slowloris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed after this time, whatever it is doing. Rendering the metrics of
/// hundreds of databases takes milliseconds.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait after a failed accept (e.g. EMFILE), so that the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(200);

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub healths: Vec<Arc<Health>>,
}

/// Answers one request.
pub fn respond(state: &HttpState, path: &str) -> (StatusCode, &'static str, String) {
    match path {
        "/metrics" => {
            for h in &state.healths {
                h.refresh_metrics();
            }
            (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                state.metrics.render(),
            )
        }
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".into()),
        "/status" => {
            let dbs: Vec<serde_json::Value> =
                state.healths.iter().map(|h| h.status_json()).collect();
            let body = serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "databases": dbs,
            });
            (StatusCode::OK, "application/json", format!("{body}\n"))
        }
        "/readyz" => {
            let problems: Vec<String> = state
                .healths
                .iter()
                .filter_map(|h| h.readiness().err())
                .collect();
            if problems.is_empty() {
                (StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    problems.join("\n") + "\n",
                )
            }
        }
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Binds `addr` (`:9090` means every interface, as in Litestream) and serves until the
/// returned task is aborted.
pub async fn serve(
    addr: &str,
    state: HttpState,
) -> Result<(tokio::task::JoinHandle<()>, SocketAddr), StartError> {
    let bind = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_string()
    };
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .map_err(|source| StartError::Listen {
            addr: bind.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| StartError::Listen {
        addr: bind.clone(),
        source,
    })?;
    tracing::info!(addr = %local, "serving /metrics, /healthz and /readyz");
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    Ok((tokio::spawn(accept_loop(listener, slots, state)), local))
}

async fn accept_loop(listener: tokio::net::TcpListener, slots: Arc<Semaphore>, state: HttpState) {
    let mut logged_error = false;
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                if !logged_error {
                    tracing::warn!(error = %e, "http: accept failed");
                    logged_error = true;
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (status, ctype, body) = respond(&state, req.uri().path());
                let resp = Response::builder()
                    .status(status)
                    .header(hyper::header::CONTENT_TYPE, ctype)
                    .body(Full::new(Bytes::from(body)))
                    .unwrap_or_default();
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
        });
    }
}
