//! Read-only XFS (v4 and v5) for flr.
//!
//! [`XfsFs`] implements [`flr_fs::Filesystem`] over any [`flr_io::Source`]
//! holding an XFS filesystem (a partition, a logical volume, a decrypted
//! LUKS volume). It reads the superblock of allocation group 0 and finds
//! every inode from its number (AG, block in the AG, slot), so it needs no
//! other AG header. Directories are read in every format (short form,
//! block, leaf, node, B+tree); files through their extent list or extent
//! B+tree, with holes and unwritten extents read as zeros and each
//! contiguous run read with one positioned read straight into the caller's
//! buffer. Timestamps honour `bigtime`; files larger than 4 GiB are plain
//! 64-bit offsets.
//!
//! On v5 filesystems every metadata block flr reads carries a CRC32C, and
//! flr checks it: the superblock, each inode, extent B+tree blocks,
//! directory data blocks and remote symlink blocks. A mismatch is an
//! [`FsError::Corrupt`] naming the byte offset; a file whose inode is bad
//! is listed as unreadable, never read.
//!
//! A dirty log (an image of a running system: a snapshot is a power cut)
//! is replayed in memory when the filesystem is opened, as the kernel
//! replays it at mount: the head and tail are found from the cycle numbers
//! (wrapped logs, torn last records), every committed transaction between
//! them is applied over the on-disk metadata (buffer, inode-buffer, inode
//! and inode-create items, cancelled buffers honoured, v5 LSN and v4 flush
//! counter ordering), and the reader reads through the replayed view, never
//! writing. [`Filesystem::consistency`] says what was found and done (clean;
//! replayed with N transactions; not replayed, with a typed reason),
//! [`XfsFs::replay_stats`] counts the items, and
//! [`XfsFs::open_without_replay`] reads the disk as it is. A log that is
//! damaged or holds something flr does not know (an unknown item type or
//! log feature, a log written by a big-endian host, a bad record CRC before
//! the last records) is not replayed at all, and the state says why; an
//! external log device is named as such (the image does not hold it). See
//! the `log` module for the method and for which items are not applied
//! (intents, quota, xattrs: nothing flr reads) and why.
//!
//! Not supported: files on a real-time device (listed, refused with the
//! reason).
//!
//! # Example
//! ```no_run
//! use std::sync::Arc;
//! use flr_fs::{Filesystem, FsPath};
//! let src = Arc::new(flr_io::FileSource::open("xfs.img")?);
//! let fs = flr_xfs::XfsFs::open(src)?;
//! for e in fs.read_dir(&FsPath::parse("/etc"))? {
//!     println!("{}", String::from_utf8_lossy(&e.name));
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Errors
//! [`FsError::Corrupt`] (with `fs: "xfs"` and the byte offset) for a bad
//! structure or CRC, [`FsError::Io`] from the layer below, and the caller
//! errors ([`FsError::NotFound`], …).
#![deny(missing_docs)]

mod layer;
pub use layer::{XfsFormat, FORMAT};
mod attr;
mod bmap;
mod bytes;
mod dir;
mod inode;
mod log;
mod sb;

pub use log::ReplayStats;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use flr_fs::{
    Consistency, DirEntry, FileExtents, FileHandle, FileKind, Filesystem, FsError, FsInfo, FsPath,
    Metadata,
};
use flr_io::{Bounce, ReadAt, Source};

use bmap::Extent;
use dir::DirList;
use inode::{Inode, FMT_BTREE, FMT_EXTENTS, FMT_LOCAL};
use sb::Superblock;

pub(crate) fn corrupt(offset: u64, what: impl Into<String>) -> FsError {
    FsError::Corrupt {
        fs: "xfs",
        offset: Some(offset),
        what: what.into(),
    }
}

/// Whether `src` starts like an XFS filesystem (`XFSB` at byte 0 and a
/// plausible version).
pub fn probe(src: &dyn ReadAt) -> bool {
    let mut b = [0u8; 512];
    src.read_exact_at(0, &mut b).is_ok() && Superblock::parse(&b).is_ok()
}

