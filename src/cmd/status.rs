//! `liteship status` (alias `databases`): asks a running replicator over its HTTP address
//! (`GET /status`) for each database's state and prints a table or JSON.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::cli::StatusArgs;

/// How long `status` waits for the replicator's answer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// The address tried when neither `-addr` nor the config's `addr` gives one.
const DEFAULT_ADDR: &str = "127.0.0.1:9090";

pub async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let addr = match &args.addr {
        Some(a) => a.clone(),
        None => configured_addr(&args).unwrap_or_else(|| DEFAULT_ADDR.into()),
    };
    let addr = if addr.starts_with(':') {
        format!("127.0.0.1{addr}")
    } else {
        addr
    };
    let a2 = addr.clone();
    let body = tokio::task::spawn_blocking(move || get(&a2, "/status"))
        .await?
        .with_context(|| {
            format!(
                "ask the replicator at {addr}: is `liteship replicate` running with -addr {addr}?"
            )
        })?;
    let v: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("{addr}/status did not answer with liteship's JSON"))?;
    if args.json {
        println!("{v}");
    } else {
        print_table(&v);
    }
    let all_ready = v["databases"]
        .as_array()
        .is_some_and(|d| d.iter().all(|db| db["state"] == "ready"));
    Ok(if all_ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn configured_addr(args: &StatusArgs) -> Option<String> {
    args.common.config.as_ref()?;
    super::load_config(args.common.config.as_ref(), args.common.no_expand_env)
        .ok()?
        .addr
}

fn print_table(v: &serde_json::Value) {
    println!(
        "{:<40} {:<9} {:<16} {:<16} {:>10} {:>6}  LEASE",
        "DATABASE", "STATE", "LOCAL TXID", "REMOTE TXID", "WAL", "LAG"
    );
    for db in v["databases"].as_array().into_iter().flatten() {
        let s = |k: &str| db[k].as_str().unwrap_or("").to_string();
        println!(
            "{:<40} {:<9} {:<16} {:<16} {:>10} {:>5}s  {}",
            s("db"),
            s("state"),
            s("local_txid"),
            s("remote_txid"),
            db["wal_size"].as_u64().unwrap_or(0),
            db["lag_seconds"].as_f64().unwrap_or(0.0).round(),
            s("lease")
        );
        if let Some(r) = db["reason"].as_str() {
            println!("    reason: {r}");
        }
        if let Some(e) = db["last_error"].as_object() {
            println!(
                "    last error: {} {}: {}",
                e["at"].as_str().unwrap_or(""),
                e["component"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            );
        }
    }
}

/// A plain HTTP/1.0 GET; the body when the status is 200.
fn get(addr: &str, path: &str) -> anyhow::Result<String> {
    let sock = addr
        .to_socket_addrs()?
        .next()
        .with_context(|| format!("resolve {addr}"))?;
    let mut s = TcpStream::connect_timeout(&sock, STATUS_TIMEOUT)?;
    s.set_read_timeout(Some(STATUS_TIMEOUT))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    let status = head.split(' ').nth(1).unwrap_or("");
    if status != "200" {
        bail!("{addr}{path} answered {status}: {}", body.trim());
    }
    Ok(body.to_string())
}
