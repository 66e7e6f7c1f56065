//! The read-only filesystem interface shared by flr's filesystem readers
//! (FAT, ext2/3/4, NTFS), so that the operations above them (`ls`, `get`,
//! `cat`, later `mount` and `verify`) are written once.
//!
//! Each filesystem also says whether it was cleanly unmounted and what was
//! done with its journal ([`Consistency`], in [`FsInfo::consistency`] and
//! [`Filesystem::consistency`]), so that a crash-consistent snapshot whose
//! newest changes may be missing is reported, never silent.
//!
//! Paths are lists of name components as raw bytes ([`FsPath`]): ext4 names
//! are arbitrary bytes, FAT and NTFS names are UTF-16 on disk and are given
//! here as UTF-8.
//!
//! # Errors
//! [`FsError`] sorts failures by whose fault they are: the caller
//! ([`FsError::NotFound`], [`FsError::NotADirectory`]…), the image
//! ([`FsError::Corrupt`]), flr's support ([`FsError::Unsupported`], for a
//! file whose bytes cannot be returned correctly, with the reason), or the
//! layer below ([`FsError::Io`]).
#![deny(missing_docs)]

use serde::Serialize;

pub use consistency::{Consistency, Journal, NotReplayed, Unmount};
pub use flr_io::IoError;
pub use names::{display_component, display_name, display_path};
pub use windows::{Reparse, SecurityDescriptor, StreamInfo, WindowsMeta, STREAM_XATTR_PREFIX};

pub mod acl;
mod consistency;
mod names;
pub mod windows;

/// One extended attribute: its full name (`user.x`, `trusted.y`,
/// `security.selinux`, `system.posix_acl_access`…) and its value, as
/// `getxattr(2)` on a kernel mount returns them.
pub type Xattr = (Vec<u8>, Vec<u8>);

/// A path inside a filesystem: its components, root first, without `/`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FsPath(pub Vec<Vec<u8>>);

impl FsPath {
    /// The root directory.
    pub fn root() -> Self {
        FsPath(Vec::new())
    }

    /// Parses `/a/b/c` (leading and repeated slashes ignored; `.` skipped).
    /// `..` is kept as a name: filesystems resolve it like any other entry
    /// name, never as "go up" in the restoring machine's tree.
    pub fn parse(s: &str) -> Self {
        FsPath(
            s.split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .map(|c| c.as_bytes().to_vec())
                .collect(),
        )
    }

    /// This path with one more component.
    pub fn join(&self, name: &[u8]) -> Self {
        let mut v = self.0.clone();
        v.push(name.to_vec());
        FsPath(v)
    }

    /// The last component, if any.
    pub fn file_name(&self) -> Option<&[u8]> {
        self.0.last().map(|v| v.as_slice())
    }

    /// True for the root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for FsPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("/");
        }
        for c in &self.0 {
            write!(f, "/{}", String::from_utf8_lossy(c))?;
        }
        Ok(())
    }
}

/// What kind of object an entry is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// A regular file (the default).
    #[default]
    File,
    /// A directory.
    Dir,
    /// A symbolic link (or an NTFS symlink/junction shown as one).
    Symlink,
    /// A device, FIFO, socket or other special file: listed, not extracted.
    Special,
}

impl FileKind {
    /// The kind recorded by the file type byte that ext2/3/4 and XFS keep in
    /// directory entries (1 file, 2 folder, 7 symlink; the rest special).
    pub fn from_dirent_type(t: u8) -> FileKind {
        match t {
            1 => FileKind::File,
            2 => FileKind::Dir,
            7 => FileKind::Symlink,
            _ => FileKind::Special,
        }
    }
}

/// A timestamp: seconds and nanoseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z (negative before).
    pub secs: i64,
    /// Nanoseconds, 0..1e9.
    pub nanos: u32,
}

