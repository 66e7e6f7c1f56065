//! FAT12/16/32 filesystems, read-only, behind flr's
//! [`Filesystem`] trait.
//!
//! flr reads FAT itself rather than through the `fatfs` crate (which the
//! tests use as a cross-check): `fatfs` 0.3 decides FAT12/16/32 from the
//! cluster count and refuses volumes whose BPB says otherwise (a real-world
//! FAT32 below 65525 clusters), its file objects borrow a `!Sync`
//! filesystem so they cannot live in a `Send` file handle, and it may try
//! to write (FSInfo, dirty flag) when dropped.
//!
//! What this reader does:
//! - The FAT type comes from the boot sector: FAT32 when the BPB has no
//!   16-bit FAT size; FAT12 or FAT16 by cluster count, except that a volume
//!   whose type string says `FAT16` and whose FAT is sized for 16-bit
//!   entries is FAT16 (as `mkfs.fat -F 16` makes it on small volumes).
//! - Sector sizes 512, 1024, 2048, 4096; the active FAT of a FAT32 volume
//!   with mirroring off.
//! - Long file names (VFAT, checksum-verified), else the 8.3 name with the
//!   NT lower-case flags; 8.3 names decode as code page 437.
//! - Names match case-insensitively, long or short, as on Windows.
//! - Modification times are FAT local times, which record no time zone;
//!   they are returned as if they were UTC.
//! - A file's cluster chain is resolved once when it is opened, into runs
//!   of consecutive clusters; reads go straight to the data. FAT sectors
//!   and parsed directories (with a name index) are cached, bounded.
//! - [`FsInfo`]: label from the root-directory volume
//!   label entry, else the boot sector's (`NO NAME` is none); id is the
//!   serial as Windows shows it (`ABCD-1234`); `total_bytes` and
//!   `free_bytes` count data clusters (FAT32: the FSInfo free count when
//!   plausible, else a scan of FATs up to 16 MiB).
//! - Hostile images: chains that loop, end early, or leave the volume are
//!   errors; directories are capped at 65536 entries; a subdirectory entry
//!   that points back at one of its ancestors is listed as
//!   [`FileKind::Special`] with `unreadable` set, and is
//!   never entered, so a recursive walk ends.
//!
//! - [`Filesystem::consistency`]: the boot-sector dirty flag and the FAT entry 1
//!   clean-shutdown bit (FAT16/32); FAT has no journal.
//!
//! Nothing is ever written: the image is only read through [`ReadAt`].
#![deny(missing_docs)]

mod layer;
pub use layer::{FatFormat, FORMAT};
mod bpb;
mod dir;
mod table;

use flr_fs::{
    Consistency, DirEntry, FileExtents, FileHandle, FileKind, Filesystem, FsError, FsInfo, FsPath,
    Journal, Metadata, Unmount,
};
use flr_io::{ReadAt, Source};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use bpb::FatType;

use bpb::Geometry;
use dir::Entry;
use table::{corrupt, Fat, Run};

/// A directory holds at most 65536 entries of 32 bytes.
const MAX_DIR_BYTES: u64 = 65536 * 32;
/// Parsed directories are cached up to this many entries in all; the cache
/// is emptied when it would grow past it.
const MAX_CACHED_ENTRIES: usize = 200_000;

/// Whether `src` starts with a FAT boot sector (a BIOS parameter block flr
/// can use, and a jump instruction or the `55 AA` signature).
pub fn probe(src: &dyn ReadAt) -> bool {
    let mut s = [0u8; 512];
    if src.len() < 512 || src.read_exact_at(0, &mut s).is_err() {
        return false;
    }
    let jump = s[0] == 0xE9 || (s[0] == 0xEB && s[2] == 0x90);
    let signed = s[510] == 0x55 && s[511] == 0xAA;
    (jump || signed) && Geometry::parse(&s).is_ok()
}

