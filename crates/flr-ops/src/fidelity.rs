//! What a restore keeps besides a file's bytes, mode and times: its
//! extended attributes, POSIX ACLs and owner (`get --preserve`), applied to
//! the open file or folder in the destination, and reported, never fatal,
//! where the destination refuses them (a filesystem without xattrs, a
//! `trusted.*` name when not root, an owner change when not root).
//!
//! Order on a file: data; owner (`fchown`, which clears setuid/setgid);
//! mode with setuid/setgid when the owner was restored; xattrs and ACLs;
//! atime and mtime last. A folder gets its xattrs, ACLs and owner after its
//! entries are written, so that a default ACL does not leak into entries
//! that had none.

use std::cell::RefCell;
use std::os::fd::{AsFd, BorrowedFd};

use flr_fs::{acl, Filesystem, FsPath, Metadata, Timestamp, Xattr};
use rustix::fs::{AtFlags, Gid, Mode, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;

/// What `get --preserve` keeps (mode and times are always kept).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Preserve {
    /// Extended attributes other than ACLs (`user.`, `trusted.`,
    /// `security.`, other `system.` names).
    pub xattrs: bool,
    /// POSIX ACLs (`system.posix_acl_access`, `system.posix_acl_default`).
    pub acl: bool,
    /// Numeric uid and gid (needs root), and with them setuid/setgid.
    pub owner: bool,
}

impl Preserve {
    /// Everything.
    pub const ALL: Preserve = Preserve {
        xattrs: true,
        acl: true,
        owner: true,
    };

    /// Parses `xattrs,acl,owner`, `all` or `none` (comma-separated, any
    /// mix; `none` clears what precedes it).
    pub fn parse(s: &str) -> Result<Preserve, String> {
        let mut p = Preserve::default();
        for w in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match w {
                "xattrs" | "xattr" => p.xattrs = true,
                "acl" | "acls" => p.acl = true,
                "owner" | "ownership" => p.owner = true,
                "all" => p = Preserve::ALL,
                "none" => p = Preserve::default(),
                other => {
                    return Err(format!(
                        "--preserve: unknown item {other:?} (known: xattrs, acl, owner, all, none)"
                    ))
                }
            }
        }
        Ok(p)
    }

    fn wants(&self, name: &[u8]) -> bool {
        // XFS's own stored form of an ACL, which its kernel also lists: the
        // ACL itself is restored as `system.posix_acl_*`.
        if name == b"trusted.SGI_ACL_FILE" || name == b"trusted.SGI_ACL_DEFAULT" {
            return false;
        }
        if name == acl::ACCESS || name == acl::DEFAULT {
            self.acl
        } else {
            self.xattrs
        }
    }
}

/// What one restored object should get beyond its data, and what the
/// destination refused.
#[derive(Debug, Default)]
pub(crate) struct Extra {
    pub(crate) mode: Option<u32>,
    pub(crate) mtime: Option<Timestamp>,
    pub(crate) atime: Option<Timestamp>,
    owner: Option<(u32, u32)>,
    xattrs: Vec<Xattr>,
    /// One line per thing not restored (`xattr trusted.x: Operation not permitted`).
    pub(crate) refused: RefCell<Vec<String>>,
}

impl Extra {
    /// What `meta` and, as `p` asks, the filesystem's xattrs of `path` say;
    /// a failure to read the xattrs is one refused item.
    pub(crate) fn of(fs: &dyn Filesystem, path: &FsPath, meta: &Metadata, p: Preserve) -> Extra {
        let mut e = Extra {
            mode: meta.mode,
            mtime: meta.mtime,
            atime: meta.atime,
            ..Extra::default()
        };
        if p.owner {
            e.owner = meta.uid.zip(meta.gid);
        }
        if p.xattrs || p.acl {
            match fs.xattrs(path) {
                Ok(x) => e.xattrs = x.into_iter().filter(|(n, _)| p.wants(n)).collect(),
                Err(err) => e.refuse(format!("xattrs not read: {err}")),
            }
        }
        e
    }

    fn refuse(&self, what: String) {
        self.refused.borrow_mut().push(what);
    }

    /// The times to set: atime when known, else mtime for both.
    pub(crate) fn times(&self) -> Option<Timestamps> {
        let m = self.mtime?;
        Some(timestamps(self.atime.unwrap_or(m), m))
    }