/// Directory entries kept for path lookups before the cache is emptied.
const DIR_CACHE_ENTRIES: usize = 1 << 20;
/// The most entries one directory may have (about 10 bytes of names and
/// 40 bytes of bookkeeping each: 1.6 GiB at worst).
const MAX_DIR_ENTRIES: usize = 32 << 20;
/// The longest symlink target XFS allows.
const MAX_SYMLINK: u64 = 1024;
const XSLM: u32 = 0x5853_4c4d;

#[derive(Default)]
struct DirCache {
    map: HashMap<u64, Arc<DirList>>,
    entries: usize,
}

/// An XFS filesystem, read-only.
pub struct XfsFs {
    src: Source,
    sb: Superblock,
    info: FsInfo,
    dirs: Mutex<DirCache>,
    replay: Option<ReplayStats>,
}

impl std::fmt::Debug for XfsFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XfsFs")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

fn read_sb(src: &dyn ReadAt) -> Result<Superblock, FsError> {
    let mut raw = vec![0u8; 512];
    src.read_exact_at(0, &mut raw)?;
    let sb = Superblock::parse(&raw)?;
    if sb.sectsize > 512 {
        raw = vec![0u8; usize::try_from(sb.sectsize).unwrap_or(512)];
        src.read_exact_at(0, &mut raw)?;
        return Superblock::parse(&raw);
    }
    Ok(sb)
}

impl XfsFs {
    /// Opens the filesystem on `src` (the whole volume): reads and checks
    /// the primary superblock, replays a dirty log in memory (see
    /// [`XfsFs::consistency`](Filesystem::consistency) for what was done),
    /// and reads the root inode.
    pub fn open(src: Source) -> Result<XfsFs, FsError> {
        XfsFs::open_with(src, true)
    }

    /// Opens the filesystem as it is on disk, without replaying its log
    /// (the consistency then says whether the log was clean).
    pub fn open_without_replay(src: Source) -> Result<XfsFs, FsError> {
        XfsFs::open_with(src, false)
    }

    fn open_with(src: Source, replay: bool) -> Result<XfsFs, FsError> {
        let mut sb = read_sb(src.as_ref())?;
        let rec = log::recover(&src, &sb, replay);
        let mut consistency = rec.consistency;
        let mut src = src;
        let mut replay = rec.stats;
        if let Some(overlay) = rec.overlay {
            let overlay: Source = Arc::new(overlay);
            // The superblock itself may have been replayed.
            match read_sb(overlay.as_ref()) {
                Ok(newer) => {
                    sb = newer;
                    src = overlay;
                }
                Err(e) => {
                    replay = None;
                    consistency.journal = flr_fs::Journal::NotReplayed {
                        reason: flr_fs::NotReplayed::Damaged {
                            offset: Some(0),
                            what: format!("the replayed superblock does not check: {e}"),
                        },
                    };
                }
            }
        }
        let info = FsInfo {
            fs_type: if sb.is_v5() { "xfs" } else { "xfs (v4)" }.to_string(),
            label: sb.label_str(),
            id: Some(sb.uuid_str()),
            block_size: u32::try_from(sb.bs).unwrap_or(0),
            total_bytes: sb.dblocks * sb.bs,
            free_bytes: Some(sb.fdblocks.min(sb.dblocks) * sb.bs),
            consistency,
        };
        let fs = XfsFs {
            src,
            sb,
            info,
            dirs: Mutex::new(DirCache::default()),
            replay,
        };
        let root = fs.read_inode(fs.sb.rootino)?;
        if root.kind() != FileKind::Dir {
            return Err(corrupt(root.at, "the root inode is not a directory"));
        }
        Ok(fs)
    }

    /// Bytes of metadata the log replay holds in memory (0 without a
    /// replay).
    pub fn replayed_bytes(&self) -> u64 {
        self.replay.as_ref().map_or(0, |s| s.bytes)
    }

