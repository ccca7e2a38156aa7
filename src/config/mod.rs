//! litestream.yml and replica URLs -> a validated [`Config`]. The only place (with the CLI)
//! that reads the environment: `$VAR` expansion, `LITESTREAM_*`/`AWS_CA_BUNDLE` fallbacks.
//!
//! Compatibility rules (spec 5): the file is expanded with Go `os.Expand` semantics before
//! parsing; unknown keys are accepted (with a warning, where Litestream is silent); a db has
//! one `replica` or a one-entry `replicas` list; top-level replica keys are defaults for
//! every replica; `age` encryption is rejected as in Litestream 0.5.

mod expand;
mod raw;
mod units;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml_ng::Value;

pub use expand::{Unset, env_lookup, expand, expand_tracking};
pub use units::{parse_bytes, parse_go_duration};

use crate::replica::sse::{SSE_C_ALGORITHM, Sse};
use crate::replica::url::{DEFAULT_PART_SIZE, ensure_endpoint_scheme};
use crate::replica::{ReplicaUrl, S3Config};
use raw::{Extra, RawConfig, RawDb, RawReplica};

/// Default config path when neither `-config` nor `$LITESTREAM_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/litestream.yml";

// Defaults. Each is Litestream 0.5.17's (spec 5.2, 5.3), so that a config that leaves a key
// out behaves the same under either tool.

/// How often the WAL is read: one level-0 file per second at most, Litestream's cadence.
pub const DEFAULT_MONITOR_INTERVAL: Duration = Duration::from_secs(1);
/// A PASSIVE checkpoint after this long if anything was synced since the last one.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
/// SQLite busy timeout of liteship's own connections.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(1);
/// WAL pages that make a PASSIVE checkpoint due (about 4 MiB at 4 KiB pages).
pub const DEFAULT_MIN_CHECKPOINT_PAGES: u64 = 1000;
/// WAL pages above which the emergency TRUNCATE runs (about 500 MB at 4 KiB pages).
pub const DEFAULT_TRUNCATE_PAGE_N: u64 = 121_359;
/// WAL bytes per level-0 file when a backlog is synced in pieces.
pub const DEFAULT_MAX_SYNC_WAL_BYTES: u64 = 64 * 1024 * 1024;
/// How often staged files are uploaded (also on every new staged file).
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Level-0 files uploaded per round before maintenance gets its turn.
pub const DEFAULT_MAX_SYNC_LTX_FILES: usize = 256;
/// Compaction intervals of levels 1, 2, 3.
pub const DEFAULT_LEVELS: [Duration; 3] = [
    Duration::from_secs(30),
    Duration::from_secs(300),
    Duration::from_secs(3600),
];
/// Snapshot interval and retention.
pub const DEFAULT_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Level-0 files are kept this long after compaction (for timestamp restores).
pub const DEFAULT_L0_RETENTION: Duration = Duration::from_secs(300);
pub const DEFAULT_L0_RETENTION_CHECK: Duration = Duration::from_secs(15);
/// The final sync and upload at shutdown must finish within this.
pub const DEFAULT_SHUTDOWN_SYNC_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_SHUTDOWN_SYNC_INTERVAL: Duration = Duration::from_millis(500);

/// A config that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("config {path}: {reason}")]
pub struct ConfigError {
    pub path: String,
    pub reason: String,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: Option<String>,
    pub exec: Option<String>,
    pub dbs: Vec<DbConfig>,
    pub log_level: Option<String>,
    pub log_json: bool,
    pub log_stderr: bool,
    /// Compaction intervals of levels 1..=n.
    pub levels: Vec<Duration>,
    pub snapshot_interval: Duration,
    pub snapshot_retention: Duration,
    /// Zero disables level-0 retention.
    pub l0_retention: Duration,
    pub l0_retention_check_interval: Duration,
    pub retention_enabled: bool,
    pub shutdown_sync_timeout: Duration,
    pub shutdown_sync_interval: Duration,
    /// TTL of each replica's writer lease (liteship only: `lease-ttl`).
    pub lease_ttl: Duration,
    /// Warnings about unknown or ignored keys, to be logged once.
    pub warnings: Vec<String>,
}

