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
    c.arg("restore").args(args).output().unwrap()
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
