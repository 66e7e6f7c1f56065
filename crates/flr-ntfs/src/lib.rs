//! Read-only NTFS for flr, on top of the [`ntfs`] crate.
//!
//! [`NtfsFs`] implements [`flr_fs::Filesystem`] over any [`flr_io::Source`].
//! The ntfs crate parses the boot sector, file records and attributes
//! (through an [`flr_io::ReaderCursor`]); this crate adds
//! what a restore needs on top: names from the Win32/POSIX namespaces (DOS
//! 8.3 duplicates skipped), metafiles hidden from the root listing, links
//! (symlinks, junctions, WSL and Interix symlinks), refusal of data it
//! cannot return correctly, and a data path that gathers the run list of
//! the unnamed `$DATA` stream once per open (across attribute lists), then
//! reads straight from the source into the caller's buffer, with sparse
//! runs and bytes past the initialized size (valid data length) as zeros;
//! LZNT1-compressed streams are decompressed one compression unit at a time.
//!
//! The ntfs crate's directory-index and attribute-list parsers panic on
//! damaged input, so those structures are parsed here; remaining calls into
//! the crate run behind a panic guard.
//!
//! Files whose data flr cannot return correctly are listed with
//! [`Metadata::unreadable`] set and refused by [`Filesystem::open`] with
//! [`FsError::Unsupported`]: EFS-encrypted, compression methods other than
//! LZNT1, and reparse points other than links (WOF-compressed,
//! deduplicated, cloud placeholders, HSM…).
//!
//! Names are matched exactly; when no name matches exactly, a unique
//! case-insensitive match is accepted, as Windows would.
//!
//! Known limits: the ntfs crate locates file records through the `$DATA`
//! of `$MFT`'s base record only, so records beyond it in an `$MFT` split by
//! an attribute list cannot be opened; `$LogFile` is not replayed.
//!
//! [`Filesystem::consistency`] reports the `$Volume` dirty flag and whether
//! `$LogFile`'s restart area records a clean shutdown; flr does not replay
//! `$LogFile`, so a volume in use when the image was taken is reported as
//! dirty with recent changes possibly missing.
#![deny(missing_docs)]

mod layer;
pub use layer::{NtfsFormat, FORMAT};
mod attrs;

mod compressed;
mod data;
mod extents;
mod index;
mod lznt1;
mod record;
mod reparse;
mod secure;
mod streams;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use flr_fs::{
    Consistency, DirEntry, FileExtents, FileHandle, FileKind, Filesystem, FsError, FsInfo, FsPath,
    Journal, Metadata, NotReplayed, Timestamp, Unmount,
};
use flr_io::{IoError, ReadAt, ReaderCursor, Source};
use ntfs::{Ntfs, NtfsAttributeType, NtfsError, NtfsFile, NtfsFileFlags};

use data::{Data, NtfsHandle};
use reparse::Reparse;

pub(crate) fn corrupt(offset: u64, what: impl Into<String>) -> FsError {
    FsError::Corrupt {
        fs: "ntfs",
        offset: (offset != 0).then_some(offset),
        what: what.into(),
    }
}

/// Maps an ntfs crate error: I/O errors from the source stay I/O errors.
pub(crate) fn nt(e: NtfsError) -> FsError {
    if let NtfsError::Io(io) = e {
        return match io.into_inner() {
            Some(inner) => match inner.downcast::<IoError>() {
                Ok(ioe) => FsError::Io(*ioe),
                Err(other) => corrupt(0, other.to_string()),
            },
            None => corrupt(0, "I/O error"),
        };
    }
    corrupt(0, e.to_string())
}

/// Runs `f`, turning a panic (inside the ntfs crate, on damaged structures
/// it does not check) into a corrupt-filesystem error. The panics fuzzing
/// found (index entries, attribute lists) are avoided by parsing those
/// here; this is the net for the rest. It cannot help in `panic = "abort"`
/// builds.
fn guard<T>(f: impl FnOnce() -> Result<T, FsError>) -> Result<T, FsError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("panic");
            Err(corrupt(
                0,
                format!("the NTFS parser failed on damaged structures ({msg})"),
            ))
        }
    }
}

