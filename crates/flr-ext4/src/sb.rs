//! The superblock and the group descriptor table (only what a reader needs:
//! geometry, features, identity, and where each group's inode table is).

use flr_fs::FsError;
use flr_io::ReadAt;

use crate::bytes::{le16, le32};
use crate::corrupt;

pub(crate) const SB_OFFSET: u64 = 1024;
pub(crate) const SB_SIZE: usize = 1024;
/// Most block groups read (their inode table locations are kept, 8 bytes
/// each: 64 MiB). mke2fs makes groups of 8 × block size blocks, so this is
/// 1 PiB with 4 KiB blocks; a superblock claiming more (tiny groups on a
/// huge declared size) is refused rather than allocated for.
const MAX_GROUPS: u64 = 1 << 23;
pub(crate) const MAGIC: u16 = 0xEF53;

// Compatible features.
pub(crate) const COMPAT_HAS_JOURNAL: u32 = 0x4;
pub(crate) const COMPAT_SPARSE_SUPER2: u32 = 0x200;

// Incompatible features.
pub(crate) const INCOMPAT_COMPRESSION: u32 = 0x1;
pub(crate) const INCOMPAT_FILETYPE: u32 = 0x2;
pub(crate) const INCOMPAT_RECOVER: u32 = 0x4;
pub(crate) const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
pub(crate) const INCOMPAT_META_BG: u32 = 0x10;
pub(crate) const INCOMPAT_EXTENTS: u32 = 0x40;
pub(crate) const INCOMPAT_64BIT: u32 = 0x80;
pub(crate) const INCOMPAT_MMP: u32 = 0x100;
pub(crate) const INCOMPAT_FLEX_BG: u32 = 0x200;
pub(crate) const INCOMPAT_EA_INODE: u32 = 0x400;
pub(crate) const INCOMPAT_DIRDATA: u32 = 0x1000;
pub(crate) const INCOMPAT_CSUM_SEED: u32 = 0x2000;
pub(crate) const INCOMPAT_LARGEDIR: u32 = 0x4000;
pub(crate) const INCOMPAT_INLINE_DATA: u32 = 0x8000;
pub(crate) const INCOMPAT_ENCRYPT: u32 = 0x1_0000;
pub(crate) const INCOMPAT_CASEFOLD: u32 = 0x2_0000;

/// Incompatible features this reader understands (it reads through them, or
/// refuses the affected files one by one).
const INCOMPAT_KNOWN: u32 = INCOMPAT_FILETYPE
    | INCOMPAT_RECOVER
    | INCOMPAT_META_BG
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | INCOMPAT_MMP
    | INCOMPAT_FLEX_BG
    | INCOMPAT_EA_INODE
    | INCOMPAT_CSUM_SEED
    | INCOMPAT_LARGEDIR
    | INCOMPAT_INLINE_DATA
    | INCOMPAT_ENCRYPT
    | INCOMPAT_CASEFOLD;

// Read-only compatible features.
pub(crate) const RO_SPARSE_SUPER: u32 = 0x1;
pub(crate) const RO_LARGE_FILE: u32 = 0x2;
pub(crate) const RO_BTREE_DIR: u32 = 0x4;
pub(crate) const RO_HUGE_FILE: u32 = 0x8;

/// The parsed superblock.
#[derive(Debug, Clone)]
pub(crate) struct Superblock {
    pub(crate) inodes_count: u32,
    pub(crate) blocks_count: u64,
    pub(crate) free_blocks: u64,
    pub(crate) first_data_block: u32,
    pub(crate) bs: u64,
    pub(crate) blocks_per_group: u32,
    pub(crate) inodes_per_group: u32,
    pub(crate) inode_size: u32,
    pub(crate) compat: u32,
    pub(crate) incompat: u32,
    pub(crate) ro_compat: u32,
    pub(crate) uuid: [u8; 16],
    pub(crate) label: [u8; 16],
    pub(crate) journal_inum: u32,
    pub(crate) desc_size: u32,
    pub(crate) first_meta_bg: u32,
    pub(crate) backup_bgs: [u32; 2],
    pub(crate) groups: u64,
}