/// One database and its replica.
#[derive(Debug, Clone)]
pub struct DbConfig {
    pub path: PathBuf,
    pub meta_path: Option<PathBuf>,
    pub monitor_interval: Duration,
    /// Zero disables time-based checkpoints.
    pub checkpoint_interval: Duration,
    pub busy_timeout: Duration,
    pub min_checkpoint_page_count: u64,
    pub truncate_page_n: u64,
    /// Zero means unlimited.
    pub max_sync_wal_bytes: u64,
    pub restore_if_db_not_exists: bool,
    pub replica: ReplicaConfig,
}

/// One replica.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub url: ReplicaUrl,
    /// `page-frames: legacy` writes the LZ4-frame page encoding that Litestream
    /// 0.5.0-0.5.15 can read (for a rollback to those versions); `block` (the default) is
    /// the encoding of Litestream 0.5.16+.
    pub page_framing: crate::ltx::PageFraming,
    pub sync_interval: Duration,
    pub max_sync_ltx_files: usize,
    pub auto_recover: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: None,
            exec: None,
            dbs: Vec::new(),
            log_level: None,
            log_json: false,
            log_stderr: false,
            levels: DEFAULT_LEVELS.to_vec(),
            snapshot_interval: DEFAULT_SNAPSHOT_INTERVAL,
            snapshot_retention: DEFAULT_SNAPSHOT_INTERVAL,
            l0_retention: DEFAULT_L0_RETENTION,
            l0_retention_check_interval: DEFAULT_L0_RETENTION_CHECK,
            retention_enabled: true,
            shutdown_sync_timeout: DEFAULT_SHUTDOWN_SYNC_TIMEOUT,
            shutdown_sync_interval: DEFAULT_SHUTDOWN_SYNC_INTERVAL,
            lease_ttl: crate::replicate::lease::DEFAULT_LEASE_TTL,
            warnings: Vec::new(),
        }
    }
}

impl DbConfig {
    /// A database with default settings and the given replica (command-line mode).
    pub fn new(path: PathBuf, url: ReplicaUrl) -> Self {
        DbConfig {
            path,
            meta_path: None,
            monitor_interval: DEFAULT_MONITOR_INTERVAL,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            min_checkpoint_page_count: DEFAULT_MIN_CHECKPOINT_PAGES,
            truncate_page_n: DEFAULT_TRUNCATE_PAGE_N,
            max_sync_wal_bytes: DEFAULT_MAX_SYNC_WAL_BYTES,
            restore_if_db_not_exists: false,
            replica: ReplicaConfig {
                url,
                page_framing: crate::ltx::PageFraming::Block,
                sync_interval: DEFAULT_SYNC_INTERVAL,
                max_sync_ltx_files: DEFAULT_MAX_SYNC_LTX_FILES,
                auto_recover: false,
            },
        }
    }
}

impl Config {
    /// Reads, expands (unless `no_expand_env`) and validates a config file.
    pub fn load(path: &Path, no_expand_env: bool) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.display().to_string(),
            reason: format!("cannot read: {e}"),
        })?;
        let fail = |reason| ConfigError {
            path: path.display().to_string(),
            reason,
        };
        let (expanded, unset) = if no_expand_env {
            (text.clone(), Vec::new())
        } else {
            expand_tracking(&text, env_lookup)
        };
        let warnings = check_unset(&text, &unset).map_err(fail)?;
        let mut cfg = Config::parse(&expanded).map_err(fail)?;
        cfg.warnings.splice(0..0, warnings);
        Ok(cfg)
    }

    /// Parses already-expanded YAML text.
    pub fn parse(text: &str) -> Result<Config, String> {
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| format!("invalid YAML: {e}"))?
        };
        let mut cfg = Config::default();
        let mut warnings = Vec::new();
        let defaults = replica_defaults(&raw.rest, &mut warnings)?;
        apply_globals(&mut cfg, &raw_globals(&raw), &mut warnings)?;
        cfg.addr = raw.addr;
        cfg.exec = raw.exec;
        if let Some(l) = raw.logging {
            cfg.log_level = l.level;
            cfg.log_json = l.kind.as_deref() == Some("json");
            cfg.log_stderr = l.stderr.unwrap_or(false);
            warn_extra("logging", &l.extra, &mut warnings);
        }
        if let Some(levels) = raw.levels {
            cfg.levels = levels
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    warn_extra(&format!("levels[{i}]"), &l.extra, &mut warnings);
                    let d = dur(
                        &l.interval,
                        Duration::ZERO,
                        &format!("levels[{i}].interval"),
                    )?;
                    if d.is_zero() {
                        return Err(format!("levels[{i}].interval must be greater than 0"));
                    }
                    Ok(d)
                })
                .collect::<Result<_, String>>()?;
            if cfg.levels.len() > 8 {
                return Err("at most 8 compaction levels are allowed".into());
            }
        }
        for (i, db) in raw.dbs.into_iter().enumerate() {
            let parsed = parse_db(i, db, &defaults, &mut cfg, &mut warnings)?;
            cfg.dbs.push(parsed);
        }
        cfg.warnings = warnings;
        Ok(cfg)
    }

    /// The database whose `path` equals `db_path` (after `~` expansion and normalisation).
    pub fn find_db(&self, db_path: &Path) -> Option<&DbConfig> {
        let want = normalize(db_path);
        self.dbs.iter().find(|d| normalize(&d.path) == want)
    }
}

