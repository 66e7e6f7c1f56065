//! Sector ciphers shared by flr's encryption layers (`flr-luks`,
//! `flr-bitlocker`): AES in XTS and CBC modes applied to whole sectors, as
//! dm-crypt and BitLocker use them.
//!
//! Decryption speed decides how fast a file comes out of an encrypted disk,
//! so the modes here are written for throughput:
//!
//! - [`Xts`] fuses the whole XTS round trip (tweak doubling, the two XORs
//!   and the AES rounds) into one pass inside the AES backend, a batch of
//!   parallel blocks at a time (8 with AES-NI), so the data never leaves
//!   the registers between the steps and the tweak chain overlaps with the
//!   AES pipeline.
//! - The sector tweaks/IVs of a request are encrypted together in one batch.
//! - [`par_sectors`] spreads large requests over a persistent thread pool
//!   (no thread is started per read).
//!
//! IVs are supplied by the caller as a function of the sector index, so the
//! IV conventions of each format (dm-crypt `plain64`, `essiv`, BitLocker's
//! byte offsets) stay in the format crates.
//!
//! Key schedules are wiped when the ciphers are dropped (`aes/zeroize`).

use aes::cipher::{
    consts::U16, typenum::Unsigned, Array, BlockCipherDecBackend, BlockCipherDecClosure,
    BlockCipherDecrypt, BlockCipherEncrypt, BlockSizeUser, KeyInit, ParBlocksSizeUser,
};
use aes::{Aes128, Aes192, Aes256};

#[cfg(target_arch = "x86_64")]
mod x86;

/// One AES block.
pub type Block = Array<u8, U16>;

/// AES with a 128-, 192- or 256-bit key.
#[derive(Clone)]
pub enum Aes {
    /// AES-128.
    A128(Box<Aes128>),
    /// AES-192.
    A192(Box<Aes192>),
    /// AES-256.
    A256(Box<Aes256>),
}

impl std::fmt::Debug for Aes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Aes({} bits)", self.key_bits())
    }
}

impl Aes {
    /// AES keyed with `key` (16, 24 or 32 bytes); `None` for other sizes.
    pub fn new(key: &[u8]) -> Option<Aes> {
        Some(match key.len() {
            16 => Aes::A128(Box::new(Aes128::new_from_slice(key).ok()?)),
            24 => Aes::A192(Box::new(Aes192::new_from_slice(key).ok()?)),
            32 => Aes::A256(Box::new(Aes256::new_from_slice(key).ok()?)),
            _ => return None,
        })
    }

    /// Key size in bits.
    pub fn key_bits(&self) -> usize {
        match self {
            Aes::A128(_) => 128,
            Aes::A192(_) => 192,
            Aes::A256(_) => 256,
        }
    }

    /// Encrypts one block in place.
    pub fn encrypt_block(&self, block: &mut [u8; 16]) {
        let b: &mut Block = block.into();
        match self {
            Aes::A128(c) => c.encrypt_block(b),
            Aes::A192(c) => c.encrypt_block(b),
            Aes::A256(c) => c.encrypt_block(b),
        }
    }

    /// Encrypts every whole block of `data` in place (ECB); a trailing
    /// partial block is left alone.
    pub fn encrypt_blocks(&self, data: &mut [u8]) {
        let (blocks, _) = Block::slice_as_chunks_mut(data);
        match self {
            Aes::A128(c) => c.encrypt_blocks(blocks),
            Aes::A192(c) => c.encrypt_blocks(blocks),
            Aes::A256(c) => c.encrypt_blocks(blocks),
        }
    }

    /// Decrypts every whole block of `data` in place (ECB); a trailing
    /// partial block is left alone.
    pub fn decrypt_blocks(&self, data: &mut [u8]) {
        let (blocks, _) = Block::slice_as_chunks_mut(data);
        match self {
            Aes::A128(c) => c.decrypt_blocks(blocks),
            Aes::A192(c) => c.decrypt_blocks(blocks),
            Aes::A256(c) => c.decrypt_blocks(blocks),
        }
    }

    fn decrypt_with(&self, f: impl BlockCipherDecClosure<BlockSize = U16>) {
        match self {
            Aes::A128(c) => c.decrypt_with_backend(f),
            Aes::A192(c) => c.decrypt_with_backend(f),
            Aes::A256(c) => c.decrypt_with_backend(f),
        }
    }
}

