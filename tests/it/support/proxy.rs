//! `liteship-faultproxy` as a child process between the test's liteship and an S3 server.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A running proxy; killed on drop.
pub struct Proxy {
    child: Child,
    /// `http://127.0.0.1:PORT`, to use as the S3 endpoint.
    pub endpoint: String,
    control: String,
}

impl Proxy {
    /// A proxy to `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> Proxy {
        let up = upstream.trim_start_matches("http://").to_string();
        let (listen, control) = (
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        );
        let child = Command::new(env!("CARGO_BIN_EXE_liteship-faultproxy"))
            .args([&listen, &up, &control])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&control).is_err() {
            assert!(Instant::now() < deadline, "fault proxy did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Proxy {
            child,
            endpoint: format!("http://{listen}"),
            control,
        }
    }

    /// Sends one control line; returns the answer.
    pub fn cmd(&self, line: &str) -> String {
        let mut s = std::net::TcpStream::connect(&self.control).unwrap();
        writeln!(s, "{line}").unwrap();
        let mut answer = String::new();
        BufReader::new(s).read_line(&mut answer).unwrap();
        assert!(!answer.starts_with("error"), "{line}: {answer}");
        answer.trim().to_string()
    }

    /// Faults planned with `next` that have not happened yet.
    pub fn pending(&self) -> u64 {
        let stats = self.cmd("stats");
        stats
            .split_whitespace()
            .skip_while(|w| *w != "pending")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Waits until every planned fault happened.
    pub fn wait_consumed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.pending() == 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