struct Globals<'a> {
    snapshot: Option<&'a raw::RawSnapshot>,
    l0_retention: &'a Option<Value>,
    l0_check: &'a Option<Value>,
    retention: Option<&'a raw::RawRetention>,
    shutdown_timeout: &'a Option<Value>,
    shutdown_interval: &'a Option<Value>,
    lease_ttl: &'a Option<Value>,
}

fn raw_globals(raw: &RawConfig) -> Globals<'_> {
    Globals {
        snapshot: raw.snapshot.as_ref(),
        l0_retention: &raw.l0_retention,
        l0_check: &raw.l0_retention_check_interval,
        retention: raw.retention.as_ref(),
        shutdown_timeout: &raw.shutdown_sync_timeout,
        shutdown_interval: &raw.shutdown_sync_interval,
        lease_ttl: &raw.lease_ttl,
    }
}

fn apply_globals(
    cfg: &mut Config,
    g: &Globals<'_>,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    if let Some(s) = g.snapshot {
        apply_snapshot(cfg, s, "snapshot", warnings)?;
    }
    cfg.l0_retention = dur(g.l0_retention, cfg.l0_retention, "l0-retention")?;
    cfg.l0_retention_check_interval = dur(
        g.l0_check,
        cfg.l0_retention_check_interval,
        "l0-retention-check-interval",
    )?;
    if let Some(r) = g.retention {
        cfg.retention_enabled = r.enabled.unwrap_or(true);
        warn_extra("retention", &r.extra, warnings);
    }
    cfg.shutdown_sync_timeout = dur(
        g.shutdown_timeout,
        cfg.shutdown_sync_timeout,
        "shutdown-sync-timeout",
    )?;
    cfg.shutdown_sync_interval = dur(
        g.shutdown_interval,
        cfg.shutdown_sync_interval,
        "shutdown-sync-interval",
    )?;
    cfg.lease_ttl = dur(g.lease_ttl, cfg.lease_ttl, "lease-ttl")?;
    if cfg.lease_ttl < Duration::from_secs(3) {
        return Err(
            "lease-ttl must be at least 3s (the lease is renewed every third of it)".into(),
        );
    }
    Ok(())
}

fn apply_snapshot(
    cfg: &mut Config,
    s: &raw::RawSnapshot,
    at: &str,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    warn_extra(at, &s.extra, warnings);
    cfg.snapshot_interval = dur(
        &s.interval,
        cfg.snapshot_interval,
        &format!("{at}.interval"),
    )?;
    cfg.snapshot_retention = dur(
        &s.retention,
        cfg.snapshot_retention,
        &format!("{at}.retention"),
    )?;
    if cfg.snapshot_interval.is_zero() || cfg.snapshot_retention.is_zero() {
        return Err(format!(
            "{at}.interval and {at}.retention must be greater than 0"
        ));
    }
    Ok(())
}

/// Known replica keys at the top level become defaults; anything else is warned about.
fn replica_defaults(rest: &Extra, warnings: &mut Vec<String>) -> Result<RawReplica, String> {
    let mut map = serde_yaml_ng::Mapping::new();
    for (k, v) in rest {
        map.insert(Value::String(k.clone()), v.clone());
    }
    let d: RawReplica = serde_yaml_ng::from_value(Value::Mapping(map))
        .map_err(|e| format!("invalid top-level replica setting: {e}"))?;
    warn_extra("(top level)", &d.extra, warnings);
    Ok(d)
}

