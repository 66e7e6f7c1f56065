//! The items of filesystem trees and the root tree that flr reads.
//!
//! Source: the Btrfs on-disk format documentation (`btrfs_inode_item`,
//! `btrfs_dir_item`, `btrfs_file_extent_item`, `btrfs_root_item`,
//! `btrfs_root_ref`, `btrfs_inode_ref`).
//!
//! ```text
//!  inode item (160): 0 generation 8 transid 16 size 24 nbytes 32 block_group
//!    40 nlink u32 44 uid 48 gid 52 mode 56 rdev 64 flags 72 sequence
//!    112 atime 124 ctime 136 mtime 148 otime (each: sec u64, nsec u32)
//!  dir item (30 + name + data): 0 location key 17 transid 25 data_len u16
//!    27 name_len u16 29 type u8; several may share one item (hash clash)
//!  file extent (21 inline header, 53 for regular/prealloc): 0 generation
//!    8 ram_bytes 16 compression 17 encryption 18 other_encoding u16 20 type
//!    21 disk_bytenr 29 disk_num_bytes 37 offset 45 num_bytes
//!  root item: 0 inode item, 160 generation, 168 root_dirid, 176 bytenr,
//!    208 flags, 216 refs u32, 238 level; from 239 on (newer): 247 uuid,
//!    263 parent_uuid, 295 ctransid, 303 otransid, 327 ctime, 339 otime
//!  root ref / backref: 0 dirid 8 sequence 16 name_len u16 18 name
//! ```

use flr_fs::{FileKind, Timestamp};

use crate::bytes::{field, le16, le32, le64, slice, u8_at};
use crate::tree::Key;

/// Inode flags.
pub(crate) const INODE_NODATASUM: u64 = 1 << 0;

/// An inode item.
#[derive(Debug, Clone)]
pub(crate) struct Inode {
    pub(crate) size: u64,
    pub(crate) nlink: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mode: u32,
    pub(crate) rdev: u64,
    pub(crate) flags: u64,
    pub(crate) atime: Timestamp,
    pub(crate) ctime: Timestamp,
    pub(crate) mtime: Timestamp,
    pub(crate) otime: Timestamp,
}

pub(crate) fn timestamp(b: &[u8], o: usize) -> Timestamp {
    // The seconds field is a signed 64-bit count in an unsigned slot.
    Timestamp {
        secs: i64::from_le_bytes(field::<8>(b, o).unwrap_or_default()),
        nanos: le32(b, o + 8).min(999_999_999),
    }
}

impl Inode {
    pub(crate) const SIZE: usize = 160;

    pub(crate) fn parse(b: &[u8]) -> Option<Inode> {
        if b.len() < Self::SIZE {
            return None;
        }
        Some(Inode {
            size: le64(b, 16),
            nlink: le32(b, 40),
            uid: le32(b, 44),
            gid: le32(b, 48),
            mode: le32(b, 52),
            rdev: le64(b, 56),
            flags: le64(b, 64),
            atime: timestamp(b, 112),
            ctime: timestamp(b, 124),
            mtime: timestamp(b, 136),
            otime: timestamp(b, 148),
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
}

/// One entry of a DIR_ITEM, DIR_INDEX or XATTR_ITEM.
#[derive(Debug, Clone)]
pub(crate) struct DirItem {
    pub(crate) location: Key,
    pub(crate) ty: u8,
    pub(crate) name: Vec<u8>,
    pub(crate) data: Vec<u8>,
}

/// Directory entry types.
pub(crate) const FT_DIR: u8 = 2;
pub(crate) const FT_SYMLINK: u8 = 7;

pub(crate) fn dirent_kind(ty: u8) -> FileKind {
    match ty {
        1 => FileKind::File,
        FT_DIR => FileKind::Dir,
        FT_SYMLINK => FileKind::Symlink,
        _ => FileKind::Special,
    }
}

/// Parses the dir items packed in one item; Err names the problem.
pub(crate) fn dir_items(b: &[u8]) -> Result<Vec<DirItem>, String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < b.len() {
        let h = slice(b, pos, 30).ok_or("truncated directory item header")?;
        let location = Key::parse(h).ok_or("truncated key")?;
        let data_len = usize::from(le16(h, 25));
        let name_len = usize::from(le16(h, 27));
        let ty = u8_at(h, 29);
        let name = slice(b, pos + 30, name_len).ok_or("directory item name past the item")?;
        let data =
            slice(b, pos + 30 + name_len, data_len).ok_or("directory item data past the item")?;
        if name_len == 0 {
            return Err("directory item with an empty name".into());
        }
        out.push(DirItem {
            location,
            ty,
            name: name.to_vec(),
            data: data.to_vec(),
        });
        pos += 30 + name_len + data_len;
    }
    Ok(out)
}

/// Compression of an extent.
pub(crate) const COMPRESS_NONE: u8 = 0;

/// What one EXTENT_DATA item says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExtentKind {
    /// Data in the item; `ram_bytes` once decompressed.
    Inline {
        compression: u8,
        ram_bytes: u64,
        data: Vec<u8>,
    },
    /// A hole (regular extent with no disk address).
    Hole,
    /// Preallocated, never written: zeros.
    Prealloc,
    /// Data on disk: `disk_num_bytes` at `disk_bytenr` (compressed to
    /// `ram_bytes` when `compression` is set); the file sees `num_bytes`
    /// from byte `offset` of the (decompressed) extent.
    Regular {
        compression: u8,
        disk_bytenr: u64,
        disk_num_bytes: u64,
        ram_bytes: u64,
        offset: u64,
    },
}

/// A parsed EXTENT_DATA item: the file range and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileExtent {
    /// Length in the file (for inline: ram_bytes).
    pub(crate) len: u64,
    pub(crate) kind: ExtentKind,
}

