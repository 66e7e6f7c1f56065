//! LUKS1 and LUKS2 encrypted volumes for flr, read-only and in pure Rust.
//!
//! [`LuksVolume::open`] parses the header (the volume itself or a detached
//! header file), [`LuksVolume::info`] describes it without any key, and
//! [`LuksVolume::unlock`] turns a passphrase or a volume key into an
//! [`UnlockedLuks`], a [`ReadAt`] presenting the decrypted payload.
//!
//! Supported: PBKDF2 (sha1, sha256, sha384, sha512, ripemd160) and Argon2i/id
//! keyslots with the LUKS1 anti-forensic split; AES in `xts-plain64`,
//! `xts-plain`, `cbc-essiv:sha256`, `cbc-plain64`, `cbc-plain` and `ecb`;
//! LUKS2 sector sizes 512 to 4096. Header bytes are hostile: every size is
//! checked and capped, and errors name the byte offset.
#![deny(missing_docs)]

mod crypto;
mod layer;
mod luks2;

pub use layer::{LuksFormat, FORMAT};

use std::fmt;
use std::sync::Arc;

use flr_io::{check_range, IoError, ReadAt, Source};
use flr_keys::KeyMaterial;
use zeroize::Zeroizing;

use crypto::{af_merge, parse_cipher, Hash, SectorCipher};

const LAYER: &str = "luks";
const LUKS_MAGIC: &[u8; 6] = b"LUKS\xba\xbe";
const LUKS2_SECONDARY_MAGIC: &[u8; 6] = b"SKUL\xba\xbe";
/// Offsets where a LUKS2 secondary header may sit.
pub(crate) const SECONDARY_OFFSETS: [u64; 9] = [
    0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
];
/// Largest key material (stripes × key size) read for one keyslot.
const MAX_KEYSLOT_MATERIAL: u64 = 64 << 20;

/// An error from the LUKS layer, naming the byte offset (in the header
/// source for header problems, in the volume for data reads).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LuksError {
    /// Reading the layer below failed.
    #[error("luks: {0}")]
    Io(#[from] IoError),
    /// No LUKS header at the start of the header source.
    #[error("luks: no LUKS header (magic LUKS\\xba\\xbe) at offset {offset:#x}")]
    NotLuks {
        /// Where the header was expected.
        offset: u64,
    },
    /// The header is damaged or inconsistent.
    #[error("luks: corrupt header at offset {offset:#x}: {what}")]
    Corrupt {
        /// Offset of the damaged structure.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// The volume uses something flr cannot read.
    #[error("luks: unsupported at offset {offset:#x}: {what}")]
    Unsupported {
        /// Offset of the structure naming the feature.
        offset: u64,
        /// What is missing.
        what: String,
    },
    /// A header value asks for more resources than the configured limit.
    #[error("luks: refused at offset {offset:#x}: {what}")]
    Limit {
        /// Offset of the structure.
        offset: u64,
        /// What exceeded which limit.
        what: String,
    },
    /// The passphrase or volume key does not open any keyslot.
    #[error("luks: wrong key: {what}")]
    WrongKey {
        /// What was tried (never the key).
        what: String,
    },
}

impl LuksError {
    fn corrupt(offset: u64, what: impl fmt::Display) -> Self {
        LuksError::Corrupt {
            offset,
            what: what.to_string(),
        }
    }
    fn unsupported(offset: u64, what: impl fmt::Display) -> Self {
        LuksError::Unsupported {
            offset,
            what: what.to_string(),
        }
    }
}

/// True when a LUKS header (or a LUKS2 secondary header) is at the start
/// of `src` (or at a known secondary offset).
pub fn probe(src: &dyn ReadAt) -> bool {
    let mut m = [0u8; 6];
    if src.read_exact_at(0, &mut m).is_ok() && &m == LUKS_MAGIC {
        return true;
    }
    SECONDARY_OFFSETS.iter().any(|&o| {
        src.read_exact_at(o, &mut m).is_ok() && &m == LUKS2_SECONDARY_MAGIC && {
            let mut v = [0u8; 2];
            src.read_exact_at(o + 6, &mut v).is_ok() && v == [0, 2]
        }
    })
}

/// Limits on what a header may ask for.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest Argon2 memory cost accepted, in KiB (default 4 GiB).
    pub argon2_max_kib: u64,
    /// Largest Argon2 work accepted: passes × memory in KiB (default
    /// 2^26, e.g. 64 passes over 1 GiB, about a minute here). cryptsetup
    /// tunes its keyslots to take about 2 s; a header asking for hours of
    /// work is refused instead of hanging the restore.
    pub argon2_max_work: u64,
    /// Largest PBKDF2 iteration count accepted, for keyslots and for the
    /// volume-key digest (default 2^27, 30–60 s of SHA-256 here; cryptsetup's
    /// 2 s calibration gives a few million).
    pub pbkdf2_max_iterations: u32,
    /// Largest LUKS2 header (binary + JSON) accepted, in bytes (default 4 MiB).
    pub max_json_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            argon2_max_kib: 4 << 20,
            argon2_max_work: 1 << 26,
            pbkdf2_max_iterations: 1 << 27,
            max_json_bytes: 4 << 20,
        }
    }
}

