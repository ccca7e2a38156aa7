//! The litestream.yml shape as serde sees it. Every struct keeps unknown keys so that they
//! can be reported (Litestream ignores them silently; liteship warns).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml_ng::Value;

pub type Extra = BTreeMap<String, Value>;

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct RawConfig {
    pub addr: Option<String>,
    pub dbs: Vec<RawDb>,
    pub exec: Option<String>,
    pub logging: Option<RawLogging>,
    pub levels: Option<Vec<RawLevel>>,
    pub snapshot: Option<RawSnapshot>,
    pub l0_retention: Option<Value>,
    pub l0_retention_check_interval: Option<Value>,
    pub retention: Option<RawRetention>,
    pub shutdown_sync_timeout: Option<Value>,
    pub shutdown_sync_interval: Option<Value>,
    pub lease_ttl: Option<Value>,
    /// Top-level replica keys (defaults for every replica) and unknown keys.
    #[serde(flatten)]
    pub rest: Extra,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct RawLogging {
    pub level: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub stderr: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct RawLevel {
    pub interval: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct RawSnapshot {
    pub interval: Option<Value>,
    pub retention: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct RawRetention {
    pub enabled: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct RawDb {
    pub path: Option<String>,
    pub dir: Option<String>,
    pub meta_path: Option<String>,
    pub monitor_interval: Option<Value>,
    pub checkpoint_interval: Option<Value>,
    pub busy_timeout: Option<Value>,
    pub min_checkpoint_page_count: Option<u64>,
    pub truncate_page_n: Option<u64>,
    pub max_sync_wal_bytes: Option<Value>,
    pub restore_if_db_not_exists: Option<bool>,
    pub snapshot: Option<RawSnapshot>,
    pub replica: Option<RawReplica>,
    pub replicas: Option<Vec<RawReplica>>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct RawReplica {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub url: Option<String>,
    pub path: Option<String>,
    pub bucket: Option<String>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub force_path_style: Option<bool>,
    pub skip_verify: Option<bool>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub sync_interval: Option<Value>,
    pub max_sync_ltx_files: Option<u64>,
    pub part_size: Option<Value>,
    pub storage_class: Option<String>,
    pub sse_customer_algorithm: Option<String>,
    pub sse_customer_key: Option<String>,
    pub sse_customer_key_path: Option<String>,
    pub sse_kms_key_id: Option<String>,
    pub auto_recover: Option<bool>,
    pub page_frames: Option<String>,
    pub age: Option<Value>,
    // Accepted for compatibility; no effect in liteship.
    pub sign_payload: Option<bool>,
    pub require_content_md5: Option<bool>,
    pub concurrency: Option<u64>,
    pub validation_interval: Option<Value>,
    pub name: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl RawReplica {
    /// Fills unset fields from `d` (top-level defaults).
    pub fn with_defaults(mut self, d: &RawReplica) -> RawReplica {
        macro_rules! fill {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = d.$f.clone(); } )* };
        }
        fill!(
            kind,
            bucket,
            region,
            endpoint,
            force_path_style,
            skip_verify,
            access_key_id,
            secret_access_key,
            sync_interval,
            max_sync_ltx_files,
            part_size,
            storage_class,
            sse_customer_algorithm,
            sse_customer_key,
            sse_customer_key_path,
            sse_kms_key_id,
            auto_recover,
            page_frames
        );
        self
    }
}
