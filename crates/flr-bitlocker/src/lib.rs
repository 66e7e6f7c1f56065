//! BitLocker (FVE) volumes for flr, read-only, in pure Rust.
//!
//! [`probe`] recognises a BitLocker volume (`-FVE-FS-` at byte 3, or a
//! BitLocker To Go FAT discovery volume). [`BitLockerVolume::open`] reads the
//! volume header and the three FVE metadata blocks (using the first valid
//! copy), [`BitLockerVolume::info`] describes it, and
//! [`BitLockerVolume::unlock`] turns a key (password, recovery password,
//! startup key `.BEK` file, or the clear key of a suspended volume) into an
//! [`UnlockedBde`], a [`ReadAt`] of the decrypted volume as a filesystem
//! reader expects it: the relocated boot sectors are put back at the start,
//! the FVE metadata areas and the relocated-header area read as zeros, and
//! data past the encrypted size of a partially encrypted volume is returned
//! as stored.
//!
//! Written from the published descriptions of the format; the images in the
//! shared corpus (made by Windows) are the test oracle.
#![deny(missing_docs)]

mod crypto;
mod layer;
mod meta;

use std::sync::Arc;

use flr_io::{check_range, IoError, ReadAt, Source};
use flr_keys::KeyMaterial;

use crypto::SectorCipher;
use flr_cipher::{Aes, Xts};
pub use layer::{BitLockerFormat, FORMAT};
pub use meta::{BdeInfo, EncryptionMethod, Protector, ProtectorKind};
use meta::{Metadata, Vmk};

const LAYER: &str = "bitlocker";

/// Size of each FVE metadata area, read as zeros in the decrypted volume.
const FVE_AREA: u64 = 64 * 1024;

/// An error opening or unlocking a BitLocker volume.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BdeError {
    /// The layer below failed.
    #[error("bitlocker: {0}")]
    Io(#[from] IoError),
    /// Not a BitLocker volume.
    #[error("bitlocker: not a BitLocker volume (offset {offset:#x}): {what}")]
    NotBitLocker {
        /// Where the signature was expected.
        offset: u64,
        /// What was found.
        what: String,
    },
    /// A structure is corrupt.
    #[error("bitlocker: corrupt structure at offset {offset:#x}: {what}")]
    Corrupt {
        /// Byte offset of the structure in the volume.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// Something this reader does not support.
    #[error("bitlocker: unsupported at offset {offset:#x}: {what}")]
    Unsupported {
        /// Byte offset of the structure.
        offset: u64,
        /// What is missing.
        what: String,
    },
    /// The key was well formed but does not open any protector (AES-CCM
    /// authentication failed).
    #[error("bitlocker: wrong key: the {kind} does not open any {protectors} protector of this volume (metadata at offset {offset:#x})")]
    WrongKey {
        /// Kind of the key given.
        kind: String,
        /// The protectors it was tried against.
        protectors: String,
        /// Offset of the FVE metadata block used.
        offset: u64,
    },
    /// The key given is malformed (a recovery password block, a `.BEK` file).
    #[error("bitlocker: invalid {kind}: {what}")]
    InvalidKey {
        /// Kind of the key.
        kind: String,
        /// What is wrong.
        what: String,
    },
    /// The key kind cannot open this volume: no protector of that kind.
    #[error("bitlocker: no {kind} protector on this volume (metadata at offset {offset:#x}); protectors that would work: {}", usable.join(", "))]
    NoSuchProtector {
        /// Kind of key given.
        kind: String,
        /// Offset of the FVE metadata block used.
        offset: u64,
        /// What would work.
        usable: Vec<String>,
    },
    /// Only protectors that need hardware (TPM, smart card) or an unknown
    /// protector are left.
    #[error("bitlocker: cannot unlock offline (metadata at offset {offset:#x}): protector {protector}; protectors that would work: {}", if usable.is_empty() { "none".to_string() } else { usable.join(", ") })]
    CannotUnlockOffline {
        /// The protector(s) that need hardware.
        protector: String,
        /// Protectors usable offline (with the right key).
        usable: Vec<String>,
        /// Offset of the FVE metadata block used.
        offset: u64,
    },
}

fn corrupt(offset: u64, what: impl Into<String>) -> BdeError {
    BdeError::Corrupt {
        offset,
        what: what.into(),
    }
}

/// BitLocker To Go discovery volume GUID {4967D63B-2E29-4AD8-8399-F6A339E3D001}, on-disk order.
const TOGO_GUID: [u8; 16] = [
    0x3b, 0xd6, 0x67, 0x49, 0x29, 0x2e, 0xd8, 0x4a, 0x83, 0x99, 0xf6, 0xa3, 0x39, 0xe3, 0xd0, 0x01,
];

/// Whether `src` starts with a BitLocker volume header (`-FVE-FS-` at byte
/// 3, or a FAT boot sector carrying the BitLocker To Go GUID at byte 424).
pub fn probe(src: &dyn ReadAt) -> bool {
    let mut b = [0u8; 512];
    if src.read_exact_at(0, &mut b).is_err() {
        return false;
    }
    &b[3..11] == b"-FVE-FS-" || b[424..440] == TOGO_GUID
}

/// An opened (still locked) BitLocker volume.
pub struct BitLockerVolume {
    src: Source,
    info: BdeInfo,
    meta: Metadata,
}

impl std::fmt::Debug for BitLockerVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BitLockerVolume")
            .field("info", &self.info)
            .finish()
    }
}

