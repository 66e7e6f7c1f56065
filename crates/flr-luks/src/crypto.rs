//! Sector ciphers (AES in XTS, CBC and ECB modes with the dm-crypt IV
//! generators), PBKDF2/Argon2 and the anti-forensic merge.
//!
//! Whole runs of sectors are decrypted per call: the blocks of a sector go
//! to the AES backend together (so AES-NI pipelines them), and the scratch
//! space is allocated once per call, never per sector.

use aes::cipher::{Array, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aes::{Aes128, Aes192, Aes256};
use sha2::Digest;
use zeroize::Zeroizing;

type Block = Array<u8, aes::cipher::consts::U16>;

/// AES with any of the three key sizes.
#[derive(Clone)]
pub(crate) enum AesAny {
    A128(Box<Aes128>),
    A192(Box<Aes192>),
    A256(Box<Aes256>),
}

impl AesAny {
    pub(crate) fn new(key: &[u8]) -> Option<AesAny> {
        Some(match key.len() {
            16 => AesAny::A128(Box::new(Aes128::new_from_slice(key).ok()?)),
            24 => AesAny::A192(Box::new(Aes192::new_from_slice(key).ok()?)),
            32 => AesAny::A256(Box::new(Aes256::new_from_slice(key).ok()?)),
            _ => return None,
        })
    }

    fn decrypt_blocks(&self, blocks: &mut [Block]) {
        match self {
            AesAny::A128(c) => c.decrypt_blocks(blocks),
            AesAny::A192(c) => c.decrypt_blocks(blocks),
            AesAny::A256(c) => c.decrypt_blocks(blocks),
        }
    }

    fn encrypt_block(&self, b: &mut Block) {
        match self {
            AesAny::A128(c) => c.encrypt_block(b),
            AesAny::A192(c) => c.encrypt_block(b),
            AesAny::A256(c) => c.encrypt_block(b),
        }
    }
}

/// How the per-sector IV is made from the sector number.
#[derive(Clone)]
pub(crate) enum IvGen {
    /// Low 32 bits, little-endian.
    Plain,
    /// 64 bits, little-endian.
    Plain64,
    /// The 64-bit sector number encrypted with AES keyed by a hash of the key.
    Essiv(AesAny),
    /// No IV (ECB).
    Null,
}

impl IvGen {
    fn iv(&self, sector: u64) -> Block {
        let mut b = Block::default();
        match self {
            IvGen::Plain => b[..4].copy_from_slice(&(sector as u32).to_le_bytes()),
            IvGen::Plain64 | IvGen::Null => b[..8].copy_from_slice(&sector.to_le_bytes()),
            IvGen::Essiv(c) => {
                b[..8].copy_from_slice(&sector.to_le_bytes());
                c.encrypt_block(&mut b);
            }
        }
        b
    }
}

#[derive(Clone)]
enum Mode {
    Xts { data: AesAny, tweak: AesAny },
    Cbc(AesAny),
    Ecb(AesAny),
}

/// A dm-crypt style sector cipher such as `aes-xts-plain64`.
#[derive(Clone)]
pub(crate) struct SectorCipher {
    mode: Mode,
    iv: IvGen,
}

/// Why a cipher specification or key cannot be used.
pub(crate) fn parse_cipher(spec: &str, key: &[u8]) -> Result<SectorCipher, String> {
    let spec_l = spec.to_ascii_lowercase();
    let mut parts = spec_l.splitn(3, '-');
    let name = parts.next().unwrap_or("");
    let chain = parts.next().unwrap_or("");
    let ivspec = parts.next().unwrap_or("");
    if name != "aes" {
        return Err(format!(
            "cipher {spec:?}: only AES is supported (not {name:?})"
        ));
    }
    let bad_key = || format!("cipher {spec:?}: unusable key size {} bits", key.len() * 8);
    let mode = match chain {
        "xts" => {
            if !key.len().is_multiple_of(2) {
                return Err(bad_key());
            }
            let (a, b) = key.split_at(key.len() / 2);
            Mode::Xts {
                data: AesAny::new(a).ok_or_else(bad_key)?,
                tweak: AesAny::new(b).ok_or_else(bad_key)?,
            }
        }
        "cbc" => Mode::Cbc(AesAny::new(key).ok_or_else(bad_key)?),
        "ecb" => Mode::Ecb(AesAny::new(key).ok_or_else(bad_key)?),
        _ => return Err(format!("cipher {spec:?}: mode {chain:?} is not supported")),
    };
    let iv = match (&mode, ivspec) {
        (Mode::Ecb(_), _) => IvGen::Null,
        (_, "plain64") => IvGen::Plain64,
        (_, "plain") => IvGen::Plain,
        (_, "essiv:sha256") => {
            let h = Zeroizing::new(sha2::Sha256::digest(key).to_vec());
            IvGen::Essiv(AesAny::new(&h[..]).ok_or_else(bad_key)?)
        }
        (_, other) => {
            return Err(format!(
                "cipher {spec:?}: IV generator {other:?} is not supported"
            ))
        }
    };
    Ok(SectorCipher { mode, iv })
}

/// Multiplies an XTS tweak by x in GF(2^128).
#[inline(always)]
fn gf_mul(t: u128) -> u128 {
    (t << 1) ^ (((t as i128) >> 127) as u128 & 0x87)
}

/// Carry-less products of a byte with the XTS polynomial's low part 0x87.
const MUL8: [u16; 256] = {
    let mut t = [0u16; 256];
    let mut n = 0;
    while n < 256 {
        let mut r = 0u16;
        let mut bit = 0;
        while bit < 8 {
            if (n >> bit) & 1 == 1 {
                r ^= 0x87 << bit;
            }
            bit += 1;
        }
        t[n] = r;
        n += 1;
    }
    t
};

/// Writes the tweaks t, t·x, t·x², ... into `out` (16 bytes each), as
/// eight independent chains stepping by x⁸ so the CPU can overlap them.
#[inline(always)]
fn fill_tweaks(out: &mut [u8], first: u128) {
    let mut lanes = [0u128; 8];
    let mut t = first;
    for l in lanes.iter_mut() {
        *l = t;
        t = gf_mul(t);
    }
    for group in out.chunks_mut(128) {
        for (l, s) in lanes.iter_mut().zip(group.chunks_exact_mut(16)) {
            s.copy_from_slice(&l.to_le_bytes());
            *l = (*l << 8) ^ u128::from(MUL8[(*l >> 120) as usize]);
        }
    }
}

/// XORs `with` into `data` (same length); written so that it vectorizes.
#[inline(always)]
fn xor_bytes(data: &mut [u8], with: &[u8]) {
    for (d, w) in data.chunks_exact_mut(64).zip(with.chunks_exact(64)) {
        for i in 0..64 {
            d[i] ^= w[i];
        }
    }
}

#[inline(always)]
fn xor_blocks(data: &mut [Block], with: &[Block]) {
    for (d, w) in data.iter_mut().zip(with) {
        let a = u128::from_ne_bytes(d.0) ^ u128::from_ne_bytes(w.0);
        d.0 = a.to_ne_bytes();
    }
}

impl SectorCipher {
    /// Decrypts `buf` (a whole number of `sector_size` sectors) in place; the
    /// first sector has IV number `first_iv`, and each next one `iv_step` more.
    pub(crate) fn decrypt(&self, buf: &mut [u8], sector_size: usize, first_iv: u64, iv_step: u64) {
        let per = sector_size / 16;
        let mut scratch: Vec<Block> = match self.mode {
            Mode::Cbc(_) => vec![Block::default(); per],
            _ => Vec::new(),
        };
        let mut ivn = first_iv;
        let mut tweaks: Vec<u8> = match self.mode {
            Mode::Xts { .. } => vec![0u8; sector_size],
            _ => Vec::new(),
        };
        for sector in buf.chunks_exact_mut(sector_size) {
            match &self.mode {
                Mode::Xts { data, tweak } => {
                    let mut t = self.iv.iv(ivn);
                    tweak.encrypt_block(&mut t);
                    fill_tweaks(&mut tweaks, u128::from_le_bytes(t.0));
                    xor_bytes(sector, &tweaks);
                    let (blocks, _) = Array::slice_as_chunks_mut(sector);
                    data.decrypt_blocks(blocks);
                    xor_bytes(sector, &tweaks);
                }
                Mode::Cbc(c) => {
                    let (blocks, _) = Array::slice_as_chunks_mut(sector);
                    scratch[0] = self.iv.iv(ivn);
                    let n = blocks.len();
                    if n > 1 {
                        scratch[1..n].clone_from_slice(&blocks[..n - 1]);
                    }
                    c.decrypt_blocks(blocks);
                    xor_blocks(blocks, &scratch);
                }
                Mode::Ecb(c) => c.decrypt_blocks(Array::slice_as_chunks_mut(sector).0),
            }
            ivn = ivn.wrapping_add(iv_step);
        }
    }
}

/// Hashes usable by PBKDF2 and the AF diffusion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
    Ripemd160,
}

