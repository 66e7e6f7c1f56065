//! XFS inodes (dinode v1/v2 with the 100-byte core, v3 with the 176-byte
//! core and a CRC) and their data fork.
//!
//! Source: XFS Algorithms & Data Structures, "On-disk Inode".

use flr_fs::{FileKind, FsError, Timestamp};

use crate::bytes::{be16, be32, be64, crc_ok};
use crate::corrupt;
use crate::sb::Superblock;

const MAGIC: u16 = 0x494e; // "IN"

pub(crate) const FMT_LOCAL: u8 = 1;
pub(crate) const FMT_EXTENTS: u8 = 2;
pub(crate) const FMT_BTREE: u8 = 3;

const DIFLAG_REALTIME: u16 = 0x1;
const DIFLAG2_BIGTIME: u64 = 1 << 3;
const DIFLAG2_NREXT64: u64 = 1 << 4;

/// Seconds from the bigtime epoch (1901-12-13T20:45:52Z) to the Unix epoch.
const BIGTIME_EPOCH_OFFSET: i64 = 1 << 31;

/// One inode, parsed.
#[derive(Debug, Clone)]
pub(crate) struct Inode {
    pub(crate) ino: u64,
    /// Byte offset of the inode in the volume (for error messages).
    pub(crate) at: u64,
    pub(crate) mode: u16,
    pub(crate) format: u8,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mtime: Timestamp,
    pub(crate) atime: Timestamp,
    pub(crate) ctime: Timestamp,
    /// Creation time (`di_crtime`), v3 inodes only.
    pub(crate) crtime: Option<Timestamp>,
    pub(crate) size: u64,
    pub(crate) nextents: u64,
    pub(crate) realtime: bool,
    /// The data fork's bytes (the literal area up to the attribute fork).
    pub(crate) fork: Vec<u8>,
    /// The attribute fork's format (`di_aformat`).
    pub(crate) aformat: u8,
    /// Extents of the attribute fork.
    pub(crate) anextents: u64,
    /// The attribute fork's bytes (empty without one).
    pub(crate) afork: Vec<u8>,
}

impl Inode {
    pub(crate) fn parse(ino: u64, at: u64, b: &[u8], sb: &Superblock) -> Result<Inode, FsError> {
        if be16(b, 0) != MAGIC {
            return Err(corrupt(at, format!("inode {ino}: bad magic")));
        }
        let version = b.get(4).copied().unwrap_or(0);
        let core = match version {
            1 | 2 => 100,
            3 => 176,
            v => return Err(corrupt(at, format!("inode {ino}: unknown version {v}"))),
        };
        if version == 3 {
            if !sb.is_v5() {
                return Err(corrupt(
                    at,
                    format!("inode {ino}: v3 inode on a v4 filesystem"),
                ));
            }
            if !crc_ok(b, 100) {
                return Err(corrupt(at, format!("inode {ino}: CRC mismatch")));
            }
            if be64(b, 152) != ino {
                return Err(corrupt(
                    at,
                    format!("inode {ino}: the inode records number {}", be64(b, 152)),
                ));
            }
        }
        let flags2 = if version == 3 { be64(b, 120) } else { 0 };
        let ts = |o: usize| {
            if flags2 & DIFLAG2_BIGTIME != 0 {
                let t = be64(b, o);
                let secs = i64::try_from(t / 1_000_000_000).unwrap_or(i64::MAX);
                Timestamp {
                    secs: secs - BIGTIME_EPOCH_OFFSET,
                    nanos: u32::try_from(t % 1_000_000_000).unwrap_or(0),
                }
            } else {
                Timestamp {
                    secs: i64::from(be32(b, o) as i32),
                    nanos: be32(b, o + 4).min(999_999_999),
                }
            }
        };
        let nextents = if flags2 & DIFLAG2_NREXT64 != 0 {
            be64(b, 24)
        } else {
            u64::from(be32(b, 76))
        };
        let anextents = if flags2 & DIFLAG2_NREXT64 != 0 {
            u64::from(be32(b, 76))
        } else {
            u64::from(be16(b, 80))
        };
        let forkoff = usize::from(b.get(82).copied().unwrap_or(0)) * 8;
        let literal = b.len().saturating_sub(core);
        let fork_len = if forkoff == 0 { literal } else { forkoff };
        if fork_len > literal {
            return Err(corrupt(
                at,
                format!("inode {ino}: attribute fork offset {forkoff} past the inode"),
            ));
        }
        let size = be64(b, 56);
        if size > i64::MAX as u64 {
            return Err(corrupt(at, format!("inode {ino}: size {size} is negative")));
        }
        Ok(Inode {
            ino,
            at,
            mode: be16(b, 2),
            format: b[5],
            uid: be32(b, 8),
            gid: be32(b, 12),
            mtime: ts(40),
            atime: ts(32),
            ctime: ts(48),
            crtime: (version == 3).then(|| ts(144)),
            size,
            nextents,
            realtime: be16(b, 90) & DIFLAG_REALTIME != 0,
            fork: b[core..core + fork_len].to_vec(),
            aformat: b.get(83).copied().unwrap_or(0),
            anextents,
            afork: if forkoff == 0 {
                Vec::new()
            } else {
                b[core + forkoff..].to_vec()
            },
        })
    }

    pub(crate) fn kind(&self) -> FileKind {
        match self.mode & 0o170000 {
            0o100000 => FileKind::File,
            0o040000 => FileKind::Dir,
            0o120000 => FileKind::Symlink,
            _ => FileKind::Special,
        }
    }

    /// Why this inode's data cannot be returned, if so.
    pub(crate) fn unreadable(&self) -> Option<String> {
        if self.realtime && self.kind() == FileKind::File {
            return Some("the file's data is on the XFS real-time device (not supported)".into());
        }
        let fmt_ok = match self.kind() {
            FileKind::File => matches!(self.format, FMT_EXTENTS | FMT_BTREE),
            FileKind::Dir | FileKind::Symlink => {
                matches!(self.format, FMT_LOCAL | FMT_EXTENTS | FMT_BTREE)
            }
            FileKind::Special => true,
        };
        (!fmt_ok).then(|| format!("unknown data fork format {}", self.format))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bigtime_epoch() {
        // A bigtime value of 2^31 s is the Unix epoch.
        let secs: u64 = 1 << 31;
        assert_eq!(i64::try_from(secs).unwrap() - BIGTIME_EPOCH_OFFSET, 0);
    }
}