/// Whether `src` starts like an NTFS volume (`NTFS    ` at byte 3).
pub fn probe(src: &dyn ReadAt) -> bool {
    let mut m = [0u8; 8];
    src.read_exact_at(3, &mut m).is_ok() && &m == b"NTFS    "
}

const ROOT: u64 = 5;
const BITMAP: u64 = 6;
/// Records below this are metafiles or reserved.
const FIRST_USER_RECORD: u64 = 24;
const FA_SYSTEM: u32 = 0x4;
const FA_REPARSE: u32 = 0x400;
const FA_COMPRESSED: u32 = 0x800;
const FA_ENCRYPTED: u32 = 0x4000;
/// Largest Interix symlink data read (8-byte magic + 4096 UTF-16 units).
const MAX_INTERIX: u64 = 8 + 8192;
/// Cap on directory listings kept for lookups (entries, all directories).
const DIR_CACHE_ENTRIES: usize = 1 << 20;
/// Free space is counted from `$Bitmap` when it is at most this large.
const MAX_BITMAP: u64 = 32 << 20;

fn utf16(b: &[u8]) -> String {
    char::decode_utf16(b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])))
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// NTFS time (100 ns units since 1601) to Unix time.
fn filetime(t: u64) -> Timestamp {
    const EPOCH_DIFF: i64 = 11_644_473_600;
    Timestamp {
        secs: (t / 10_000_000) as i64 - EPOCH_DIFF,
        nanos: (t % 10_000_000) as u32 * 100,
    }
}

/// What flr makes of one file record.
#[derive(Debug, Clone)]
struct Node {
    rec: u64,
    kind: FileKind,
    size: u64,
    mtime: Option<Timestamp>,
    /// Last access, MFT record change and creation times.
    times: [Option<Timestamp>; 3],
    unreadable: Option<String>,
    link: Option<Vec<u8>>,
}

#[derive(Debug)]
struct DirItem {
    name: String,
    rec: u64,
    seq: u16,
    hidden: bool,
}

#[derive(Debug, Default)]
struct DirList {
    items: Vec<DirItem>,
    sorted: Vec<usize>,
}

impl DirList {
    fn lookup(&self, name: &str) -> Option<&DirItem> {
        let i = self
            .sorted
            .partition_point(|&i| self.items[i].name.as_str() < name);
        if let Some(&j) = self.sorted.get(i) {
            if self.items[j].name == name {
                return Some(&self.items[j]);
            }
        }
        let lower = name.to_lowercase();
        let mut found = self
            .items
            .iter()
            .filter(|it| it.name.to_lowercase() == lower);
        match (found.next(), found.next()) {
            (Some(it), None) => Some(it),
            _ => None,
        }
    }
}

#[derive(Default)]
struct DirCache {
    map: HashMap<u64, Arc<DirList>>,
    entries: usize,
}

/// An NTFS volume, read-only.
pub struct NtfsFs {
    src: Source,
    ntfs: Ntfs,
    label: Option<String>,
    free: OnceLock<Option<u64>>,
    dirs: Mutex<DirCache>,
    consistency: Consistency,
    /// `$Secure:$SDS`, indexed on first use (see `secure.rs`).
    secure: OnceLock<Option<secure::Secure>>,
}

