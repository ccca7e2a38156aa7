//! A moto S3 server (PyPI `moto[s3]`, in `.tools/moto`) on loopback, one per test process.
//!
//! Garage 2.5.0 ignores `If-None-Match`/`If-Match` on PutObject (tested: a second create
//! with `If-None-Match: *` succeeds), so the writer lease is tested against moto, which
//! honours them as AWS S3, MinIO, R2, B2 and GCS do. moto does not check signatures; the
//! SigV4 path is covered by the Garage tests.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::s3::S3Server;
use super::{free_port, repo_root};

pub const MOTO_VERSION: &str = "5.2.1";

static SERVER: OnceLock<S3Server> = OnceLock::new();

/// The shared moto server (started on first use; it dies with the test process).
pub fn server() -> &'static S3Server {
    SERVER.get_or_init(start)
}

fn install() -> PathBuf {
    let dir = repo_root().join(".tools").join("moto");
    if dir.join("moto").is_dir() {
        return dir;
    }
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg("--target")
        .arg(&dir)
        .arg(format!("moto[s3]=={MOTO_VERSION}"))
        .args(["flask==3.1.3", "flask-cors==6.0.5"])
        .output()
        .expect("run pip");
    assert!(
        out.status.success(),
        "installing moto failed (needs python3 and pip): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn start() -> S3Server {
    let dir = install();
    let port = free_port();
    let log = std::fs::File::create(
        std::env::temp_dir().join(format!("liteship-moto-{}.log", std::process::id())),
    )
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("moto-parent".into())
        .spawn(move || {
            let mut cmd = Command::new("python3");
            cmd.args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
                .arg(port.to_string())
                .env("PYTHONPATH", &dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            // SAFETY: prctl only sets a flag on the child.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            tx.send(cmd.spawn().map(|c| c.id())).unwrap();
            loop {
                std::thread::park();
            }
        })
        .unwrap();
    rx.recv().unwrap().expect("start moto");
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "moto did not start on {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
    S3Server {
        endpoint: format!("http://{addr}"),
        region: "us-east-1".into(),
        access_key_id: "moto-test".into(),
        secret_access_key: "moto-secret".into(),
        garage: None,
    }
}
