//! Replica URLs, parsed as Litestream 0.5 parses them (spec 5.5):
//! `file:///abs/path` and `s3://BUCKET/PATH?endpoint=…&region=…&forcePathStyle=true`.

use std::fmt;

/// Default multipart part size (and the threshold above which uploads are multipart).
pub const DEFAULT_PART_SIZE: u64 = 5 * 1024 * 1024;

/// S3 (and MinIO) accept at most this many parts in one multipart upload.
const MAX_PARTS: u64 = 10_000;

/// The configured part size, raised (in whole MiB) when a file of `file_size` bytes would
/// need more than [`MAX_PARTS`] parts: 5 MiB parts end at 50 GB, and a 100 GiB database's
/// snapshot can be larger. Uploads hold one part in memory at a time.
pub fn effective_part_size(configured: u64, file_size: u64) -> u64 {
    configured.max(file_size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20))
}

/// A parsed replica location.
#[derive(Debug, Clone, PartialEq, Eq)]
// Built once per replica at start-up; the size difference between the variants is of no
// consequence.
#[allow(clippy::large_enum_variant)]
pub enum ReplicaUrl {
    File { path: std::path::PathBuf },
    S3(S3Config),
}

/// Settings of an S3 replica. `Debug` never prints the secret key.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix, used verbatim in `<path>/<level %04x>/…`.
    pub path: String,
    /// Full endpoint URL with scheme, e.g. `http://127.0.0.1:3900`; `None` means AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub force_path_style: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub part_size: u64,
    pub storage_class: Option<String>,
    pub skip_verify: bool,
    /// PEM bundle of extra trusted CAs (`AWS_CA_BUNDLE`), for endpoints with a private CA.
    pub ca_bundle: Option<std::path::PathBuf>,
    /// Server-side encryption (SSE-C or SSE-KMS); `None` leaves it to the bucket.
    pub sse: Option<super::sse::Sse>,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            path: String::new(),
            endpoint: None,
            region: None,
            force_path_style: false,
            access_key_id: None,
            secret_access_key: None,
            part_size: DEFAULT_PART_SIZE,
            storage_class: None,
            skip_verify: false,
            ca_bundle: None,
            sse: None,
        }
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("path", &self.path)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("force_path_style", &self.force_path_style)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("part_size", &self.part_size)
            .field("sse", &self.sse)
            .finish()
    }
}

/// A replica URL that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid replica url {url:?}: {reason}")]
pub struct UrlError {
    pub url: String,
    pub reason: String,
}

impl ReplicaUrl {
    /// Parses `file://` and `s3://` URLs.
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        let err = |reason: &str| UrlError {
            url: redact_url(s),
            reason: reason.to_string(),
        };
        let u = url::Url::parse(s).map_err(|e| err(&e.to_string()))?;
        match u.scheme() {
            "file" => {
                let path = u
                    .to_file_path()
                    .map_err(|()| err("file URLs need an absolute path: file:///path"))?;
                Ok(ReplicaUrl::File { path })
            }
            "s3" => parse_s3(&u).map(ReplicaUrl::S3).map_err(|r| err(&r)),
            other => Err(err(&format!(
                "unsupported scheme {other:?}; liteship supports file:// and s3://"
            ))),
        }
    }
}

fn parse_s3(u: &url::Url) -> Result<S3Config, String> {
    let host = u.host_str().unwrap_or("");
    if host.is_empty() {
        return Err("missing bucket: use s3://BUCKET/PATH".into());
    }
    let mut cfg = S3Config {
        path: go_clean(u.path()).trim_start_matches('/').to_string(),
        ..S3Config::default()
    };
    let host_port = match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    apply_host(&mut cfg, &host_port);
    let mut path_style: Option<bool> = None;
    for (k, v) in u.query_pairs() {
        match k.as_ref() {
            "endpoint" => cfg.endpoint = Some(ensure_endpoint_scheme(&v)),
            "region" => cfg.region = Some(v.into_owned()),
            "forcePathStyle" => path_style = Some(parse_bool(&k, &v)?),
            "skipVerify" => {
                cfg.skip_verify = parse_bool(&k, &v)?;
                if cfg.skip_verify {
                    tracing::warn!(
                        "skipVerify has no effect in liteship: TLS certificates are always verified; trust a private CA with AWS_CA_BUNDLE=/path/to/ca.pem"
                    );
                }
            }
            "storageClass" | "storage-class" => cfg.storage_class = Some(v.into_owned()),
            "partSize" | "part-size" => {
                cfg.part_size = v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n >= DEFAULT_PART_SIZE)
                    .ok_or(format!("{k} must be a byte count of at least 5 MiB"))?;
            }
            // Accepted for compatibility; liteship's behaviour does not depend on them.
            "signPayload"
            | "sign-payload"
            | "requireContentMD5"
            | "require-content-md5"
            | "concurrency" => {}
            other => {
                tracing::warn!(parameter = other, "ignoring unknown replica URL parameter")
            }
        }
    }
    if cfg.endpoint.is_some() && path_style.is_none() {
        cfg.force_path_style = true;
    }
    if let Some(p) = path_style {
        cfg.force_path_style = p;
    }
    Ok(cfg)
}