    /// What the log replay did, item by item (`None` without a replay).
    pub fn replay_stats(&self) -> Option<&ReplayStats> {
        self.replay.as_ref()
    }

    /// Whether the filesystem has a real-time section (its files are
    /// listed but cannot be read).
    pub fn has_realtime(&self) -> bool {
        self.sb.rblocks > 0
    }

    /// Whether the log lives on a separate device (not needed to read).
    pub fn has_external_log(&self) -> bool {
        self.sb.logstart == 0
    }

    fn read_inode(&self, ino: u64) -> Result<Inode, FsError> {
        let at = self
            .sb
            .ino_to_byte(ino)
            .ok_or_else(|| corrupt(56, format!("inode number {ino} is outside the filesystem")))?;
        let mut raw = vec![0u8; usize::try_from(self.sb.inodesize).unwrap_or(256)];
        self.src.read_exact_at(at, &mut raw)?;
        Inode::parse(ino, at, &raw, &self.sb)
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
            inode: Some(inode.ino),
            unreadable: inode.unreadable(),
        }
    }

    fn lock_dirs(&self) -> std::sync::MutexGuard<'_, DirCache> {
        self.dirs.lock().unwrap_or_else(|e| e.into_inner())
    }

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
        let list = if inode.format == FMT_LOCAL {
            DirList::short_form(&inode.fork, inode.size, &self.sb, inode.ino, inode.at)?
        } else {
            self.list_blocks(inode)?
        };
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

    fn list_blocks(&self, inode: &Inode) -> Result<DirList, FsError> {
        let sb = &self.sb;
        let extents = bmap::map(self.src.as_ref(), sb, inode)?;
        let per = 1u64 << sb.dirblklog;
        let leaf_blk = dir::LEAF_OFFSET / sb.bs;
        let mut dblocks: Vec<u64> = Vec::new();
        for e in extents.iter().filter(|e| e.lblk < leaf_blk && !e.unwritten) {
            let first = e.lblk / per;
            let last = (e.lblk + e.len - 1).min(leaf_blk - 1) / per;
            for d in first..=last {
                if dblocks.last() != Some(&d) {
                    dblocks.push(d);
                }
            }
        }
        let dbs = usize::try_from(sb.dir_block_size()).unwrap_or(4096);
        let mut buf = vec![0u8; dbs];
        let mut list = DirList::default();
        for &d in &dblocks {
            let at = read_mapped(
                self.src.as_ref(),
                sb,
                &extents,
                d * per,
                &mut buf,
                inode.ino,
            )?;
            list.add_block(&buf, sb, inode.ino, at, d == 0)?;
            if list.entries.len() > MAX_DIR_ENTRIES {
                return Err(corrupt(
                    at,
                    format!(
                        "directory inode {} has more than {MAX_DIR_ENTRIES} entries",
                        inode.ino
                    ),
                ));
            }
        }
        list.finish();
        Ok(list)
    }

    fn resolve(&self, path: &FsPath) -> Result<Inode, FsError> {
        let mut cur = self.read_inode(self.sb.rootino)?;
        for (i, name) in path.0.iter().enumerate() {
            let here = FsPath(path.0[..i].to_vec());
            if cur.kind() != FileKind::Dir {
                return Err(FsError::NotADirectory {
                    path: here.to_string(),
                });
            }
            let list = self.list(&cur, &here)?;
            let ino = match name.as_slice() {
                b"." => continue,
                b".." => list.parent.unwrap_or(cur.ino),
                n => list.lookup(n).ok_or_else(|| FsError::NotFound {
                    path: path.to_string(),
                })?,
            };
            cur = self.read_inode(ino)?;
        }
        Ok(cur)
    }
}

