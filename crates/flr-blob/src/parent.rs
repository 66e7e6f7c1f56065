//! The parents of a differencing disk (VHD, VHDX) that lies on blob
//! storage: blobs beside it in the same container.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use flr_io::{locator_paths, IoError, LocatorPath, ParentResolver, Source};

use crate::{BlobLocation, BlobOptions, BlobSource};

const LAYER: &str = "parent locator";

/// Resolves the parent locators stored in a differencing disk as blobs in
/// the child blob's container.
///
/// Locators are read as [`flr_io::FileParentResolver`] reads them (see
/// [`flr_io::locator_paths`]): `.\parent.vhd` and `../x/p.vhd` are taken
/// relative to the child's "folder" (its blob name up to the last `/`); an
/// absolute Windows path or a `file://` URL gives its file name beside the
/// child. A `..` that climbs above the container is refused: a locator
/// never leads out of the container. The parent is read with the child's
/// authorisation: the same SAS query (a container or account SAS reads the
/// parent; a blob SAS, `sr=b`, cannot, and the error says so), the account
/// SAS a connection string signed, and the same [`BlobOptions`] (Entra ID
/// bearer token included).
///
/// The blobs opened as parents, by this resolver and by the ones
/// [`ParentResolver::for_parent`] makes from it, are kept for their
/// [`BlobSource::stats`] ([`BlobParentResolver::opened`]).
#[derive(Clone)]
pub struct BlobParentResolver {
    child: BlobLocation,
    opts: BlobOptions,
    opened: Arc<Mutex<Vec<Opened>>>,
}

/// A parent blob opened, with where it is (for [`ParentResolver::for_parent`]).
type Opened = (BlobLocation, Arc<BlobSource>);

impl std::fmt::Debug for BlobParentResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobParentResolver")
            .field("child", &self.child)
            .finish_non_exhaustive()
    }
}

impl BlobParentResolver {
    /// A resolver for the child blob at `child`, opening parents with `opts`.
    pub fn new(child: BlobLocation, opts: BlobOptions) -> Self {
        BlobParentResolver {
            child,
            opts,
            opened: Arc::default(),
        }
    }

    /// The blobs to try for one locator string, in order. Locators that
    /// would leave the container give none.
    pub fn locations_for(&self, locator: &str) -> Vec<BlobLocation> {
        locator_paths(locator)
            .into_iter()
            .filter_map(|p| match p {
                LocatorPath::Relative(rel) => self.child.sibling(&rel),
                // A unix path names a local file; its file name beside the
                // child follows in the list.
                LocatorPath::Absolute(_) => None,
            })
            .collect()
    }

