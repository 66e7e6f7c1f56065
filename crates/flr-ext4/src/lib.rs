//! Read-only ext2/ext3/ext4 for flr.
//!
//! [`Ext4Fs`] implements [`flr_fs::Filesystem`] over any [`flr_io::Source`].
//! It reads the superblock and group descriptors, replays the jbd2 journal
//! virtually (committed transactions that were never checkpointed are read
//! from the journal, as the kernel would after recovery), and resolves paths
//! one component at a time through linear directory scans (which also read
//! htree directories). File data is mapped once per open (extent trees or
//! ext2/3 indirect blocks, with unwritten extents and holes read as zeros),
//! then read with one positioned read per contiguous run, straight into the
//! caller's buffer.
//!
//! Symlinks in the middle of a path are not followed: the path names an
//! object inside this filesystem, component by component.
//!
//! Files whose bytes flr cannot return correctly are listed with
//! [`Metadata::unreadable`](flr_fs::Metadata::unreadable) set and refused
//! by [`Filesystem::open`] with [`FsError::Unsupported`]: fscrypt-encrypted
//! inodes and inline-data inodes. Whole filesystems are refused for
//! e2compr, Lustre dirdata, unknown incompatible features, an external
//! journal that needs recovery, or an external journal device itself.
//!
//! [`Filesystem::consistency`] says whether the filesystem needs recovery
//! (`needs_recovery`) and what was done with the journal: replayed (the
//! number of committed transactions), clean, or not replayed with the
//! reason; a journal flr cannot replay (unknown journal features, a damaged
//! journal superblock) no longer refuses the filesystem: it is read as it
//! is on disk, and the state says so.
//!
//! The crate uses no metadata checksums (it does not verify them).
//!
//! The `ext4-view` crate serves the tests as an independent reader (every
//! fixture and corpus image is walked by both and compared). It is not used
//! at run time: it exposes no inode numbers or inode flags (so encrypted
//! files in plain directories cannot be refused), reads one block per call
//! behind an `Rc` (not `Send`), seeks by re-walking the block list, and in
//! 1.0 rejects inodes with times before 1970 or after 2038, fails on sparse
//! block-mapped (ext2/3) files, refuses meta_bg/inline_data/large_dir/
//! casefold filesystems outright, and replays revoked journal blocks.
#![deny(missing_docs)]

mod layer;
pub use layer::{ExtFormat, FORMAT};
mod bytes;
mod dir;
mod inode;
mod journal;
mod map;
mod sb;
mod vol;
mod xattr;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use flr_fs::{
    Consistency, DirEntry, DirStream, FileExtents, FileHandle, FileKind, Filesystem, FsError,
    FsInfo, FsPath, Metadata, Unmount,
};
use flr_io::{ReadAt, Source};

use dir::DirList;
use flr_io::Bounce;
use inode::{Inode, ROOT_INO};
use map::Extent;
use sb::{Superblock, INCOMPAT_FILETYPE, SB_OFFSET, SB_SIZE};
use vol::Vol;

pub(crate) fn corrupt(offset: u64, what: impl Into<String>) -> FsError {
    FsError::Corrupt {
        fs: "ext4",
        offset: Some(offset),
        what: what.into(),
    }
}

/// Whether `src` starts like an ext2/3/4 filesystem (superblock magic
/// `0xEF53` at byte 1080).
pub fn probe(src: &dyn ReadAt) -> bool {
    let mut m = [0u8; 2];
    src.read_exact_at(SB_OFFSET + 0x38, &mut m).is_ok() && u16::from_le_bytes(m) == sb::MAGIC
}

/// Directory listings kept for path lookups.
const DIR_CACHE_ENTRIES: usize = 1 << 20;

#[derive(Default)]
struct DirCache {
    map: HashMap<u32, Arc<DirList>>,
    entries: usize,
}

/// The parts every operation needs.
pub(crate) struct Core {
    pub(crate) vol: Vol,
    pub(crate) sb: Superblock,
    tables: Vec<u64>,
    /// Inode-table blocks read lately, by block number: the inodes of one
    /// folder's files mostly lie side by side, and each is read more than
    /// once (listing, then opening), so one read serves many. The image
    /// never changes under the reader; emptied when full.
    itable: Mutex<HashMap<u64, Arc<[u8]>>>,
}

/// Most inode-table blocks kept in [`Core::itable`] (1 MiB of 4 KiB blocks).
const ITABLE_BLOCKS: usize = 256;