/// A mounted FAT volume. `Send + Sync`; every read goes through the
/// [`Source`] it was opened on.
pub struct FatFs {
    src: Source,
    geo: Geometry,
    fat: Fat,
    label: Option<String>,
    free_bytes: Option<u64>,
    consistency: Consistency,
    /// Parsed directories by location, so that resolving many paths does
    /// not re-read and re-parse the same directories.
    dirs: Mutex<DirCache>,
}

#[derive(Default)]
struct DirCache {
    map: HashMap<DirLoc, Arc<dir::Listing>>,
    entries: usize,
}

impl std::fmt::Debug for FatFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FatFs")
            .field("fat_type", &self.geo.fat_type)
            .field("cluster_size", &self.geo.cluster_size)
            .field("label", &self.label)
            .finish()
    }
}

/// Where a directory's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum DirLoc {
    /// The fixed root directory of FAT12/16.
    FixedRoot,
    /// A cluster chain.
    Chain(u32),
}

/// A resolved path.
struct Found {
    /// `None` for the root.
    entry: Option<Entry>,
    /// The directories walked through, root first (cycle checks).
    ancestors: Vec<DirLoc>,
}

/// Whether the volume was cleanly unmounted: the dirty flag in the boot
/// sector's reserved byte (set by Windows NT and Linux while mounted; FAT12
/// and FAT16 at 0x25, FAT32 at 0x41, valid with the extended boot
/// signature) and the clean-shutdown bit of FAT entry 1 (FAT16 bit 15,
/// FAT32 bit 27; FAT12 has none). FAT has no journal.
fn read_consistency(boot: &[u8], geo: &Geometry, fat: &Fat) -> Consistency {
    let (sig_at, flags_at, clean_mask) = match geo.fat_type {
        FatType::Fat32 => (0x42, 0x41, Some(0x0800_0000u32)),
        FatType::Fat16 => (0x26, 0x25, Some(0x8000)),
        FatType::Fat12 => (0x26, 0x25, None),
    };
    let bs_dirty = matches!(boot[sig_at], 0x28 | 0x29) && boot[flags_at] & 1 != 0;
    let clean_bit = clean_mask.and_then(|m| fat.entry(1).ok().map(|v| v & m != 0));
    let unmount = if bs_dirty || clean_bit == Some(false) {
        Unmount::Dirty
    } else if clean_bit == Some(true) || matches!(boot[sig_at], 0x28 | 0x29) {
        Unmount::Clean
    } else {
        Unmount::Unknown
    };
    Consistency::new(unmount, Journal::None, "")
}

impl FatFs {
    /// Opens the FAT volume on `src`.
    pub fn open(src: Source) -> Result<FatFs, FsError> {
        let mut boot = [0u8; 512];
        if src.len() < 512 {
            return Err(corrupt(Some(0), "volume shorter than one sector"));
        }
        src.read_exact_at(0, &mut boot)?;
        let geo = Geometry::parse(&boot)?;
        let fat_end = geo.fat_offset.checked_add(geo.fat_bytes);
        if fat_end.is_none_or(|e| e > src.len()) {
            return Err(corrupt(
                Some(geo.fat_offset),
                format!(
                    "the FAT ({} bytes at byte offset {:#x}) does not fit in the volume ({} bytes)",
                    geo.fat_bytes,
                    geo.fat_offset,
                    src.len()
                ),
            ));
        }
        let fat = Fat::new(src.clone(), geo.clone());
        let consistency = read_consistency(&boot, &geo, &fat);
        let mut fs = FatFs {
            src,
            geo,
            fat,
            consistency,
            label: None,
            free_bytes: None,
            dirs: Mutex::new(DirCache::default()),
        };
        let root = fs.listing(fs.root_loc(), "/")?;
        fs.label = root
            .label
            .as_ref()
            .and_then(dir::label_text)
            .or_else(|| fs.geo.label.as_ref().and_then(dir::label_text));
        fs.free_bytes = fs
            .free_clusters()
            .map(|c| c * u64::from(fs.geo.cluster_size));
        Ok(fs)
    }

    /// The FAT type from the boot sector.
    pub fn fat_type(&self) -> FatType {
        self.geo.fat_type
    }

