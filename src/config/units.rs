//! Go duration strings (`1s`, `500ms`, `1m30s`, `24h`, `0`) and go-humanize byte sizes
//! (`5MB` = 5*10^6, `5MiB` = 5*2^20, `1048576`), as litestream.yml uses them.

use std::time::Duration;

/// Parses a Go duration string. Negative durations are rejected.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() || t.starts_with('-') {
        return Err(format!(
            "invalid duration {s:?}: use Go syntax such as 500ms, 1s, 5m, 24h"
        ));
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or(format!(
                "invalid duration {s:?}: missing unit (ns, us, ms, s, m, h)"
            ))?;
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            u => return Err(format!("invalid duration {s:?}: unknown unit {u:?}")),
        };
        total += value * nanos;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

/// Parses a go-humanize byte size.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let value: f64 = t[..split]
        .parse()
        .map_err(|_| format!("invalid byte size {s:?}: use a number such as 5MB or 64MiB"))?;
    let mult: f64 = match t[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" | "ki" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" | "mi" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" | "gi" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" | "ti" => 1024f64.powi(4),
        u => return Err(format!("invalid byte size {s:?}: unknown unit {u:?}")),
    };
    let bytes = value * mult;
    // u64::MAX as f64 rounds up to 2^64, which does not fit: compare with `>=`.
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!(
            "invalid byte size {s:?}: too large (at most 16EiB)"
        ));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(
            parse_go_duration("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_go_duration("1.5h").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("-1s").is_err());
        assert!(parse_go_duration("1 day").is_err());
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("5MB").unwrap(), 5_000_000);
        assert_eq!(parse_bytes("5MiB").unwrap(), 5 * 1024 * 1024);
        assert_eq!(parse_bytes("64 MiB").unwrap(), 64 * 1024 * 1024);
        assert_eq!(parse_bytes("1048576").unwrap(), 1_048_576);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999999999999999").is_err(), "overflow");
        assert!(parse_bytes("20EiB").is_err() && parse_bytes("1e400").is_err());
    }
}
