//! `liteship-faultproxy`: a network fault proxy for tests and soaks, on loopback between
//! liteship and an S3 server. It speaks just enough HTTP/1.1 (request and response heads,
//! Content-Length and chunked bodies) to inject faults per request, through the real SDK
//! client, its timeouts and its retries:
//!
//! | fault | what the client sees |
//! |---|---|
//! | `refuse` | the connection is reset as soon as it is accepted |
//! | `reset-upload` | the connection is reset after half the request body |
//! | `reset-download` | the response head and half its body, then a reset (a response with no body is not sent at all: the request succeeded, its answer is lost) |
//! | `truncate` | the response head and half its body, then a clean close (no body: as `reset-download`) |
//! | `stall` | the request is read, nothing is ever answered |
//! | `500`, `503`, `skew` | `InternalError`, `SlowDown`, `RequestTimeTooSkewed` (403) |
//! | `latency` | the request is forwarded after 300 ms |
//! | `corrupt` | the response body with one byte flipped (an object that differs) |
//!
//! Usage: `liteship-faultproxy LISTEN UPSTREAM CONTROL`. The control port takes one line
//! per connection and answers one line:
//! - `next KIND N [METHOD [PATH]]`: the next N requests (with that method, and a target
//!   containing PATH, if given) get KIND;
//! - `random P KIND,KIND,…`: from now on each request gets one of the kinds with
//!   probability P (0 disables);
//! - `clear`; `stats` (requests, faults injected by kind, requests by method, body bytes
//!   forwarded up and down, and uploaded body bytes by LTX level, all since the start).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Refuse,
    ResetUpload,
    ResetDownload,
    Truncate,
    Stall,
    Status500,
    Status503,
    Skew,
    Latency,
    Corrupt,
}

impl Fault {
    fn parse(s: &str) -> Option<Fault> {
        Some(match s {
            "refuse" => Fault::Refuse,
            "reset-upload" => Fault::ResetUpload,
            "reset-download" => Fault::ResetDownload,
            "truncate" => Fault::Truncate,
            "stall" => Fault::Stall,
            "500" => Fault::Status500,
            "503" => Fault::Status503,
            "skew" => Fault::Skew,
            "latency" => Fault::Latency,
            "corrupt" => Fault::Corrupt,
            _ => return None,
        })
    }
}

#[derive(Debug, Default)]
struct Plan {
    next: Vec<(Fault, u64, Option<String>, Option<String>)>,
    random: Option<(f64, Vec<Fault>)>,
    requests: u64,
    injected: BTreeMap<String, u64>,
    /// Requests by method, and body bytes forwarded each way (benchmarks read these).
    methods: BTreeMap<String, u64>,
    bytes_up: u64,
    bytes_down: u64,
    /// Request body bytes by LTX level directory (`L0`..`L9`, from `/000N/` in the path).
    up_by_level: BTreeMap<String, u64>,
    /// `record DIR`: every answered level-0 PUT is saved there (benchmarks measure lag).
    record: Option<std::path::PathBuf>,
    recorded: u64,
}

impl Plan {
    /// The fault for the next request (`None`: forward it untouched).
    fn take(&mut self, method: &str, target: &str) -> Option<Fault> {
        self.requests += 1;
        *self.methods.entry(method.to_string()).or_default() += 1;
        let mut chosen = None;
        if let Some(i) = self.next.iter().position(|(_, n, m, p)| {
            *n > 0
                && m.as_deref().is_none_or(|m| m == method)
                && p.as_deref().is_none_or(|p| target.contains(p))
        }) {
            self.next[i].1 -= 1;
            chosen = Some(self.next[i].0);
        } else if let Some((p, kinds)) = &self.random
            && !kinds.is_empty()
            && rand::random::<f64>() < *p
        {
            chosen = Some(kinds[rand::random_range(0..kinds.len())]);
        }
        if let Some(f) = chosen {
            *self.injected.entry(format!("{f:?}")).or_default() += 1;
        }
        chosen
    }
}

type Shared = Arc<Mutex<Plan>>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream, control] = args.as_slice() else {
        eprintln!("usage: liteship-faultproxy LISTEN UPSTREAM CONTROL");
        std::process::exit(2);
    };
    let plan: Shared = Arc::default();
    let l = TcpListener::bind(listen)
        .await
        .expect("bind listen address");
    let c = TcpListener::bind(control)
        .await
        .expect("bind control address");
    tokio::spawn(control_loop(c, plan.clone()));
    loop {
        let Ok((client, _)) = l.accept().await else {
            continue;
        };
        let (plan, upstream) = (plan.clone(), upstream.clone());
        tokio::spawn(async move {
            let _ = serve(client, &upstream, plan).await;
        });
    }
}

