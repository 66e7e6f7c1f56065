//! Disk images stored as files inside a volume (an FSLogix profile VHDX on
//! a file server's disk, a Hyper-V host's VM disks): the file is read
//! through the filesystem's own file handles as one more [`ReadAt`] and
//! scanned like any image, never extracted to a temporary file.
//!
//! Ids compose: the volumes of the image in file `/Profiles/alice.vhdx` on
//! volume `p2` are `p2:/Profiles/alice.vhdx::p1`, … (`::disk` without a
//! partition table), and a key for one of them is given under that id.

use std::sync::{Arc, Mutex};

use flr_fs::{FileHandle, FileKind, FileRun, Filesystem, FsError, FsPath};
use flr_io::{
    check_range, locator_paths, Change, IoError, LocatorPath, ParentResolver, ReadAt, Source,
};

use crate::{EngineError, Image, Volume};

self_cell::self_cell!(
    /// An open file: its handle borrows the filesystem, which the cell
    /// keeps alive.
    struct OpenFile {
        owner: Arc<dyn Filesystem>,
        #[covariant]
        dependent: Handle,
    }
);

type Handle<'a> = Box<dyn FileHandle + 'a>;

/// How many idle handles a file keeps for the next reads (each parallel
/// reader takes one).
const POOL: usize = 8;

/// A regular file of a filesystem, as a [`ReadAt`]: reads go through the
/// filesystem's file handles (kept in a small pool, so parallel readers do
/// not wait for each other and a handle's extent map is built once).
pub struct FsFile {
    fs: Arc<dyn Filesystem>,
    path: FsPath,
    len: u64,
    layer: String,
    pool: Mutex<Vec<OpenFile>>,
    base: Option<FileBase>,
}

/// What answers [`ReadAt::changed`] for a file compared against its older
/// version: where the file's bytes lie now and did then, on a volume that
/// answers the question for its own bytes.
struct FileBase {
    new: Vec<FileRun>,
    old: Vec<FileRun>,
    old_size: u64,
    volume: Source,
}

impl FsFile {
    /// The file at `path` of `fs`; `name` is how errors name it
    /// (`p2:/Profiles/alice.vhdx`).
    pub fn open(fs: Arc<dyn Filesystem>, path: FsPath, name: &str) -> Result<FsFile, FsError> {
        let meta = fs.metadata(&path)?;
        if meta.kind != FileKind::File {
            return Err(FsError::NotAFile {
                path: path.to_string(),
            });
        }
        let first = handle(&fs, &path)?;
        let len = first.borrow_dependent().size();
        Ok(FsFile {
            fs,
            path,
            len,
            layer: format!("file {name}"),
            pool: Mutex::new(vec![first]),
            base: None,
        })
    }

    /// Compares this file against its older version, the same path on
    /// `old_fs` (the older version of the volume), so that
    /// [`ReadAt::changed`] answers for its bytes: `volume` is what this
    /// file's filesystem reads, answering the question for its own bytes.
    /// Both versions must be laid out as they are stored (see
    /// [`flr_fs::FileExtents::layout`]); otherwise the file still answers
    /// [`Change::Unknown`], and the reason is returned.
    pub fn compare_with(&mut self, old_fs: &dyn Filesystem, volume: Source) -> Result<(), String> {
        let layout = |fs: &dyn Filesystem, which: &str| -> Result<Vec<FileRun>, String> {
            match fs.extents(&self.path) {
                Ok(Some(x)) => x
                    .layout
                    .ok_or_else(|| format!("the {which} file's bytes are not stored as they are")),
                Ok(None) => Err(format!("the {which} filesystem cannot map files")),
                Err(e) => Err(format!("the {which} file: {e}")),
            }
        };
        let new = layout(self.fs.as_ref(), "newer")?;
        let old = layout(old_fs, "older")?;
        let old_size = old_fs
            .metadata(&self.path)
            .map_err(|e| format!("the older file: {e}"))?
            .size;
        self.base = Some(FileBase {
            new,
            old,
            old_size,
            volume,
        });
        Ok(())
    }
}