fn parse_db(
    i: usize,
    db: RawDb,
    defaults: &RawReplica,
    cfg: &mut Config,
    warnings: &mut Vec<String>,
) -> Result<DbConfig, String> {
    let at = format!("dbs[{i}]");
    warn_extra(&at, &db.extra, warnings);
    if db.dir.is_some() {
        return Err(format!(
            "{at}: directory mode (dir:) is not supported by liteship; list each database with path:"
        ));
    }
    let path = db
        .path
        .as_deref()
        .filter(|p| !p.is_empty())
        .ok_or(format!("{at}: path is required"))?;
    let replica = match (db.replica, db.replicas) {
        (Some(_), Some(_)) => {
            return Err(format!("{at}: use either replica or replicas, not both"));
        }
        (Some(r), None) => r,
        (None, Some(mut list)) if list.len() == 1 => list.remove(0),
        (None, Some(list)) if list.len() > 1 => {
            return Err(format!(
                "{at}: only one replica per database is supported ({} given)",
                list.len()
            ));
        }
        _ => return Err(format!("{at}: a replica is required")),
    };
    if let Some(s) = &db.snapshot {
        apply_snapshot(cfg, s, &format!("{at}.snapshot"), warnings)?;
    }
    let mut out = DbConfig::new(
        expand_tilde(path),
        ReplicaUrl::File {
            path: PathBuf::new(),
        },
    );
    out.meta_path = db.meta_path.as_deref().map(expand_tilde);
    out.monitor_interval = dur(
        &db.monitor_interval,
        out.monitor_interval,
        &format!("{at}.monitor-interval"),
    )?;
    out.checkpoint_interval = dur(
        &db.checkpoint_interval,
        out.checkpoint_interval,
        &format!("{at}.checkpoint-interval"),
    )?;
    out.busy_timeout = dur(
        &db.busy_timeout,
        out.busy_timeout,
        &format!("{at}.busy-timeout"),
    )?;
    out.min_checkpoint_page_count = db
        .min_checkpoint_page_count
        .unwrap_or(out.min_checkpoint_page_count);
    out.truncate_page_n = match db.truncate_page_n {
        None | Some(0) => out.truncate_page_n,
        Some(n) => n,
    };
    if let Some(v) = &db.max_sync_wal_bytes {
        out.max_sync_wal_bytes = bytes(v, &format!("{at}.max-sync-wal-bytes"))?;
    }
    out.restore_if_db_not_exists = db.restore_if_db_not_exists.unwrap_or(false);
    out.replica = parse_replica(
        &format!("{at}.replica"),
        replica.with_defaults(defaults),
        warnings,
    )?;
    Ok(out)
}

fn parse_replica(
    at: &str,
    r: RawReplica,
    warnings: &mut Vec<String>,
) -> Result<ReplicaConfig, String> {
    warn_extra(at, &r.extra, warnings);
    warn_no_effect(at, &r, warnings);
    if r.age.is_some() {
        return Err(format!(
            "{at}: age encryption is not supported (Litestream 0.5 removed it)"
        ));
    }
    let url = replica_url(at, &r)?;
    let sync_interval = dur(
        &r.sync_interval,
        DEFAULT_SYNC_INTERVAL,
        &format!("{at}.sync-interval"),
    )?;
    if sync_interval.is_zero() {
        return Err(format!("{at}.sync-interval must be greater than 0"));
    }
    let page_framing = match r.page_frames.as_deref() {
        None | Some("block") => crate::ltx::PageFraming::Block,
        Some("legacy") => crate::ltx::PageFraming::Lz4Frame,
        Some(other) => {
            return Err(format!(
                "{at}.page-frames {other:?}: use block (Litestream 0.5.16+, the default) or legacy (readable by every Litestream 0.5.x)"
            ));
        }
    };
    Ok(ReplicaConfig {
        url,
        page_framing,
        sync_interval,
        max_sync_ltx_files: r
            .max_sync_ltx_files
            .map_or(DEFAULT_MAX_SYNC_LTX_FILES, |n| n.max(1) as usize),
        auto_recover: r.auto_recover.unwrap_or(false),
    })
}

