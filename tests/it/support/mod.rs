#![allow(dead_code)] // fixtures are shared by tests added over time
//! Test fixtures shared by every integration test: a real S3-compatible server, the real
//! Litestream binaries, and SQLite helpers.

pub mod cli;
pub mod faults;
pub mod garage;
pub mod moto;
pub mod oracle;
pub mod proxy;
pub mod replicator;
pub mod s3;
pub mod sqlite;
pub mod tls;

use std::path::PathBuf;

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A free loopback TCP port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free loopback port")
}

/// Random lower-case hex of `n` characters.
pub fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(rand::random_range(0..16u32), 16).unwrap())
        .collect()
}
