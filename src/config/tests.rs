use std::time::Duration;

use super::*;

const FULL: &str = r#"
addr: ":9090"
access-key-id: TOPKEY
secret-access-key: TOPSECRET
l0-retention: 0
shutdown-sync-timeout: 10s
levels:
  - interval: 10s
  - interval: 1m
snapshot:
  interval: 1h
  retention: 2h
retention:
  enabled: false
logging:
  level: debug
  type: json
mystery: 1
dbs:
  - path: /alloc/data/db/db.sqlite3
    monitor-interval: 500ms
    checkpoint-interval: 0
    min-checkpoint-page-count: 500
    truncate-page-n: 0
    max-sync-wal-bytes: 16MiB
    replicas:
      - type: s3
        bucket: overseerr-litestream
        path: db
        endpoint: minio.service.consul:9000
        region: us-east-1
        force-path-style: true
        sync-interval: 2s
        frobnicate: yes
"#;

#[test]
fn parses_a_full_litestream_config() {
    let c = Config::parse(FULL).unwrap();
    assert_eq!(c.addr.as_deref(), Some(":9090"));
    assert_eq!(
        c.levels,
        vec![Duration::from_secs(10), Duration::from_secs(60)]
    );
    assert_eq!(c.snapshot_interval, Duration::from_secs(3600));
    assert_eq!(c.l0_retention, Duration::ZERO, "0 disables, not invalid");
    assert!(!c.retention_enabled);
    assert!(c.log_json);
    let db = &c.dbs[0];
    assert_eq!(db.monitor_interval, Duration::from_millis(500));
    assert_eq!(db.checkpoint_interval, Duration::ZERO);
    assert_eq!(db.truncate_page_n, 121_359, "0 keeps the default backstop");
    assert_eq!(db.max_sync_wal_bytes, 16 * 1024 * 1024);
    assert_eq!(db.replica.sync_interval, Duration::from_secs(2));
    let ReplicaUrl::S3(s3) = &db.replica.url else {
        panic!()
    };
    assert_eq!(s3.bucket, "overseerr-litestream");
    assert_eq!(
        s3.endpoint.as_deref(),
        Some("https://minio.service.consul:9000")
    );
    assert_eq!(
        s3.access_key_id.as_deref(),
        Some("TOPKEY"),
        "top-level defaults apply"
    );
    assert!(c.warnings.iter().any(|w| w.contains("mystery")));
    assert!(c.warnings.iter().any(|w| w.contains("frobnicate")));
}

#[test]
fn env_expansion_before_parsing() {
    let text = expand(
        "dbs:\n  - path: $DBP\n    replica:\n      url: file://${ROOT}/r\n",
        |n| match n {
            "DBP" => Some("/data/app.db".into()),
            "ROOT" => Some("/backups".into()),
            _ => None,
        },
    );
    let c = Config::parse(&text).unwrap();
    assert_eq!(c.dbs[0].path, PathBuf::from("/data/app.db"));
    assert!(
        matches!(&c.dbs[0].replica.url, ReplicaUrl::File { path } if path == Path::new("/backups/r"))
    );
}

#[test]
fn rejections_name_the_key() {
    let cases = [
        ("dbs:\n  - path: /a\n", "a replica is required"),
        ("dbs:\n  - replica: {path: /r}\n", "path is required"),
        (
            "dbs:\n  - path: /a\n    replicas: [{path: /r}, {path: /s}]\n",
            "only one replica",
        ),
        (
            "dbs:\n  - path: /a\n    replica: {path: /r, age: {identities: [x]}}\n",
            "age encryption",
        ),
        (
            "dbs:\n  - path: /a\n    monitor-interval: soon\n    replica: {path: /r}\n",
            "dbs[0].monitor-interval",
        ),
        (
            "dbs:\n  - path: /a\n    replica: {type: gs, bucket: b}\n",
            "not supported",
        ),
        (
            "dbs:\n  - path: /a\n    replica: {url: 's3://b/p', bucket: b}\n",
            "cannot be combined",
        ),
        ("levels:\n  - interval: 0s\n", "greater than 0"),
        ("dbs: [", "invalid YAML"),
    ];
    for (text, want) in cases {
        let err = Config::parse(text).unwrap_err();
        assert!(err.contains(want), "{text:?}: {err}");
    }
}

#[test]
fn url_replica_with_keys() {
    let c = Config::parse("dbs:\n  - path: /a\n    replica:\n      url: s3://bkt/db?endpoint=127.0.0.1:3900\n      access-key-id: K\n      secret-access-key: S\n").unwrap();
    let ReplicaUrl::S3(s3) = &c.dbs[0].replica.url else {
        panic!()
    };
    assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
    assert_eq!(s3.secret_access_key.as_deref(), Some("S"));
    assert!(
        !format!("{:?}", c).contains("\"S\""),
        "secret not in Debug output"
    );
}

fn s3_with(extra: &str) -> Result<Config, String> {
    Config::parse(&format!(
        "dbs:\n  - path: /d.db\n    replica:\n      type: s3\n      bucket: b\n      endpoint: https://s3.example.com\n{extra}"
    ))
}

fn sse_of(c: &Config) -> Option<crate::replica::sse::Sse> {
    match &c.dbs[0].replica.url {
        ReplicaUrl::S3(s) => s.sse.clone(),
        other => panic!("not s3: {other:?}"),
    }
}

#[test]
fn server_side_encryption_keys() {
    use crate::replica::sse::Sse;
    let key = aws_smithy_types::base64::encode([1u8; 32]);
    let c = s3_with(&format!(
        "      sse-customer-algorithm: AES256\n      sse-customer-key: {key}\n"
    ))
    .unwrap();
    assert_eq!(sse_of(&c), Some(Sse::customer(&[1u8; 32]).unwrap()));
    let kms = s3_with("      sse-kms-key-id: arn:aws:kms:eu-west-1:1:key/k\n").unwrap();
    assert_eq!(
        sse_of(&kms),
        Some(Sse::Kms {
            key_id: Some("arn:aws:kms:eu-west-1:1:key/k".into())
        })
    );
    assert_eq!(sse_of(&s3_with("").unwrap()), None);
    for (extra, want) in [
        (
            format!("      sse-customer-key: {key}\n      sse-kms-key-id: k\n"),
            "mutually exclusive",
        ),
        (
            format!("      sse-customer-key: {key}\n      sse-customer-key-path: /k\n"),
            "mutually exclusive",
        ),
        (
            format!("      sse-customer-algorithm: AES128\n      sse-customer-key: {key}\n"),
            "AES256",
        ),
        (
            "      sse-customer-algorithm: AES256\n".into(),
            "no sse-customer-key",
        ),
        ("      sse-customer-key: c2hvcnQ=\n".into(), "32 bytes"),
    ] {
        let err = s3_with(&extra).unwrap_err();
        assert!(err.contains(want), "{extra}: {err}");
        assert!(!err.contains(&key), "the key leaked into: {err}");
    }
    let plain_http = Config::parse(&format!(
        "dbs:\n  - path: /d.db\n    replica:\n      type: s3\n      bucket: b\n      endpoint: http://s3.example.com\n      sse-customer-key: {key}\n"
    ))
    .unwrap_err();
    assert!(plain_http.contains("https://"), "{plain_http}");
    let loopback = Config::parse(&format!(
        "dbs:\n  - path: /d.db\n    replica:\n      type: s3\n      bucket: b\n      endpoint: http://127.0.0.1:9000\n      sse-customer-key: {key}\n"
    ));
    assert!(loopback.is_ok(), "{loopback:?}");
}