fn handle(fs: &Arc<dyn Filesystem>, path: &FsPath) -> Result<OpenFile, FsError> {
    OpenFile::try_new(fs.clone(), |fs| fs.open(path))
}

impl ReadAt for FsFile {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        check_range(&self.layer, offset, buf.len(), self.len)?;
        let taken = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut h = match taken {
            Some(h) => h,
            None => handle(&self.fs, &self.path).map_err(|e| io(&self.layer, offset, e))?,
        };
        let mut done = 0;
        let r = h.with_dependent_mut(|_, f| {
            while done < buf.len() {
                let at = offset + done as u64;
                match f.read_at(at, &mut buf[done..]) {
                    Ok(0) => {
                        return Err(IoError::corrupt(
                            self.layer.clone(),
                            at,
                            "the file's data ends before its size",
                        ))
                    }
                    Ok(n) => done += n,
                    Err(e) => return Err(io(&self.layer, at, e)),
                }
            }
            Ok(())
        });
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL {
            pool.push(h);
        }
        r
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn layer(&self) -> &str {
        &self.layer
    }

    fn changed(&self, offset: u64, len: u64) -> Change {
        match (&self.base, offset.checked_add(len)) {
            (Some(b), Some(end)) if end <= self.len => {
                flr_fs::layout_changed(&b.new, &b.old, b.old_size, offset, len, b.volume.as_ref())
            }
            _ => Change::Unknown,
        }
    }
}

fn io(layer: &str, offset: u64, e: FsError) -> IoError {
    match e {
        FsError::Io(e) => e,
        other => IoError::Os {
            layer: layer.to_string(),
            offset,
            source: std::io::Error::other(other.to_string()),
        },
    }
}

/// Finds the parents of a differencing image stored in a filesystem:
/// relative locators beside the child in the same filesystem (`..` never
/// above its root), absolute ones as paths of that filesystem, then by
/// file name beside the child.
pub struct FsParentResolver {
    fs: Arc<dyn Filesystem>,
    dir: FsPath,
    volume: String,
}

impl FsParentResolver {
    /// Resolves relative to the folder of `child` on `fs` (volume `volume`,
    /// for names in messages).
    pub fn new(fs: Arc<dyn Filesystem>, child: &FsPath, volume: &str) -> FsParentResolver {
        let mut dir = child.clone();
        dir.0.pop();
        FsParentResolver {
            fs,
            dir,
            volume: volume.to_string(),
        }
    }

    fn candidates(&self, locator: &str) -> Vec<FsPath> {
        locator_paths(locator)
            .into_iter()
            .filter_map(|p| match p {
                LocatorPath::Absolute(abs) => Some(FsPath::parse(&abs)),
                LocatorPath::Relative(rel) => {
                    let mut at = self.dir.clone();
                    for c in rel.split('/').filter(|c| !c.is_empty() && *c != ".") {
                        if c == ".." {
                            at.0.pop()?;
                        } else {
                            at.0.push(c.as_bytes().to_vec());
                        }
                    }
                    Some(at)
                }
            })
            .collect()
    }
}

impl ParentResolver for FsParentResolver {
    fn open_parent(&self, candidates: &[String]) -> Result<(Source, String), IoError> {
        let mut tried = Vec::new();
        for c in candidates {
            for p in self.candidates(c) {
                let name = format!("{}:{p}", self.volume);
                if tried.contains(&name) {
                    continue;
                }
                tried.push(name.clone());
                if let Ok(f) = FsFile::open(self.fs.clone(), p, &name) {
                    return Ok((Arc::new(f), name));
                }
            }
        }
        Err(IoError::Os {
            layer: "parent locator".into(),
            offset: 0,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "parent disk not found in volume {}; tried {} (locators stored in the child: {})",
                    self.volume,
                    flr_io::quote_list(&tried),
                    flr_io::quote_list(candidates)
                ),
            ),
        })
    }

    fn for_parent(&self, parent_path: &str) -> Box<dyn ParentResolver> {
        let path = parent_path
            .strip_prefix(&format!("{}:", self.volume))
            .unwrap_or(parent_path);
        Box::new(FsParentResolver::new(
            self.fs.clone(),
            &FsPath::parse(path),
            &self.volume,
        ))
    }
}

