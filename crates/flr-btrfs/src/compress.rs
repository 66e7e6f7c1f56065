//! Decompression of one extent (zlib, LZO, zstd), into a buffer of the
//! extent's `ram_bytes`.
//!
//! * zlib: one zlib stream (RFC 1950 header, deflate, adler32). As the
//!   kernel does, flr skips the 2-byte header and inflates the raw deflate
//!   data, so a bad adler32 trailer is not fatal (the data checksum, where
//!   present, has checked the compressed bytes already).
//! * LZO: Btrfs's own framing of LZO1X: a little-endian u32 total length
//!   (header included), then segments, each a little-endian u32 length and
//!   that many bytes of LZO1X that decompress to at most one sector; a
//!   segment header never straddles a sector boundary (the writer pads to
//!   the next sector when fewer than 4 bytes are left in it).
//! * zstd: one zstd frame (RFC 8878), followed by zero padding up to the
//!   sector; the window a frame may ask for is capped at 1 MiB (the kernel
//!   writes 128 KiB windows), so a hostile header cannot make the decoder
//!   allocate what it claims.
//!
//! Output shorter than `ram_bytes` is zero-filled, as the kernel does.

use crate::bytes::le32;

pub(crate) const ZLIB: u8 = 1;
pub(crate) const LZO: u8 = 2;
pub(crate) const ZSTD: u8 = 3;

/// The largest uncompressed extent the kernel writes (and flr accepts).
pub(crate) const MAX_RAM: u64 = 128 << 10;
/// The largest zstd window flr decodes (8× what the kernel writes).
const MAX_ZSTD_WINDOW: u64 = 1 << 20;

/// Reusable decoder state, one per open file.
#[derive(Default)]
pub(crate) struct Decoders {
    zstd: Option<zstd::bulk::Decompressor<'static>>,
}

pub(crate) fn name(c: u8) -> &'static str {
    match c {
        ZLIB => "zlib",
        LZO => "lzo",
        ZSTD => "zstd",
        _ => "unknown",
    }
}

impl Decoders {
    /// Decompresses `src` (`compression` type) into all of `out`.
    pub(crate) fn decompress(
        &mut self,
        compression: u8,
        src: &[u8],
        out: &mut [u8],
        sectorsize: usize,
    ) -> Result<(), String> {
        let n = match compression {
            ZLIB => zlib(src, out)?,
            LZO => lzo_framed(src, out, sectorsize)?,
            ZSTD => self.zstd(src, out)?,
            c => return Err(format!("compression type {c}")),
        };
        out[n..].fill(0);
        Ok(())
    }

    fn zstd(&mut self, src: &[u8], out: &mut [u8]) -> Result<usize, String> {
        let window = zstd_window(src).ok_or("zstd frame header is not valid")?;
        if window > MAX_ZSTD_WINDOW {
            return Err(format!("zstd frame asks for a {window}-byte window"));
        }
        // The extent is one frame, then zeros up to the sector.
        let frame = zstd::zstd_safe::find_frame_compressed_size(src)
            .map_err(|c| format!("zstd: {}", zstd::zstd_safe::get_error_name(c)))?;
        let frame = src
            .get(..frame)
            .ok_or("zstd frame longer than the extent")?;
        let dec = match &mut self.zstd {
            Some(d) => d,
            None => {
                let mut d = zstd::bulk::Decompressor::new().map_err(|e| format!("zstd: {e}"))?;
                d.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(20))
                    .map_err(|e| format!("zstd: {e}"))?;
                self.zstd.insert(d)
            }
        };
        dec.decompress_to_buffer(frame, out)
            .map_err(|e| format!("zstd: {e}"))
    }
}

/// The window size a zstd frame header asks for (frame content size for a
/// single-segment frame).
fn zstd_window(b: &[u8]) -> Option<u64> {
    if le32(b, 0) != 0xFD2F_B528 {
        return None;
    }
    let fhd = *b.get(4)?;
    let single = fhd & 0x20 != 0;
    if !single {
        let wd = *b.get(5)?;
        let exp = u32::from(wd >> 3);
        let base = 1u64 << (10 + exp);
        return Some(base + (base / 8) * u64::from(wd & 7));
    }
    let dict_len = [0usize, 1, 2, 4][usize::from(fhd & 3)];
    let fcs_at = 5 + dict_len;
    Some(match fhd >> 6 {
        0 => u64::from(*b.get(fcs_at)?),
        1 => u64::from(u16::from_le_bytes([*b.get(fcs_at)?, *b.get(fcs_at + 1)?])) + 256,
        2 => u64::from(le32(b, fcs_at)),
        _ => crate::bytes::le64(b, fcs_at),
    })
}

