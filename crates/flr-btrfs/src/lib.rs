//! Read-only Btrfs for flr: one or several devices, every RAID profile,
//! subvolumes and snapshots, zlib/LZO/zstd compression, checksums.
//!
//! A device is found by its superblock ([`Device::read`], on any source:
//! a partition, an LV, an unlocked LUKS volume, on any disk); [`assemble`]
//! groups the devices given to one call by filesystem UUID, names the ones
//! missing ([`Assembled::complete`], [`Assembled::missing`]) and
//! [`Assembled::open`] yields a [`BtrfsFs`], which implements
//! [`flr_fs::Filesystem`]. [`BtrfsFs::open`] does all three for a
//! single-device filesystem.
//!
//! * **Superblock**: every copy on the device (64 KiB, 64 MiB, 256 GiB) is
//!   checked; the valid one with the highest generation wins.
//! * **Chunks**: the system chunk array, then the chunk tree, map logical
//!   addresses to devices for SINGLE, DUP, RAID0, RAID1, RAID1C3, RAID1C4,
//!   RAID10, RAID5 and RAID6. A block whose device is missing, or whose
//!   checksum fails, is read from another copy or rebuilt from parity (P by
//!   XOR, Q by Reed–Solomon over GF(2^8)), so a filesystem opens degraded
//!   wherever its profiles survive the loss.
//! * **Checksums**: crc32c, xxhash64, sha256 or blake2b, as the superblock
//!   says, on the superblock, every tree block, and every data sector the
//!   checksum tree covers (files with `nodatasum` have none). A mismatch on
//!   every copy is an error naming the logical address, never wrong bytes.
//! * **Files**: inline, regular and preallocated extents, holes (explicit or
//!   `no-holes`), reflinked and partial extents; compressed extents are
//!   decompressed one at a time, the last one kept for the next read.
//! * **Subvolumes**: a [`BtrfsFs`] is rooted at one subvolume, the default
//!   one unless chosen with [`BtrfsFs::open_subvolume`] or
//!   [`BtrfsFs::open_subvolume_path`]. Subvolumes below it appear as
//!   folders at the place they are linked (as under a kernel mount), so the
//!   top level (id 5) shows every subvolume and snapshot at its path.
//!   [`BtrfsFs::subvolumes`] lists them (id, path, parent, generation,
//!   times, read-only flag, UUIDs). A subvolume whose link a snapshot copied
//!   (a snapshot of a subvolume with nested subvolumes) shows as an empty
//!   folder, as the kernel shows it.
//! * **Tree log**: not replayed. [`BtrfsFs::tree_log`] says when a log is
//!   present: the files fsynced after the last commit may be older or
//!   missing.
//!
//! Codecs, each per extent (at most 128 KiB decompressed):
//! * zlib: `flate2` on its pure-Rust `miniz_oxide` backend, the Rust
//!   project's own deflate crate.
//! * LZO: `lzo` (safe, `no_std`, MIT; it decodes raw LZO1X into a
//!   caller-sized buffer and is fuzzed by its authors); flr adds Btrfs's
//!   segment framing. The mature LZO ports (`rust-lzo`, `lzo1x`, minilzo
//!   bindings) are GPL, which this MIT/Apache project cannot link.
//! * zstd: the `zstd` crate (bindings to the reference libzstd). The pure
//!   Rust `ruzstd`, tried first, decoded `compress-force=zstd` files at
//!   0.35× the kernel's rate, libzstd at about 1× (scripts/bench-btrfs),
//!   against the issue's 0.6× target; libzstd is the implementation the
//!   format is defined by and the one the kernel's is taken from.
//!
//! Checksums come from `crc32c` (the CPU's CRC32 instruction where it has
//! one, as fast as the kernel's), `twox-hash`, `sha2` and `blake2`.
//!
//! # Example
//! ```no_run
//! use std::sync::Arc;
//! use flr_fs::{Filesystem, FsPath};
//! let a: flr_io::Source = Arc::new(flr_io::FileSource::open("raid1-1.img")?);
//! let b: flr_io::Source = Arc::new(flr_io::FileSource::open("raid1-2.img")?);
//! let devices = [flr_btrfs::Device::read(a, "disk")?, flr_btrfs::Device::read(b, "d2/disk")?];
//! for fs in flr_btrfs::assemble(&devices) {
//!     println!("{} complete: {}", fs.fsid, fs.complete());
//!     let root = fs.open()?;
//!     for sv in root.subvolumes()? {
//!         println!("{} {}", sv.id, sv.path);
//!     }
//!     let snap = root.open_subvolume_path("@/.snapshots/5/snapshot")?;
//!     println!("{:?}", snap.metadata(&FsPath::parse("/etc/fstab"))?);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Errors
//! Every failure is an [`FsError`]: [`FsError::Corrupt`] (`fs: "btrfs"`)
//! for a structure that fails its checks, naming the device byte offset
//! (superblock) or the logical address (tree blocks, data); a read that
//! needs a missing device names its devid; [`FsError::Unsupported`] for a
//! feature flr does not read (raid-stripe-tree, extent-tree-v2, encrypted
//! extents); [`FsError::Io`] from the layer below; and the caller errors
//! ([`FsError::NotFound`], …).
#![deny(missing_docs)]