impl std::fmt::Debug for NtfsFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NtfsFs")
            .field(
                "serial",
                &format_args!("{:016X}", self.ntfs.serial_number()),
            )
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl NtfsFs {
    /// Opens the NTFS volume on `src` (the whole partition).
    pub fn open(src: Source) -> Result<NtfsFs, FsError> {
        guard(|| Self::open_volume(src))
    }

    fn open_volume(src: Source) -> Result<NtfsFs, FsError> {
        if !probe(&*src) {
            return Err(corrupt(3, "no NTFS signature in the boot sector"));
        }
        let mut fs = ReaderCursor::new(src.clone());
        let ntfs = Ntfs::new(&mut fs).map_err(nt)?;
        if ntfs.size() > src.len() {
            return Err(corrupt(
                0x28,
                format!(
                    "the boot sector claims {} bytes but the volume has {}",
                    ntfs.size(),
                    src.len()
                ),
            ));
        }
        // Check the root directory is readable now, so that a broken MFT
        // fails at open rather than at the first listing.
        ntfs.root_directory(&mut fs).map_err(nt)?;
        let label = match ntfs.volume_name(&mut fs) {
            Some(Ok(n)) => Some(utf16(n.name().0)).filter(|s| !s.is_empty()),
            Some(Err(e)) => return Err(nt(e)),
            None => None,
        };
        let mut v = NtfsFs {
            src,
            ntfs,
            label,
            free: OnceLock::new(),
            dirs: Mutex::new(DirCache::default()),
            consistency: Consistency::default(),
            secure: OnceLock::new(),
        };
        v.consistency = v.read_consistency(&mut fs);
        Ok(v)
    }

    /// The `$Volume` dirty flag and whether `$LogFile`'s restart area says
    /// the volume is clean. flr does not replay `$LogFile`.
    fn read_consistency(&self, fs: &mut ReaderCursor) -> Consistency {
        let dirty_flag = self.ntfs.volume_info(fs).ok().map(|i| {
            i.flags()
                .contains(ntfs::structured_values::NtfsVolumeFlags::IS_DIRTY)
        });
        let log_clean = guard(|| Ok(self.logfile_clean(fs))).ok().flatten();
        let unmount = match (dirty_flag, log_clean) {
            (Some(true), _) | (_, Some(false)) => Unmount::Dirty,
            (Some(false), Some(true)) => Unmount::Clean,
            _ => Unmount::Unknown,
        };
        let journal = match log_clean {
            Some(true) => Journal::Clean,
            Some(false) => Journal::NotReplayed {
                reason: NotReplayed::NotImplemented,
            },
            None => Journal::NotReplayed {
                reason: NotReplayed::Damaged {
                    offset: None,
                    what: "the $LogFile restart area could not be read".into(),
                },
            },
        };
        Consistency::new(unmount, journal, "NTFS $LogFile")
    }

    /// Whether `$LogFile` records a clean shutdown: its first restart page
    /// (`RSTR`, or `CHKD` after chkdsk) has the volume-is-clean flag or no
    /// client in use; a log filled with 0xff (reset by chkdsk or ntfs-3g)
    /// is clean. `None` when it cannot be read.
    ///
    /// Source: the restart page and restart area layouts as ntfs-3g and
    /// the NTFS documentation describe them: page header `RSTR` at 0,
    /// restart area offset u16 at 0x18; restart area: client-in-use list
    /// u16 at 0x0c, flags u16 at 0x0e (0x2: volume is clean).
    fn logfile_clean(&self, fs: &mut ReaderCursor) -> Option<bool> {
        const LOGFILE: u64 = 2;
        let file = self.file(fs, LOGFILE).ok()?;
        let data = self.data_of(fs, &file).ok()?;
        let mut h = NtfsHandle::new(self.src.clone(), data);
        let mut page = vec![0u8; 4096];
        let n = h.read_at(0, &mut page).ok()?;
        let page = page.get(..n)?;
        if page.len() < 512 {
            return None;
        }
        if page.iter().all(|&b| b == 0xff) {
            return Some(true);
        }
        if &page[..4] != b"RSTR" && &page[..4] != b"CHKD" {
            return None;
        }
        let le16 = |o: usize| page.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let ra = usize::from(le16(0x18)?);
        let in_use = le16(ra + 0x0c)?;
        let flags = le16(ra + 0x0e)?;
        Some(flags & 0x2 != 0 || in_use == 0xffff)
    }

    fn cursor(&self) -> ReaderCursor {
        ReaderCursor::new(self.src.clone())
    }

    fn file(&self, fs: &mut ReaderCursor, rec: u64) -> Result<NtfsFile<'_>, FsError> {
        let f = self.ntfs.file(fs, rec).map_err(nt)?;
        if !f.flags().contains(NtfsFileFlags::IN_USE) {
            return Err(corrupt(
                f.position().value().map_or(0, |p| p.get()),
                format!("file record {rec} is not in use"),
            ));
        }
        Ok(f)
    }

    /// Reads a small unnamed attribute value whole (resident or not);
    /// `None` when absent or larger than `max`.
    fn small_value(
        &self,
        fs: &mut ReaderCursor,
        file: &NtfsFile<'_>,
        ty: NtfsAttributeType,
        max: u64,
    ) -> Result<Option<Vec<u8>>, FsError> {
        let data = self.stream_of(fs, file, ty, "")?;
        if data.size() > max {
            return Ok(None);
        }
        let mut h = NtfsHandle::new(self.src.clone(), data);
        let mut out = vec![0u8; usize::try_from(h.size()).unwrap_or(0)];
        let n = h.read_at(0, &mut out)?;
        out.truncate(n);
        Ok((!out.is_empty()).then_some(out))
    }

    /// Loads record `rec` (checking its sequence number when given).
    fn node(&self, fs: &mut ReaderCursor, rec: u64, seq: Option<u16>) -> Result<Node, FsError> {
        let file = self.file(fs, rec)?;
        if seq.is_some_and(|s| s != 0 && s != file.sequence_number()) {
            return Err(corrupt(
                file.position().value().map_or(0, |p| p.get()),
                format!("stale directory entry: record {rec} was reused"),
            ));
        }
        let si = file.info().map_err(nt)?;
        let attrs = si.file_attributes().bits();
        let mtime = Some(filetime(si.modification_time().nt_timestamp()));
        let times = [
            Some(filetime(si.access_time().nt_timestamp())),
            Some(filetime(si.mft_record_modification_time().nt_timestamp())),
            Some(filetime(si.creation_time().nt_timestamp())),
        ];
        let is_dir = file.is_directory();
        let mut node = Node {
            rec,
            kind: if is_dir {
                FileKind::Dir
            } else {
                FileKind::File
            },
            size: 0,
            mtime,
            times,
            unreadable: None,
            link: None,
        };
        let mut data = None;
        if !is_dir {
            if let Some(si) = self.stream_info(fs, &file, "")? {
                node.size = si.size;
                data = Some((si.flags, si.resident));
            }
        }
        if attrs & FA_REPARSE != 0 {
            let rp = self
                .small_value(fs, &file, NtfsAttributeType::ReparsePoint, 16 * 1024 + 8)?
                .map(|v| reparse::parse(&v));
            match rp {
                Some(Reparse::Link(t)) => {
                    node.kind = FileKind::Symlink;
                    node.size = t.len() as u64;
                    node.link = Some(t);
                    return Ok(node);
                }
                Some(Reparse::Special) => {
                    node.kind = FileKind::Special;
                    node.size = 0;
                    return Ok(node);
                }
                Some(Reparse::Opaque(reason)) if !is_dir => {
                    node.unreadable = Some(reason);
                    return Ok(node);
                }
                None if !is_dir => {
                    node.unreadable =
                        Some("reparse point whose reparse data cannot be read".into());
                    return Ok(node);
                }
                // A directory keeps its index whatever its reparse tag.
                _ => {}
            }
        }
        if is_dir {
            return Ok(node);
        }
        let (flags, resident) = data.unwrap_or((0, true));
        if flags & 0x4000 != 0 || attrs & FA_ENCRYPTED != 0 {
            node.unreadable = Some("EFS-encrypted".into());
        } else if flags & 0x00ff > 1 && !resident {
            node.unreadable = Some(format!(
                "NTFS compression method {} (only LZNT1 is known)",
                flags & 0x00ff
            ));
        } else if attrs & FA_COMPRESSED != 0 && !resident && flags & 0x00ff == 0 {
            // Marked compressed but the stream is stored plainly: readable.
        } else if attrs & FA_SYSTEM != 0 && (10..=MAX_INTERIX).contains(&node.size) {
            let mut h = NtfsHandle::new(self.src.clone(), self.data_of(fs, &file)?);
            let mut buf = vec![0u8; node.size as usize];
            let n = h.read_at(0, &mut buf)?;
            if let Some(t) = reparse::interix(&buf[..n]) {
                node.kind = FileKind::Symlink;
                node.size = t.len() as u64;
                node.link = Some(t);
            }
        }
        Ok(node)
    }

    fn meta(node: &Node) -> Metadata {
        Metadata {
            kind: node.kind,
            size: node.size,
            mtime: node.mtime,
            atime: node.times[0],
            ctime: node.times[1],
            btime: node.times[2],
            inode: Some(node.rec),
            unreadable: node.unreadable.clone(),
            ..Default::default()
        }
    }

    fn lock_dirs(&self) -> std::sync::MutexGuard<'_, DirCache> {
        self.dirs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entries of directory record `rec`, cached.
    fn list(&self, fs: &mut ReaderCursor, rec: u64) -> Result<Arc<DirList>, FsError> {
        if let Some(d) = self.lock_dirs().map.get(&rec) {
            return Ok(d.clone());
        }
        let file = self.file(fs, rec)?;
        let mut list = DirList::default();
        for n in self.index_names(fs, &file)? {
            list.items.push(DirItem {
                hidden: rec == ROOT && n.rec < FIRST_USER_RECORD,
                name: n.name,
                rec: n.rec,
                seq: n.seq,
            });
        }
        let mut idx: Vec<usize> = (0..list.items.len()).collect();
        idx.sort_by(|&a, &b| list.items[a].name.cmp(&list.items[b].name));
        list.sorted = idx;
        let list = Arc::new(list);
        let mut cache = self.lock_dirs();
        if cache.entries + list.items.len() > DIR_CACHE_ENTRIES {
            cache.map.clear();
            cache.entries = 0;
        }
        cache.entries += list.items.len();
        cache.map.insert(rec, list.clone());
        Ok(list)
    }

    /// Resolves `path` without following links.
    fn resolve(&self, fs: &mut ReaderCursor, path: &FsPath) -> Result<Node, FsError> {
        let mut cur = self.node(fs, ROOT, None)?;
        for (i, name) in path.0.iter().enumerate() {
            if cur.kind != FileKind::Dir {
                return Err(FsError::NotADirectory {
                    path: FsPath(path.0[..i].to_vec()).to_string(),
                });
            }
            let not_found = || FsError::NotFound {
                path: path.to_string(),
            };
            let name = std::str::from_utf8(name).map_err(|_| not_found())?;
            let list = self.list(fs, cur.rec)?;
            let item = list.lookup(name).ok_or_else(not_found)?;
            cur = self.node(fs, item.rec, Some(item.seq))?;
        }
        Ok(cur)
    }

    fn count_free(&self) -> Option<u64> {
        let cluster = u64::from(self.ntfs.cluster_size());
        let clusters = self.ntfs.size() / cluster;
        if clusters.div_ceil(8) > MAX_BITMAP {
            return None;
        }
        let mut fs = self.cursor();
        let file = self.file(&mut fs, BITMAP).ok()?;
        let data = self.data_of(&mut fs, &file).ok()?;
        let need = clusters.div_ceil(8);
        if data.size() < need {
            return None;
        }
        let mut h = NtfsHandle::new(self.src.clone(), data);
        let mut used = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        while off < need {
            let want = usize::try_from((need - off).min(buf.len() as u64)).ok()?;
            let n = h.read_at(off, &mut buf[..want]).ok()?;
            if n == 0 {
                return None;
            }
            for (i, b) in buf[..n].iter().enumerate() {
                let first_bit = (off + i as u64) * 8;
                let valid = clusters.saturating_sub(first_bit).min(8) as u32;
                let mask = if valid == 8 {
                    0xff
                } else {
                    (1u16 << valid) as u8 - 1
                };
                used += u64::from((b & mask).count_ones());
            }
            off += n as u64;
        }
        Some(clusters.saturating_sub(used) * cluster)
    }

    /// The volume serial number as `fsutil fsinfo ntfsinfo` prints it.
    fn serial(&self) -> String {
        format!("{:016X}", self.ntfs.serial_number())
    }
}