/// Reads `buf.len()` bytes of a directory or symlink from file block
/// `lblk` on, through its extents; returns the byte offset of the first
/// block (for messages). A hole inside is corrupt.
fn read_mapped(
    src: &dyn ReadAt,
    sb: &Superblock,
    extents: &[Extent],
    lblk: u64,
    buf: &mut [u8],
    ino: u64,
) -> Result<u64, FsError> {
    let mut first_at = None;
    for (i, chunk) in buf
        .chunks_mut(usize::try_from(sb.bs).unwrap_or(4096))
        .enumerate()
    {
        let b = lblk + i as u64;
        let e = bmap::find(extents, b)
            .ok()
            .map(|k| extents[k])
            .filter(|e| !e.unwritten)
            .ok_or_else(|| {
                corrupt(
                    0,
                    format!("inode {ino}: block {b} of a directory or symlink is not mapped"),
                )
            })?;
        let at = (e.pblk + (b - e.lblk)) * sb.bs;
        first_at.get_or_insert(at);
        src.read_exact_at(at, chunk)?;
    }
    Ok(first_at.unwrap_or(0))
}

impl Filesystem for XfsFs {
    fn info(&self) -> FsInfo {
        self.info.clone()
    }

    fn consistency(&self) -> Consistency {
        self.info.consistency.clone()
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
        let mut out = Vec::with_capacity(list.entries.len());
        for (name, ino, ftype) in &list.entries {
            let meta = match self.read_inode(*ino) {
                Ok(child) => self.meta(&child),
                // One bad inode does not hide its siblings.
                Err(e) => Metadata::unreadable_entry(
                    FileKind::from_dirent_type(*ftype),
                    *ino,
                    e.to_string(),
                ),
            };
            out.push(DirEntry {
                name: name.clone(),
                meta,
            });
        }
        Ok(out)
    }

    fn read_link(&self, path: &FsPath) -> Result<Vec<u8>, FsError> {
        let inode = self.resolve(path)?;
        if inode.kind() != FileKind::Symlink {
            return Err(FsError::Unsupported {
                path: path.to_string(),
                reason: "not a symbolic link".into(),
            });
        }
        if inode.size == 0 || inode.size > MAX_SYMLINK {
            return Err(corrupt(
                inode.at,
                format!(
                    "symlink inode {} has an invalid length {}",
                    inode.ino, inode.size
                ),
            ));
        }
        // OK: at most MAX_SYMLINK.
        let len = inode.size as usize;
        if inode.format == FMT_LOCAL {
            return inode.fork.get(..len).map(<[u8]>::to_vec).ok_or_else(|| {
                corrupt(
                    inode.at,
                    format!("symlink inode {}: target longer than the inode", inode.ino),
                )
            });
        }
        let sb = &self.sb;
        let extents = bmap::map(self.src.as_ref(), sb, &inode)?;
        let mut out = Vec::with_capacity(len);
        let mut blk = vec![0u8; usize::try_from(sb.bs).unwrap_or(4096)];
        let mut lblk = 0u64;
        while out.len() < len {
            let at = read_mapped(self.src.as_ref(), sb, &extents, lblk, &mut blk, inode.ino)?;
            let data = if sb.is_v5() {
                let n = usize::try_from(bytes::be32(&blk, 8)).unwrap_or(usize::MAX);
                if bytes::be32(&blk, 0) != XSLM || !bytes::crc_ok(&blk, 12) || n > blk.len() - 56 {
                    return Err(corrupt(
                        at,
                        format!(
                            "symlink inode {}: bad remote block (magic, CRC or length)",
                            inode.ino
                        ),
                    ));
                }
                &blk[56..56 + n]
            } else {
                &blk[..]
            };
            let take = data.len().min(len - out.len());
            if take == 0 {
                return Err(corrupt(
                    at,
                    format!("symlink inode {}: empty remote block", inode.ino),
                ));
            }
            out.extend_from_slice(&data[..take]);
            lblk += 1;
        }
        Ok(out)
    }