mod bytes;
mod chunk;
mod compress;
mod csum;
mod device;
mod extents;
mod file;
mod items;
mod layer;
mod sb;
mod subvol;
mod tree;
mod volume;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use flr_fs::{
    DirEntry, DirStream, FileHandle, FileKind, Filesystem, FsError, FsInfo, FsPath, Metadata,
};
use flr_io::Source;

pub use chunk::Profile;
pub use csum::CsumType;
pub use device::{assemble, probe, Assembled, Device, Member, MissingDevice};
pub use layer::{BtrfsFormat, FORMAT};
pub use subvol::Subvolume;

use items::{dir_items, DirItem, Inode, RootItem};
use sb::Superblock;
use tree::{Key, Root, Trees, DIR_INDEX, DIR_ITEM, INODE_ITEM, ROOT_ITEM, ROOT_REF, XATTR_ITEM};

/// The top-level subvolume's tree id.
pub const TOP_LEVEL: u64 = 5;
const CSUM_TREE: u64 = 7;
/// The objectid of the log root tree's items (`-6` as u64).
const TREE_LOG_OBJECTID: u64 = (-6i64) as u64;
const FIRST_FREE: u64 = 256;
const LAST_FREE: u64 = (-256i64) as u64;
/// The longest symlink target read.
const MAX_SYMLINK: u64 = 4095;
/// Extended attributes one object may have (each needs a few bytes of a
/// leaf; the kernel's limit is what fits in the tree).
const MAX_XATTRS: usize = 1 << 20;

/// The file id flr reports as `Metadata::inode`: inode numbers restart in
/// every subvolume (each root folder is 256), so the subvolume's id goes
/// in the upper 32 bits (inode numbers past 2^32 in one subvolume, which
/// Btrfs reaches only after billions of creations, could then collide).
fn file_id(tree: u64, ino: u64) -> u64 {
    if tree == TOP_LEVEL {
        ino
    } else {
        (tree << 32) ^ ino
    }
}

/// Whether a tree log is waiting to be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeLog {
    /// No log: the last commit has everything.
    Clean,
    /// A log is present and flr does not replay it: writes fsynced after
    /// the last transaction commit (generation `generation`) may be missing
    /// or older than the running system saw them, in the subvolumes named.
    NotReplayed {
        /// The logical address of the log root.
        log_root: u64,
        /// The generation of the commit the log follows.
        generation: u64,
        /// The subvolumes that have a log tree (empty when the log root
        /// itself cannot be read).
        subvolumes: Vec<u64>,
    },
}

/// One extended attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    /// Its name (`user.x`, `security.selinux`, `system.posix_acl_access`…).
    pub name: Vec<u8>,
    /// Its value, as stored.
    pub value: Vec<u8>,
}

/// What the inode records beyond [`Metadata`], for restores that keep
/// every attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Full mode (type and permission bits).
    pub mode: u32,
    /// Hard links.
    pub nlink: u32,
    /// Last access.
    pub atime: flr_fs::Timestamp,
    /// Last status change.
    pub ctime: flr_fs::Timestamp,
    /// Last modification.
    pub mtime: flr_fs::Timestamp,
    /// Creation (Btrfs's `otime`).
    pub otime: flr_fs::Timestamp,
    /// Device number of a device node.
    pub rdev: u64,
    /// Btrfs inode flags (`nodatasum`, `nodatacow`, `compress`, …).
    pub flags: u64,
}