/// A keyslot, as described by the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyslotInfo {
    /// Slot number.
    pub index: u32,
    /// `pbkdf2-sha256`, `argon2id`, ...
    pub kdf: String,
    /// Whether the slot holds a key.
    pub active: bool,
    /// LUKS2 priority (0 ignore, 1 normal, 2 high); `None` for LUKS1.
    pub priority: Option<u32>,
    /// LUKS2 slot type (`luks2`, `reencrypt`); `luks1` for LUKS1.
    pub kind: String,
}

/// A LUKS2 token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Token number.
    pub index: u32,
    /// The token type (`systemd-tpm2`, `Azure_Disk_Encryption`, ...).
    pub type_name: String,
    /// Keyslots it unlocks.
    pub keyslots: Vec<u32>,
    /// An Azure Disk Encryption token: the passphrase comes from Key Vault
    /// through attested key release, not from the token.
    pub needs_attested_key_release: bool,
}

/// A data segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Segment number.
    pub index: u32,
    /// `crypt` or `linear`.
    pub kind: String,
    /// Byte offset in the data source.
    pub offset: u64,
    /// Size in bytes; `None` for `dynamic` (to the end of the device).
    pub size: Option<u64>,
    /// Cipher (crypt segments).
    pub encryption: Option<String>,
    /// Encryption sector size.
    pub sector_size: u32,
    /// IV offset in 512-byte sectors.
    pub iv_tweak: u64,
}

/// What the header says, readable without a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuksInfo {
    /// 1 or 2.
    pub version: u16,
    /// The volume UUID.
    pub uuid: String,
    /// LUKS2 label (empty when none).
    pub label: String,
    /// LUKS2 subsystem (empty when none).
    pub subsystem: String,
    /// Data cipher, e.g. `aes-xts-plain64`.
    pub cipher: String,
    /// Volume key size in bits.
    pub key_bits: u32,
    /// Encryption sector size in bytes.
    pub sector_size: u32,
    /// Byte offset of the payload in the data source.
    pub data_offset: u64,
    /// Keyslots (LUKS1: all eight).
    pub keyslots: Vec<KeyslotInfo>,
    /// LUKS2 tokens.
    pub tokens: Vec<TokenInfo>,
    /// LUKS2 segments (LUKS1: one synthetic crypt segment).
    pub segments: Vec<SegmentInfo>,
    /// Things a reader should know (a bad primary header, ...).
    pub warnings: Vec<String>,
}

/// How a keyslot derives its key from the passphrase.
#[derive(Clone, Debug)]
pub(crate) enum Kdf {
    Pbkdf2 {
        hash: Hash,
        iterations: u32,
        salt: Vec<u8>,
    },
    Argon2 {
        id: bool,
        time: u32,
        memory_kib: u32,
        cpus: u32,
        salt: Vec<u8>,
    },
}

/// Everything needed to open one keyslot.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub(crate) index: u32,
    pub(crate) priority: u32,
    pub(crate) kdf: Kdf,
    /// Byte offset of the key material in the header source.
    pub(crate) area_offset: u64,
    pub(crate) area_size: u64,
    pub(crate) area_cipher: String,
    /// Size of the key that decrypts the area.
    pub(crate) area_key_len: usize,
    pub(crate) af_hash: Hash,
    pub(crate) stripes: u32,
    /// Size of the key the slot holds.
    pub(crate) key_len: usize,
}