async fn control_loop(l: TcpListener, plan: Shared) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        let plan = plan.clone();
        tokio::spawn(async move {
            let mut s = BufReader::new(s);
            let mut line = String::new();
            if s.read_line(&mut line).await.is_err() {
                return;
            }
            let answer = command(&plan, line.trim());
            let _ = s
                .get_mut()
                .write_all(format!("{answer}\n").as_bytes())
                .await;
        });
    }
}

fn command(plan: &Shared, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut p = plan.lock().unwrap_or_else(|e| e.into_inner());
    match words.as_slice() {
        ["next", kind, n, rest @ ..] => match (Fault::parse(kind), n.parse::<u64>()) {
            (Some(f), Ok(n)) => {
                let method = rest.first().map(|m| m.to_string());
                let path = rest.get(1).map(|m| m.to_string());
                p.next.push((f, n, method, path));
                "ok".into()
            }
            _ => format!("error: bad command {line:?}"),
        },
        ["random", prob, kinds] => {
            let kinds: Option<Vec<Fault>> = kinds.split(',').map(Fault::parse).collect();
            match (prob.parse::<f64>(), kinds) {
                (Ok(pr), Some(k)) => {
                    p.random = (pr > 0.0).then_some((pr, k));
                    "ok".into()
                }
                _ => format!("error: bad command {line:?}"),
            }
        }
        ["record", dir] => {
            p.record = Some(dir.into());
            "ok".into()
        }
        ["clear"] => {
            p.next.clear();
            p.random = None;
            "ok".into()
        }
        ["stats"] => format!(
            "requests {} pending {} injected {} methods {} up {} down {} levels {}",
            p.requests,
            p.next.iter().map(|(_, n, _, _)| n).sum::<u64>(),
            join(&p.injected),
            join(&p.methods),
            p.bytes_up,
            p.bytes_down,
            join(&p.up_by_level),
        ),
        _ => format!("error: unknown command {line:?}"),
    }
}

/// The LTX level of a request target in Litestream's S3 layout (`…/0009/…` is `L9`).
fn level_of(target: &str) -> Option<String> {
    target
        .split(['/', '?'])
        .find(|seg| seg.len() == 4 && seg.starts_with("000") && seg.as_bytes()[3].is_ascii_digit())
        .map(|seg| format!("L{}", &seg[3..]))
}

/// Saves an answered level-0 PUT as `DIR/<n>-<unix µs>-<name>`: the time its answer came
/// back from the server (when the replicator learns the file is durable) and the body as
/// sent (`.chunked` appended when it is `aws-chunked`).
fn record_put(p: &mut Plan, target: &str, req: &Head, body: &[u8], resp: &Head) {
    let Some(dir) = &p.record else { return };
    // Parts of a multipart upload are not whole files.
    if !resp.first.contains(" 200 ") || target.contains("partNumber=") {
        return;
    }
    let name = target
        .split('?')
        .next()
        .unwrap_or("")
        .rsplit('/')
        .next()
        .unwrap_or("");
    let us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let raw = String::from_utf8_lossy(&req.raw).to_ascii_lowercase();
    let chunked = if raw.contains("aws-chunked") || raw.contains("streaming-") {
        ".chunked"
    } else {
        ""
    };
    let path = dir.join(format!("{}-{us}-{name}{chunked}", p.recorded));
    p.recorded += 1;
    let _ = std::fs::write(path, body);
}

/// `k=v,k=v` (`-` when empty, so that the stats line keeps its word positions).
fn join(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// An HTTP message head: the first line and the headers, as received.
struct Head {
    raw: Vec<u8>,
    first: String,
    length: Option<u64>,
    chunked: bool,
    close: bool,
    /// `Expect: 100-continue`: the proxy answers it itself (the client then sends the
    /// body) and does not forward the header, so the server answers only once.
    expect_continue: bool,
}

async fn read_head<R: AsyncBufReadExt + Unpin>(r: &mut R) -> std::io::Result<Option<Head>> {
    let mut raw = Vec::new();
    let mut first = String::new();
    let (mut length, mut chunked, mut close) = (None, false, false);
    let mut expect_continue = false;
    loop {
        let mut line = Vec::new();
        let n = r.read_until(b'\n', &mut line).await?;
        if n == 0 {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if text.to_ascii_lowercase().starts_with("expect:") && text.contains("100-continue") {
            expect_continue = true;
            continue;
        }
        raw.extend_from_slice(&line);
        if first.is_empty() {
            first = text;
            continue;
        }
        if text.is_empty() {
            break;
        }
        if let Some((k, v)) = text.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            match k.as_str() {
                "content-length" => length = v.parse().ok(),
                "transfer-encoding" => chunked = v.contains("chunked"),
                "connection" => close = v == "close",
                _ => {}
            }
        }
    }
    Ok(Some(Head {
        raw,
        first,
        length,
        chunked,
        close,
        expect_continue,
    }))
}

/// Reads a whole body (Content-Length or chunked, as raw bytes on the wire).
async fn read_body<R: AsyncBufReadExt + Unpin>(r: &mut R, h: &Head) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    if h.chunked {
        loop {
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line).await?;
            out.extend_from_slice(&line);
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&line)
                    .trim()
                    .split(';')
                    .next()
                    .unwrap_or("0"),
                16,
            )
            .unwrap_or(0);
            let mut chunk = vec![0u8; size + 2];
            r.read_exact(&mut chunk).await?;
            out.extend_from_slice(&chunk);
            if size == 0 {
                return Ok(out);
            }
        }
    }
    let mut body = vec![0u8; h.length.unwrap_or(0) as usize];
    r.read_exact(&mut body).await?;
    Ok(body)
}

