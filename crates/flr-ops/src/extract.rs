//! Writing restored files into the destination folder, safely.
//!
//! Everything is created relative to an open handle on the destination
//! folder (`openat`/`mkdirat`/`renameat` with `O_NOFOLLOW`), so no name from
//! the image and no symlink already in the destination can lead a write
//! outside it. Each file is written under a temporary name and renamed into
//! place when complete, so an interrupted restore never leaves a
//! half-written file under the real name.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use flr_fs::Timestamp;
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, Timestamps};

use crate::fidelity::Extra;
use rustix::io::Errno;

/// A folder inside the destination, opened without following symlinks.
pub(crate) struct DestDir {
    fd: OwnedFd,
    /// Path relative to DEST, for messages.
    pub(crate) rel: String,
    partials: Arc<Partials>,
}

/// What to do when the final name already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overwrite {
    Refuse,
    Replace,
}

/// What kind of entry already sits at a name in the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExistingKind {
    File,
    Symlink,
    Dir,
    Other,
}

/// An entry already in the destination (`lstat`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Existing {
    pub(crate) kind: ExistingKind,
    pub(crate) size: u64,
    pub(crate) mtime: Timestamp,
    pub(crate) ino: u64,
    pub(crate) ctime: Timestamp,
}

impl Existing {
    /// What the restore journal compares.
    pub(crate) fn stat(&self) -> crate::journal::DestStat {
        crate::journal::DestStat {
            ino: self.ino,
            size: self.size,
            mtime: self.mtime,
            ctime: self.ctime,
        }
    }
}

/// An error while writing into the destination.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error("{path}: already exists in the destination (--overwrite=always to replace it, --skip-existing to keep it when identical, --overwrite=rename to write the new one beside it)")]
    Exists { path: String },
    #[error("{path}: is a symlink in the destination; refusing to follow it")]
    SymlinkInDest { path: String },
    #[error("{path}: {what}: {source}")]
    Os {
        path: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn os<'a>(path: &'a str, what: &'static str) -> impl FnOnce(Errno) -> WriteError + 'a {
    move |e| WriteError::Os {
        path: path.to_string(),
        what,
        source: e.into(),
    }
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

/// The temporary files a restore is writing, so that a signal handler can
/// remove them before the process exits (nothing half-written is left in
/// DEST); the session that runs the restore owns it and hands it to its
/// handler.
#[derive(Debug, Default)]
pub struct Partials {
    /// (id, their folder, name).
    list: Mutex<Vec<(u64, OwnedFd, String)>>,
    next: AtomicU64,
}

impl Partials {
    fn register(&self, dir: &OwnedFd, tmp: &str) -> Unfinished<'_> {
        let Ok(fd) = dir.try_clone() else {
            return Unfinished(self, None);
        };
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.list
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, fd, tmp.to_string()));
        Unfinished(self, Some(id))
    }

    /// A temporary name no other file of this restore uses.
    fn tmp_name(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!(".flr-{}-{n}.partial", std::process::id())
    }

    /// Whether `name` is a temporary file left by a restore that is no
    /// longer running (its process id is gone): `.flr-PID-N.partial`.
    fn is_stale(name: &[u8]) -> bool {
        let Some(rest) = name
            .strip_prefix(b".flr-")
            .and_then(|r| r.strip_suffix(b".partial"))
        else {
            return false;
        };
        let Some((pid, n)) = std::str::from_utf8(rest)
            .ok()
            .and_then(|r| r.split_once('-'))
        else {
            return false;
        };
        let (Ok(pid), Ok(_)) = (pid.parse::<u32>(), n.parse::<u64>()) else {
            return false;
        };
        pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
    }

    /// Removes every temporary file still being written.
    pub fn remove_all(&self) {
        let list = std::mem::take(&mut *self.list.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, dir, tmp) in list {
            let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
        }
    }
}

/// A temporary file's entry in [`Partials`], removed when dropped.
struct Unfinished<'a>(&'a Partials, Option<u64>);

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.1 {
            self.0
                .list
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|(i, _, _)| *i != id);
        }
    }
}

fn timestamps(t: Timestamp) -> Timestamps {
    crate::fidelity::timestamps(t, t)
}

impl DestDir {
    /// Opens (creating if needed) the destination folder chosen by the user.
    /// The user's own path may contain symlinks; nothing below it is followed.
    pub(crate) fn open_root(path: &Path, partials: Arc<Partials>) -> Result<DestDir, WriteError> {
        let shown = path.display().to_string();
        std::fs::create_dir_all(path).map_err(|source| WriteError::Os {
            path: shown.clone(),
            what: "cannot create the destination folder",
            source,
        })?;
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(os(&shown, "cannot open the destination folder"))?;
        Ok(DestDir {
            fd,
            rel: String::new(),
            partials,
        })
    }

