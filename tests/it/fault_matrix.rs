//! The fault matrix: every fault an operator met while liteship stayed quiet (issue "never
//! silently unhealthy"), each a test named after the fault, run against the real binary
//! with real processes. Each asserts what the operator sees: the ERROR (or WARN) line,
//! the `/readyz` answer, the metric, the exit status, and the final restore (equal to the
//! source, or the process said loudly why not).
//!
//! | fault | log | /readyz | metric | exit | restore |
//! |---|---|---|---|---|---|
//! | replica directory deleted | ERROR not restorable | 503, then 200 healed | errors_total{replica check} | 0 | equal |
//! | staging directory deleted | ERROR staging removed | 200 (healed) | full_level0_images | 0 | equal |
//! | db is a directory / not SQLite / corrupt staged file | Error at start | — | — | 1, no -exec | — |
//! | invalid log level | Error | — | — | 1 | — |
//! | endpoint never reachable | ERROR unreachable | 503 server unreachable | errors_total{unreachable} | 1 | no backups |
//! | outage | ERROR | 503 replication lag | lag_seconds grows | 0 | equal |
//! | no credentials | one ERROR, no SDK lines | 503 no S3 credentials | errors_total{no_credentials} | 1 | — |
//! | idle HTTP connections | no EMFILE | — | — | 0 | equal |
//! | restore onto a full disk | Error no space (needed N MiB) | — | — | 1 | nothing left |
//! | server frozen at SIGTERM | ERROR missing | — | — | 1 within the timeout | — |
//! | stalled upload | WARN at once | 503 request stalled | staging_bytes grows | 0 | equal |
//! | restore from a frozen server | Error stopped answering | — | — | 1 in bounded time | nothing left |
//! | refused database | ERROR refusing | 503 | db_refused 1 | 1 | file untouched |

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::cli::{liteship, output_within, restore, s, text};
use crate::support::oracle::{Target, write_config_with};
use crate::support::replicator::{
    Replicator, add_db_keys, assert_restores_equal, finish_load, load,
};
use crate::support::s3::{TestBucket, own_garage};
use crate::support::sqlite::Tmpfs;

fn file_url(root: &Path) -> String {
    format!("file://{}", root.display())
}

/// A seeded database and a file replica in a fresh directory.
fn seeded() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    finish_load(load(&db, &["--rate", "50", "--duration", "0.2"]));
    let root = dir.path().join("replica");
    (dir, db, root)
}

