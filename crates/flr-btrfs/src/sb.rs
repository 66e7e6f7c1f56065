//! The superblock: the fixed 4 KiB record at 64 KiB into every device (with
//! mirror copies at 64 MiB and 256 GiB where the device is that large)
//! that names the filesystem, the device, the tree roots, and carries the
//! system chunk array that maps the chunk tree itself.
//!
//! Source: the Btrfs on-disk format documentation (btrfs.readthedocs.io,
//! "On-disk format", `struct btrfs_super_block`, `struct btrfs_dev_item`).
//!
//! ```text
//!   0x000 csum[32]   0x020 fsid[16]   0x030 bytenr   0x038 flags
//!   0x040 magic "_BHRfS_M"            0x048 generation
//!   0x050 root       0x058 chunk_root 0x060 log_root 0x070 total_bytes
//!   0x078 bytes_used 0x080 root_dir_objectid         0x088 num_devices
//!   0x090 sectorsize 0x094 nodesize   0x09c stripesize
//!   0x0a0 sys_chunk_array_size        0x0a4 chunk_root_generation
//!   0x0ac compat     0x0b4 compat_ro  0x0bc incompat  0x0c4 csum_type u16
//!   0x0c6 root_level 0x0c7 chunk_root_level           0x0c8 log_root_level
//!   0x0c9 dev_item[98]                0x12b label[256]
//!   0x23b metadata_uuid[16]           0x32b sys_chunk_array[2048]
//! ```

use flr_fs::FsError;
use flr_io::ReadAt;

use crate::bytes::{field, le16, le32, le64, u8_at, uuid_str};
use crate::csum::CsumType;

/// Where the primary superblock lies on each device.
pub(crate) const PRIMARY: u64 = 0x1_0000;
/// The superblock copies, primary first.
pub(crate) const COPIES: [u64; 3] = [PRIMARY, 0x400_0000, 0x40_0000_0000];
/// The superblock's size on disk.
pub(crate) const SB_SIZE: usize = 4096;
const MAGIC: &[u8; 8] = b"_BHRfS_M";

// Incompatible features (`incompat_flags`).
pub(crate) const INCOMPAT_MIXED_BACKREF: u64 = 1 << 0;
pub(crate) const INCOMPAT_DEFAULT_SUBVOL: u64 = 1 << 1;
pub(crate) const INCOMPAT_MIXED_GROUPS: u64 = 1 << 2;
pub(crate) const INCOMPAT_COMPRESS_LZO: u64 = 1 << 3;
pub(crate) const INCOMPAT_COMPRESS_ZSTD: u64 = 1 << 4;
pub(crate) const INCOMPAT_BIG_METADATA: u64 = 1 << 5;
pub(crate) const INCOMPAT_EXTENDED_IREF: u64 = 1 << 6;
pub(crate) const INCOMPAT_RAID56: u64 = 1 << 7;
pub(crate) const INCOMPAT_SKINNY_METADATA: u64 = 1 << 8;
pub(crate) const INCOMPAT_NO_HOLES: u64 = 1 << 9;
pub(crate) const INCOMPAT_METADATA_UUID: u64 = 1 << 10;
pub(crate) const INCOMPAT_RAID1C34: u64 = 1 << 11;
pub(crate) const INCOMPAT_ZONED: u64 = 1 << 12;
pub(crate) const INCOMPAT_EXTENT_TREE_V2: u64 = 1 << 13;
pub(crate) const INCOMPAT_RAID_STRIPE_TREE: u64 = 1 << 14;
pub(crate) const INCOMPAT_SIMPLE_QUOTA: u64 = 1 << 16;

/// The incompatible features flr reads (the rest change where bytes lie).
const INCOMPAT_READ: u64 = INCOMPAT_MIXED_BACKREF
    | INCOMPAT_DEFAULT_SUBVOL
    | INCOMPAT_MIXED_GROUPS
    | INCOMPAT_COMPRESS_LZO
    | INCOMPAT_COMPRESS_ZSTD
    | INCOMPAT_BIG_METADATA
    | INCOMPAT_EXTENDED_IREF
    | INCOMPAT_RAID56
    | INCOMPAT_SKINNY_METADATA
    | INCOMPAT_NO_HOLES
    | INCOMPAT_METADATA_UUID
    | INCOMPAT_RAID1C34
    | INCOMPAT_ZONED
    | INCOMPAT_SIMPLE_QUOTA;

