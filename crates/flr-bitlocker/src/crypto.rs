//! Cryptographic building blocks: AES-CCM key unwrapping, the BitLocker
//! SHA-256 key stretch, and the sector ciphers (AES-CBC, AES-CBC with the
//! Elephant diffuser, AES-XTS) with BitLocker's IV conventions on top of
//! `flr-cipher`.

use flr_cipher::{cbc_decrypt_sectors, Aes, Xts};
use sha2::{Digest, Sha256};

/// AES-CCM decryption as BitLocker uses it: 12-byte nonce, 16-byte MAC
/// stored before the ciphertext, no associated data. Returns the plaintext
/// or `None` when the MAC does not match (wrong key).
pub(crate) fn ccm_decrypt(
    key: &[u8],
    nonce: &[u8; 12],
    mac: &[u8; 16],
    ct: &[u8],
) -> Option<Vec<u8>> {
    let aes = Aes::new(key)?;
    if ct.len() >= 1 << 24 {
        return None;
    }
    let counter = |i: u32| {
        let mut a = [0u8; 16];
        a[0] = 2; // L - 1 with L = 3
        a[1..13].copy_from_slice(nonce);
        a[13..16].copy_from_slice(&i.to_be_bytes()[1..4]);
        aes.encrypt_block(&mut a);
        a
    };
    let mut pt = ct.to_vec();
    for (i, chunk) in pt.chunks_mut(16).enumerate() {
        let ks = counter(u32::try_from(i + 1).ok()?);
        for (p, k) in chunk.iter_mut().zip(ks.iter()) {
            *p ^= k;
        }
    }
    // CBC-MAC over B0 and the plaintext.
    let mut x = [0u8; 16];
    x[0] = (((16 - 2) / 2) << 3) | 2;
    x[1..13].copy_from_slice(nonce);
    let len = u32::try_from(pt.len()).ok()?;
    x[13..16].copy_from_slice(&len.to_be_bytes()[1..4]);
    aes.encrypt_block(&mut x);
    for chunk in pt.chunks(16) {
        for (a, b) in x.iter_mut().zip(chunk.iter()) {
            *a ^= b;
        }
        aes.encrypt_block(&mut x);
    }
    let s0 = counter(0);
    let mut diff = 0u8;
    for i in 0..16 {
        diff |= x[i] ^ s0[i] ^ mac[i];
    }
    if diff != 0 {
        return None;
    }
    Some(pt)
}

/// The BitLocker key stretch: 0x100000 rounds of SHA-256 over
/// (last hash, initial hash, salt, counter).
pub(crate) fn stretch(initial: &[u8; 32], salt: &[u8; 16]) -> [u8; 32] {
    stretch_rounds(initial, salt, 0x10_0000)
}

