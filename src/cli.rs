//! Command-line definitions (clap) and the argument normalisation that lets existing
//! Litestream command lines work unchanged: Go's flag package spells long flags with one
//! dash (`-if-db-not-exists`), which clap reads as a bundle of short flags.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "liteship",
    version,
    about = "SQLite replication to S3 and files, compatible with Litestream 0.5",
    after_help = "Examples:\n  liteship replicate /data/app.db file:///backups/app\n  liteship restore -if-db-not-exists -if-replica-exists -config /etc/litestream.yml /data/app.db\n  liteship verify -max-age 1h -config /etc/litestream.yml /data/app.db\n\nRun `liteship <command> --help` for a command's flags and examples."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Restore a database from its replica (a Nomad prestart task, or a point-in-time restore).
    Restore(Box<RestoreArgs>),
    /// Replicate databases continuously (a Nomad poststart sidecar).
    Replicate(Box<ReplicateArgs>),
    /// List a replica's LTX files by level, with a summary.
    Ltx(InspectArgs),
    /// Restore drill: check a replica's chains, restore it to a temporary file, run the
    /// integrity check; exit 1 on any problem.
    Verify(VerifyArgs),
    /// Ask a running replicator for the state of each database.
    #[command(alias = "databases")]
    Status(StatusArgs),
    /// Print the version.
    #[command(after_help = "Examples:\n  liteship version")]
    Version,
}

#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Path of litestream.yml (default: $LITESTREAM_CONFIG, else /etc/litestream.yml).
    #[arg(long = "config", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Do not expand $VARS in the config file.
    #[arg(long = "no-expand-env")]
    pub no_expand_env: bool,
    /// Log level: trace, debug, info, warn, error (overrides LOG_LEVEL and the config).
    #[arg(long = "log-level", value_name = "LEVEL")]
    pub log_level: Option<String>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  # Nomad prestart: restore only when the database is missing; an empty replica is a first boot\n  liteship restore -config /etc/litestream.yml -if-db-not-exists -if-replica-exists /data/app.db\n  # point-in-time copy next to the live database\n  liteship restore -config /etc/litestream.yml -timestamp 2026-11-27T07:00:00Z -o /data/pitr.db /data/app.db\n  # warm standby that follows the replica\n  liteship restore -f -o /standby/app.db 's3://overseerr-litestream/db?endpoint=minio.local:9000'"
)]
pub struct RestoreArgs {
    /// A database path from the config, or a replica URL (file:///path, s3://bucket/path?...).
    #[arg(value_name = "DB_PATH|REPLICA_URL")]
    pub target: String,
    /// Output path (required with a replica URL; defaults to the database path).
    #[arg(short = 'o', value_name = "PATH")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Exit 0 without restoring if the output database already exists (and is not empty).
    #[arg(long = "if-db-not-exists")]
    pub if_db_not_exists: bool,
    /// Exit 0 without restoring if the replica has no backups.
    #[arg(long = "if-replica-exists")]
    pub if_replica_exists: bool,
    /// Restore up to this TXID (16 hex digits), inclusive.
    #[arg(long = "txid", value_name = "HEX16", conflicts_with = "timestamp")]
    pub txid: Option<String>,
    /// Restore the newest state created strictly before this RFC 3339 time.
    #[arg(long = "timestamp", value_name = "RFC3339")]
    pub timestamp: Option<String>,
    /// Concurrent ranged downloads.
    #[arg(long = "parallelism", value_name = "N", default_value_t = crate::restore::DEFAULT_PARALLELISM)]
    pub parallelism: usize,
    /// Check the restored file before it is published: none, quick or full.
    #[arg(long = "integrity-check", value_name = "MODE", default_value = "quick")]
    pub integrity_check: String,
    /// Print the plan and write nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// Overwrite an existing database and its -wal/-shm/-journal files.
    #[arg(long = "force")]
    pub force: bool,
    /// Print the result as JSON on stdout (logs go to stderr).
    #[arg(long = "json")]
    pub json: bool,
    /// Owner of the restored file, UID[:GID] (default when root: the directory's owner).
    #[arg(long = "owner", value_name = "UID[:GID]")]
    pub owner: Option<String>,
    /// Mode of the restored file, in octal (e.g. 0644).
    #[arg(long = "mode", value_name = "OCTAL")]
    pub mode: Option<String>,
    /// Fail when the replica sends nothing for this long (0: wait forever).
    #[arg(long = "stall-timeout", value_name = "DURATION", default_value = "2m")]
    pub stall_timeout: String,
    /// Follow mode: keep applying new files to the output (a warm standby) until SIGTERM.
    #[arg(short = 'f', long = "follow")]
    pub follow: bool,
    /// How often follow mode looks for new files.
    #[arg(
        long = "follow-interval",
        value_name = "DURATION",
        default_value = "1s"
    )]
    pub follow_interval: String,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  liteship ltx 's3://overseerr-litestream/db?endpoint=minio.local:9000'\n  liteship ltx -config /etc/litestream.yml -json /data/app.db"
)]
pub struct InspectArgs {
    /// A database path from the config, or a replica URL.
    #[arg(value_name = "DB_PATH|REPLICA_URL")]
    pub target: String,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Print JSON on stdout.
    #[arg(long = "json")]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  liteship verify -max-age 1h 's3://overseerr-litestream/db?endpoint=minio.local:9000'\n  liteship verify -config /etc/litestream.yml -json /data/app.db"
)]
pub struct VerifyArgs {
    /// A database path from the config, or a replica URL.
    #[arg(value_name = "DB_PATH|REPLICA_URL")]
    pub target: String,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Fail when the replica's newest file is older than this (e.g. 1h).
    #[arg(long = "max-age", value_name = "DURATION")]
    pub max_age: Option<String>,
    /// Concurrent ranged downloads of the drill's restore.
    #[arg(long = "parallelism", value_name = "N", default_value_t = crate::restore::DEFAULT_PARALLELISM)]
    pub parallelism: usize,
    /// Print the result as JSON on stdout.
    #[arg(long = "json")]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  liteship status\n  liteship status -addr 10.0.0.5:9090 -json")]
pub struct StatusArgs {
    /// The replicator's HTTP address (default: the config's addr, else 127.0.0.1:9090).
    #[arg(long = "addr", value_name = "HOST:PORT")]
    pub addr: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Print JSON on stdout.
    #[arg(long = "json")]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  liteship replicate -config /etc/litestream.yml -addr 127.0.0.1:9090\n  liteship replicate /data/app.db 's3://overseerr-litestream/db?endpoint=minio.local:9000'\n  liteship replicate -config /etc/litestream.yml -exec 'node server.js'"
)]
pub struct ReplicateArgs {
    /// A database path and its replica URL, instead of a config file.
    #[arg(value_name = "DB_PATH REPLICA_URL", num_args = 0..=2)]
    pub positional: Vec<String>,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Start this command once every database passed the start-up checks (replication then
    /// runs beside it); forward signals to it; exit with its status when it exits.
    #[arg(long = "exec", value_name = "CMD")]
    pub exec: Option<String>,
    /// Serve /metrics, /healthz and /readyz on this address (overrides `addr`).
    #[arg(long = "addr", value_name = "HOST:PORT")]
    pub addr: Option<String>,
    /// Restore a database from its replica first if it does not exist.
    #[arg(long = "restore-if-db-not-exists")]
    pub restore_if_db_not_exists: bool,
    /// Let a database that does not descend from the replica's newest state become it.
    #[arg(long = "allow-new-history")]
    pub allow_new_history: bool,
    /// Staged bytes allowed while the replica is unreachable (e.g. 1GiB).
    #[arg(long = "staging-limit", value_name = "BYTES", default_value = "1GiB")]
    pub staging_limit: String,
}

/// Rewrites Litestream's single-dash long flags (`-if-db-not-exists`, `-config=x`) to the
/// double-dash form. Single-letter flags (`-o`, `-f`) and values are left alone; nothing
/// after a `--` is touched.
pub fn normalize_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut passthrough = false;
    for a in args {
        let rewritten = match a.to_str() {
            Some("--") => {
                passthrough = true;
                None
            }
            Some(s) if !passthrough && is_single_dash_long(s) => {
                Some(OsString::from(format!("-{s}")))
            }
            _ => None,
        };
        out.push(rewritten.unwrap_or(a));
    }
    out
}