fn errors_total(rep: &Replicator, label: (&str, &str)) -> f64 {
    let (_, body) = rep.get("/metrics").unwrap_or_default();
    body.lines()
        .filter(|l| l.starts_with("liteship_errors_total{"))
        .filter(|l| l.contains(&format!("{}=\"{}\"", label.0, label.1)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn replica_directory_deleted_while_running() {
    let (dir, db, root) = seeded();
    let url = file_url(&root);
    // No compaction within the test: a compaction of the still-staged level-0 files would
    // make the replica restorable again before the check sees it.
    let cfg = write_config_with(
        dir.path(),
        &db,
        Target::File(&root),
        "levels:\n  - interval: 1h\n",
    );
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    let writer = load(&db, &["--rate", "20", "--duration", "50", "--writer", "1"]);
    std::thread::sleep(Duration::from_secs(3));
    // The replicator may create a file while the directory is being removed.
    let mut tries = 0;
    while let Err(e) = std::fs::remove_dir_all(&root) {
        tries += 1;
        assert!(tries < 20, "remove {}: {e}", root.display());
    }
    let (code, body) = rep.wait_readyz(Duration::from_secs(60), |c, b| {
        c == 503 && b.contains("not restorable")
    });
    assert_eq!(code, 503, "{body}");
    let log = rep.wait_log("not restorable", Duration::from_secs(1));
    assert!(log.contains("ERROR"), "{log}");
    assert!(errors_total(&rep, ("component", "replica check")) >= 1.0);
    rep.wait_readyz(Duration::from_secs(60), |c, _| c == 200);
    finish_load(writer);
    let (st, _) = rep.stop_within(Duration::from_secs(40));
    assert!(st.success(), "exit {st}");
    assert_restores_equal(dir.path(), &url, None, &db);
}

#[test]
fn staging_directory_deleted_while_running() {
    let (dir, db, root) = seeded();
    let url = file_url(&root);
    let rep = Replicator::start_ready(dir.path(), &[s(&db), &url], None);
    let writer = load(&db, &["--rate", "50", "--duration", "8", "--writer", "1"]);
    std::thread::sleep(Duration::from_secs(2));
    std::fs::remove_dir_all(dir.path().join(".app.db-litestream")).unwrap();
    let log = rep.wait_log("staging directory was removed", Duration::from_secs(10));
    assert!(log.contains("ERROR"), "{log}");
    finish_load(writer);
    rep.wait_readyz(Duration::from_secs(30), |c, _| c == 200);
    assert!(rep.metric("liteship_full_level0_images").unwrap_or(0.0) >= 1.0);
    let log_path = rep.log.clone();
    let (st, _) = rep.stop_within(Duration::from_secs(40));
    assert!(
        st.success(),
        "exit {st}: {}",
        std::fs::read_to_string(log_path).unwrap()
    );
    assert_restores_equal(dir.path(), &url, None, &db);
}

/// `replicate -exec "touch MARKER" DB URL` must fail at start, before the child runs.
fn fails_before_exec(db: &Path, url: &str, marker: &Path) -> String {
    let exec = format!("touch {}", marker.display());
    let out = output_within(
        liteship().args(["replicate", "-exec", &exec, s(db), url]),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!marker.exists(), "the application started: {}", text(&out));
    text(&out)
}

#[test]
fn fatal_database_errors_end_the_process_before_exec() {
    let dir = tempfile::tempdir().unwrap();
    let url = file_url(&dir.path().join("replica"));
    let marker = dir.path().join("started");
    let as_dir = dir.path().join("dir.db");
    std::fs::create_dir(&as_dir).unwrap();
    let t = fails_before_exec(&as_dir, &url, &marker);
    assert!(t.contains("dir.db") && t.contains("is a directory"), "{t}");
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'x'; 8192]).unwrap();
    let t = fails_before_exec(&junk, &url, &marker);
    assert!(
        t.contains("junk.db") && t.contains("not a SQLite database"),
        "{t}"
    );
    // A corrupt newest staged file (the local position).
    let db = dir.path().join("app.db");
    finish_load(load(&db, &["--rate", "20", "--duration", "0.2"]));
    let rep = Replicator::start_ready(dir.path(), &[s(&db), &url], None);
    assert!(rep.stop().success());
    let l0 = dir.path().join(".app.db-litestream/ltx/0");
    let newest = std::fs::read_dir(&l0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    std::fs::write(&newest, bytes).unwrap();
    let t = fails_before_exec(&db, &url, &marker);
    assert!(t.contains("auto-recover") && t.contains(".ltx"), "{t}");
    // auto-recover drops it and continues.
    let cfg = write_config_with(
        dir.path(),
        &db,
        Target::File(&dir.path().join("replica")),
        "",
    );
    let yml = std::fs::read_to_string(&cfg).unwrap().replace(
        "      sync-interval: 100ms\n",
        "      sync-interval: 100ms\n      auto-recover: true\n",
    );
    std::fs::write(&cfg, yml).unwrap();
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    finish_load(load(
        &db,
        &["--rate", "50", "--duration", "0.5", "--writer", "2"],
    ));
    let log = rep.log_text();
    assert!(rep.stop().success(), "{log}");
    assert!(log.contains("auto-recover"), "{log}");
    assert_restores_equal(dir.path(), &url, None, &db);
}

#[test]
fn invalid_log_level_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = file_url(&dir.path().join("replica"));
    let run = |c: &mut Command| output_within(c, Duration::from_secs(20));
    let o = run(liteship().args(["replicate", "-log-level", "verbose", s(&db), &url]));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("invalid log level \"verbose\""),
        "{}",
        text(&o)
    );
    let o = run(liteship()
        .env("LOG_LEVEL", "warning")
        .args(["replicate", s(&db), &url]));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("LOG_LEVEL") && text(&o).contains("use warn"),
        "{}",
        text(&o)
    );
    let cfg = dir.path().join("l.yml");
    std::fs::write(
        &cfg,
        format!(
            "logging:\n  level: \"\"\ndbs:\n  - path: {}\n    replica:\n      url: {url}\n",
            db.display()
        ),
    )
    .unwrap();
    let o = run(liteship().args(["replicate", "-config", s(&cfg)]));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("logging.level"), "{}", text(&o));
    let o = run(liteship().args(["restore", "-log-level", "loud", "-o", "/tmp/x.db", &url]));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn unreachable_endpoint_exits_1_and_readyz_names_the_cause() {
    let (dir, db, _) = seeded();
    let port = crate::support::free_port();
    let url = format!("s3://b/db?endpoint=http://127.0.0.1:{port}&region=us-east-1");
    let creds = liteship::replica::S3Config {
        access_key_id: Some("GKabc".into()),
        secret_access_key: Some("secret".into()),
        ..Default::default()
    };
    let rep = Replicator::start(dir.path(), &[s(&db), &url], Some(&creds));
    let (_, body) = rep.wait_readyz(Duration::from_secs(20), |c, b| {
        c == 503 && b.contains("server unreachable")
    });
    assert!(body.contains("app.db"), "{body}");
    assert!(errors_total(&rep, ("cause", "unreachable")) >= 1.0);
    finish_load(load(
        &db,
        &["--rate", "50", "--duration", "0.5", "--writer", "2"],
    ));
    let log = rep.log_text();
    let listing_errors = log.lines().filter(|l| l.contains(" ERROR ")).count();
    assert_eq!(
        listing_errors, 1,
        "rate-limited to one line per 30 s: {log}"
    );
    let (st, _) = rep.stop_within(Duration::from_secs(40));
    assert_eq!(st.code(), Some(1), "nothing reached the replica");
}

