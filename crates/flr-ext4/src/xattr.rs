//! Extended attributes: the ones kept in the inode body (after
//! `i_extra_isize`) and the ones in the external block `i_file_acl` points
//! at, with values kept in EA inodes (`ea_inode`) read from those inodes.
//! POSIX ACLs are converted from ext4's compact on-disk form to the Linux
//! xattr form.
//!
//! Source: the kernel's `fs/ext4/xattr.h` and `fs/ext4/acl.h`.
//!
//! ```text
//!  in-inode:  le32 magic 0xEA020000 | entries… | values (offsets from the first entry)
//!  block:     le32 magic | le32 refcount | le32 blocks (1) | le32 hash | le32 csum | 12 reserved
//!             | entries… (from byte 32) | values (offsets from the block start)
//!  entry:     u8 name_len | u8 name_index | le16 value_offs | le32 value_inum
//!             | le32 value_size | le32 hash | name (padded to 4 bytes); four zero bytes end the list
//!  ACL:       le32 version (1) | entries: le16 tag | le16 perm [| le32 id for USER and GROUP]
//! ```

use flr_fs::acl::{self, AclEntry};
use flr_fs::{FsError, Xattr};

use crate::bytes::{le16, le32};
use crate::corrupt;
use crate::inode::{Inode, FL_EA_INODE};
use crate::Core;

const MAGIC: u32 = 0xEA02_0000;
/// Values larger than this are not xattrs the kernel would accept.
const MAX_VALUE: u32 = 1 << 16;

fn prefix(index: u8) -> Option<&'static [u8]> {
    Some(match index {
        0 => b"",
        1 => b"user.",
        2 => acl::ACCESS,
        3 => acl::DEFAULT,
        4 => b"trusted.",
        6 => b"security.",
        7 => b"system.",
        8 => b"system.richacl",
        _ => return None,
    })
}

/// ext4's on-disk ACL (`ext4_acl_header` version 1) to the Linux xattr form.
fn acl_from_disk(v: &[u8], at: u64) -> Result<Vec<u8>, FsError> {
    let bad = |what: &str| corrupt(at, format!("ACL xattr: {what}"));
    if le32(v, 0) != 1 || v.len() < 4 {
        return Err(bad("unknown version"));
    }
    let mut entries = Vec::new();
    let mut o = 4;
    while o < v.len() {
        let tag = le16(v, o);
        let perm = le16(v, o + 2);
        let long = matches!(tag, acl::USER | acl::GROUP);
        let len = if long { 8 } else { 4 };
        if o + len > v.len() || !acl::known_tag(tag) {
            return Err(bad("bad entry"));
        }
        let id = if long {
            le32(v, o + 4)
        } else {
            acl::UNDEFINED_ID
        };
        entries.push(AclEntry { tag, perm, id });
        o += len;
    }
    Ok(acl::to_xattr(&entries))
}

impl Core {
    /// The xattrs of `inode`: in-inode ones first, then the block's.
    pub(crate) fn xattrs(&self, inode: &Inode) -> Result<Vec<Xattr>, FsError> {
        let mut out = Vec::new();
        let isz = self.sb.inode_size as usize;
        if isz > 128 {
            let off = self.inode_offset(inode.ino)?;
            let mut raw = vec![0u8; isz];
            self.vol.read(off, &mut raw)?;
            let body = 128 + usize::from(le16(&raw, 0x80));
            if body + 4 <= isz && le32(&raw, body) == MAGIC {
                let region = &raw[body + 4..];
                self.entries(region, region, off + body as u64 + 4, &mut out)?;
            }
        }
        if inode.file_acl != 0 {
            let bs = self.bs_usize();
            let blk = inode.file_acl;
            if blk >= self.sb.blocks_count {
                return Err(corrupt(
                    0,
                    format!("inode {}: xattr block {blk} outside the volume", inode.ino),
                ));
            }
            let at = blk * self.sb.bs;
            let mut b = vec![0u8; bs];
            self.vol.read(at, &mut b)?;
            if le32(&b, 0) != MAGIC || le32(&b, 8) != 1 {
                return Err(corrupt(
                    at,
                    format!("inode {}: xattr block without its header", inode.ino),
                ));
            }
            self.entries(&b[32..], &b, at + 32, &mut out)?;
        }
        Ok(out)
    }

