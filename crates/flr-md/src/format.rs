//! The on-disk md superblocks, parsed into one [`Super`] whatever their
//! version.
//!
//! Sources: the Linux kernel's `include/uapi/linux/raid/md_p.h` and the
//! `md(4)` manual page, read as documentation of the layout; the field
//! names below are that header's.
//!
//! ```text
//! where the superblock lies in a member of S bytes
//!   0.90   at (S rounded down to 64 KiB) - 64 KiB, 4096 bytes, data from byte 0
//!   1.0    at (S - 8 KiB) rounded down to 4 KiB, data before it
//!   1.1    at byte 0
//!   1.2    at byte 4096
//!
//! 1.x (little-endian), 256 bytes then a u16 role per device number:
//!   0 magic a92b4efc   4 major 1   8 feature_map   16 set_uuid[16]   32 set_name[32]
//!  72 level (i32)     76 layout   80 size (sectors used per member)  88 chunk (sectors)
//!  92 raid_disks      96 bitmap offset / PPL     100 new_level  104 reshape_position
//! 128 data_offset    136 data_size  144 super_offset  152 recovery_offset
//! 160 dev_number     168 device_uuid[16]   200 events   208 resync_offset
//! 216 sb_csum        220 max_dev           256 dev_roles[max_dev]
//!
//! 0.90 (the creating host's byte order), 1024 u32 words:
//!   0 magic  1-3 version  5 uuid0  7 level  8 size (KiB)  10 raid_disks  13-15 uuid1..3
//!  33 state (bit 0 clean)  38 sb_csum  39,40 events (a u64 in host order)
//!  64 layout  65 chunk (bytes)  128 + 32·i: disk i (number, major, minor, raid_disk, state)
//! 992 this disk (same five words)
//! ```
//!
//! Checksums: 1.x sums the superblock and its role table as little-endian
//! u32 words (a trailing u16 added as such) with `sb_csum` taken as zero,
//! into 64 bits, then adds the high half to the low half. 0.90 does the
//! same over its 1024 words in the superblock's byte order.

use flr_io::ReadAt;

use crate::{Level, MdError, Metadata, Role, Unsupported};

/// The md superblock magic.
pub(crate) const MAGIC: u32 = 0xa92b_4efc;
const SB1_FIXED: usize = 256;
/// Device numbers a 1.x superblock may list (its role table must fit in
/// the 4 KiB the kernel reads).
pub(crate) const MAX_DEV: u32 = 1920;
/// Members an array may have (the 0.90 format's limit is 27; 1.x arrays
/// are capped at what a role table holds).
pub(crate) const MAX_RAID_DISKS: u32 = MAX_DEV;
/// The largest chunk flr accepts (mdadm refuses anything near it).
pub(crate) const MAX_CHUNK: u64 = 1 << 30;
const SB090_BYTES: usize = 4096;

/// Feature bits of a 1.x superblock that flr acts on. The others: 1 a
/// write-intent bitmap (ignored: it only says what may need a resync), 8
/// a bad-block log, 128 a bitmap-based recovery, 256 a clustered array.
pub(crate) mod feature {
    pub(crate) const RECOVERY_OFFSET: u32 = 2;
    pub(crate) const RESHAPE_ACTIVE: u32 = 4;
    pub(crate) const REPLACEMENT: u32 = 16;
    pub(crate) const RESHAPE_BACKWARDS: u32 = 32;
    pub(crate) const NEW_OFFSET: u32 = 64;
    pub(crate) const JOURNAL: u32 = 512;
    pub(crate) const PPL: u32 = 1024;
    pub(crate) const MULTIPLE_PPLS: u32 = 2048;
    pub(crate) const RAID0_LAYOUT: u32 = 4096;
    /// Every bit the kernel defines.
    pub(crate) const KNOWN: u32 = 8191;
}

