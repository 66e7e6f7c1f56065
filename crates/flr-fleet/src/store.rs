//! The results location: where tasks write their results and take their
//! slot leases, and where `flr fleet report` reads them. A [`Store`] keeps
//! named documents (`results/ID.json`, `leases/FAMILY/slot-2.json`) with
//! four atomic operations: replace, create-if-absent, delete-if-unchanged
//! and read; and a listing by prefix. [`LocalStore`] is a folder (local or
//! shared: NFS, SMB, Azure Files); `flr-ops` has the blob container one
//! (on `flr-blob`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::FleetError;

/// A document and the version it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The bytes.
    pub data: Vec<u8>,
    /// What identifies this version: a blob's ETag, or for a folder the
    /// bytes' sha256 (documents there are never rewritten in place).
    pub tag: String,
}

/// A results location.
pub trait Store: Send + Sync {
    /// How to name it in messages (never with a SAS).
    fn describe(&self) -> String;
    /// Reads `name`; `None` when it does not exist.
    fn read(&self, name: &str) -> Result<Option<Versioned>, FleetError>;
    /// Writes `name` whole, replacing what was there, atomically (a
    /// reader sees the old or the new document, never a part).
    fn replace(&self, name: &str, data: &[u8]) -> Result<(), FleetError>;
    /// Creates `name` with `data` if it does not exist, atomically: of
    /// several concurrent creators exactly one gets the new version's tag,
    /// the others `None`.
    fn create(&self, name: &str, data: &[u8]) -> Result<Option<String>, FleetError>;
    /// Deletes `name` if it is still the version `tag` names: `true` when
    /// this call deleted it, `false` when it had changed or was gone.
    fn delete_if(&self, name: &str, tag: &str) -> Result<bool, FleetError>;
    /// Calls `each` with the name of every document under `prefix`.
    fn list(
        &self,
        prefix: &str,
        each: &mut dyn FnMut(&str) -> Result<(), FleetError>,
    ) -> Result<(), FleetError>;
}

/// A folder as a results location.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

fn tag_of(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// How long a folder's delete lock may be held before it counts as left
/// behind by a killed process (the critical section is a read and a rename).
const DELETE_LOCK_STALE: Duration = Duration::from_secs(30);

impl LocalStore {
    /// The folder `root` (created when missing).
    pub fn new(root: &Path) -> Result<LocalStore, FleetError> {
        std::fs::create_dir_all(root).map_err(|e| FleetError::Store {
            location: root.display().to_string(),
            what: "create the folder".into(),
            message: e.to_string(),
        })?;
        Ok(LocalStore {
            root: root.to_path_buf(),
        })
    }

    fn err(&self, what: String, e: impl std::fmt::Display) -> FleetError {
        FleetError::Store {
            location: self.root.display().to_string(),
            what,
            message: e.to_string(),
        }
    }

    fn path(&self, name: &str) -> Result<PathBuf, FleetError> {
        if name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(self.err(format!("name {name:?}"), "not a relative path"));
        }
        Ok(self.root.join(name))
    }

    /// Writes `data` to a fresh temporary file beside `path`, synced.
    fn temp(&self, path: &Path, data: &[u8]) -> Result<PathBuf, FleetError> {
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir)
            .map_err(|e| self.err(format!("create {}", dir.display()), e))?;
        let nonce = format!(
            "{}.{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let tmp = dir.join(format!(
            ".{}.tmp{nonce}",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        let res = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()
        })();
        match res {
            Ok(()) => Ok(tmp),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(self.err(format!("write {}", tmp.display()), e))
            }
        }
    }
}

impl Store for LocalStore {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn read(&self, name: &str) -> Result<Option<Versioned>, FleetError> {
        match std::fs::read(self.path(name)?) {
            Ok(data) => Ok(Some(Versioned {
                tag: tag_of(&data),
                data,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(format!("read {name}"), e)),
        }
    }

    fn replace(&self, name: &str, data: &[u8]) -> Result<(), FleetError> {
        let path = self.path(name)?;
        let tmp = self.temp(&path, data)?;
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            self.err(format!("rename into {name}"), e)
        })
    }