/// What is known about one file.
///
/// New fields may be added: build one with `..Default::default()`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Metadata {
    /// File, directory, symlink or special.
    pub kind: FileKind,
    /// Size in bytes of the file's data (for a symlink, of its target).
    pub size: u64,
    /// Last modification time, where the filesystem records one.
    pub mtime: Option<Timestamp>,
    /// Last access time, where the filesystem records one.
    pub atime: Option<Timestamp>,
    /// Last status (inode or record) change time, where the filesystem
    /// records one (ext4, XFS, Btrfs `ctime`; NTFS MFT record change).
    pub ctime: Option<Timestamp>,
    /// Creation (birth) time, where the filesystem records one (ext4
    /// `crtime`, XFS v5 `crtime`, Btrfs `otime`, NTFS and FAT creation).
    pub btime: Option<Timestamp>,
    /// Unix permission bits (`0o7777` part), where the filesystem has them.
    pub mode: Option<u32>,
    /// Owner user id, where known.
    pub uid: Option<u32>,
    /// Owner group id, where known.
    pub gid: Option<u32>,
    /// Inode or file record number, where the filesystem has one.
    pub inode: Option<u64>,
    /// Set when flr cannot return this file's data correctly (NTFS
    /// compression, EFS, ext4 fscrypt…): the reason. Such a file is listed
    /// but never extracted as wrong bytes.
    pub unreadable: Option<String>,
}

impl Metadata {
    /// An entry whose inode could not be read: listed with the kind its
    /// directory entry records and the reason, never read (one bad inode
    /// does not hide its siblings).
    pub fn unreadable_entry(kind: FileKind, inode: u64, reason: String) -> Metadata {
        Metadata {
            kind,
            inode: Some(inode),
            unreadable: Some(reason),
            ..Default::default()
        }
    }
}

/// One entry of a directory listing.
#[derive(Debug, Clone)]
pub struct DirEntry {
    /// The entry's name (UTF-8 for FAT and NTFS; raw bytes for ext).
    pub name: Vec<u8>,
    /// Its metadata.
    pub meta: Metadata,
}

/// Facts about a filesystem shown by `flr probe`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FsInfo {
    /// `fat12`, `fat16`, `fat32`, `ext2`, `ext3`, `ext4`, `ntfs`.
    pub fs_type: String,
    /// The volume label, if any.
    pub label: Option<String>,
    /// UUID (ext) or serial as Windows shows it (FAT `ABCD-1234`, NTFS 16 hex
    /// digits).
    pub id: Option<String>,
    /// Cluster or block size in bytes.
    pub block_size: u32,
    /// Total size in bytes as the filesystem sees it.
    pub total_bytes: u64,
    /// Free bytes, where cheaply known.
    pub free_bytes: Option<u64>,
    /// Whether the filesystem was cleanly unmounted and what flr did with
    /// its journal (serialised as `consistency`; see [`Consistency`]).
    pub consistency: Consistency,
}

/// A subvolume or snapshot of a filesystem that has them (Btrfs), as
/// `probe` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subvolume {
    /// Its id (5 is the top level).
    pub id: u64,
    /// Its path from the top level (`@/.snapshots/5/snapshot`; empty for the top level).
    pub path: String,
    /// The subvolume it is linked in.
    pub parent: Option<u64>,
    /// The generation of its last change.
    pub generation: u64,
    /// When it was created (a snapshot: when it was taken).
    pub created: Option<Timestamp>,
    /// A read-only snapshot.
    pub read_only: bool,
    /// Its UUID.
    pub uuid: Option<String>,
    /// The UUID of the subvolume it is a snapshot of.
    pub parent_uuid: Option<String>,
    /// Whether it is what the filesystem shows by default.
    pub default: bool,
}

/// The volume bytes that define one file or folder (see
/// [`Filesystem::extents`]): if none of them changed since an earlier
/// version of the volume, neither did the object (its data, size, times,
/// mode, owner, link target, and for a folder its entries' names and ids).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FileExtents {
    /// `(offset, len)` byte ranges in the volume holding the data (a
    /// folder: its entry blocks), in file order; holes are absent.
    pub data: Vec<(u64, u64)>,
    /// `(offset, len)` byte ranges holding what describes it: the inode or
    /// record, extent-tree or indirect blocks, attribute lists, the FAT
    /// entries of its chain, the directory entry that holds its metadata,
    /// journal copies that replace any of these.
    pub meta: Vec<(u64, u64)>,
    /// For a regular file whose bytes are stored as they are (not
    /// compressed, resident in a record, inline in an inode or encrypted):
    /// where each byte lies on the volume, in file order. File bytes no
    /// run covers read as zeros (holes, unwritten extents, bytes past
    /// NTFS's valid data length). `None` for anything else, or when the
    /// reader does not say.
    pub layout: Option<Vec<FileRun>>,
}

/// One piece of a file stored as it is: file bytes `file..file + len` are
/// the volume's bytes `volume..volume + len` (see [`FileExtents::layout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FileRun {
    /// Offset in the file.
    pub file: u64,
    /// Offset in the volume.
    pub volume: u64,
    /// Bytes.
    pub len: u64,
}

