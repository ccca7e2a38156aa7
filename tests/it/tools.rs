//! The operator tools through the real binary: `ltx`, `verify` and `status`, their normal
//! output, their `-json` output and their errors.

use std::path::Path;
use std::time::Duration;

use crate::support::cli::{liteship, output_within, s, text};
use crate::support::oracle::{Target, write_config_with};
use crate::support::replicator::{Replicator, finish_load, load};

fn run(args: &[&str]) -> std::process::Output {
    output_within(liteship().args(args), Duration::from_secs(60))
}

/// A file replica with several level-0 files and no compaction (levels of an hour).
fn replica_with_files(dir: &Path) -> (std::path::PathBuf, String) {
    let db = dir.join("app.db");
    let root = dir.join("replica");
    finish_load(load(&db, &["--rate", "50", "--duration", "0.3"]));
    let cfg = write_config_with(dir, &db, Target::File(&root), "levels:\n  - interval: 1h\n");
    let rep = Replicator::start_ready(dir, &["-config", s(&cfg)], None);
    for w in 2..5 {
        finish_load(load(
            &db,
            &[
                "--rate",
                "50",
                "--duration",
                "0.4",
                "--writer",
                &w.to_string(),
            ],
        ));
        std::thread::sleep(Duration::from_millis(400));
    }
    assert!(rep.stop().success());
    (db, format!("file://{}", root.display()))
}

fn l0_files(url: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(format!("{}/ltx/0", url.trim_start_matches("file://")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// `liteship ltx URL | head -1`: the reader goes away; the listing ends quietly (killed by
/// SIGPIPE, as `ls` would be), never with a panic.
#[test]
fn ltx_into_a_closed_pipe_does_not_panic() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let (_, url) = replica_with_files(dir.path());
    let mut c = liteship()
        .args(["ltx", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(c.stdout.take()); // closed before the first line is written
    let o = c.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        o.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {err}",
        o.status
    );
}

#[test]
fn ltx_lists_files_by_level_with_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (_, url) = replica_with_files(dir.path());
    let o = run(&["ltx", &url]);
    assert!(o.status.success(), "{}", text(&o));
    let t = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(t.starts_with("LEVEL MIN_TXID"), "{t}");
    assert!(
        t.contains("newest:") && t.contains("restorable:") && t.contains("files:"),
        "{t}"
    );
    let o = run(&["ltx", "-json", &url]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let files = v["files"].as_array().unwrap();
    assert!(files.len() >= 4, "{v}");
    assert_eq!(
        v["newest_txid"],
        files
            .iter()
            .map(|f| f["max_txid"].as_str().unwrap())
            .max()
            .unwrap()
    );
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");
    let o = run(&["ltx", "nope://x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("unsupported scheme"), "{}", text(&o));
    let o = run(&["ltx", "-config", "/nonexistent.yml", "/data/app.db"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("/nonexistent.yml"), "{}", text(&o));
}

#[test]
fn verify_passes_a_good_replica_and_names_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let (_, url) = replica_with_files(dir.path());
    let o = run(&["verify", "-max-age", "1h", &url]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("integrity_check ok") && text(&o).contains("result:      ok"),
        "{}",
        text(&o)
    );
    let o = run(&["verify", "-json", &url]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    // Stale: the newest file is older than -max-age.
    std::thread::sleep(Duration::from_secs(2));
    let o = run(&["verify", "-max-age", "1s", &url]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("max-age"), "{}", text(&o));
    // A corrupt file: the drill's restore fails on its checksum.
    let files = l0_files(&url);
    let newest = files.last().unwrap();
    let mut bytes = std::fs::read(newest).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    let saved = std::fs::read(newest).unwrap();
    std::fs::write(newest, &bytes).unwrap();
    let o = run(&["verify", "-json", &url]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(
        v["problems"].to_string().contains("restore drill failed"),
        "{v}"
    );
    std::fs::write(newest, saved).unwrap();
    // A removed file in the middle of level 0: the gap is named.
    std::fs::remove_file(&files[files.len() - 2]).unwrap();
    let o = run(&["verify", &url]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("level 0: gap") && text(&o).contains("missing"),
        "{}",
        text(&o)
    );
}

#[test]
fn status_reports_a_running_replicator() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    finish_load(load(&db, &["--rate", "50", "--duration", "0.3"]));
    let url = format!("file://{}", dir.path().join("replica").display());
    let rep = Replicator::start_ready(dir.path(), &[s(&db), &url], None);
    let o = run(&["status", "-addr", &rep.addr]);
    assert!(o.status.success(), "{}", text(&o));
    let t = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        t.contains("DATABASE") && t.contains("app.db") && t.contains("ready"),
        "{t}"
    );
    assert!(t.contains("held by this process"), "{t}");
    let o = run(&["databases", "-json", "-addr", &rep.addr]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["databases"][0]["state"], "ready", "{v}");
    let addr = rep.addr.clone();
    assert!(rep.stop().success());
    let o = run(&["status", "-addr", &addr]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("is `liteship replicate` running"),
        "{}",
        text(&o)
    );
}