    /// Bytes per sector from the BPB (512, 1024, 2048 or 4096).
    pub fn sector_size(&self) -> u32 {
        self.geo.bytes_per_sector
    }

    /// The volume size the BPB declares, in bytes (may exceed the source
    /// when the image is truncated).
    pub fn volume_size(&self) -> u64 {
        self.geo.volume_bytes
    }

    fn root_loc(&self) -> DirLoc {
        match self.geo.fat_type {
            FatType::Fat32 => DirLoc::Chain(self.geo.root_cluster),
            _ => DirLoc::FixedRoot,
        }
    }

    /// Free clusters: FAT32's FSInfo count when it is there and plausible,
    /// else a scan of the FAT when it is at most 16 MiB.
    fn free_clusters(&self) -> Option<u64> {
        if let Some(at) = self.geo.fsinfo_offset {
            let mut s = [0u8; 512];
            if self.src.read_exact_at(at, &mut s).is_ok()
                && s[0..4] == [0x52, 0x52, 0x61, 0x41]
                && s[484..488] == [0x72, 0x72, 0x41, 0x61]
            {
                let free = u32::from_le_bytes([s[488], s[489], s[490], s[491]]);
                if free <= self.geo.cluster_count {
                    return Some(u64::from(free));
                }
            }
        }
        if self.geo.fat_bytes <= 16 << 20 {
            self.fat.count_free().ok()
        } else {
            None
        }
    }

    /// A directory's listing, from the cache or read and parsed.
    fn listing(&self, loc: DirLoc, path: &str) -> Result<Arc<dir::Listing>, FsError> {
        if let Some(l) = self.lock_dirs().map.get(&loc) {
            return Ok(l.clone());
        }
        let l = Arc::new(self.read_dir_loc(loc, path)?);
        let mut c = self.lock_dirs();
        if c.entries + l.len() > MAX_CACHED_ENTRIES {
            c.map.clear();
            c.entries = 0;
        }
        c.entries += l.len();
        c.map.insert(loc, l.clone());
        Ok(l)
    }

    fn lock_dirs(&self) -> std::sync::MutexGuard<'_, DirCache> {
        self.dirs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads a whole directory.
    fn read_dir_loc(&self, loc: DirLoc, path: &str) -> Result<dir::Listing, FsError> {
        let is_fat32 = self.geo.fat_type == FatType::Fat32;
        match loc {
            DirLoc::FixedRoot => {
                let len = self.geo.root_bytes.min(MAX_DIR_BYTES);
                // At most 2 MiB.
                let mut buf = vec![0u8; len as usize];
                self.src.read_exact_at(self.geo.root_offset, &mut buf)?;
                Ok(dir::parse(&buf, is_fat32))
            }
            DirLoc::Chain(first) => {
                let cs = u64::from(self.geo.cluster_size);
                let max = MAX_DIR_BYTES.div_ceil(cs).max(1);
                let runs = self
                    .fat
                    .chain(first, max, false, &format!("directory {path}"))?;
                let mut buf = Vec::new();
                for r in runs {
                    let at = self.geo.cluster_offset(r.first);
                    let len = u64::from(r.count) * cs;
                    let old = buf.len();
                    // The runs add up to at most 2 MiB plus one cluster.
                    buf.resize(old + len as usize, 0);
                    self.src.read_exact_at(at, &mut buf[old..])?;
                }
                Ok(dir::parse(&buf, is_fat32))
            }
        }
    }

    fn loc_of(&self, e: &Entry) -> DirLoc {
        if e.first_cluster == 0 {
            // A `..` pointing at the root uses 0; a subdirectory with 0 is
            // corrupt and would be the root again.
            self.root_loc()
        } else {
            DirLoc::Chain(e.first_cluster)
        }
    }

