//! The subvolume list: every subvolume and snapshot, with the path from
//! the top level where it is linked.

use flr_fs::{FsError, Timestamp};

use crate::bytes::uuid_str;
use crate::items::{inode_ref_name, root_ref, RootItem, ROOT_SUBVOL_RDONLY};
use crate::tree::{Key, INODE_REF, ROOT_BACKREF, ROOT_ITEM};
use crate::{BtrfsFs, FIRST_FREE, LAST_FREE, TOP_LEVEL};

/// Directory levels a path may have.
const MAX_DEPTH: usize = 4096;

/// One subvolume or snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subvolume {
    /// Its id (5 for the top level).
    pub id: u64,
    /// The subvolume it is linked in (None for the top level, or when it is
    /// not linked anywhere).
    pub parent: Option<u64>,
    /// Its path from the top level as `btrfs subvolume list` prints it
    /// (`@/.snapshots/1/snapshot`; empty for the top level;
    /// `<unlinked>/ID` when no directory links it).
    pub path: String,
    /// The generation of its tree (last change).
    pub generation: u64,
    /// The generation it was created in.
    pub created_generation: u64,
    /// When it was created, where recorded.
    pub created: Option<Timestamp>,
    /// When it last changed, where recorded.
    pub changed: Option<Timestamp>,
    /// Read-only (snapper's snapshots are).
    pub read_only: bool,
    /// Its UUID, where recorded.
    pub uuid: Option<String>,
    /// For a snapshot: the UUID of the subvolume it was taken of.
    pub parent_uuid: Option<String>,
    /// Whether it is the default subvolume.
    pub is_default: bool,
}

impl BtrfsFs {
    /// Every subvolume and snapshot, the top level first, then by id.
    /// Subvolumes being deleted (no references left) are not listed.
    ///
    /// # Errors
    /// [`FsError::Corrupt`] when the root tree cannot be read.
    pub fn subvolumes(&self) -> Result<Vec<Subvolume>, FsError> {
        let inner = &self.inner;
        let mut roots: Vec<(u64, RootItem)> = Vec::new();
        for it in inner.trees.range(
            inner.root_tree,
            Key::new(TOP_LEVEL, 0, 0),
            Key::new(LAST_FREE, u8::MAX, u64::MAX),
        )? {
            let it = it?;
            let id = it.key.objectid;
            if it.key.ty != ROOT_ITEM || (id != TOP_LEVEL && id < FIRST_FREE) {
                continue;
            }
            let Some(r) = RootItem::parse(it.data()) else {
                continue;
            };
            match roots.last_mut() {
                Some((last, old)) if *last == id => *old = r,
                _ => roots.push((id, r)),
            }
        }
        let mut out = Vec::new();
        for (id, r) in roots {
            if r.refs == 0 && id != TOP_LEVEL {
                continue;
            }
            let parent = if id == TOP_LEVEL {
                None
            } else {
                self.backref(id)?.map(|(p, _, _)| p)
            };
            let path = if id == TOP_LEVEL {
                String::new()
            } else {
                self.subvol_path(id)?
                    .unwrap_or_else(|| format!("<unlinked>/{id}"))
            };
            out.push(Subvolume {
                id,
                parent,
                path,
                generation: r.generation,
                created_generation: r.otransid,
                created: r.otime,
                changed: r.ctime,
                read_only: r.flags & ROOT_SUBVOL_RDONLY != 0,
                uuid: r.uuid.as_ref().map(uuid_str),
                parent_uuid: r.parent_uuid.as_ref().map(uuid_str),
                is_default: id == inner.default_subvol,
            });
        }
        Ok(out)
    }

    /// (parent tree, directory in it, name) that link subvolume `id`.
    fn backref(&self, id: u64) -> Result<Option<(u64, u64, Vec<u8>)>, FsError> {
        let inner = &self.inner;
        for it in inner.trees.items_of(inner.root_tree, id, ROOT_BACKREF)? {
            let it = it?;
            if let Some(r) = root_ref(it.data()) {
                return Ok(Some((it.key.offset, r.dirid, r.name)));
            }
        }
        Ok(None)
    }

    /// The path of subvolume `id` from the top level.
    fn subvol_path(&self, id: u64) -> Result<Option<String>, FsError> {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        let mut cur = id;
        let mut steps = 0usize;
        while cur != TOP_LEVEL {
            steps += 1;
            if steps > MAX_DEPTH {
                return Ok(None);
            }
            let Some((parent, dirid, name)) = self.backref(cur)? else {
                return Ok(None);
            };
            parts.push(name);
            let Some(dirs) = self.dir_path(parent, dirid)? else {
                return Ok(None);
            };
            parts.extend(dirs.into_iter().rev());
            cur = parent;
        }
        parts.reverse();
        let s: Vec<String> = parts.iter().map(|p| flr_fs::display_component(p)).collect();
        Ok(Some(s.join("/")))
    }

    /// The names from the root directory of tree `tree` down to `dir`.
    fn dir_path(&self, tree: u64, dir: u64) -> Result<Option<Vec<Vec<u8>>>, FsError> {
        let inner = &self.inner;
        let Some(r) = inner.root_item(tree)? else {
            return Ok(None);
        };
        let root = r.root();
        let mut out = Vec::new();
        let mut cur = dir;
        while cur != r.root_dirid {
            if out.len() > MAX_DEPTH {
                return Ok(None);
            }
            let mut next = None;
            for it in inner.trees.items_of(root, cur, INODE_REF)? {
                let it = it?;
                if let Some(name) = inode_ref_name(it.data()) {
                    next = Some((it.key.offset, name));
                    break;
                }
            }
            let Some((parent, name)) = next else {
                return Ok(None);
            };
            out.push(name);
            cur = parent;
        }
        out.reverse();
        Ok(Some(out))
    }
}
