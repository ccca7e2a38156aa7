//! Timestamps as Litestream writes and reads them: RFC 3339 with Go's `RFC3339Nano`
//! trimming of trailing fractional zeros, in UTC, at millisecond precision.

use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since the Unix epoch of a `SystemTime` (negative before 1970).
pub fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// The current time in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

/// Formats like Go's `time.RFC3339Nano` in UTC: `2026-11-27T07:39:53.299Z`,
/// `2026-11-27T07:39:53.2Z`, or `2026-11-27T07:39:53Z` when the milliseconds are zero.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let dt = OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    );
    if millis == 0 {
        format!("{base}Z")
    } else {
        let frac = format!("{millis:03}");
        format!("{base}.{}Z", frac.trim_end_matches('0'))
    }
}

/// Parses an RFC 3339 timestamp (any offset, fractional seconds allowed).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_trimming() {
        assert_eq!(
            format_rfc3339_ms(1_795_765_193_299),
            "2026-11-27T07:39:53.299Z"
        );
        assert_eq!(
            format_rfc3339_ms(1_795_765_193_200),
            "2026-11-27T07:39:53.2Z"
        );
        assert_eq!(format_rfc3339_ms(1_795_765_193_000), "2026-11-27T07:39:53Z");
    }

    #[test]
    fn parse_round_trip() {
        let t = parse_rfc3339("2026-11-27T07:39:53.299Z").unwrap();
        assert_eq!(to_ms(t), 1_795_765_193_299);
        let t = parse_rfc3339("2026-11-27T08:39:53+01:00").unwrap();
        assert_eq!(to_ms(t), 1_795_765_193_000);
        assert!(parse_rfc3339("yesterday").is_none());
    }
}