impl Filesystem for NtfsFs {
    fn info(&self) -> FsInfo {
        FsInfo {
            fs_type: "ntfs".into(),
            label: self.label.clone(),
            id: Some(self.serial()),
            block_size: self.ntfs.cluster_size(),
            total_bytes: self.ntfs.size(),
            free_bytes: *self
                .free
                .get_or_init(|| guard(|| Ok(self.count_free())).ok().flatten()),
            consistency: self.consistency.clone(),
        }
    }

    fn metadata(&self, path: &FsPath) -> Result<Metadata, FsError> {
        guard(|| {
            let mut fs = self.cursor();
            Ok(Self::meta(&self.resolve(&mut fs, path)?))
        })
    }

    fn read_dir(&self, path: &FsPath) -> Result<Vec<DirEntry>, FsError> {
        guard(|| self.read_dir_inner(path))
    }

    fn read_link(&self, path: &FsPath) -> Result<Vec<u8>, FsError> {
        guard(|| {
            let mut fs = self.cursor();
            let node = self.resolve(&mut fs, path)?;
            node.link.ok_or_else(|| FsError::Unsupported {
                path: path.to_string(),
                reason: "not a symbolic link".into(),
            })
        })
    }

    /// See the `extents` module: records, attribute-list and reparse
    /// runs, and the data or `$I30` allocation runs; `None` for an
    /// encrypted or unknown-compressed stream. Record 0 (`$MFT`) is not
    /// named for every file.
    fn extents(&self, path: &FsPath) -> Result<Option<FileExtents>, FsError> {
        guard(|| self.extents_inner(path))
    }