fn is_single_dash_long(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('-') else {
        return false;
    };
    let name = rest.split('=').next().unwrap_or("");
    !rest.starts_with('-')
        && name.len() > 1
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command's --help ends with at least one example that names the command.
    #[test]
    fn every_command_help_has_an_example() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        let top = cmd.render_long_help().to_string();
        assert!(top.contains("Examples:"), "{top}");
        cmd.build();
        let mut seen = 0;
        for sub in cmd.get_subcommands_mut() {
            let name = sub.get_name().to_string();
            if name == "help" {
                continue; // clap's own `liteship help COMMAND`
            }
            seen += 1;
            let help = sub.render_long_help().to_string();
            let ex = help
                .find("Example")
                .unwrap_or_else(|| panic!("`liteship {name} --help` has no example:\n{help}"));
            assert!(
                help[ex..].contains(&format!("liteship {name}")),
                "{name}: the example does not run the command:\n{help}"
            );
        }
        assert_eq!(seen, 6, "restore, replicate, ltx, verify, status, version");
    }

    fn norm(v: &[&str]) -> Vec<String> {
        normalize_args(v.iter().map(OsString::from))
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    #[test]
    fn litestream_flags_become_long_flags() {
        assert_eq!(
            norm(&[
                "liteship",
                "restore",
                "-if-db-not-exists",
                "-if-replica-exists",
                "-o",
                "/db",
                "-config=/etc/l.yml",
                "/db"
            ]),
            vec![
                "liteship",
                "restore",
                "--if-db-not-exists",
                "--if-replica-exists",
                "-o",
                "/db",
                "--config=/etc/l.yml",
                "/db"
            ]
        );
        assert_eq!(
            norm(&["x", "-timestamp", "2026-01-01T00:00:00Z"])[1],
            "--timestamp"
        );
        assert_eq!(
            norm(&["x", "--force", "-f", "--", "-exec"]),
            vec!["x", "--force", "-f", "--", "-exec"]
        );
    }

    #[test]
    fn parses_a_litestream_restore_line() {
        let cli = Cli::parse_from(normalize_args(
            [
                "liteship",
                "restore",
                "-if-db-not-exists",
                "-if-replica-exists",
                "-txid",
                "0000000000000002",
                "-o",
                "/out.db",
                "s3://b/db",
            ]
            .map(OsString::from),
        ));
        let Command::Restore(r) = cli.command else {
            panic!()
        };
        assert!(r.if_db_not_exists && r.if_replica_exists);
        assert_eq!(r.txid.as_deref(), Some("0000000000000002"));
        assert_eq!(r.output, Some(PathBuf::from("/out.db")));
    }
}