/// Splits the URL host into bucket and, for known providers, endpoint and region.
fn apply_host(cfg: &mut S3Config, host: &str) {
    let (bucket, rest) = match host.split_once('.') {
        Some((b, r)) => (b, r),
        None => {
            cfg.bucket = host.to_string();
            return;
        }
    };
    cfg.bucket = bucket.to_string();
    if let Some(r) = rest.strip_suffix(".amazonaws.com") {
        // bucket.s3.amazonaws.com or bucket.s3.REGION.amazonaws.com (or s3-REGION).
        let region = r.strip_prefix("s3.").or_else(|| r.strip_prefix("s3-"));
        if let Some(region) = region.filter(|s| !s.is_empty()) {
            cfg.region = Some(region.to_string());
        }
    } else if let Some(r) = rest.strip_suffix(".digitaloceanspaces.com") {
        cfg.endpoint = Some(format!("https://{rest}"));
        cfg.region = Some(r.to_string());
    } else if rest.ends_with(".backblazeb2.com") || rest.ends_with(".scw.cloud") {
        cfg.endpoint = Some(format!("https://{rest}"));
        let mut parts = rest.split('.');
        if let (Some("s3"), Some(region)) = (parts.next(), parts.next()) {
            cfg.region = Some(region.to_string());
        }
    } else if rest == "s3.filebase.com" {
        cfg.endpoint = Some(format!("https://{rest}"));
        cfg.region = Some("us-east-1".into());
    } else if !rest.contains(".com") {
        // MinIO style: bucket.host:port.
        cfg.endpoint = Some(format!("http://{rest}"));
        cfg.force_path_style = true;
    } else {
        cfg.bucket = host.to_string();
    }
}

/// Adds a scheme to a bare endpoint: http:// for localhost, loopback, RFC 1918 and `.local`
/// hosts, https:// otherwise (Litestream's `EnsureEndpointScheme`).
pub fn ensure_endpoint_scheme(endpoint: &str) -> String {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        return endpoint.to_string();
    }
    if is_private_endpoint(endpoint) {
        format!("http://{endpoint}")
    } else {
        format!("https://{endpoint}")
    }
}

/// Whether an endpoint (with or without scheme) is on this host or a private network:
/// localhost, `*.local`, a loopback or RFC 1918 IPv4 address, or `[::1]`.
pub fn is_private_endpoint(endpoint: &str) -> bool {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .unwrap_or(endpoint);
    let host = rest.split(['/', ':']).next().unwrap_or("");
    host == "localhost"
        || host.ends_with(".local")
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_private())
        || rest.starts_with("[::1]")
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok(true),
        "false" | "0" | "f" | "F" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("{key} must be true or false, not {v:?}")),
    }
}