/// A superblock, whatever its version, in flr's terms (bytes, not sectors).
#[derive(Debug, Clone)]
pub(crate) struct Super {
    pub(crate) metadata: Metadata,
    /// Byte offset of the superblock in the member.
    pub(crate) offset: u64,
    pub(crate) uuid: [u8; 16],
    pub(crate) name: String,
    pub(crate) level: Level,
    pub(crate) layout: u32,
    pub(crate) chunk: u64,
    pub(crate) raid_disks: u32,
    /// Bytes of each member the array uses (`size`; 0 for linear/RAID0 in 1.x).
    pub(crate) size: u64,
    pub(crate) data_offset: u64,
    /// Bytes of data space in this member.
    pub(crate) data_size: u64,
    pub(crate) events: u64,
    pub(crate) feature_map: u32,
    pub(crate) dev_number: u32,
    /// The role of every device number the superblock lists.
    pub(crate) roles: Vec<Role>,
    pub(crate) device_uuid: Option<[u8; 16]>,
    pub(crate) clean: bool,
    /// Set for a 0.90.91 superblock (a reshape in progress).
    pub(crate) reshape: bool,
    /// 1.x: up to where a recovering member holds valid data.
    pub(crate) recovery_offset: u64,
}

impl Super {
    /// This member's own role.
    pub(crate) fn role(&self) -> Role {
        usize::try_from(self.dev_number)
            .ok()
            .and_then(|i| self.roles.get(i).copied())
            .unwrap_or(Role::Spare)
    }

    /// Why this superblock's array cannot be read, if it says so itself.
    pub(crate) fn unsupported(&self) -> Option<Unsupported> {
        let f = self.feature_map;
        if self.reshape
            || f & (feature::RESHAPE_ACTIVE | feature::RESHAPE_BACKWARDS | feature::NEW_OFFSET) != 0
        {
            return Some(Unsupported::Reshape);
        }
        if f & feature::JOURNAL != 0 {
            return Some(Unsupported::Journal);
        }
        if f & (feature::PPL | feature::MULTIPLE_PPLS) != 0 {
            return Some(Unsupported::Ppl);
        }
        if f & !feature::KNOWN != 0 {
            return Some(Unsupported::Features(f & !feature::KNOWN));
        }
        None
    }
}

