//! Extended attributes: the attribute fork in short form (in the inode),
//! or as leaf blocks (one leaf, or a dabtree of node blocks above several),
//! with values local to the leaf or in remote blocks. Names are given with
//! the Linux namespace prefix their flags select (none: `user.`,
//! `ATTR_ROOT`: `trusted.`, `ATTR_SECURE`: `security.`); the ACLs XFS keeps
//! as `trusted.SGI_ACL_FILE` / `SGI_ACL_DEFAULT` in its big-endian
//! `xfs_acl` form are given twice, as the kernel lists them: as
//! `system.posix_acl_access` / `_default` in the Linux xattr form, and as
//! the raw `trusted.SGI_ACL_*` attribute itself. Parent pointers
//! (`ATTR_PARENT`) and incomplete entries are skipped.
//!
//! Source: XFS Algorithms & Data Structures, "Extended Attributes", and
//! the kernel's `libxfs/xfs_da_format.h`, `xfs_format.h` (`xfs_acl`).
//!
//! ```text
//!  short form:  be16 totsize | u8 count | pad | entries: u8 namelen | u8 valuelen | u8 flags | name | value
//!  leaf (v4):   blkinfo (12: forw, back, be16 magic 0xfbee) | be16 count | … entries from byte 32
//!  leaf (v5):   da3 blkinfo (56: …, be16 magic 0x3bee at 8) | be16 count at 56 | … entries from 80
//!  entry:       be32 hash | be16 nameidx | u8 flags | pad
//!  local name:  be16 valuelen | u8 namelen | name | value
//!  remote name: be32 valueblk | be32 valuelen | u8 namelen | name
//!  node:        blkinfo | be16 count | be16 level | entries (be32 hash, be32 before) from 16 (v5: 64)
//!  remote (v5): each block: 56-byte header (magic "XARM") | data
//!  xfs_acl:     be32 count | entries: be32 tag | be32 id | be16 perm | pad
//! ```

use flr_fs::acl::{self, AclEntry};
use flr_fs::{FsError, Xattr};
use flr_io::ReadAt;

use crate::bmap::{self, Extent};
use crate::bytes::{be16, be32, crc_ok};
use crate::corrupt;
use crate::inode::{Inode, FMT_BTREE, FMT_EXTENTS, FMT_LOCAL};
use crate::sb::Superblock;

const LOCAL: u8 = 0x01;
const ROOT: u8 = 0x02;
const SECURE: u8 = 0x04;
const PARENT: u8 = 0x08;
const INCOMPLETE: u8 = 0x80;

const LEAF_MAGIC: u16 = 0xfbee;
const LEAF3_MAGIC: u16 = 0x3bee;
const NODE_MAGIC: u16 = 0xfebe;
const NODE3_MAGIC: u16 = 0x3ebe;
const RMT_MAGIC: u32 = 0x5841_524d; // "XARM"
const RMT_HDR: usize = 56;
/// Leaves followed before giving up (a loop in the sibling chain).
const MAX_LEAVES: usize = 1 << 16;
const MAX_LEVELS: usize = 8;

/// The full Linux names and values of one attribute (an ACL gives two).
fn linux(flags: u8, name: &[u8], value: &[u8], at: u64) -> Result<Vec<Xattr>, FsError> {
    let mut out = Vec::new();
    if flags & (PARENT | INCOMPLETE) != 0 {
        return Ok(out);
    }
    if flags & ROOT != 0 {
        let which = match name {
            b"SGI_ACL_FILE" => Some(acl::ACCESS),
            b"SGI_ACL_DEFAULT" => Some(acl::DEFAULT),
            _ => None,
        };
        if let Some(n) = which {
            out.push((n.to_vec(), acl_from_disk(value, at)?));
        }
    }
    let pre: &[u8] = if flags & ROOT != 0 {
        b"trusted."
    } else if flags & SECURE != 0 {
        b"security."
    } else {
        b"user."
    };
    let mut full = pre.to_vec();
    full.extend_from_slice(name);
    out.push((full, value.to_vec()));
    Ok(out)
}

/// `xfs_acl` (big-endian, 12-byte entries) to the Linux xattr form.
fn acl_from_disk(v: &[u8], at: u64) -> Result<Vec<u8>, FsError> {
    let n = be32(v, 0) as usize;
    if v.len() < 4 || n > (v.len() - 4) / 12 {
        return Err(corrupt(
            at,
            format!("ACL attribute: {n} entries in {} bytes", v.len()),
        ));
    }
    let mut entries = Vec::with_capacity(n);
    for i in 0..n {
        let o = 4 + i * 12;
        let tag = u16::try_from(be32(v, o)).unwrap_or(0);
        if !acl::known_tag(tag) {
            return Err(corrupt(
                at,
                format!("ACL attribute: unknown tag {:#x}", be32(v, o)),
            ));
        }
        entries.push(AclEntry {
            tag,
            id: be32(v, o + 4),
            perm: be16(v, o + 8),
        });
    }
    Ok(acl::to_xattr(&entries))
}