impl BitLockerVolume {
    /// Reads the volume header and the FVE metadata.
    pub fn open(src: Source) -> Result<BitLockerVolume, BdeError> {
        let (info, meta) = meta::read(&*src)?;
        Ok(BitLockerVolume { src, info, meta })
    }

    /// What the metadata says.
    pub fn info(&self) -> &BdeInfo {
        &self.info
    }

    /// Unlocks with `key`; `None` works only for a volume whose protection
    /// is suspended (a clear key).
    pub fn unlock(&self, key: Option<&KeyMaterial>) -> Result<UnlockedBde, BdeError> {
        let vmk = self.unlock_vmk(key)?;
        let fvek = meta::decrypt_fvek(&self.meta, &vmk)?;
        let cipher = make_cipher(self.info.encryption_method, &fvek, self.meta.block_offset)?;
        let sector = self.info.sector_size;
        // cryptsetup maps 4 KiB-sector XTS volumes with the IV counted in
        // 4 KiB units; Windows counts sectors of the volume's size.
        let iv_unit = u64::from(sector);
        let len = self.src.len();
        let mut zero = Vec::new();
        for &b in &self.meta.blocks {
            zero.push((b, b.saturating_add(FVE_AREA)));
        }
        let hdr = self.meta.header_reloc;
        if let Some((off, size)) = hdr {
            zero.push((off, off.saturating_add(size)));
        }
        Ok(UnlockedBde {
            inner: Arc::new(Inner {
                src: self.src.clone(),
                cipher,
                sector: sector as usize,
                iv_unit,
                len,
                header: hdr,
                zero,
                encrypted_size: self.info.encrypted_size,
            }),
        })
    }