fn le16(b: &[u8], o: usize) -> u16 {
    b.get(o..o + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}
fn le32(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from(le32(b, o)) | (u64::from(le32(b, o + 4)) << 32)
}

/// The 1.x checksum of `sb` (superblock plus role table, `sb_csum` as zero).
pub(crate) fn sb1_csum(sb: &[u8]) -> u32 {
    let mut sum: u64 = 0;
    let mut words = sb.chunks_exact(4);
    for (i, w) in words.by_ref().enumerate() {
        if i != 216 / 4 {
            sum += u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
        }
    }
    if let [a, b] = *words.remainder() {
        sum += u64::from(u16::from_le_bytes([a, b]));
    }
    fold(sum)
}

fn fold(sum: u64) -> u32 {
    // The low half plus the high half, as a u32 (the kernel's fold).
    let folded = (sum & 0xffff_ffff) + (sum >> 32);
    (folded & 0xffff_ffff) as u32
}

/// The 0.90 checksum of the 4096 bytes `sb` in byte order `be`.
pub(crate) fn sb090_csum(sb: &[u8], be: bool) -> u32 {
    let mut sum: u64 = 0;
    for (i, w) in sb.chunks_exact(4).enumerate() {
        if i != 38 {
            let a = [w[0], w[1], w[2], w[3]];
            sum += u64::from(if be {
                u32::from_be_bytes(a)
            } else {
                u32::from_le_bytes(a)
            });
        }
    }
    fold(sum)
}

/// Where a 1.0 superblock lies in a member of `len` bytes.
pub(crate) fn sb10_offset(len: u64) -> Option<u64> {
    len.checked_sub(8192).map(|o| o & !4095)
}

/// Where a 0.90 superblock lies in a member of `len` bytes.
pub(crate) fn sb090_offset(len: u64) -> Option<u64> {
    (len & !0xffff).checked_sub(0x10000)
}

/// Whether `b` starts with a 1.x superblock whose checksum is right
/// (the role table must be inside `b`).
pub(crate) fn quick_v1(b: &[u8]) -> bool {
    if le32(b, 0) != MAGIC || le32(b, 4) != 1 {
        return false;
    }
    let max_dev = le32(b, 220);
    if max_dev > MAX_DEV {
        return false;
    }
    let n = SB1_FIXED + 2 * max_dev as usize;
    b.get(..n).is_some_and(|sb| sb1_csum(sb) == le32(b, 216))
}

/// Whether `b` (4096 bytes) is a 0.90 superblock whose checksum is right.
pub(crate) fn quick_v090(b: &[u8]) -> bool {
    if b.len() < SB090_BYTES {
        return false;
    }
    let be = match (le32(b, 0), u32::from_be_bytes([b[0], b[1], b[2], b[3]])) {
        (MAGIC, _) => false,
        (_, MAGIC) => true,
        _ => return false,
    };
    let w = |i: usize| word(b, i, be);
    w(1) == 0 && sb090_csum(&b[..SB090_BYTES], be) == w(38)
}

fn word(b: &[u8], i: usize, be: bool) -> u32 {
    let o = i * 4;
    b.get(o..o + 4).map_or(0, |s| {
        let a = [s[0], s[1], s[2], s[3]];
        if be {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    })
}

/// Signatures of the external-metadata formats mdadm manages with a
/// container (no md superblock: the metadata lies at the end of the disk).
pub(crate) fn external_metadata(src: &dyn ReadAt) -> Option<(&'static str, u64)> {
    let len = src.len();
    // Intel IMSM: "Intel Raid ISM Cfg Sig. " in the second-last sector.
    if let Some(at) = len.checked_sub(1024) {
        let mut b = [0u8; 24];
        if src.read_exact_at(at, &mut b).is_ok() && &b == b"Intel Raid ISM Cfg Sig. " {
            return Some(("Intel IMSM", at));
        }
    }
    // SNIA DDF: the anchor header, magic de11de11 (big-endian), in the last sector.
    if let Some(at) = len.checked_sub(512) {
        let mut b = [0u8; 4];
        if src.read_exact_at(at, &mut b).is_ok() && b == [0xde, 0x11, 0xde, 0x11] {
            return Some(("SNIA DDF", at));
        }
    }
    None
}

fn level_of(v: i32) -> Level {
    match v {
        -1 => Level::Linear,
        0 => Level::Raid0,
        1 => Level::Raid1,
        4 => Level::Raid4,
        5 => Level::Raid5,
        6 => Level::Raid6,
        10 => Level::Raid10,
        other => Level::Other(other),
    }
}

fn corrupt(at: u64, detail: impl Into<String>) -> MdError {
    MdError::Corrupt {
        what: "md superblock",
        offset: at,
        detail: detail.into(),
    }
}

/// Parses the 1.x superblock at `at` (its first bytes are in `b`, at least
/// 256 + 2·max_dev of them).
pub(crate) fn parse_v1(b: &[u8], at: u64, minor: u8, member_len: u64) -> Result<Super, MdError> {
    if le32(b, 0) != MAGIC || le32(b, 4) != 1 {
        return Err(MdError::NotMember);
    }
    let max_dev = le32(b, 220);
    if max_dev > MAX_DEV {
        return Err(corrupt(at, format!("role table of {max_dev} devices")));
    }
    let n = SB1_FIXED + 2 * max_dev as usize;
    let sb = b
        .get(..n)
        .ok_or_else(|| corrupt(at, "role table runs past the superblock area"))?;
    let want = le32(b, 216);
    let got = sb1_csum(sb);
    if got != want {
        return Err(corrupt(
            at,
            format!("checksum mismatch (recorded {want:#010x}, computed {got:#010x})"),
        ));
    }
    let sectors = |v: u64, what: &str| {
        v.checked_mul(512)
            .ok_or_else(|| corrupt(at, format!("{what} of {v} sectors overflows")))
    };
    let super_offset = sectors(le64(b, 144), "super offset")?;
    if super_offset != at {
        return Err(corrupt(
            at,
            format!("the superblock records itself at byte {super_offset:#x}"),
        ));
    }
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&b[16..32]);
    let name_raw = &b[32..64];
    let name_len = name_raw.iter().position(|&c| c == 0).unwrap_or(32);
    let name = String::from_utf8_lossy(&name_raw[..name_len]).into_owned();
    let mut device_uuid = [0u8; 16];
    device_uuid.copy_from_slice(&b[168..184]);
    let roles = (0..max_dev as usize)
        .map(|i| match le16(sb, SB1_FIXED + 2 * i) {
            0xffff => Role::Spare,
            0xfffe => Role::Faulty,
            0xfffd => Role::Journal,
            r => Role::Active(u32::from(r)),
        })
        .collect();
    let level_raw = i32::from_le_bytes(le32(b, 72).to_le_bytes());
    let chunk = sectors(u64::from(le32(b, 88)), "chunk")?;
    let data_offset = sectors(le64(b, 128), "data offset")?;
    let data_size = sectors(le64(b, 136), "data size")?;
    let size = sectors(le64(b, 80), "size")?;
    let raid_disks = le32(b, 92);
    let feature_map = le32(b, 8);
    let s = Super {
        metadata: Metadata::V1 { minor },
        offset: at,
        uuid,
        name,
        level: level_of(level_raw),
        layout: le32(b, 76),
        chunk,
        raid_disks,
        size,
        data_offset,
        data_size,
        events: le64(b, 200),
        feature_map,
        dev_number: le32(b, 160),
        roles,
        device_uuid: Some(device_uuid),
        clean: le64(b, 208) == u64::MAX,
        reshape: false,
        recovery_offset: if feature_map & feature::RECOVERY_OFFSET != 0 {
            sectors(le64(b, 152), "recovery offset")?
        } else {
            u64::MAX
        },
    };
    check_common(&s, at)?;
    // Where the data may lie: after the superblock (1.1, 1.2) or before it (1.0).
    let data_end = data_offset
        .checked_add(data_size)
        .ok_or_else(|| corrupt(at, "data offset + size overflows"))?;
    let fits = if minor == 0 {
        data_end <= at
    } else {
        data_offset >= at + n as u64
    };
    if !fits {
        return Err(corrupt(
            at,
            format!("data area {data_offset:#x}..{data_end:#x} overlaps the superblock"),
        ));
    }
    if data_end > member_len {
        return Err(corrupt(
            at,
            format!("data area ends at byte {data_end:#x}, past the member's {member_len:#x} bytes (truncated?)"),
        ));
    }
    if s.level.uses_size() && s.size > data_size {
        return Err(corrupt(
            at,
            format!(
                "uses {} bytes of each member but its data area holds {data_size}",
                s.size
            ),
        ));
    }
    Ok(s)
}

fn check_common(s: &Super, at: u64) -> Result<(), MdError> {
    if s.raid_disks == 0 || s.raid_disks > MAX_RAID_DISKS {
        return Err(corrupt(at, format!("{} raid disks", s.raid_disks)));
    }
    // RAID4/5/6/10 need a power of two of at least a page (the kernel
    // refuses anything else); RAID0 and linear whole sectors.
    if matches!(
        s.level,
        Level::Raid4 | Level::Raid5 | Level::Raid6 | Level::Raid10
    ) && (!s.chunk.is_power_of_two() || s.chunk < 4096)
    {
        return Err(corrupt(at, format!("chunk size of {} bytes", s.chunk)));
    }
    if s.level.striped() {
        if s.chunk == 0 || s.chunk > MAX_CHUNK || !s.chunk.is_multiple_of(512) {
            return Err(corrupt(at, format!("chunk size of {} bytes", s.chunk)));
        }
    } else if s.chunk > MAX_CHUNK || !s.chunk.is_multiple_of(512) {
        return Err(corrupt(at, format!("chunk size of {} bytes", s.chunk)));
    }
    Ok(())
}

/// Parses the 0.90 superblock (4096 bytes `b`) found at `at`.
pub(crate) fn parse_v090(b: &[u8], at: u64) -> Result<Super, MdError> {
    if b.len() < SB090_BYTES {
        return Err(MdError::NotMember);
    }
    let be = match (le32(b, 0), u32::from_be_bytes([b[0], b[1], b[2], b[3]])) {
        (MAGIC, _) => false,
        (_, MAGIC) => true,
        _ => return Err(MdError::NotMember),
    };
    let w = |i: usize| word(b, i, be);
    if w(1) != 0 || w(2) != 90 {
        return Err(corrupt(at, format!("version {}.{}.{}", w(1), w(2), w(3))));
    }
    let want = w(38);
    let got = sb090_csum(&b[..SB090_BYTES], be);
    if got != want {
        return Err(corrupt(
            at,
            format!("checksum mismatch (recorded {want:#010x}, computed {got:#010x})"),
        ));
    }
    let mut uuid = [0u8; 16];
    for (k, i) in [5usize, 13, 14, 15].into_iter().enumerate() {
        uuid[k * 4..k * 4 + 4].copy_from_slice(&w(i).to_be_bytes());
    }
    // The events counter is a u64 stored in host order over words 39 and 40.
    let events = if be {
        (u64::from(w(39)) << 32) | u64::from(w(40))
    } else {
        (u64::from(w(40)) << 32) | u64::from(w(39))
    };
    let disk_role = |base: usize| -> Role {
        let state = w(base + 4);
        if state & 1 != 0 {
            Role::Faulty
        } else if state & 0b110 == 0b110 {
            Role::Active(w(base + 3))
        } else {
            Role::Spare
        }
    };
    let roles = (0..27).map(|i| disk_role(128 + 32 * i)).collect();
    let level_raw = i32::from_ne_bytes(w(7).to_ne_bytes());
    let level = level_of(level_raw);
    let size = u64::from(w(8)) * 1024;
    let data_size = at;
    let s = Super {
        metadata: Metadata::V090 { big_endian: be },
        offset: at,
        uuid,
        name: String::new(),
        level,
        layout: w(64),
        chunk: u64::from(w(65)),
        raid_disks: w(10),
        size,
        data_offset: 0,
        data_size,
        events,
        feature_map: 0,
        dev_number: w(992),
        roles,
        device_uuid: None,
        clean: w(33) & 1 != 0,
        reshape: w(2) != 90,
        recovery_offset: u64::MAX,
    };
    check_common(&s, at)?;
    if s.level.uses_size() && size > data_size {
        return Err(corrupt(
            at,
            format!(
                "uses {size} bytes of each member but only {data_size} lie before the superblock"
            ),
        ));
    }
    // The member's own descriptor decides its role (its copy in the table
    // should agree; a disagreement is the table's business).
    let mut s = s;
    let own = disk_role(992);
    if let Some(r) = usize::try_from(s.dev_number)
        .ok()
        .and_then(|i| s.roles.get_mut(i))
    {
        *r = own;
    } else {
        return Err(corrupt(at, format!("device number {}", s.dev_number)));
    }
    Ok(s)
}

/// Reads the superblock of `src`, trying 1.2, 1.1, 1.0 and 0.90 in that
/// order. `Err(NotMember)` when none is there.
pub(crate) fn read_super(src: &dyn ReadAt) -> Result<Super, MdError> {
    let len = src.len();
    let mut first_err = None;
    let mut try_v1 = |at: u64, minor: u8| -> Option<Super> {
        let n = 4096u64.min(len.saturating_sub(at));
        if n < SB1_FIXED as u64 {
            return None;
        }
        let mut b = vec![0u8; n as usize];
        if let Err(e) = src.read_exact_at(at, &mut b) {
            first_err.get_or_insert(MdError::Io(e));
            return None;
        }
        if le32(&b, 0) != MAGIC {
            return None;
        }
        match parse_v1(&b, at, minor, len) {
            Ok(s) => Some(s),
            Err(MdError::NotMember) => None,
            Err(e) => {
                first_err.get_or_insert(e);
                None
            }
        }
    };
    if let Some(s) = try_v1(4096, 2) {
        return Ok(s);
    }
    if let Some(s) = try_v1(0, 1) {
        return Ok(s);
    }
    if let Some(s) = sb10_offset(len).and_then(|at| try_v1(at, 0)) {
        return Ok(s);
    }
    if let Some(at) = sb090_offset(len) {
        let mut b = vec![0u8; SB090_BYTES];
        match src.read_exact_at(at, &mut b) {
            Ok(()) => match parse_v090(&b, at) {
                Ok(s) => return Ok(s),
                Err(MdError::NotMember) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            },
            Err(e) => {
                first_err.get_or_insert(MdError::Io(e));
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    if let Some((format, offset)) = external_metadata(src) {
        return Err(MdError::Unsupported {
            offset,
            what: Unsupported::ExternalMetadata(format),
        });
    }
    Err(MdError::NotMember)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        // A 5 MiB member: 0.90 at 5 MiB - 64 KiB, 1.0 at 5 MiB - 8 KiB.
        assert_eq!(sb090_offset(5 << 20), Some((5 << 20) - 0x10000));
        assert_eq!(sb090_offset((5 << 20) + 0x1234), Some((5 << 20) - 0x10000));
        assert_eq!(
            sb10_offset((5 << 20) + 0x1234),
            Some((5 << 20) - 8192 + 0x1000)
        );
        assert_eq!(sb090_offset(0xffff), None);
        assert_eq!(sb10_offset(100), None);
    }

    #[test]
    fn fold_adds_the_carry() {
        assert_eq!(fold(0x1_0000_0001), 2);
        assert_eq!(fold(0xffff_ffff), 0xffff_ffff);
    }
}