impl FileExtents {
    /// Whether this file holds the same bytes as `old`, the same file (of
    /// the same size) in the base `src` is compared against, without
    /// reading either: both lay their bytes out alike (the same volume
    /// offsets at the same file offsets, holes in the same places) and none
    /// of the data ranges changed. Without a layout on both sides (a
    /// compressed file) the data ranges must be equal, in order.
    pub fn same_data(&self, old: &FileExtents, src: &dyn flr_io::ReadAt) -> bool {
        let alike = match (&self.layout, &old.layout) {
            (Some(a), Some(b)) => a == b,
            (None, None) => self.data == old.data,
            _ => false,
        };
        alike
            && self
                .data
                .iter()
                .all(|&(o, l)| src.changed(o, l) == flr_io::Change::Unchanged)
    }

    /// Every range, data then metadata.
    pub fn all(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.data.iter().chain(&self.meta).copied()
    }

    /// Bytes covered (ranges counted as given, overlaps twice).
    pub fn bytes(&self) -> u64 {
        self.all().map(|(_, l)| l).sum()
    }

    /// Asks `src` (the volume the filesystem reads) whether any of these
    /// ranges changed since its base: [`Change::Unchanged`](flr_io::Change)
    /// only when every range is.
    pub fn changed(&self, src: &dyn flr_io::ReadAt) -> flr_io::Change {
        let mut c = flr_io::Change::Unchanged;
        for (off, len) in self.all() {
            c = c.and(src.changed(off, len));
            if c == flr_io::Change::Changed {
                break;
            }
        }
        c
    }
}

/// An error from a filesystem reader.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// No such file or directory.
    #[error("{path}: no such file or directory")]
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// A path component that must be a directory is not one.
    #[error("{path}: not a directory")]
    NotADirectory {
        /// The path.
        path: String,
    },
    /// The operation needs a regular file.
    #[error("{path}: not a regular file")]
    NotAFile {
        /// The path.
        path: String,
    },
    /// The file's data cannot be returned correctly by flr.
    #[error("{path}: cannot read this file: {reason}")]
    Unsupported {
        /// The path.
        path: String,
        /// Why (compressed, encrypted, reparse point…).
        reason: String,
    },
    /// The filesystem structures are corrupt.
    #[error("{fs}: corrupt filesystem{}: {what}", offset.map(|o| format!(" at byte offset {o:#x}")).unwrap_or_default())]
    Corrupt {
        /// `ext4`, `ntfs`, `fat`.
        fs: &'static str,
        /// Byte offset in the volume, where known.
        offset: Option<u64>,
        /// What is wrong.
        what: String,
    },
    /// The layer below failed.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// An open regular file, read at positions.
pub trait FileHandle: Send {
    /// The file's size in bytes.
    fn size(&self) -> u64;

    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read
    /// (0 only at or past the end of the file). Implementations are fastest
    /// for sequential offsets and large buffers.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, FsError>;

    /// The byte ranges `(offset, len)` of the file that hold data, sorted
    /// and not overlapping, within [`FileHandle::size`]; everything outside
    /// them is a hole (reads as zeros: never allocated, or allocated but
    /// never written, such as ext4/XFS unwritten extents and Btrfs
    /// preallocated ones). `None` when the reader cannot tell (every byte
    /// is then data); the default.
    fn data_ranges(&mut self) -> Result<Option<Vec<(u64, u64)>>, FsError> {
        Ok(None)
    }
}

/// Whether file bytes `offset..offset + len` may differ from the base,
/// given where the file lays them out now (`new`) and in the base (`old`,
/// `old_size` bytes long), both sorted by file offset, on a volume `src`
/// that answers [`flr_io::ReadAt::changed`] against the base. A piece laid
/// out alike on both sides answers as the volume does; a hole on both
/// sides is unchanged; anything else (moved, newly allocated or freed, past
/// the base's end) is changed.
pub fn layout_changed(
    new: &[FileRun],
    old: &[FileRun],
    old_size: u64,
    offset: u64,
    len: u64,
    src: &dyn flr_io::ReadAt,
) -> flr_io::Change {
    use flr_io::Change;
    let Some(end) = offset.checked_add(len) else {
        return Change::Unknown;
    };
    if end > old_size {
        return Change::Changed;
    }
    // Where `pos` lies (a volume offset, or a hole) and where that piece ends.
    fn piece(runs: &[FileRun], pos: u64) -> (Option<u64>, u64) {
        let i = runs.partition_point(|r| r.file.saturating_add(r.len) <= pos);
        match runs.get(i) {
            Some(r) if r.file <= pos => (Some(r.volume + (pos - r.file)), r.file + r.len),
            Some(r) => (None, r.file),
            None => (None, u64::MAX),
        }
    }
    let mut answer = Change::Unchanged;
    let mut pos = offset;
    while pos < end {
        let (a, a_end) = piece(new, pos);
        let (b, b_end) = piece(old, pos);
        let next = a_end.min(b_end).min(end);
        answer = answer.and(match (a, b) {
            (None, None) => Change::Unchanged,
            (Some(x), Some(y)) if x == y => src.changed(x, next - pos),
            _ => Change::Changed,
        });
        if answer == Change::Changed {
            break;
        }
        pos = next;
    }
    answer
}

