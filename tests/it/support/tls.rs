//! An HTTPS front for a loopback S3 server: a certificate authority and a server
//! certificate for 127.0.0.1 made with the `openssl` command, and a TLS-terminating
//! forwarder in Python's standard library (both are on any machine that runs the suite).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FORWARDER: &str = r#"
import asyncio, ssl, sys
port, upstream, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
host, up_port = upstream.rsplit(":", 1)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
async def pipe(r, w):
    try:
        while True:
            data = await r.read(65536)
            if not data:
                break
            w.write(data)
            await w.drain()
    except Exception:
        pass
    finally:
        w.close()
async def handle(cr, cw):
    try:
        ur, uw = await asyncio.open_connection(host, int(up_port))
    except Exception:
        cw.close()
        return
    await asyncio.gather(pipe(cr, uw), pipe(ur, cw))
async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", port, ssl=ctx)
    async with srv:
        await srv.serve_forever()
asyncio.run(main())
"#;

/// A running HTTPS front; killed on drop.
pub struct TlsFront {
    child: Child,
    /// `https://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The PEM bundle of the authority that signed the server certificate.
    pub ca: PathBuf,
    _dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TlsFront {
    /// An HTTPS front for `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> TlsFront {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec![
            "req",
            "-x509",
            "-days",
            "2",
            "-subj",
            "/CN=liteship test CA",
        ];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        openssl(d, &ca);
        let mut csr = vec!["req", "-subj", "/CN=127.0.0.1"];
        csr.extend(ec);
        csr.extend(["-keyout", "srv.key", "-out", "srv.csr"]);
        openssl(d, &csr);
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "srv.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                "srv.pem",
            ],
        );
        let port = super::free_port();
        let child = Command::new("python3")
            .arg("-c")
            .arg(FORWARDER)
            .arg(port.to_string())
            .arg(upstream.trim_start_matches("http://"))
            .arg(d.join("srv.pem"))
            .arg(d.join("srv.key"))
            .stdin(Stdio::null())
            .spawn()
            .expect("run python3");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "TLS front did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsFront {
            child,
            endpoint: format!("https://127.0.0.1:{port}"),
            ca: d.join("ca.pem"),
            _dir: dir,
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