impl Hash {
    pub(crate) fn parse(s: &str) -> Option<Hash> {
        Some(match s.to_ascii_lowercase().as_str() {
            "sha1" => Hash::Sha1,
            "sha256" => Hash::Sha256,
            "sha384" => Hash::Sha384,
            "sha512" => Hash::Sha512,
            "ripemd160" => Hash::Ripemd160,
            _ => return None,
        })
    }

    fn digest_into(self, parts: &[&[u8]], out: &mut Vec<u8>) {
        fn go<D: Digest>(parts: &[&[u8]], out: &mut Vec<u8>) {
            let mut h = D::new();
            for p in parts {
                h.update(p);
            }
            out.extend_from_slice(&h.finalize());
        }
        match self {
            Hash::Sha1 => go::<sha1::Sha1>(parts, out),
            Hash::Sha256 => go::<sha2::Sha256>(parts, out),
            Hash::Sha384 => go::<sha2::Sha384>(parts, out),
            Hash::Sha512 => go::<sha2::Sha512>(parts, out),
            Hash::Ripemd160 => go::<ripemd::Ripemd160>(parts, out),
        }
    }

    pub(crate) fn pbkdf2(self, pass: &[u8], salt: &[u8], iter: u32, out: &mut [u8]) {
        use pbkdf2::pbkdf2_hmac;
        match self {
            Hash::Sha1 => pbkdf2_hmac::<sha1::Sha1>(pass, salt, iter, out),
            Hash::Sha256 => pbkdf2_hmac::<sha2::Sha256>(pass, salt, iter, out),
            Hash::Sha384 => pbkdf2_hmac::<sha2::Sha384>(pass, salt, iter, out),
            Hash::Sha512 => pbkdf2_hmac::<sha2::Sha512>(pass, salt, iter, out),
            Hash::Ripemd160 => pbkdf2_hmac::<ripemd::Ripemd160>(pass, salt, iter, out),
        }
    }
}

