//! Runs the real `liteship` binary.

use std::path::Path;
use std::process::{Command, Output};

use liteship::replica::S3Config;

pub fn liteship() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_liteship"));
    c.env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("LITESTREAM_CONFIG");
    c
}

/// [`liteship`] with S3 credentials in the environment when given.
pub fn liteship_with(creds: Option<&S3Config>) -> Command {
    let mut c = liteship();
    if let Some(s3) = creds {
        c.env("AWS_ACCESS_KEY_ID", s3.access_key_id.as_deref().unwrap())
            .env(
                "AWS_SECRET_ACCESS_KEY",
                s3.secret_access_key.as_deref().unwrap(),
            );
    }
    c
}

/// `liteship restore ARGS`, with S3 credentials in the environment when given.
pub fn restore(args: &[&str], creds: Option<&S3Config>) -> Output {
    let mut c = liteship_with(creds);
    output_within(
        c.arg("restore").args(args),
        std::time::Duration::from_secs(180),
    )
}

/// Runs a command to completion, killing it (and failing the test) past `limit`.
pub fn output_within(c: &mut std::process::Command, limit: std::time::Duration) -> Output {
    use std::io::Read;
    let mut child = c
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (mut so, mut se) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        b
    });
    let status = match super::replicator::wait_timeout(&mut child, limit) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{c:?} did not finish within {limit:?}");
        }
    };
    Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The files of the replica at `url` as `liteship ltx -json` lists them:
/// (level, min TXID, max TXID, size).
pub fn ltx_files(url: &str, creds: Option<&S3Config>) -> Vec<(u8, u64, u64, u64)> {
    let mut c = liteship_with(creds);
    let o = output_within(
        c.args(["ltx", "-json", url]),
        std::time::Duration::from_secs(60),
    );
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let hex =
        |f: &serde_json::Value, k: &str| u64::from_str_radix(f[k].as_str().unwrap(), 16).unwrap();
    v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let level = f["level"].as_u64().unwrap() as u8;
            (
                level,
                hex(f, "min_txid"),
                hex(f, "max_txid"),
                f["size"].as_u64().unwrap(),
            )
        })
        .collect()
}