#[tokio::test(flavor = "multi_thread")]
async fn lag_is_true_during_an_outage() {
    let srv = own_garage();
    let garage = srv.garage.clone().unwrap();
    let tb = TestBucket::on(&srv).await;
    let (dir, db, _) = seeded();
    let cfg = write_config_with(dir.path(), &db, Target::S3(&tb.config), "");
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    garage.stop();
    let writer = load(&db, &["--rate", "20", "--duration", "35", "--writer", "1"]);
    std::thread::sleep(Duration::from_secs(10));
    let lag1 = rep.metric("liteship_replication_lag_seconds").unwrap();
    assert!(lag1 >= 7.0, "lag {lag1} during a 10 s outage");
    assert!(rep.metric("liteship_remote_txid").unwrap_or(0.0) > 0.0);
    let staged1 = rep.metric("liteship_staging_bytes").unwrap();
    let (_, body) = rep.wait_readyz(Duration::from_secs(30), |c, b| {
        c == 503 && b.contains("replication lag")
    });
    assert!(body.contains("server unreachable"), "{body}");
    assert!(
        rep.metric("liteship_staging_bytes").unwrap() > staged1,
        "staging grows"
    );
    garage.resume();
    finish_load(writer);
    rep.wait_readyz(Duration::from_secs(60), |c, _| c == 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while rep.metric("liteship_replication_lag_seconds") != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "lag never back to 0: {}",
            rep.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (st, _) = rep.stop_within(Duration::from_secs(40));
    assert!(st.success());
    assert_restores_equal(dir.path(), &tb.url(), Some(&tb.config), &db);
}

#[test]
fn missing_credentials_are_named_once() {
    no_credentials_named_once(None);
}

/// The same where the credential chain ends at an instance-metadata endpoint that answers
/// 403 (a VM without an instance role): it used to be reported as "cannot reach" the S3
/// endpoint with "check the endpoint address".
#[test]
fn missing_credentials_behind_a_forbidding_metadata_endpoint_are_named() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let imds = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    no_credentials_named_once(Some(&imds));
}

fn no_credentials_named_once(imds: Option<&str>) {
    let (dir, db, _) = seeded();
    let port = crate::support::free_port();
    let url = format!("s3://b/db?endpoint=http://127.0.0.1:{port}&region=us-east-1");
    let mut c = liteship();
    if let Some(imds) = imds {
        c.env_remove("AWS_EC2_METADATA_DISABLED")
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds);
    }
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "LITESTREAM_ACCESS_KEY_ID",
        "LITESTREAM_SECRET_ACCESS_KEY",
        "AWS_PROFILE",
    ] {
        c.env_remove(k);
    }
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    c.env("HOME", &home);
    let addr = format!("127.0.0.1:{}", crate::support::free_port());
    let log = dir.path().join("nocreds.log");
    let f = std::fs::File::create(&log).unwrap();
    let mut child = c
        .args(["replicate", "-addr", &addr, s(&db), &url])
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut body = String::new();
    while Instant::now() < deadline {
        if let Some((503, b)) = crate::support::replicator::http_get(&addr, "/readyz")
            && b.contains("credentials")
        {
            body = b;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(5));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = crate::support::replicator::wait_timeout(&mut child, Duration::from_secs(40)).unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(body.contains("no S3 credentials"), "{body}\n{text}");
    assert_eq!(
        text.matches("ERROR").count(),
        2,
        "one listing ERROR, one shutdown ERROR: {text}"
    );
    assert!(text.contains("no credentials for"), "{text}");
    assert!(!text.contains("cannot reach"), "{text}");
    assert!(!text.contains(" WARN "), "no SDK warnings: {text}");
    assert_eq!(st.code(), Some(1));
}

