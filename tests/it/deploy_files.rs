//! The Grafana dashboard and the Prometheus alert rules in `deploy/` only name metrics that a
//! running `liteship replicate` really serves on `/metrics`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::support::cli::s;
use crate::support::replicator::{Replicator, finish_load, load};
use crate::support::repo_root;

/// Every `litestream_*` / `liteship_*` identifier in `text`, plus `up` when it is used as a
/// series (Prometheus's own series for a scrape target, not one of ours).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start_ok = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let rest = &text[i..];
        if start_ok && (rest.starts_with("litestream_") || rest.starts_with("liteship_")) {
            let len = rest
                .bytes()
                .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
                .count();
            out.insert(rest[..len].to_string());
            i += len;
        } else {
            i += 1;
        }
    }
    out
}

/// The PromQL expressions of the dashboard's panels.
fn dashboard_exprs() -> Vec<String> {
    let path = repo_root().join("deploy/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let panels = v["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "dashboard has {} panels", panels.len());
    let mut exprs = Vec::new();
    for p in panels {
        for t in p["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    for var in v["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["query"].as_str() {
            exprs.push(q.to_string());
        }
    }
    exprs
}

/// The alert rules' expressions, with their names.
fn alert_exprs() -> Vec<(String, String)> {
    let path = repo_root().join("deploy/prometheus-alerts.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    let mut out = Vec::new();
    for g in v["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            let name = r["alert"].as_str().expect("alert name").to_string();
            let expr = r["expr"].as_str().expect("expr").to_string();
            assert!(
                r["annotations"]["summary"].as_str().is_some(),
                "{name}: no summary"
            );
            out.push((name, expr));
        }
    }
    out
}

/// Sample names of a Prometheus text exposition.
fn served(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// A replicator on a file replica, scraped while it replicates normally (uploads,
/// checkpoints) and again after its level-0 directory was replaced by a file, so that the
/// error series exist too. Returns the union of what /metrics served.
fn metrics_of_a_running_replicator() -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    finish_load(load(&db, &["--rate", "50", "--duration", "0.3"]));
    let replica = dir.path().join("replica");
    let cfg = dir.path().join("litestream.yml");
    let yaml = format!(
        "dbs:\n  - path: {}\n    checkpoint-interval: 1s\n    min-checkpoint-page-count: 1\n    replica:\n      url: file://{}\n",
        db.display(),
        replica.display()
    );
    std::fs::write(&cfg, yaml).unwrap();
    let rep = Replicator::start_ready(dir.path(), &["-config", s(&cfg)], None);
    finish_load(load(&db, &["--rate", "50", "--duration", "2"]));
    let mut names = BTreeSet::new();
    let mut scrape = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some((200, body)) = rep.get("/metrics") {
                names.extend(served(&body));
                if names.contains(want) {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!("{want} never appeared: {}", rep.log_text());
    };
    scrape("litestream_replica_operation_total");
    // Break the replica: every level-0 upload now fails.
    let l0 = replica.join("ltx/0");
    std::fs::remove_dir_all(&l0).unwrap();
    std::fs::write(&l0, b"in the way").unwrap();
    let mut writer = load(&db, &["--rate", "20", "--duration", "30"]);
    scrape("litestream_replica_operation_errors_total");
    scrape("liteship_errors_total");
    let _ = writer.kill();
    let _ = writer.wait();
    names
}

#[test]
fn dashboard_and_alerts_name_only_served_metrics() {
    let served = metrics_of_a_running_replicator();
    let mut missing = Vec::new();
    for e in dashboard_exprs() {
        for m in metric_names(&e) {
            if !served.contains(&m) {
                missing.push(format!("dashboard: {m} (in `{e}`)"));
            }
        }
    }
    let alerts = alert_exprs();
    assert!(alerts.len() >= 8, "{} alert rules", alerts.len());
    for (name, e) in &alerts {
        let names = metric_names(e);
        assert!(
            !names.is_empty() || e.starts_with("up{"),
            "{name}: names no metric"
        );
        for m in names {
            if !served.contains(&m) {
                missing.push(format!("alert {name}: {m}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "named but not served by /metrics:\n{}\nserved: {served:?}",
        missing.join("\n")
    );
    // The rules the issue asks for exist.
    let rule_names: Vec<&str> = alerts.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "LiteshipReplicaStale",
        "LiteshipReplicationLagHigh",
        "LiteshipDatabaseRefused",
        "LiteshipWriterLeaseLost",
        "LiteshipStagingLimitHit",
    ] {
        assert!(rule_names.contains(&want), "no alert {want}");
    }
}

#[test]
fn metric_name_extraction_sees_every_series() {
    let n = metric_names(
        "histogram_quantile(0.5, sum by (le) (rate(litestream_replica_operation_duration_seconds_bucket[5m]))) / liteship_x{a=\"b\"}",
    );
    assert!(n.contains("litestream_replica_operation_duration_seconds_bucket"));
    assert!(n.contains("liteship_x"));
    // A served-name check that never finds anything would pass vacuously.
    assert!(!served("# HELP x\nliteship_a{db=\"x\"} 1\nliteship_b 2\n").is_empty());
}
