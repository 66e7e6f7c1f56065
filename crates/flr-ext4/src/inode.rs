//! Raw inode parsing.

use flr_fs::{FileKind, Timestamp};

use crate::bytes::{le16, le32};
use crate::sb::{Superblock, INCOMPAT_LARGEDIR, RO_HUGE_FILE};

pub(crate) const FL_ENCRYPT: u32 = 0x800;
pub(crate) const FL_HUGE_FILE: u32 = 0x4_0000;
pub(crate) const FL_EXTENTS: u32 = 0x8_0000;
pub(crate) const FL_EA_INODE: u32 = 0x20_0000;
pub(crate) const FL_INLINE_DATA: u32 = 0x1000_0000;

pub(crate) const ROOT_INO: u32 = 2;

/// The fields of an inode flr uses.
#[derive(Debug, Clone)]
pub(crate) struct Inode {
    pub(crate) ino: u32,
    pub(crate) mode: u16,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) size: u64,
    pub(crate) mtime: Timestamp,
    pub(crate) atime: Timestamp,
    pub(crate) ctime: Timestamp,
    /// Creation time (`i_crtime`), in large inodes only.
    pub(crate) crtime: Option<Timestamp>,
    pub(crate) flags: u32,
    /// `i_block`: block map, extent tree root, or a fast symlink target.
    pub(crate) block: [u8; 60],
    /// Blocks used, in 512-byte units.
    pub(crate) blocks_512: u64,
    pub(crate) file_acl: u64,
}

/// Decodes an ext4 timestamp: a signed 32-bit seconds field, extended by
/// two epoch bits and 30 nanosecond bits in the `_extra` field.
pub(crate) fn decode_time(secs: u32, extra: Option<u32>) -> Timestamp {
    let base = i64::from(secs as i32);
    match extra {
        Some(x) => {
            let epoch = i64::from(x & 3);
            let nanos = x >> 2;
            Timestamp {
                secs: base + (epoch << 32),
                nanos: if nanos < 1_000_000_000 { nanos } else { 0 },
            }
        }
        None => Timestamp {
            secs: base,
            nanos: 0,
        },
    }
}

impl Inode {
    /// Parses an on-disk inode of `sb.inode_size` bytes (at least 128).
    pub(crate) fn parse(ino: u32, raw: &[u8], sb: &Superblock) -> Inode {
        let mode = le16(raw, 0x0);
        let is_reg = mode & 0xf000 == 0x8000;
        let size_lo = u64::from(le32(raw, 0x4));
        let size_hi = u64::from(le32(raw, 0x6c));
        let size = if is_reg || sb.incompat & INCOMPAT_LARGEDIR != 0 {
            size_lo | size_hi << 32
        } else {
            size_lo
        };
        let extra_isize = if raw.len() > 128 {
            usize::from(le16(raw, 0x80))
        } else {
            0
        };
        // The extra fields are valid only as far as i_extra_isize covers them.
        let has_extra = |field_end: usize| 128 + extra_isize >= field_end && raw.len() >= field_end;
        let ctime_extra = has_extra(0x88).then(|| le32(raw, 0x84));
        let mtime_extra = has_extra(0x8c).then(|| le32(raw, 0x88));
        let atime_extra = has_extra(0x90).then(|| le32(raw, 0x8c));
        let crtime = has_extra(0x94)
            .then(|| decode_time(le32(raw, 0x90), has_extra(0x98).then(|| le32(raw, 0x94))));
        let flags = le32(raw, 0x20);
        let mut blocks_512 = u64::from(le32(raw, 0x1c));
        if sb.ro_compat & RO_HUGE_FILE != 0 {
            blocks_512 |= u64::from(le16(raw, 0x74)) << 32;
            if flags & FL_HUGE_FILE != 0 {
                blocks_512 = blocks_512.saturating_mul(sb.bs / 512);
            }
        }
        let mut block = [0u8; 60];
        if let Some(b) = raw.get(0x28..0x64) {
            block.copy_from_slice(b);
        }
        Inode {
            ino,
            mode,
            uid: u32::from(le16(raw, 0x2)) | u32::from(le16(raw, 0x78)) << 16,
            gid: u32::from(le16(raw, 0x18)) | u32::from(le16(raw, 0x7a)) << 16,
            size,
            mtime: decode_time(le32(raw, 0x10), mtime_extra),
            atime: decode_time(le32(raw, 0x8), atime_extra),
            ctime: decode_time(le32(raw, 0xc), ctime_extra),
            crtime,
            flags,
            block,
            blocks_512,
            file_acl: u64::from(le32(raw, 0x68)) | u64::from(le16(raw, 0x76)) << 32,
        }
    }

    pub(crate) fn kind(&self) -> FileKind {
        match self.mode & 0xf000 {
            0x8000 => FileKind::File,
            0x4000 => FileKind::Dir,
            0xa000 => FileKind::Symlink,
            _ => FileKind::Special,
        }
    }

    pub(crate) fn has_flag(&self, fl: u32) -> bool {
        self.flags & fl != 0
    }

    /// Why this inode's contents (data, entries, or target) cannot be
    /// returned correctly, if that is known from the inode alone.
    pub(crate) fn unreadable(&self) -> Option<String> {
        let what = match self.kind() {
            FileKind::Dir => "directory",
            FileKind::Symlink => "symlink",
            FileKind::File => "file",
            FileKind::Special => return None,
        };
        if self.has_flag(FL_ENCRYPT) {
            Some(format!("fscrypt-encrypted {what} (ext4 encryption)"))
        } else if self.has_flag(FL_INLINE_DATA) {
            Some(format!("{what} with ext4 inline data (not supported)"))
        } else {
            None
        }
    }

    /// A fast symlink keeps its target in `i_block`: it owns no data
    /// blocks besides, possibly, one extended-attribute block.
    pub(crate) fn is_fast_symlink(&self, sb: &Superblock) -> bool {
        if self.has_flag(FL_EA_INODE) {
            return self.size > 0 && self.size < 60;
        }
        let ea_blocks = if self.file_acl != 0 { sb.bs / 512 } else { 0 };
        self.blocks_512 == ea_blocks && self.size < 60
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_decode_with_epoch_and_nanos() {
        assert_eq!(
            decode_time(0xffff_ffff, None),
            Timestamp { secs: -1, nanos: 0 }
        );
        assert_eq!(
            decode_time(10, Some(5 << 2)),
            Timestamp { secs: 10, nanos: 5 }
        );
        // Epoch bit 1 moves a negative 32-bit value past 2038.
        let t = decode_time(0x8000_0000, Some(1));
        assert_eq!(t.secs, 0x8000_0000);
    }
}