    fn resolve(&self, path: &FsPath) -> Result<Found, FsError> {
        let shown = path.to_string();
        let mut ancestors = vec![self.root_loc()];
        let mut entry: Option<Entry> = None;
        for (i, comp) in path.0.iter().enumerate() {
            let loc = match &entry {
                None => self.root_loc(),
                Some(e) if e.is_dir() => {
                    let l = self.loc_of(e);
                    if ancestors.contains(&l) {
                        return Err(corrupt(
                            None,
                            format!("{shown}: directory loop (a directory is its own ancestor)"),
                        ));
                    }
                    ancestors.push(l);
                    l
                }
                Some(_) => {
                    return Err(FsError::NotADirectory {
                        path: FsPath(path.0[..i].to_vec()).to_string(),
                    })
                }
            };
            let name = std::str::from_utf8(comp).map_err(|_| FsError::NotFound {
                path: shown.clone(),
            })?;
            let listing = self.listing(loc, &shown)?;
            let found = listing.find(name).ok_or_else(|| FsError::NotFound {
                path: shown.clone(),
            })?;
            entry = Some(found.clone());
        }
        Ok(Found { entry, ancestors })
    }

    fn meta(&self, e: Option<&Entry>) -> Metadata {
        Metadata {
            kind: if e.is_none_or(Entry::is_dir) {
                FileKind::Dir
            } else {
                FileKind::File
            },
            size: match e {
                Some(e) if !e.is_dir() => u64::from(e.size),
                _ => 0,
            },
            mtime: e.and_then(|e| e.mtime),
            atime: e.and_then(|e| e.adate),
            btime: e.and_then(|e| e.ctime),
            ..Default::default()
        }
    }

    /// The data runs of a regular file, as (file offset, byte offset on the
    /// volume, length) triples.
    fn file_runs(&self, e: &Entry, path: &str) -> Result<Vec<Extent>, FsError> {
        let size = u64::from(e.size);
        let cs = u64::from(self.geo.cluster_size);
        let need = size.div_ceil(cs);
        if need > u64::from(self.geo.cluster_count) {
            return Err(corrupt(
                None,
                format!("{path}: size {size} is larger than the volume's data area"),
            ));
        }
        let runs: Vec<Run> = self.fat.chain(e.first_cluster, need, true, path)?;
        let mut out = Vec::with_capacity(runs.len());
        let mut file_off = 0u64;
        for r in runs {
            let len = u64::from(r.count) * cs;
            out.push(Extent {
                file_off,
                disk_off: self.geo.cluster_offset(r.first),
                len,
            });
            file_off += len;
        }
        Ok(out)
    }
}

impl FatFs {
    /// The volume ranges of a directory's data: the fixed root, or its
    /// cluster chain (as far as a listing reads it).
    fn dir_ranges(&self, loc: DirLoc, path: &str) -> Result<Vec<(u64, u64)>, FsError> {
        match loc {
            DirLoc::FixedRoot => Ok(vec![(
                self.geo.root_offset,
                self.geo.root_bytes.min(MAX_DIR_BYTES),
            )]),
            DirLoc::Chain(first) => {
                let cs = u64::from(self.geo.cluster_size);
                let max = MAX_DIR_BYTES.div_ceil(cs).max(1);
                let runs = self
                    .fat
                    .chain(first, max, false, &format!("directory {path}"))?;
                Ok(self.run_ranges(&runs))
            }
        }
    }

    fn run_ranges(&self, runs: &[Run]) -> Vec<(u64, u64)> {
        let cs = u64::from(self.geo.cluster_size);
        runs.iter()
            .map(|r| (self.geo.cluster_offset(r.first), u64::from(r.count) * cs))
            .collect()
    }

    /// The bytes of FAT #1 (the copy flr reads) holding the entries of
    /// these runs.
    fn fat_ranges(&self, runs: &[Run]) -> Vec<(u64, u64)> {
        let pos = |c: u32| -> u64 {
            let c = u64::from(c);
            match self.geo.fat_type {
                FatType::Fat12 => c + c / 2,
                FatType::Fat16 => c * 2,
                FatType::Fat32 => c * 4,
            }
        };
        let width = match self.geo.fat_type {
            FatType::Fat32 => 4,
            _ => 2,
        };
        runs.iter()
            .map(|r| {
                let a = pos(r.first);
                let b = pos(r.first + (r.count - 1)) + width;
                (self.geo.fat_offset + a, b - a)
            })
            .collect()
    }