impl Superblock {
    /// Parses and sanity-checks the 1024 superblock bytes.
    pub(crate) fn parse(b: &[u8]) -> Result<Self, FsError> {
        let at = |o: usize| SB_OFFSET + o as u64;
        if b.len() < SB_SIZE {
            return Err(corrupt(SB_OFFSET, "superblock is truncated"));
        }
        if le16(b, 0x38) != MAGIC {
            return Err(corrupt(at(0x38), "bad superblock magic (not ext2/3/4)"));
        }
        let log_bs = le32(b, 0x18);
        if log_bs > 6 {
            return Err(corrupt(
                at(0x18),
                format!("block size 2^(10+{log_bs}) is invalid"),
            ));
        }
        let bs = 1024u64 << log_bs;
        let incompat = le32(b, 0x60);
        let rev = le32(b, 0x4c);
        let is64 = incompat & INCOMPAT_64BIT != 0;
        let blocks_count = u64::from(le32(b, 0x4))
            | if is64 {
                u64::from(le32(b, 0x150)) << 32
            } else {
                0
            };
        let free_blocks = u64::from(le32(b, 0xc))
            | if is64 {
                u64::from(le32(b, 0x158)) << 32
            } else {
                0
            };
        let first_data_block = le32(b, 0x14);
        let blocks_per_group = le32(b, 0x20);
        let inodes_per_group = le32(b, 0x28);
        let inodes_count = le32(b, 0x0);
        let inode_size = if rev == 0 {
            128
        } else {
            u32::from(le16(b, 0x58))
        };
        if blocks_count.checked_mul(bs).is_none() || blocks_count <= u64::from(first_data_block) {
            return Err(corrupt(
                at(0x4),
                format!("block count {blocks_count} is invalid"),
            ));
        }
        if blocks_per_group == 0 {
            return Err(corrupt(at(0x20), "zero blocks per group"));
        }
        if inodes_per_group == 0 || inodes_count == 0 {
            return Err(corrupt(at(0x28), "zero inodes per group"));
        }
        if inode_size < 128 || !inode_size.is_power_of_two() || u64::from(inode_size) > bs {
            return Err(corrupt(
                at(0x58),
                format!("inode size {inode_size} is invalid"),
            ));
        }
        let desc_size = if is64 { u32::from(le16(b, 0xfe)) } else { 32 };
        if desc_size < 32 || !desc_size.is_power_of_two() || u64::from(desc_size) > bs {
            return Err(corrupt(
                at(0xfe),
                format!("group descriptor size {desc_size} is invalid"),
            ));
        }
        let groups =
            (blocks_count - u64::from(first_data_block)).div_ceil(u64::from(blocks_per_group));
        // Every inode number must land in a group.
        if u64::from(inodes_count) > groups.saturating_mul(u64::from(inodes_per_group)) {
            return Err(corrupt(at(0x0), "more inodes than the groups can hold"));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[0x68..0x78]);
        let mut label = [0u8; 16];
        label.copy_from_slice(&b[0x78..0x88]);
        Ok(Superblock {
            inodes_count,
            blocks_count,
            free_blocks,
            first_data_block,
            bs,
            blocks_per_group,
            inodes_per_group,
            inode_size,
            compat: le32(b, 0x5c),
            incompat,
            ro_compat: le32(b, 0x64),
            uuid,
            label,
            journal_inum: le32(b, 0xe0),
            desc_size,
            first_meta_bg: le32(b, 0x104),
            backup_bgs: [le32(b, 0x24c), le32(b, 0x250)],
            groups,
        })
    }

