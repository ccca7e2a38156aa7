//! Runs `liteship replicate` and `liteship-load` as real processes, and reads databases.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use liteship::replica::S3Config;

/// A running replicator; killed on drop.
pub struct Replicator {
    child: Option<Child>,
    pub log: PathBuf,
    pub addr: String,
}

impl Replicator {
    /// `liteship replicate -addr 127.0.0.1:<free> ARGS`, logging to `<dir>/replicate-N.log`.
    pub fn start(dir: &Path, args: &[&str], creds: Option<&S3Config>) -> Replicator {
        let port = super::free_port();
        let addr = format!("127.0.0.1:{port}");
        let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let log = dir.join(format!("replicate-{n}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let mut c = super::cli::liteship();
        if let Some(s3) = creds {
            c.env("AWS_ACCESS_KEY_ID", s3.access_key_id.as_deref().unwrap())
                .env(
                    "AWS_SECRET_ACCESS_KEY",
                    s3.secret_access_key.as_deref().unwrap(),
                );
        }
        let child = c
            .arg("replicate")
            .args(["-addr", &addr])
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Replicator {
            child: Some(child),
            log,
            addr,
        }
    }

    /// Like [`Replicator::start`], with the open-file limit (soft and hard) set to `nofile`.
    pub fn start_with_fd_limit(dir: &Path, args: &[&str], nofile: u64) -> Replicator {
        use std::os::unix::process::CommandExt;
        let port = super::free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = dir.join(format!("replicate-fd-{port}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let mut c = super::cli::liteship();
        c.arg("replicate").args(["-addr", &addr]).args(args);
        // SAFETY: setrlimit is async-signal-safe and only affects the child.
        unsafe {
            c.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: nofile,
                    rlim_max: nofile,
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                Ok(())
            });
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Replicator {
            child: Some(child),
            log,
            addr,
        }
    }

    /// SIGTERM and wait (up to `limit`): the exit status and how long it took.
    pub fn stop_within(mut self, limit: Duration) -> (ExitStatus, Duration) {
        let mut c = self.child.take().unwrap();
        let t0 = Instant::now();
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let st = wait_timeout(&mut c, limit).unwrap_or_else(|| {
            let _ = c.kill();
            panic!(
                "replicator did not stop within {limit:?}: {}",
                self.log_text()
            )
        });
        (st, t0.elapsed())
    }

    /// Waits (up to `limit`) for the process to exit by itself, after a signal sent with
    /// [`Replicator::pid`].
    pub fn wait_exit(mut self, limit: Duration) -> ExitStatus {
        let mut c = self.child.take().unwrap();
        wait_timeout(&mut c, limit).unwrap_or_else(|| {
            let _ = c.kill();
            panic!(
                "replicator did not exit within {limit:?}: {}",
                self.log_text()
            )
        })
    }

    /// A metric's value for the series whose labels contain every `labels` pair.
    pub fn metric_with(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .filter(|l| {
                labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// Polls `/readyz` until `pred(status, body)` holds (up to `timeout`); the last answer.
    pub fn wait_readyz(
        &self,
        timeout: Duration,
        pred: impl Fn(u16, &str) -> bool,
    ) -> (u16, String) {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some((s, b)) = self.get("/readyz") {
                if pred(s, &b) {
                    return (s, b);
                }
                last = Some((s, b));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "/readyz never matched within {timeout:?}; last {last:?}: {}",
            self.log_text()
        );
    }

    /// Waits until the log contains `needle` (up to `timeout`).
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log_text();
            if log.contains(needle) {
                return log;
            }
            if Instant::now() > deadline {
                panic!("{needle:?} not logged within {timeout:?}: {log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// [`Replicator::start`], then waits (up to 30 s) until `/readyz` answers 200; the
    /// replicator's log is shown if it does not.
    pub fn start_ready(dir: &Path, args: &[&str], creds: Option<&S3Config>) -> Replicator {
        let rep = Replicator::start(dir, args, creds);
        assert!(
            rep.wait_ready(200, Duration::from_secs(30)),
            "replicator not ready within 30 s: {}",
            rep.log_text()
        );
        rep
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// SIGTERM and wait (up to 60 s).
    pub fn stop(mut self) -> ExitStatus {
        let mut c = self.child.take().unwrap();
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        wait_timeout(&mut c, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("replicator did not stop: {}", self.log_text()))
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(mut self) {
        let mut c = self.child.take().unwrap();
        let _ = c.kill();
        let _ = c.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// HTTP GET on the replicator's address: (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.addr, path)
    }

    /// Waits until `/readyz` answers `want`.
    pub fn wait_ready(&self, want: u16, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.get("/readyz").is_some_and(|(s, _)| s == want) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// A metric's value (first series whose line starts with `name`).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn wait_timeout(c: &mut Child, t: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + t;
    while Instant::now() < deadline {
        if let Some(s) = c.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split(' ').nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// `liteship-load DB ARGS` as a child process.
pub fn load(db: &Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_liteship-load"))
        .arg(db)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Waits for a load process and returns how many commits it made.
pub fn finish_load(c: Child) -> u64 {
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success(), "load generator failed");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The rows of every user table, hashed in a stable order (content comparison).
pub fn content_hash(db: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_litestream_%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for t in tables {
        t.hash(&mut h);
        let mut st = c
            .prepare(&format!("SELECT * FROM \"{t}\" ORDER BY rowid"))
            .unwrap();
        let cols = st.column_count();
        let mut rows = st.query([]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            for i in 0..cols {
                format!("{:?}", r.get_ref(i).unwrap()).hash(&mut h);
            }
        }
    }
    h.finish()
}

/// Per writer: the highest `seq` and whether seqs are contiguous from 1.
pub fn load_rows(db: &Path) -> Vec<(i64, i64, bool)> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let mut st = c.prepare("SELECT writer, MAX(seq), COUNT(*) = MAX(seq) FROM load GROUP BY writer ORDER BY writer").unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Restores `url` with liteship and with Litestream 0.5.17; both must pass the integrity
/// check and hold the same rows as `source`.
pub fn assert_restores_equal(dir: &Path, url: &str, creds: Option<&S3Config>, source: &Path) {
    use super::cli::{restore, s, text};
    use super::sqlite::integrity_check;
    let want = content_hash(source);
    let ours = dir.join(format!("ours-{}.db", super::random_hex(6)));
    let r = restore(&["-o", s(&ours), url], creds);
    assert!(r.status.success(), "{}", text(&r));
    assert_eq!(integrity_check(&ours), "ok");
    assert_eq!(
        content_hash(&ours),
        want,
        "our restore differs from the source"
    );
    let theirs = dir.join(format!("theirs-{}.db", super::random_hex(6)));
    let r = super::oracle::Litestream::v0_5_17().restore(&["-o", s(&theirs), url], creds);
    assert!(
        r.status.success(),
        "litestream restore: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(integrity_check(&theirs), "ok");
    assert_eq!(
        content_hash(&theirs),
        want,
        "Litestream's restore of our replica differs from the source"
    );
}

/// Adds per-database keys (YAML lines, 4-space indented) to a config written by
/// `oracle::write_config_with`.
pub fn add_db_keys(cfg: &Path, keys: &str) {
    let anchor = "    monitor-interval: 100ms\n";
    let yml = std::fs::read_to_string(cfg).unwrap();
    assert!(yml.contains(anchor), "unexpected config layout: {yml}");
    std::fs::write(cfg, yml.replace(anchor, &format!("{anchor}{keys}"))).unwrap();
}
