//! The litestream.yml parser and the environment expansion on arbitrary text: a config is
//! accepted or rejected with a message, never a panic.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(s) = std::str::from_utf8(data) else {
            return;
        };
        let expanded = liteship::config::expand(s, |n| (n.len() % 2 == 0).then(|| n.to_string()));
        let _ = liteship::config::Config::parse(&expanded);
        let _ = liteship::config::parse_bytes(s);
        let _ = liteship::config::parse_go_duration(s);
    });
}
