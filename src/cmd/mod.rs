//! The subcommands: turn validated arguments and config into library calls, print results.

pub mod inspect;
pub mod replicate;
pub mod restore;
pub mod status;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::replica::{ReplicaClient, ReplicaUrl, file::FileReplica, s3::S3Replica, s3::S3Tuning};

/// Whether a positional argument is a URL (`scheme://…`) rather than a path.
pub fn is_url(s: &str) -> bool {
    s.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// A command's `DB_PATH|REPLICA_URL` argument: the replica, and the database's config
/// entry in config mode.
pub fn resolve_target(
    target: &str,
    common: &crate::cli::CommonArgs,
) -> anyhow::Result<(ReplicaUrl, Option<crate::config::DbConfig>)> {
    use anyhow::Context;
    if is_url(target) {
        if common.config.is_some() {
            anyhow::bail!("cannot specify a replica URL and the -config flag together");
        }
        let mut url = ReplicaUrl::parse(target)?;
        if let ReplicaUrl::S3(c) = &mut url {
            crate::config::apply_s3_env(c);
        }
        return Ok((url, None));
    }
    let db = target
        .trim_start_matches("sqlite3://")
        .trim_start_matches("sqlite://");
    let db = crate::config::expand_tilde(db);
    let cfg = load_config(common.config.as_ref(), common.no_expand_env)?;
    let dbc = cfg.find_db(&db).with_context(|| {
        format!(
            "database {} is not in the config; check its path: entry",
            db.display()
        )
    })?;
    Ok((dbc.replica.url.clone(), Some(dbc.clone())))
}

/// Loads the config named by `-config`, `$LITESTREAM_CONFIG` or the default path.
pub fn load_config(path: Option<&PathBuf>, no_expand_env: bool) -> anyhow::Result<Config> {
    let path = path
        .cloned()
        .or_else(|| std::env::var_os("LITESTREAM_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    let cfg = Config::load(&path, no_expand_env)?;
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    Ok(cfg)
}

/// Builds the storage client for a replica location.
pub async fn open_replica(
    url: &ReplicaUrl,
    tuning: &S3Tuning,
) -> anyhow::Result<Arc<dyn ReplicaClient>> {
    Ok(match url {
        ReplicaUrl::File { path } => Arc::new(FileReplica::new(path.clone())),
        ReplicaUrl::S3(cfg) => {
            let c = S3Replica::new(cfg, tuning).await.with_context(|| {
                format!("configure s3 replica s3://{}/{}", cfg.bucket, cfg.path)
            })?;
            Arc::new(c)
        }
    })
}