/// Go's `path.Clean`: lexical clean-up of a slash-separated path; "" becomes ".".
pub fn go_clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// Drops any user:password part of a URL before it goes into a message.
pub fn redact_url(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(mut u) if u.password().is_some() || !u.username().is_empty() => {
            let _ = u.set_password(None);
            let _ = u.set_username("");
            u.to_string()
        }
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn part_size_grows_past_ten_thousand_parts() {
        use super::{DEFAULT_PART_SIZE, effective_part_size};
        assert_eq!(
            effective_part_size(DEFAULT_PART_SIZE, 8 << 30),
            DEFAULT_PART_SIZE
        );
        let big = 100u64 << 30;
        let p = effective_part_size(DEFAULT_PART_SIZE, big);
        assert!(
            big.div_ceil(p) <= 10_000 && p.is_multiple_of(1 << 20),
            "{p}"
        );
        assert_eq!(p, 11 << 20);
        assert_eq!(effective_part_size(64 << 20, big), 64 << 20);
    }

    use super::*;

    fn s3(s: &str) -> S3Config {
        match ReplicaUrl::parse(s).unwrap() {
            ReplicaUrl::S3(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn file_urls() {
        assert_eq!(
            ReplicaUrl::parse("file:///var/lib/replica?x=1").unwrap(),
            ReplicaUrl::File {
                path: "/var/lib/replica".into()
            }
        );
        assert!(ReplicaUrl::parse("ftp://x/y").is_err());
    }

    #[test]
    fn s3_paths_follow_litestream_quirks() {
        assert_eq!(s3("s3://bkt/a/b").path, "a/b");
        assert_eq!(s3("s3://bkt/a/b/").path, "a/b");
        assert_eq!(s3("s3://bkt/").path, "");
        assert_eq!(s3("s3://bkt").path, ".");
        assert_eq!(s3("s3://bkt/db").bucket, "bkt");
    }

    #[test]
    fn s3_query_parameters() {
        let c = s3("s3://bkt/db?endpoint=127.0.0.1:9000&region=garage");
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(c.region.as_deref(), Some("garage"));
        assert!(c.force_path_style, "an endpoint implies path style");
        let c = s3("s3://bkt/db?endpoint=https://minio.example.org&forcePathStyle=false");
        assert!(!c.force_path_style);
        assert_eq!(c.endpoint.as_deref(), Some("https://minio.example.org"));
        assert!(ReplicaUrl::parse("s3://bkt/db?forcePathStyle=maybe").is_err());
        assert!(ReplicaUrl::parse("s3://bkt/db?partSize=10").is_err());
    }

    #[test]
    fn s3_hosts() {
        let c = s3("s3://mybkt.s3.eu-west-1.amazonaws.com/db");
        assert_eq!(
            (c.bucket.as_str(), c.region.as_deref()),
            ("mybkt", Some("eu-west-1"))
        );
        assert_eq!(c.endpoint, None);
        let c = s3("s3://mybkt.minio.lan:9000/db");
        assert_eq!(c.bucket, "mybkt");
        assert_eq!(c.endpoint.as_deref(), Some("http://minio.lan:9000"));
        assert!(c.force_path_style);
        let c = s3("s3://mybkt.s3.us-west-002.backblazeb2.com/db");
        assert_eq!(
            c.endpoint.as_deref(),
            Some("https://s3.us-west-002.backblazeb2.com")
        );
        assert_eq!(c.region.as_deref(), Some("us-west-002"));
        let c = s3("s3://mybkt.nyc3.digitaloceanspaces.com/db");
        assert_eq!(c.region.as_deref(), Some("nyc3"));
    }

    #[test]
    fn endpoint_schemes() {
        assert_eq!(
            ensure_endpoint_scheme("localhost:9000"),
            "http://localhost:9000"
        );
        assert_eq!(
            ensure_endpoint_scheme("192.168.1.5:9000"),
            "http://192.168.1.5:9000"
        );
        assert_eq!(
            ensure_endpoint_scheme("minio.local:9000"),
            "http://minio.local:9000"
        );
        assert_eq!(
            ensure_endpoint_scheme("s3.example.com"),
            "https://s3.example.com"
        );
        assert_eq!(ensure_endpoint_scheme("http://x"), "http://x");
    }

    #[test]
    fn go_path_clean() {
        for (i, o) in [
            ("", "."),
            ("/", "/"),
            ("a//b/", "a/b"),
            ("/a/../b", "/b"),
            ("a/./b", "a/b"),
            ("../a", "../a"),
        ] {
            assert_eq!(go_clean(i), o, "{i}");
        }
    }

    #[test]
    fn debug_redacts_secret() {
        let c = S3Config {
            secret_access_key: Some("SUPERSECRET".into()),
            ..S3Config::default()
        };
        assert!(!format!("{c:?}").contains("SUPERSECRET"));
        assert!(!redact_url("s3://user:SUPERSECRET@bkt/db").contains("SUPERSECRET"));
    }
}
