//! HTTPS endpoints with a private certificate authority (`AWS_CA_BUNDLE`, as with a
//! self-hosted MinIO behind TLS): replication and restore trust the bundle's authority,
//! and without it the restore fails with an error that names the certificate problem.

use crate::support::cli::{liteship, output_within, s, text};
use crate::support::replicator::{content_hash, finish_load, load};
use crate::support::s3::{TestBucket, own_garage};
use crate::support::tls::TlsFront;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn https_endpoint_with_aws_ca_bundle() {
    let srv = own_garage();
    let tb = TestBucket::on(&srv).await;
    let front = TlsFront::start(&srv.endpoint);
    let url = tb
        .url()
        .replace(tb.config.endpoint.as_deref().unwrap(), &front.endpoint);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    finish_load(load(&db, &["--rate", "50", "--duration", "0.3"]));
    let run = |args: &[&str], ca: bool| {
        let mut c = liteship();
        c.env(
            "AWS_ACCESS_KEY_ID",
            tb.config.access_key_id.as_deref().unwrap(),
        )
        .env(
            "AWS_SECRET_ACCESS_KEY",
            tb.config.secret_access_key.as_deref().unwrap(),
        )
        .env_remove("AWS_CA_BUNDLE");
        if ca {
            c.env("AWS_CA_BUNDLE", &front.ca);
        }
        output_within(c.args(args), Duration::from_secs(120))
    };
    let app = format!(
        "{} {} --rate 50 --duration 1 --writer 2",
        env!("CARGO_BIN_EXE_liteship-load"),
        db.display()
    );
    let o = run(&["replicate", "-exec", &app, s(&db), &url], true);
    assert!(o.status.success(), "{}", text(&o));

    let out = dir.path().join("restored.db");
    let o = run(&["restore", "-o", s(&out), &url], true);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(content_hash(&out), content_hash(&db));

    let o = run(
        &["restore", "-o", s(&dir.path().join("no-ca.db")), &url],
        false,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o).to_lowercase();
    assert!(
        t.contains("certificate is not trusted") && t.contains("aws_ca_bundle"),
        "the error names the certificate problem: {t}"
    );
    assert!(!dir.path().join("no-ca.db").exists());
}