    fn open(&self, path: &FsPath) -> Result<Box<dyn FileHandle + '_>, FsError> {
        guard(|| self.open_file(path))
    }

    fn streams(&self, path: &FsPath) -> Result<Vec<flr_fs::StreamInfo>, FsError> {
        guard(|| self.list_streams(path))
    }

    fn open_stream(&self, path: &FsPath, name: &str) -> Result<Box<dyn FileHandle + '_>, FsError> {
        guard(|| self.open_named_stream(path, name))
    }

    fn windows_meta(&self, path: &FsPath) -> Result<Option<flr_fs::WindowsMeta>, FsError> {
        guard(|| self.windows_meta_of(path).map(Some))
    }
}

impl NtfsFs {
    fn read_dir_inner(&self, path: &FsPath) -> Result<Vec<DirEntry>, FsError> {
        let mut fs = self.cursor();
        let dir = self.resolve(&mut fs, path)?;
        if dir.kind != FileKind::Dir {
            return Err(FsError::NotADirectory {
                path: path.to_string(),
            });
        }
        let list = self.list(&mut fs, dir.rec)?;
        let mut out = Vec::with_capacity(list.items.len());
        for it in list.items.iter().filter(|it| !it.hidden) {
            let meta = match self.node(&mut fs, it.rec, Some(it.seq)) {
                Ok(n) => Self::meta(&n),
                // One bad record should not hide its siblings.
                Err(e) => Metadata {
                    kind: FileKind::File,
                    inode: Some(it.rec),
                    unreadable: Some(e.to_string()),
                    ..Default::default()
                },
            };
            out.push(DirEntry {
                name: it.name.clone().into_bytes(),
                meta,
            });
        }
        Ok(out)
    }