fn s3_error(status: u16, reason: &str, code: &str, message: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn serve(client: TcpStream, upstream: &str, plan: Shared) -> std::io::Result<()> {
    let mut up: Option<BufReader<TcpStream>> = None;
    let (cr, mut cw) = client.into_split();
    let mut cr = BufReader::new(cr);
    loop {
        let Some(req) = read_head(&mut cr).await? else {
            return Ok(());
        };
        let mut parts = req.first.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let fault = plan
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(&method, &target);
        match fault {
            Some(Fault::Refuse) => {
                let s = cw.reunite(cr.into_inner()).expect("same stream");
                let _ = s.set_zero_linger();
                return Ok(());
            }
            Some(Fault::ResetUpload) => {
                let want = req.length.unwrap_or(0) / 2;
                let mut half = vec![0u8; want as usize];
                let _ = cr.read_exact(&mut half).await;
                let s = cw.reunite(cr.into_inner()).expect("same stream");
                let _ = s.set_zero_linger();
                return Ok(());
            }
            _ => {}
        }
        if req.expect_continue {
            cw.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        let body = read_body(&mut cr, &req).await?;
        let reply = match fault {
            Some(Fault::Stall) => {
                // Hold the connection, answer nothing, until the client gives up.
                let mut sink = [0u8; 1024];
                while cr.read(&mut sink).await.unwrap_or(0) > 0 {}
                return Ok(());
            }
            Some(Fault::Status500) => Some(s3_error(
                500,
                "Internal Server Error",
                "InternalError",
                "injected",
            )),
            Some(Fault::Status503) => Some(s3_error(
                503,
                "Slow Down",
                "SlowDown",
                "Please reduce your request rate.",
            )),
            Some(Fault::Skew) => Some(s3_error(
                403,
                "Forbidden",
                "RequestTimeTooSkewed",
                "The difference between the request time and the server's time is too large.",
            )),
            Some(Fault::Latency) => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                None
            }
            _ => None,
        };
        if let Some(r) = reply {
            cw.write_all(&r).await?;
            continue;
        }
        if up.is_none() {
            up = Some(BufReader::new(TcpStream::connect(upstream).await?));
        }
        let u = up.as_mut().expect("connected");
        u.get_mut().write_all(&req.raw).await?;
        u.get_mut().write_all(&body).await?;
        let Some(resp) = read_head(u).await? else {
            return Ok(());
        };
        let no_body =
            method == "HEAD" || resp.first.contains(" 204 ") || resp.first.contains(" 304 ");
        let mut rbody = if no_body {
            Vec::new()
        } else {
            read_body(u, &resp).await?
        };
        {
            let mut p = plan.lock().unwrap_or_else(|e| e.into_inner());
            p.bytes_up += body.len() as u64;
            if let Some(level) = level_of(&target) {
                *p.up_by_level.entry(level).or_default() += body.len() as u64;
            }
            p.bytes_down += rbody.len() as u64;
            if method == "PUT" && level_of(&target).as_deref() == Some("L0") {
                record_put(&mut p, &target, &req, &body, &resp);
            }
        }
        let cut = matches!(fault, Some(Fault::Truncate | Fault::ResetDownload));
        if cut && rbody.is_empty() {
            // The upstream did the work; the client never hears of it.
            let s = cw.reunite(cr.into_inner()).expect("same stream");
            let _ = s.set_zero_linger();
            return Ok(());
        }
        let partial = cut && rbody.len() > 1;
        if matches!(fault, Some(Fault::Corrupt)) && !rbody.is_empty() && !resp.chunked {
            let i = rbody.len() / 2;
            rbody[i] ^= 0x5a;
        }
        cw.write_all(&resp.raw).await?;
        if partial {
            cw.write_all(&rbody[..rbody.len() / 2]).await?;
            cw.flush().await?;
            let s = cw.reunite(cr.into_inner()).expect("same stream");
            if fault == Some(Fault::ResetDownload) {
                let _ = s.set_zero_linger();
            }
            return Ok(());
        }
        cw.write_all(&rbody).await?;
        if resp.close || req.close {
            return Ok(());
        }
    }
}