fn stretch_rounds(initial: &[u8; 32], salt: &[u8; 16], rounds: u64) -> [u8; 32] {
    use sha2::digest::generic_array::GenericArray;
    // The 88-byte message padded to two SHA-256 blocks; only the last hash
    // (block 0, bytes 0..32) and the counter (block 1, bytes 16..24) change.
    let mut blocks = [GenericArray::default(), GenericArray::default()];
    blocks[0][32..64].copy_from_slice(initial);
    blocks[1][..16].copy_from_slice(salt);
    blocks[1][24] = 0x80;
    blocks[1][56..64].copy_from_slice(&(88u64 * 8).to_be_bytes());
    for count in 0..rounds {
        blocks[1][16..24].copy_from_slice(&count.to_le_bytes());
        let mut h = SHA256_IV;
        sha2::compress256(&mut h, &blocks);
        for (i, w) in h.iter().enumerate() {
            blocks[0][i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&blocks[0][..32]);
    out
}

const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// A sector cipher keyed with the FVEK.
pub(crate) enum SectorCipher {
    Cbc(Aes),
    Elephant { fvek: Aes, tweak: Aes },
    Xts(Xts),
}

impl SectorCipher {
    /// Decrypts whole sectors in place. `offset` is the byte offset used for
    /// the IV (CBC) / the sector number (XTS: offset / `iv_unit`).
    pub(crate) fn decrypt(&self, data: &mut [u8], offset: u64, sector: usize, iv_unit: u64) {
        let off = |i: u64| offset.wrapping_add(i.wrapping_mul(sector as u64));
        match self {
            SectorCipher::Xts(x) => {
                x.decrypt_sectors(data, sector, |i| offset_block(off(i) / iv_unit))
            }
            SectorCipher::Cbc(aes) => {
                cbc_decrypt_sectors(aes, data, sector, |i| cbc_iv(aes, off(i)))
            }
            SectorCipher::Elephant { fvek, tweak } => {
                cbc_decrypt_sectors(fvek, data, sector, |i| cbc_iv(fvek, off(i)));
                let mut words = vec![0u32; sector / 4];
                for (i, s) in data.chunks_exact_mut(sector).enumerate() {
                    for (w, c) in words.iter_mut().zip(s.chunks_exact(4)) {
                        *w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    }
                    diffuser_b_decrypt(&mut words);
                    diffuser_a_decrypt(&mut words);
                    for (w, c) in words.iter().zip(s.chunks_exact_mut(4)) {
                        c.copy_from_slice(&w.to_le_bytes());
                    }
                    let key = sector_key(tweak, off(i as u64));
                    for c in s.chunks_exact_mut(32) {
                        for (b, k) in c.iter_mut().zip(key.iter()) {
                            *b ^= k;
                        }
                    }
                }
            }
        }
    }
}

/// A little-endian 64-bit value in a 16-byte block.
fn offset_block(off: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&off.to_le_bytes());
    b
}

/// BitLocker's CBC IV: the sector's byte offset encrypted with the FVEK.
fn cbc_iv(aes: &Aes, off: u64) -> [u8; 16] {
    let mut iv = offset_block(off);
    aes.encrypt_block(&mut iv);
    iv
}

fn sector_key(tweak: &Aes, off: u64) -> [u8; 32] {
    let mut a = offset_block(off);
    let mut b = a;
    b[15] = 0x80;
    tweak.encrypt_block(&mut a);
    tweak.encrypt_block(&mut b);
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(&a);
    k[16..].copy_from_slice(&b);
    k
}

/// Elephant diffuser A, decryption direction: five passes of
/// d[i] += d[i-2] ^ (d[i-5] <<< R[i mod 4]), indices modulo the sector's
/// word count. Each word depends on words just updated, so the last five
/// are kept in registers instead of being reloaded from memory; the first
/// five words, which wrap around, are done apart.
fn diffuser_a_decrypt(d: &mut [u32]) {
    const R: [u32; 4] = [9, 0, 13, 0];
    let n = d.len();
    if n < 8 {
        return;
    }
    for _ in 0..5 {
        for i in 0..5 {
            let b = d[(i + n - 5) % n].rotate_left(R[i % 4]);
            d[i] = d[i].wrapping_add(d[(i + n - 2) % n] ^ b);
        }
        // w[k] holds d[i-1-k].
        let mut w = [d[4], d[3], d[2], d[1], d[0]];
        for (i, x) in d.iter_mut().enumerate().skip(5) {
            let v = x.wrapping_add(w[1] ^ w[4].rotate_left(R[i & 3]));
            *x = v;
            w = [v, w[0], w[1], w[2], w[3]];
        }
    }
}

/// Elephant diffuser B, decryption direction: three passes of
/// d[i] += d[i+2] ^ (d[i+5] <<< R[i mod 4]), indices modulo the word count.
fn diffuser_b_decrypt(d: &mut [u32]) {
    const R: [u32; 4] = [0, 10, 0, 25];
    let n = d.len();
    if n < 8 {
        return;
    }
    for _ in 0..3 {
        for i in 0..n - 5 {
            let b = d[i + 5].rotate_left(R[i & 3]);
            d[i] = d[i].wrapping_add(d[i + 2] ^ b);
        }
        for i in n - 5..n {
            let b = d[(i + 5) % n].rotate_left(R[i % 4]);
            d[i] = d[i].wrapping_add(d[(i + 2) % n] ^ b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stretch_matches_the_plain_definition() {
        // The definition, a few rounds at a time, against the fast version's
        // structure: check one round by hand.
        let initial = [3u8; 32];
        let salt = [5u8; 16];
        let mut state = [0u8; 88];
        state[32..64].copy_from_slice(&initial);
        state[64..80].copy_from_slice(&salt);
        for count in 0u64..1000 {
            state[80..88].copy_from_slice(&count.to_le_bytes());
            let h = Sha256::digest(state);
            state[..32].copy_from_slice(&h);
        }
        assert_eq!(&state[..32], &stretch_rounds(&initial, &salt, 1000));
    }

    /// The diffusers written as the plain definition (every index modulo
    /// n), against the split loops above.
    #[test]
    fn split_diffusers_match_the_definition() {
        fn plain(d: &mut [u32], passes: usize, r: [u32; 4], back: bool) {
            let n = d.len();
            for _ in 0..passes {
                for i in 0..n {
                    let (a, b) = if back {
                        (d[(i + n - 2) % n], d[(i + n - 5) % n])
                    } else {
                        (d[(i + 2) % n], d[(i + 5) % n])
                    };
                    d[i] = d[i].wrapping_add(a ^ b.rotate_left(r[i % 4]));
                }
            }
        }
        for n in [8usize, 128, 1024] {
            let words: Vec<u32> = (0..n as u32).map(|i| i.wrapping_mul(0x9e37_79b9)).collect();
            let (mut x, mut y) = (words.clone(), words.clone());
            diffuser_a_decrypt(&mut x);
            plain(&mut y, 5, [9, 0, 13, 0], true);
            assert_eq!(x, y, "A, {n} words");
            let (mut x, mut y) = (words.clone(), words);
            diffuser_b_decrypt(&mut x);
            plain(&mut y, 3, [0, 10, 0, 25], false);
            assert_eq!(x, y, "B, {n} words");
        }
    }

    #[test]
    fn ccm_rfc_like_roundtrip_rejects_bad_mac() {
        let key = [7u8; 32];
        let nonce = [1u8; 12];
        assert!(ccm_decrypt(&key, &nonce, &[0u8; 16], &[0u8; 44]).is_none());
    }
}
