//! dm-crypt sector ciphers (AES in XTS, CBC and ECB modes with the dm-crypt
//! IV generators) on top of `flr-cipher`, PBKDF2/Argon2 and the
//! anti-forensic merge.

use flr_cipher::{cbc_decrypt_sectors, plain64, Aes, Xts};
use sha2::Digest;
use zeroize::Zeroizing;

/// How the per-sector IV is made from the sector number.
#[derive(Clone, Debug)]
pub(crate) enum IvGen {
    /// Low 32 bits, little-endian.
    Plain,
    /// 64 bits, little-endian.
    Plain64,
    /// The 64-bit sector number encrypted with AES keyed by a hash of the key.
    Essiv(Aes),
}

impl IvGen {
    fn iv(&self, sector: u64) -> [u8; 16] {
        match self {
            IvGen::Plain => plain64(u64::from(sector as u32)),
            IvGen::Plain64 => plain64(sector),
            IvGen::Essiv(c) => {
                let mut b = plain64(sector);
                c.encrypt_block(&mut b);
                b
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Mode {
    Xts(Xts),
    Cbc(Aes),
    Ecb(Aes),
}

/// A dm-crypt style sector cipher such as `aes-xts-plain64`.
#[derive(Clone, Debug)]
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
        "xts" => Mode::Xts(Xts::from_joined(key).ok_or_else(bad_key)?),
        "cbc" => Mode::Cbc(Aes::new(key).ok_or_else(bad_key)?),
        "ecb" => Mode::Ecb(Aes::new(key).ok_or_else(bad_key)?),
        _ => return Err(format!("cipher {spec:?}: mode {chain:?} is not supported")),
    };
    let iv = match (&mode, ivspec) {
        (Mode::Ecb(_), _) => IvGen::Plain64,
        (_, "plain64") => IvGen::Plain64,
        (_, "plain") => IvGen::Plain,
        (_, "essiv:sha256") => {
            let h = Zeroizing::new(sha2::Sha256::digest(key).to_vec());
            IvGen::Essiv(Aes::new(&h[..]).ok_or_else(bad_key)?)
        }
        (_, other) => {
            return Err(format!(
                "cipher {spec:?}: IV generator {other:?} is not supported"
            ))
        }
    };
    Ok(SectorCipher { mode, iv })
}

impl SectorCipher {
    /// Decrypts `buf` (a whole number of `sector_size` sectors) in place; the
    /// first sector has IV number `first_iv`, and each next one `iv_step` more.
    pub(crate) fn decrypt(&self, buf: &mut [u8], sector_size: usize, first_iv: u64, iv_step: u64) {
        let iv = |i: u64| self.iv.iv(first_iv.wrapping_add(i.wrapping_mul(iv_step)));
        match &self.mode {
            Mode::Xts(x) => x.decrypt_sectors(buf, sector_size, iv),
            Mode::Cbc(c) => cbc_decrypt_sectors(c, buf, sector_size, iv),
            Mode::Ecb(c) => c.decrypt_blocks(buf),
        }
    }

    /// As [`SectorCipher::decrypt`], spread over the thread pool when `buf`
    /// is large.
    pub(crate) fn decrypt_parallel(
        &self,
        buf: &mut [u8],
        sector_size: usize,
        first_iv: u64,
        iv_step: u64,
    ) {
        flr_cipher::par_sectors(buf, sector_size, |piece, first| {
            let iv = first_iv.wrapping_add(first.wrapping_mul(iv_step));
            self.decrypt(piece, sector_size, iv, iv_step)
        });
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

    #[test]
    fn plain_iv_wraps_at_32_bits_and_plain64_does_not() {
        assert_eq!(IvGen::Plain.iv(0x1_0000_0005), plain64(5));
        assert_eq!(IvGen::Plain64.iv(0x1_0000_0005), plain64(0x1_0000_0005));
    }

    #[test]
    fn parallel_decryption_matches_one_thread() {
        let key: Vec<u8> = (0..64u8).collect();
        let data: Vec<u8> = (0..(flr_cipher::PARALLEL_MIN * 4 + 3 * 4096) as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        for spec in ["aes-xts-plain64", "aes-cbc-essiv:sha256", "aes-xts-plain"] {
            let k = if spec.contains("xts") {
                &key[..]
            } else {
                &key[..32]
            };
            let c = parse_cipher(spec, k).unwrap();
            for (ss, step) in [(512usize, 1u64), (4096, 8)] {
                let mut one = data.clone();
                c.decrypt(&mut one, ss, 5, step);
                let mut many = data.clone();
                c.decrypt_parallel(&mut many, ss, 5, step);
                assert!(one == many, "{spec} {ss}");
            }
        }
    }
}
