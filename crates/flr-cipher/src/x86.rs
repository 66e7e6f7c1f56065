//! AES-XTS decryption with AES-NI, for x86-64 CPUs that have it.
//!
//! The portable path (the `aes` crate plus separate tweak and XOR passes)
//! runs at about half of OpenSSL's XTS speed: the tweak arithmetic cannot
//! be overlapped with the AES rounds from outside the AES backend. This
//! kernel does what OpenSSL's does: eight blocks in flight, the tweaks
//! doubled in vector registers while the rounds run, the first round key
//! folded into the tweak XOR.
//!
//! Everything here is safe code except the two calls into functions
//! compiled for the `aes` target feature; those are only reachable through
//! an [`AesNi`] token, which exists only after runtime detection.
//! Correctness is checked against the `xts-mode` crate and the `aes` crate
//! in the tests.

use core::arch::x86_64::{
    __m128i, __m256i, _mm256_aesdec_epi128, _mm256_aesdeclast_epi128, _mm256_and_si256,
    _mm256_broadcastsi128_si256, _mm256_castsi256_si128, _mm256_set_epi32, _mm256_set_m128i,
    _mm256_shuffle_epi32, _mm256_slli_epi64, _mm256_srai_epi32, _mm256_xor_si256, _mm_aesdec_si128,
    _mm_aesdeclast_si128, _mm_aesenc_si128, _mm_aesenclast_si128, _mm_aesimc_si128,
    _mm_aeskeygenassist_si128, _mm_and_si128, _mm_set_epi32, _mm_setzero_si128, _mm_shuffle_epi32,
    _mm_slli_epi64, _mm_slli_si128, _mm_srai_epi32, _mm_xor_si128,
};

use zeroize::Zeroize;

/// Proof that the CPU has AES-NI (and SSE2, always present on x86-64),
/// and whether it also has VAES with AVX2 (two blocks per instruction).
#[derive(Clone, Copy, Debug)]
pub(crate) struct AesNi {
    vaes: bool,
}

impl AesNi {
    pub(crate) fn detect() -> Option<AesNi> {
        use std::arch::is_x86_feature_detected as has;
        has!("aes").then(|| AesNi {
            vaes: has!("vaes") && has!("avx2"),
        })
    }

    /// The same CPU without using VAES (tests and benchmarks).
    pub(crate) fn without_vaes(self) -> Option<AesNi> {
        self.vaes.then_some(AesNi { vaes: false })
    }
}

/// Expanded round keys (up to 15), wiped on drop.
#[derive(Clone)]
struct RoundKeys {
    k: [[u8; 16]; 15],
}

impl Drop for RoundKeys {
    fn drop(&mut self) {
        self.k.zeroize();
    }
}

impl RoundKeys {
    fn load(&self) -> [__m128i; 15] {
        self.k.map(bytemuck::cast::<[u8; 16], __m128i>)
    }
}

/// AES-XTS keys expanded for the AES-NI kernel: decryption round keys of
/// the data key, encryption round keys of the tweak key.
#[derive(Clone)]
pub(crate) struct XtsNi {
    ni: AesNi,
    rounds: usize,
    data_dec: Box<RoundKeys>,
    tweak_enc: Box<RoundKeys>,
}

impl std::fmt::Debug for XtsNi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "XtsNi({} rounds)", self.rounds)
    }
}

impl XtsNi {
    /// Keys of 16 or 32 bytes each (AES-128 or AES-256); `None` otherwise.
    pub(crate) fn new(ni: AesNi, data_key: &[u8], tweak_key: &[u8]) -> Option<XtsNi> {
        if data_key.len() != tweak_key.len() || !matches!(data_key.len(), 16 | 32) {
            return None;
        }
        // SAFETY: `ni` proves that the CPU supports AES-NI.
        #[allow(unsafe_code)]
        let (rounds, data_dec, tweak_enc) = unsafe {
            (
                if data_key.len() == 16 { 10 } else { 14 },
                Box::new(expand_dec(data_key)),
                Box::new(expand_enc(tweak_key)),
            )
        };
        Some(XtsNi {
            ni,
            rounds,
            data_dec,
            tweak_enc,
        })
    }