/// Clips `(offset, len)` ranges to `size` and merges touching ones: the
/// common tail of every [`FileHandle::data_ranges`].
pub fn clip_ranges(ranges: impl IntoIterator<Item = (u64, u64)>, size: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (off, len) in ranges {
        if off >= size || len == 0 {
            continue;
        }
        let len = len.min(size - off);
        match out.last_mut() {
            Some((o, l)) if *o + *l == off => *l += len,
            _ => out.push((off, len)),
        }
    }
    out
}

/// The entries of one directory, produced as they are read (see
/// [`Filesystem::read_dir_stream`]).
pub type DirStream<'a> = Box<dyn Iterator<Item = Result<DirEntry, FsError>> + Send + 'a>;

/// A read-only filesystem.
pub trait Filesystem: Send + Sync {
    /// Type, label, id, sizes, consistency.
    fn info(&self) -> FsInfo;

    /// Whether the filesystem was cleanly unmounted and what flr did with
    /// its journal; [`Consistency::may_miss_changes`] says whether to warn.
    /// The default is the one in [`Filesystem::info`].
    fn consistency(&self) -> Consistency {
        self.info().consistency
    }

    /// Metadata of the object at `path` (symlinks are not followed).
    fn metadata(&self, path: &FsPath) -> Result<Metadata, FsError>;

    /// The entries of the directory at `path`, without `.` and `..`.
    fn read_dir(&self, path: &FsPath) -> Result<Vec<DirEntry>, FsError>;