#[test]
fn idle_http_connections_cannot_starve_replication() {
    let (dir, db, root) = seeded();
    let url = file_url(&root);
    let rep = Replicator::start_with_fd_limit(dir.path(), &[s(&db), &url], 128);
    rep.wait_readyz(Duration::from_secs(30), |c, _| c == 200);
    let held: Vec<std::net::TcpStream> = (0..400)
        .filter_map(|_| std::net::TcpStream::connect(&rep.addr).ok())
        .collect();
    assert!(held.len() >= 200, "could only open {}", held.len());
    finish_load(load(
        &db,
        &["--rate", "100", "--duration", "5", "--writer", "2"],
    ));
    std::thread::sleep(Duration::from_secs(2));
    let fds = std::fs::read_dir(format!("/proc/{}/fd", rep.pid()))
        .unwrap()
        .count();
    assert!(fds < 64, "{fds} descriptors open");
    drop(held);
    let log = rep.log_text();
    assert!(!log.contains("Too many open files"), "{log}");
    let (st, _) = rep.stop_within(Duration::from_secs(40));
    assert!(st.success(), "{log}");
    assert_restores_equal(dir.path(), &url, None, &db);
}

#[test]
fn restore_onto_a_full_disk_says_no_space() {
    let (dir, db, root) = seeded();
    finish_load(load(
        &db,
        &["--rate", "200", "--duration", "1", "--payload", "20000"],
    ));
    let url = file_url(&root);
    let rep = Replicator::start_ready(dir.path(), &[s(&db), &url], None);
    assert!(rep.stop().success());
    let small = Tmpfs::mount(&dir.path().join("small"), "1m");
    let out = small.0.join("restored.db");
    let r = restore(&["-o", s(&out), &url], None);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    let t = text(&r);
    assert!(
        t.contains("no space left on device writing") && t.contains("needed about"),
        "{t}"
    );
    assert!(!t.contains("corrupt"), "{t}");
    assert!(!out.exists() && !liteship::fsutil::tmp_path(&out).exists());
}