/// A volume id that names a volume of an image stored in a file:
/// `OUTER:/path/to/image::INNER` (relative to the image's own prefix).
pub(crate) struct NestedId<'a> {
    /// The volume holding the file (full id).
    pub(crate) outer: String,
    /// The file's path, as given.
    pub(crate) path: &'a str,
}

impl<'a> NestedId<'a> {
    /// Splits `id` (which starts with `prefix`, the image's own) at its
    /// first `:` and the `::` after it.
    pub(crate) fn parse(id: &'a str, prefix: &str) -> Option<NestedId<'a>> {
        let rel = id.strip_prefix(prefix)?;
        let (vol, rest) = rel.split_once(':')?;
        let (path, _inner) = rest.split_once("::")?;
        if vol.is_empty() || path.is_empty() {
            return None;
        }
        Some(NestedId {
            outer: format!("{prefix}{vol}"),
            path,
        })
    }
}

/// Opens the image in file `path` of volume `vol` of `image`, scanned
/// with `image`'s keys and scan mode.
pub(crate) fn open(image: &Image, vol: &Volume, path: &str) -> Result<Image, EngineError> {
    let fs: Arc<dyn Filesystem> = Arc::from(vol.open_fs()?);
    let fs_path = FsPath::parse(path);
    let name = format!("{}:{path}", vol.id);
    let mut file = FsFile::open(fs.clone(), fs_path.clone(), &name).map_err(|e| match e {
        FsError::NotAFile { .. } => EngineError::NotAnImage {
            volume: vol.id.clone(),
            path: path.to_string(),
            reason: "not a regular file, so not a disk image".into(),
        },
        source => EngineError::Filesystem {
            volume: vol.id.clone(),
            source,
        },
    })?;
    // The newer of a pair: the same file in the older image is its base,
    // and that file's image the base of this one.
    let base = image
        .base()
        .and_then(|old| older(old, vol, path, &mut file));
    let parents = FsParentResolver::new(fs, &fs_path, &vol.id);
    let roots = vec![crate::scan::RootSpec {
        source: Arc::new(file),
        location: format!("{} → {name}", image.location),
        prefix: format!("{name}::"),
        parents: &parents,
    }];
    let mut images = crate::scan::scan(roots, image.scan, &image.keys)?;
    let mut img = images.remove(0);
    if let Some(b) = base {
        img.set_base(b);
    }
    Ok(img)
}

/// The older version of the image in file `path` of `vol`, found in `old`,
/// with `file` set to compare against its file; `None` when the older
/// image has no such volume or file, or it does not open (the newer one
/// then answers "unknown" for every change).
fn older(old: &Image, vol: &Volume, path: &str, file: &mut FsFile) -> Option<Arc<Image>> {
    let old_vol = old.volume(&vol.id).ok()?;
    let old_img = old.nested_image(&old_vol, path).ok()?;
    let old_fs = old_vol.open_fs().ok()?;
    file.compare_with(old_fs.as_ref(), vol.source().clone())
        .ok()?;
    Some(old_img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_ids() {
        let n = NestedId::parse("p2:/a/b.vhdx::p1", "").unwrap();
        assert_eq!((n.outer.as_str(), n.path), ("p2", "/a/b.vhdx"));
        let deep = "p2:/a.vhdx::p1:/b.vhd::disk";
        let n = NestedId::parse(deep, "").unwrap();
        assert_eq!((n.outer.as_str(), n.path), ("p2", "/a.vhdx"));
        let n = NestedId::parse(deep, "p2:/a.vhdx::").unwrap();
        assert_eq!((n.outer.as_str(), n.path), ("p2:/a.vhdx::p1", "/b.vhd"));
        assert!(NestedId::parse("p3/rootvg/rootlv", "").is_none());
        assert!(NestedId::parse("p2:/x", "").is_none());
    }
}
