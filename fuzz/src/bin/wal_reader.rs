//! The WAL reader on arbitrary bytes: open, read every committed batch (with and without a
//! byte limit), and resume at an offset taken from the input; never panic.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        use liteship::wal::WalReader;
        let bytes = data.to_vec();
        if let Ok(mut r) = WalReader::open(&bytes) {
            let (s1, s2) = r.salts();
            let _ = r.read_committed(0);
            if let Ok(mut r) = WalReader::open(&bytes) {
                let _ = r.read_committed(4096 + 24);
            }
            let off = data.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]) as u64);
            if let Ok(mut r) = WalReader::resume(&bytes, off, s1, s2) {
                let _ = r.read_committed(0);
            }
        }
    });
}
