//! The replica key-name parser (LTX file names, Litestream 0.3 names) and replica URLs on
//! arbitrary strings: never panic; a parsed LTX name formats back to itself.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(s) = std::str::from_utf8(data) else {
            return;
        };
        if let Some((a, b)) = liteship::ltx::parse_file_name(s) {
            assert_eq!(liteship::ltx::format_file_name(a, b), s);
        }
        let _ = liteship::ltx::parse_hex16(s);
        let _ = liteship::restore::v3::parse_snapshot_name(s);
        let _ = liteship::restore::v3::parse_segment_name(s);
        let _ = liteship::replica::ReplicaUrl::parse(s);
    });
}