pub(crate) struct Inner {
    pub(crate) trees: Trees,
    pub(crate) sb: Superblock,
    root_tree: Root,
    pub(crate) csum_root: Option<Root>,
    default_subvol: u64,
    info: FsInfo,
    profiles: Vec<(String, Profile)>,
    roots: Mutex<HashMap<u64, Arc<RootItem>>>,
}

/// An object: an inode of one tree, or the empty folder a snapshot shows
/// where its source had a nested subvolume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Obj {
    tree: u64,
    ino: u64,
    empty: bool,
}

/// A Btrfs filesystem, read-only, rooted at one subvolume.
#[derive(Clone)]
pub struct BtrfsFs {
    inner: Arc<Inner>,
    subvol: u64,
    top: Obj,
}

impl std::fmt::Debug for BtrfsFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BtrfsFs")
            .field("info", &self.inner.info)
            .field("subvolume", &self.subvol)
            .finish_non_exhaustive()
    }
}

fn unsupported(reason: String) -> FsError {
    FsError::Unsupported {
        path: "/".into(),
        reason,
    }
}

impl BtrfsFs {
    /// Opens a single-device filesystem on `src` (its default subvolume).
    /// A device of a multi-device filesystem opens degraded. When the
    /// default subvolume cannot be opened, the top level is shown instead:
    /// [`BtrfsFs::subvolume_id`] then differs from
    /// [`BtrfsFs::default_subvolume`].
    ///
    /// # Errors
    /// [`FsError::Corrupt`] when the superblock, chunk tree or root tree
    /// fails its checks; [`FsError::Unsupported`] for incompatible features
    /// flr does not read; [`FsError::Io`] from the source.
    pub fn open(src: Source) -> Result<BtrfsFs, FsError> {
        let d = Device::read(src, "device")?;
        BtrfsFs::from_devices(std::slice::from_ref(&d))
    }

    /// Opens from devices of one filesystem, the first holding the newest
    /// superblock.
    pub(crate) fn from_devices(devs: &[Device]) -> Result<BtrfsFs, FsError> {
        let first = devs
            .first()
            .ok_or_else(|| unsupported("no device given".into()))?;
        let sb = first.sb.clone();
        if let Some(f) = sb.unsupported_features() {
            return Err(unsupported(format!(
                "the filesystem uses features flr does not read: {f}"
            )));
        }
        let refs: Vec<&Device> = devs.iter().collect();
        let (trees, _) = device::load_chunks(&sb, &refs)?;
        let root_tree = Root {
            bytenr: sb.root,
            level: sb.root_level,
            generation: Some(sb.generation),
        };
        let mut inner = Inner {
            trees,
            sb: sb.clone(),
            root_tree,
            csum_root: None,
            default_subvol: TOP_LEVEL,
            info: FsInfo {
                fs_type: "btrfs".into(),
                label: (!sb.label.is_empty()).then(|| sb.label.clone()),
                id: Some(sb.fsid_str()),
                block_size: sb.sectorsize,
                total_bytes: sb.total_bytes,
                free_bytes: Some(sb.total_bytes.saturating_sub(sb.bytes_used)),
                // Btrfs is consistent at every commit; what it can miss is a
                // tree log of fsyncs after the last commit, which flr does
                // not replay.
                consistency: if sb.log_root == 0 {
                    flr_fs::Consistency::new(
                        flr_fs::Unmount::Unknown,
                        flr_fs::Journal::Clean,
                        "tree log",
                    )
                } else {
                    flr_fs::Consistency::new(
                        flr_fs::Unmount::Dirty,
                        flr_fs::Journal::NotReplayed {
                            reason: flr_fs::NotReplayed::NotImplemented,
                        },
                        "tree log",
                    )
                },
            },
            profiles: Vec::new(),
            roots: Mutex::new(HashMap::new()),
        };
        inner.csum_root = inner.root_item(CSUM_TREE)?.map(|r| r.root());
        inner.default_subvol = inner.find_default()?;
        let mut profiles: Vec<(String, Profile)> = Vec::new();
        for c in inner.trees.vol.chunks.values() {
            let p = (c.kind_name().to_string(), c.profile);
            if !profiles.contains(&p) {
                profiles.push(p);
            }
        }
        inner.profiles = profiles;
        let inner = Arc::new(inner);
        let id = inner.default_subvol;
        let fs = BtrfsFs::at(inner.clone(), id).or_else(|_| BtrfsFs::at(inner, TOP_LEVEL))?;
        Ok(fs)
    }