    fn open_file(&self, path: &FsPath) -> Result<Box<dyn FileHandle + '_>, FsError> {
        let mut fs = self.cursor();
        let node = self.resolve(&mut fs, path)?;
        if node.kind != FileKind::File {
            return Err(FsError::NotAFile {
                path: path.to_string(),
            });
        }
        if let Some(reason) = node.unreadable {
            return Err(FsError::Unsupported {
                path: path.to_string(),
                reason,
            });
        }
        let file = self.file(&mut fs, node.rec)?;
        let data = self.data_of(&mut fs, &file);
        self.handle(data, &path.to_string())
    }
}

impl NtfsFs {
    /// A handle on a stream's data, once its runs are known to cover its
    /// size; an unsupported stream is reported under `shown` (the file's
    /// path, with `:stream` for a named one).
    pub(crate) fn handle(
        &self,
        data: Result<Data, FsError>,
        shown: &str,
    ) -> Result<Box<dyn FileHandle + '_>, FsError> {
        let data = data.map_err(|e| match e {
            FsError::Unsupported { reason, .. } => FsError::Unsupported {
                path: shown.to_string(),
                reason,
            },
            e => e,
        })?;
        if let Data::Runs { runs, size, .. } = &data {
            let have = runs.last().map_or(0, |r| r.vstart + r.len);
            if have < *size {
                return Err(corrupt(
                    0,
                    format!("{shown}: data runs cover {have} of {size} bytes"),
                ));
            }
        }
        Ok(Box::new(NtfsHandle::new(self.src.clone(), data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filetime_converts() {
        assert_eq!(
            filetime(116_444_736_000_000_000),
            Timestamp { secs: 0, nanos: 0 }
        );
        assert_eq!(
            filetime(116_444_736_000_000_001),
            Timestamp {
                secs: 0,
                nanos: 100
            }
        );
        assert_eq!(filetime(0).secs, -11_644_473_600);
    }
}