struct Reader<'a> {
    src: &'a dyn ReadAt,
    sb: &'a Superblock,
    inode: &'a Inode,
    map: Vec<Extent>,
}

/// The attributes of `inode`, in on-disk order.
pub(crate) fn read(
    src: &dyn ReadAt,
    sb: &Superblock,
    inode: &Inode,
) -> Result<Vec<Xattr>, FsError> {
    let mut out = Vec::new();
    if inode.afork.is_empty() {
        return Ok(out);
    }
    let at = inode.at;
    match inode.aformat {
        FMT_LOCAL => {
            let f = &inode.afork;
            let tot = usize::from(be16(f, 0)).min(f.len());
            let count = usize::from(f.get(2).copied().unwrap_or(0));
            let mut o = 4;
            for _ in 0..count {
                let bad = || {
                    corrupt(
                        at,
                        format!(
                            "inode {}: short-form attribute runs past the fork",
                            inode.ino
                        ),
                    )
                };
                let hdr = f.get(o..o + 3).ok_or_else(bad)?;
                let (nl, vl, fl) = (usize::from(hdr[0]), usize::from(hdr[1]), hdr[2]);
                let name = f.get(o + 3..o + 3 + nl).ok_or_else(bad)?;
                let value = f.get(o + 3 + nl..o + 3 + nl + vl).ok_or_else(bad)?;
                if o + 3 + nl + vl > tot {
                    return Err(bad());
                }
                out.extend(linux(fl, name, value, at)?);
                o += 3 + nl + vl;
            }
        }
        // A fork left without attributes.
        FMT_EXTENTS if inode.anextents == 0 => {}
        FMT_EXTENTS | FMT_BTREE => {
            let mut fork = inode.clone();
            fork.format = inode.aformat;
            fork.nextents = inode.anextents;
            fork.fork = inode.afork.clone();
            let map = bmap::map(src, sb, &fork)?;
            let r = Reader {
                src,
                sb,
                inode,
                map,
            };
            r.leaves(&mut out)?;
        }
        other => {
            return Err(corrupt(
                at,
                format!("inode {}: unknown attribute fork format {other}", inode.ino),
            ))
        }
    }
    Ok(out)
}

