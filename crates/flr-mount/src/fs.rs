//! The FUSE filesystem: kernel inode numbers over paths of flr filesystems.
//!
//! Inodes are handed out as the kernel discovers entries (lookup, readdir)
//! and never change while mounted: the image is read-only, so every answer
//! may be cached by the kernel for as long as it likes. A directory is read
//! once through [`Filesystem::read_dir_stream`] and its entries (with their
//! metadata) are kept, so `lookup` and `getattr` cost no further reads.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flr_fs::{
    display_path, FileHandle as FsHandle, FileKind, Filesystem, FsError, FsPath, Metadata,
    Timestamp,
};
use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType,
    FopenFlags, Generation, INodeNo, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

/// How long the kernel may cache names and attributes: the image never
/// changes under a mount.
const TTL: Duration = Duration::from_secs(24 * 3600);

/// `st_blksize`: tools such as `cp` and `sha256sum` size their reads after it.
const BLKSIZE: u32 = 128 << 10;

type Handle<'a> = Box<dyn FsHandle + 'a>;

self_cell::self_cell!(
    /// An open file: its handle borrows the filesystem it came from, which
    /// the cell keeps alive.
    struct OpenFile {
        owner: Arc<dyn Filesystem>,
        #[covariant]
        dependent: Handle,
    }
);

/// One volume shown in the mount.
pub(crate) struct Vol {
    pub(crate) id: String,
    pub(crate) fs: Arc<dyn Filesystem>,
}

enum Source {
    /// A folder flr makes: the root of a multi-volume mount, or one level of
    /// a volume id containing `/`.
    Synthetic,
    /// An object of volume `vol`.
    Fs { vol: usize, path: FsPath },
}

struct Children {
    entries: Vec<(Vec<u8>, u64)>,
    by_name: HashMap<Vec<u8>, u64>,
}

impl Children {
    fn new(entries: Vec<(Vec<u8>, u64)>) -> Self {
        let by_name = entries.iter().map(|(n, i)| (n.clone(), *i)).collect();
        Children { entries, by_name }
    }
}

struct Node {
    parent: u64,
    source: Source,
    attr: FileAttr,
    children: Option<Arc<Children>>,
}

#[derive(Default)]
struct Table {
    /// Every inode handed out, by number - 1. A folder's entries become
    /// inodes once (its children are kept), so each entry has exactly one.
    nodes: Vec<Node>,
}

impl Table {
    fn node(&self, ino: u64) -> Result<&Node, Errno> {
        usize::try_from(ino)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| self.nodes.get(i))
            .ok_or(Errno::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        usize::try_from(ino)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| self.nodes.get_mut(i))
            .ok_or(Errno::ENOENT)
    }

    fn insert(&mut self, parent: u64, source: Source, mut attr: FileAttr) -> u64 {
        let ino = self.nodes.len() as u64 + 1;
        attr.ino = INodeNo(ino);
        self.nodes.push(Node {
            parent,
            source,
            attr,
            children: None,
        });
        ino
    }
}

/// The owner shown for objects whose filesystem records none (FAT, NTFS,
/// flr's own folders): the user who mounted.
#[derive(Clone, Copy)]
struct Owner {
    uid: u32,
    gid: u32,
}

/// The read-only FUSE filesystem over one or more flr filesystems.
pub(crate) struct FlrFuse {
    vols: Vec<Vol>,
    table: RwLock<Table>,
    files: Mutex<HashMap<u64, Arc<Mutex<OpenFile>>>>,
    next_fh: AtomicU64,
    owner: Owner,
}

fn valid_name(n: &[u8]) -> bool {
    !n.is_empty() && n != b"." && n != b".." && !n.contains(&b'/') && !n.contains(&0)
}

fn to_system_time(t: Timestamp) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(t.nanos.min(999_999_999)));
    if t.secs >= 0 {
        UNIX_EPOCH
            .checked_add(Duration::from_secs(t.secs.unsigned_abs()) + nanos)
            .unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(t.secs.unsigned_abs()))
            .and_then(|s| s.checked_add(nanos))
            .unwrap_or(UNIX_EPOCH)
    }
}

fn dir_attr(mtime: SystemTime, owner: Owner) -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind: FileType::Directory,
        perm: 0o555,
        nlink: 2,
        uid: owner.uid,
        gid: owner.gid,
        rdev: 0,
        blksize: BLKSIZE,
        flags: 0,
    }
}