    /// Which kernel runs.
    pub(crate) fn kernel(&self) -> &'static str {
        if self.ni.vaes {
            "vaes"
        } else {
            "aes-ni"
        }
    }

    /// As [`crate::Xts::decrypt_sectors`].
    pub(crate) fn decrypt_sectors(
        &self,
        buf: &mut [u8],
        sector_size: usize,
        iv: &dyn Fn(u64) -> [u8; 16],
    ) {
        let dk = self.data_dec.load();
        let tk = self.tweak_enc.load();
        // SAFETY: `self.ni` proves that the CPU supports AES-NI, and VAES
        // with AVX2 when `vaes` is set.
        #[allow(unsafe_code)]
        unsafe {
            match (self.ni.vaes, self.rounds) {
                (true, 10) => decrypt_vaes::<10>(&dk, &tk, buf, sector_size, iv),
                (true, _) => decrypt_vaes::<14>(&dk, &tk, buf, sector_size, iv),
                (false, 10) => decrypt::<10>(&dk, &tk, buf, sector_size, iv),
                (false, _) => decrypt::<14>(&dk, &tk, buf, sector_size, iv),
            }
        }
    }
}

#[inline]
#[target_feature(enable = "aes")]
fn xor(a: __m128i, b: __m128i) -> __m128i {
    _mm_xor_si128(a, b)
}

/// XOR of a value with itself shifted left by 4, 8 and 12 bytes: the
/// running XOR of the key schedule's words.
#[inline]
#[target_feature(enable = "aes")]
fn prefix_xor(mut a: __m128i) -> __m128i {
    a = xor(a, _mm_slli_si128::<4>(a));
    a = xor(a, _mm_slli_si128::<4>(a));
    xor(a, _mm_slli_si128::<4>(a))
}

fn load(b: &[u8]) -> __m128i {
    bytemuck::pod_read_unaligned(&b[..16])
}

fn store(b: &mut [u8], v: __m128i) {
    b[..16].copy_from_slice(bytemuck::bytes_of(&v));
}

/// The AES key schedule (FIPS-197 §5.2) for 128- and 256-bit keys, with
/// the S-box step done by AESKEYGENASSIST.
#[target_feature(enable = "aes")]
fn expand_enc(key: &[u8]) -> RoundKeys {
    let mut k = [_mm_setzero_si128(); 15];
    macro_rules! assist {
        ($x:expr, $rcon:literal) => {
            _mm_aeskeygenassist_si128::<$rcon>($x)
        };
    }
    if key.len() == 16 {
        k[0] = load(key);
        macro_rules! step {
            ($i:literal, $rcon:literal) => {
                k[$i] = xor(
                    prefix_xor(k[$i - 1]),
                    _mm_shuffle_epi32::<0xff>(assist!(k[$i - 1], $rcon)),
                );
            };
        }
        step!(1, 0x01);
        step!(2, 0x02);
        step!(3, 0x04);
        step!(4, 0x08);
        step!(5, 0x10);
        step!(6, 0x20);
        step!(7, 0x40);
        step!(8, 0x80);
        step!(9, 0x1b);
        step!(10, 0x36);
    } else {
        k[0] = load(&key[..16]);
        k[1] = load(&key[16..]);
        // Even keys: RotWord+SubWord of the last word, with the round
        // constant; odd keys: SubWord only.
        macro_rules! even {
            ($i:literal, $rcon:literal) => {
                k[$i] = xor(
                    prefix_xor(k[$i - 2]),
                    _mm_shuffle_epi32::<0xff>(assist!(k[$i - 1], $rcon)),
                );
            };
        }
        macro_rules! odd {
            ($i:literal) => {
                k[$i] = xor(
                    prefix_xor(k[$i - 2]),
                    _mm_shuffle_epi32::<0xaa>(assist!(k[$i - 1], 0x00)),
                );
            };
        }
        even!(2, 0x01);
        odd!(3);
        even!(4, 0x02);
        odd!(5);
        even!(6, 0x04);
        odd!(7);
        even!(8, 0x08);
        odd!(9);
        even!(10, 0x10);
        odd!(11);
        even!(12, 0x20);
        odd!(13);
        even!(14, 0x40);
    }
    let out = RoundKeys {
        k: k.map(bytemuck::cast::<__m128i, [u8; 16]>),
    };
    k.zeroize_vectors();
    out
}