    /// The entries of the directory at `path`, without `.` and `..`, in the
    /// directory's own order, produced as they are read: memory does not
    /// grow with the number of entries where the reader streams (ext2/3/4).
    /// Opening fails as [`Filesystem::read_dir`] does; an error met later
    /// (a damaged block) is the stream's last item. The default collects
    /// [`Filesystem::read_dir`].
    fn read_dir_stream(&self, path: &FsPath) -> Result<DirStream<'_>, FsError> {
        Ok(Box::new(self.read_dir(path)?.into_iter().map(Ok)))
    }

    /// The target of the symlink at `path`, as stored.
    fn read_link(&self, path: &FsPath) -> Result<Vec<u8>, FsError>;

    /// Opens the regular file at `path` for reading. Fails with
    /// [`FsError::Unsupported`] when the data cannot be returned correctly.
    fn open(&self, path: &FsPath) -> Result<Box<dyn FileHandle + '_>, FsError>;

    /// The volume byte ranges that define the object at `path` (symlinks
    /// not followed): its data extents and the metadata that describes it
    /// (see [`FileExtents`]). A folder's answer covers its own entry blocks
    /// and record, not its children's. `None` when this filesystem cannot
    /// say (the caller then treats the object as changed); the default.
    fn extents(&self, path: &FsPath) -> Result<Option<FileExtents>, FsError> {
        let _ = path;
        Ok(None)
    }

    /// The extended attributes of the object at `path` (symlinks not
    /// followed), named and valued as a kernel mount shows them (POSIX ACLs
    /// as `system.posix_acl_access` / `system.posix_acl_default` in the
    /// Linux xattr form, see [`acl`]), in on-disk order. Empty for a
    /// filesystem without xattrs or whose reader does not read them (the
    /// default).
    fn xattrs(&self, path: &FsPath) -> Result<Vec<Xattr>, FsError> {
        let _ = path;
        Ok(Vec::new())
    }

    /// The named data streams (NTFS alternate data streams) of the object
    /// at `path`, by name; empty for a filesystem without them (the
    /// default). The unnamed stream (the file's data) is not listed.
    fn streams(&self, path: &FsPath) -> Result<Vec<StreamInfo>, FsError> {
        let _ = path;
        Ok(Vec::new())
    }

    /// Opens the named data stream `name` of the object at `path` (see
    /// [`Filesystem::streams`]). The default: not found.
    fn open_stream(&self, path: &FsPath, name: &str) -> Result<Box<dyn FileHandle + '_>, FsError> {
        Err(FsError::NotFound {
            path: format!("{path}:{name}"),
        })
    }

    /// What Windows records about the object at `path`: attribute bits,
    /// reparse kind, owner, group and security descriptor as SDDL (see
    /// [`WindowsMeta`]). `None` for a filesystem that keeps none of it
    /// (the default).
    fn windows_meta(&self, path: &FsPath) -> Result<Option<WindowsMeta>, FsError> {
        let _ = path;
        Ok(None)
    }

    /// Its subvolumes and snapshots, for a filesystem that has them (empty
    /// otherwise).
    fn subvolumes(&self) -> Result<Vec<Subvolume>, FsError> {
        Ok(Vec::new())
    }

    /// The same filesystem rooted at the subvolume at `path` from the top
    /// level (`/` is the top level itself); `None` for a filesystem without
    /// subvolumes.
    fn open_subvolume(&self, path: &str) -> Option<Result<Box<dyn Filesystem>, FsError>> {
        let _ = path;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_paths() {
        assert_eq!(FsPath::parse("/"), FsPath::root());
        assert_eq!(
            FsPath::parse("//a/./b/"),
            FsPath(vec![b"a".to_vec(), b"b".to_vec()])
        );
        assert_eq!(FsPath::parse("a/b").to_string(), "/a/b");
    }

    /// A volume of 64 KiB compared against a base in which only 4096..8192
    /// differs.
    fn volume() -> flr_io::Compared {
        let m: flr_io::Source = std::sync::Arc::new(flr_io::MemSource::new(vec![0; 65536]));
        flr_io::Compared::new(m, flr_io::RangeSet::from_extents([(4096, 4096)]))
    }

    fn run(file: u64, volume: u64, len: u64) -> FileRun {
        FileRun { file, volume, len }
    }

    #[test]
    fn layout_changed_follows_each_piece() {
        use flr_io::Change::*;
        let v = volume();
        // File 0..8192 at volume 0..8192, a hole, then 12288..16384 at 32768.
        let new = [run(0, 0, 8192), run(12288, 32768, 4096)];
        let same = new;
        let c = |o, l, old: &[FileRun], old_size| layout_changed(&new, old, old_size, o, l, &v);
        assert_eq!(c(0, 4096, &same, 16384), Unchanged);
        assert_eq!(c(0, 8192, &same, 16384), Changed, "volume 4096.. changed");
        assert_eq!(
            c(8192, 4096, &same, 16384),
            Unchanged,
            "a hole on both sides"
        );
        assert_eq!(c(12288, 4096, &same, 16384), Unchanged);
        assert_eq!(c(12288, 4096, &same, 12288), Changed, "past the base's end");
        // The base had the last piece elsewhere, or not at all, or held
        // the hole's bytes.
        let moved = [run(0, 0, 8192), run(12288, 40960, 4096)];
        assert_eq!(c(12288, 4096, &moved, 16384), Changed);
        assert_eq!(c(12288, 4096, &new[..1], 16384), Changed);
        let filled = [run(0, 0, 16384)];
        assert_eq!(c(8192, 4096, &filled, 16384), Changed);
        assert_eq!(c(0, 4096, &filled, 16384), Unchanged);
        assert_eq!(c(u64::MAX, 2, &same, 16384), Unknown);
    }

    #[test]
    fn same_data_needs_the_same_layout() {
        let v = volume();
        let x = |layout: Vec<FileRun>| FileExtents {
            data: layout.iter().map(|r| (r.volume, r.len)).collect(),
            meta: vec![(4096, 256)],
            layout: Some(layout),
        };
        // One unchanged block that moved from after a hole to before it:
        // the same data ranges, other bytes.
        let old = x(vec![run(4096 * 4, 16384, 4096)]);
        let new = x(vec![run(0, 16384, 4096)]);
        assert!(!new.same_data(&old, &v));
        assert!(old.same_data(&old, &v), "metadata changes do not count");
        let on_changed = x(vec![run(0, 4096, 4096)]);
        assert!(!on_changed.same_data(&on_changed, &v));
        let unmapped = FileExtents {
            layout: None,
            ..new.clone()
        };
        assert!(unmapped.same_data(&unmapped, &v));
        assert!(!unmapped.same_data(&new, &v));
    }
}