fn meta_attr(m: &Metadata, owner: Owner) -> FileAttr {
    let kind = match m.kind {
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        // Devices, FIFOs and sockets are listed as empty files that cannot
        // be opened: a FIFO node would block whoever reads it.
        FileKind::File | FileKind::Special => FileType::RegularFile,
    };
    let default = match kind {
        FileType::Directory => 0o755,
        FileType::Symlink => 0o777,
        _ => 0o644,
    };
    let perm = u16::try_from(m.mode.map_or(default, |p| p & 0o7777)).unwrap_or(0o444);
    let size = if m.kind == FileKind::Special {
        0
    } else {
        m.size
    };
    let t = m.mtime.map_or(UNIX_EPOCH, to_system_time);
    FileAttr {
        ino: INodeNo(0),
        size,
        blocks: size.div_ceil(512),
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind,
        perm,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid: m.uid.unwrap_or(owner.uid),
        gid: m.gid.unwrap_or(owner.gid),
        rdev: 0,
        blksize: BLKSIZE,
        flags: 0,
    }
}

/// Linux's largest xattr value (XATTR_SIZE_MAX) and longest name.
const XATTR_SIZE_MAX: u64 = 64 << 10;
const XATTR_NAME_MAX: usize = 255;

/// The named data streams (NTFS alternate data streams) of `path` as
/// read-only xattrs `user.ntfs.stream.NAME`, as `get --streams=xattr`
/// restores them; streams too large for an xattr value (over 64 KiB) or
/// with too long a name are left out (`flr cat ID:/path:stream` reads
/// them), and one that cannot be read is noted and left out.
fn stream_xattrs(fs: &dyn Filesystem, path: &FsPath) -> Vec<flr_fs::Xattr> {
    let Ok(streams) = fs.streams(path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for s in streams {
        let name = format!("{}{}", flr_fs::STREAM_XATTR_PREFIX, s.name);
        if s.size > XATTR_SIZE_MAX || name.len() > XATTR_NAME_MAX {
            continue;
        }
        let read = |h: &mut dyn flr_fs::FileHandle| -> Result<Vec<u8>, FsError> {
            let mut v = vec![0u8; usize::try_from(h.size().min(XATTR_SIZE_MAX)).unwrap_or(0)];
            let mut at = 0;
            while at < v.len() {
                let n = h.read_at(at as u64, &mut v[at..])?;
                if n == 0 {
                    break;
                }
                at += n;
            }
            v.truncate(at);
            Ok(v)
        };
        match fs
            .open_stream(path, &s.name)
            .and_then(|mut h| read(h.as_mut()))
        {
            Ok(v) => out.push((name.into_bytes(), v)),
            Err(e) => note(format_args!("{path}:{}: {e}", s.name)),
        }
    }
    out
}

/// Answers a getxattr/listxattr: the size when asked with 0, the bytes
/// when they fit, `ERANGE` when not.
fn reply_xattr(reply: ReplyXattr, size: u32, data: &[u8]) {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    if size == 0 {
        reply.size(len);
    } else if len <= size {
        reply.data(data);
    } else {
        reply.error(Errno::ERANGE);
    }
}

fn errno_of(e: &FsError) -> Errno {
    match e {
        FsError::NotFound { .. } => Errno::ENOENT,
        FsError::NotADirectory { .. } => Errno::ENOTDIR,
        FsError::NotAFile { .. } => Errno::EISDIR,
        FsError::Unsupported { .. } => Errno::EOPNOTSUPP,
        _ => Errno::EIO,
    }
}

/// Messages go to stderr and never stop the filesystem (with `--daemon`
/// stderr is /dev/null once mounted). They are written to fd 2 directly:
/// the caller may hold the `Stderr` lock for as long as the mount lasts.
fn note(msg: std::fmt::Arguments<'_>) {
    let line = format!("flr mount: {msg}\n");
    let _ = rustix::io::write(std::io::stderr().as_fd(), line.as_bytes());
}

impl FlrFuse {
    /// Builds the tree: with `single`, the one volume's root is the mount's
    /// root; otherwise each volume is a folder named by its id, ids with
    /// `/` nesting (`p3/vg/lv` is `p3/` → `vg/` → `lv/`). Returns the
    /// volumes that could not be placed, with the reason.
    pub(crate) fn new(vols: Vec<Vol>, single: bool) -> Result<(Self, Vec<String>), FsError> {
        let owner = Owner {
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
        };
        let now = SystemTime::now();
        let mut table = Table::default();
        let mut skipped = Vec::new();
        if single {
            let fs = &vols
                .first()
                .ok_or_else(|| FsError::NotFound {
                    path: "(no volume)".into(),
                })?
                .fs;
            let meta = fs.metadata(&FsPath::root())?;
            table.insert(
                1,
                Source::Fs {
                    vol: 0,
                    path: FsPath::root(),
                },
                meta_attr(&meta, owner),
            );
        } else {
            table.insert(1, Source::Synthetic, dir_attr(now, owner));
            // Synthetic folders' children, by inode.
            let mut synth: HashMap<u64, Vec<(Vec<u8>, u64)>> = HashMap::new();
            synth.insert(1, Vec::new());
            let mut order: Vec<usize> = (0..vols.len()).collect();
            order.sort_by(|a, b| vols[*a].id.cmp(&vols[*b].id));
            'vols: for vi in order {
                let v = &vols[vi];
                let parts: Vec<&str> = v.id.split('/').collect();
                if parts.iter().any(|p| !valid_name(p.as_bytes())) {
                    skipped.push(format!("{}: the id cannot be a folder name", v.id));
                    continue;
                }
                let mut dir = 1u64;
                for (k, part) in parts.iter().enumerate() {
                    let last = k + 1 == parts.len();
                    let existing = synth
                        .get(&dir)
                        .and_then(|c| c.iter().find(|(n, _)| n == part.as_bytes()))
                        .map(|(_, i)| *i);
                    match (existing, last) {
                        (Some(i), false) if synth.contains_key(&i) => dir = i,
                        (Some(_), _) => {
                            skipped.push(format!(
                                "{}: its folder would lie inside or over another volume's; mount it alone with --volume {}",
                                v.id, v.id
                            ));
                            continue 'vols;
                        }
                        (None, false) => {
                            let i = table.insert(dir, Source::Synthetic, dir_attr(now, owner));
                            synth
                                .entry(dir)
                                .or_default()
                                .push((part.as_bytes().to_vec(), i));
                            synth.insert(i, Vec::new());
                            dir = i;
                        }
                        (None, true) => {
                            let meta = match v.fs.metadata(&FsPath::root()) {
                                Ok(m) => m,
                                Err(e) => {
                                    skipped.push(format!("{}: {e}", v.id));
                                    continue 'vols;
                                }
                            };
                            let i = table.insert(
                                dir,
                                Source::Fs {
                                    vol: vi,
                                    path: FsPath::root(),
                                },
                                meta_attr(&meta, owner),
                            );
                            synth
                                .entry(dir)
                                .or_default()
                                .push((part.as_bytes().to_vec(), i));
                        }
                    }
                }
            }
            for (ino, entries) in synth {
                if let Ok(n) = table.node_mut(ino) {
                    n.children = Some(Arc::new(Children::new(entries)));
                }
            }
        }
        Ok((
            FlrFuse {
                vols,
                table: RwLock::new(table),
                files: Mutex::new(HashMap::new()),
                next_fh: AtomicU64::new(1),
                owner,
            },
            skipped,
        ))
    }

    fn read_table(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_table(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }

    fn fs_errno(&self, vol: usize, path: &FsPath, e: &FsError) -> Errno {
        let errno = errno_of(e);
        if errno != Errno::ENOENT {
            let id = self.vols.get(vol).map_or("?", |v| v.id.as_str());
            note(format_args!("{id}:{path}: {e}"));
        }
        errno
    }

    /// The xattrs of inode `ino`, read-only from its filesystem (none for
    /// the synthetic folders).
    fn xattrs(&self, ino: u64) -> Result<Vec<flr_fs::Xattr>, Errno> {
        match self.fs_path(ino) {
            Ok((vol, path, _)) => {
                let fs = &self.vols[vol].fs;
                let mut xs = fs
                    .xattrs(&path)
                    .map_err(|e| self.fs_errno(vol, &path, &e))?;
                xs.extend(stream_xattrs(fs.as_ref(), &path));
                Ok(xs)
            }
            Err(Errno::EISDIR) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        Ok(self.read_table().node(ino)?.attr)
    }

    /// The entries of directory `ino`, read from its filesystem the first
    /// time and kept.
    fn children(&self, ino: u64) -> Result<Arc<Children>, Errno> {
        let (vol, path) = {
            let t = self.read_table();
            let n = t.node(ino)?;
            if let Some(c) = &n.children {
                return Ok(c.clone());
            }
            match &n.source {
                Source::Fs { vol, path } if n.attr.kind == FileType::Directory => {
                    (*vol, path.clone())
                }
                _ => return Err(Errno::ENOTDIR),
            }
        };
        // Read without holding the table: other threads go on meanwhile. Each
        // entry is kept as its name and attributes only, as the folder streams.
        let id = &self.vols[vol].id;
        let fs_errno = |e: FsError| self.fs_errno(vol, &path, &e);
        let mut read = Vec::new();
        for e in self.vols[vol].fs.read_dir_stream(&path).map_err(fs_errno)? {
            let e = e.map_err(fs_errno)?;
            if e.name.is_empty() || e.name == b"." || e.name == b".." {
                // Besides the folder's own links (a corrupt or crafted folder): a
                // path reaches the folder or its parent, never this entry.
                note(format_args!(
                    "{id}:{}: an entry named {:?} is not shown (a path cannot reach it; corrupt folder)",
                    display_path(&path),
                    String::from_utf8_lossy(&e.name)
                ));
                continue;
            }
            read.push((e.name, meta_attr(&e.meta, self.owner)));
        }
        let mut t = self.write_table();
        if let Some(c) = &t.node(ino)?.children {
            return Ok(c.clone());
        }
        let mut entries = Vec::with_capacity(read.len());
        let mut by_name = HashMap::with_capacity(read.len());
        let mut unshowable = Vec::new();
        for (name, attr) in read {
            if !valid_name(&name) {
                unshowable.push((name, attr));
                continue;
            }
            // A second entry with a name already shown (a corrupt folder): a
            // path reaches only the first.
            if by_name.contains_key(&name) {
                continue;
            }
            let source = Source::Fs {
                vol,
                path: path.join(&name),
            };
            let i = t.insert(ino, source, attr);
            by_name.insert(name.clone(), i);
            entries.push((name, i));
        }
        // Names with `/` or NUL cannot be file names here: shown under a safe
        // name (those characters as `_`, `~N` if that is taken), and reported.
        for (name, attr) in unshowable {
            let base: Vec<u8> = name
                .iter()
                .map(|&b| if b == b'/' || b == 0 { b'_' } else { b })
                .collect();
            let mut shown = base.clone();
            let mut n = 1u32;
            while by_name.contains_key(&shown) {
                shown = base.clone();
                shown.extend_from_slice(format!("~{n}").as_bytes());
                n += 1;
            }
            let child = path.join(&name);
            note(format_args!(
                "{id}:{}: shown as {:?} (not a valid file name here)",
                display_path(&child),
                String::from_utf8_lossy(&shown)
            ));
            let source = Source::Fs { vol, path: child };
            let i = t.insert(ino, source, attr);
            by_name.insert(shown.clone(), i);
            entries.push((shown, i));
        }
        let c = Arc::new(Children { entries, by_name });
        t.node_mut(ino)?.children = Some(c.clone());
        Ok(c)
    }

    fn fs_path(&self, ino: u64) -> Result<(usize, FsPath, FileAttr), Errno> {
        let t = self.read_table();
        let n = t.node(ino)?;
        match &n.source {
            Source::Fs { vol, path } => Ok((*vol, path.clone(), n.attr)),
            Source::Synthetic => Err(Errno::EISDIR),
        }
    }

    fn open_file(&self, ino: u64) -> Result<u64, Errno> {
        let (vol, path, attr) = self.fs_path(ino)?;
        match attr.kind {
            FileType::Directory => return Err(Errno::EISDIR),
            FileType::Symlink => return Err(Errno::ELOOP),
            _ => {}
        }
        let fs = self.vols[vol].fs.clone();
        let meta = fs
            .metadata(&path)
            .map_err(|e| self.fs_errno(vol, &path, &e))?;
        if meta.kind == FileKind::Special {
            return Err(Errno::ENXIO);
        }
        let file = OpenFile::try_new(fs, |fs| fs.open(&path))
            .map_err(|e| self.fs_errno(vol, &path, &e))?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, Arc::new(Mutex::new(file)));
        Ok(fh)
    }

    fn read_file(&self, ino: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let file = self
            .files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh)
            .cloned()
            .ok_or(Errno::EBADF)?;
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        let result = file.with_dependent_mut(|_, h| {
            let len = h.size();
            let want = len.saturating_sub(offset).min(u64::from(size));
            let mut buf = vec![0u8; usize::try_from(want).unwrap_or(0)];
            let mut done = 0usize;
            while done < buf.len() {
                match h.read_at(offset + done as u64, &mut buf[done..]) {
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(e) => return Err(e),
                }
            }
            buf.truncate(done);
            Ok(buf)
        });
        result.map_err(|e| match self.fs_path(ino) {
            Ok((vol, path, _)) => self.fs_errno(vol, &path, &e),
            Err(_) => errno_of(&e),
        })
    }
}