/// Sectors whose tweaks are encrypted together in one batch.
const TWEAK_BATCH: usize = 64;

/// Bytes of a sector whose tweaks are generated in one go.
const TWEAK_SPAN: usize = 4096;

/// Multiplies an XTS tweak by x in GF(2^128) (little-endian convention of
/// IEEE 1619).
#[inline(always)]
fn mul_x(t: u128) -> u128 {
    (t << 1) ^ (((t as i128) >> 127) as u128 & 0x87)
}

/// `RED4[n]`: the carry-less product of the 4-bit `n` with the XTS
/// reduction constant 0x87 (what bits shifted out of the top fold back to).
const RED4: [u64; 16] = {
    let mut t = [0u64; 16];
    let mut n = 0;
    while n < 16 {
        let mut bit = 0;
        while bit < 4 {
            if (n >> bit) & 1 == 1 {
                t[n] ^= 0x87 << bit;
            }
            bit += 1;
        }
        n += 1;
    }
    t
};

/// Produces the tweak sequence t, t·x, t·x², ... as four interleaved
/// chains each stepping by x⁴, in 64-bit halves (no 128-bit shifts), so
/// the chains run in parallel and stay in registers.
struct Tweaks {
    lanes: [(u64, u64); 4],
}

impl Tweaks {
    #[inline(always)]
    fn new(t: u128) -> Tweaks {
        let mut lanes = [(0, 0); 4];
        let mut t = t;
        for l in lanes.iter_mut() {
            *l = (t as u64, (t >> 64) as u64);
            t = mul_x(t);
        }
        Tweaks { lanes }
    }

    /// Writes the next `out.len() / 16` tweaks (little-endian) into `out`.
    #[inline(always)]
    fn fill(&mut self, out: &mut [u8]) {
        let mut groups = out.chunks_exact_mut(64);
        for g in &mut groups {
            for (l, s) in self.lanes.iter_mut().zip(g.chunks_exact_mut(16)) {
                s[..8].copy_from_slice(&l.0.to_le_bytes());
                s[8..].copy_from_slice(&l.1.to_le_bytes());
                let (lo, hi) = *l;
                *l = (
                    (lo << 4) ^ RED4[(hi >> 60) as usize],
                    (hi << 4) | (lo >> 60),
                );
            }
        }
        // A tail of fewer than four blocks (tiny sectors): take the lanes
        // in order, then rotate them so the sequence continues.
        let rest = groups.into_remainder();
        let used = rest.len() / 16;
        for (l, s) in self.lanes.iter().zip(rest.chunks_exact_mut(16)) {
            s[..8].copy_from_slice(&l.0.to_le_bytes());
            s[8..].copy_from_slice(&l.1.to_le_bytes());
        }
        if used > 0 {
            for _ in 0..used {
                let (lo, hi) = self.lanes[0];
                let t = mul_x(u128::from(lo) | u128::from(hi) << 64);
                let t = mul_x(mul_x(mul_x(t)));
                self.lanes.rotate_left(1);
                self.lanes[3] = (t as u64, (t >> 64) as u64);
            }
        }
    }
}

/// XORs `with` into `data` (same length, a multiple of 16), written so it
/// compiles to whole-vector XORs.
#[inline(always)]
fn xor_into(data: &mut [u8], with: &[u8]) {
    for (d, w) in data.chunks_exact_mut(16).zip(with.chunks_exact(16)) {
        for i in 0..16 {
            d[i] ^= w[i];
        }
    }
}

/// AES-XTS (IEEE 1619) over sectors: a data key and a tweak key.
#[derive(Clone, Debug)]
pub struct Xts {
    data: Aes,
    tweak: Aes,
    /// The AES-NI kernel, when the CPU has AES-NI and the key size is 128
    /// or 256 bits.
    #[cfg(target_arch = "x86_64")]
    ni: Option<x86::XtsNi>,
}

impl Xts {
    /// XTS from the data and the tweak key (same size, 16 or 32 bytes
    /// each; 24 works too, as dm-crypt allows it).
    pub fn new(data_key: &[u8], tweak_key: &[u8]) -> Option<Xts> {
        if data_key.len() != tweak_key.len() {
            return None;
        }
        Some(Xts {
            data: Aes::new(data_key)?,
            tweak: Aes::new(tweak_key)?,
            #[cfg(target_arch = "x86_64")]
            ni: x86::AesNi::detect().and_then(|ni| x86::XtsNi::new(ni, data_key, tweak_key)),
        })
    }