    fn unlock_vmk(&self, key: Option<&KeyMaterial>) -> Result<[u8; 32], BdeError> {
        let m = &self.meta;
        // A clear key opens the volume whatever key was given.
        for v in m.vmks.iter().filter(|v| v.kind == ProtectorKind::ClearKey) {
            if let Some(k) = &v.clear_key {
                if let Some(vmk) = meta::open_vmk(v, k) {
                    return Ok(vmk);
                }
            }
        }
        let Some(key) = key else {
            return Err(self.no_such("clear key (no key given)"));
        };
        let (kinds, candidates): (&str, Vec<(&Vmk, [u8; 32])>) = match key {
            KeyMaterial::Password(s) | KeyMaterial::Passphrase(s) => {
                let vs: Vec<&Vmk> = m
                    .vmks
                    .iter()
                    .filter(|v| v.kind == ProtectorKind::Password)
                    .collect();
                if vs.is_empty() {
                    return Err(self.no_such("password"));
                }
                let initial = password_hash(s.expose())?;
                let c = vs
                    .into_iter()
                    .filter_map(|v| v.salt.map(|salt| (v, crypto::stretch(&initial, &salt))))
                    .collect();
                ("password", c)
            }
            KeyMaterial::RecoveryPassword(s) => {
                let raw = parse_recovery_password(s.expose())?;
                let initial = crypto::sha256(&raw);
                let vs: Vec<&Vmk> = m
                    .vmks
                    .iter()
                    .filter(|v| v.kind == ProtectorKind::RecoveryPassword)
                    .collect();
                if vs.is_empty() {
                    return Err(self.no_such("recovery password"));
                }
                let c = vs
                    .into_iter()
                    .filter_map(|v| v.salt.map(|salt| (v, crypto::stretch(&initial, &salt))))
                    .collect();
                ("recovery password", c)
            }
            KeyMaterial::StartupKey(s) => {
                let (guid, k) = meta::parse_bek(s.expose())?;
                let c: Vec<(&Vmk, [u8; 32])> = m
                    .vmks
                    .iter()
                    .filter(|v| v.guid == guid)
                    .map(|v| (v, k))
                    .collect();
                if c.is_empty() {
                    return Err(self.no_such(&format!("startup key {}", meta::guid_string(&guid))));
                }
                ("startup key", c)
            }
            KeyMaterial::VolumeKey(_) => {
                return Err(BdeError::Unsupported {
                    offset: m.block_offset,
                    what: "a raw volume key; give a password, recovery password or .BEK file"
                        .into(),
                })
            }
            _ => {
                return Err(BdeError::Unsupported {
                    offset: m.block_offset,
                    what: format!("key kind {}", key.kind()),
                })
            }
        };
        for (v, k) in &candidates {
            if let Some(vmk) = meta::open_vmk(v, k) {
                return Ok(vmk);
            }
        }
        Err(BdeError::WrongKey {
            kind: key.kind().to_string(),
            protectors: kinds.to_string(),
            offset: m.block_offset,
        })
    }

    fn usable(&self) -> Vec<String> {
        self.meta
            .vmks
            .iter()
            .filter(|v| v.kind.offline())
            .map(|v| v.kind.to_string())
            .collect()
    }

    fn offline_err(&self) -> BdeError {
        let hw: Vec<String> = self
            .meta
            .vmks
            .iter()
            .filter(|v| !v.kind.offline())
            .map(|v| v.kind.to_string())
            .collect();
        BdeError::CannotUnlockOffline {
            protector: if hw.is_empty() {
                "none".into()
            } else {
                hw.join(", ")
            },
            usable: self.usable(),
            offset: self.meta.block_offset,
        }
    }

    fn no_such(&self, kind: &str) -> BdeError {
        let usable = self.usable();
        if usable.is_empty() || self.meta.vmks.iter().any(|v| !v.kind.offline()) {
            return self.offline_err();
        }
        BdeError::NoSuchProtector {
            kind: kind.into(),
            offset: self.meta.block_offset,
            usable,
        }
    }
}

fn password_hash(pw: &[u8]) -> Result<[u8; 32], BdeError> {
    let s = std::str::from_utf8(pw).map_err(|_| BdeError::InvalidKey {
        kind: "password".into(),
        what: "not UTF-8".into(),
    })?;
    let u16le: Vec<u8> = s.encode_utf16().flat_map(|c| c.to_le_bytes()).collect();
    Ok(crypto::sha256(&crypto::sha256(&u16le)))
}