    /// The parent blobs opened so far, deepest child's parent first.
    pub fn opened(&self) -> Vec<Arc<BlobSource>> {
        self.lock().iter().map(|(_, b)| Arc::clone(b)).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Opened>> {
        // A panic elsewhere cannot leave the list half-updated (one push).
        self.opened.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ParentResolver for BlobParentResolver {
    fn open_parent(&self, candidates: &[String]) -> Result<(Source, String), IoError> {
        let mut tried: Vec<String> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut errors: Vec<String> = Vec::new();
        let mut denied = false;
        for c in candidates {
            for loc in self.locations_for(c) {
                let shown = loc.shown().to_string();
                if !seen.insert(shown.clone()) {
                    continue;
                }
                tried.push(shown.clone());
                match BlobSource::open(loc.clone(), self.opts.clone()) {
                    Ok(src) => {
                        let src = Arc::new(src);
                        self.lock().push((loc, Arc::clone(&src)));
                        let src: Source = src;
                        return Ok((src, shown));
                    }
                    // Not there: the next candidate may be.
                    Err(e) if e.status() == Some(404) => {}
                    Err(e) => {
                        denied |= matches!(e.status(), Some(401 | 403));
                        errors.push(e.to_string());
                    }
                }
            }
        }
        let container = self.child.container();
        let mut msg = if tried.is_empty() {
            format!(
                "parent disk not found: no locator stored in the child names a blob in container {container:?} (locators: {}; a locator cannot climb out of the container)",
                flr_io::quote_list(candidates)
            )
        } else {
            format!(
                "parent disk {}; tried blob(s) {} (locators stored in the child: {})",
                if denied { "not readable" } else { "not found" },
                flr_io::quote_list(&tried),
                flr_io::quote_list(candidates)
            )
        };
        if !errors.is_empty() {
            msg.push_str("; errors: ");
            msg.push_str(&errors.join("; "));
        }
        if denied && self.child.sas_resource().as_deref() == Some("b") {
            msg.push_str(&format!(
                "; the child's SAS is a blob SAS (sr=b), which can read {} only, not its parent: use a container SAS (sr=c) or an account SAS for container {container:?}, or an Entra ID credential without a SAS",
                self.child.shown()
            ));
        }
        let kind = if denied {
            std::io::ErrorKind::PermissionDenied
        } else {
            std::io::ErrorKind::NotFound
        };
        Err(IoError::Os {
            layer: LAYER.into(),
            offset: 0,
            source: std::io::Error::new(kind, msg),
        })
    }

    fn for_parent(&self, parent_path: &str) -> Box<dyn ParentResolver> {
        let found = self
            .lock()
            .iter()
            .rev()
            .find(|(l, _)| l.shown() == parent_path)
            .map(|(l, _)| l.clone());
        match found {
            Some(child) => Box::new(BlobParentResolver {
                child,
                opts: self.opts.clone(),
                opened: Arc::clone(&self.opened),
            }),
            // Only paths this resolver returned are passed back here.
            None => Box::new(flr_io::NoParentResolver),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(url: &str) -> BlobParentResolver {
        BlobParentResolver::new(BlobLocation::parse(url).unwrap(), BlobOptions::default())
    }

    fn shown(r: &BlobParentResolver, locator: &str) -> Vec<String> {
        r.locations_for(locator)
            .iter()
            .map(|l| l.shown().to_string())
            .collect()
    }

    #[test]
    fn locators_resolve_in_the_childs_folder() {
        let r = r("https://a.blob.core.windows.net/c/vm/child.vhd?sv=1&sr=c&sig=x");
        assert_eq!(
            shown(&r, ".\\parent.vhd"),
            ["https://a.blob.core.windows.net/c/vm/parent.vhd"]
        );
        assert_eq!(
            shown(&r, "..\\base\\p.vhd\0"),
            ["https://a.blob.core.windows.net/c/base/p.vhd"]
        );
        assert_eq!(
            shown(&r, "C:\\Hyper-V\\disks\\base.vhdx"),
            ["https://a.blob.core.windows.net/c/vm/base.vhdx"]
        );
        assert_eq!(
            shown(&r, "\\\\?\\Volume{1234}\\d\\base.vhdx"),
            ["https://a.blob.core.windows.net/c/vm/base.vhdx"]
        );
        // A unix path is a local file: only its name beside the child.
        assert_eq!(
            shown(&r, "/srv/base.vhd"),
            ["https://a.blob.core.windows.net/c/vm/base.vhd"]
        );
        assert_eq!(
            shown(&r, "file:///srv/My%20Base.vhd"),
            ["https://a.blob.core.windows.net/c/vm/My%20Base.vhd"]
        );
        for l in r.locations_for("p.vhd") {
            assert!(l.has_sas() && l.sas_resource().as_deref() == Some("c"));
        }
    }

    #[test]
    fn locators_never_leave_the_container() {
        let r = r("http://127.0.0.1:10000/devstoreaccount1/c/child.vhd?sv=1&sig=x");
        assert!(r.locations_for("..\\other\\p.vhd").is_empty());
        assert!(r.locations_for("../../c2/p.vhd").is_empty());
        assert!(r.locations_for("").is_empty());
        let err = match r.open_parent(&["..\\p.vhd".into()]) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("opened a blob outside the container"),
        };
        assert!(
            err.contains("..\\\\p.vhd") && err.contains("\"c\""),
            "{err}"
        );
    }
}