    /// Which implementation decrypts: `"vaes"` (AES-NI with VAES/AVX2, two
    /// blocks per instruction), `"aes-ni"`, or `"portable"` (the `aes`
    /// crate with separate tweak passes).
    pub fn kernel(&self) -> &'static str {
        #[cfg(target_arch = "x86_64")]
        if let Some(ni) = &self.ni {
            return ni.kernel();
        }
        "portable"
    }

    /// Every implementation this CPU can run for `key`, fastest first (for
    /// tests and benchmarks that compare them).
    #[doc(hidden)]
    pub fn all_kernels(key: &[u8]) -> Vec<Xts> {
        let Some(best) = Xts::from_joined(key) else {
            return Vec::new();
        };
        let mut out = vec![best.clone()];
        #[cfg(target_arch = "x86_64")]
        {
            let (a, b) = key.split_at(key.len() / 2);
            if let Some(ni) = x86::AesNi::detect().and_then(x86::AesNi::without_vaes) {
                let mut x = best.clone();
                x.ni = x86::XtsNi::new(ni, a, b);
                if x.ni.is_some() {
                    out.push(x);
                }
            }
            if best.ni.is_some() {
                let mut x = best;
                x.ni = None;
                out.push(x);
            }
        }
        out
    }

    /// XTS from one key holding the data key then the tweak key (the
    /// dm-crypt and LUKS convention: 64 bytes for AES-256-XTS).
    pub fn from_joined(key: &[u8]) -> Option<Xts> {
        if !key.len().is_multiple_of(2) {
            return None;
        }
        let (a, b) = key.split_at(key.len() / 2);
        Xts::new(a, b)
    }

    /// Key size of one half in bits (256 for "AES-256-XTS").
    pub fn key_bits(&self) -> usize {
        self.data.key_bits()
    }

    /// Decrypts `buf`, a whole number of `sector_size`-byte sectors (a
    /// multiple of 16), in place. `iv(i)` is the 16-byte IV of the `i`-th
    /// sector of `buf` before the tweak key encrypts it (for dm-crypt
    /// `plain64`, the little-endian sector number).
    ///
    /// # Panics
    /// If `sector_size` is zero or not a multiple of 16.
    pub fn decrypt_sectors(
        &self,
        buf: &mut [u8],
        sector_size: usize,
        iv: impl Fn(u64) -> [u8; 16],
    ) {
        assert!(
            sector_size > 0 && sector_size.is_multiple_of(16),
            "XTS sector size {sector_size} is not a positive multiple of 16"
        );
        #[cfg(target_arch = "x86_64")]
        if let Some(ni) = &self.ni {
            ni.decrypt_sectors(buf, sector_size, &iv);
            return;
        }
        let mut tweaks = [0u8; 16 * TWEAK_BATCH];
        let mut first = 0u64;
        for run in buf.chunks_mut(sector_size * TWEAK_BATCH) {
            let n = run.len() / sector_size;
            for (i, t) in tweaks.chunks_exact_mut(16).take(n).enumerate() {
                t.copy_from_slice(&iv(first + i as u64));
            }
            self.tweak.encrypt_blocks(&mut tweaks[..16 * n]);
            self.data.decrypt_with(XtsDecrypt {
                buf: &mut run[..n * sector_size],
                sector_size,
                tweaks: &tweaks[..16 * n],
            });
            first += n as u64;
        }
    }
}

/// The XTS decryption of a run of sectors, run inside the AES backend so
/// that the tweak arithmetic, the XORs and the AES rounds are compiled
/// together (with the backend's CPU features) and stay in registers.
struct XtsDecrypt<'a> {
    buf: &'a mut [u8],
    sector_size: usize,
    /// The encrypted tweak of each sector, 16 bytes each.
    tweaks: &'a [u8],
}

impl BlockSizeUser for XtsDecrypt<'_> {
    type BlockSize = U16;
}

