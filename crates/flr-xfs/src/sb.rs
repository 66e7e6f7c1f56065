//! The XFS superblock (sector 0 of allocation group 0) and the geometry
//! derived from it.
//!
//! Source: the XFS Algorithms & Data Structures document ("On-disk
//! Structures: Superblocks"), fields at fixed big-endian offsets.

use flr_fs::FsError;

use crate::bytes::{be16, be32, be64, crc_ok};
use crate::corrupt;

pub(crate) const MAGIC: u32 = 0x5846_5342; // "XFSB"

const VERSION_MOREBITS: u16 = 0x8000;
const VERSION2_FTYPE: u32 = 0x0200;
const VERSION_LOGV2: u16 = 0x0400;

pub(crate) const INCOMPAT_FTYPE: u32 = 0x1;
const INCOMPAT_SPINODES: u32 = 0x2;
const INCOMPAT_META_UUID: u32 = 0x4;
pub(crate) const INCOMPAT_BIGTIME: u32 = 0x8;
const INCOMPAT_NEEDSREPAIR: u32 = 0x10;
const INCOMPAT_NREXT64: u32 = 0x20;
const INCOMPAT_KNOWN: u32 = INCOMPAT_FTYPE
    | INCOMPAT_SPINODES
    | INCOMPAT_META_UUID
    | INCOMPAT_BIGTIME
    | INCOMPAT_NEEDSREPAIR
    | INCOMPAT_NREXT64;

/// The superblock fields flr uses.
#[derive(Debug, Clone)]
pub(crate) struct Superblock {
    pub(crate) bs: u64,
    pub(crate) dblocks: u64,
    pub(crate) rblocks: u64,
    pub(crate) uuid: [u8; 16],
    pub(crate) logstart: u64,
    pub(crate) rootino: u64,
    pub(crate) agblocks: u32,
    pub(crate) agcount: u32,
    pub(crate) version: u16,
    pub(crate) sectsize: u32,
    pub(crate) inodesize: u32,
    pub(crate) label: [u8; 12],
    pub(crate) blocklog: u8,
    pub(crate) inopblog: u8,
    pub(crate) agblklog: u8,
    pub(crate) fdblocks: u64,
    pub(crate) dirblklog: u8,
    pub(crate) features2: u32,
    pub(crate) incompat: u32,
    pub(crate) crc_ok: bool,
    /// Log size in filesystem blocks (internal log).
    pub(crate) logblocks: u32,
    /// Inode chunk alignment in blocks.
    pub(crate) inoalignmt: u32,
    /// Log features that must be understood to replay the log.
    pub(crate) log_incompat: u32,
    /// The UUID stamped in v5 metadata (`sb_meta_uuid` with the
    /// `meta_uuid` feature, else `sb_uuid`).
    pub(crate) meta_uuid: [u8; 16],
}