    fn at(inner: Arc<Inner>, id: u64) -> Result<BtrfsFs, FsError> {
        if id != TOP_LEVEL && !(FIRST_FREE..=LAST_FREE).contains(&id) {
            return Err(FsError::NotFound {
                path: format!("subvolume {id}"),
            });
        }
        let r = inner.root_item(id)?.ok_or_else(|| FsError::NotFound {
            path: format!("subvolume {id}"),
        })?;
        let top = Obj {
            tree: id,
            ino: r.root_dirid,
            empty: false,
        };
        let fs = BtrfsFs {
            inner,
            subvol: id,
            top,
        };
        let ino = fs.inode(top)?;
        if ino.kind() != FileKind::Dir {
            return Err(volume::logical_err(
                r.bytenr,
                format!("subvolume {id}: its root inode is not a directory"),
            ));
        }
        Ok(fs)
    }

    /// The subvolume this view is rooted at.
    pub fn subvolume_id(&self) -> u64 {
        self.subvol
    }

    /// The default subvolume (what a plain mount shows; 5 unless set with
    /// `btrfs subvolume set-default`).
    pub fn default_subvolume(&self) -> u64 {
        self.inner.default_subvol
    }

    /// The same filesystem rooted at subvolume `id` (5 is the top level).
    ///
    /// # Errors
    /// [`FsError::NotFound`] when there is no such subvolume.
    pub fn open_subvolume(&self, id: u64) -> Result<BtrfsFs, FsError> {
        BtrfsFs::at(self.inner.clone(), id)
    }

    /// The same filesystem rooted at the subvolume at `path` from the top
    /// level, as [`BtrfsFs::subvolumes`] gives it (`@/.snapshots/5/snapshot`;
    /// leading and trailing `/` are ignored; `` or `/` is the top level).
    ///
    /// # Errors
    /// [`FsError::NotFound`] when no subvolume has that path.
    pub fn open_subvolume_path(&self, path: &str) -> Result<BtrfsFs, FsError> {
        let want = path.trim_matches('/');
        if want.is_empty() {
            return self.open_subvolume(TOP_LEVEL);
        }
        let id = self
            .subvolumes()?
            .into_iter()
            .find(|s| s.path == want)
            .map(|s| s.id)
            .ok_or_else(|| FsError::NotFound {
                path: format!("subvolume {want}"),
            })?;
        self.open_subvolume(id)
    }

    /// The tree-log state (see [`TreeLog`]).
    pub fn tree_log(&self) -> TreeLog {
        let sb = &self.inner.sb;
        if sb.log_root == 0 {
            return TreeLog::Clean;
        }
        let root = Root {
            bytenr: sb.log_root,
            level: sb.log_root_level,
            generation: None,
        };
        let subvolumes = self
            .inner
            .trees
            .range(
                root,
                Key::new(TREE_LOG_OBJECTID, ROOT_ITEM, 0),
                Key::new(TREE_LOG_OBJECTID, ROOT_ITEM, u64::MAX),
            )
            .map(|r| r.filter_map(|i| i.ok().map(|i| i.key.offset)).collect())
            .unwrap_or_default();
        TreeLog::NotReplayed {
            log_root: sb.log_root,
            generation: sb.generation,
            subvolumes,
        }
    }

    /// The block group profiles in use: (`data`/`metadata`/`system`/`mixed`, profile).
    pub fn profiles(&self) -> Vec<(String, Profile)> {
        self.inner.profiles.clone()
    }

    /// The checksum algorithm.
    pub fn csum_type(&self) -> CsumType {
        self.inner.sb.csum_type
    }

