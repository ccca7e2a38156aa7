//! LTX file names: `{min:016x}-{max:016x}.ltx`, the one pair of functions that formats and
//! parses them (spec 2.1). Anything else in a level directory is ignored by listings.

/// Formats the file name of an LTX file covering `min..=max`.
pub fn format_file_name(min_txid: u64, max_txid: u64) -> String {
    format!("{min_txid:016x}-{max_txid:016x}.ltx")
}

/// Parses `{min:016x}-{max:016x}.ltx` (lower-case, exactly 16 digits each). Returns `None`
/// for any other name (temp files, upper case, other extensions), as Litestream's listing does.
pub fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    // Byte-wise checks first: a listed key may hold any UTF-8, and slicing a `str` inside a
    // multi-byte character would panic (found by fuzz/key_names).
    let bytes = name.as_bytes();
    if !name.is_ascii() || bytes.len() != 37 || bytes[16] != b'-' || &bytes[33..] != b".ltx" {
        return None;
    }
    let min = parse_hex16(&name[..16])?;
    let max = parse_hex16(&name[17..33])?;
    Some((min, max))
}

/// Parses exactly 16 lower-case hex digits, as TXIDs are written everywhere.
pub fn parse_hex16(s: &str) -> Option<u64> {
    if s.len() != 16
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let n = format_file_name(1, 0x3e8);
        assert_eq!(n, "0000000000000001-00000000000003e8.ltx");
        assert_eq!(parse_file_name(&n), Some((1, 0x3e8)));
        assert_eq!(
            parse_file_name(&format_file_name(u64::MAX, u64::MAX)),
            Some((u64::MAX, u64::MAX))
        );
    }

    #[test]
    fn rejects_other_names() {
        for bad in [
            "0000000000000001-00000000000003E8.ltx",
            "0000000000000001-00000000000003e8.ltx.tmp",
            "000000000000001-00000000000003e8.ltx",
            "0000000000000001_00000000000003e8.ltx",
            "0000000000000001-00000000000003e8.LTX",
            "+000000000000001-00000000000003e8.ltx",
            "",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn hex16_requires_exact_width() {
        assert_eq!(parse_hex16("0000000000000002"), Some(2));
        assert_eq!(parse_hex16("2"), None);
        assert_eq!(parse_hex16("000000000000000G"), None);
    }

    /// fuzz/key_names crash id:000000 (the input, verbatim): a 37-byte key with a
    /// multi-byte character across byte 33 made the parser slice inside it and panic. A
    /// listed object name may hold any UTF-8.
    #[test]
    fn fuzz_key_names_multibyte_name_does_not_panic() {
        let crash = b"file0&region=ust-1&force://7M0.0\xd0\x89aea";
        let s = std::str::from_utf8(crash).unwrap();
        assert_eq!(s.len(), 37);
        assert_eq!(parse_file_name(s), None);
        assert_eq!(
            parse_file_name("00000000000000\u{e9}-00000000000003e8.ltx"),
            None
        );
    }
}
