//! `addr`: `/metrics` (Prometheus text), `/healthz` (the process is alive) and `/readyz`
//! (200 once every database has a durable snapshot in the replica and no staged file has
//! waited longer than the allowed lag; 503 with the reason otherwise).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use super::metrics::Metrics;
use super::status::Status;

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub statuses: Vec<Arc<Status>>,
    pub max_lag: Duration,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(
    State(s): State<HttpState>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        s.metrics.render(),
    )
}

async fn readyz(State(s): State<HttpState>) -> (StatusCode, String) {
    let problems: Vec<String> = s
        .statuses
        .iter()
        .filter_map(|st| st.readiness(s.max_lag).err())
        .collect();
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, problems.join("\n") + "\n")
    }
}

/// Binds `addr` (`:9090` means every interface, as in Litestream) and serves until the
/// returned task is aborted.
pub async fn serve(addr: &str, state: HttpState) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let bind = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_string()
    };
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .map_err(|e| anyhow::anyhow!("listen on {bind}: {e}; check the addr setting"))?;
    tracing::info!(addr = %bind, "serving /metrics, /healthz and /readyz");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(state)).await {
            tracing::error!(error = %e, "http server stopped");
        }
    }))
}