/// The device item: one per device, in the superblock (this device) and
/// in the chunk tree (every device).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DevItem {
    pub(crate) devid: u64,
    pub(crate) total_bytes: u64,
    pub(crate) uuid: [u8; 16],
    pub(crate) fsid: [u8; 16],
}

/// Size of a device item on disk.
pub(crate) const DEV_ITEM_SIZE: usize = 98;

impl DevItem {
    pub(crate) fn parse(b: &[u8]) -> Option<DevItem> {
        if b.len() < DEV_ITEM_SIZE {
            return None;
        }
        Some(DevItem {
            devid: le64(b, 0),
            total_bytes: le64(b, 8),
            uuid: field::<16>(b, 66)?,
            fsid: field::<16>(b, 82)?,
        })
    }
}

/// A parsed, checksum-verified superblock.
#[derive(Debug, Clone)]
pub(crate) struct Superblock {
    /// The byte offset this copy was read from.
    pub(crate) at: u64,
    pub(crate) fsid: [u8; 16],
    /// The UUID tree blocks carry (`metadata_uuid` when that feature is on).
    pub(crate) meta_fsid: [u8; 16],
    pub(crate) generation: u64,
    pub(crate) root: u64,
    pub(crate) chunk_root: u64,
    pub(crate) log_root: u64,
    pub(crate) total_bytes: u64,
    pub(crate) bytes_used: u64,
    pub(crate) root_dir_objectid: u64,
    pub(crate) num_devices: u64,
    pub(crate) sectorsize: u32,
    pub(crate) nodesize: u32,
    pub(crate) chunk_root_generation: u64,
    pub(crate) incompat: u64,
    pub(crate) csum_type: CsumType,
    pub(crate) root_level: u8,
    pub(crate) chunk_root_level: u8,
    pub(crate) log_root_level: u8,
    pub(crate) dev_item: DevItem,
    pub(crate) label: String,
    pub(crate) sys_chunk_array: Vec<u8>,
}

fn bad(at: u64, what: impl Into<String>) -> FsError {
    FsError::Corrupt {
        fs: "btrfs",
        offset: Some(at),
        what: format!("superblock: {}", what.into()),
    }
}

impl Superblock {
    /// Whether `b` (a 4 KiB superblock) has the magic.
    pub(crate) fn has_magic(b: &[u8]) -> bool {
        b.get(0x40..0x48) == Some(&MAGIC[..])
    }

    /// Parses and checks one copy read from device offset `at`.
    pub(crate) fn parse(b: &[u8], at: u64) -> Result<Superblock, FsError> {
        if b.len() < SB_SIZE || !Self::has_magic(b) {
            return Err(bad(at, "no Btrfs magic"));
        }
        let csum_type = CsumType::from_raw(le16(b, 0xc4))
            .ok_or_else(|| bad(at, format!("unknown checksum type {}", le16(b, 0xc4))))?;
        if !csum_type.matches(&b[0x20..SB_SIZE], &b[..32]) {
            return Err(bad(at, format!("{} checksum mismatch", csum_type.name())));
        }
        if le64(b, 0x30) != at {
            return Err(bad(
                at,
                format!("records offset {:#x}, read at {at:#x}", le64(b, 0x30)),
            ));
        }
        let sectorsize = le32(b, 0x90);
        let nodesize = le32(b, 0x94);
        if !sectorsize.is_power_of_two() || !(4096..=65536).contains(&sectorsize) {
            return Err(bad(at, format!("sector size {sectorsize}")));
        }
        if !nodesize.is_power_of_two() || nodesize < sectorsize || nodesize > 65536 {
            return Err(bad(at, format!("node size {nodesize}")));
        }
        let sys_len = le32(b, 0xa0);
        if sys_len > 2048 {
            return Err(bad(at, format!("system chunk array of {sys_len} bytes")));
        }
        let incompat = le64(b, 0xbc);
        let fsid = field::<16>(b, 0x20).unwrap_or_default();
        let meta_fsid = if incompat & INCOMPAT_METADATA_UUID != 0 {
            field::<16>(b, 0x23b).unwrap_or_default()
        } else {
            fsid
        };
        let dev_item = DevItem::parse(&b[0xc9..0xc9 + DEV_ITEM_SIZE])
            .ok_or_else(|| bad(at, "short device item"))?;
        let label_raw = &b[0x12b..0x12b + 256];
        let end = label_raw.iter().position(|&c| c == 0).unwrap_or(256);
        let levels = [u8_at(b, 0xc6), u8_at(b, 0xc7), u8_at(b, 0xc8)];
        if levels.iter().any(|&l| l >= crate::tree::MAX_LEVEL) {
            return Err(bad(at, format!("tree levels {levels:?}")));
        }
        let num_devices = le64(b, 0x88);
        if num_devices == 0 || num_devices > MAX_DEVICES {
            return Err(bad(at, format!("{num_devices} devices")));
        }
        // OK: sys_len <= 2048 was checked above.
        let sys = b[0x32b..0x32b + sys_len as usize].to_vec();
        Ok(Superblock {
            at,
            fsid,
            meta_fsid,
            generation: le64(b, 0x48),
            root: le64(b, 0x50),
            chunk_root: le64(b, 0x58),
            log_root: le64(b, 0x60),
            total_bytes: le64(b, 0x70),
            bytes_used: le64(b, 0x78),
            root_dir_objectid: le64(b, 0x80),
            num_devices,
            sectorsize,
            nodesize,
            chunk_root_generation: le64(b, 0xa4),
            incompat,
            csum_type,
            root_level: levels[0],
            chunk_root_level: levels[1],
            log_root_level: levels[2],
            dev_item,
            label: String::from_utf8_lossy(&label_raw[..end]).into_owned(),
            sys_chunk_array: sys,
        })
    }

