//! Finding the parent of a differencing disk (VHD, VHDX).
//!
//! A differencing disk stores where its parent was when it was made: a
//! relative path, an absolute Windows path, a file URL. A [`ParentResolver`]
//! turns those locator strings into an opened [`Source`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{FileSource, IoError, Source};

/// Opens the parent of a differencing disk.
pub trait ParentResolver: Send + Sync {
    /// `candidates`: the parent locator paths stored in the child, in the
    /// order to try (relative ones first). Returns the opened parent and the
    /// path it was found at. When none opens, the error names every path tried.
    fn open_parent(&self, candidates: &[String]) -> Result<(Source, String), IoError>;

    /// The resolver for the parent's own parent, once the parent was found at
    /// `parent_path` (the path [`ParentResolver::open_parent`] returned):
    /// locators stored in the parent are relative to the parent's folder.
    ///
    /// The default resolves beside `parent_path` as local files
    /// ([`FileParentResolver`]); resolvers over something other than the
    /// local file system override it.
    fn for_parent(&self, parent_path: &str) -> Box<dyn ParentResolver> {
        Box::new(FileParentResolver::new(Path::new(parent_path)))
    }
}

/// Resolves locators as local files relative to the child's folder.
///
/// For each candidate, in order:
/// - Windows separators `\` become `/`, and a leading `.\` or `./` is dropped;
/// - a relative path is tried in the child's folder;
/// - an absolute Windows path (`C:\x\p.vhd`, `\\server\share\p.vhd`,
///   `\\?\Volume{…}\p.vhd`) cannot be opened here, so its file name is tried
///   beside the child;
/// - an absolute unix path is tried as given, then by file name beside the child;
/// - a `file://` URL (with or without a host) is treated as the absolute path it names.
///
/// The returned path is the canonical path of the file that opened (so chains
/// can detect cycles by comparing paths).
#[derive(Debug, Clone)]
pub struct FileParentResolver {
    base: PathBuf,
}

impl FileParentResolver {
    /// A resolver for the child at `child_path`: relative locators are
    /// looked up in its folder.
    pub fn new(child_path: &Path) -> Self {
        let base = match child_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        FileParentResolver { base }
    }

    /// The folder relative locators are resolved in.
    pub fn base_dir(&self) -> &Path {
        &self.base
    }

    /// The local paths to try for one locator string, in order.
    pub fn paths_for(&self, locator: &str) -> Vec<PathBuf> {
        locator_paths(locator)
            .into_iter()
            .map(|p| match p {
                LocatorPath::Relative(rel) => self.base.join(rel),
                LocatorPath::Absolute(abs) => PathBuf::from(abs),
            })
            .collect()
    }
}

/// One place a parent locator points at (see [`locator_paths`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocatorPath {
    /// Relative to the child's folder, with `/` separators and no leading
    /// `./`; may still hold `..` components.
    Relative(String),
    /// An absolute unix path (`/srv/base.vhd`).
    Absolute(String),
}

/// The places to try for one locator string stored in a differencing disk,
/// in order, by the rules [`FileParentResolver`] documents: Windows `\`
/// become `/`, a leading `./` is dropped, an absolute Windows path or a
/// `file://` URL gives its file name beside the child (an absolute unix path
/// is first tried as given). Resolvers over other stores (blob containers)
/// map the [`LocatorPath::Relative`] names onto their own folders.
pub fn locator_paths(locator: &str) -> Vec<LocatorPath> {
    let mut out = Vec::new();
    let loc = locator.trim_end_matches('\0').trim();
    if loc.is_empty() {
        return out;
    }
    let loc = strip_file_url(loc);
    let unified = loc.replace('\\', "/");
    if is_windows_absolute(&loc) {
        if let Some(name) = file_name_of(&unified) {
            out.push(LocatorPath::Relative(name.to_string()));
        }
        return out;
    }
    if unified.starts_with('/') {
        out.push(LocatorPath::Absolute(unified.clone()));
        if let Some(name) = file_name_of(&unified) {
            out.push(LocatorPath::Relative(name.to_string()));
        }
        return out;
    }
    let mut rel = unified.as_str();
    while let Some(r) = rel.strip_prefix("./") {
        rel = r;
    }
    if !rel.is_empty() {
        out.push(LocatorPath::Relative(rel.to_string()));
    }
    out
}