impl BlockCipherDecClosure for XtsDecrypt<'_> {
    #[inline(always)]
    fn call<B: BlockCipherDecBackend<BlockSize = U16>>(self, backend: &B) {
        let par = <B as ParBlocksSizeUser>::ParBlocksSize::USIZE * 16;
        // The tweaks of a span are generated ahead of their use (so the
        // XORs read them from cache, not from the store buffer), then each
        // batch of blocks is whitened, decrypted and whitened again.
        let mut scratch = [0u8; TWEAK_SPAN];
        for (sector, t0) in self
            .buf
            .chunks_exact_mut(self.sector_size)
            .zip(self.tweaks.chunks_exact(16))
        {
            let mut t = [0u8; 16];
            t.copy_from_slice(t0);
            let mut gen = Tweaks::new(u128::from_le_bytes(t));
            for span in sector.chunks_mut(TWEAK_SPAN) {
                let tw = &mut scratch[..span.len()];
                gen.fill(tw);
                for (d, w) in span.chunks_mut(par).zip(tw.chunks(par)) {
                    xor_into(d, w);
                    let (blocks, _) = Block::slice_as_chunks_mut(d);
                    match <&mut aes::cipher::ParBlocks<B>>::try_from(&mut *blocks) {
                        Ok(p) => backend.decrypt_par_blocks_inplace(p),
                        Err(_) => backend.decrypt_tail_blocks_inplace(blocks),
                    }
                    xor_into(d, w);
                }
            }
        }
    }
}

/// AES-CBC decryption of whole sectors in place, each sector chained from
/// its own IV `iv(i)` (the final IV: callers apply ESSIV or BitLocker's IV
/// encryption themselves).
///
/// # Panics
/// If `sector_size` is zero or not a multiple of 16.
pub fn cbc_decrypt_sectors(
    aes: &Aes,
    buf: &mut [u8],
    sector_size: usize,
    iv: impl Fn(u64) -> [u8; 16],
) {
    assert!(
        sector_size > 0 && sector_size.is_multiple_of(16),
        "CBC sector size {sector_size} is not a positive multiple of 16"
    );
    let mut prev = vec![0u8; sector_size];
    for (i, s) in buf.chunks_exact_mut(sector_size).enumerate() {
        prev[..16].copy_from_slice(&iv(i as u64));
        prev[16..].copy_from_slice(&s[..sector_size - 16]);
        aes.decrypt_blocks(s);
        for (d, p) in s.chunks_exact_mut(16).zip(prev.chunks_exact(16)) {
            let mut a = [0u8; 16];
            a.copy_from_slice(d);
            let mut b = [0u8; 16];
            b.copy_from_slice(p);
            d.copy_from_slice(&(u128::from_ne_bytes(a) ^ u128::from_ne_bytes(b)).to_ne_bytes());
        }
    }
}

/// Requests at least this large are split over the thread pool.
pub const PARALLEL_MIN: usize = 64 * 1024;

/// Runs `f(piece, first_sector)` over `buf` cut into pieces of whole
/// `sector_size` sectors (`first_sector` is the index of the piece's first
/// sector within `buf`). Requests of [`PARALLEL_MIN`] bytes or more are
/// split over a persistent pool with one thread per core; smaller ones run
/// on the calling thread.
pub fn par_sectors<F>(buf: &mut [u8], sector_size: usize, f: F)
where
    F: Fn(&mut [u8], u64) + Sync,
{
    let threads = rayon::current_num_threads();
    if buf.len() < PARALLEL_MIN || threads < 2 || sector_size == 0 {
        f(buf, 0);
        return;
    }
    let sectors = buf.len() / sector_size;
    // A few pieces per thread so one slow thread does not hold the rest;
    // no piece smaller than 32 KiB.
    let min_sectors = (32 * 1024 / sector_size).max(1);
    let per = sectors.div_ceil(threads * 2).max(min_sectors);
    split(buf, sector_size, per, 0, &f);
}

fn split<F>(buf: &mut [u8], ss: usize, per: usize, first: u64, f: &F)
where
    F: Fn(&mut [u8], u64) + Sync,
{
    let sectors = buf.len() / ss;
    if sectors <= per {
        f(buf, first);
        return;
    }
    let half = sectors / 2;
    let (a, b) = buf.split_at_mut(half * ss);
    rayon::join(
        || split(a, ss, per, first, f),
        || split(b, ss, per, first + half as u64, f),
    );
}

