//! The input encoding of the image targets: a sparse image.
//!
//! Disk images are megabytes of mostly zeros; fuzzing them byte for byte
//! would spend every mutation on sectors no parser looks at. An image
//! target's input is instead
//!
//! ```text
//! u64 LE   virtual length of the image (clamped to 2^50)
//! then, repeated to the end of the input:
//! u64 LE   offset of a chunk      u32 LE   its length      bytes
//! ```
//!
//! and everything outside the chunks reads as zeros. A chunk that overlaps
//! the previous one or lies past the virtual length is cut to fit; a short
//! last chunk keeps the bytes that are there. The encoding can declare a
//! 16 TiB disk in 8 bytes, which is the point: parsers must not allocate
//! by what a header claims.

use flr_io::{IoError, ReadAt};

/// Largest virtual length an input may declare (1 PiB).
pub const MAX_LEN: u64 = 1 << 50;

/// A sparse in-memory image, read through [`ReadAt`].
#[derive(Debug, Clone, Default)]
pub struct SparseImage {
    len: u64,
    /// (offset, bytes), sorted, not overlapping, inside `len`.
    chunks: Vec<(u64, Vec<u8>)>,
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

impl SparseImage {
    /// An all-zero image of `len` bytes.
    pub fn zeros(len: u64) -> Self {
        SparseImage {
            len: len.min(MAX_LEN),
            chunks: Vec::new(),
        }
    }

    /// Decodes an input (never fails: whatever is there is used).
    pub fn decode(data: &[u8]) -> Self {
        if data.len() < 8 {
            return SparseImage::zeros(0);
        }
        let mut img = SparseImage::zeros(le64(data));
        let mut rest = &data[8..];
        while rest.len() >= 12 {
            let off = le64(rest);
            let n = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]) as usize;
            rest = &rest[12..];
            let n = n.min(rest.len());
            img.put(off, &rest[..n]);
            rest = &rest[n..];
        }
        img
    }

    /// Encodes `image` (a whole raw image), keeping only the 512-byte
    /// blocks that are not all zeros, adjacent ones merged.
    pub fn encode_raw(image: &[u8]) -> Vec<u8> {
        let mut out = (image.len() as u64).to_le_bytes().to_vec();
        let mut run: Option<usize> = None;
        let blocks = image.len().div_ceil(512);
        for b in 0..=blocks {
            let at = b * 512;
            let nonzero = b < blocks
                && image[at..(at + 512).min(image.len())]
                    .iter()
                    .any(|&x| x != 0);
            match (nonzero, run) {
                (true, None) => run = Some(at),
                (false, Some(start)) => {
                    let end = at.min(image.len());
                    out.extend_from_slice(&(start as u64).to_le_bytes());
                    out.extend_from_slice(&((end - start) as u32).to_le_bytes());
                    out.extend_from_slice(&image[start..end]);
                    run = None;
                }
                _ => {}
            }
        }
        out
    }

    /// Encodes this image back into an input.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.len.to_le_bytes().to_vec();
        for (off, bytes) in &self.chunks {
            out.extend_from_slice(&off.to_le_bytes());
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        out
    }

    /// Writes `bytes` at `off` (the harness's own copy, for checksum
    /// fix-ups and for building inputs), cut to the virtual length.
    pub fn put(&mut self, off: u64, bytes: &[u8]) {
        if off >= self.len || bytes.is_empty() {
            return;
        }
        let n = bytes
            .len()
            .min((self.len - off).min(usize::MAX as u64) as usize);
        let bytes = &bytes[..n];
        let end = off + n as u64;
        // Merge with every chunk it touches.
        let mut start = off;
        let mut stop = end;
        let first = self
            .chunks
            .partition_point(|(o, b)| o + b.len() as u64 <= off);
        let mut last = first;
        while last < self.chunks.len() && self.chunks[last].0 < end {
            start = start.min(self.chunks[last].0);
            stop = stop.max(self.chunks[last].0 + self.chunks[last].1.len() as u64);
            last += 1;
        }
        if first == last {
            self.chunks.insert(first, (off, bytes.to_vec()));
            return;
        }
        let mut merged = vec![0u8; (stop - start) as usize];
        for (o, b) in &self.chunks[first..last] {
            let at = (o - start) as usize;
            merged[at..at + b.len()].copy_from_slice(b);
        }
        let at = (off - start) as usize;
        merged[at..at + n].copy_from_slice(bytes);
        self.chunks.splice(first..last, [(start, merged)]);
    }

    /// Reads `len` bytes at `off` (zeros where nothing was written; cut at
    /// the virtual length).
    pub fn get(&self, off: u64, len: usize) -> Vec<u8> {
        let len = len.min(self.len.saturating_sub(off).min(usize::MAX as u64) as usize);
        let mut buf = vec![0u8; len];
        self.fill(off, &mut buf);
        buf
    }

    fn fill(&self, off: u64, buf: &mut [u8]) {
        let end = off + buf.len() as u64;
        let first = self
            .chunks
            .partition_point(|(o, b)| o + b.len() as u64 <= off);
        for (o, b) in &self.chunks[first..] {
            if *o >= end {
                break;
            }
            let s = off.max(*o);
            let e = end.min(o + b.len() as u64);
            buf[(s - off) as usize..(e - off) as usize]
                .copy_from_slice(&b[(s - o) as usize..(e - o) as usize]);
        }
    }

    /// The chunks, for mutation in place (a chunk may shrink, never grow).
    pub(crate) fn chunks_mut(&mut self) -> &mut [(u64, Vec<u8>)] {
        &mut self.chunks
    }

    /// Changes the declared length (clamped to [`MAX_LEN`]); chunks past it
    /// are dropped when the input is decoded again.
    pub(crate) fn set_len(&mut self, len: u64) {
        self.len = len.min(MAX_LEN);
    }
}

impl ReadAt for SparseImage {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        flr_io::check_range("fuzz-image", offset, buf.len(), self.len)?;
        buf.fill(0);
        self.fill(offset, buf);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn layer(&self) -> &str {
        "fuzz-image"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_zeros() {
        let mut raw = vec![0u8; 8192];
        raw[0] = 1;
        raw[513] = 2;
        raw[4000] = 3;
        let enc = SparseImage::encode_raw(&raw);
        assert!(enc.len() < 2000, "{}", enc.len());
        let img = SparseImage::decode(&enc);
        assert_eq!(img.len(), 8192);
        let mut back = vec![0xAAu8; 8192];
        img.read_exact_at(0, &mut back).unwrap();
        assert_eq!(back, raw);
        assert!(img.read_exact_at(8000, &mut [0u8; 500]).is_err());
        assert_eq!(SparseImage::decode(&img.encode()).get(0, 8192), raw);
    }

    #[test]
    fn overlapping_puts_merge() {
        let mut img = SparseImage::zeros(100);
        img.put(10, &[1; 10]);
        img.put(30, &[2; 10]);
        img.put(15, &[3; 20]);
        img.put(95, &[4; 10]);
        let got = img.get(0, 100);
        assert_eq!(&got[10..15], &[1; 5]);
        assert_eq!(&got[15..35], &[3; 20]);
        assert_eq!(&got[35..40], &[2; 5]);
        assert_eq!(&got[95..100], &[4; 5]);
        assert_eq!(img.chunks.len(), 2);
        // Huge declared sizes cost nothing.
        let big = SparseImage::decode(&(16u64 << 40).to_le_bytes());
        assert_eq!(big.len(), 16 << 40);
        assert_eq!(big.get((16 << 40) - 4, 100), vec![0; 4]);
    }
}
