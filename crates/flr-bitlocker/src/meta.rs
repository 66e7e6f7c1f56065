//! Volume header and FVE metadata: parsing with bounds checks everywhere.

use std::fmt;

use flr_io::ReadAt;

use crate::{corrupt, crypto, BdeError, FVE_AREA, TOGO_GUID};

/// How the volume's sectors are encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncryptionMethod {
    /// No encryption (method 0).
    None,
    /// AES-CBC-128 with the Elephant diffuser.
    AesCbcElephant128,
    /// AES-CBC-256 with the Elephant diffuser.
    AesCbcElephant256,
    /// AES-CBC-128.
    AesCbc128,
    /// AES-CBC-256.
    AesCbc256,
    /// AES-XTS-128.
    AesXts128,
    /// AES-XTS-256.
    AesXts256,
    /// Any other code.
    Unknown(u16),
}

impl EncryptionMethod {
    fn from_code(c: u16) -> Self {
        match c {
            0 => Self::None,
            0x8000 => Self::AesCbcElephant128,
            0x8001 => Self::AesCbcElephant256,
            0x8002 => Self::AesCbc128,
            0x8003 => Self::AesCbc256,
            0x8004 => Self::AesXts128,
            0x8005 => Self::AesXts256,
            c => Self::Unknown(c),
        }
    }
}

impl fmt::Display for EncryptionMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::AesCbcElephant128 => f.write_str("AES-CBC-128 + Elephant diffuser"),
            Self::AesCbcElephant256 => f.write_str("AES-CBC-256 + Elephant diffuser"),
            Self::AesCbc128 => f.write_str("AES-CBC-128"),
            Self::AesCbc256 => f.write_str("AES-CBC-256"),
            Self::AesXts128 => f.write_str("AES-XTS-128"),
            Self::AesXts256 => f.write_str("AES-XTS-256"),
            Self::Unknown(c) => write!(f, "unknown ({c:#06x})"),
        }
    }
}

/// The kind of a key protector (VMK protection type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtectorKind {
    /// Clear key: protection suspended.
    ClearKey,
    /// TPM only.
    Tpm,
    /// Startup key (`.BEK` file on a USB stick).
    StartupKey,
    /// TPM and startup key.
    TpmStartupKey,
    /// TPM and PIN.
    TpmPin,
    /// TPM, PIN and startup key.
    TpmPinStartupKey,
    /// 48-digit recovery password.
    RecoveryPassword,
    /// Smart card (certificate).
    SmartCard,
    /// User password.
    Password,
    /// Any other code.
    Unknown(u16),
}

impl ProtectorKind {
    fn from_code(c: u16) -> Self {
        match c {
            0x0000 => Self::ClearKey,
            0x0100 => Self::Tpm,
            0x0200 => Self::StartupKey,
            0x0300 => Self::TpmStartupKey,
            0x0500 => Self::TpmPin,
            0x0700 => Self::TpmPinStartupKey,
            0x0800 => Self::RecoveryPassword,
            0x1000 => Self::SmartCard,
            0x2000 => Self::Password,
            c => Self::Unknown(c),
        }
    }

    /// Whether a key given by the user can open this protector without
    /// hardware.
    pub fn offline(self) -> bool {
        matches!(
            self,
            Self::ClearKey | Self::StartupKey | Self::RecoveryPassword | Self::Password
        )
    }
}

impl fmt::Display for ProtectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClearKey => f.write_str("clear key"),
            Self::Tpm => f.write_str("TPM"),
            Self::StartupKey => f.write_str("startup key"),
            Self::TpmStartupKey => f.write_str("TPM+startup key"),
            Self::TpmPin => f.write_str("TPM+PIN"),
            Self::TpmPinStartupKey => f.write_str("TPM+PIN+startup key"),
            Self::RecoveryPassword => f.write_str("recovery password"),
            Self::SmartCard => f.write_str("smart card"),
            Self::Password => f.write_str("password"),
            Self::Unknown(c) => write!(f, "unknown ({c:#06x})"),
        }
    }
}

/// One key protector (VMK entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protector {
    /// What protects the VMK.
    pub kind: ProtectorKind,
    /// The protector's GUID (for a startup key: the key GUID that names the
    /// `.BEK` file).
    pub guid: String,
}

