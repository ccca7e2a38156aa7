//! Reads exactly one LZ4 frame (the legacy page encoding of ltx v0.5.0/v0.5.1) from a reader
//! and stops at its end: the frame has no length prefix, so nothing past it may be consumed.
//!
//! Layout: magic `04 22 4D 18`, FLG, BD, optional 8-byte content size, optional 4-byte dict
//! id, header checksum; blocks of `u32 LE size` (bit 31 = stored uncompressed) + data +
//! optional 4-byte block checksum; a zero end mark; an optional 4-byte content checksum.
//! The checksums are skipped, not verified: the LTX file checksum covers the decoded page.

use std::io::Read;

const MAGIC: [u8; 4] = [0x04, 0x22, 0x4d, 0x18];
const FLG_VERSION_MASK: u8 = 0xc0;
const FLG_VERSION_01: u8 = 0x40;
const FLG_INDEPENDENT: u8 = 0x20;
const FLG_BLOCK_CHECKSUM: u8 = 0x10;
const FLG_CONTENT_SIZE: u8 = 0x08;
const FLG_CONTENT_CHECKSUM: u8 = 0x04;
const FLG_DICT_ID: u8 = 0x01;
const BLOCK_UNCOMPRESSED: u32 = 0x8000_0000;

#[derive(Debug)]
pub enum FrameError {
    Eof,
    Io(std::io::Error),
    Malformed(String),
}

/// Decodes one frame into `out` and returns the number of bytes it decoded. A frame that
/// decodes to more than `out.len()` bytes is malformed.
pub fn decode_one_frame<R: Read>(r: &mut R, out: &mut [u8]) -> Result<usize, FrameError> {
    let mut head = [0u8; 6];
    read_exact(r, &mut head)?;
    if head[0..4] != MAGIC {
        return Err(FrameError::Malformed(format!(
            "bad magic {:02x?}",
            &head[0..4]
        )));
    }
    let flg = head[4];
    if flg & FLG_VERSION_MASK != FLG_VERSION_01 {
        return Err(FrameError::Malformed(format!("unsupported FLG {flg:#04x}")));
    }
    let mut skip = 1; // header checksum byte
    if flg & FLG_CONTENT_SIZE != 0 {
        skip += 8;
    }
    if flg & FLG_DICT_ID != 0 {
        skip += 4;
    }
    discard(r, skip)?;
    let mut pos = 0usize;
    let mut block = Vec::new();
    loop {
        let mut sz = [0u8; 4];
        read_exact(r, &mut sz)?;
        let raw = u32::from_le_bytes(sz);
        if raw == 0 {
            break;
        }
        let len = (raw & !BLOCK_UNCOMPRESSED) as usize;
        if len > out.len() - pos + 64 * 1024 {
            return Err(FrameError::Malformed(format!(
                "block of {len} bytes is too large"
            )));
        }
        block.resize(len, 0);
        read_exact(r, &mut block)?;
        if flg & FLG_BLOCK_CHECKSUM != 0 {
            discard(r, 4)?;
        }
        pos += decode_block(&block, raw & BLOCK_UNCOMPRESSED != 0, flg, out, pos)?;
    }
    if flg & FLG_CONTENT_CHECKSUM != 0 {
        discard(r, 4)?;
    }
    Ok(pos)
}

fn decode_block(
    block: &[u8],
    stored: bool,
    flg: u8,
    out: &mut [u8],
    pos: usize,
) -> Result<usize, FrameError> {
    let room = out.len() - pos;
    if stored {
        if block.len() > room {
            return Err(FrameError::Malformed(
                "frame decodes past the page size".into(),
            ));
        }
        out[pos..pos + block.len()].copy_from_slice(block);
        return Ok(block.len());
    }
    let res = if flg & FLG_INDEPENDENT != 0 || pos == 0 {
        lz4_flex::block::decompress_into(block, &mut out[pos..])
    } else {
        let (dict, rest) = out.split_at_mut(pos);
        lz4_flex::block::decompress_into_with_dict(block, rest, dict)
    };
    res.map_err(|e| FrameError::Malformed(format!("lz4 block: {e}")))
}

fn read_exact<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<(), FrameError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Eof
        } else {
            FrameError::Io(e)
        }
    })
}

fn discard<R: Read>(r: &mut R, n: usize) -> Result<(), FrameError> {
    let mut buf = [0u8; 16];
    read_exact(r, &mut buf[..n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn frame_of(data: &[u8]) -> Vec<u8> {
        let mut info = lz4_flex::frame::FrameInfo::new();
        info.content_checksum = true;
        let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn decodes_exactly_one_frame_and_stops() {
        let page: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let mut bytes = frame_of(&page);
        let frame_len = bytes.len();
        bytes.extend_from_slice(b"NEXT");
        let mut r = &bytes[..];
        let mut out = vec![0u8; 4096];
        assert_eq!(decode_one_frame(&mut r, &mut out).unwrap(), 4096);
        assert_eq!(out, page);
        assert_eq!(r, b"NEXT", "must stop at the frame end ({frame_len} bytes)");
    }

    #[test]
    fn truncated_frame_is_eof() {
        let bytes = frame_of(&[1u8; 512]);
        let mut out = vec![0u8; 512];
        for cut in 0..bytes.len() {
            let mut r = &bytes[..cut];
            assert!(decode_one_frame(&mut r, &mut out).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn oversized_frame_is_malformed() {
        let bytes = frame_of(&[9u8; 1024]);
        let mut out = vec![0u8; 512];
        assert!(matches!(
            decode_one_frame(&mut &bytes[..], &mut out),
            Err(FrameError::Malformed(_))
        ));
    }
}