pub(crate) fn file_extent(b: &[u8]) -> Result<FileExtent, String> {
    if b.len() < 21 {
        return Err(format!("file extent item of {} bytes", b.len()));
    }
    let ram_bytes = le64(b, 8);
    let compression = u8_at(b, 16);
    let encryption = u8_at(b, 17);
    let other = le16(b, 18);
    let ty = u8_at(b, 20);
    if encryption != 0 || other != 0 {
        return Err(format!(
            "unsupported: encrypted or encoded extent (encryption {encryption}, encoding {other})"
        ));
    }
    if compression > 3 {
        return Err(format!("unsupported: compression type {compression}"));
    }
    match ty {
        0 => Ok(FileExtent {
            len: ram_bytes,
            kind: ExtentKind::Inline {
                compression,
                ram_bytes,
                data: b[21..].to_vec(),
            },
        }),
        1 | 2 => {
            if b.len() < 53 {
                return Err(format!("file extent item of {} bytes", b.len()));
            }
            let disk_bytenr = le64(b, 21);
            let disk_num_bytes = le64(b, 29);
            let offset = le64(b, 37);
            let num_bytes = le64(b, 45);
            let kind = if ty == 2 {
                ExtentKind::Prealloc
            } else if disk_bytenr == 0 {
                ExtentKind::Hole
            } else {
                ExtentKind::Regular {
                    compression,
                    disk_bytenr,
                    disk_num_bytes,
                    ram_bytes,
                    offset,
                }
            };
            Ok(FileExtent {
                len: num_bytes,
                kind,
            })
        }
        t => Err(format!("file extent type {t}")),
    }
}

/// A root item.
#[derive(Debug, Clone)]
pub(crate) struct RootItem {
    pub(crate) generation: u64,
    pub(crate) root_dirid: u64,
    pub(crate) bytenr: u64,
    pub(crate) flags: u64,
    pub(crate) refs: u32,
    pub(crate) level: u8,
    pub(crate) uuid: Option<[u8; 16]>,
    pub(crate) parent_uuid: Option<[u8; 16]>,
    pub(crate) otransid: u64,
    pub(crate) ctime: Option<Timestamp>,
    pub(crate) otime: Option<Timestamp>,
}

pub(crate) const ROOT_SUBVOL_RDONLY: u64 = 1 << 0;

impl RootItem {
    pub(crate) fn parse(b: &[u8]) -> Option<RootItem> {
        if b.len() < 239 {
            return None;
        }
        let v2 = b.len() >= 351;
        let nz = |u: [u8; 16]| (u != [0u8; 16]).then_some(u);
        Some(RootItem {
            generation: le64(b, 160),
            root_dirid: le64(b, 168),
            bytenr: le64(b, 176),
            flags: le64(b, 208),
            refs: le32(b, 216),
            level: u8_at(b, 238),
            uuid: if v2 {
                field::<16>(b, 247).and_then(nz)
            } else {
                None
            },
            parent_uuid: if v2 {
                field::<16>(b, 263).and_then(nz)
            } else {
                None
            },
            otransid: if v2 { le64(b, 303) } else { 0 },
            ctime: v2.then(|| timestamp(b, 327)),
            otime: v2
                .then(|| timestamp(b, 339))
                .filter(|t| t.secs != 0 || t.nanos != 0),
        })
    }
}

/// A root ref or backref: the directory and name a subvolume is linked at.
#[derive(Debug, Clone)]
pub(crate) struct RootRef {
    pub(crate) dirid: u64,
    pub(crate) name: Vec<u8>,
}

pub(crate) fn root_ref(b: &[u8]) -> Option<RootRef> {
    let n = usize::from(le16(b, 16));
    Some(RootRef {
        dirid: le64(b, 0),
        name: slice(b, 18, n)?.to_vec(),
    })
}

/// The first (parent, name) of an INODE_REF item keyed (ino, 12, parent).
pub(crate) fn inode_ref_name(b: &[u8]) -> Option<Vec<u8>> {
    let n = usize::from(le16(b, 8));
    slice(b, 10, n).map(<[u8]>::to_vec)
}