impl fuser::Filesystem for FlrFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Large read-ahead: files are streamed in big requests.
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = self.children(parent.0).and_then(|c| {
            let ino = *c.by_name.get(name.as_bytes()).ok_or(Errno::ENOENT)?;
            self.attr(ino)
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = self.fs_path(ino.0).and_then(|(vol, path, attr)| {
            if attr.kind != FileType::Symlink {
                return Err(Errno::EINVAL);
            }
            self.vols[vol]
                .fs
                .read_link(&path)
                .map_err(|e| self.fs_errno(vol, &path, &e))
        });
        match r {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.open_file(ino.0) {
            // The image never changes: the kernel may keep pages across opens.
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read_file(ino.0, fh.0, offset, size) {
            Ok(b) => reply.data(&b),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.attr(ino.0) {
            Ok(a) if a.kind == FileType::Directory => {
                reply.opened(FileHandle(0), FopenFlags::FOPEN_CACHE_DIR)
            }
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let children = match self.children(ino.0) {
            Ok(c) => c,
            Err(e) => return reply.error(e),
        };
        let parent = self.read_table().node(ino.0).map_or(1, |n| n.parent);
        let t = self.read_table();
        // Offsets index the kept list directly: each call costs what it
        // returns, not the entries before it (a million-entry folder is
        // read in thousands of calls).
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for k in start..children.entries.len().saturating_add(2) {
            let (name, child) = match k {
                0 => (b".".as_slice(), ino.0),
                1 => (b"..".as_slice(), parent),
                _ => {
                    let (n, i) = &children.entries[k - 2];
                    (n.as_slice(), *i)
                }
            };
            let kind = t.node(child).map_or(FileType::RegularFile, |n| n.attr.kind);
            if reply.add(INodeNo(child), k as u64 + 1, kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (mut total, mut free) = (0u64, 0u64);
        for v in &self.vols {
            let i = v.fs.info();
            total = total.saturating_add(i.total_bytes);
            free = free.saturating_add(i.free_bytes.unwrap_or(0));
        }
        let bs = 4096u64;
        reply.statfs(total / bs, free / bs, 0, 0, 0, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if mask.contains(AccessFlags::W_OK) {
            return reply.error(Errno::EROFS);
        }
        match self.attr(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        use std::os::unix::ffi::OsStrExt;
        let r = self.xattrs(ino.0).and_then(|xs| {
            xs.into_iter()
                .find(|(n, _)| n.as_slice() == name.as_bytes())
                .map(|(_, v)| v)
                .ok_or(Errno::NO_XATTR)
        });
        match r {
            Ok(v) => reply_xattr(reply, size, &v),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.xattrs(ino.0) {
            Ok(xs) => {
                let mut list = Vec::new();
                for (n, _) in xs {
                    list.extend_from_slice(&n);
                    list.push(0);
                }
                reply_xattr(reply, size, &list);
            }
            Err(e) => reply.error(e),
        }
    }

    // Every change is refused: the mount is read-only (and mounted `ro`, so
    // the kernel refuses most of these before they arrive).

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo image's three filesystems (FAT, ext4, NTFS), by volume id.
    fn demo() -> HashMap<String, Arc<dyn Filesystem>> {
        let path = flr_testdata::testdata_dir().join("demo.vhd");
        let img =
            flr_engine::open_path(&path, flr_engine::Scan::Quick, &flr_engine::KeyRing::new())
                .unwrap();
        img.volumes
            .iter()
            .map(|v| (v.id.clone(), Arc::from(v.open_fs().unwrap())))
            .collect()
    }

    fn names(f: &FlrFuse, ino: u64) -> Vec<String> {
        let mut v: Vec<String> = f
            .children(ino)
            .unwrap()
            .entries
            .iter()
            .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
            .collect();
        v.sort();
        v
    }

    fn child(f: &FlrFuse, ino: u64, name: &str) -> u64 {
        *f.children(ino)
            .unwrap()
            .by_name
            .get(name.as_bytes())
            .unwrap_or_else(|| panic!("no {name}"))
    }

    #[test]
    fn ids_with_slashes_nest_and_overlaps_are_reported() {
        let fs = demo();
        let vol = |id: &str, from: &str| Vol {
            id: id.into(),
            fs: fs[from].clone(),
        };
        let (f, skipped) = FlrFuse::new(
            vec![
                vol("p2", "p2"),
                vol("d2/p3/vg/lv", "p3"),
                vol("d2/p3/vg/lv2", "p1"),
                vol("p2/x", "p1"),
                vol("a/../b", "p1"),
            ],
            false,
        )
        .unwrap();
        assert_eq!(names(&f, 1), ["d2", "p2"]);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(
            skipped.iter().any(|s| s.starts_with("p2/x: ")),
            "{skipped:?}"
        );
        let vg = child(&f, child(&f, child(&f, 1, "d2"), "p3"), "vg");
        assert_eq!(names(&f, vg), ["lv", "lv2"]);
        let lv = child(&f, vg, "lv");
        assert_eq!(f.attr(lv).unwrap().kind, FileType::Directory);
        let mut want: Vec<String> = fs["p3"]
            .read_dir(&FsPath::root())
            .unwrap()
            .into_iter()
            .map(|e| String::from_utf8_lossy(&e.name).into_owned())
            .collect();
        want.sort();
        assert_eq!(names(&f, lv), want);
        // Inodes are stable: the same entry gives the same number.
        assert_eq!(child(&f, vg, "lv"), lv);
    }

    #[test]
    fn names_that_cannot_be_file_names_are_renamed_or_hidden() {
        // testdata/disks/gen.sh patches "..", "../../../tmp/flr-slash",
        // "/tmp/flr-abs-name" and "nul\0byte.txt" into the root folder.
        let path = flr_testdata::fixture("disks/hostile.img.zst");
        let img =
            flr_engine::open_path(&path, flr_engine::Scan::Quick, &flr_engine::KeyRing::new())
                .unwrap();
        let fs: Arc<dyn Filesystem> = Arc::from(img.volumes[0].open_fs().unwrap());
        let (f, _) = FlrFuse::new(
            vec![Vol {
                id: "disk".into(),
                fs,
            }],
            true,
        )
        .unwrap();
        let shown = names(&f, 1);
        for n in &shown {
            assert!(valid_name(n.as_bytes()), "{n:?} in {shown:?}");
        }
        let read = |name: &str| {
            let ino = child(&f, 1, name);
            let fh = f.open_file(ino).unwrap();
            f.read_file(ino, fh, 0, 4096).unwrap()
        };
        assert_eq!(read("nul_byte.txt"), b"nul byte\n");
        assert_eq!(read(".._.._.._tmp_flr-slash"), b"slash\n");
        assert_eq!(read("_tmp_flr-abs-name"), b"absolute\n");
        // The entry named ".." is hidden: lookup and readdir agree.
        assert!(!shown.iter().any(|n| n == ".." || n == "."), "{shown:?}");
        assert!(!f.children(1).unwrap().by_name.contains_key(&b".."[..]));
        // Every shown name maps back to exactly one node.
        let c = f.children(1).unwrap();
        assert_eq!(c.entries.len(), c.by_name.len());
    }

    #[test]
    fn reads_at_any_offset_stream_through_the_open_handle() {
        let fs = demo();
        let (f, _) = FlrFuse::new(
            vec![Vol {
                id: "p3".into(),
                fs: fs["p3"].clone(),
            }],
            true,
        )
        .unwrap();
        let dir = child(&f, child(&f, 1, "Projects"), "2024");
        let ino = child(&f, dir, "model.bin");
        let size = f.attr(ino).unwrap().size;
        let want = flr_testdata::manifest("disks/demo.p3.tsv")
            .into_iter()
            .find(|e| e.path == "Projects/2024/model.bin")
            .unwrap();
        assert_eq!(size, want.size);
        let fh = f.open_file(ino).unwrap();
        // Odd-sized pieces, and the last one past the end.
        let mut data = Vec::new();
        while (data.len() as u64) < size {
            let piece = f.read_file(ino, fh, data.len() as u64, 7777).unwrap();
            assert!(!piece.is_empty());
            data.extend_from_slice(&piece);
        }
        assert!(f.read_file(ino, fh, size, 4096).unwrap().is_empty());
        assert_eq!(flr_testdata::sha256_hex(&data), want.sha256);
        // A read at an offset gives the same bytes.
        let mid = f.read_file(ino, fh, 123_457, 1000).unwrap();
        assert_eq!(mid, data[123_457..124_457]);
        assert_eq!(f.open_file(dir), Err(Errno::EISDIR));
        assert_eq!(f.read_file(ino, 999, 0, 1), Err(Errno::EBADF));
    }
}