fn replica_url(at: &str, r: &RawReplica) -> Result<ReplicaUrl, String> {
    if let Some(u) = &r.url {
        if r.path.is_some() || r.bucket.is_some() {
            return Err(format!("{at}: url cannot be combined with path or bucket"));
        }
        let mut parsed = ReplicaUrl::parse(u).map_err(|e| format!("{at}: {e}"))?;
        if let ReplicaUrl::S3(c) = &mut parsed {
            overlay_s3(c, r)?;
        }
        return Ok(parsed);
    }
    match r.kind.as_deref().unwrap_or("file") {
        "file" => {
            let p = r
                .path
                .as_deref()
                .ok_or(format!("{at}: a file replica needs path"))?;
            if p.contains("://") {
                return Err(format!("{at}: path must not be a URL; use url: instead"));
            }
            let path = expand_tilde(p);
            if !path.is_absolute() {
                return Err(format!(
                    "{at}.path {p:?} is relative: a file replica needs an absolute path (as file:///path does), so that it does not depend on the working directory"
                ));
            }
            Ok(ReplicaUrl::File { path })
        }
        "s3" => {
            let mut c = S3Config {
                bucket: r
                    .bucket
                    .clone()
                    .ok_or(format!("{at}: an s3 replica needs bucket"))?,
                path: r.path.clone().unwrap_or_default(),
                ..S3Config::default()
            };
            overlay_s3(&mut c, r)?;
            Ok(ReplicaUrl::S3(c))
        }
        other => Err(format!(
            "{at}: replica type {other:?} is not supported by liteship (file and s3 are)"
        )),
    }
}

/// Applies the S3 keys of a replica section, then the `LITESTREAM_*` and `AWS_CA_BUNDLE`
/// environment fallbacks.
fn overlay_s3(c: &mut S3Config, r: &RawReplica) -> Result<(), String> {
    if let Some(e) = &r.endpoint {
        c.endpoint = Some(ensure_endpoint_scheme(e));
        c.force_path_style = true;
    }
    if let Some(v) = &r.region {
        c.region = Some(v.clone());
    }
    if let Some(v) = r.force_path_style {
        c.force_path_style = v;
    }
    c.skip_verify = r.skip_verify.unwrap_or(c.skip_verify);
    c.access_key_id = r.access_key_id.clone().or(c.access_key_id.take());
    c.secret_access_key = r.secret_access_key.clone().or(c.secret_access_key.take());
    c.storage_class = r.storage_class.clone().or(c.storage_class.take());
    if let Some(v) = &r.part_size {
        c.part_size = bytes(v, "part-size")?;
        if c.part_size < DEFAULT_PART_SIZE {
            return Err("part-size must be at least 5MiB".into());
        }
    }
    c.sse = sse(r, c.endpoint.as_deref())?;
    apply_s3_env(c);
    Ok(())
}

/// The server-side encryption keys of a replica section (spec 5.4).
fn sse(r: &RawReplica, endpoint: Option<&str>) -> Result<Option<Sse>, String> {
    let customer = match (&r.sse_customer_key, &r.sse_customer_key_path) {
        (Some(_), Some(_)) => {
            return Err("sse-customer-key and sse-customer-key-path are mutually exclusive".into());
        }
        (Some(k), None) => Some(Sse::customer_from_base64(k)?),
        (None, Some(p)) => Some(Sse::customer_from_file(&expand_tilde(p))?),
        (None, None) => None,
    };
    if let Some(alg) = &r.sse_customer_algorithm
        && alg != SSE_C_ALGORITHM
    {
        return Err(format!(
            "sse-customer-algorithm {alg:?} is not supported: S3 knows only {SSE_C_ALGORITHM}"
        ));
    }
    match (customer, &r.sse_kms_key_id) {
        (Some(_), Some(_)) => Err(
            "SSE-C (sse-customer-key) and SSE-KMS (sse-kms-key-id) are mutually exclusive".into(),
        ),
        (Some(c), None) => {
            if let Some(ep) = endpoint
                && ep.starts_with("http://")
                && !crate::replica::url::is_private_endpoint(ep)
            {
                return Err(format!(
                    "SSE-C sends the encryption key with every request: use an https:// endpoint (not {ep})"
                ));
            }
            Ok(Some(c))
        }
        (None, Some(id)) => Ok(Some(Sse::Kms {
            key_id: (!id.is_empty()).then(|| id.clone()),
        })),
        (None, None) if r.sse_customer_algorithm.is_some() => Err(
            "sse-customer-algorithm is set but no sse-customer-key or sse-customer-key-path".into(),
        ),
        (None, None) => Ok(None),
    }
}

