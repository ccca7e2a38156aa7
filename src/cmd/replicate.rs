//! `liteship replicate`: config or command-line databases, optional restore first, then
//! [`crate::replicate::run`].

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::{is_url, load_config, open_replica};
use crate::cli::ReplicateArgs;
use crate::config::{Config, DbConfig, apply_s3_env, expand_tilde, parse_bytes};
use crate::replica::ReplicaUrl;
use crate::replicate::{Globals, Prepared, RunOptions, run as run_replication};
use crate::restore::{IntegrityCheck, Outcome, RestoreOptions, restore};

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
    let mut prepared = Vec::new();
    for db in &cfg.dbs {
        let client = open_replica(&db.replica.url).await?;
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
    let globals = Globals::from_config(&cfg, staging_limit, args.allow_new_history);
    let opts = RunOptions {
        addr: args.addr.clone().or(cfg.addr.clone()),
        exec: args.exec.clone().or(cfg.exec.clone()),
        globals,
    };
    run_replication(prepared, opts).await
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

/// Logging settings before the subscriber exists: flag, `LOG_LEVEL`, then the config.
pub fn logging_prefs(args: &ReplicateArgs) -> (Option<String>, bool, bool) {
    let cfg = config(args).ok();
    let level = args
        .common
        .log_level
        .clone()
        .or_else(|| std::env::var("LOG_LEVEL").ok())
        .or_else(|| cfg.as_ref().and_then(|c| c.log_level.clone()));
    (
        level,
        cfg.as_ref().is_some_and(|c| c.log_json),
        cfg.as_ref().is_some_and(|c| c.log_stderr),
    )
}