fn zlib(src: &[u8], out: &mut [u8]) -> Result<usize, String> {
    let [cmf, flg, ..] = src else {
        return Err("zlib stream shorter than its header".into());
    };
    let header_ok = cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0;
    if !header_ok || flg & 0x20 != 0 {
        return Err("not a zlib stream (bad header or a preset dictionary)".into());
    }
    let mut d = flate2::Decompress::new(false);
    loop {
        // OK: total_in/out never exceed the slices' lengths.
        let (i, o) = (d.total_in() as usize, d.total_out() as usize);
        let st = d
            .decompress(
                &src[2 + i..],
                &mut out[o..],
                flate2::FlushDecompress::Finish,
            )
            .map_err(|e| format!("zlib: {e}"))?;
        let o2 = d.total_out() as usize;
        match st {
            flate2::Status::StreamEnd => return Ok(o2),
            _ if o2 == out.len() => return Ok(o2),
            _ if d.total_in() as usize + 2 >= src.len()
                || (o2 == o && d.total_in() as usize == i) =>
            {
                return Err("zlib stream is truncated".into())
            }
            _ => {}
        }
    }
}

/// The most bytes LZO1X may take for one sector of input.
fn lzo_worst(sectorsize: usize) -> usize {
    sectorsize + sectorsize / 16 + 64 + 3
}

fn lzo_framed(src: &[u8], out: &mut [u8], sectorsize: usize) -> Result<usize, String> {
    let total = usize::try_from(le32(src, 0)).unwrap_or(usize::MAX);
    if total < 4 || total > src.len() {
        return Err(format!(
            "lzo: total length {total} in a {}-byte extent",
            src.len()
        ));
    }
    let mut pos = 4usize;
    let mut written = 0usize;
    while pos < total && written < out.len() {
        let left_in_sector = sectorsize - pos % sectorsize;
        if left_in_sector < 4 {
            pos += left_in_sector;
            if pos >= total {
                break;
            }
        }
        let seg = usize::try_from(le32(src, pos)).unwrap_or(usize::MAX);
        pos += 4;
        if seg == 0 || seg > lzo_worst(sectorsize) || pos + seg > total {
            return Err(format!("lzo: segment of {seg} bytes at byte {}", pos - 4));
        }
        let end = (written + sectorsize).min(out.len());
        let n = lzo::decompress_into(&src[pos..pos + seg], &mut out[written..end])
            .map_err(|e| format!("lzo: segment at byte {}: {e:?}", pos - 4))?;
        written += n;
        pos += seg;
        if n < sectorsize && written < out.len() && pos < total {
            return Err(format!(
                "lzo: a segment before the last gave {n} bytes, not a sector"
            ));
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zstd_window_sizes() {
        // Frame header: magic, FHD 0 (window descriptor follows), WD 0x38:
        // exponent 7 -> 128 KiB.
        let h = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38];
        assert_eq!(zstd_window(&h), Some(128 << 10));
        assert_eq!(zstd_window(&[0u8; 6]), None);
    }

    #[test]
    fn zlib_round_trip_and_garbage() {
        use std::io::Write;
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 7) as u8).collect();
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&data).unwrap();
        let mut z = e.finish().unwrap();
        z.resize(z.len() + 100, 0);
        let mut out = vec![0xffu8; 80_000];
        Decoders::default()
            .decompress(ZLIB, &z, &mut out, 4096)
            .unwrap();
        assert_eq!(&out[..70_000], &data[..]);
        assert!(out[70_000..].iter().all(|&b| b == 0));
        assert!(Decoders::default()
            .decompress(ZLIB, &z[..40], &mut out, 4096)
            .is_err());
        assert!(Decoders::default()
            .decompress(LZO, &[0xff; 64], &mut out, 4096)
            .is_err());
        assert!(Decoders::default()
            .decompress(ZSTD, &[0x28, 0xb5, 0x2f, 0xfd, 0, 0xff], &mut out, 4096)
            .is_err());
    }
}