impl Core {
    pub(crate) fn bs_usize(&self) -> usize {
        // Block sizes are at most 64 KiB (checked in Superblock::parse).
        self.sb.bs as usize
    }

    /// Byte offset of inode `ino` in the volume.
    pub(crate) fn inode_offset(&self, ino: u32) -> Result<u64, FsError> {
        if ino == 0 || ino > self.sb.inodes_count {
            return Err(corrupt(
                SB_OFFSET,
                format!("inode number {ino} is out of range"),
            ));
        }
        let i = u64::from(ino - 1);
        let group = i / u64::from(self.sb.inodes_per_group);
        let index = i % u64::from(self.sb.inodes_per_group);
        let table = *usize::try_from(group)
            .ok()
            .and_then(|g| self.tables.get(g))
            .ok_or_else(|| corrupt(SB_OFFSET, format!("inode {ino} lies in a missing group")))?;
        let off = table
            .checked_mul(self.sb.bs)
            .and_then(|t| t.checked_add(index * u64::from(self.sb.inode_size)))
            .filter(|&o| o < self.sb.blocks_count * self.sb.bs)
            .ok_or_else(|| {
                corrupt(
                    SB_OFFSET,
                    format!("inode table of inode {ino} lies outside the volume"),
                )
            })?;
        Ok(off)
    }

    pub(crate) fn read_inode(&self, ino: u32) -> Result<Inode, FsError> {
        let off = self.inode_offset(ino)?;
        let isz = self.sb.inode_size as usize;
        let (blk, within) = (off / self.sb.bs, (off % self.sb.bs) as usize);
        if within + isz <= self.bs_usize() {
            if let Some(block) = self.itable_block(blk) {
                return Ok(Inode::parse(ino, &block[within..within + isz], &self.sb));
            }
        }
        let mut raw = vec![0u8; isz];
        self.vol.read(off, &mut raw)?;
        Ok(Inode::parse(ino, &raw, &self.sb))
    }

    /// Block `blk` of an inode table, from [`Core::itable`] or read into
    /// it; `None` when the whole block cannot be read (the caller then
    /// reads the one inode).
    fn itable_block(&self, blk: u64) -> Option<Arc<[u8]>> {
        let lock = || self.itable.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = lock().get(&blk) {
            return Some(b.clone());
        }
        let mut raw = vec![0u8; self.bs_usize()];
        self.vol.read(blk.checked_mul(self.sb.bs)?, &mut raw).ok()?;
        let block: Arc<[u8]> = raw.into();
        let mut cache = lock();
        if cache.len() >= ITABLE_BLOCKS {
            cache.clear();
        }
        cache.insert(blk, block.clone());
        Some(block)
    }
}

/// An ext2, ext3 or ext4 filesystem, read-only.
pub struct Ext4Fs {
    core: Core,
    info: FsInfo,
    dirs: Mutex<DirCache>,
}

