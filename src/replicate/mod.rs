//! `replicate`: runs every configured database's replicator, the HTTP endpoints and the
//! optional `-exec` child until SIGTERM/SIGINT (a second signal aborts the final upload).
//!
//! Layout: [`task`] (start-up, sync loop), [`upload`] (upload loop, shutdown), [`maintain`]
//! (compaction, snapshots, retention), [`lineage`] (may this database continue the replica),
//! [`remote`] (in-memory replica index), [`metrics`], [`status`], [`http`].

pub mod http;
pub mod lineage;
pub mod maintain;
pub mod metrics;
pub mod remote;
pub mod status;
pub mod task;
pub mod upload;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use task::{DbReplicator, Globals};

use crate::config::DbConfig;
use crate::replica::ReplicaClient;
use metrics::Metrics;
use status::Status;

/// What `run` needs beyond the databases.
pub struct RunOptions {
    pub addr: Option<String>,
    pub exec: Option<String>,
    pub globals: Globals,
}

/// One database ready to replicate.
pub struct Prepared {
    pub cfg: DbConfig,
    pub client: Arc<dyn ReplicaClient>,
}

/// Replicates until a signal (or the `-exec` child's exit); returns the exit code.
pub async fn run(dbs: Vec<Prepared>, opts: RunOptions) -> anyhow::Result<ExitCode> {
    let metrics = Arc::new(Metrics::new());
    let globals = Arc::new(opts.globals);
    let (tx, rx) = watch::channel(0u8);
    let mut statuses = Vec::new();
    let mut tasks = Vec::new();
    for p in dbs {
        let status = Arc::new(Status::new(p.cfg.path.display().to_string()));
        statuses.push(status.clone());
        let r = DbReplicator::new(p.cfg, globals.clone(), p.client, metrics.clone(), status);
        tasks.push(tokio::spawn(r.run(rx.clone())));
    }
    let max_lag = Duration::from_secs(30);
    let server = match &opts.addr {
        Some(addr) => Some(
            http::serve(
                addr,
                http::HttpState {
                    metrics: metrics.clone(),
                    statuses,
                    max_lag,
                },
            )
            .await?,
        ),
        None => None,
    };
    let child = match &opts.exec {
        Some(cmd) => Some(spawn_exec(cmd)?),
        None => None,
    };
    let child_status = wait_for_stop(child, &tx).await?;
    let mut all_ok = true;
    for t in tasks {
        match t.await {
            Ok(Ok(ok)) => all_ok &= ok,
            Ok(Err(e)) => {
                tracing::error!(error = %format!("{e:#}"), "replication stopped with an error");
                all_ok = false;
            }
            Err(e) => {
                tracing::error!(error = %e, "replication task failed");
                all_ok = false;
            }
        }
    }
    if let Some(s) = server {
        s.abort();
    }
    tracing::info!("liteship shut down");
    Ok(match child_status {
        Some(code) => ExitCode::from(code),
        None if all_ok => ExitCode::SUCCESS,
        None => ExitCode::FAILURE,
    })
}

fn spawn_exec(cmd: &str) -> anyhow::Result<tokio::process::Child> {
    let words = shell_words(cmd);
    let (prog, args) = words
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("-exec is empty"))?;
    tracing::info!(command = %cmd, "starting the application");
    tokio::process::Command::new(prog)
        .args(args)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| anyhow::anyhow!("start -exec command {prog:?}: {e}"))
}

/// Waits for SIGTERM/SIGINT (forwarded to the child) or the child's exit, then tells the
/// replicators to stop; a second signal aborts their final upload. Returns the child's
/// exit code, if there is a child.
async fn wait_for_stop(
    mut child: Option<tokio::process::Child>,
    tx: &watch::Sender<u8>,
) -> anyhow::Result<Option<u8>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut code = None;
    let sig = tokio::select! {
        _ = term.recv() => Some(libc::SIGTERM),
        _ = int.recv() => Some(libc::SIGINT),
        status = async { match child.as_mut() { Some(c) => c.wait().await, None => std::future::pending().await } } => {
            let s = status?;
            tracing::info!(status = %s, "the application exited");
            code = Some(exit_code(s));
            None
        }
    };
    if let Some(sig) = sig {
        tracing::info!(signal = sig, "signal received, liteship shutting down");
        if let Some(c) = child.as_mut() {
            if let Some(pid) = c.id() {
                // SAFETY: pid is our live child.
                unsafe { libc::kill(pid as i32, sig) };
            }
            code = Some(exit_code(c.wait().await?));
        }
    }
    let _ = tx.send(1);
    let tx2 = tx.clone();
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::warn!("second signal: aborting the final upload");
        let _ = tx2.send(2);
    });
    Ok(code)
}

fn exit_code(s: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => c.clamp(0, 255) as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        _ => 1,
    }
}

/// Splits a command line shell-words style: whitespace separates words; single and double
/// quotes group; backslash escapes the next character outside single quotes.
pub fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => cur.push(c),
            (_, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (_, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_split() {
        assert_eq!(
            shell_words("node server.js --port 5055"),
            vec!["node", "server.js", "--port", "5055"]
        );
        assert_eq!(
            shell_words(r#"sh -c "echo 'a b'" x\ y"#),
            vec!["sh", "-c", "echo 'a b'", "x y"]
        );
        assert_eq!(shell_words("  "), Vec::<String>::new());
    }
}