    /// Refuses filesystems whose incompatible features change how
    /// everything must be read.
    pub(crate) fn check_features(&self) -> Result<(), FsError> {
        let unsupported = |reason: String| FsError::Unsupported {
            path: "/".into(),
            reason,
        };
        if self.incompat & INCOMPAT_JOURNAL_DEV != 0 {
            return Err(unsupported(
                "this is an external ext3/4 journal device, not a filesystem".into(),
            ));
        }
        if self.incompat & INCOMPAT_COMPRESSION != 0 {
            return Err(unsupported(
                "ext2 compression (e2compr) is not supported".into(),
            ));
        }
        if self.incompat & INCOMPAT_DIRDATA != 0 {
            return Err(unsupported(
                "Lustre dirdata directory entries are not supported".into(),
            ));
        }
        let unknown = self.incompat & !INCOMPAT_KNOWN;
        if unknown != 0 {
            return Err(unsupported(format!(
                "unknown incompatible ext4 features {unknown:#x}"
            )));
        }
        if self.compat & COMPAT_HAS_JOURNAL != 0
            && self.journal_inum == 0
            && self.incompat & INCOMPAT_RECOVER != 0
        {
            return Err(unsupported(
                "the filesystem needs recovery from an external journal device".into(),
            ));
        }
        Ok(())
    }