    /// Parses the entry list `ents`; values are at `value_offs` in `vals`.
    fn entries(
        &self,
        ents: &[u8],
        vals: &[u8],
        at: u64,
        out: &mut Vec<Xattr>,
    ) -> Result<(), FsError> {
        let mut o = 0usize;
        while o + 4 <= ents.len() && le32(ents, o) != 0 {
            let eat = at + o as u64;
            let bad = |what: String| corrupt(eat, format!("xattr entry: {what}"));
            if o + 16 > ents.len() {
                return Err(bad("runs past its area".into()));
            }
            let name_len = usize::from(ents[o]);
            let index = ents[o + 1];
            let voff = usize::from(le16(ents, o + 2));
            let inum = le32(ents, o + 4);
            let vsize = le32(ents, o + 8);
            let name = ents
                .get(o + 16..o + 16 + name_len)
                .ok_or_else(|| bad("name runs past its area".into()))?;
            let pre = prefix(index).ok_or_else(|| bad(format!("unknown name index {index}")))?;
            if vsize > MAX_VALUE {
                return Err(bad(format!("value of {vsize} bytes")));
            }
            let value = if inum != 0 {
                self.ea_inode_value(inum, vsize)?
            } else {
                let vs = vsize as usize;
                vals.get(voff..voff + vs)
                    .ok_or_else(|| bad("value outside its area".into()))?
                    .to_vec()
            };
            let mut full = pre.to_vec();
            full.extend_from_slice(name);
            let value = if index == 2 || index == 3 {
                acl_from_disk(&value, eat)?
            } else {
                value
            };
            out.push((full, value));
            o += (16 + name_len + 3) & !3;
        }
        Ok(())
    }

    /// A value kept in its own inode (`ea_inode` feature): that inode's data.
    fn ea_inode_value(&self, inum: u32, size: u32) -> Result<Vec<u8>, FsError> {
        let ino = self.read_inode(inum)?;
        if !ino.has_flag(FL_EA_INODE) || ino.size != u64::from(size) {
            return Err(corrupt(
                0,
                format!("xattr value inode {inum} is not an EA inode of {size} bytes"),
            ));
        }
        let extents = self.map_inode(&ino)?;
        let mut v = vec![0u8; size as usize];
        let bs = self.sb.bs;
        for (i, chunk) in v.chunks_mut(self.bs_usize()).enumerate() {
            let lblk = i as u64;
            if let Ok(k) = crate::map::find(&extents, lblk) {
                let e = extents[k];
                self.vol.read((e.pblk + lblk - e.lblk) * bs, chunk)?;
            }
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_acl_converts() {
        // user::rw-, user:1000:r--, group::r--, mask::r--, other::---
        let mut d = 1u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, None),
            (2, 4, Some(1000u32)),
            (4, 4, None),
            (0x10, 4, None),
            (0x20, 0, None),
        ] {
            d.extend_from_slice(&tag.to_le_bytes());
            d.extend_from_slice(&perm.to_le_bytes());
            if let Some(id) = id {
                d.extend_from_slice(&id.to_le_bytes());
            }
        }
        let x = acl_from_disk(&d, 0).unwrap();
        assert_eq!(x.len(), 4 + 5 * 8);
        assert_eq!(&x[12..20], &[2, 0, 4, 0, 0xe8, 3, 0, 0]);
        assert_eq!(&x[36..44], &[0x20, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert!(acl_from_disk(&[2, 0, 0, 0], 0).is_err());
    }
}