/// What the volume header and FVE metadata say.
#[derive(Debug, Clone)]
pub struct BdeInfo {
    /// BitLocker To Go (FAT discovery volume).
    pub to_go: bool,
    /// The volume GUID from the FVE metadata.
    pub volume_guid: String,
    /// Sector encryption.
    pub encryption_method: EncryptionMethod,
    /// Bytes per sector.
    pub sector_size: u32,
    /// Bytes encrypted from the start of the volume (less than the volume
    /// for a partially encrypted volume).
    pub encrypted_size: u64,
    /// The volume's size in bytes.
    pub volume_size: u64,
    /// Key protectors.
    pub protectors: Vec<Protector>,
    /// Which FVE metadata copy was used (1, 2 or 3).
    pub metadata_copy: usize,
    /// Byte offsets of the three FVE metadata blocks.
    pub metadata_offsets: Vec<u64>,
    /// Where the original boot sectors were relocated: (offset, size).
    pub volume_header: Option<(u64, u64)>,
    /// The volume description.
    pub description: Option<String>,
    /// Damaged metadata copies and other oddities.
    pub warnings: Vec<String>,
}

pub(crate) struct Ccm {
    nonce: [u8; 12],
    mac: [u8; 16],
    ct: Vec<u8>,
}

pub(crate) struct Vmk {
    pub(crate) guid: [u8; 16],
    pub(crate) kind: ProtectorKind,
    pub(crate) salt: Option<[u8; 16]>,
    pub(crate) clear_key: Option<[u8; 32]>,
    enc: Option<Ccm>,
}

pub(crate) struct Metadata {
    pub(crate) blocks: Vec<u64>,
    pub(crate) block_offset: u64,
    pub(crate) vmks: Vec<Vmk>,
    fvek: Option<Ccm>,
    pub(crate) header_reloc: Option<(u64, u64)>,
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}
fn arr<const N: usize>(b: &[u8], o: usize) -> Option<[u8; N]> {
    b.get(o..o.checked_add(N)?)?.try_into().ok()
}

/// A GUID in its usual text form.
pub(crate) fn guid_string(g: &[u8; 16]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{}",
        u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
        u16::from_le_bytes([g[4], g[5]]),
        u16::from_le_bytes([g[6], g[7]]),
        g[8],
        g[9],
        g[10..16]
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<String>()
    )
}

/// One metadata entry: (entry type, value type, value bytes, offset of the
/// entry in the volume).
struct Entry<'a> {
    etype: u16,
    vtype: u16,
    value: &'a [u8],
    off: u64,
}

fn entries(data: &[u8], base: u64) -> Result<Vec<Entry<'_>>, BdeError> {
    let mut out = Vec::new();
    let mut p = 0usize;
    while p + 8 <= data.len() {
        let size = usize::from(u16_at(data, p).unwrap_or(0));
        let off = base.saturating_add(p as u64);
        if size == 0 {
            break;
        }
        if size < 8 || p + size > data.len() {
            return Err(corrupt(
                off,
                format!("metadata entry of {size} bytes does not fit"),
            ));
        }
        out.push(Entry {
            etype: u16_at(data, p + 2).unwrap_or(0),
            vtype: u16_at(data, p + 4).unwrap_or(0),
            value: &data[p + 8..p + size],
            off,
        });
        p += size;
    }
    Ok(out)
}

fn parse_ccm(e: &Entry<'_>) -> Result<Ccm, BdeError> {
    let v = e.value;
    let (Some(nonce), Some(mac)) = (arr::<12>(v, 0), arr::<16>(v, 12)) else {
        return Err(corrupt(e.off, "AES-CCM encrypted key too short"));
    };
    Ok(Ccm {
        nonce,
        mac,
        ct: v[28..].to_vec(),
    })
}

fn parse_vmk(e: &Entry<'_>) -> Result<Vmk, BdeError> {
    let v = e.value;
    let (Some(guid), Some(code)) = (arr::<16>(v, 0), u16_at(v, 26)) else {
        return Err(corrupt(e.off, "VMK entry too short"));
    };
    let mut vmk = Vmk {
        guid,
        kind: ProtectorKind::from_code(code),
        salt: None,
        clear_key: None,
        enc: None,
    };
    for s in entries(&v[28..], e.off + 8 + 28)? {
        match s.vtype {
            1 => vmk.clear_key = arr::<32>(s.value, 4),
            3 => vmk.salt = arr::<16>(s.value, 4),
            5 if vmk.enc.is_none() => vmk.enc = Some(parse_ccm(&s)?),
            _ => {}
        }
    }
    Ok(vmk)
}

struct Block {
    encrypted_size: u64,
    header_sectors: u32,
    header_offset: u64,
    guid: [u8; 16],
    method: u16,
    meta: Vec<u8>,
}

