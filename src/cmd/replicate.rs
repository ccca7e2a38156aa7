//! `liteship replicate`: config or command-line databases, optional restore first, then
//! [`crate::replicate::start`]; the OS signals and the `-exec` child live here (the library
//! only sees a shutdown signal).
//!
//! Exit status: the child's when `-exec` is given and it failed; otherwise 0 only when
//! every database's committed changes reached a restorable replica, else 1. After the first
//! SIGTERM/SIGINT (and the child's exit) the replicators get `shutdown-sync-timeout` to
//! finish; a second signal aborts at once.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::{is_url, load_config, open_replica};
use crate::cli::ReplicateArgs;
use crate::config::{Config, DbConfig, apply_s3_env, expand_tilde, parse_bytes};
use crate::replica::ReplicaUrl;
use crate::replica::s3::S3Tuning;
use crate::replicate::{Globals, Prepared, RunOptions, start as start_replication};
use crate::restore::{IntegrityCheck, Outcome, RestoreOptions, restore};

/// Extra time after `shutdown-sync-timeout` for the tasks to unwind once everything was
/// cancelled at the deadline; past it the process exits regardless.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// S3 attempts per request while replicating: the upload loop retries failed rounds with
/// its own backoff, so the SDK's retries only need to cover a dropped connection. Two
/// attempts name a frozen server within about 40 s (two stall periods).
const REPLICATE_MAX_ATTEMPTS: u32 = 2;

/// The config for this invocation: `DB_PATH REPLICA_URL` or a config file.
pub fn config(args: &ReplicateArgs) -> anyhow::Result<Config> {
    match args.positional.as_slice() {
        [] => load_config(args.common.config.as_ref(), args.common.no_expand_env),
        [db, url] => {
            if args.common.config.is_some() {
                bail!("give either -config or DB_PATH REPLICA_URL, not both");
            }
            if !is_url(url) {
                bail!("{url:?} is not a replica URL (file:///path or s3://bucket/path)");
            }
            let mut url = ReplicaUrl::parse(url)?;
            if let ReplicaUrl::S3(c) = &mut url {
                apply_s3_env(c);
            }
            Ok(Config {
                dbs: vec![DbConfig::new(expand_tilde(db), url)],
                ..Config::default()
            })
        }
        _ => bail!("give both DB_PATH and REPLICA_URL, or neither and a config file"),
    }
}