    /// The extended attributes of the object at `path` (symlinks are not
    /// followed), in on-disk (name hash) order.
    ///
    /// # Errors
    /// As [`Filesystem::metadata`], and [`FsError::Corrupt`] for a bad item.
    pub fn xattrs(&self, path: &FsPath) -> Result<Vec<Xattr>, FsError> {
        let o = self.resolve(path)?;
        if o.empty {
            return Ok(Vec::new());
        }
        let root = self.inner.fs_root(o.tree)?;
        let mut out = Vec::new();
        for it in self.inner.trees.items_of(root, o.ino, XATTR_ITEM)? {
            let it = it?;
            for d in dir_items(it.data()).map_err(|e| bad_item(&it, e))? {
                out.push(Xattr {
                    name: d.name,
                    value: d.data,
                });
            }
            if out.len() > MAX_XATTRS {
                return Err(bad_item(&it, "too many extended attributes"));
            }
        }
        Ok(out)
    }

    /// The inode's attributes (see [`Stat`]) of the object at `path`.
    ///
    /// # Errors
    /// As [`Filesystem::metadata`].
    pub fn stat(&self, path: &FsPath) -> Result<Stat, FsError> {
        let i = self.inode(self.resolve(path)?)?;
        Ok(Stat {
            mode: i.mode,
            nlink: i.nlink,
            atime: i.atime,
            ctime: i.ctime,
            mtime: i.mtime,
            otime: i.otime,
            rdev: i.rdev,
            flags: i.flags,
        })
    }

    fn inode(&self, o: Obj) -> Result<Inode, FsError> {
        if o.empty {
            return Ok(empty_dir_inode());
        }
        let root = self.inner.fs_root(o.tree)?;
        let it = self
            .inner
            .trees
            .get(root, Key::new(o.ino, INODE_ITEM, 0))?
            .ok_or_else(|| FsError::Corrupt {
                fs: "btrfs",
                offset: None,
                what: format!("subvolume {}: inode {} has no inode item", o.tree, o.ino),
            })?;
        Inode::parse(it.data()).ok_or_else(|| bad_item(&it, "short inode item"))
    }

    fn meta(&self, o: Obj, i: &Inode) -> Metadata {
        let kind = i.kind();
        Metadata {
            kind,
            size: if kind == FileKind::Special { 0 } else { i.size },
            mtime: Some(i.mtime),
            atime: Some(i.atime),
            ctime: Some(i.ctime),
            btime: Some(i.otime),
            mode: Some(i.mode & 0o7777),
            uid: Some(i.uid),
            gid: Some(i.gid),
            inode: Some(file_id(o.tree, o.ino)),
            unreadable: None,
        }
    }

    /// The object a directory entry of tree `tree` points at.
    fn enter(&self, tree: u64, d: &DirItem) -> Result<Obj, FsError> {
        if d.location.ty != ROOT_ITEM {
            return Ok(Obj {
                tree,
                ino: d.location.objectid,
                empty: false,
            });
        }
        let child = d.location.objectid;
        let linked = self
            .inner
            .trees
            .get(self.inner.root_tree, Key::new(tree, ROOT_REF, child))?
            .is_some();
        match self.inner.root_item(child)? {
            Some(r) if linked => Ok(Obj {
                tree: child,
                ino: r.root_dirid,
                empty: false,
            }),
            _ => Ok(Obj {
                tree: child,
                ino: 2,
                empty: true,
            }),
        }
    }

    fn lookup(&self, dir: Obj, name: &[u8]) -> Result<Option<Obj>, FsError> {
        if dir.empty {
            return Ok(None);
        }
        let root = self.inner.fs_root(dir.tree)?;
        let key = Key::new(dir.ino, DIR_ITEM, csum::name_hash(name));
        let Some(it) = self.inner.trees.get(root, key)? else {
            return Ok(None);
        };
        let items = dir_items(it.data()).map_err(|e| bad_item(&it, e))?;
        match items.iter().find(|d| d.name == name) {
            Some(d) => self.enter(dir.tree, d).map(Some),
            None => Ok(None),
        }
    }