fn read_block(src: &dyn ReadAt, off: u64) -> Result<Block, BdeError> {
    let mut h = [0u8; 112];
    src.read_exact_at(off, &mut h)?;
    if &h[0..8] != b"-FVE-FS-" {
        return Err(corrupt(off, "no -FVE-FS- signature"));
    }
    let version = u16_at(&h, 10).unwrap_or(0);
    if version == 1 {
        return Err(BdeError::Unsupported {
            offset: off,
            what: "Windows Vista BitLocker (metadata version 1)".into(),
        });
    }
    if version != 2 {
        return Err(corrupt(off + 10, format!("metadata version {version}")));
    }
    let size = u32_at(&h, 64).unwrap_or(0);
    let hsize = u32_at(&h, 72).unwrap_or(0);
    if u32_at(&h, 68) != Some(1) || hsize != 48 || u64::from(size) > FVE_AREA - 64 || size < 48 {
        return Err(corrupt(
            off + 64,
            format!("metadata header: size {size}, header size {hsize}"),
        ));
    }
    if u32_at(&h, 76) != Some(size) {
        return Err(corrupt(off + 76, "metadata size copies differ"));
    }
    let mut meta = vec![0u8; size as usize];
    src.read_exact_at(off + 64, &mut meta)?;
    Ok(Block {
        encrypted_size: u64_at(&h, 16).unwrap_or(0),
        header_sectors: u32_at(&h, 28).unwrap_or(0),
        header_offset: u64_at(&h, 56).unwrap_or(0),
        guid: arr::<16>(&h, 80).unwrap_or_default(),
        method: u16_at(&h, 100).unwrap_or(0),
        meta,
    })
}

pub(crate) fn read(src: &dyn ReadAt) -> Result<(BdeInfo, Metadata), BdeError> {
    let mut b = [0u8; 512];
    src.read_exact_at(0, &mut b)?;
    let (to_go, at) = if &b[3..11] == b"-FVE-FS-" {
        (false, 176)
    } else if b[424..440] == TOGO_GUID {
        (true, 440)
    } else {
        return Err(BdeError::NotBitLocker {
            offset: 3,
            what: "no -FVE-FS- signature and no BitLocker To Go GUID".into(),
        });
    };
    let sector_size = u32::from(u16_at(&b, 11).unwrap_or(0));
    if !matches!(sector_size, 512 | 1024 | 2048 | 4096) {
        return Err(corrupt(11, format!("bytes per sector {sector_size}")));
    }
    let offs: Vec<u64> = (0..3)
        .map(|i| u64_at(&b, at + 8 * i).unwrap_or(0))
        .collect();
    let mut warnings = Vec::new();
    let mut chosen = None;
    let mut first_err = None;
    for (i, &o) in offs.iter().enumerate() {
        if o == 0 || o % u64::from(sector_size) != 0 {
            warnings.push(format!(
                "FVE metadata block {} offset {o:#x} is not valid",
                i + 1
            ));
            continue;
        }
        match read_block(src, o).and_then(|blk| parse_block(blk, o)) {
            Ok(m) => {
                chosen = Some((i, o, m));
                break;
            }
            Err(e) => {
                warnings.push(format!("FVE metadata block {} unusable: {e}", i + 1));
                first_err.get_or_insert(e);
            }
        }
    }
    let Some((idx, off, (blk, parsed))) = chosen else {
        return Err(first_err.unwrap_or_else(|| corrupt(at as u64, "no valid FVE metadata block")));
    };
    let Parsed {
        vmks,
        fvek,
        header_entry,
        description,
    } = parsed;
    let header_reloc = match header_entry {
        Some(h) => Some(h),
        None if blk.header_sectors > 0 && !to_go => Some((
            blk.header_offset,
            u64::from(blk.header_sectors).saturating_mul(u64::from(sector_size)),
        )),
        None => None,
    };
    if let Some((ho, hs)) = header_reloc {
        if ho.checked_add(hs).is_none_or(|e| e > src.len())
            || hs > 64 * 1024 * 1024
            || hs % u64::from(sector_size) != 0
        {
            return Err(corrupt(
                off,
                format!("relocated volume header {ho:#x}+{hs:#x} is outside the volume"),
            ));
        }
    }
    let volume_size = src.len();
    let mut encrypted_size = blk.encrypted_size;
    if encrypted_size > volume_size {
        warnings.push(format!(
            "encrypted size {encrypted_size:#x} is past the end of the volume ({volume_size:#x})"
        ));
        encrypted_size = volume_size;
    }
    if fvek.is_none() {
        return Err(corrupt(off, "no FVEK entry in the FVE metadata"));
    }
    let info = BdeInfo {
        to_go,
        volume_guid: guid_string(&blk.guid),
        encryption_method: EncryptionMethod::from_code(blk.method),
        sector_size,
        encrypted_size,
        volume_size,
        protectors: vmks
            .iter()
            .map(|v| Protector {
                kind: v.kind,
                guid: guid_string(&v.guid),
            })
            .collect(),
        metadata_copy: idx + 1,
        metadata_offsets: offs.clone(),
        volume_header: header_reloc,
        description,
        warnings,
    };
    let meta = Metadata {
        blocks: offs.into_iter().filter(|&o| o != 0).collect(),
        block_offset: off,
        vmks,
        fvek,
        header_reloc,
    };
    Ok((info, meta))
}