impl std::fmt::Debug for Ext4Fs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ext4Fs")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Ext4Fs {
    /// Opens the filesystem on `src` (the whole partition or volume).
    ///
    /// Reads the superblock, the group descriptors and, when the journal
    /// holds committed transactions, the journal.
    pub fn open(src: Source) -> Result<Ext4Fs, FsError> {
        let mut raw = vec![0u8; SB_SIZE];
        src.read_exact_at(SB_OFFSET, &mut raw)?;
        let sb = Superblock::parse(&raw)?;
        sb.check_features()?;
        let tables = sb.inode_tables(&*src)?;
        let bs = sb.bs;
        let mut core = Core {
            vol: Vol {
                src,
                bs,
                jmap: BTreeMap::new(),
            },
            sb,
            tables,
            itable: Mutex::new(HashMap::new()),
        };
        let (jmap, journal) = core.journal();
        core.vol.jmap = jmap;
        // What was read before the journal's blocks were known is stale.
        core.itable
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        if !core.vol.jmap.is_empty() {
            // The superblock itself may have a newer copy in the journal
            // (label, free counts); take it when the geometry agrees.
            core.vol.read(SB_OFFSET, &mut raw)?;
            if let Ok(newer) = Superblock::parse(&raw) {
                let same = newer.bs == core.sb.bs
                    && newer.blocks_count == core.sb.blocks_count
                    && newer.inodes_count == core.sb.inodes_count
                    && newer.inodes_per_group == core.sb.inodes_per_group
                    && newer.blocks_per_group == core.sb.blocks_per_group
                    && newer.inode_size == core.sb.inode_size
                    && newer.desc_size == core.sb.desc_size
                    && newer.first_data_block == core.sb.first_data_block
                    && newer.incompat == core.sb.incompat;
                if same {
                    core.sb = newer;
                }
            }
        }
        let sb = &core.sb;
        let info = FsInfo {
            fs_type: sb.fs_type().to_string(),
            label: sb.label_str(),
            id: Some(sb.uuid_str()),
            block_size: u32::try_from(sb.bs).unwrap_or(0),
            total_bytes: sb.blocks_count * sb.bs,
            free_bytes: Some(sb.free_blocks.min(sb.blocks_count) * sb.bs),
            consistency: Consistency::new(
                if sb.incompat & sb::INCOMPAT_RECOVER != 0 {
                    Unmount::Dirty
                } else {
                    Unmount::Clean
                },
                journal,
                "journal",
            ),
        };
        Ok(Ext4Fs {
            core,
            info,
            dirs: Mutex::new(DirCache::default()),
        })
    }

    /// Whether reads are being redirected to committed journal transactions
    /// (the filesystem was not cleanly unmounted).
    pub fn journal_replayed(&self) -> bool {
        !self.core.vol.jmap.is_empty()
    }

    fn meta(&self, inode: &Inode) -> Metadata {
        let kind = inode.kind();
        Metadata {
            kind,
            size: if kind == FileKind::Special {
                0
            } else {
                inode.size
            },
            mtime: Some(inode.mtime),
            atime: Some(inode.atime),
            ctime: Some(inode.ctime),
            btime: inode.crtime,
            mode: Some(u32::from(inode.mode & 0o7777)),
            uid: Some(inode.uid),
            gid: Some(inode.gid),
            inode: Some(u64::from(inode.ino)),
            unreadable: inode.unreadable(),
        }
    }

    /// An entry's metadata from its inode. One bad inode should not hide its
    /// siblings: it is listed as unreadable, with the type its directory
    /// entry records.
    fn entry_meta(&self, ino: u32, ftype: u8) -> Metadata {
        match self.core.read_inode(ino) {
            Ok(child) => self.meta(&child),
            Err(e) => Metadata::unreadable_entry(
                FileKind::from_dirent_type(ftype),
                u64::from(ino),
                e.to_string(),
            ),
        }
    }

    /// The entries of directory `inode`, cached.
    fn list(&self, inode: &Inode, path: &FsPath) -> Result<Arc<DirList>, FsError> {
        if let Some(d) = self.lock_dirs().map.get(&inode.ino) {
            return Ok(d.clone());
        }
        if let Some(reason) = inode.unreadable() {
            return Err(FsError::Unsupported {
                path: path.to_string(),
                reason,
            });
        }
        let c = &self.core;
        let extents = c.map_inode(inode)?;
        let filetype = c.sb.has(INCOMPAT_FILETYPE);
        let mut list = DirList::default();
        let mut blk = vec![0u8; c.bs_usize()];
        for e in &extents {
            for i in 0..e.len {
                let at = (e.pblk + i) * c.sb.bs;
                c.vol.read(at, &mut blk)?;
                // A directory's size is a whole number of blocks; a partial
                // last block would be corrupt, so it is read whole anyway.
                list.add_block(&blk, filetype, at)?;
            }
        }
        list.finish();
        let list = Arc::new(list);
        let mut cache = self.lock_dirs();
        if cache.entries + list.entries.len() > DIR_CACHE_ENTRIES {
            cache.map.clear();
            cache.entries = 0;
        }
        cache.entries += list.entries.len();
        cache.map.insert(inode.ino, list.clone());
        Ok(list)
    }

    fn lock_dirs(&self) -> std::sync::MutexGuard<'_, DirCache> {
        self.dirs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves `path` to an inode of kind `want` (a folder or a file)
    /// whose data flr can return.
    fn resolve_readable(&self, path: &FsPath, want: FileKind) -> Result<Inode, FsError> {
        let inode = self.resolve(path)?;
        if inode.kind() != want {
            let path = path.to_string();
            return Err(match want {
                FileKind::Dir => FsError::NotADirectory { path },
                _ => FsError::NotAFile { path },
            });
        }
        if let Some(reason) = inode.unreadable() {
            return Err(FsError::Unsupported {
                path: path.to_string(),
                reason,
            });
        }
        Ok(inode)
    }

    /// Resolves `path` to its inode, without following symlinks.
    fn resolve(&self, path: &FsPath) -> Result<Inode, FsError> {
        let mut cur = self.core.read_inode(ROOT_INO)?;
        for (i, name) in path.0.iter().enumerate() {
            let here = FsPath(path.0[..i].to_vec());
            if cur.kind() != FileKind::Dir {
                return Err(FsError::NotADirectory {
                    path: here.to_string(),
                });
            }
            let ino = match name.as_slice() {
                b"." => continue,
                b".." => self.list(&cur, &here)?.parent.unwrap_or(cur.ino),
                n => self
                    .list(&cur, &here)?
                    .lookup(n)
                    .ok_or_else(|| FsError::NotFound {
                        path: path.to_string(),
                    })?,
            };
            cur = self.core.read_inode(ino)?;
        }
        Ok(cur)
    }
}