/// `file://host/path` or `file:///path` → `/path` (percent escapes decoded);
/// anything else unchanged.
fn strip_file_url(s: &str) -> String {
    let Some(rest) = s
        .strip_prefix("file://")
        .or_else(|| s.strip_prefix("FILE://"))
    else {
        return s.to_string();
    };
    // Drop the host part (`localhost`, empty).
    let path = match rest.find('/') {
        Some(i) => &rest[i..],
        None => return s.to_string(),
    };
    percent_decode(path)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_windows_absolute(s: &str) -> bool {
    let b = s.as_bytes();
    let drive = b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':';
    drive || s.starts_with("\\\\") || s.starts_with('\\')
}

fn file_name_of(unified: &str) -> Option<&str> {
    let name = unified.rsplit('/').next()?;
    // Also drop a `C:` left when the path was just `C:name`.
    let name = match name.find(':') {
        Some(i) => &name[i + 1..],
        None => name,
    };
    if name.is_empty() || name == "." || name == ".." {
        None
    } else {
        Some(name)
    }
}

impl ParentResolver for FileParentResolver {
    fn open_parent(&self, candidates: &[String]) -> Result<(Source, String), IoError> {
        let mut tried: Vec<String> = Vec::new();
        let mut seen: HashSet<PathBuf> = HashSet::new();
        let mut last_err: Option<String> = None;
        for c in candidates {
            for p in self.paths_for(c) {
                if !seen.insert(p.clone()) {
                    continue;
                }
                tried.push(p.display().to_string());
                if !p.is_file() {
                    last_err = Some(format!("{}: not a file or not found", p.display()));
                    continue;
                }
                match FileSource::open(&p) {
                    Ok(src) => {
                        let found = std::fs::canonicalize(&p).unwrap_or(p);
                        let src: Source = Arc::new(src);
                        return Ok((src, found.display().to_string()));
                    }
                    Err(e) => last_err = Some(e.to_string()),
                }
            }
        }
        let msg = if tried.is_empty() {
            format!(
                "parent disk not found: the child stores no usable parent locator (locators: {})",
                quote_list(candidates)
            )
        } else {
            format!(
                "parent disk not found; tried {} (locators stored in the child: {}){}",
                quote_list(&tried),
                quote_list(candidates),
                last_err
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            )
        };
        Err(IoError::Os {
            layer: "parent locator".into(),
            offset: 0,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, msg),
        })
    }

    fn for_parent(&self, parent_path: &str) -> Box<dyn ParentResolver> {
        Box::new(FileParentResolver::new(Path::new(parent_path)))
    }
}

