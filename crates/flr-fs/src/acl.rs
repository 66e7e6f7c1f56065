//! POSIX ACLs in the form Linux's `system.posix_acl_access` and
//! `system.posix_acl_default` xattrs take (what `getxattr(2)` returns and
//! `setxattr(2)` accepts), which filesystem readers build from their own
//! on-disk forms (ext4's compact entries, XFS's big-endian `xfs_acl`).
//!
//! Source: the kernel's `include/uapi/linux/posix_acl_xattr.h`:
//!
//! ```text
//!  header  le32 version (2)
//!  entry   le16 tag | le16 perm | le32 id      (repeated)
//! ```
//!
//! `id` is a uid for `USER`, a gid for `GROUP`, and `0xffffffff` for the
//! other tags.

/// The xattr name of a file's access ACL.
pub const ACCESS: &[u8] = b"system.posix_acl_access";
/// The xattr name of a folder's default ACL.
pub const DEFAULT: &[u8] = b"system.posix_acl_default";

/// `ACL_USER_OBJ`: the owner.
pub const USER_OBJ: u16 = 0x01;
/// `ACL_USER`: a named user.
pub const USER: u16 = 0x02;
/// `ACL_GROUP_OBJ`: the owning group.
pub const GROUP_OBJ: u16 = 0x04;
/// `ACL_GROUP`: a named group.
pub const GROUP: u16 = 0x08;
/// `ACL_MASK`.
pub const MASK: u16 = 0x10;
/// `ACL_OTHER`.
pub const OTHER: u16 = 0x20;
/// The id stored for entries that name nobody.
pub const UNDEFINED_ID: u32 = 0xffff_ffff;

/// One ACL entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AclEntry {
    /// `USER_OBJ`, `USER`, `GROUP_OBJ`, `GROUP`, `MASK` or `OTHER`.
    pub tag: u16,
    /// `rwx` bits (4, 2, 1).
    pub perm: u16,
    /// The uid or gid for `USER` and `GROUP`; ignored otherwise.
    pub id: u32,
}

/// Whether `tag` is one of the six ACL tags.
pub fn known_tag(tag: u16) -> bool {
    matches!(tag, USER_OBJ | USER | GROUP_OBJ | GROUP | MASK | OTHER)
}

/// The Linux xattr form of `entries` (version 2; ids of entries that name
/// nobody written as `0xffffffff`, as the kernel writes them).
pub fn to_xattr(entries: &[AclEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + entries.len() * 8);
    out.extend_from_slice(&2u32.to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.tag.to_le_bytes());
        out.extend_from_slice(&e.perm.to_le_bytes());
        let id = if matches!(e.tag, USER | GROUP) {
            e.id
        } else {
            UNDEFINED_ID
        };
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattr_form() {
        let v = to_xattr(&[
            AclEntry {
                tag: USER_OBJ,
                perm: 6,
                id: 7,
            },
            AclEntry {
                tag: USER,
                perm: 4,
                id: 1000,
            },
        ]);
        assert_eq!(
            v,
            [2, 0, 0, 0, 1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff, 2, 0, 4, 0, 0xe8, 3, 0, 0]
        );
    }
}