/// How a candidate volume key is checked.
#[derive(Clone, Debug)]
pub(crate) struct KeyDigest {
    pub(crate) hash: Hash,
    pub(crate) iterations: u32,
    pub(crate) salt: Vec<u8>,
    pub(crate) digest: Vec<u8>,
    /// Keyslots this digest covers (LUKS2); empty means all.
    pub(crate) keyslots: Vec<u32>,
}

/// A parsed LUKS header, still locked.
pub struct LuksVolume {
    info: LuksInfo,
    header_src: Source,
    data_src: Source,
    slots: Vec<Slot>,
    digests: Vec<KeyDigest>,
    key_len: usize,
    iv_tweak: u64,
    data_size: Option<u64>,
    limits: Limits,
}

impl fmt::Debug for LuksVolume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LuksVolume")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl LuksVolume {
    /// Parses the header in `header_src` (the volume itself, or a detached
    /// header file) for the encrypted volume `data_src`, with default limits.
    pub fn open(header_src: Source, data_src: Source) -> Result<LuksVolume, LuksError> {
        Self::open_with(header_src, data_src, Limits::default())
    }

    /// [`LuksVolume::open`] with explicit limits.
    pub fn open_with(
        header_src: Source,
        data_src: Source,
        limits: Limits,
    ) -> Result<LuksVolume, LuksError> {
        let mut head = [0u8; 8];
        let have = header_src.read_exact_at(0, &mut head).is_ok();
        let version = u16::from_be_bytes([head[6], head[7]]);
        if have && &head[..6] == LUKS_MAGIC && version == 1 {
            return Self::open_luks1(header_src, data_src, limits);
        }
        if (have && &head[..6] == LUKS_MAGIC && version == 2) || probe(&*header_src) {
            return luks2::open(header_src, data_src, limits);
        }
        if have && &head[..6] == LUKS_MAGIC {
            return Err(LuksError::unsupported(
                6,
                format!("LUKS version {version} is not 1 or 2"),
            ));
        }
        Err(LuksError::NotLuks { offset: 0 })
    }

    fn open_luks1(
        header_src: Source,
        data_src: Source,
        limits: Limits,
    ) -> Result<LuksVolume, LuksError> {
        let mut h = [0u8; 592];
        header_src.read_exact_at(0, &mut h)?;
        let cipher_name = cstr(&h[8..40]);
        let cipher_mode = cstr(&h[40..72]);
        let hash_spec = cstr(&h[72..104]);
        let payload_sectors = be32(&h, 104);
        let key_bytes = be32(&h, 108);
        let uuid = cstr(&h[168..208]);
        let hash = Hash::parse(&hash_spec)
            .ok_or_else(|| LuksError::unsupported(72, format!("hash {hash_spec:?}")))?;
        if !matches!(key_bytes, 16 | 24 | 32 | 48 | 64) {
            return Err(LuksError::corrupt(
                108,
                format!("key size {key_bytes} bytes is not 16, 24, 32, 48 or 64"),
            ));
        }
        let cipher = format!("{cipher_name}-{cipher_mode}");
        // Check the cipher spec now, with a dummy key of the right size.
        parse_cipher(&cipher, &vec![0u8; key_bytes as usize])
            .map_err(|e| LuksError::unsupported(8, e))?;
        let digest = KeyDigest {
            hash,
            iterations: be32(&h, 164),
            salt: h[132..164].to_vec(),
            digest: h[112..132].to_vec(),
            keyslots: Vec::new(),
        };
        let mut slots = Vec::new();
        let mut ks_info = Vec::new();
        for i in 0..8u32 {
            let at = 208 + 48 * i as usize;
            let state = be32(&h, at);
            let active = state == 0x00AC_71F3;
            if !active && state != 0x0000_DEAD {
                return Err(LuksError::corrupt(
                    at as u64,
                    format!("keyslot {i} state {state:#x} is neither active nor disabled"),
                ));
            }
            ks_info.push(KeyslotInfo {
                index: i,
                kdf: format!("pbkdf2-{hash_spec}"),
                active,
                priority: None,
                kind: "luks1".into(),
            });
            if !active {
                continue;
            }
            let stripes = be32(&h, at + 44);
            if stripes == 0 {
                return Err(LuksError::corrupt(at as u64 + 44, "keyslot with 0 stripes"));
            }
            let area_size = u64::from(key_bytes) * u64::from(stripes);
            slots.push(Slot {
                index: i,
                priority: 1,
                kdf: Kdf::Pbkdf2 {
                    hash,
                    iterations: be32(&h, at + 4),
                    salt: h[at + 8..at + 40].to_vec(),
                },
                area_offset: u64::from(be32(&h, at + 40)) * 512,
                area_size,
                area_cipher: cipher.clone(),
                area_key_len: key_bytes as usize,
                af_hash: hash,
                stripes,
                key_len: key_bytes as usize,
            });
        }
        let data_offset = u64::from(payload_sectors) * 512;
        let info = LuksInfo {
            version: 1,
            uuid,
            label: String::new(),
            subsystem: String::new(),
            cipher: cipher.clone(),
            key_bits: key_bytes * 8,
            sector_size: 512,
            data_offset,
            keyslots: ks_info,
            tokens: Vec::new(),
            segments: vec![SegmentInfo {
                index: 0,
                kind: "crypt".into(),
                offset: data_offset,
                size: None,
                encryption: Some(cipher),
                sector_size: 512,
                iv_tweak: 0,
            }],
            warnings: Vec::new(),
        };
        Ok(LuksVolume {
            info,
            header_src,
            data_src,
            slots,
            digests: vec![digest],
            key_len: key_bytes as usize,
            iv_tweak: 0,
            data_size: None,
            limits,
        })
    }

    /// What the header says.
    pub fn info(&self) -> &LuksInfo {
        &self.info
    }

    /// Opens the volume with a passphrase (every active keyslot is tried,
    /// high priority first) or a volume key (checked against the digest).
    pub fn unlock(&self, key: &KeyMaterial) -> Result<UnlockedLuks, LuksError> {
        if let Some(d) = self
            .digests
            .iter()
            .find(|d| d.iterations > self.limits.pbkdf2_max_iterations)
        {
            return Err(LuksError::Limit {
                offset: 0,
                what: format!(
                    "the volume key digest asks for {} PBKDF2 iterations, above the limit of {}",
                    d.iterations, self.limits.pbkdf2_max_iterations
                ),
            });
        }
        let vk = match key {
            KeyMaterial::Passphrase(p) | KeyMaterial::Password(p) => {
                self.key_from_passphrase(p.expose())?
            }
            KeyMaterial::VolumeKey(k) => {
                let k = Zeroizing::new(k.expose().to_vec());
                if k.len() != self.key_len {
                    return Err(LuksError::WrongKey {
                        what: format!(
                            "the volume key has {} bits, this volume needs {}",
                            k.len() * 8,
                            self.key_len * 8
                        ),
                    });
                }
                if !self.digest_matches(&k, None) {
                    return Err(LuksError::WrongKey {
                        what: "the volume key does not match the header digest".into(),
                    });
                }
                k
            }
            other => {
                return Err(LuksError::unsupported(
                    0,
                    format!(
                        "a {} cannot open a LUKS volume (give a passphrase or a volume key)",
                        other.kind()
                    ),
                ))
            }
        };
        self.unlocked(vk)
    }

    fn digest_matches(&self, vk: &[u8], slot: Option<u32>) -> bool {
        self.digests.iter().any(|d| {
            if let Some(s) = slot {
                if !d.keyslots.is_empty() && !d.keyslots.contains(&s) {
                    return false;
                }
            }
            let mut out = Zeroizing::new(vec![0u8; d.digest.len()]);
            d.hash.pbkdf2(vk, &d.salt, d.iterations, &mut out);
            let mut diff = 0u8;
            for (a, b) in out.iter().zip(&d.digest) {
                diff |= a ^ b;
            }
            diff == 0
        })
    }

    fn key_from_passphrase(&self, pass: &[u8]) -> Result<Zeroizing<Vec<u8>>, LuksError> {
        let mut order: Vec<&Slot> = self
            .slots
            .iter()
            .filter(|s| s.priority > 0 && s.key_len == self.key_len)
            .collect();
        order.sort_by_key(|s| std::cmp::Reverse(s.priority));
        if order.is_empty() {
            return Err(LuksError::WrongKey {
                what: "the header has no active keyslot for the volume key".into(),
            });
        }
        let mut tried = Vec::new();
        for s in order {
            let cand = self.open_slot(s, pass)?;
            if self.digest_matches(&cand, Some(s.index)) {
                return Ok(cand);
            }
            tried.push(s.index.to_string());
        }
        Err(LuksError::WrongKey {
            what: format!(
                "the passphrase opens no keyslot (tried {})",
                tried.join(", ")
            ),
        })
    }

    fn open_slot(&self, s: &Slot, pass: &[u8]) -> Result<Zeroizing<Vec<u8>>, LuksError> {
        let material_len = (s.key_len as u64)
            .checked_mul(u64::from(s.stripes))
            .filter(|&n| n <= MAX_KEYSLOT_MATERIAL && n <= s.area_size)
            .ok_or_else(|| {
                LuksError::corrupt(
                    s.area_offset,
                    format!(
                        "keyslot {}: {} stripes of {} bytes do not fit its area ({} bytes, at most {} read)",
                        s.index, s.stripes, s.key_len, s.area_size, MAX_KEYSLOT_MATERIAL
                    ),
                )
            })?;
        let read_len = material_len.div_ceil(512) * 512;
        let mut area_key = Zeroizing::new(vec![0u8; s.area_key_len]);
        match &s.kdf {
            Kdf::Pbkdf2 {
                hash,
                iterations,
                salt,
            } => {
                if *iterations > self.limits.pbkdf2_max_iterations {
                    return Err(LuksError::Limit {
                        offset: s.area_offset,
                        what: format!(
                            "keyslot {}: {} PBKDF2 iterations is above the limit of {}",
                            s.index, iterations, self.limits.pbkdf2_max_iterations
                        ),
                    });
                }
                hash.pbkdf2(pass, salt, *iterations, &mut area_key)
            }
            Kdf::Argon2 {
                id,
                time,
                memory_kib,
                cpus,
                salt,
            } => {
                let work = u64::from(*memory_kib) * u64::from(*time);
                if work > self.limits.argon2_max_work {
                    return Err(LuksError::Limit {
                        offset: s.area_offset,
                        what: format!(
                            "keyslot {}: Argon2 work of {} passes over {} KiB is above the limit of {} KiB-passes",
                            s.index, time, memory_kib, self.limits.argon2_max_work
                        ),
                    });
                }
                if u64::from(*memory_kib) > self.limits.argon2_max_kib {
                    return Err(LuksError::Limit {
                        offset: s.area_offset,
                        what: format!(
                            "keyslot {}: Argon2 memory cost {} KiB is above the limit of {} KiB",
                            s.index, memory_kib, self.limits.argon2_max_kib
                        ),
                    });
                }
                let params = argon2::Params::new(*memory_kib, *time, *cpus, Some(s.area_key_len))
                    .map_err(|e| {
                    LuksError::corrupt(0, format!("keyslot {}: Argon2 parameters: {e}", s.index))
                })?;
                let alg = if *id {
                    argon2::Algorithm::Argon2id
                } else {
                    argon2::Algorithm::Argon2i
                };
                argon2::Argon2::new(alg, argon2::Version::V0x13, params)
                    .hash_password_into(pass, salt, &mut area_key)
                    .map_err(|e| {
                        LuksError::corrupt(0, format!("keyslot {}: Argon2: {e}", s.index))
                    })?;
            }
        }
        let cipher = parse_cipher(&s.area_cipher, &area_key)
            .map_err(|e| LuksError::unsupported(s.area_offset, e))?;
        let mut material = Zeroizing::new(vec![0u8; read_len as usize]);
        self.header_src
            .read_exact_at(s.area_offset, &mut material)?;
        cipher.decrypt(&mut material, 512, 0, 1);
        Ok(af_merge(
            s.af_hash,
            &material[..material_len as usize],
            s.key_len,
            s.stripes as usize,
        ))
    }

    fn unlocked(&self, vk: Zeroizing<Vec<u8>>) -> Result<UnlockedLuks, LuksError> {
        let cipher =
            parse_cipher(&self.info.cipher, &vk).map_err(|e| LuksError::unsupported(0, e))?;
        let total = self.data_src.len();
        let off = self.info.data_offset;
        let len = match self.data_size {
            Some(n) => off
                .checked_add(n)
                .filter(|&e| e <= total)
                .map(|_| n)
                .ok_or_else(|| {
                    LuksError::corrupt(
                        0,
                        format!(
                            "segment of {n} bytes at {off:#x} goes past the end of the data device ({total} bytes)"
                        ),
                    )
                })?,
            None => total.checked_sub(off).ok_or_else(|| {
                LuksError::corrupt(
                    0,
                    format!("payload offset {off:#x} is past the end of the data device ({total} bytes)"),
                )
            })?,
        };
        let ss = u64::from(self.info.sector_size);
        Ok(UnlockedLuks {
            data: self.data_src.clone(),
            offset: off,
            len: len - len % ss,
            sector_size: self.info.sector_size as usize,
            iv_tweak: self.iv_tweak,
            cipher: Arc::new(cipher),
            vk,
        })
    }
}