struct Parsed {
    vmks: Vec<Vmk>,
    fvek: Option<Ccm>,
    header_entry: Option<(u64, u64)>,
    description: Option<String>,
}

fn parse_block(blk: Block, off: u64) -> Result<(Block, Parsed), BdeError> {
    let mut p = Parsed {
        vmks: Vec::new(),
        fvek: None,
        header_entry: None,
        description: None,
    };
    let base = off + 64 + 48;
    for e in entries(&blk.meta[48..], base)? {
        match (e.etype, e.vtype) {
            (2, 8) => p.vmks.push(parse_vmk(&e)?),
            (3, 5) if p.fvek.is_none() => p.fvek = Some(parse_ccm(&e)?),
            (0xf, 0xf) => {
                if let (Some(o), Some(s)) = (u64_at(e.value, 0), u64_at(e.value, 8)) {
                    p.header_entry = Some((o, s));
                }
            }
            (7, 2) => {
                let u: Vec<u16> = e
                    .value
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .take_while(|&c| c != 0)
                    .collect();
                p.description = Some(String::from_utf16_lossy(&u));
            }
            _ => {}
        }
    }
    Ok((blk, p))
}

/// Decrypts an AES-CCM key entry and returns the key bytes of the key entry
/// inside.
fn unwrap_key(c: &Ccm, key: &[u8]) -> Option<Vec<u8>> {
    let pt = crypto::ccm_decrypt(key, &c.nonce, &c.mac, &c.ct)?;
    let size = usize::from(u16_at(&pt, 0)?);
    if size != pt.len() || size < 12 || u16_at(&pt, 4)? != 1 {
        return None;
    }
    Some(pt[12..].to_vec())
}

/// The VMK, when `key` opens this protector.
pub(crate) fn open_vmk(v: &Vmk, key: &[u8; 32]) -> Option<[u8; 32]> {
    let k = unwrap_key(v.enc.as_ref()?, key)?;
    arr::<32>(&k, 0)
}

pub(crate) fn decrypt_fvek(m: &Metadata, vmk: &[u8; 32]) -> Result<Vec<u8>, BdeError> {
    let c = m
        .fvek
        .as_ref()
        .ok_or_else(|| corrupt(m.block_offset, "no FVEK entry"))?;
    unwrap_key(c, vmk).ok_or_else(|| {
        corrupt(
            m.block_offset,
            "the FVEK does not decrypt with the VMK (AES-CCM authentication failed)",
        )
    })
}

/// Parses a `.BEK` startup key file: (key GUID, 32-byte key).
pub(crate) fn parse_bek(file: &[u8]) -> Result<([u8; 16], [u8; 32]), BdeError> {
    let bad = |what: &str| BdeError::InvalidKey {
        kind: "startup key (.BEK)".into(),
        what: what.into(),
    };
    let size = u32_at(file, 0).ok_or_else(|| bad("shorter than its 48-byte header"))? as usize;
    let hsize = u32_at(file, 8).unwrap_or(0) as usize;
    if hsize < 48 || size < hsize || size > file.len() {
        return Err(bad("header sizes do not fit the file"));
    }
    for e in entries(&file[hsize..size], hsize as u64).map_err(|_| bad("corrupt entry"))? {
        if e.vtype != 9 {
            continue;
        }
        let Some(guid) = arr::<16>(e.value, 0) else {
            return Err(bad("external key entry too short"));
        };
        let subs = e
            .value
            .get(24..)
            .ok_or_else(|| bad("external key entry too short"))?;
        for s in entries(subs, 0).map_err(|_| bad("corrupt key entry"))? {
            if s.vtype == 1 {
                if let Some(k) = arr::<32>(s.value, 4) {
                    return Ok((guid, k));
                }
            }
        }
        return Err(bad("external key entry holds no 256-bit key"));
    }
    Err(bad("no external key entry"))
}