    fn create(&self, name: &str, data: &[u8]) -> Result<Option<String>, FleetError> {
        // A hard link fails when the name exists, and the document appears
        // with its whole content at once (NFS and SMB keep that too).
        let path = self.path(name)?;
        let tmp = self.temp(&path, data)?;
        let res = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match res {
            Ok(()) => Ok(Some(tag_of(data))),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(self.err(format!("create {name}"), e)),
        }
    }

    fn delete_if(&self, name: &str, tag: &str) -> Result<bool, FleetError> {
        // Deleters take a lock of their own, so that between reading the
        // version and removing it no other deleter removes it and no
        // creator can replace it (a creator needs the name free).
        let path = self.path(name)?;
        let lock = PathBuf::from(format!("{}.deleting", path.display()));
        let started = std::time::Instant::now();
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock)
            {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(&lock)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|m| m.elapsed().ok())
                        .is_some_and(|age| age > DELETE_LOCK_STALE);
                    if stale {
                        let _ = std::fs::remove_file(&lock);
                    } else if started.elapsed() > DELETE_LOCK_STALE * 2 {
                        return Err(self.err(format!("lock {name} for deletion"), "held too long"));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(self.err(format!("lock {name} for deletion"), e)),
            }
        }
        let res = (|| {
            let now = match std::fs::read(&path) {
                Ok(d) => d,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(self.err(format!("read {name}"), e)),
            };
            if tag_of(&now) != tag {
                return Ok(false);
            }
            match std::fs::remove_file(&path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(self.err(format!("delete {name}"), e)),
            }
        })();
        let _ = std::fs::remove_file(&lock);
        res
    }

    fn list(
        &self,
        prefix: &str,
        each: &mut dyn FnMut(&str) -> Result<(), FleetError>,
    ) -> Result<(), FleetError> {
        // Prefixes are folders here (`results/`): walked one entry at a
        // time, so a folder of 100,000 results is never held in memory.
        let dir = self.root.join(prefix.trim_end_matches('/'));
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.err(format!("list {prefix}"), e)),
        };
        for entry in rd {
            let entry = entry.map_err(|e| self.err(format!("list {prefix}"), e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let full = format!("{}/{name}", prefix.trim_end_matches('/'));
            each(&full)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_operations_are_atomic_and_exclusive() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::new(d.path()).unwrap();
        assert!(s.read("results/a.json").unwrap().is_none());
        s.replace("results/a.json", b"one").unwrap();
        s.replace("results/a.json", b"two").unwrap();
        assert_eq!(s.read("results/a.json").unwrap().unwrap().data, b"two");
        let tag = s.create("leases/f/slot-0.json", b"x").unwrap().unwrap();
        assert!(s.create("leases/f/slot-0.json", b"y").unwrap().is_none());
        let v = s.read("leases/f/slot-0.json").unwrap().unwrap();
        assert_eq!(v.tag, tag);
        assert!(!s.delete_if("leases/f/slot-0.json", "other").unwrap());
        assert!(s.delete_if("leases/f/slot-0.json", &v.tag).unwrap());
        assert!(!s.delete_if("leases/f/slot-0.json", &v.tag).unwrap());
        let mut names = Vec::new();
        s.list("results/", &mut |n| {
            names.push(n.to_string());
            Ok(())
        })
        .unwrap();
        assert_eq!(names, ["results/a.json"]);
        assert!(s.read("../x").is_err());
        // No temporary files are left behind.
        assert_eq!(
            std::fs::read_dir(d.path().join("results")).unwrap().count(),
            1
        );
    }

    #[test]
    fn concurrent_creators_get_exactly_one_win() {
        let d = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(LocalStore::new(d.path()).unwrap());
        let wins: usize = (0..16)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || s.create("l/slot.json", format!("{i}").as_bytes()))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| usize::from(t.join().unwrap().unwrap().is_some()))
            .sum();
        assert_eq!(wins, 1);
    }
}