    /// The incompatible features set that flr does not read, if any.
    pub(crate) fn unsupported_features(&self) -> Option<String> {
        let other = self.incompat & !INCOMPAT_READ;
        if other == 0 {
            return None;
        }
        let mut names = Vec::new();
        if other & INCOMPAT_EXTENT_TREE_V2 != 0 {
            names.push("extent-tree-v2".to_string());
        }
        if other & INCOMPAT_RAID_STRIPE_TREE != 0 {
            names.push("raid-stripe-tree".to_string());
        }
        let rest = other & !(INCOMPAT_EXTENT_TREE_V2 | INCOMPAT_RAID_STRIPE_TREE);
        if rest != 0 {
            names.push(format!("unknown incompat flags {rest:#x}"));
        }
        Some(names.join(", "))
    }

    pub(crate) fn fsid_str(&self) -> String {
        uuid_str(&self.fsid)
    }
}

/// Devices one filesystem may have in flr's view (the kernel has no fixed
/// limit; a superblock claiming more is taken as corrupt).
pub(crate) const MAX_DEVICES: u64 = 1 << 16;

/// Reads every superblock copy that fits on `src` and returns the valid one
/// with the highest generation (copies of another filesystem, whose fsid
/// differs from the primary's, are ignored). Errors describe the primary.
pub(crate) fn read_best(src: &dyn ReadAt) -> Result<Superblock, FsError> {
    let mut best: Option<Superblock> = None;
    let mut first_err = None;
    let mut buf = vec![0u8; SB_SIZE];
    for &at in &COPIES {
        let Some(end) = at.checked_add(SB_SIZE as u64) else {
            continue;
        };
        if end > src.len() {
            if at == PRIMARY {
                return Err(bad(
                    at,
                    format!("device of {} bytes is too small", src.len()),
                ));
            }
            break;
        }
        let got = src
            .read_exact_at(at, &mut buf)
            .map_err(FsError::from)
            .and_then(|()| Superblock::parse(&buf, at));
        match got {
            Ok(sb) => {
                let same = best.as_ref().is_none_or(|b| b.fsid == sb.fsid);
                if same && best.as_ref().is_none_or(|b| sb.generation > b.generation) {
                    best = Some(sb);
                }
            }
            Err(e) => {
                if at == PRIMARY {
                    first_err = Some(e);
                }
            }
        }
    }
    best.ok_or_else(|| first_err.unwrap_or_else(|| bad(PRIMARY, "no valid copy")))
}

/// Cheap check of a head buffer (the first bytes of a volume): the magic at
/// 64 KiB and, when the whole superblock is in `head`, its checksum.
pub(crate) fn probe_head(head: &[u8]) -> Option<bool> {
    let start = usize::try_from(PRIMARY).ok()?;
    let b = head.get(start..)?;
    if b.len() < 0x48 {
        return None;
    }
    if !Superblock::has_magic(b) {
        return Some(false);
    }
    if b.len() < SB_SIZE {
        return None;
    }
    Some(Superblock::parse(&b[..SB_SIZE], PRIMARY).is_ok())
}
