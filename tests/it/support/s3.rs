//! The S3 fixture: every test gets a fresh bucket on a real S3-compatible server.
//!
//! The server is, in order of preference:
//! 1. the endpoint in `LITESHIP_TEST_S3_ENDPOINT` (with `LITESHIP_TEST_S3_ACCESS_KEY_ID`,
//!    `LITESHIP_TEST_S3_SECRET_ACCESS_KEY`, `LITESHIP_TEST_S3_REGION`; the key must be allowed
//!    to create buckets) — for example a MinIO started elsewhere;
//! 2. MinIO in a container through testcontainers, when a Docker engine is reachable;
//! 3. a Garage server started by this process on loopback ports.

use std::sync::OnceLock;

use liteship::replica::S3Config;
use liteship::replica::s3::{S3Replica, S3Tuning};

use super::garage::{Garage, REGION};
use super::random_hex;

/// Connection details of the shared server.
#[derive(Debug, Clone)]
pub struct S3Server {
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Set when the server is our own Garage (its admin API counts requests).
    pub garage: Option<Garage>,
}

static SERVER: OnceLock<S3Server> = OnceLock::new();

pub fn server() -> &'static S3Server {
    SERVER.get_or_init(|| {
        if let Ok(endpoint) = std::env::var("LITESHIP_TEST_S3_ENDPOINT") {
            let var = |k: &str| {
                std::env::var(k)
                    .unwrap_or_else(|_| panic!("{k} must be set with LITESHIP_TEST_S3_ENDPOINT"))
            };
            return S3Server {
                endpoint,
                region: std::env::var("LITESHIP_TEST_S3_REGION")
                    .unwrap_or_else(|_| "us-east-1".into()),
                access_key_id: var("LITESHIP_TEST_S3_ACCESS_KEY_ID"),
                secret_access_key: var("LITESHIP_TEST_S3_SECRET_ACCESS_KEY"),
                garage: None,
            };
        }
        if docker_reachable() {
            return start_minio();
        }
        let g = Garage::start();
        S3Server {
            endpoint: g.endpoint.clone(),
            region: REGION.into(),
            access_key_id: g.access_key_id.clone(),
            secret_access_key: g.secret_access_key.clone(),
            garage: Some(g),
        }
    })
}

/// Retry tuning for tests: quick backoff so failure tests stay fast.
pub fn test_tuning() -> S3Tuning {
    S3Tuning {
        max_attempts: 3,
        initial_backoff: std::time::Duration::from_millis(50),
        max_backoff: std::time::Duration::from_millis(500),
        connect_timeout: std::time::Duration::from_secs(2),
        stall_timeout: std::time::Duration::from_secs(20),
    }
}

/// A fresh, empty bucket and a replica client on `<bucket>/db`.
pub struct TestBucket {
    pub config: S3Config,
    pub replica: S3Replica,
}

impl TestBucket {
    pub async fn new() -> TestBucket {
        Self::on(server()).await
    }

    /// A bucket on a server of the test's own (for tests that stop it or count requests).
    pub async fn on(srv: &S3Server) -> TestBucket {
        Self::named(srv, &format!("liteship-{}", random_hex(12))).await
    }

    /// A fresh bucket called `bucket` on `srv`.
    pub async fn named(srv: &S3Server, bucket: &str) -> TestBucket {
        let bucket = bucket.to_string();
        let config = S3Config {
            bucket: bucket.clone(),
            path: "db".into(),
            endpoint: Some(srv.endpoint.clone()),
            region: Some(srv.region.clone()),
            force_path_style: true,
            access_key_id: Some(srv.access_key_id.clone()),
            secret_access_key: Some(srv.secret_access_key.clone()),
            ..S3Config::default()
        };
        raw_client_for(srv, &config)
            .await
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "create bucket {bucket}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )
            });
        let replica = S3Replica::new(&config, &test_tuning()).await.unwrap();
        TestBucket { config, replica }
    }

    /// `s3://bucket/db?endpoint=…&region=…&forcePathStyle=true`.
    pub fn url(&self) -> String {
        format!(
            "s3://{}/{}?endpoint={}&region={}&forcePathStyle=true",
            self.config.bucket,
            self.config.path,
            self.config.endpoint.as_deref().unwrap(),
            self.config.region.as_deref().unwrap()
        )
    }
}

/// A plain SDK client for the server, to inspect or plant objects directly.
pub async fn raw_client(config: &S3Config) -> aws_sdk_s3::Client {
    raw_client_for(server(), config).await
}

/// A plain SDK client for `srv`.
pub async fn raw_client_on(srv: &S3Server, config: &S3Config) -> aws_sdk_s3::Client {
    raw_client_for(srv, config).await
}

/// A dedicated Garage server for one test.
pub fn own_garage() -> S3Server {
    own_garage_in(REGION)
}

/// A dedicated Garage server signing for `region`.
pub fn own_garage_in(region: &str) -> S3Server {
    let g = Garage::start_in_region(region);
    S3Server {
        endpoint: g.endpoint.clone(),
        region: region.into(),
        access_key_id: g.access_key_id.clone(),
        secret_access_key: g.secret_access_key.clone(),
        garage: Some(g),
    }
}

async fn raw_client_for(srv: &S3Server, config: &S3Config) -> aws_sdk_s3::Client {
    let creds = aws_sdk_s3::config::Credentials::new(
        &srv.access_key_id,
        &srv.secret_access_key,
        None,
        None,
        "test",
    );
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(srv.region.clone()))
        .endpoint_url(config.endpoint.clone().unwrap())
        .credentials_provider(creds)
        .force_path_style(true)
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Whether a Docker engine answers on `DOCKER_HOST` or the default socket.
fn docker_reachable() -> bool {
    if std::env::var_os("DOCKER_HOST").is_some() {
        return true;
    }
    std::os::unix::net::UnixStream::connect("/var/run/docker.sock").is_ok()
}

/// Starts MinIO with testcontainers on a thread that keeps the container for the whole run.
fn start_minio() -> S3Server {
    use testcontainers::core::{IntoContainerPort, WaitFor};
    use testcontainers::runners::AsyncRunner;
    use testcontainers::{GenericImage, ImageExt};

    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let container = GenericImage::new("minio/minio", "latest")
                .with_exposed_port(9000.tcp())
                .with_wait_for(WaitFor::message_on_stdout("API:"))
                .with_env_var("MINIO_ROOT_USER", "liteship")
                .with_env_var("MINIO_ROOT_PASSWORD", "liteship-secret")
                .with_cmd(["server", "/data"])
                .start()
                .await
                .expect("start MinIO container");
            let port = container.get_host_port_ipv4(9000).await.unwrap();
            tx.send(port).unwrap();
            std::future::pending::<()>().await;
            drop(container);
        });
    });
    let port = rx.recv().expect("MinIO container port");
    S3Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        region: "us-east-1".into(),
        access_key_id: "liteship".into(),
        secret_access_key: "liteship-secret".into(),
        garage: None,
    }
}