/// Decryption round keys for the "equivalent inverse cipher" that
/// AESDEC implements: the encryption keys in reverse order, the inner ones
/// passed through InvMixColumns.
#[target_feature(enable = "aes")]
fn expand_dec(key: &[u8]) -> RoundKeys {
    let enc = expand_enc(key);
    let nr = if key.len() == 16 { 10 } else { 14 };
    let e = enc.load();
    let mut d = [_mm_setzero_si128(); 15];
    d[0] = e[nr];
    for i in 1..nr {
        d[i] = _mm_aesimc_si128(e[nr - i]);
    }
    d[nr] = e[0];
    let out = RoundKeys {
        k: d.map(bytemuck::cast::<__m128i, [u8; 16]>),
    };
    d.zeroize_vectors();
    out
}

/// Overwrites key material held in vector arrays.
trait ZeroizeVectors {
    fn zeroize_vectors(&mut self);
}

impl ZeroizeVectors for [__m128i; 15] {
    fn zeroize_vectors(&mut self) {
        let mut bytes: [[u8; 16]; 15] = bytemuck::cast(*self);
        bytes.zeroize();
        *self = bytemuck::cast(bytes);
        std::hint::black_box(&self);
    }
}

/// Multiplies the tweak by x in GF(2^128): each 64-bit half shifted left
/// by one, the carry out of the low half into the high half, and the carry
/// out of the top folded back as 0x87.
#[inline]
#[target_feature(enable = "aes")]
fn mul_x(t: __m128i) -> __m128i {
    let signs = _mm_srai_epi32::<31>(t);
    // Dword 0 takes the sign of dword 3 (top bit of the value), dword 2
    // the sign of dword 1 (top bit of the low half).
    let carries = _mm_and_si128(
        _mm_shuffle_epi32::<0x13>(signs),
        _mm_set_epi32(0, 1, 0, 0x87),
    );
    xor(_mm_slli_epi64::<1>(t), carries)
}

#[inline]
#[target_feature(enable = "aes")]
fn encrypt_block<const NR: usize>(k: &[__m128i; 15], b: __m128i) -> __m128i {
    let mut b = xor(b, k[0]);
    for key in &k[1..NR] {
        b = _mm_aesenc_si128(b, *key);
    }
    _mm_aesenclast_si128(b, k[NR])
}

/// Blocks decrypted together.
const LANES: usize = 8;

/// The XTS decryption of the blocks of `tail` (fewer than a group) from
/// tweak `t` on.
#[inline]
#[target_feature(enable = "aes")]
fn decrypt_tail<const NR: usize>(dk: &[__m128i; 15], tail: &mut [u8], mut t: __m128i) {
    for blk in tail.chunks_exact_mut(16) {
        let mut x = xor(load(blk), xor(t, dk[0]));
        for key in &dk[1..NR] {
            x = _mm_aesdec_si128(x, *key);
        }
        store(blk, xor(_mm_aesdeclast_si128(x, dk[NR]), t));
        t = mul_x(t);
    }
}