/// The key id (GUID, as BitLocker prints it) of a `.BEK` startup key
/// file, after checking that the file holds a 256-bit external key. The
/// key itself is wiped before this returns.
pub fn startup_key_id(file: &[u8]) -> Result<String, BdeError> {
    let (guid, mut key) = meta::parse_bek(file)?;
    key.fill(0);
    std::hint::black_box(&key);
    Ok(meta::guid_string(&guid))
}

/// Parses a 48-digit recovery password (8 blocks of 6 digits, dashes or
/// spaces allowed) into its 16-byte key.
pub fn parse_recovery_password(text: &[u8]) -> Result<[u8; 16], BdeError> {
    let bad = |what: String| BdeError::InvalidKey {
        kind: "recovery password".into(),
        what,
    };
    let digits: Vec<u8> = text
        .iter()
        .copied()
        .filter(|c| !matches!(c, b'-' | b' ' | b'\n' | b'\r' | b'\t'))
        .collect();
    if digits.len() != 48 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad(format!(
            "expected 48 digits in 8 blocks of 6, got {} characters that are not all digits",
            digits.len()
        )));
    }
    let mut out = [0u8; 16];
    for (i, block) in digits.chunks_exact(6).enumerate() {
        let v = block
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
        if v % 11 != 0 {
            return Err(bad(format!(
                "block {} ({v:06}) is not divisible by 11",
                i + 1
            )));
        }
        if v >= 720_896 {
            return Err(bad(format!("block {} ({v:06}) is not below 720896", i + 1)));
        }
        let w = u16::try_from(v / 11).map_err(|_| bad(format!("block {}", i + 1)))?;
        out[i * 2..i * 2 + 2].copy_from_slice(&w.to_le_bytes());
    }
    Ok(out)
}

fn make_cipher(method: EncryptionMethod, key: &[u8], off: u64) -> Result<SectorCipher, BdeError> {
    let short = || {
        corrupt(
            off,
            format!("FVEK of {} bytes is too short for {method}", key.len()),
        )
    };
    let get = |a: usize, n: usize| key.get(a..a + n).ok_or_else(short);
    let aes = |k: &[u8]| Aes::new(k).ok_or_else(short);
    Ok(match method {
        EncryptionMethod::AesCbc128 => SectorCipher::Cbc(aes(get(0, 16)?)?),
        EncryptionMethod::AesCbc256 => SectorCipher::Cbc(aes(get(0, 32)?)?),
        EncryptionMethod::AesCbcElephant128 => SectorCipher::Elephant {
            fvek: aes(get(0, 16)?)?,
            tweak: aes(get(32, 16)?)?,
        },
        EncryptionMethod::AesCbcElephant256 => SectorCipher::Elephant {
            fvek: aes(get(0, 32)?)?,
            tweak: aes(get(32, 32)?)?,
        },
        EncryptionMethod::AesXts128 => {
            SectorCipher::Xts(Xts::new(get(0, 16)?, get(16, 16)?).ok_or_else(short)?)
        }
        EncryptionMethod::AesXts256 => {
            SectorCipher::Xts(Xts::new(get(0, 32)?, get(32, 32)?).ok_or_else(short)?)
        }
        EncryptionMethod::None | EncryptionMethod::Unknown(_) => {
            return Err(BdeError::Unsupported {
                offset: off,
                what: format!("encryption method {method}"),
            })
        }
    })
}

struct Inner {
    src: Source,
    cipher: SectorCipher,
    sector: usize,
    iv_unit: u64,
    len: u64,
    /// Relocated volume header: (physical offset, size).
    header: Option<(u64, u64)>,
    /// Ranges that read as zeros.
    zero: Vec<(u64, u64)>,
    encrypted_size: u64,
}

/// A BitLocker volume opened with a key: the decrypted volume (layer
/// `bitlocker`).
#[derive(Clone)]
pub struct UnlockedBde {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for UnlockedBde {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnlockedBde")
            .field("len", &self.inner.len)
            .finish()
    }
}

#[derive(Clone, Copy)]
enum Seg {
    Zero,
    Plain(u64),
    /// Encrypted at physical offset, IV offset.
    Crypt(u64, u64),
}

