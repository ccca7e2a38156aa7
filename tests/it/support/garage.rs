//! A throw-away single-node Garage S3 server on loopback, one per test process.
//!
//! The server is spawned from a dedicated thread that never exits, with
//! `PR_SET_PDEATHSIG = SIGKILL`, so it dies with the test process however that ends.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, random_hex};

pub const REGION: &str = "garage";

/// Where the Garage binary is: `$GARAGE_BIN`, `~/.cargo/bin/garage`, or `garage` on PATH.
pub fn garage_bin() -> PathBuf {
    if let Ok(p) = std::env::var("GARAGE_BIN") {
        return p.into();
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cargo_bin = Path::new(&home).join(".cargo/bin/garage");
    if cargo_bin.exists() {
        return cargo_bin;
    }
    "garage".into()
}

/// A running server and the key the tests use.
#[derive(Debug, Clone)]
pub struct Garage {
    pub endpoint: String,
    pub admin_endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub dir: PathBuf,
    pid: std::sync::Arc<std::sync::Mutex<u32>>,
}

impl Garage {
    /// Starts a server; panics with a clear message if Garage is not installed.
    pub fn start() -> Garage {
        Self::start_in_region(REGION)
    }

    /// Starts a server whose S3 API signs for `region`.
    pub fn start_in_region(region: &str) -> Garage {
        remove_stale_dirs();
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("liteship-garage-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (s3, rpc, admin) = (free_port(), free_port(), free_port());
        let cfg = dir.join("garage.toml");
        let toml = format!(
            r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "sqlite"
replication_factor = 1
# MinIO stores objects as they are; Garage's default zstd would spend the shared cores.
compression_level = "none"
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{region}"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
"#,
            d = dir.display(),
            secret = random_hex(64),
        );
        std::fs::File::create(&cfg)
            .and_then(|mut f| f.write_all(toml.as_bytes()))
            .unwrap();
        let pid = spawn_server(&cfg, &dir);
        let g = Garage {
            endpoint: format!("http://127.0.0.1:{s3}"),
            admin_endpoint: format!("127.0.0.1:{admin}"),
            access_key_id: format!("GK{}", random_hex(24)),
            secret_access_key: random_hex(64),
            dir,
            pid: std::sync::Arc::new(std::sync::Mutex::new(pid)),
        };
        g.configure(&cfg);
        g
    }

    fn configure(&self, cfg: &Path) {
        let node = retry_cli(cfg, &["node", "id", "-q"]);
        let node_id = node.trim().split('@').next().unwrap().to_string();
        retry_cli(
            cfg,
            &["layout", "assign", "-z", "dc1", "-c", "10G", &node_id],
        );
        retry_cli(cfg, &["layout", "apply", "--version", "1"]);
        retry_cli(
            cfg,
            &[
                "key",
                "import",
                "--yes",
                "-n",
                "liteship-test",
                &self.access_key_id,
                &self.secret_access_key,
            ],
        );
        retry_cli(cfg, &["key", "allow", "--create-bucket", "liteship-test"]);
    }

    /// Kills the server (the S3 endpoint refuses connections until [`Garage::resume`]).
    pub fn stop(&self) {
        let pid = *self.pid.lock().unwrap();
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let port = self.endpoint.rsplit(':').next().unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_ok()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Freezes the server (SIGSTOP): connections are accepted by the kernel but never
    /// answered, as with a hung server.
    pub fn freeze(&self) {
        let pid = *self.pid.lock().unwrap();
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) {
        let pid = *self.pid.lock().unwrap();
        unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    }

    /// The S3 API port.
    pub fn port(&self) -> u16 {
        self.endpoint.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Starts the server again on the same ports and data.
    pub fn resume(&self) {
        let cfg = self.dir.join("garage.toml");
        *self.pid.lock().unwrap() = spawn_server(&cfg, &self.dir);
        retry_cli(&cfg, &["bucket", "list"]);
    }

    /// Total S3 requests the server has answered (its admin `/metrics`).
    pub fn s3_requests(&self) -> u64 {
        let (_, body) = super::replicator::http_get(&self.admin_endpoint, "/metrics")
            .expect("garage admin metrics");
        body.lines()
            .filter(|l| l.starts_with("api_s3_request_counter"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

/// Removes the directories of servers whose test process is gone.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("liteship-garage-")
            .and_then(|r| r.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn spawn_server(cfg: &Path, dir: &Path) -> u32 {
    let bin = garage_bin();
    let cfg = cfg.to_path_buf();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("garage-parent".into())
        .spawn(move || {
            let mut cmd = Command::new(&bin);
            cmd.arg("-c")
                .arg(&cfg)
                .arg("server")
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            // SAFETY: prctl is async-signal-safe; it only sets a flag on the child.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let res = cmd.spawn().map(|child| child.id()).map_err(|e| {
                format!(
                    "cannot start Garage ({}): {e}. Install it with `cargo install garage --locked --version 2.5.0` or run scripts/test.sh",
                    bin.display()
                )
            });
            tx.send(res).unwrap();
            // Keep this thread (the child's parent for PDEATHSIG) alive for the whole run.
            loop {
                std::thread::park();
            }
        })
        .unwrap();
    rx.recv().unwrap().unwrap_or_else(|e| panic!("{e}"))
}

/// Runs a Garage CLI command, retrying while the node starts up.
fn retry_cli(cfg: &Path, args: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new(garage_bin())
            .arg("-c")
            .arg(cfg)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run garage cli");
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        if Instant::now() > deadline {
            panic!(
                "garage {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}
