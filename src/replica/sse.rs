//! Server-side encryption of S3 objects: SSE-C (AES256 with a key the operator holds; the
//! key travels with every PUT, GET and HEAD and S3 keeps only its MD5) or SSE-KMS (the
//! server encrypts with a KMS key). Configured with Litestream's keys
//! `sse-customer-algorithm`, `sse-customer-key`, `sse-customer-key-path`, `sse-kms-key-id`.

use aws_smithy_types::base64;
use md5::{Digest, Md5};

/// How objects are encrypted at rest.
#[derive(Clone, PartialEq, Eq)]
pub enum Sse {
    /// SSE-C, AES256. Both fields are base64; `key` is the secret.
    Customer { key: String, key_md5: String },
    /// SSE-KMS, with the bucket's default key when `key_id` is `None`.
    Kms { key_id: Option<String> },
}

impl std::fmt::Debug for Sse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sse::Customer { key_md5, .. } => f
                .debug_struct("Customer")
                .field("key", &"<redacted>")
                .field("key_md5", key_md5)
                .finish(),
            Sse::Kms { key_id } => f.debug_struct("Kms").field("key_id", key_id).finish(),
        }
    }
}

/// The only SSE-C algorithm S3 knows.
pub const SSE_C_ALGORITHM: &str = "AES256";

impl Sse {
    /// SSE-C with a raw 32-byte key.
    pub fn customer(raw: &[u8]) -> Result<Sse, String> {
        if raw.len() != 32 {
            return Err(format!(
                "the SSE-C key must be 32 bytes (256 bits), not {}",
                raw.len()
            ));
        }
        Ok(Sse::Customer {
            key: base64::encode(raw),
            key_md5: base64::encode(Md5::digest(raw)),
        })
    }

    /// SSE-C from `sse-customer-key`: the key in base64.
    pub fn customer_from_base64(text: &str) -> Result<Sse, String> {
        let raw = base64::decode(text.trim())
            .map_err(|_| "sse-customer-key is not valid base64".to_string())?;
        Sse::customer(&raw).map_err(|e| format!("sse-customer-key: {e}"))
    }

    /// SSE-C from `sse-customer-key-path`: a file holding the key, raw (32 bytes) or in
    /// base64.
    pub fn customer_from_file(path: &std::path::Path) -> Result<Sse, String> {
        let at = path.display();
        let bytes = std::fs::read(path).map_err(|e| format!("sse-customer-key-path {at}: {e}"))?;
        if bytes.len() == 32 {
            return Sse::customer(&bytes);
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("sse-customer-key-path {at}: neither 32 raw bytes nor base64"))?;
        Sse::customer_from_base64(&text).map_err(|e| format!("sse-customer-key-path {at}: {e}"))
    }

    /// The SSE-C request fields (algorithm, key, key MD5), all `None` for SSE-KMS.
    pub fn customer_fields(sse: Option<&Sse>) -> (Option<String>, Option<String>, Option<String>) {
        match sse {
            Some(Sse::Customer { key, key_md5 }) => (
                Some(SSE_C_ALGORITHM.to_string()),
                Some(key.clone()),
                Some(key_md5.clone()),
            ),
            _ => (None, None, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_key_is_checked_and_redacted() {
        let raw = [7u8; 32];
        let sse = Sse::customer_from_base64(&base64::encode(raw)).unwrap();
        let Sse::Customer { key, key_md5 } = &sse else {
            panic!("not SSE-C")
        };
        assert_eq!(base64::decode(key).unwrap(), raw);
        assert_eq!(base64::decode(key_md5).unwrap(), Md5::digest(raw).to_vec());
        assert!(!format!("{sse:?}").contains(key.as_str()), "key in Debug");
        let short = Sse::customer_from_base64(&base64::encode([1u8; 16])).unwrap_err();
        assert!(short.contains("32 bytes"), "{short}");
        assert!(Sse::customer_from_base64("not base64!").is_err());
    }

    #[test]
    fn key_file_raw_or_base64() {
        let dir = tempfile::tempdir().unwrap();
        let (raw, b64) = (dir.path().join("raw"), dir.path().join("b64"));
        std::fs::write(&raw, [9u8; 32]).unwrap();
        std::fs::write(&b64, format!("{}\n", base64::encode([9u8; 32]))).unwrap();
        assert_eq!(
            Sse::customer_from_file(&raw).unwrap(),
            Sse::customer_from_file(&b64).unwrap()
        );
        let missing = Sse::customer_from_file(&dir.path().join("nope")).unwrap_err();
        assert!(missing.contains("nope"), "{missing}");
    }
}