    /// `ext2`, `ext3` or `ext4`, decided the way blkid does: anything beyond
    /// the ext3 feature set makes it ext4; a journal makes ext2 ext3.
    pub(crate) fn fs_type(&self) -> &'static str {
        const EXT3_INCOMPAT: u32 = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG;
        const EXT3_RO: u32 = RO_SPARSE_SUPER | RO_LARGE_FILE | RO_BTREE_DIR;
        if self.incompat & !EXT3_INCOMPAT != 0 || self.ro_compat & !EXT3_RO != 0 {
            "ext4"
        } else if self.compat & COMPAT_HAS_JOURNAL != 0 {
            "ext3"
        } else {
            "ext2"
        }
    }

    pub(crate) fn has(&self, incompat: u32) -> bool {
        self.incompat & incompat != 0
    }

    /// Whether group `g` holds a superblock backup (and so, with meta_bg,
    /// whether its descriptor block is shifted by one).
    fn has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if self.compat & COMPAT_SPARSE_SUPER2 != 0 {
            return g == u64::from(self.backup_bgs[0]) || g == u64::from(self.backup_bgs[1]);
        }
        if g <= 1 || self.ro_compat & RO_SPARSE_SUPER == 0 {
            return true;
        }
        if g & 1 == 0 {
            return false;
        }
        [3u64, 5, 7].iter().any(|&base| {
            let mut p = base;
            while p < g {
                p = match p.checked_mul(base) {
                    Some(v) => v,
                    None => return false,
                };
            }
            p == g
        })
    }

    fn group_first_block(&self, g: u64) -> Option<u64> {
        g.checked_mul(u64::from(self.blocks_per_group))?
            .checked_add(u64::from(self.first_data_block))
    }

    /// Reads the group descriptors and returns each group's inode table
    /// block. Group descriptors are read from their home location, not
    /// through the journal: inode table locations never change online.
    pub(crate) fn inode_tables(&self, src: &dyn ReadAt) -> Result<Vec<u64>, FsError> {
        if self.groups > MAX_GROUPS {
            return Err(corrupt(
                SB_OFFSET,
                format!(
                    "{} block groups ({} blocks, {} per group); flr reads at most {MAX_GROUPS}",
                    self.groups, self.blocks_count, self.blocks_per_group
                ),
            ));
        }
        let ds = u64::from(self.desc_size);
        let total = self
            .groups
            .checked_mul(ds)
            .ok_or_else(|| corrupt(SB_OFFSET, "too many groups"))?;
        if total > src.len() {
            return Err(corrupt(
                SB_OFFSET,
                format!(
                    "{} groups need more descriptor bytes than the volume has",
                    self.groups
                ),
            ));
        }
        let dpb = self.bs / ds;
        let meta_start = if self.has(INCOMPAT_META_BG) {
            u64::from(self.first_meta_bg).saturating_mul(dpb)
        } else {
            u64::MAX
        };
        let gdt_block = u64::from(self.first_data_block) + 1;
        let mut tables = Vec::with_capacity(usize::try_from(self.groups).unwrap_or(0));
        // Read descriptor blocks one at a time; consecutive groups share one.
        let mut blockbuf = vec![0u8; usize::try_from(self.bs).unwrap_or(1024)];
        let mut cached: Option<u64> = None;
        for g in 0..self.groups {
            let (block, index) = if g < meta_start {
                (gdt_block + g / dpb, g % dpb)
            } else {
                let first = g - g % dpb;
                let home = self
                    .group_first_block(first)
                    .ok_or_else(|| corrupt(SB_OFFSET, "meta_bg group out of range"))?;
                (home + u64::from(self.has_super(first)), g % dpb)
            };
            if block >= self.blocks_count {
                return Err(corrupt(
                    block.saturating_mul(self.bs),
                    format!("descriptor of group {g} lies past the end"),
                ));
            }
            if cached != Some(block) {
                src.read_exact_at(block * self.bs, &mut blockbuf)?;
                cached = Some(block);
            }
            // index < dpb, so the descriptor lies inside the block.
            let o = usize::try_from(index * ds).unwrap_or(0);
            let d = &blockbuf[o..o + self.desc_size as usize];
            let lo = u64::from(le32(d, 0x8));
            let hi = if self.desc_size >= 64 {
                u64::from(le32(d, 0x28))
            } else {
                0
            };
            tables.push(lo | hi << 32);
        }
        Ok(tables)
    }

    /// The label as text, or `None` when empty.
    pub(crate) fn label_str(&self) -> Option<String> {
        let end = self.label.iter().position(|&c| c == 0).unwrap_or(16);
        let s = String::from_utf8_lossy(&self.label[..end]).into_owned();
        (!s.is_empty()).then_some(s)
    }

    /// The UUID as blkid prints it.
    pub(crate) fn uuid_str(&self) -> String {
        let h: String = self.uuid.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb() -> Superblock {
        Superblock {
            inodes_count: 1,
            blocks_count: 100,
            free_blocks: 0,
            first_data_block: 0,
            bs: 4096,
            blocks_per_group: 8,
            inodes_per_group: 1,
            inode_size: 256,
            compat: 0,
            incompat: 0,
            ro_compat: RO_SPARSE_SUPER,
            uuid: [0; 16],
            label: [0; 16],
            journal_inum: 0,
            desc_size: 32,
            first_meta_bg: 0,
            backup_bgs: [0, 0],
            groups: 13,
        }
    }

    #[test]
    fn sparse_super_groups() {
        let s = sb();
        let with: Vec<u64> = (0..60).filter(|&g| s.has_super(g)).collect();
        assert_eq!(with, vec![0, 1, 3, 5, 7, 9, 25, 27, 49]);
    }

    #[test]
    fn fs_type_follows_features() {
        let mut s = sb();
        s.incompat = INCOMPAT_FILETYPE;
        assert_eq!(s.fs_type(), "ext2");
        s.compat = COMPAT_HAS_JOURNAL;
        assert_eq!(s.fs_type(), "ext3");
        s.incompat |= INCOMPAT_EXTENTS;
        assert_eq!(s.fs_type(), "ext4");
    }

    #[test]
    fn rejects_garbage() {
        assert!(Superblock::parse(&[0u8; 1024]).is_err());
        let mut b = vec![0u8; 1024];
        b[0x38] = 0x53;
        b[0x39] = 0xef;
        b[0x18] = 40; // absurd block size
        assert!(Superblock::parse(&b).is_err());
    }
}