    fn resolve(&self, path: &FsPath) -> Result<Obj, FsError> {
        let mut stack = vec![self.top];
        for (i, name) in path.0.iter().enumerate() {
            // OK: the stack always holds the top.
            let cur = *stack.last().expect("stack holds the root");
            let here = || FsPath(path.0[..i].to_vec()).to_string();
            if self.inode(cur)?.kind() != FileKind::Dir {
                return Err(FsError::NotADirectory { path: here() });
            }
            match name.as_slice() {
                b"." => {}
                b".." => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                }
                n => {
                    let next = self.lookup(cur, n)?.ok_or_else(|| FsError::NotFound {
                        path: path.to_string(),
                    })?;
                    stack.push(next);
                }
            }
        }
        Ok(*stack.last().expect("stack holds the root"))
    }

    /// The listing entry for one directory item of tree `tree`; an entry
    /// whose inode cannot be read is listed as unreadable.
    fn entry(&self, tree: u64, d: DirItem) -> Result<DirEntry, FsError> {
        let child = self.enter(tree, &d)?;
        let meta = match self.inode(child) {
            Ok(i) => self.meta(child, &i),
            Err(e) => Metadata::unreadable_entry(
                items::dirent_kind(d.ty),
                file_id(child.tree, child.ino),
                e.to_string(),
            ),
        };
        Ok(DirEntry { name: d.name, meta })
    }

    fn open_obj(&self, o: Obj, path: &FsPath) -> Result<file::BtrfsFile<'_>, FsError> {
        let i = self.inode(o)?;
        let root = self.inner.fs_root(o.tree)?;
        let extents = file::map(&self.inner, root, o.ino).map_err(|e| match e {
            FsError::Unsupported { reason, .. } => FsError::Unsupported {
                path: path.to_string(),
                reason,
            },
            e => e,
        })?;
        Ok(file::BtrfsFile::new(
            &self.inner,
            i.size,
            extents,
            i.flags & items::INODE_NODATASUM == 0,
        ))
    }
}

/// A folder's entries as its index leaves are read.
struct DirIter<'a> {
    fs: &'a BtrfsFs,
    tree: u64,
    items: Option<tree::Range<'a>>,
    pending: std::collections::VecDeque<DirItem>,
}

impl Iterator for DirIter<'_> {
    type Item = Result<DirEntry, FsError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(d) = self.pending.pop_front() {
                return Some(self.fs.entry(self.tree, d));
            }
            let it = match self.items.as_mut()?.next()? {
                Ok(it) => it,
                Err(e) => {
                    self.items = None;
                    return Some(Err(e));
                }
            };
            match dir_items(it.data()) {
                Ok(v) => self.pending.extend(v),
                Err(e) => {
                    self.items = None;
                    return Some(Err(bad_item(&it, e)));
                }
            }
        }
    }
}

fn empty_dir_inode() -> Inode {
    let zero = flr_fs::Timestamp { secs: 0, nanos: 0 };
    Inode {
        size: 0,
        nlink: 1,
        uid: 0,
        gid: 0,
        mode: 0o040755,
        rdev: 0,
        flags: 0,
        atime: zero,
        ctime: zero,
        mtime: zero,
        otime: zero,
    }
}

fn bad_item(it: &tree::Item, what: impl std::fmt::Display) -> FsError {
    volume::logical_err(
        it.leaf(),
        format!(
            "tree block: item ({}, {}, {}): {what}",
            it.key.objectid, it.key.ty, it.key.offset
        ),
    )
}

impl RootItem {
    fn root(&self) -> Root {
        Root {
            bytenr: self.bytenr,
            level: self.level,
            generation: Some(self.generation),
        }
    }
}

impl Inner {
    /// The newest root item of tree `id`.
    fn root_item(&self, id: u64) -> Result<Option<Arc<RootItem>>, FsError> {
        if let Some(r) = self
            .roots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Ok(Some(r.clone()));
        }
        let mut found = None;
        for it in self.trees.items_of(self.root_tree, id, ROOT_ITEM)? {
            let it = it?;
            found =
                Some(RootItem::parse(it.data()).ok_or_else(|| bad_item(&it, "short root item"))?);
        }
        let Some(r) = found else {
            return Ok(None);
        };
        if r.level >= tree::MAX_LEVEL {
            return Err(volume::logical_err(
                r.bytenr,
                format!("tree {id}: root level {}", r.level),
            ));
        }
        let r = Arc::new(r);
        let mut m = self.roots.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() > 1 << 16 {
            m.clear();
        }
        m.insert(id, r.clone());
        Ok(Some(r))
    }

    fn fs_root(&self, id: u64) -> Result<Root, FsError> {
        self.root_item(id)?
            .map(|r| r.root())
            .ok_or_else(|| FsError::Corrupt {
                fs: "btrfs",
                offset: None,
                what: format!("tree {id} has no root item"),
            })
    }

    fn find_default(&self) -> Result<u64, FsError> {
        let key = Key::new(
            self.sb.root_dir_objectid,
            DIR_ITEM,
            csum::name_hash(b"default"),
        );
        let Some(it) = self.trees.get(self.root_tree, key)? else {
            return Ok(TOP_LEVEL);
        };
        let items = dir_items(it.data()).map_err(|e| bad_item(&it, e))?;
        Ok(items
            .iter()
            .find(|d| d.name == b"default" && d.location.ty == ROOT_ITEM)
            .map_or(TOP_LEVEL, |d| d.location.objectid))
    }
}