    fn extents_of(&self, path: &FsPath) -> Result<FileExtents, FsError> {
        let shown = path.to_string();
        let f = self.resolve(path)?;
        let mut x = FileExtents::default();
        let Some(e) = f.entry else {
            // The root: located by the boot sector, which opening reads.
            x.data = self.dir_ranges(self.root_loc(), &shown)?;
            if let DirLoc::Chain(first) = self.root_loc() {
                let cs = u64::from(self.geo.cluster_size);
                let max = MAX_DIR_BYTES.div_ceil(cs).max(1);
                let runs = self.fat.chain(first, max, false, &shown)?;
                x.meta = self.fat_ranges(&runs);
            }
            return Ok(x);
        };
        // Its directory entry (long-name slots and 8.3 slot), in the
        // parent's data.
        let parent = *f.ancestors.last().unwrap_or(&self.root_loc());
        let pdata = self.dir_ranges(parent, &shown)?;
        let (mut off, end) = (e.slots.0, e.slots.1 + 32);
        let mut base = 0u64;
        for &(at, len) in &pdata {
            while off < end && off >= base && off < base + len {
                let take = (end - off).min(base + len - off);
                x.meta.push((at + (off - base), take));
                off += take;
            }
            base += len;
        }
        if off < end {
            return Err(corrupt(
                None,
                format!("{shown}: directory entry past the end of its folder"),
            ));
        }
        let runs = if e.is_dir() {
            let cs = u64::from(self.geo.cluster_size);
            let max = MAX_DIR_BYTES.div_ceil(cs).max(1);
            match self.loc_of(&e) {
                DirLoc::Chain(first) => self.fat.chain(first, max, false, &shown)?,
                DirLoc::FixedRoot => Vec::new(),
            }
        } else {
            let cs = u64::from(self.geo.cluster_size);
            let need = u64::from(e.size).div_ceil(cs);
            if need == 0 {
                Vec::new()
            } else {
                self.fat.chain(e.first_cluster, need, true, &shown)?
            }
        };
        x.data = self.run_ranges(&runs);
        x.meta.extend(self.fat_ranges(&runs));
        if !e.is_dir() {
            // A chain's clusters hold the file's bytes one after another.
            let mut file = 0;
            x.layout = Some(
                x.data
                    .iter()
                    .map(|&(volume, len)| {
                        file += len;
                        flr_fs::FileRun {
                            file: file - len,
                            volume,
                            len,
                        }
                    })
                    .collect(),
            );
        }
        Ok(x)
    }
}

impl Filesystem for FatFs {
    /// A file's clusters and a folder's (data); the FAT #1 entries of
    /// those chains and the object's directory entry, long-name slots
    /// included (metadata). The fixed FAT12/16 root has no entry; FAT #2
    /// is not named (flr reads FAT #1 only).
    fn extents(&self, path: &FsPath) -> Result<Option<FileExtents>, FsError> {
        self.extents_of(path).map(Some)
    }

    fn info(&self) -> FsInfo {
        FsInfo {
            fs_type: self.geo.fat_type.name().to_string(),
            label: self.label.clone(),
            id: self
                .geo
                .serial
                .map(|s| format!("{:04X}-{:04X}", s >> 16, s & 0xFFFF)),
            block_size: self.geo.cluster_size,
            total_bytes: u64::from(self.geo.cluster_count) * u64::from(self.geo.cluster_size),
            free_bytes: self.free_bytes,
            consistency: self.consistency.clone(),
        }
    }

    fn metadata(&self, path: &FsPath) -> Result<Metadata, FsError> {
        let f = self.resolve(path)?;
        Ok(self.meta(f.entry.as_ref()))
    }