impl Filesystem for Ext4Fs {
    fn info(&self) -> FsInfo {
        self.info.clone()
    }

    fn metadata(&self, path: &FsPath) -> Result<Metadata, FsError> {
        Ok(self.meta(&self.resolve(path)?))
    }

    fn read_dir(&self, path: &FsPath) -> Result<Vec<DirEntry>, FsError> {
        let inode = self.resolve(path)?;
        if inode.kind() != FileKind::Dir {
            return Err(FsError::NotADirectory {
                path: path.to_string(),
            });
        }
        let list = self.list(&inode, path)?;
        Ok(list
            .entries
            .iter()
            .map(|(name, ino, ftype)| DirEntry {
                name: name.clone(),
                meta: self.entry_meta(*ino, *ftype),
            })
            .collect())
    }

    fn read_dir_stream(&self, path: &FsPath) -> Result<DirStream<'_>, FsError> {
        let inode = self.resolve_readable(path, FileKind::Dir)?;
        let extents = self.core.map_inode(&inode)?;
        Ok(Box::new(DirBlocks {
            fs: self,
            filetype: self.core.sb.has(INCOMPAT_FILETYPE),
            blocks: extents
                .into_iter()
                .flat_map(|e| (0..e.len).map(move |i| e.pblk + i)),
            parser: DirList::default(),
            pending: Vec::new().into_iter(),
            blk: vec![0u8; self.core.bs_usize()],
            failed: false,
        }))
    }

    fn read_link(&self, path: &FsPath) -> Result<Vec<u8>, FsError> {
        let inode = self.resolve(path)?;
        if inode.kind() != FileKind::Symlink {
            return Err(FsError::Unsupported {
                path: path.to_string(),
                reason: "not a symbolic link".into(),
            });
        }
        if let Some(reason) = inode.unreadable() {
            return Err(FsError::Unsupported {
                path: path.to_string(),
                reason,
            });
        }
        let c = &self.core;
        let at = c.inode_offset(inode.ino)?;
        if inode.size == 0 || inode.size > c.sb.bs {
            return Err(corrupt(
                at,
                format!(
                    "symlink inode {} has an invalid length {}",
                    inode.ino, inode.size
                ),
            ));
        }
        let len = inode.size as usize;
        if inode.is_fast_symlink(&c.sb) {
            return Ok(inode.block[..len].to_vec());
        }
        let mut out = vec![0u8; len];
        let mut h = Ext4File {
            core: c,
            size: inode.size,
            extents: c.map_inode(&inode)?,
            bounce: Bounce::default(),
        };
        let mut done = 0;
        while done < len {
            let n = h.read_at(done as u64, &mut out[done..])?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(out)
    }

    fn extents(&self, path: &FsPath) -> Result<Option<FileExtents>, FsError> {
        let inode = self.resolve(path)?;
        let c = &self.core;
        let bs = c.sb.bs;
        let mut meta = vec![(c.inode_offset(inode.ino)?, u64::from(c.sb.inode_size))];
        if inode.file_acl != 0 {
            meta.push((inode.file_acl.saturating_mul(bs), bs));
        }
        // Fast symlinks and inline data live in the inode; devices have
        // no blocks.
        let mapped = match inode.kind() {
            FileKind::Special => false,
            FileKind::Symlink => !inode.is_fast_symlink(&c.sb),
            _ => !inode.has_flag(inode::FL_INLINE_DATA),
        };
        let mut data = Vec::new();
        let mut layout = None;
        if mapped {
            let (runs, nodes) = c.map_inode_with_nodes(&inode)?;
            data.extend(runs.iter().map(|e| (e.pblk * bs, e.len * bs)));
            meta.extend(nodes.iter().map(|&b| (b * bs, bs)));
            if inode.kind() == FileKind::File {
                layout = Some(
                    runs.iter()
                        .map(|e| flr_fs::FileRun {
                            file: e.lblk * bs,
                            volume: e.pblk * bs,
                            len: e.len * bs,
                        })
                        .collect(),
                );
            }
        }
        // A block the journal replaces is read from its copy there (and
        // the file's bytes are then not where its extents say).
        let mut copies = Vec::new();
        if !c.vol.jmap.is_empty() {
            for (i, &(off, len)) in data.iter().chain(&meta).enumerate() {
                let (first, last) = (off / bs, (off + len).div_ceil(bs));
                for t in c.vol.jmap.range(first..last).map(|(_, t)| t) {
                    copies.push((t.pblk.saturating_mul(bs), bs));
                    if i < data.len() {
                        layout = None;
                    }
                }
            }
        }
        meta.extend(copies);
        Ok(Some(FileExtents { data, meta, layout }))
    }

    fn xattrs(&self, path: &FsPath) -> Result<Vec<flr_fs::Xattr>, FsError> {
        let inode = self.resolve(path)?;
        self.core.xattrs(&inode)
    }

    fn open(&self, path: &FsPath) -> Result<Box<dyn FileHandle + '_>, FsError> {
        let inode = self.resolve_readable(path, FileKind::File)?;
        let extents = self.core.map_inode(&inode)?;
        Ok(Box::new(Ext4File {
            core: &self.core,
            size: inode.size,
            extents,
            bounce: Bounce::default(),
        }))
    }
}