    /// The inode's own bytes, and for an extent-mapped data fork its
    /// written extents and extent B+tree blocks (a folder's extents cover
    /// its data, leaf and free-index blocks alike). Short-form folders,
    /// inline symlinks and devices live in the inode. The attribute fork is
    /// not named (`diff` and `verify` do not compare extended attributes).
    /// `None` for a real-time file: its data is on another device.
    fn extents(&self, path: &FsPath) -> Result<Option<FileExtents>, FsError> {
        let inode = self.resolve(path)?;
        if inode.realtime && inode.kind() == FileKind::File {
            return Ok(None);
        }
        let bs = self.sb.bs;
        let mut x = FileExtents {
            data: Vec::new(),
            meta: vec![(inode.at, u64::from(self.sb.inodesize))],
            layout: None,
        };
        if inode.kind() != FileKind::Special && matches!(inode.format, FMT_EXTENTS | FMT_BTREE) {
            let mut nodes = Vec::new();
            let runs = bmap::map_with_nodes(self.src.as_ref(), &self.sb, &inode, &mut nodes)?;
            let written = || runs.iter().filter(|e| !e.unwritten);
            x.data.extend(written().map(|e| (e.pblk * bs, e.len * bs)));
            x.meta.extend(nodes.into_iter().map(|at| (at, bs)));
            if inode.kind() == FileKind::File {
                x.layout = Some(
                    written()
                        .map(|e| flr_fs::FileRun {
                            file: e.lblk * bs,
                            volume: e.pblk * bs,
                            len: e.len * bs,
                        })
                        .collect(),
                );
            }
        }
        Ok(Some(x))
    }

    fn xattrs(&self, path: &FsPath) -> Result<Vec<flr_fs::Xattr>, FsError> {
        let inode = self.resolve(path)?;
        attr::read(&*self.src, &self.sb, &inode)
    }

    fn open(&self, path: &FsPath) -> Result<Box<dyn FileHandle + '_>, FsError> {
        let inode = self.resolve(path)?;
        if inode.kind() != FileKind::File {
            return Err(FsError::NotAFile {
                path: path.to_string(),
            });
        }
        if let Some(reason) = inode.unreadable() {
            return Err(FsError::Unsupported {
                path: path.to_string(),
                reason,
            });
        }
        let extents = bmap::map(self.src.as_ref(), &self.sb, &inode)?;
        Ok(Box::new(XfsFile {
            fs: self,
            size: inode.size,
            extents,
            bounce: Bounce::default(),
        }))
    }
}

/// An open regular file: its extents, read straight from the source.
struct XfsFile<'a> {
    fs: &'a XfsFs,
    size: u64,
    extents: Vec<Extent>,
    bounce: Bounce,
}

impl FileHandle for XfsFile<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn data_ranges(&mut self) -> Result<Option<Vec<(u64, u64)>>, FsError> {
        let bs = self.fs.sb.bs;
        let runs = self
            .extents
            .iter()
            .filter(|e| !e.unwritten)
            .map(|e| (e.lblk.saturating_mul(bs), e.len.saturating_mul(bs)));
        Ok(Some(flr_fs::clip_ranges(runs, self.size)))
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let n = usize::try_from(self.size - offset).map_or(buf.len(), |r| r.min(buf.len()));
        let bs = self.fs.sb.bs;
        let mut pos = offset;
        let mut done = 0usize;
        while done < n {
            let lblk = pos / bs;
            let want = (n - done) as u64;
            let take = match bmap::find(&self.extents, lblk) {
                Ok(i) => {
                    let e = self.extents[i];
                    let run_end = (e.lblk + e.len) * bs;
                    let take = want.min(run_end - pos);
                    let out = &mut buf[done..done + take as usize];
                    if e.unwritten {
                        out.fill(0);
                    } else {
                        let phys = (e.pblk + (lblk - e.lblk)) * bs + pos % bs;
                        let src = &self.fs.src;
                        self.bounce
                            .read(phys, out, |o, b| src.read_exact_at(o, b))?;
                    }
                    take
                }
                Err(i) => {
                    let next = self
                        .extents
                        .get(i)
                        .map_or(u64::MAX, |e| e.lblk.saturating_mul(bs));
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