pub async fn run(args: ReplicateArgs) -> anyhow::Result<ExitCode> {
    let cfg = config(&args)?;
    if cfg.dbs.is_empty() {
        bail!("no databases to replicate: add dbs: to the config, or give DB_PATH REPLICA_URL");
    }
    let staging_limit = parse_bytes(&args.staging_limit)
        .map_err(anyhow::Error::msg)
        .context("-staging-limit")?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        sqlite = crate::sqlite_version(),
        "liteship"
    );
    let mut signals = Signals::new()?;
    let mut prepared = Vec::new();
    for db in &cfg.dbs {
        let tuning = S3Tuning {
            max_attempts: REPLICATE_MAX_ATTEMPTS,
            ..S3Tuning::default()
        };
        let client = open_replica(&db.replica.url, &tuning).await?;
        if (args.restore_if_db_not_exists || db.restore_if_db_not_exists)
            && !crate::restore::output::has_database(&db.path)
        {
            restore_first(db, client.clone()).await?;
        }
        prepared.push(Prepared {
            cfg: db.clone(),
            client,
        });
    }
    let timeout = cfg.shutdown_sync_timeout;
    let opts = RunOptions {
        addr: args.addr.clone().or(cfg.addr.clone()),
        globals: Globals::from_config(&cfg, staging_limit, args.allow_new_history),
    };
    let running = start_replication(prepared, opts).await?;
    let child = match args.exec.clone().or(cfg.exec.clone()) {
        Some(cmd) => Some(spawn_exec(&cmd)?),
        None => None,
    };
    let (child_code, aborted) = signals.wait_for_stop(child).await?;
    running.stop(timeout);
    let trigger = running.trigger();
    if aborted {
        trigger.abort();
    }
    let finished = running.finish();
    tokio::pin!(finished);
    let all_ok = tokio::select! {
        ok = &mut finished => ok,
        _ = signals.next() => {
            tracing::warn!("second signal: aborting the final upload");
            trigger.abort();
            // The tasks see the abort and unwind; wait for them (bounded).
            tokio::time::timeout(SHUTDOWN_GRACE, &mut finished).await.unwrap_or(false)
        }
        _ = tokio::time::sleep(timeout + SHUTDOWN_GRACE) => {
            tracing::error!(timeout_s = timeout.as_secs(), "shutdown did not finish within shutdown-sync-timeout; exiting");
            false
        }
    };
    tracing::info!("liteship shut down");
    Ok(match child_code {
        Some(code) if code != 0 => ExitCode::from(code),
        _ if all_ok => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

/// SIGTERM and SIGINT, installed before anything starts.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("install SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("install SIGINT handler")?,
        })
    }

    /// The next SIGTERM or SIGINT.
    async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.int.recv() => libc::SIGINT,
        }
    }

    /// Waits for a signal (forwarded to the child, whose exit is then awaited) or the
    /// child's own exit. Returns the child's exit code, if there is a child, and whether a
    /// second signal came while the child was stopping (the final upload is then aborted).
    async fn wait_for_stop(
        &mut self,
        mut child: Option<tokio::process::Child>,
    ) -> anyhow::Result<(Option<u8>, bool)> {
        let sig = tokio::select! {
            s = self.next() => s,
            status = async { match child.as_mut() { Some(c) => c.wait().await, None => std::future::pending().await } } => {
                let s = status?;
                tracing::info!(status = %s, "the application exited");
                return Ok((Some(exit_code(s)), false));
            }
        };
        tracing::info!(signal = sig, "signal received, liteship shutting down");
        let Some(c) = child.as_mut() else {
            return Ok((None, false));
        };
        forward(c, sig);
        let second = tokio::select! {
            status = c.wait() => return Ok((Some(exit_code(status?)), false)),
            s = self.next() => s,
        };
        // A second signal aborts at once: it is forwarded too, and an application that
        // still does not exit within the grace period is killed.
        tracing::warn!(
            signal = second,
            "second signal: forwarded to the application; aborting the final upload"
        );
        forward(c, second);
        let status = match tokio::time::timeout(SHUTDOWN_GRACE, c.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                tracing::warn!(
                    grace_s = SHUTDOWN_GRACE.as_secs(),
                    "the application did not exit after the second signal; killing it"
                );
                c.kill().await?;
                c.wait().await?
            }
        };
        Ok((Some(exit_code(status)), true))
    }
}

/// Sends `sig` to the `-exec` child if it is still running.
fn forward(c: &tokio::process::Child, sig: i32) {
    if let Some(pid) = c.id() {
        // SAFETY: pid is our live child (`id` is None once it was reaped).
        unsafe { libc::kill(pid as i32, sig) };
    }
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

async fn restore_first(
    db: &DbConfig,
    client: std::sync::Arc<dyn crate::replica::ReplicaClient>,
) -> anyhow::Result<()> {
    let mut opts = RestoreOptions::new(PathBuf::from(&db.path));
    opts.if_db_not_exists = true;
    opts.if_replica_exists = true;
    opts.force = true; // an empty file left by the application is replaced
    opts.integrity_check = IntegrityCheck::Quick;
    match restore(client, &opts)
        .await
        .with_context(|| format!("restore {} before replicating", db.path.display()))?
    {
        Outcome::Restored(r) => {
            tracing::info!(db = %db.path.display(), txid = format!("{:016x}", r.txid), "restored before replicating")
        }
        Outcome::NoBackups => {
            tracing::info!(db = %db.path.display(), "no backups yet; starting with the local database")
        }
        Outcome::SkippedDbExists | Outcome::DryRun(_) | Outcome::DryRunV3 { .. } => {}
    }
    Ok(())
}

/// The config's logging settings, read before the subscriber exists (a config that does
/// not load is reported by `run`).
pub struct LogPrefs {
    pub level: Option<String>,
    pub json: bool,
    pub stderr: bool,
}

pub fn logging_prefs(args: &ReplicateArgs) -> LogPrefs {
    let cfg = config(args).ok();
    LogPrefs {
        level: cfg.as_ref().and_then(|c| c.log_level.clone()),
        json: cfg.as_ref().is_some_and(|c| c.log_json),
        stderr: cfg.as_ref().is_some_and(|c| c.log_stderr),
    }
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