/// The decrypted payload of an unlocked LUKS volume.
pub struct UnlockedLuks {
    data: Source,
    offset: u64,
    len: u64,
    sector_size: usize,
    iv_tweak: u64,
    cipher: Arc<SectorCipher>,
    vk: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for UnlockedLuks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnlockedLuks")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("sector_size", &self.sector_size)
            .finish_non_exhaustive()
    }
}

impl UnlockedLuks {
    /// Whether the volume key equals `hex` (for tests against known keys;
    /// the key itself is never exposed).
    pub fn volume_key_matches(&self, hex_key: &str) -> bool {
        match hex::decode(hex_key.trim()) {
            Ok(k) => {
                let k = Zeroizing::new(k);
                k.len() == self.vk.len()
                    && k.iter()
                        .zip(self.vk.iter())
                        .fold(0u8, |d, (a, b)| d | (a ^ b))
                        == 0
            }
            Err(_) => false,
        }
    }

    /// Size of the volume key in bits.
    pub fn key_bits(&self) -> usize {
        self.vk.len() * 8
    }

    fn iv_for(&self, byte_off: u64) -> u64 {
        // LUKS (dm-crypt without iv_large_sectors): the IV counts 512-byte
        // sectors from the segment start, plus iv_tweak, whatever the
        // encryption sector size.
        (byte_off >> 9).wrapping_add(self.iv_tweak)
    }