/// Environment fallbacks for an S3 replica: `LITESTREAM_ACCESS_KEY_ID` and
/// `LITESTREAM_SECRET_ACCESS_KEY` when no key is configured (the AWS chain reads `AWS_*`
/// itself), and `AWS_CA_BUNDLE` for extra trusted CAs.
pub fn apply_s3_env(c: &mut S3Config) {
    if c.access_key_id.is_none() && std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        c.access_key_id = std::env::var("LITESTREAM_ACCESS_KEY_ID").ok();
        c.secret_access_key = std::env::var("LITESTREAM_SECRET_ACCESS_KEY").ok();
    }
    if c.ca_bundle.is_none() {
        c.ca_bundle = std::env::var_os("AWS_CA_BUNDLE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
    }
}

fn dur(v: &Option<Value>, default: Duration, key: &str) -> Result<Duration, String> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(Value::String(s)) => parse_go_duration(s).map_err(|e| format!("{key}: {e}")),
        Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(Duration::ZERO),
        Some(other) => Err(format!(
            "{key}: expected a duration such as 1s or 5m, got {other:?}"
        )),
    }
}

fn bytes(v: &Value, key: &str) -> Result<u64, String> {
    match v {
        Value::Number(n) => n.as_u64().ok_or(format!("{key}: expected a byte size")),
        Value::String(s) => parse_bytes(s).map_err(|e| format!("{key}: {e}")),
        other => Err(format!("{key}: expected a byte size, got {other:?}")),
    }
}

/// Litestream keys that liteship parses but that change nothing here: each one is named.
fn warn_no_effect(at: &str, r: &RawReplica, warnings: &mut Vec<String>) {
    let mut said = |key: &str, why: &str| {
        warnings.push(format!("{at}.{key} has no effect in liteship: {why}"))
    };
    if r.skip_verify == Some(true) {
        said(
            "skip-verify",
            "TLS certificates are always verified; trust a private CA with AWS_CA_BUNDLE=/path/to/ca.pem",
        );
    }
    if r.sign_payload.is_some() {
        said("sign-payload", "requests are always signed with SigV4");
    }
    if r.require_content_md5.is_some() {
        said(
            "require-content-md5",
            "checksums are sent where the S3 API requires them",
        );
    }
    if r.concurrency.is_some() {
        said(
            "concurrency",
            "uploads are sequential per database; restores use -parallelism",
        );
    }
    if r.validation_interval.is_some() {
        said(
            "validation-interval",
            "liteship checks the replica after uploads by itself",
        );
    }
    if r.name.is_some() {
        said(
            "name",
            "a replica is named by its location in logs and metrics",
        );
    }
}

fn warn_extra(at: &str, extra: &Extra, warnings: &mut Vec<String>) {
    for k in extra.keys() {
        warnings.push(format!("unknown config key {at}.{k} is ignored"));
    }
}

/// Keys whose value locates data: an unset variable in one of them is an error, because
/// the value would silently name another place (or nothing).
const LOCATION_KEYS: [&str; 8] = [
    "path",
    "url",
    "bucket",
    "endpoint",
    "meta-path",
    "dir",
    "sse-customer-key-path",
    "addr",
];

/// Unset `$VAR`s: an error where they are part of a key that locates data, else a warning
/// naming the variable and its line.
fn check_unset(text: &str, unset: &[Unset]) -> Result<Vec<String>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut warnings = Vec::new();
    for u in unset {
        let line = lines.get(u.line - 1).copied().unwrap_or("");
        let key = line
            .trim_start()
            .trim_start_matches("- ")
            .split(':')
            .next()
            .unwrap_or("")
            .trim();
        if LOCATION_KEYS.contains(&key) {
            return Err(format!(
                "line {}: ${{{}}} is not set, and {key}: needs it (it would expand to {:?}); set the variable or run with -no-expand-env",
                u.line,
                u.name,
                expand(line.trim(), env_lookup)
            ));
        }
        warnings.push(format!(
            "line {}: ${{{}}} is not set; it expands to an empty value in {key}:",
            u.line, u.name
        ));
    }
    Ok(warnings)
}

/// Expands a leading `~` to `$HOME`.
pub fn expand_tilde(p: &str) -> PathBuf {
    match p.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(rest))
            .unwrap_or_else(|| PathBuf::from(p)),
        None => PathBuf::from(p),
    }
}

fn normalize(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests;