impl Superblock {
    /// Parses and checks the superblock sector.
    pub(crate) fn parse(b: &[u8]) -> Result<Superblock, FsError> {
        if b.len() < 512 || be32(b, 0) != MAGIC {
            return Err(corrupt(0, "no XFS superblock magic (XFSB) at byte 0"));
        }
        let mut label = [0u8; 12];
        label.copy_from_slice(&b[108..120]);
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[32..48]);
        let blocksize = be32(b, 4);
        let sb = Superblock {
            bs: u64::from(blocksize),
            dblocks: be64(b, 8),
            rblocks: be64(b, 16),
            uuid,
            logstart: be64(b, 48),
            rootino: be64(b, 56),
            agblocks: be32(b, 84),
            agcount: be32(b, 88),
            version: be16(b, 100),
            sectsize: u32::from(be16(b, 102)),
            inodesize: u32::from(be16(b, 104)),
            label,
            blocklog: b[120],
            inopblog: b[123],
            agblklog: b[124],
            fdblocks: be64(b, 144),
            dirblklog: b[192],
            features2: be32(b, 200),
            incompat: be32(b, 216),
            crc_ok: true,
            logblocks: be32(b, 96),
            inoalignmt: be32(b, 180),
            log_incompat: be32(b, 220),
            meta_uuid: uuid,
        };
        let mut sb = sb;
        if sb.is_v5() && sb.incompat & INCOMPAT_META_UUID != 0 {
            sb.meta_uuid.copy_from_slice(&b[248..264]);
        }
        let v = sb.version & 0xf;
        if v != 4 && v != 5 {
            return Err(corrupt(
                100,
                format!("superblock version {v} (flr reads XFS v4 and v5)"),
            ));
        }
        let pow2 = |x: u64| x.is_power_of_two();
        let checks: [(bool, &str); 9] = [
            (
                pow2(sb.bs)
                    && (512..=65536).contains(&sb.bs)
                    && 1u64.checked_shl(u32::from(sb.blocklog)) == Some(sb.bs),
                "block size",
            ),
            (
                pow2(u64::from(sb.sectsize)) && (512..=32768).contains(&sb.sectsize),
                "sector size",
            ),
            (
                pow2(u64::from(sb.inodesize))
                    && (256..=2048).contains(&sb.inodesize)
                    && u64::from(sb.inodesize) <= sb.bs,
                "inode size",
            ),
            (
                u64::from(sb.inodesize).checked_shl(u32::from(sb.inopblog)) == Some(sb.bs),
                "inodes per block",
            ),
            (sb.agblocks >= 1 && sb.agcount >= 1, "AG geometry"),
            (
                sb.agblklog < 32 && u64::from(sb.agblocks) <= 1u64 << sb.agblklog,
                "AG size log",
            ),
            (
                u64::from(sb.agcount)
                    .checked_mul(u64::from(sb.agblocks))
                    .is_some_and(|t| t >= sb.dblocks),
                "AG count times AG size is smaller than the filesystem",
            ),
            (
                sb.dblocks.checked_mul(sb.bs).is_some() && sb.dblocks > 0,
                "block count",
            ),
            (
                sb.dirblklog <= 8 && sb.bs << sb.dirblklog <= 65536,
                "directory block size",
            ),
        ];
        for (ok, what) in checks {
            if !ok {
                return Err(corrupt(0, format!("superblock: bad {what}")));
            }
        }
        if sb.is_v5() {
            // The CRC covers the whole superblock sector: with sectors larger
            // than the 512 bytes first read, the caller reads again and the
            // check happens then.
            let sect = usize::try_from(sb.sectsize).unwrap_or(512);
            sb.crc_ok = b.len() < sect || crc_ok(&b[..sect], 224);
            if !sb.crc_ok {
                return Err(corrupt(0, "superblock CRC mismatch"));
            }
            if sb.incompat & !INCOMPAT_KNOWN != 0 {
                return Err(FsError::Corrupt {
                    fs: "xfs",
                    offset: Some(216),
                    what: format!(
                        "unsupported incompatible features {:#x}",
                        sb.incompat & !INCOMPAT_KNOWN
                    ),
                });
            }
        }
        Ok(sb)
    }

    pub(crate) fn is_v5(&self) -> bool {
        self.version & 0xf == 5
    }

    /// Whether directory entries carry a file type byte.
    pub(crate) fn has_ftype(&self) -> bool {
        if self.is_v5() {
            self.incompat & INCOMPAT_FTYPE != 0
        } else {
            self.version & VERSION_MOREBITS != 0 && self.features2 & VERSION2_FTYPE != 0
        }
    }

    /// Whether the log is a version 2 log (always on v5).
    pub(crate) fn has_logv2(&self) -> bool {
        self.is_v5() || self.version & VERSION_LOGV2 != 0
    }

    pub(crate) fn dir_block_size(&self) -> u64 {
        self.bs << self.dirblklog
    }

    /// Byte offset of filesystem block `fsb` (AG number in the high bits).
    pub(crate) fn fsb_to_byte(&self, fsb: u64) -> Option<u64> {
        let agno = fsb >> self.agblklog;
        let agbno = fsb & ((1u64 << self.agblklog) - 1);
        if agno >= u64::from(self.agcount) || agbno >= u64::from(self.agblocks) {
            return None;
        }
        let blk = agno * u64::from(self.agblocks) + agbno;
        (blk < self.dblocks).then(|| blk * self.bs)
    }

    /// Byte offset of inode `ino`.
    pub(crate) fn ino_to_byte(&self, ino: u64) -> Option<u64> {
        let shift = u32::from(self.agblklog) + u32::from(self.inopblog);
        let agno = ino.checked_shr(shift).unwrap_or(0);
        let agbno = (ino >> self.inopblog) & ((1u64 << self.agblklog) - 1);
        let idx = ino & ((1u64 << self.inopblog) - 1);
        if agno >= u64::from(self.agcount) || agbno >= u64::from(self.agblocks) {
            return None;
        }
        let blk = agno * u64::from(self.agblocks) + agbno;
        (blk < self.dblocks).then(|| blk * self.bs + idx * u64::from(self.inodesize))
    }

    pub(crate) fn uuid_str(&self) -> String {
        let u = &self.uuid;
        let h =
            |r: std::ops::Range<usize>| u[r].iter().map(|b| format!("{b:02x}")).collect::<String>();
        format!(
            "{}-{}-{}-{}-{}",
            h(0..4),
            h(4..6),
            h(6..8),
            h(8..10),
            h(10..16)
        )
    }

    pub(crate) fn label_str(&self) -> Option<String> {
        let end = self.label.iter().position(|&c| c == 0).unwrap_or(12);
        (end > 0).then(|| String::from_utf8_lossy(&self.label[..end]).into_owned())
    }
}
