//! A small deterministic mutator for the stable-toolchain runner: no
//! coverage feedback (that is libFuzzer's job in `fuzz/`), but the
//! mutations that find parser bugs in practice: bit flips, boundary
//! integers written over length, count and offset fields, copied runs,
//! random runs and truncation. Image inputs are mutated inside their
//! stored chunks (where the structures are), never as raw encoding bytes.

use flr_io::ReadAt;

use crate::sparse::SparseImage;

/// xorshift64*: a seeded, reproducible generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (0 is replaced).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

const INTERESTING: [u64; 14] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0xffff_ffff,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

/// Mutates `buf` in place with 1 to 4 operations.
pub fn mutate_bytes(buf: &mut Vec<u8>, rng: &mut Rng) {
    for _ in 0..1 + rng.below(4) {
        one(buf, rng);
    }
}

fn one(buf: &mut Vec<u8>, rng: &mut Rng) {
    if buf.is_empty() {
        buf.push(rng.next_u64() as u8);
        return;
    }
    let len = buf.len() as u64;
    let at = rng.below(len) as usize;
    match rng.below(8) {
        0 => buf[at] ^= 1 << rng.below(8),
        1 => buf[at] = INTERESTING[rng.below(6) as usize] as u8,
        2 | 3 => {
            let width = [2usize, 4, 8][rng.below(3) as usize];
            let mut v = INTERESTING[rng.below(INTERESTING.len() as u64) as usize];
            if rng.below(4) == 0 {
                v = v.wrapping_add(rng.below(16)).wrapping_sub(8);
            }
            let bytes = if rng.below(2) == 0 {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            };
            let bytes = if rng.below(2) == 0 {
                &bytes[..width]
            } else {
                &bytes[8 - width..]
            };
            let at = at.min(buf.len().saturating_sub(width));
            let n = width.min(buf.len() - at);
            buf[at..at + n].copy_from_slice(&bytes[..n]);
        }
        4 => {
            let src = rng.below(len) as usize;
            let n = (rng.below(64) as usize + 1)
                .min(buf.len() - src)
                .min(buf.len() - at);
            buf.copy_within(src..src + n, at);
        }
        5 => {
            let n = (rng.below(16) as usize + 1).min(buf.len() - at);
            for b in &mut buf[at..at + n] {
                *b = rng.next_u64() as u8;
            }
        }
        6 => buf.truncate(at.max(1)),
        _ => buf[at] = buf[at].wrapping_add(rng.below(7) as u8).wrapping_sub(3),
    }
}

/// Mutates an image input: mostly the stored chunk bytes, sometimes the
/// declared length.
pub fn mutate_image(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut img = SparseImage::decode(input);
    let chunks = img.chunks_mut();
    if chunks.is_empty() || rng.below(16) == 0 {
        let len = img.len();
        img.set_len(match rng.below(3) {
            0 => len / 2,
            1 => len.saturating_add(rng.below(1 << 20)),
            _ => INTERESTING[rng.below(INTERESTING.len() as u64) as usize],
        });
    } else {
        let k = rng.below(chunks.len() as u64) as usize;
        let bytes = &mut chunks[k].1;
        // Structures sit at the start of chunks more often than not.
        if bytes.len() > 8192 && rng.below(2) == 0 {
            let mut head = bytes[..8192].to_vec();
            mutate_bytes(&mut head, rng);
            if head.len() == 8192 {
                bytes[..8192].copy_from_slice(&head);
            }
        } else {
            mutate_bytes(bytes, rng);
        }
    }
    img.encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_changing() {
        let seed = SparseImage::encode_raw(&[7u8; 4096]);
        let a = mutate_image(&seed, &mut Rng::new(5));
        let b = mutate_image(&seed, &mut Rng::new(5));
        assert_eq!(a, b);
        let changed = (1..50)
            .filter(|s| mutate_image(&seed, &mut Rng::new(*s)) != seed)
            .count();
        assert!(changed > 40, "{changed}");
    }
}
