//! The LTX decoder on arbitrary bytes, both page framings (LZ4 block with a size prefix,
//! and the legacy LZ4 frame): it must return a typed error or a file, never panic, and a
//! file it accepts must re-encode and decode to the same pages.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        liteship_fuzz_ltx(data);
    });
}

fn liteship_fuzz_ltx(data: &[u8]) {
    use liteship::ltx::{Decoder, Encoder, decode_all};
    let Ok(f) = decode_all(data) else {
        // The streaming decoder must also fail (or stop) without panicking.
        if let Ok(mut d) = Decoder::new(std::io::Cursor::new(data)) {
            let mut page = vec![0u8; d.header().page_size as usize];
            while let Ok(Some(_)) = d.next_page(&mut page) {}
            let _ = d.finish();
        }
        return;
    };
    let mut enc = match Encoder::new(Vec::new(), f.header) {
        Ok(e) => e,
        Err(_) => return,
    };
    for (pgno, page) in &f.pages {
        if enc.write_page(*pgno, page).is_err() {
            return;
        }
    }
    enc.set_post_apply_checksum(f.trailer.post_apply_checksum);
    if let Ok((bytes, _)) = enc.finish() {
        let again = decode_all(&bytes).expect("a re-encoded file decodes");
        assert_eq!(again.pages, f.pages, "pages differ after a round trip");
    }
}