impl Reader<'_> {
    fn v5(&self) -> bool {
        self.sb.is_v5()
    }

    /// Reads attribute-fork block `lblk` (one filesystem block).
    fn block(&self, lblk: u64) -> Result<(Vec<u8>, u64), FsError> {
        let e = bmap::find(&self.map, lblk)
            .ok()
            .map(|k| self.map[k])
            .filter(|e| !e.unwritten)
            .ok_or_else(|| {
                corrupt(
                    self.inode.at,
                    format!(
                        "inode {}: attribute block {lblk} is not mapped",
                        self.inode.ino
                    ),
                )
            })?;
        let at = (e.pblk + (lblk - e.lblk)) * self.sb.bs;
        let mut b = vec![0u8; usize::try_from(self.sb.bs).unwrap_or(4096)];
        self.src.read_exact_at(at, &mut b)?;
        if self.v5() && !crc_ok(&b, 12) {
            return Err(corrupt(
                at,
                format!("inode {}: attribute block CRC mismatch", self.inode.ino),
            ));
        }
        Ok((b, at))
    }

    /// Descends from block 0 to the leftmost leaf, then follows `forw`.
    fn leaves(&self, out: &mut Vec<Xattr>) -> Result<(), FsError> {
        let (leaf_magic, node_magic) = if self.v5() {
            (LEAF3_MAGIC, NODE3_MAGIC)
        } else {
            (LEAF_MAGIC, NODE_MAGIC)
        };
        let mut lblk = 0u64;
        let (mut b, mut at) = self.block(0)?;
        let mut depth = 0;
        while be16(&b, 8) == node_magic {
            depth += 1;
            let (count_at, first) = if self.v5() { (56, 64) } else { (12, 16) };
            if depth > MAX_LEVELS || be16(&b, count_at) == 0 {
                return Err(corrupt(
                    at,
                    format!("inode {}: bad attribute node block", self.inode.ino),
                ));
            }
            lblk = u64::from(be32(&b, first + 4));
            (b, at) = self.block(lblk)?;
        }
        let mut seen = 0;
        loop {
            if be16(&b, 8) != leaf_magic {
                return Err(corrupt(
                    at,
                    format!(
                        "inode {}: attribute block {lblk} is not a leaf",
                        self.inode.ino
                    ),
                ));
            }
            self.leaf(&b, at, out)?;
            let forw = be32(&b, 0);
            seen += 1;
            if forw == 0 {
                return Ok(());
            }
            if seen > MAX_LEAVES {
                return Err(corrupt(
                    at,
                    format!("inode {}: attribute leaf chain loops", self.inode.ino),
                ));
            }
            lblk = u64::from(forw);
            (b, at) = self.block(lblk)?;
        }
    }

    fn leaf(&self, b: &[u8], at: u64, out: &mut Vec<Xattr>) -> Result<(), FsError> {
        let (count_at, first) = if self.v5() { (56, 80) } else { (12, 32) };
        let count = usize::from(be16(b, count_at));
        let ino = self.inode.ino;
        let bad = || {
            corrupt(
                at,
                format!("inode {ino}: attribute leaf entry out of its block"),
            )
        };
        if first + count * 8 > b.len() {
            return Err(bad());
        }
        for i in 0..count {
            let e = first + i * 8;
            let idx = usize::from(be16(b, e + 4));
            let flags = b[e + 6];
            if flags & LOCAL != 0 {
                let vl = usize::from(be16(b, idx));
                let nl = usize::from(*b.get(idx + 2).ok_or_else(bad)?);
                let name = b.get(idx + 3..idx + 3 + nl).ok_or_else(bad)?;
                let value = b.get(idx + 3 + nl..idx + 3 + nl + vl).ok_or_else(bad)?;
                out.extend(linux(flags, name, value, at)?);
            } else {
                let blk = be32(b, idx);
                let vl = be32(b, idx + 4);
                let nl = usize::from(*b.get(idx + 8).ok_or_else(bad)?);
                let name = b.get(idx + 9..idx + 9 + nl).ok_or_else(bad)?;
                if flags & (PARENT | INCOMPLETE) != 0 {
                    continue;
                }
                let value = self.remote(u64::from(blk), vl, at)?;
                out.extend(linux(flags, name, &value, at)?);
            }
        }
        Ok(())
    }

    /// A remote value of `len` bytes from attribute block `blk` on.
    fn remote(&self, blk: u64, len: u32, at: u64) -> Result<Vec<u8>, FsError> {
        if len > 1 << 16 {
            return Err(corrupt(
                at,
                format!("inode {}: remote attribute of {len} bytes", self.inode.ino),
            ));
        }
        let len = len as usize;
        let mut v = Vec::with_capacity(len);
        let mut lblk = blk;
        while v.len() < len {
            let (b, bat) = self.block(lblk)?;
            let data = if self.v5() {
                if be32(&b, 0) != RMT_MAGIC {
                    return Err(corrupt(
                        bat,
                        format!("inode {}: bad remote attribute block", self.inode.ino),
                    ));
                }
                &b[RMT_HDR..]
            } else {
                &b[..]
            };
            let take = (len - v.len()).min(data.len());
            v.extend_from_slice(&data[..take]);
            lblk += 1;
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_acls() {
        let (n, v) = linux(ROOT, b"x", b"1", 0).unwrap().remove(0);
        assert_eq!((n.as_slice(), v.as_slice()), (&b"trusted.x"[..], &b"1"[..]));
        assert_eq!(linux(SECURE, b"s", b"", 0).unwrap()[0].0, b"security.s");
        assert_eq!(linux(0, b"u", b"", 0).unwrap()[0].0, b"user.u");
        assert!(linux(PARENT, b"p", b"", 0).unwrap().is_empty());
        // user::rw-, group::r--, other::r--
        let mut a = 3u32.to_be_bytes().to_vec();
        for (tag, perm) in [(1u32, 6u16), (4, 4), (0x20, 4)] {
            a.extend_from_slice(&tag.to_be_bytes());
            a.extend_from_slice(&0u32.to_be_bytes());
            a.extend_from_slice(&perm.to_be_bytes());
            a.extend_from_slice(&[0, 0]);
        }
        let both = linux(ROOT, b"SGI_ACL_FILE", &a, 0).unwrap();
        assert_eq!(both[1], (b"trusted.SGI_ACL_FILE".to_vec(), a.clone()));
        let (n, v) = both[0].clone();
        assert_eq!(n, acl::ACCESS);
        assert_eq!(v.len(), 4 + 3 * 8);
        assert_eq!(&v[4..12], &[1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff]);
        assert!(acl_from_disk(&[0, 0, 0, 9], 0).is_err());
    }
}