impl Inner {
    /// What lies at volume offset `o`, and where the run of that kind ends.
    fn segment(&self, o: u64) -> (Seg, u64) {
        let mut end = self.len;
        if let Some((hoff, hsize)) = self.header {
            if o < hsize {
                let p = hoff.saturating_add(o);
                return (Seg::Crypt(p, p), hsize);
            }
        }
        for &(a, b) in &self.zero {
            if o >= a && o < b {
                return (Seg::Zero, b.min(self.len));
            }
            if a > o {
                end = end.min(a);
            }
        }
        if o >= self.encrypted_size {
            return (Seg::Plain(o), end);
        }
        (Seg::Crypt(o, o), end.min(self.encrypted_size))
    }

    fn read_aligned(&self, off: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let mut done = 0usize;
        while done < buf.len() {
            let o = off + done as u64;
            let (seg, end) = self.segment(o);
            let n = usize::try_from((end - o).min((buf.len() - done) as u64)).unwrap_or(0);
            if n == 0 {
                return Err(IoError::corrupt(LAYER, o, "empty segment"));
            }
            let part = &mut buf[done..done + n];
            match seg {
                Seg::Zero => part.fill(0),
                Seg::Plain(p) => self.src.read_exact_at(p, part)?,
                Seg::Crypt(p, ivo) => {
                    if n % self.sector != 0 {
                        return Err(IoError::corrupt(
                            LAYER,
                            o,
                            "encrypted run is not a whole number of sectors",
                        ));
                    }
                    self.src.read_exact_at(p, part)?;
                    self.decrypt(part, ivo);
                }
            }
            done += n;
        }
        Ok(())
    }

    fn decrypt(&self, data: &mut [u8], ivo: u64) {
        let s = self.sector;
        flr_cipher::par_sectors(data, s, |piece, first| {
            let at = ivo + first * s as u64;
            self.cipher.decrypt(piece, at, s, self.iv_unit)
        });
    }
}

impl ReadAt for UnlockedBde {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let inner = &*self.inner;
        check_range(LAYER, offset, buf.len(), inner.len)?;
        let s = inner.sector as u64;
        let start = offset - offset % s;
        let end = offset + buf.len() as u64;
        let end_al = end.div_ceil(s).saturating_mul(s).min(inner.len);
        if start == offset && end_al == end {
            return inner.read_aligned(offset, buf);
        }
        let mut tmp = vec![
            0u8;
            usize::try_from(end_al - start).map_err(|_| {
                IoError::unsupported(LAYER, offset, "read too large for memory")
            })?
        ];
        inner.read_aligned(start, &mut tmp)?;
        let skip = (offset - start) as usize;
        buf.copy_from_slice(&tmp[skip..skip + buf.len()]);
        Ok(())
    }
    fn len(&self) -> u64 {
        self.inner.len
    }
    fn layer(&self) -> &str {
        LAYER
    }
    fn changed(&self, offset: u64, len: u64) -> flr_io::Change {
        use flr_io::Change;
        let inner = &*self.inner;
        let Some(end) = offset.checked_add(len).filter(|&e| e <= inner.len) else {
            return Change::Unknown;
        };
        // Whole sectors, through the same segments reads take (relocated
        // header sectors, the metadata areas that read as zeros).
        let s = inner.sector as u64;
        let mut at = offset - offset % s;
        let end = end.div_ceil(s).saturating_mul(s).min(inner.len);
        let mut answer = Change::Unchanged;
        while at < end {
            let (seg, seg_end) = inner.segment(at);
            let n = seg_end.min(end).saturating_sub(at);
            if n == 0 {
                return Change::Unknown;
            }
            let part = match seg {
                Seg::Zero => Change::Unchanged,
                Seg::Plain(p) | Seg::Crypt(p, _) => inner.src.changed(p, n),
            };
            answer = answer.and(part);
            if answer == Change::Changed {
                break;
            }
            at += n;
        }
        answer
    }
}
