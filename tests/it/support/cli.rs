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

/// `liteship restore ARGS`, with S3 credentials in the environment when given.
pub fn restore(args: &[&str], creds: Option<&S3Config>) -> Output {
    let mut c = liteship();
    if let Some(s3) = creds {
        c.env("AWS_ACCESS_KEY_ID", s3.access_key_id.as_deref().unwrap())
            .env(
                "AWS_SECRET_ACCESS_KEY",
                s3.secret_access_key.as_deref().unwrap(),
            );
    }
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