/// Names for an error message: each quoted, comma-separated; `none` for
/// none (what a parent search tried, the locators a child stores).
pub fn quote_list(items: &[String]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    items
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A resolver that refuses (for sources without a folder, such as a disk
/// read from memory or from inside another container), with a clear error.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoParentResolver;

impl ParentResolver for NoParentResolver {
    fn open_parent(&self, candidates: &[String]) -> Result<(Source, String), IoError> {
        Err(IoError::Unsupported {
            layer: "parent locator".into(),
            offset: 0,
            what: format!(
                "this differencing disk needs its parent ({}), but it was not opened from a local file, so there is no folder to look in",
                quote_list(candidates)
            ),
        })
    }

    fn for_parent(&self, _parent_path: &str) -> Box<dyn ParentResolver> {
        Box::new(NoParentResolver)
    }
}

/// The errors a differencing format gives when its chain of parents
/// cannot be followed (see [`open_parent_step`]).
pub trait ChainFailure: Sized {
    /// Too many parents, or a cycle; the message names the chain so far.
    fn chain(message: String) -> Self;
    /// None of the candidate parents opened.
    fn not_found(error: IoError) -> Self;
    /// The parent found at `path` did not open as a disk.
    fn parent(path: String, error: Self) -> Self;
    /// Whether this is a [`ChainFailure::chain`] error; one from further
    /// up is passed on as it is, so that its message stays flat.
    fn is_chain(&self) -> bool;
}

/// One step down a differencing chain, the same for every format: refuses
/// a chain of more than `max` parents, opens the first of `candidates` the
/// resolver finds, refuses one already opened further up (`seen`, the
/// paths so far, gets the parent's), and opens it with `open` (the format's
/// opener, given the parent's bytes, the resolver for its own parent and
/// `seen`). Returns the parent and the path it was found at.
pub fn open_parent_step<D, E: ChainFailure>(
    parents: &dyn ParentResolver,
    candidates: &[String],
    seen: &mut Vec<String>,
    max: usize,
    open: impl FnOnce(Source, &dyn ParentResolver, &mut Vec<String>) -> Result<D, E>,
) -> Result<(D, String), E> {
    if seen.len() >= max {
        return Err(E::chain(format!(
            "more than {max} parents: {}",
            seen.join(" -> ")
        )));
    }
    let (src, path) = parents.open_parent(candidates).map_err(E::not_found)?;
    if seen.contains(&path) {
        return Err(E::chain(format!("cycle: {} -> {path}", seen.join(" -> "))));
    }
    seen.push(path.clone());
    let resolver = parents.for_parent(&path);
    match open(src, resolver.as_ref(), seen) {
        Ok(d) => Ok((d, path)),
        Err(e) if e.is_chain() => Err(e),
        Err(e) => Err(E::parent(path, e)),
    }
}

/// What a child records of the parent it opened at `path`: the parent then
/// the parent's own chain, and the parent's warnings, each prefixed with
/// the parent's path unless it is already about a parent.
pub fn inherit_chain(
    chain: &mut Vec<String>,
    warnings: &mut Vec<String>,
    path: &str,
    parent_chain: &[String],
    parent_warnings: &[String],
) {
    chain.push(path.to_string());
    chain.extend(parent_chain.iter().cloned());
    for w in parent_warnings {
        if w.starts_with("parent ") {
            warnings.push(w.clone());
        } else {
            warnings.push(format!("parent {path}: {w}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> FileParentResolver {
        FileParentResolver::new(Path::new("/imgs/vm/child.vhd"))
    }

    #[test]
    fn converts_windows_relative_paths() {
        assert_eq!(
            r().paths_for(".\\parent.vhd"),
            vec![PathBuf::from("/imgs/vm/parent.vhd")]
        );
        assert_eq!(
            r().paths_for("..\\base\\p.vhd"),
            vec![PathBuf::from("/imgs/vm/../base/p.vhd")]
        );
        assert_eq!(
            r().paths_for("p.vhdx\0\0"),
            vec![PathBuf::from("/imgs/vm/p.vhdx")]
        );
    }

    #[test]
    fn absolute_windows_paths_try_the_file_name_beside_the_child() {
        assert_eq!(
            r().paths_for("C:\\Hyper-V\\disks\\base.vhdx"),
            vec![PathBuf::from("/imgs/vm/base.vhdx")]
        );
        assert_eq!(
            r().paths_for("\\\\?\\Volume{1234}\\d\\base.vhdx"),
            vec![PathBuf::from("/imgs/vm/base.vhdx")]
        );
    }

    #[test]
    fn unix_paths_and_urls() {
        assert_eq!(
            r().paths_for("/srv/base.vhd"),
            vec![
                PathBuf::from("/srv/base.vhd"),
                PathBuf::from("/imgs/vm/base.vhd")
            ]
        );
        assert_eq!(
            r().paths_for("file://localhost/Users/me/My%20Disk.vhd"),
            vec![
                PathBuf::from("/Users/me/My Disk.vhd"),
                PathBuf::from("/imgs/vm/My Disk.vhd")
            ]
        );
        assert!(r().paths_for("").is_empty());
    }

    #[test]
    fn locator_paths_are_store_neutral() {
        assert_eq!(
            locator_paths(".\\.\\dir\\p.vhd"),
            vec![LocatorPath::Relative("dir/p.vhd".into())]
        );
        assert_eq!(
            locator_paths("\\\\server\\share\\base.vhdx"),
            vec![LocatorPath::Relative("base.vhdx".into())]
        );
        assert_eq!(
            locator_paths("/srv/base.vhd"),
            vec![
                LocatorPath::Absolute("/srv/base.vhd".into()),
                LocatorPath::Relative("base.vhd".into())
            ]
        );
    }

    #[test]
    fn missing_parent_error_names_every_path() {
        let dir = tempfile::tempdir().unwrap();
        let res = FileParentResolver::new(&dir.path().join("child.vhd"));
        let err = match res.open_parent(&[".\\nope.vhd".into(), "C:\\x\\other.vhd".into()]) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("opened a parent that does not exist"),
        };
        assert!(
            err.contains("nope.vhd") && err.contains("other.vhd"),
            "{err}"
        );
        let err = match NoParentResolver.open_parent(&["p.vhd".into()]) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("NoParentResolver opened something"),
        };
        assert!(err.contains("p.vhd"), "{err}");
    }

    #[test]
    fn opens_a_parent_beside_the_child() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.vhd"), b"abc").unwrap();
        let res = FileParentResolver::new(&dir.path().join("child.vhd"));
        let (src, path) = res.open_parent(&["D:\\old\\p.vhd".into()]).unwrap();
        assert_eq!(src.len(), 3);
        assert!(path.ends_with("p.vhd"));
    }
}