    /// Opens or creates the subfolder `name` (a safe component).
    pub(crate) fn subdir(&self, name: &[u8]) -> Result<DestDir, WriteError> {
        let shown = join(&self.rel, &String::from_utf8_lossy(name));
        match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(os(&shown, "cannot create folder")(e)),
        }
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR if self.is_symlink(name) => WriteError::SymlinkInDest {
                path: shown.clone(),
            },
            Errno::NOTDIR => WriteError::Exists {
                path: shown.clone(),
            },
            e => os(&shown, "cannot open folder")(e),
        })?;
        Ok(DestDir {
            fd,
            rel: shown,
            partials: self.partials.clone(),
        })
    }

    /// The open folder (xattrs are set on it).
    pub(crate) fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn is_symlink(&self, name: &[u8]) -> bool {
        rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .map(|st| {
                rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink
            })
            .unwrap_or(false)
    }

    pub(crate) fn exists(&self, name: &[u8]) -> bool {
        rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW).is_ok()
    }

    /// Opens the destination folder if it exists, creating nothing
    /// (`get --dry-run`).
    pub(crate) fn open_existing_root(path: &Path) -> Option<DestDir> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        Some(DestDir {
            fd,
            rel: String::new(),
            partials: Arc::default(),
        })
    }

    /// Opens the subfolder `name` if it exists (never a symlink), creating
    /// nothing.
    pub(crate) fn existing_subdir(&self, name: &[u8]) -> Option<DestDir> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        Some(DestDir {
            fd,
            rel: join(&self.rel, &String::from_utf8_lossy(name)),
            partials: self.partials.clone(),
        })
    }

    /// What is already at `name` (not following a symlink), if anything.
    pub(crate) fn existing(&self, name: &[u8]) -> Option<Existing> {
        let st = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        let kind = match rustix::fs::FileType::from_raw_mode(st.st_mode) {
            rustix::fs::FileType::RegularFile => ExistingKind::File,
            rustix::fs::FileType::Symlink => ExistingKind::Symlink,
            rustix::fs::FileType::Directory => ExistingKind::Dir,
            _ => ExistingKind::Other,
        };
        Some(Existing {
            kind,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime: Timestamp {
                secs: st.st_mtime,
                nanos: u32::try_from(st.st_mtime_nsec).unwrap_or(0),
            },
            ino: st.st_ino,
            ctime: Timestamp {
                secs: st.st_ctime,
                nanos: u32::try_from(st.st_ctime_nsec).unwrap_or(0),
            },
        })
    }

    /// The restore journal at `name`, opened to be read and appended to
    /// (created with mode 0600 if missing; never through a symlink).
    pub(crate) fn open_journal(&self, name: &[u8]) -> std::io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDWR | OFlags::CREATE | OFlags::APPEND | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let f = File::from(fd);
        if !f.metadata()?.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        Ok(f)
    }

    /// The file at `name`, opened for reading (never through a symlink).
    pub(crate) fn open_read(&self, name: &[u8]) -> std::io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(File::from(fd))
    }

    /// The sha256 of the regular file at `name` (never through a symlink).
    pub(crate) fn sha256_of(&self, name: &[u8]) -> std::io::Result<[u8; 32]> {
        use sha2::Digest;
        use std::io::Read;
        let mut f = self.open_read(name)?;
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; crate::CHUNK];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(h.finalize().into())
    }

    /// The target of the symlink at `name`.
    pub(crate) fn link_target(&self, name: &[u8]) -> Option<Vec<u8>> {
        rustix::fs::readlinkat(&self.fd, name, Vec::new())
            .ok()
            .map(|t| t.into_bytes())
    }

    /// Removes the temporary files that an interrupted restore (one whose
    /// process is gone) left in this folder; returns how many. A restore
    /// still running is left alone, and nothing else is touched.
    pub(crate) fn remove_stale_partials(&self) -> u64 {
        let Ok(dir) = rustix::fs::Dir::read_from(&self.fd) else {
            return 0;
        };
        let stale: Vec<std::ffi::CString> = dir
            .filter_map(Result::ok)
            .filter(|e| e.file_type() != rustix::fs::FileType::Directory)
            .filter(|e| Partials::is_stale(e.file_name().to_bytes()))
            .map(|e| e.file_name().to_owned())
            .collect();
        let mut n = 0;
        for name in stale {
            if rustix::fs::unlinkat(&self.fd, name.as_c_str(), AtFlags::empty()).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Sets the folder's own mtime (after its children are written).
    pub(crate) fn set_mtime(&self, mtime: Timestamp) -> Result<(), WriteError> {
        rustix::fs::futimens(&self.fd, &timestamps(mtime))
            .map_err(os(&self.rel, "cannot set mtime"))
    }

    /// Gives the folder its owner and xattrs, then its atime and mtime
    /// (after its children are written; see [`Extra`]).
    pub(crate) fn finish(&self, extra: &Extra) -> Result<(), WriteError> {
        extra.apply_dir(self.fd.as_fd());
        match extra.times() {
            Some(t) => {
                rustix::fs::futimens(&self.fd, &t).map_err(os(&self.rel, "cannot set mtime"))
            }
            None => Ok(()),
        }
    }

    /// The open folder (for calls on the entries in it).
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn check_free(&self, name: &[u8], shown: &str, ow: Overwrite) -> Result<(), WriteError> {
        if ow == Overwrite::Refuse && self.exists(name) {
            return Err(WriteError::Exists {
                path: shown.to_string(),
            });
        }
        Ok(())
    }

    fn publish(
        &self,
        tmp: &str,
        name: &[u8],
        shown: &str,
        ow: Overwrite,
    ) -> Result<(), WriteError> {
        let flags = match ow {
            Overwrite::Refuse => RenameFlags::NOREPLACE,
            Overwrite::Replace => RenameFlags::empty(),
        };
        let r = rustix::fs::renameat_with(&self.fd, tmp, &self.fd, name, flags);
        if let Err(e) = r {
            let _ = rustix::fs::unlinkat(&self.fd, tmp, AtFlags::empty());
            return Err(match e {
                Errno::EXIST => WriteError::Exists {
                    path: shown.to_string(),
                },
                Errno::ISDIR | Errno::NOTEMPTY => WriteError::Exists {
                    path: shown.to_string(),
                },
                e => os(shown, "cannot rename into place")(e),
            });
        }
        Ok(())
    }

    /// Writes a regular file: `fill` writes the data into the temporary file;
    /// then owner, mode, xattrs and times are set (see [`Extra`]) and it is
    /// renamed to `name`.
    pub(crate) fn write_file<T, E>(
        &self,
        name: &[u8],
        ow: Overwrite,
        extra: &Extra,
        fill: impl FnOnce(&mut File) -> Result<T, E>,
    ) -> Result<Result<T, E>, WriteError> {
        let shown = join(&self.rel, &String::from_utf8_lossy(name));
        self.check_free(name, &shown, ow)?;
        let tmp = self.partials.tmp_name();
        let fd = rustix::fs::openat(
            &self.fd,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(os(&shown, "cannot create temporary file"))?;
        let _unfinished = self.partials.register(&self.fd, &tmp);
        let mut file = File::from(fd);
        let cleanup = |this: &DestDir| {
            let _ = rustix::fs::unlinkat(&this.fd, tmp.as_str(), AtFlags::empty());
        };
        let value = match fill(&mut file) {
            Ok(v) => v,
            Err(e) => {
                drop(file);
                cleanup(self);
                return Ok(Err(e));
            }
        };
        let finish = (|| {
            file.flush().map_err(|source| WriteError::Os {
                path: shown.clone(),
                what: "write failed",
                source,
            })?;
            extra
                .apply_file(file.as_fd())
                .map_err(os(&shown, "cannot set mode"))?;
            if let Some(t) = extra.times() {
                rustix::fs::futimens(file.as_fd(), &t).map_err(os(&shown, "cannot set mtime"))?;
            }
            Ok(())
        })();
        drop(file);
        if let Err(e) = finish {
            cleanup(self);
            return Err(e);
        }
        self.publish(&tmp, name, &shown, ow)?;
        Ok(Ok(value))
    }

    /// Recreates a symlink (never followed) with the target as stored.
    pub(crate) fn write_symlink(
        &self,
        name: &[u8],
        target: &[u8],
        ow: Overwrite,
        mtime: Option<Timestamp>,
    ) -> Result<(), WriteError> {
        let shown = join(&self.rel, &String::from_utf8_lossy(name));
        self.check_free(name, &shown, ow)?;
        let tmp = self.partials.tmp_name();
        rustix::fs::symlinkat(target, &self.fd, tmp.as_str())
            .map_err(os(&shown, "cannot create symlink"))?;
        if let Some(t) = mtime {
            let _ = rustix::fs::utimensat(
                &self.fd,
                tmp.as_str(),
                &timestamps(t),
                AtFlags::SYMLINK_NOFOLLOW,
            );
        }
        self.publish(&tmp, name, &shown, ow)
    }
}