    /// Owner, then mode (with setuid/setgid only when the owner was set),
    /// then xattrs; the caller sets the times after. Only a failed `fchmod`
    /// is an error: the rest is recorded in `refused`.
    pub(crate) fn apply_file(&self, fd: BorrowedFd<'_>) -> Result<(), Errno> {
        let owned = self.chown(fd);
        // Without the owner, setuid/setgid are not restored: a restore must
        // not mint privileges for whoever runs it.
        // fchown cleared them, so they are set after it.
        let keep = if owned { 0o7777 } else { 0o1777 };
        let m = self.mode.unwrap_or(0o644) & keep;
        rustix::fs::fchmod(fd, Mode::from_raw_mode(m))?;
        self.set_xattrs(fd);
        Ok(())
    }

    /// A folder's owner, mode (when the filesystem has one; setgid only
    /// with the owner) and xattrs; the caller sets the times after. A
    /// failed `fchmod` is recorded, not fatal (the entries are written).
    pub(crate) fn apply_dir(&self, fd: BorrowedFd<'_>) {
        let owned = self.chown(fd);
        if let Some(m) = self.mode {
            let keep = if owned { 0o7777 } else { 0o1777 };
            if let Err(e) = rustix::fs::fchmod(fd, Mode::from_raw_mode(m & keep)) {
                self.refuse(format!("mode {:o}: {}", m & keep, std::io::Error::from(e)));
            }
        }
        self.set_xattrs(fd);
    }

    /// A symlink's owner (`fchownat` without following it). Xattrs on
    /// symlinks are not restored.
    pub(crate) fn apply_symlink(&self, dir: BorrowedFd<'_>, name: &[u8]) {
        if let Some((u, g)) = self.owner {
            if let Err(e) = rustix::fs::chownat(
                dir,
                name,
                Some(Uid::from_raw(u)),
                Some(Gid::from_raw(g)),
                AtFlags::SYMLINK_NOFOLLOW,
            ) {
                self.refuse(format!("owner {u}:{g}: {}", std::io::Error::from(e)));
            }
        }
    }

    fn chown(&self, fd: BorrowedFd<'_>) -> bool {
        let Some((u, g)) = self.owner else {
            return false;
        };
        match rustix::fs::fchown(fd, Some(Uid::from_raw(u)), Some(Gid::from_raw(g))) {
            Ok(()) => true,
            Err(e) => {
                self.refuse(format!("owner {u}:{g}: {}", std::io::Error::from(e)));
                false
            }
        }
    }

    fn set_xattrs(&self, fd: BorrowedFd<'_>) {
        for (name, value) in &self.xattrs {
            if let Err(e) =
                rustix::fs::fsetxattr(fd.as_fd(), name.as_slice(), value, XattrFlags::empty())
            {
                let why = match e {
                    Errno::OPNOTSUPP => "the destination does not support it".to_string(),
                    e => std::io::Error::from(e).to_string(),
                };
                self.refuse(format!("xattr {}: {why}", String::from_utf8_lossy(name)));
            }
        }
    }

    /// The refused items as one message, if any (the first few by name).
    pub(crate) fn refused_message(&self) -> Option<String> {
        const SHOWN: usize = 4;
        let r = self.refused.borrow();
        if r.is_empty() {
            return None;
        }
        let mut msg = format!(
            "warning: not preserved: {}",
            r[..r.len().min(SHOWN)].join("; ")
        );
        if r.len() > SHOWN {
            msg.push_str(&format!("; and {} more", r.len() - SHOWN));
        }
        Some(msg)
    }
}

pub(crate) fn timestamps(atime: Timestamp, mtime: Timestamp) -> Timestamps {
    let ts = |t: Timestamp| Timespec {
        tv_sec: t.secs,
        tv_nsec: i64::from(t.nanos),
    };
    Timestamps {
        last_access: ts(atime),
        last_modification: ts(mtime),
    }
}

impl Extra {
    /// Just a mode: for files flr makes itself (stream side files).
    pub(crate) fn mode_only(mode: u32) -> Extra {
        Extra {
            mode: Some(mode),
            ..Extra::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_lists() {
        assert_eq!(Preserve::parse("none"), Ok(Preserve::default()));
        assert_eq!(Preserve::parse("all"), Ok(Preserve::ALL));
        let p = Preserve::parse("acl,owner").unwrap();
        assert!(p.acl && p.owner && !p.xattrs);
        assert!(Preserve::parse("bogus").is_err());
        assert!(p.wants(acl::ACCESS) && !p.wants(b"user.x"));
    }
}