/// The anti-forensic diffusion: hashes `buf` in digest-sized pieces, each
/// prefixed with its big-endian index.
fn diffuse(hash: Hash, buf: &mut [u8]) {
    let mut out = Zeroizing::new(Vec::with_capacity(64));
    hash.digest_into(&[b""], &mut out);
    let ds = out.len();
    for (i, piece) in buf.chunks_mut(ds).enumerate() {
        out.clear();
        let idx = (i as u32).to_be_bytes();
        hash.digest_into(&[&idx, piece], &mut out);
        let n = piece.len();
        piece.copy_from_slice(&out[..n]);
    }
}

/// Merges `stripes` anti-forensic stripes of `key_len` bytes each.
pub(crate) fn af_merge(
    hash: Hash,
    material: &[u8],
    key_len: usize,
    stripes: usize,
) -> Zeroizing<Vec<u8>> {
    let mut d = Zeroizing::new(vec![0u8; key_len]);
    for (i, s) in material.chunks_exact(key_len).take(stripes).enumerate() {
        for (a, b) in d.iter_mut().zip(s) {
            *a ^= *b;
        }
        if i + 1 < stripes {
            diffuse(hash, &mut d);
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use xts_mode::{get_tweak_default, Xts128};

    #[test]
    fn tweak_lanes_match_the_serial_chain() {
        let mut out = vec![0u8; 4096];
        let first = 0x8000_0000_0000_0000_0123_4567_89ab_cdefu128;
        fill_tweaks(&mut out, first);
        let mut t = first;
        for s in out.chunks_exact(16) {
            assert_eq!(s, &t.to_le_bytes());
            t = gf_mul(t);
        }
    }

    #[test]
    fn own_xts_matches_the_xts_mode_crate() {
        for key_len in [32usize, 64] {
            let key: Vec<u8> = (0..key_len as u8).map(|i| i.wrapping_mul(7)).collect();
            let data: Vec<u8> = (0..3 * 4096u32).map(|i| (i * 31 % 251) as u8).collect();
            for ss in [512usize, 4096] {
                let mut ours = data.clone();
                parse_cipher("aes-xts-plain64", &key)
                    .unwrap()
                    .decrypt(&mut ours, ss, 77, 1);
                let mut theirs = data.clone();
                let (a, b) = key.split_at(key_len / 2);
                if key_len == 32 {
                    let x = Xts128::new(
                        Aes128::new_from_slice(a).unwrap(),
                        Aes128::new_from_slice(b).unwrap(),
                    );
                    x.decrypt_area(&mut theirs, ss, 77, get_tweak_default);
                } else {
                    let x = Xts128::new(
                        Aes256::new_from_slice(a).unwrap(),
                        Aes256::new_from_slice(b).unwrap(),
                    );
                    x.decrypt_area(&mut theirs, ss, 77, get_tweak_default);
                }
                assert_eq!(ours, theirs, "key {key_len} sector {ss}");
            }
        }
    }
}