#[target_feature(enable = "aes")]
fn decrypt<const NR: usize>(
    dk: &[__m128i; 15],
    tk: &[__m128i; 15],
    buf: &mut [u8],
    ss: usize,
    iv: &dyn Fn(u64) -> [u8; 16],
) {
    for (n, sector) in buf.chunks_exact_mut(ss).enumerate() {
        let mut t = encrypt_block::<NR>(tk, bytemuck::cast(iv(n as u64)));
        let mut groups = sector.chunks_exact_mut(16 * LANES);
        for g in &mut groups {
            let mut tw = [_mm_setzero_si128(); LANES];
            let mut b = [_mm_setzero_si128(); LANES];
            for i in 0..LANES {
                tw[i] = t;
                t = mul_x(t);
                b[i] = xor(load(&g[16 * i..]), xor(tw[i], dk[0]));
            }
            for key in &dk[1..NR] {
                for x in b.iter_mut() {
                    *x = _mm_aesdec_si128(*x, *key);
                }
            }
            for i in 0..LANES {
                let p = xor(_mm_aesdeclast_si128(b[i], dk[NR]), tw[i]);
                store(&mut g[16 * i..], p);
            }
        }
        decrypt_tail::<NR>(dk, groups.into_remainder(), t);
    }
}

#[inline]
#[target_feature(enable = "avx2")]
fn xor2(a: __m256i, b: __m256i) -> __m256i {
    _mm256_xor_si256(a, b)
}

/// [`mul_x`] in each 128-bit half.
#[inline]
#[target_feature(enable = "avx2")]
fn mul_x2(t: __m256i) -> __m256i {
    let signs = _mm256_srai_epi32::<31>(t);
    let poly = _mm256_set_epi32(0, 1, 0, 0x87, 0, 1, 0, 0x87);
    let carries = _mm256_and_si256(_mm256_shuffle_epi32::<0x13>(signs), poly);
    xor2(_mm256_slli_epi64::<1>(t), carries)
}

fn load2(b: &[u8]) -> __m256i {
    bytemuck::pod_read_unaligned(&b[..32])
}

fn store2(b: &mut [u8], v: __m256i) {
    b[..32].copy_from_slice(bytemuck::bytes_of(&v));
}

/// Pairs of blocks per VAES group (8 blocks).
const PAIRS: usize = 4;

/// As [`decrypt`], two blocks per instruction with VAES: each 256-bit
/// register holds blocks 2i and 2i+1 with tweaks t·x^2i and t·x^(2i+1).
#[target_feature(enable = "aes,avx2,vaes")]
fn decrypt_vaes<const NR: usize>(
    dk: &[__m128i; 15],
    tk: &[__m128i; 15],
    buf: &mut [u8],
    ss: usize,
    iv: &dyn Fn(u64) -> [u8; 16],
) {
    let k: [__m256i; 15] = dk.map(|x| _mm256_broadcastsi128_si256(x));
    for (n, sector) in buf.chunks_exact_mut(ss).enumerate() {
        let t = encrypt_block::<NR>(tk, bytemuck::cast(iv(n as u64)));
        let mut tp = _mm256_set_m128i(mul_x(t), t);
        let mut groups = sector.chunks_exact_mut(32 * PAIRS);
        for g in &mut groups {
            let mut tw = [tp; PAIRS];
            let mut b = [tp; PAIRS];
            for i in 0..PAIRS {
                tw[i] = tp;
                tp = mul_x2(mul_x2(tp));
                b[i] = xor2(load2(&g[32 * i..]), xor2(tw[i], k[0]));
            }
            for key in &k[1..NR] {
                for x in b.iter_mut() {
                    *x = _mm256_aesdec_epi128(*x, *key);
                }
            }
            for i in 0..PAIRS {
                let p = xor2(_mm256_aesdeclast_epi128(b[i], k[NR]), tw[i]);
                store2(&mut g[32 * i..], p);
            }
        }
        decrypt_tail::<NR>(dk, groups.into_remainder(), _mm256_castsi256_si128(tp));
    }
}
