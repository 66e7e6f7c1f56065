//! LZNT1, the compression NTFS uses for compressed attributes
//! ([MS-XCA] section 2.5, "LZNT1 Algorithm Details").
//!
//! A compressed buffer is a series of chunks, each holding up to 4096
//! bytes of output:
//!
//! ```text
//! chunk header (u16 LE): bits 0-11  stored size - 3 (header included)
//!                        bits 12-14 signature, 3
//!                        bit  15    1 = compressed, 0 = stored as is
//! compressed body:       flag byte, then 8 items, one per flag bit (LSB first):
//!                        0 = one literal byte; 1 = u16 LE back-reference whose
//!                        split between offset and length depends on how much
//!                        of the chunk has been produced so far
//! ```
//!
//! A header of zero ends the stream early.

/// Bytes of output one chunk produces at most.
const CHUNK_OUT: usize = 4096;

/// Why a compressed buffer could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Lznt1Error {
    /// A chunk claims more bytes than the input holds.
    #[error("LZNT1 chunk at input offset {0:#x} runs past the end of the compressed data")]
    TruncatedChunk(usize),
    /// A back-reference points before the start of its chunk.
    #[error("LZNT1 back-reference at input offset {0:#x} points before the start of its chunk")]
    BadReference(usize),
    /// A chunk decodes to more than 4096 bytes.
    #[error("LZNT1 chunk at input offset {0:#x} decodes to more than 4096 bytes")]
    ChunkTooLong(usize),
}

/// Decompresses `input` into `out`, appending at most `limit` bytes. Returns
/// the number of bytes appended. Decoding stops at the end of input, at a
/// zero chunk header, or when `limit` is reached.
pub(crate) fn decompress(
    input: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<usize, Lznt1Error> {
    let start_len = out.len();
    let mut pos = 0usize;
    while out.len() - start_len < limit {
        let Some(h) = input.get(pos..pos + 2) else {
            break;
        };
        let header = u16::from_le_bytes([h[0], h[1]]);
        if header == 0 {
            break;
        }
        let body_len = usize::from(header & 0x0fff) + 1;
        let body_start = pos + 2;
        let body = input
            .get(body_start..body_start + body_len)
            .ok_or(Lznt1Error::TruncatedChunk(pos))?;
        let chunk_start = out.len();
        if header & 0x8000 == 0 {
            // Stored chunk: the body is the output.
            out.extend_from_slice(body);
        } else {
            decode_chunk(body, body_start, out, chunk_start)?;
        }
        if out.len() - chunk_start > CHUNK_OUT {
            return Err(Lznt1Error::ChunkTooLong(pos));
        }
        pos = body_start + body_len;
    }
    let produced = out.len() - start_len;
    if produced > limit {
        out.truncate(start_len + limit);
    }
    Ok(produced.min(limit))
}

/// Decodes one compressed chunk body, appending to `out`; back-references
/// may only reach bytes produced by this chunk (from `chunk_start`).
fn decode_chunk(
    body: &[u8],
    body_at: usize,
    out: &mut Vec<u8>,
    chunk_start: usize,
) -> Result<(), Lznt1Error> {
    let mut i = 0usize;
    while i < body.len() {
        let flags = body[i];
        i += 1;
        for bit in 0..8 {
            if i >= body.len() {
                return Ok(());
            }
            if flags & (1 << bit) == 0 {
                out.push(body[i]);
                i += 1;
                continue;
            }
            let Some(t) = body.get(i..i + 2) else {
                return Err(Lznt1Error::TruncatedChunk(body_at + i));
            };
            let token = u16::from_le_bytes([t[0], t[1]]);
            i += 2;
            let produced = out.len() - chunk_start;
            if produced == 0 {
                return Err(Lznt1Error::BadReference(body_at + i - 2));
            }
            // The offset field widens as the chunk grows: 4 bits while at most 16
            // bytes are out, one more bit each time that count doubles, up to 12.
            let mut offset_bits = 4u32;
            while offset_bits < 12 && (produced - 1) >> offset_bits != 0 {
                offset_bits += 1;
            }
            let length_bits = 16 - offset_bits;
            let length = usize::from(token & ((1u16 << length_bits) - 1)) + 3;
            let offset = usize::from(token >> length_bits) + 1;
            if offset > produced {
                return Err(Lznt1Error::BadReference(body_at + i - 2));
            }
            if produced + length > CHUNK_OUT {
                return Err(Lznt1Error::ChunkTooLong(body_at + i - 2));
            }
            // Byte by byte: the source may overlap what is being written (runs).
            let from = out.len() - offset;
            for k in 0..length {
                let b = out[from + k];
                out.push(b);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_chunk() {
        let mut input = vec![0x02, 0x30]; // stored, 3 bytes, signature 3
        input.extend_from_slice(b"abc");
        let mut out = Vec::new();
        assert_eq!(decompress(&input, &mut out, 100).unwrap(), 3);
        assert_eq!(out, b"abc");
    }

    #[test]
    fn literal_and_run_reference() {
        // "abcabcabcabc": literals a b c, then a back-reference offset 3 length 9.
        // produced = 3 -> offset_bits 4, length_bits 12: token = ((3-1) << 12) | (9-3).
        let token: u16 = (2 << 12) | 6;
        let mut body = vec![0b0000_1000, b'a', b'b', b'c'];
        body.extend_from_slice(&token.to_le_bytes());
        let header: u16 = 0x8000 | 0x3000 | (body.len() as u16 - 1);
        let mut input = header.to_le_bytes().to_vec();
        input.extend_from_slice(&body);
        let mut out = Vec::new();
        decompress(&input, &mut out, 4096).unwrap();
        assert_eq!(out, b"abcabcabcabc");
        // The limit cuts the output.
        let mut out = Vec::new();
        assert_eq!(decompress(&input, &mut out, 5).unwrap(), 5);
        assert_eq!(out, b"abcab");
    }

    #[test]
    fn hostile_inputs_are_errors_not_panics() {
        // Reference with nothing produced yet.
        let input = [0x02, 0xb0, 0x01, 0x00, 0x00];
        assert!(decompress(&input, &mut Vec::new(), 4096).is_err());
        // Chunk longer than the input.
        let input = [0xff, 0xbf, 0x00];
        assert_eq!(
            decompress(&input, &mut Vec::new(), 4096),
            Err(Lznt1Error::TruncatedChunk(0))
        );
        // Every 3-byte prefix pattern: no panic.
        for a in 0..=255u8 {
            for b in [0x00u8, 0x30, 0x80, 0xb0, 0xbf, 0xff] {
                let input = [a, b, 0xff, 0xff, 0xff, 0x01, 0x02];
                let _ = decompress(&input, &mut Vec::new(), 4096);
            }
        }
    }
}