#[test]
fn restore_json_error_and_symlinked_output() {
    let (dir, db, root) = seeded();
    let url = file_url(&root);
    let o = restore(&["-json", "-o", s(&dir.path().join("x.db")), &url], None);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert!(
        v["error"].as_str().unwrap().contains("no matching backup"),
        "{v}"
    );
    let rep = Replicator::start_ready(dir.path(), &[s(&db), &url], None);
    assert!(rep.stop().success());
    let target = dir.path().join("data/real.db");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(&target, b"stale").unwrap();
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink("data/real.db", &link).unwrap();
    let o = restore(&["-force", "-o", s(&link), &url], None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        crate::support::replicator::content_hash(&target),
        crate::support::replicator::content_hash(&db)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_is_bounded_when_the_server_freezes() {
    let srv = own_garage();
    let garage = srv.garage.clone().unwrap();
    let tb = TestBucket::on(&srv).await;
    let (dir, db, _) = seeded();
    let cfg = write_config_with(
        dir.path(),
        &db,
        Target::S3(&tb.config),
        "shutdown-sync-timeout: 5s\n",
    );
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    garage.freeze();
    finish_load(load(
        &db,
        &["--rate", "50", "--duration", "1", "--writer", "2"],
    ));
    let log_path = rep.log.clone();
    let (st, took) = rep.stop_within(Duration::from_secs(30));
    garage.thaw();
    let log = std::fs::read_to_string(log_path).unwrap();
    assert_eq!(st.code(), Some(1), "{log}");
    assert!(took < Duration::from_secs(9), "took {took:?}: {log}");
    assert!(
        log.contains("missing from the replica") && log.contains("ERROR"),
        "{log}"
    );
    assert!(log.matches("final upload failed").count() <= 1, "{log}");
}

/// Established TCP connections from `pid` to `port` (from /proc/net/tcp and the pid's fds).
fn connections_to(pid: i32, port: u16) -> usize {
    let inodes: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let t = std::fs::read_link(e.path()).ok()?;
                    let t = t.to_string_lossy();
                    t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 9
                && f[2].ends_with(&format!(":{port:04X}"))
                && f[3] == "01"
                && f[9].parse::<u64>().is_ok_and(|i| inodes.contains(&i))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_upload_is_loud_and_does_not_pile_up_connections() {
    let srv = own_garage();
    let garage = srv.garage.clone().unwrap();
    let tb = TestBucket::on(&srv).await;
    let (dir, db, _) = seeded();
    let cfg = write_config_with(dir.path(), &db, Target::S3(&tb.config), "");
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    garage.freeze();
    let frozen = Instant::now();
    let writer = load(&db, &["--rate", "20", "--duration", "60", "--writer", "1"]);
    let log = rep.wait_log("no progress", Duration::from_secs(40));
    assert!(
        frozen.elapsed() < Duration::from_secs(35),
        "stall noticed after {:?}",
        frozen.elapsed()
    );
    assert!(log.contains("WARN"), "{log}");
    let (_, body) = rep.wait_readyz(Duration::from_secs(60), |c, b| {
        c == 503 && b.contains("request stalled")
    });
    assert!(body.contains("app.db"), "{body}");
    // Idle pooled connections from before the freeze close after 30 s; each stalled attempt
    // closes its own. From then on at most the attempt in flight holds one.
    std::thread::sleep(Duration::from_secs(40).saturating_sub(frozen.elapsed()));
    let mut most = 0;
    for _ in 0..15 {
        most = most.max(connections_to(rep.pid(), garage.port()));
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(most <= 2, "{most} connections to the frozen server");
    garage.thaw();
    finish_load(writer);
    rep.wait_readyz(Duration::from_secs(90), |c, _| c == 200);
    let log_path = rep.log.clone();
    let (st, _) = rep.stop_within(Duration::from_secs(40));
    assert!(
        st.success(),
        "{}",
        std::fs::read_to_string(log_path).unwrap()
    );
    assert_restores_equal(dir.path(), &tb.url(), Some(&tb.config), &db);
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_from_a_frozen_server_fails_in_bounded_time() {
    let srv = own_garage();
    let garage = srv.garage.clone().unwrap();
    let tb = TestBucket::on(&srv).await;
    let (dir, db, _) = seeded();
    let rep = Replicator::start_ready(dir.path(), &[s(&db), &tb.url()], Some(&tb.config));
    assert!(rep.stop().success());
    garage.freeze();
    let out = dir.path().join("restored.db");
    let t0 = Instant::now();
    let r = restore(
        &["-stall-timeout", "10s", "-o", s(&out), &tb.url()],
        Some(&tb.config),
    );
    let took = t0.elapsed();
    garage.thaw();
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(text(&r).contains("stopped answering"), "{}", text(&r));
    assert!(!out.exists() && !liteship::fsutil::tmp_path(&out).exists());
}

#[test]
fn refused_database_is_never_touched() {
    let (dir, db, root) = seeded();
    let url = file_url(&root);
    let rep = Replicator::start_ready(dir.path(), &[s(&db), &url], None);
    assert!(rep.stop().success());
    // The app's crash on first start left an empty file (and, second round, an empty schema).
    for (i, make) in [
        (|p: &Path| std::fs::write(p, b"").unwrap()) as fn(&Path),
        |p: &Path| {
            let c = rusqlite::Connection::open(p).unwrap();
            c.execute_batch("PRAGMA user_version = 3").unwrap();
        },
    ]
    .into_iter()
    .enumerate()
    {
        let fresh = dir.path().join(format!("fresh{i}.db"));
        make(&fresh);
        let before = std::fs::read(&fresh).unwrap();
        let rep = Replicator::start(dir.path(), &[s(&fresh), &url], None);
        let (_, body) = rep.wait_readyz(Duration::from_secs(20), |c, b| {
            c == 503 && b.contains("refusing")
        });
        assert!(body.contains("failed"), "{body}");
        assert_eq!(rep.metric("liteship_db_refused"), Some(1.0));
        let (st, _) = rep.stop_within(Duration::from_secs(20));
        assert_eq!(st.code(), Some(1));
        assert_eq!(
            std::fs::read(&fresh).unwrap(),
            before,
            "the refused file changed"
        );
        for side in ["-wal", "-shm"] {
            assert!(
                !liteship::db::sidecar(&fresh, side).exists(),
                "{side} created"
            );
        }
        assert!(!dir.path().join(format!(".fresh{i}.db-litestream")).exists());
        let r = restore(&["-if-db-not-exists", "-o", s(&fresh), &url], None);
        assert!(r.status.success(), "{}", text(&r));
        assert!(text(&r).contains("treating it as absent"), "{}", text(&r));
        assert_eq!(
            crate::support::replicator::content_hash(&fresh),
            crate::support::replicator::content_hash(&db)
        );
    }
}

#[test]
fn config_mistakes_are_refused_or_named() {
    let (dir, db, _) = seeded();
    let run = |yml: &str, extra: &[&str]| {
        let cfg = dir.path().join("c.yml");
        std::fs::write(&cfg, yml).unwrap();
        let mut args = vec!["replicate", "-config", s(&cfg)];
        args.extend_from_slice(extra);
        output_within(
            liteship().env_remove("LITESHIP_UNSET_X").args(&args),
            Duration::from_secs(20),
        )
    };
    let d = db.display();
    let o = run(
        &format!("dbs:\n  - path: {d}\n    replica:\n      type: file\n      path: rel/dir\n"),
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("is relative"), "{}", text(&o));
    let o = run(
        "dbs:\n  - path: ${LITESHIP_UNSET_X}\n    replica:\n      url: file:///tmp/x\n",
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("LITESHIP_UNSET_X") && text(&o).contains("line 2"),
        "{}",
        text(&o)
    );
    let o = run(
        &format!(
            "dbs:\n  - path: {d}\n    replica:\n      url: file:///tmp/${{LITESHIP_UNSET_X}}\n"
        ),
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("LITESHIP_UNSET_X"), "{}", text(&o));
    let o = run(
        &format!(
            "dbs:\n  - path: {d}\n    replica:\n      url: file://{}/r\n",
            dir.path().display()
        ),
        &["-staging-limit", "99999999999999999999999"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("too large"), "{}", text(&o));
    let o = output_within(
        liteship().args([
            "restore",
            "-mode",
            "7777",
            "-o",
            "/tmp/m.db",
            "file:///tmp/none",
        ]),
        Duration::from_secs(20),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("0 to 0777"), "{}", text(&o));
    // Keys that change nothing are named.
    let cfg = dir.path().join("warn.yml");
    let root = dir.path().join("r2");
    std::fs::write(
        &cfg,
        format!("dbs:\n  - path: {d}\n    replica:\n      type: file\n      path: {}\n      sign-payload: true\n      secret-access-key: ${{LITESHIP_UNSET_X}}\n", root.display()),
    )
    .unwrap();
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    let log = rep.log_text();
    assert!(rep.stop().success());
    assert!(log.contains("sign-payload has no effect"), "{log}");
    assert!(log.contains("${LITESHIP_UNSET_X} is not set"), "{log}");
}

#[test]
fn blocked_emergency_truncate_is_reported_with_backoff() {
    let (dir, db, root) = seeded();
    let cfg = write_config_with(dir.path(), &db, Target::File(&root), "");
    add_db_keys(
        &cfg,
        "    truncate-page-n: 50\n    min-checkpoint-page-count: 1000000\n",
    );
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    // A reader that holds a snapshot keeps TRUNCATE from completing.
    let reader = rusqlite::Connection::open(&db).unwrap();
    reader
        .execute_batch("BEGIN; SELECT COUNT(*) FROM load;")
        .unwrap();
    finish_load(load(
        &db,
        &["--rate", "100", "--duration", "12", "--writer", "2"],
    ));
    let log = rep.log_text();
    let lines = log.lines().filter(|l| l.contains("TRUNCATE")).count();
    assert!((1..=2).contains(&lines), "{lines} lines: {log}");
    assert!(log.contains("could not complete"), "{log}");
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    let (st, _) = rep.stop_within(Duration::from_secs(40));
    assert!(st.success());
    assert_restores_equal(dir.path(), &file_url(&root), None, &db);
}
