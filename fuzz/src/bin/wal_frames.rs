//! Structure-aware WAL fuzzing: the input describes frames (page number, commit size,
//! page bytes) that are written with valid salts and checksums, so that the reader's
//! commit logic, page map and resume paths are reached (random bytes rarely pass the
//! checksums); then one byte chosen by the input may be flipped. Never panic; a batch's
//! pages are within its commit.
use liteship::wal::{WAL_HEADER_SIZE, WalReader, wal_checksum};

const PAGE: usize = 512;

fn build(data: &[u8]) -> Vec<u8> {
    let big = data.first().is_some_and(|b| b & 1 == 1);
    let mut h = vec![0u8; WAL_HEADER_SIZE];
    h[0..4].copy_from_slice(&(0x377f0682u32 | u32::from(big)).to_be_bytes());
    h[4..8].copy_from_slice(&3007000u32.to_be_bytes());
    h[8..12].copy_from_slice(&(PAGE as u32).to_be_bytes());
    h[16..20].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    h[20..24].copy_from_slice(&0x9abc_def0u32.to_be_bytes());
    let (mut s1, mut s2) = wal_checksum(big, &h[..24], 0, 0);
    h[24..28].copy_from_slice(&s1.to_be_bytes());
    h[28..32].copy_from_slice(&s2.to_be_bytes());
    let mut out = h;
    for chunk in data.get(1..).unwrap_or(&[]).chunks(4) {
        let pgno = u32::from(*chunk.first().unwrap_or(&1) % 16) + 1;
        let commit = if chunk.get(1).is_some_and(|b| b & 1 == 1) {
            u32::from(*chunk.get(2).unwrap_or(&0) % 20)
        } else {
            0
        };
        let fill = *chunk.get(3).unwrap_or(&0);
        let mut fh = [0u8; 24];
        fh[0..4].copy_from_slice(&pgno.to_be_bytes());
        fh[4..8].copy_from_slice(&commit.to_be_bytes());
        fh[8..16].copy_from_slice(&out[16..24]);
        let page = vec![fill; PAGE];
        let (a, b) = wal_checksum(big, &fh[..8], s1, s2);
        (s1, s2) = wal_checksum(big, &page, a, b);
        fh[16..20].copy_from_slice(&s1.to_be_bytes());
        fh[20..24].copy_from_slice(&s2.to_be_bytes());
        out.extend_from_slice(&fh);
        out.extend_from_slice(&page);
    }
    out
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let mut wal = build(data);
        if data.len() > 6 && data[data.len() - 1] & 3 == 0 {
            let at = (u16::from_be_bytes([data[1], data[2]]) as usize) % wal.len();
            wal[at] ^= data[3] | 1;
        }
        let Ok(mut r) = WalReader::open(&wal) else {
            return;
        };
        let (s1, s2) = r.salts();
        if let Ok(batch) = r.read_committed(0) {
            assert!(batch.pages.keys().all(|p| *p <= batch.commit), "page beyond commit");
            let _ = WalReader::resume(&wal, batch.end_offset, s1, s2).map(|mut r| r.read_committed(0));
        }
        if let Ok(mut r) = WalReader::open(&wal) {
            let _ = r.read_committed((PAGE + 24) as u64 * 2);
        }
    });
}