/// A directory read one block at a time: what is held is the block map,
/// one block and that block's entries, whatever the directory's size.
struct DirBlocks<'a, B: Iterator<Item = u64>> {
    fs: &'a Ext4Fs,
    filetype: bool,
    blocks: B,
    parser: DirList,
    pending: std::vec::IntoIter<(Vec<u8>, u32, u8)>,
    blk: Vec<u8>,
    failed: bool,
}

impl<B: Iterator<Item = u64>> Iterator for DirBlocks<'_, B> {
    type Item = Result<DirEntry, FsError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((name, ino, ftype)) = self.pending.next() {
                let meta = self.fs.entry_meta(ino, ftype);
                return Some(Ok(DirEntry { name, meta }));
            }
            if self.failed {
                return None;
            }
            let pblk = self.blocks.next()?;
            let c = &self.fs.core;
            let read = pblk
                .checked_mul(c.sb.bs)
                .ok_or_else(|| corrupt(0, format!("directory block {pblk} is out of range")))
                .and_then(|at| {
                    c.vol.read(at, &mut self.blk)?;
                    self.parser.add_block(&self.blk, self.filetype, at)
                });
            if let Err(e) = read {
                // A damaged block ends the stream with its error.
                self.failed = true;
                return Some(Err(e));
            }
            self.pending = self.parser.take_entries().into_iter();
        }
    }
}

/// An open regular file: its mapped runs, read straight from the source.
struct Ext4File<'a> {
    core: &'a Core,
    size: u64,
    extents: Vec<Extent>,
    bounce: Bounce,
}

impl FileHandle for Ext4File<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn data_ranges(&mut self) -> Result<Option<Vec<(u64, u64)>>, FsError> {
        // Unwritten extents are left out of the map: they are holes.
        let bs = self.core.sb.bs;
        let runs = self.extents.iter().map(|e| (e.lblk * bs, e.len * bs));
        Ok(Some(flr_fs::clip_ranges(runs, self.size)))
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let n = usize::try_from(self.size - offset).map_or(buf.len(), |r| r.min(buf.len()));
        let bs = self.core.sb.bs;
        let mut pos = offset;
        let mut done = 0usize;
        while done < n {
            let lblk = pos / bs;
            let want = (n - done) as u64;
            let take = match map::find(&self.extents, lblk) {
                Ok(i) => {
                    let e = self.extents[i];
                    let run_end = (e.lblk + e.len) * bs;
                    let take = want.min(run_end - pos);
                    let phys = (e.pblk + (lblk - e.lblk)) * bs + pos % bs;
                    let vol = &self.core.vol;
                    let out = &mut buf[done..done + take as usize];
                    self.bounce.read(phys, out, |o, b| vol.read(o, b))?;
                    take
                }
                Err(i) => {
                    let next = self.extents.get(i).map_or(u64::MAX, |e| e.lblk * bs);
                    let take = want.min(next - pos);
                    buf[done..done + take as usize].fill(0);
                    take
                }
            };
            done += take as usize;
            pos += take;
        }
        Ok(n)
    }
}