    fn read_dir(&self, path: &FsPath) -> Result<Vec<DirEntry>, FsError> {
        let shown = path.to_string();
        let f = self.resolve(path)?;
        let mut ancestors = f.ancestors;
        let loc = match &f.entry {
            None => self.root_loc(),
            Some(e) if e.is_dir() => {
                let l = self.loc_of(e);
                if ancestors.contains(&l) {
                    return Err(corrupt(
                        None,
                        format!("{shown}: directory loop (a directory is its own ancestor)"),
                    ));
                }
                ancestors.push(l);
                l
            }
            Some(_) => return Err(FsError::NotADirectory { path: shown }),
        };
        let listing = self.listing(loc, &shown)?;
        Ok(listing
            .entries
            .iter()
            .map(|e| {
                let mut meta = self.meta(Some(e));
                if e.is_dir() && ancestors.contains(&self.loc_of(e)) {
                    meta.kind = FileKind::Special;
                    meta.unreadable = Some(
                        "corrupt directory entry: points back to a directory above it (a loop)"
                            .into(),
                    );
                }
                DirEntry {
                    name: e.name.clone().into_bytes(),
                    meta,
                }
            })
            .collect())
    }

    /// The attribute byte of the entry (its bits are Windows' own
    /// FILE_ATTRIBUTE_* values); the root is a folder.
    fn windows_meta(&self, path: &FsPath) -> Result<Option<flr_fs::WindowsMeta>, FsError> {
        let f = self.resolve(path)?;
        let attributes = f
            .entry
            .as_ref()
            .map_or(flr_fs::windows::ATTR_DIRECTORY, |e| {
                u32::from(e.attr & 0x3f)
            });
        Ok(Some(flr_fs::WindowsMeta {
            attributes,
            ..flr_fs::WindowsMeta::default()
        }))
    }

    fn read_link(&self, path: &FsPath) -> Result<Vec<u8>, FsError> {
        self.resolve(path)?;
        Err(FsError::Unsupported {
            path: path.to_string(),
            reason: "FAT has no symbolic links".into(),
        })
    }

    fn open(&self, path: &FsPath) -> Result<Box<dyn FileHandle + '_>, FsError> {
        let shown = path.to_string();
        let f = self.resolve(path)?;
        let e = match f.entry {
            Some(e) if !e.is_dir() => e,
            _ => return Err(FsError::NotAFile { path: shown }),
        };
        let extents = self.file_runs(&e, &shown)?;
        Ok(Box::new(FatFile {
            src: &self.src,
            size: u64::from(e.size),
            extents,
            hint: 0,
        }))
    }
}

#[derive(Debug, Clone, Copy)]
struct Extent {
    file_off: u64,
    disk_off: u64,
    len: u64,
}

/// An open file: its extents, resolved once.
struct FatFile<'a> {
    src: &'a Source,
    size: u64,
    extents: Vec<Extent>,
    /// The extent the last read ended in.
    hint: usize,
}

impl FatFile<'_> {
    fn extent_of(&mut self, off: u64) -> Option<Extent> {
        let within = |x: &Extent| off >= x.file_off && off - x.file_off < x.len;
        for i in [self.hint, self.hint + 1] {
            if let Some(x) = self.extents.get(i) {
                if within(x) {
                    self.hint = i;
                    return Some(*x);
                }
            }
        }
        let i = self.extents.partition_point(|x| x.file_off + x.len <= off);
        let x = *self.extents.get(i)?;
        self.hint = i;
        within(&x).then_some(x)
    }
}

impl FileHandle for FatFile<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        let mut done = 0usize;
        while done < buf.len() {
            let off = offset + done as u64;
            if off >= self.size {
                break;
            }
            let Some(x) = self.extent_of(off) else {
                return Err(corrupt(None, format!("no cluster holds file offset {off}")));
            };
            let in_x = off - x.file_off;
            let want = (buf.len() - done) as u64;
            let n = want.min(x.len - in_x).min(self.size - off);
            // n <= want, which came from a usize.
            let n = n as usize;
            self.src
                .read_exact_at(x.disk_off + in_x, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<FatFs>();
    }
}