/// The dm-crypt `plain64` IV: the sector number, little-endian.
#[inline]
pub fn plain64(sector: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&sector.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::KeyInit;
    use xts_mode::Xts128;

    fn noise(n: usize, mut seed: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    }

    fn reference(key: &[u8], data: &mut [u8], ss: usize, first: u128) {
        let (a, b) = key.split_at(key.len() / 2);
        match a.len() {
            16 => Xts128::new(
                Aes128::new_from_slice(a).unwrap(),
                Aes128::new_from_slice(b).unwrap(),
            )
            .decrypt_area(data, ss, first, xts_mode::get_tweak_default),
            32 => Xts128::new(
                Aes256::new_from_slice(a).unwrap(),
                Aes256::new_from_slice(b).unwrap(),
            )
            .decrypt_area(data, ss, first, xts_mode::get_tweak_default),
            _ => unreachable!(),
        }
    }

    #[test]
    fn fused_xts_matches_the_xts_mode_crate() {
        for klen in [32usize, 64] {
            let key = noise(klen, 0x1234_5678 + klen as u64);
            // 3 sectors, and more than one tweak batch of small sectors;
            // 48-byte sectors leave a tail shorter than a parallel batch.
            let kernels = Xts::all_kernels(&key);
            let names: Vec<_> = kernels.iter().map(|x| x.kernel()).collect();
            eprintln!("XTS kernels on this CPU: {names:?}");
            assert!(names.contains(&"portable"));
            for xts in &kernels {
                for (ss, n) in [
                    (512usize, 3usize),
                    (4096, 3),
                    (512, 150),
                    (48, 7),
                    (144, 3),
                    (16, 9),
                ] {
                    let ct = noise(ss * n, 99 + ss as u64);
                    let mut ours = ct.clone();
                    xts.decrypt_sectors(&mut ours, ss, |i| plain64(77 + i));
                    let mut theirs = ct.clone();
                    reference(&key, &mut theirs, ss, 77);
                    assert!(ours == theirs, "{} key {klen} sector {ss}", xts.kernel());
                }
            }
        }
    }

    #[test]
    fn tweak_doubling_carries_into_the_low_byte() {
        assert_eq!(mul_x(1 << 127), 0x87);
        assert_eq!(mul_x(3), 6);
        assert_eq!(mul_x((1 << 127) | 1), 0x85);
    }

    #[test]
    fn cbc_chains_within_each_sector_from_its_iv() {
        let key = noise(32, 5);
        let aes = Aes::new(&key).unwrap();
        let ss = 64;
        let pt = noise(ss * 4, 6);
        // Encrypt by the textbook definition, block by block.
        let mut ct = pt.clone();
        for (i, s) in ct.chunks_exact_mut(ss).enumerate() {
            let mut prev = plain64(i as u64 + 10);
            for b in s.chunks_exact_mut(16) {
                let mut x = [0u8; 16];
                for j in 0..16 {
                    x[j] = b[j] ^ prev[j];
                }
                aes.encrypt_block(&mut x);
                b.copy_from_slice(&x);
                prev = x;
            }
        }
        cbc_decrypt_sectors(&aes, &mut ct, ss, |i| plain64(i + 10));
        assert!(ct == pt);
    }

    #[test]
    fn parallel_pieces_cover_the_buffer_with_the_right_sector_numbers() {
        let key = noise(64, 7);
        let xts = Xts::from_joined(&key).unwrap();
        for ss in [512usize, 4096] {
            let ct = noise(PARALLEL_MIN * 5 + 3 * ss, 8);
            let mut one = ct.clone();
            xts.decrypt_sectors(&mut one, ss, |i| plain64(i + 1000));
            let mut many = ct.clone();
            par_sectors(&mut many, ss, |piece, first| {
                xts.decrypt_sectors(piece, ss, |i| plain64(first + i + 1000))
            });
            assert!(one == many, "sector size {ss}");
        }
    }

    #[test]
    fn key_sizes_are_checked() {
        assert!(Aes::new(&[0; 15]).is_none());
        assert!(Xts::from_joined(&[0; 33]).is_none());
        assert!(Xts::new(&[0; 16], &[0; 32]).is_none());
        assert_eq!(Xts::from_joined(&[0; 64]).unwrap().key_bits(), 256);
    }
}
