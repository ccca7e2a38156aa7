//! S3 client errors against the real server: they must be clear and never print secrets.

use liteship::replica::s3::S3Replica;
use liteship::replica::{ReplicaClient, S3Config, StorageError};

use crate::support::s3::{TestBucket, test_tuning};

#[tokio::test]
async fn wrong_secret_is_a_clear_auth_error_without_the_secret() {
    let tb = TestBucket::new().await;
    let wrong = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".to_string();
    let cfg = S3Config {
        secret_access_key: Some(wrong.clone()),
        ..tb.config.clone()
    };
    let c = S3Replica::new(&cfg, &test_tuning()).await.unwrap();
    let err = c.list(0).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StorageError::Auth { .. }), "{msg}");
    assert!(
        msg.contains("access denied") && msg.contains("secret access key"),
        "{msg}"
    );
    assert!(!msg.contains(&wrong), "secret leaked: {msg}");
    assert!(
        !format!("{err:?}").contains(&wrong),
        "secret leaked in Debug"
    );
    assert!(
        !format!("{c:?}").contains(&wrong),
        "secret leaked in client Debug"
    );
    let real = tb.config.secret_access_key.clone().unwrap();
    assert!(!msg.contains(&real));
}

#[tokio::test]
async fn missing_bucket_names_the_bucket() {
    let tb = TestBucket::new().await;
    let cfg = S3Config {
        bucket: "no-such-bucket-liteship".into(),
        ..tb.config.clone()
    };
    let c = S3Replica::new(&cfg, &test_tuning()).await.unwrap();
    let err = c.list(0).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StorageError::NoSuchBucket { .. }), "{msg}");
    assert!(msg.contains("no-such-bucket-liteship"), "{msg}");
}

#[tokio::test]
async fn unreachable_endpoint_fails_after_bounded_retries() {
    let port = crate::support::free_port();
    let cfg = S3Config {
        bucket: "b".into(),
        path: "db".into(),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: Some("us-east-1".into()),
        force_path_style: true,
        access_key_id: Some("GK0".into()),
        secret_access_key: Some("s".into()),
        ..S3Config::default()
    };
    let c = S3Replica::new(&cfg, &test_tuning()).await.unwrap();
    let start = std::time::Instant::now();
    let err = c.list(0).await.unwrap_err();
    assert!(matches!(err, StorageError::Unreachable { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
}