    fn iv_step(&self) -> u64 {
        (self.sector_size / 512) as u64
    }

    /// Decrypts whole sectors starting at the volume offset `at`.
    fn decrypt_sectors(&self, at: u64, buf: &mut [u8]) {
        self.cipher
            .decrypt_parallel(buf, self.sector_size, self.iv_for(at), self.iv_step());
    }
}

impl ReadAt for UnlockedLuks {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        check_range(LAYER, offset, buf.len(), self.len)?;
        if buf.is_empty() {
            return Ok(());
        }
        let ss = self.sector_size as u64;
        let end = offset + buf.len() as u64;
        let first_full = offset.div_ceil(ss) * ss;
        let last_full = end / ss * ss;
        let mut sector = Vec::new();
        let mut partial = |sec_start: u64, dst: &mut [u8], skip: usize| -> Result<(), IoError> {
            sector.resize(self.sector_size, 0);
            self.data
                .read_exact_at(self.offset + sec_start, &mut sector)?;
            self.cipher.decrypt(
                &mut sector,
                self.sector_size,
                self.iv_for(sec_start),
                self.iv_step(),
            );
            dst.copy_from_slice(&sector[skip..skip + dst.len()]);
            Ok(())
        };
        if first_full > last_full {
            // Entirely inside one sector.
            let start = offset / ss * ss;
            return partial(start, buf, (offset - start) as usize);
        }
        let head = (first_full - offset) as usize;
        let mid = (last_full - first_full) as usize;
        let (h, rest) = buf.split_at_mut(head);
        let (m, t) = rest.split_at_mut(mid);
        if !h.is_empty() {
            partial(first_full - ss, h, (offset - (first_full - ss)) as usize)?;
        }
        if !t.is_empty() {
            partial(last_full, t, 0)?;
        }
        if !m.is_empty() {
            self.data.read_exact_at(self.offset + first_full, m)?;
            self.decrypt_sectors(first_full, m);
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn changed(&self, offset: u64, len: u64) -> flr_io::Change {
        // Whole sectors of ciphertext at the payload offset.
        let ss = self.sector_size as u64;
        match offset.checked_add(len) {
            Some(end) if end <= self.len => {
                let start = offset / ss * ss;
                let end = end.div_ceil(ss) * ss;
                self.data.changed(self.offset + start, end - start)
            }
            _ => flr_io::Change::Unknown,
        }
    }

    fn layer(&self) -> &str {
        LAYER
    }
}