impl Filesystem for BtrfsFs {
    fn info(&self) -> FsInfo {
        self.inner.info.clone()
    }

    fn subvolumes(&self) -> Result<Vec<flr_fs::Subvolume>, FsError> {
        Ok(BtrfsFs::subvolumes(self)?
            .into_iter()
            .map(|s| flr_fs::Subvolume {
                id: s.id,
                path: s.path,
                parent: s.parent,
                generation: s.generation,
                created: s.created,
                read_only: s.read_only,
                uuid: s.uuid,
                parent_uuid: s.parent_uuid,
                default: s.is_default,
            })
            .collect())
    }

    fn xattrs(&self, path: &FsPath) -> Result<Vec<flr_fs::Xattr>, FsError> {
        // Btrfs stores names and values (ACLs too) as the kernel shows them.
        Ok(BtrfsFs::xattrs(self, path)?
            .into_iter()
            .map(|x| (x.name, x.value))
            .collect())
    }

    fn open_subvolume(&self, path: &str) -> Option<Result<Box<dyn Filesystem>, FsError>> {
        Some(
            self.open_subvolume_path(path)
                .map(|fs| Box::new(fs) as Box<dyn Filesystem>),
        )
    }

    fn metadata(&self, path: &FsPath) -> Result<Metadata, FsError> {
        let o = self.resolve(path)?;
        let i = self.inode(o)?;
        Ok(self.meta(o, &i))
    }

    fn read_dir(&self, path: &FsPath) -> Result<Vec<DirEntry>, FsError> {
        self.read_dir_stream(path)?.collect()
    }

    /// Streams the folder's index one leaf at a time: memory does not grow
    /// with the number of entries.
    fn read_dir_stream(&self, path: &FsPath) -> Result<DirStream<'_>, FsError> {
        let o = self.resolve(path)?;
        if self.inode(o)?.kind() != FileKind::Dir {
            return Err(FsError::NotADirectory {
                path: path.to_string(),
            });
        }
        if o.empty {
            return Ok(Box::new(std::iter::empty()));
        }
        let root = self.inner.fs_root(o.tree)?;
        Ok(Box::new(DirIter {
            fs: self,
            tree: o.tree,
            items: Some(self.inner.trees.items_of(root, o.ino, DIR_INDEX)?),
            pending: std::collections::VecDeque::new(),
        }))
    }

    fn read_link(&self, path: &FsPath) -> Result<Vec<u8>, FsError> {
        let o = self.resolve(path)?;
        let i = self.inode(o)?;
        if i.kind() != FileKind::Symlink {
            return Err(FsError::Unsupported {
                path: path.to_string(),
                reason: "not a symbolic link".into(),
            });
        }
        if i.size == 0 || i.size > MAX_SYMLINK {
            return Err(FsError::Corrupt {
                fs: "btrfs",
                offset: None,
                what: format!("{path}: symlink of {} bytes", i.size),
            });
        }
        let mut f = self.open_obj(o, path)?;
        // OK: at most MAX_SYMLINK.
        let mut out = vec![0u8; i.size as usize];
        let n = f.read_at(0, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    /// See the `extents` module: the leaves holding the inode's items and
    /// its regular extents, as device offsets; `None` on several devices.
    fn extents(&self, path: &FsPath) -> Result<Option<flr_fs::FileExtents>, FsError> {
        self.extents_inner(path)
    }

    fn open(&self, path: &FsPath) -> Result<Box<dyn FileHandle + '_>, FsError> {
        let o = self.resolve(path)?;
        if o.empty || self.inode(o)?.kind() != FileKind::File {
            return Err(FsError::NotAFile {
                path: path.to_string(),
            });
        }
        Ok(Box::new(self.open_obj(o, path)?))
    }
}
