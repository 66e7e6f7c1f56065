//! Read-only VHD container (Microsoft *Virtual Hard Disk Image Format
//! Specification* v1.0): fixed, dynamic and differencing disks.
//!
//! [`VhdDisk`] is a [`ReadAt`] over the virtual disk. It never writes.
//!
//! - **Fixed**: the virtual disk is the file up to the footer; reads go
//!   straight through.
//! - **Dynamic**: a block allocation table (BAT) maps blocks to file offsets;
//!   unallocated blocks read as zeros without touching the file. As Windows
//!   and qemu do, the per-block sector bitmap of a dynamic (non-differencing)
//!   disk is not consulted: an allocated block is read as stored.
//! - **Differencing**: blocks absent from the child, and sectors whose bit
//!   is clear in the block's sector bitmap, come from the parent, found
//!   through the parent locators by a [`ParentResolver`]. Chains of any depth
//!   up to [`MAX_CHAIN_DEPTH`] are followed; a cycle is an error.
//!
//! Damage that does not stop reading (a bad footer checksum, a footer only
//! found at offset 0, a parent whose unique id does not match) is reported in
//! [`VhdInfo::warnings`], not refused.
//!
//! ```no_run
//! use std::{path::Path, sync::Arc};
//! use flr_io::{FileParentResolver, FileSource, ReadAt, Source};
//! use flr_vhd::VhdDisk;
//!
//! let path = Path::new("disk.vhd");
//! let src: Source = Arc::new(FileSource::open(path)?);
//! let disk = VhdDisk::open(src, &FileParentResolver::new(path))?;
//! let mut mbr = [0u8; 512];
//! disk.read_exact_at(0, &mut mbr)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod format;
mod layer;
pub use layer::{container_info, VhdFormat, FORMAT};

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use flr_io::{check_range, Change, IoError, ParentResolver, RangeSet, ReadAt, Source};

use format::{DynHeader, Footer, FOOTER_SIZE, HEADER_SIZE};

/// The layer name used in errors.
pub const LAYER: &str = "vhd";

/// Deepest differencing chain followed (child, parent, grandparent… counted
/// from the child's first parent).
pub const MAX_CHAIN_DEPTH: usize = 64;

/// Largest BAT accepted (entries): 2^24 entries (64 MiB in memory) cover
/// the format's 2040 GiB limit with blocks down to 128 KiB (Windows and
/// qemu write 2 MiB blocks, so a real BAT is about 4 MiB). A header that
/// claims more is refused before anything is allocated.
const MAX_BAT_ENTRIES: u64 = 1 << 24;
/// Largest block size accepted.
const MAX_BLOCK_SIZE: u32 = 256 << 20;
/// Largest parent locator data read.
const MAX_LOCATOR_LEN: u32 = 64 * 1024;
/// Memory allowed for cached partial sector bitmaps.
const BITMAP_CACHE_BYTES: usize = 64 << 20;

const UNALLOCATED: u32 = 0xFFFF_FFFF;
const SECTOR: u64 = 512;

/// The kind of VHD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    /// Data followed by the footer.
    Fixed,
    /// Sparse, with a block allocation table.
    Dynamic,
    /// Sparse, holding only the changes to a parent disk.
    Differencing,
}

impl DiskType {
    /// `fixed`, `dynamic` or `differencing`, as `probe` names it.
    pub fn name(self) -> &'static str {
        match self {
            DiskType::Fixed => "fixed",
            DiskType::Dynamic => "dynamic",
            DiskType::Differencing => "differencing",
        }
    }
}

/// CHS geometry from the footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Cylinders.
    pub cylinders: u16,
    /// Heads.
    pub heads: u8,
    /// Sectors per track.
    pub sectors_per_track: u8,
}

/// What the footer and header say about a VHD.
#[derive(Debug, Clone)]
pub struct VhdInfo {
    /// Fixed, dynamic or differencing.
    pub disk_type: DiskType,
    /// Size of the virtual disk in bytes (the footer's current size; for a
    /// fixed disk never more than the data in the file).
    pub virtual_size: u64,
    /// The footer's unique id, as UUID text in stored byte order.
    pub unique_id: String,
    /// Block size of dynamic and differencing disks.
    pub block_size: Option<u32>,
    /// Creator application code from the footer (`win `, `vpc `, `qem2`…).
    pub creator_application: String,
    /// CHS geometry from the footer.
    pub geometry: Geometry,
    /// The footer's saved-state flag (the VM was saved while running).
    pub saved_state: bool,
    /// Number of blocks allocated in this file (dynamic and differencing).
    pub allocated_blocks: Option<u64>,
    /// Differencing disks: the parent unique id stored in the header.
    pub parent_unique_id: Option<String>,
    /// Differencing disks: the parent file name stored in the header.
    pub parent_name: Option<String>,
    /// Differencing disks: the parent locators, in the order they were tried
    /// (relative `W2ru` first, then absolute `W2ku`, Mac URLs, and the bare
    /// parent name).
    pub parent_locators: Vec<String>,
    /// Differencing disks: where each ancestor was found, nearest first
    /// (`chain[0]` is the parent, `chain[1]` the grandparent…). Empty for
    /// fixed and dynamic disks.
    pub chain: Vec<String>,
    /// Damage found that did not stop opening, including the parents' (each
    /// prefixed with `parent <path>:`).
    pub warnings: Vec<String>,
}

/// Why a VHD could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VhdError {
    /// No VHD footer was found.
    #[error("vhd: not a VHD image: {0}")]
    NotVhd(String),
    /// A structure needed to read the disk is damaged.
    #[error("vhd: corrupt structure at offset {offset:#x}: {what}")]
    Corrupt {
        /// File offset of the structure.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// A valid feature flr does not read.
    #[error("vhd: unsupported at offset {offset:#x}: {what}")]
    Unsupported {
        /// File offset of the structure.
        offset: u64,
        /// What is missing.
        what: String,
    },
    /// The parent of a differencing disk could not be opened; the message
    /// names every path tried.
    #[error("vhd: cannot open the parent of this differencing disk: {}", parent_message(.0))]
    ParentNotFound(#[source] IoError),
    /// The chain of parents is too deep or loops back on itself.
    #[error("vhd: differencing chain: {0}")]
    Chain(String),
    /// The parent was found but could not be opened as a VHD.
    #[error("vhd: parent {path}: {source}")]
    Parent {
        /// Where the parent was found.
        path: String,
        /// Why it failed.
        #[source]
        source: Box<VhdError>,
    },
    /// Reading the file failed.
    #[error(transparent)]
    Io(#[from] IoError),
}

impl flr_io::ChainFailure for VhdError {
    fn chain(message: String) -> Self {
        VhdError::Chain(message)
    }
    fn not_found(error: IoError) -> Self {
        VhdError::ParentNotFound(error)
    }
    fn parent(path: String, error: Self) -> Self {
        VhdError::Parent {
            path,
            source: Box::new(error),
        }
    }
    fn is_chain(&self) -> bool {
        matches!(self, VhdError::Chain(_))
    }
}

impl From<VhdError> for IoError {
    fn from(e: VhdError) -> Self {
        match e {
            VhdError::Io(e) => e,
            VhdError::ParentNotFound(e) => e,
            VhdError::Corrupt { offset, what } => IoError::corrupt(LAYER, offset, what),
            VhdError::Unsupported { offset, what } => IoError::unsupported(LAYER, offset, what),
            other => IoError::corrupt(LAYER, 0, other.to_string()),
        }
    }
}

/// The resolver's own message, without the I/O error wrapping.
fn parent_message(e: &IoError) -> String {
    match e {
        IoError::Os { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// Whether `src` looks like a VHD: the footer cookie `conectix` at the end
/// (512- or 511-byte footer), or a dynamic disk's footer copy at offset 0.
pub fn probe(src: &dyn ReadAt) -> bool {
    let len = src.len();
    if len < FOOTER_SIZE as u64 {
        return false;
    }
    let mut tail = [0u8; FOOTER_SIZE];
    if src
        .read_exact_at(len - FOOTER_SIZE as u64, &mut tail)
        .is_ok()
        && (tail.starts_with(format::FOOTER_COOKIE) || tail[1..].starts_with(format::FOOTER_COOKIE))
    {
        return true;
    }
    let mut head = [0u8; FOOTER_SIZE];
    src.read_exact_at(0, &mut head).is_ok() && Footer::parse(&head).is_some_and(|f| f.is_sparse())
}

/// Cached state of one block's sector bitmap (differencing disks).
enum Bitmap {
    /// Every sector is in the child.
    Full,
    /// No sector is in the child.
    Empty,
    /// Bit per sector, most significant bit first.
    Partial(Vec<u8>),
}

struct Sparse {
    bat: Vec<u32>,
    /// File offset of the BAT.
    bat_offset: u64,
    /// File offset of the dynamic disk header.
    header_offset: u64,
    block_size: u64,
    bitmap_size: u64,
    parent: Option<Box<VhdDisk>>,
    bitmaps: RwLock<HashMap<u64, Arc<Bitmap>>>,
    cached_bytes: AtomicUsize,
}

enum Kind {
    Fixed,
    Sparse(Sparse),
}

/// An opened VHD: a [`ReadAt`] over its virtual disk (layer name `vhd`).
pub struct VhdDisk {
    src: Source,
    info: VhdInfo,
    kind: Kind,
}

impl std::fmt::Debug for VhdDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhdDisk").field("info", &self.info).finish()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RunKind {
    File,
    Parent,
    Zero,
}

/// A run of the output buffer waiting to be filled by one read.
struct Run {
    kind: RunKind,
    /// File offset (File) or virtual offset (Parent).
    at: u64,
    start: usize,
    len: usize,
    /// Virtual offset of the run, for error messages.
    voff: u64,
}

impl VhdDisk {
    /// Opens the VHD in `src`. Differencing disks open their parents through
    /// `parents` (use [`flr_io::FileParentResolver`] for a local file, or
    /// [`flr_io::NoParentResolver`] when there is no folder to look in).
    pub fn open(src: Source, parents: &dyn ParentResolver) -> Result<VhdDisk, VhdError> {
        let mut seen = Vec::new();
        Self::open_chain(src, parents, &mut seen)
    }

    /// What the footer and header say, with warnings.
    pub fn info(&self) -> &VhdInfo {
        &self.info
    }

    /// The opened parent of a differencing disk.
    pub fn parent(&self) -> Option<&VhdDisk> {
        match &self.kind {
            Kind::Sparse(s) => s.parent.as_deref(),
            Kind::Fixed => None,
        }
    }

    fn open_chain(
        src: Source,
        parents: &dyn ParentResolver,
        seen: &mut Vec<String>,
    ) -> Result<VhdDisk, VhdError> {
        let len = src.len();
        if len < FOOTER_SIZE as u64 {
            return Err(VhdError::NotVhd(format!(
                "the file is {len} bytes, smaller than a VHD footer"
            )));
        }
        let mut warnings = Vec::new();
        let (footer, footer_pos) = read_footer(&src, &mut warnings)?;
        let info_base = |disk_type, virtual_size, block_size, warnings| VhdInfo {
            disk_type,
            virtual_size,
            unique_id: format::uuid_text(&footer.unique_id),
            block_size,
            creator_application: String::from_utf8_lossy(&footer.creator_app)
                .trim_end_matches('\0')
                .to_string(),
            geometry: Geometry {
                cylinders: footer.cylinders,
                heads: footer.heads,
                sectors_per_track: footer.sectors_per_track,
            },
            saved_state: footer.saved_state,
            allocated_blocks: None,
            parent_unique_id: None,
            parent_name: None,
            parent_locators: Vec::new(),
            chain: Vec::new(),
            warnings,
        };
        if footer.version >> 16 != 1 {
            warnings.push(format!(
                "footer format version {:#x} (expected 0x10000)",
                footer.version
            ));
        }
        if footer.saved_state {
            warnings.push(
                "the footer's saved-state flag is set: the VM was saved while running".into(),
            );
        }
        match footer.disk_type {
            format::TYPE_FIXED => {
                let data = footer_pos;
                let size = if footer.current_size <= data {
                    footer.current_size
                } else {
                    warnings.push(format!(
                        "fixed disk: the footer says {} bytes but the file holds only {} bytes before the footer (truncated?); reading {}",
                        footer.current_size, data, data
                    ));
                    data
                };
                Ok(VhdDisk {
                    src,
                    info: info_base(DiskType::Fixed, size, None, warnings),
                    kind: Kind::Fixed,
                })
            }
            format::TYPE_DYNAMIC | format::TYPE_DIFFERENCING => {
                let diff = footer.disk_type == format::TYPE_DIFFERENCING;
                let hdr = read_dyn_header(&src, footer.data_offset, &mut warnings)?;
                let block_size = hdr.block_size;
                if block_size < 512 || block_size % 512 != 0 || block_size > MAX_BLOCK_SIZE {
                    return Err(VhdError::Corrupt {
                        offset: footer.data_offset + 32,
                        what: format!(
                            "block size {block_size} is not a multiple of 512 between 512 and {MAX_BLOCK_SIZE}"
                        ),
                    });
                }
                let bs = u64::from(block_size);
                let vsize = footer.current_size;
                let blocks = vsize.div_ceil(bs);
                if blocks > MAX_BAT_ENTRIES {
                    return Err(VhdError::Unsupported {
                        offset: 48,
                        what: format!(
                            "virtual size {vsize} with {block_size}-byte blocks needs {blocks} BAT entries (limit {MAX_BAT_ENTRIES})"
                        ),
                    });
                }
                let entries = blocks.min(u64::from(hdr.max_table_entries));
                if entries < blocks {
                    warnings.push(format!(
                        "the BAT has {} entries but the virtual size needs {blocks}; the blocks past the BAT read as {}",
                        hdr.max_table_entries,
                        if diff { "the parent" } else { "zeros" }
                    ));
                }
                let bat = read_bat(&src, hdr.table_offset, entries)?;
                let sectors_per_block = bs / SECTOR;
                let bitmap_size = sectors_per_block.div_ceil(8).div_ceil(SECTOR) * SECTOR;
                let mut allocated = 0u64;
                let mut past_eof = 0u64;
                for &e in &bat {
                    if e != UNALLOCATED {
                        allocated += 1;
                        let end = u64::from(e) * SECTOR + bitmap_size + bs;
                        if end > len {
                            past_eof += 1;
                        }
                    }
                }
                if past_eof > 0 {
                    warnings.push(format!(
                        "{past_eof} BAT entries point past the end of the file; reading those blocks fails"
                    ));
                }
                let mut info = info_base(
                    if diff {
                        DiskType::Differencing
                    } else {
                        DiskType::Dynamic
                    },
                    vsize,
                    Some(block_size),
                    warnings,
                );
                info.allocated_blocks = Some(allocated);
                let parent = if diff {
                    Some(Box::new(Self::open_parent(
                        &src, &hdr, &mut info, parents, seen,
                    )?))
                } else {
                    None
                };
                Ok(VhdDisk {
                    src,
                    info,
                    kind: Kind::Sparse(Sparse {
                        bat,
                        bat_offset: hdr.table_offset,
                        header_offset: footer.data_offset,
                        block_size: bs,
                        bitmap_size,
                        parent,
                        bitmaps: RwLock::new(HashMap::new()),
                        cached_bytes: AtomicUsize::new(0),
                    }),
                })
            }
            t => Err(VhdError::Unsupported {
                offset: 60,
                what: format!("disk type {t} (only 2 fixed, 3 dynamic, 4 differencing exist)"),
            }),
        }
    }

    fn open_parent(
        src: &Source,
        hdr: &DynHeader,
        info: &mut VhdInfo,
        parents: &dyn ParentResolver,
        seen: &mut Vec<String>,
    ) -> Result<VhdDisk, VhdError> {
        let mut locs: Vec<(u8, String)> = Vec::new();
        for l in &hdr.locators {
            if l.data_len == 0 {
                continue;
            }
            let end = l.data_offset.checked_add(u64::from(l.data_len));
            if l.data_len > MAX_LOCATOR_LEN || end.is_none_or(|e| e > src.len()) {
                info.warnings.push(format!(
                    "parent locator {} at file offset {:#x} ({} bytes) is out of range; ignored",
                    String::from_utf8_lossy(&l.code),
                    l.data_offset,
                    l.data_len
                ));
                continue;
            }
            let mut data = vec![0u8; l.data_len as usize];
            src.read_exact_at(l.data_offset, &mut data)?;
            if let Some(text) = format::decode_locator(&l.code, &data) {
                locs.push((format::locator_rank(&l.code), text));
            }
        }
        locs.sort_by_key(|(r, _)| *r);
        let mut candidates: Vec<String> = Vec::new();
        for (_, t) in locs {
            if !candidates.contains(&t) {
                candidates.push(t);
            }
        }
        let name = hdr.parent_name.trim().to_string();
        if !name.is_empty() && !candidates.contains(&name) {
            candidates.push(name.clone());
        }
        info.parent_unique_id = Some(format::uuid_text(&hdr.parent_unique_id));
        info.parent_name = (!name.is_empty()).then_some(name);
        info.parent_locators = candidates.clone();
        if candidates.is_empty() {
            return Err(VhdError::ParentNotFound(IoError::corrupt(
                LAYER,
                0,
                "the differencing disk stores no parent locator and no parent name",
            )));
        }
        let (parent, ppath) = flr_io::open_parent_step(
            parents,
            &candidates,
            seen,
            MAX_CHAIN_DEPTH,
            Self::open_chain,
        )?;
        let pid = parent.info.unique_id.clone();
        if info.parent_unique_id.as_deref() != Some(pid.as_str()) {
            info.warnings.push(format!(
                "parent {ppath} has unique id {pid}, but this disk expects {}; it may not be the right parent (or was modified)",
                info.parent_unique_id.as_deref().unwrap_or("?")
            ));
        }
        if parent.info.virtual_size != info.virtual_size {
            info.warnings.push(format!(
                "parent {ppath} is {} bytes, this disk {} bytes",
                parent.info.virtual_size, info.virtual_size
            ));
        }
        flr_io::inherit_chain(
            &mut info.chain,
            &mut info.warnings,
            &ppath,
            &parent.info.chain,
            &parent.info.warnings,
        );
        Ok(parent)
    }

    fn bitmap(&self, sp: &Sparse, block: u64, entry: u32) -> Result<Arc<Bitmap>, IoError> {
        if let Some(b) = sp
            .bitmaps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&block)
        {
            return Ok(b.clone());
        }
        let spb = sp.block_size / SECTOR;
        let nbytes = usize::try_from(spb.div_ceil(8)).unwrap_or(usize::MAX);
        let mut bits = vec![0u8; nbytes];
        let at = u64::from(entry) * SECTOR;
        self.src.read_exact_at(at, &mut bits).map_err(|e| {
            e.reading(
                LAYER,
                block * sp.block_size,
                format_args!("sector bitmap of block {block} at file offset {at:#x}"),
            )
        })?;
        let full_bytes = (spb / 8) as usize;
        let rem = (spb % 8) as u32;
        let tail_mask: u8 = if rem == 0 { 0 } else { !(0xFFu8 >> rem) };
        let tail = bits.get(full_bytes).copied().unwrap_or(0) & tail_mask;
        let head = bits.get(..full_bytes).unwrap_or(&[]);
        let bm = if head.iter().all(|&b| b == 0xFF) && tail == tail_mask {
            Bitmap::Full
        } else if head.iter().all(|&b| b == 0) && tail == 0 {
            Bitmap::Empty
        } else {
            Bitmap::Partial(bits)
        };
        let bm = Arc::new(bm);
        let cost = match &*bm {
            Bitmap::Partial(b) => b.len(),
            _ => 0,
        };
        if sp.cached_bytes.load(Ordering::Relaxed) + cost <= BITMAP_CACHE_BYTES {
            sp.cached_bytes.fetch_add(cost, Ordering::Relaxed);
            sp.bitmaps
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(block, bm.clone());
        }
        Ok(bm)
    }

    fn flush(&self, sp: &Sparse, run: &Run, buf: &mut [u8]) -> Result<(), IoError> {
        let Some(out) = buf.get_mut(run.start..run.start + run.len) else {
            return Err(IoError::corrupt(
                LAYER,
                run.voff,
                "internal: run outside the buffer",
            ));
        };
        match run.kind {
            RunKind::Zero => {
                out.fill(0);
                Ok(())
            }
            RunKind::File => self.src.read_exact_at(run.at, out).map_err(|e| {
                e.reading(
                    LAYER,
                    run.voff,
                    format_args!("block data at file offset {:#x}", run.at),
                )
            }),
            RunKind::Parent => match &sp.parent {
                Some(p) => read_parent(p, run.at, out),
                None => {
                    out.fill(0);
                    Ok(())
                }
            },
        }
    }

    fn push(
        &self,
        sp: &Sparse,
        pending: &mut Option<Run>,
        next: Run,
        buf: &mut [u8],
    ) -> Result<(), IoError> {
        if let Some(p) = pending.as_mut() {
            let contiguous = p.start + p.len == next.start
                && (p.kind == RunKind::Zero || p.at + p.len as u64 == next.at);
            if p.kind == next.kind && contiguous {
                p.len += next.len;
                return Ok(());
            }
        }
        if let Some(p) = pending.take() {
            self.flush(sp, &p, buf)?;
        }
        *pending = Some(next);
        Ok(())
    }

    fn read_sparse(&self, sp: &Sparse, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let bs = sp.block_size;
        let diff = sp.parent.is_some();
        let mut pending: Option<Run> = None;
        let mut done = 0usize;
        while done < buf.len() {
            let voff = offset + done as u64;
            let block = voff / bs;
            let in_block = voff % bs;
            let n = usize::try_from((bs - in_block).min((buf.len() - done) as u64))
                .unwrap_or(buf.len() - done);
            let entry = usize::try_from(block)
                .ok()
                .and_then(|i| sp.bat.get(i))
                .copied()
                .unwrap_or(UNALLOCATED);
            if entry == UNALLOCATED {
                let kind = if diff { RunKind::Parent } else { RunKind::Zero };
                let run = Run {
                    kind,
                    at: voff,
                    start: done,
                    len: n,
                    voff,
                };
                self.push(sp, &mut pending, run, buf)?;
                done += n;
                continue;
            }
            let data = u64::from(entry) * SECTOR + sp.bitmap_size;
            if data + bs > self.src.len() {
                return Err(IoError::corrupt(
                    LAYER,
                    voff,
                    format!(
                        "BAT entry {block} points to file offset {:#x}, past the end of the file ({:#x} bytes)",
                        u64::from(entry) * SECTOR,
                        self.src.len()
                    ),
                ));
            }
            let bm = if diff {
                self.bitmap(sp, block, entry)?
            } else {
                Arc::new(Bitmap::Full)
            };
            match &*bm {
                Bitmap::Full => {
                    let run = Run {
                        kind: RunKind::File,
                        at: data + in_block,
                        start: done,
                        len: n,
                        voff,
                    };
                    self.push(sp, &mut pending, run, buf)?;
                }
                Bitmap::Empty => {
                    let run = Run {
                        kind: RunKind::Parent,
                        at: voff,
                        start: done,
                        len: n,
                        voff,
                    };
                    self.push(sp, &mut pending, run, buf)?;
                }
                Bitmap::Partial(bits) => {
                    let end = in_block + n as u64;
                    let mut a = in_block;
                    while a < end {
                        let s = a / SECTOR;
                        let present = bit(bits, s);
                        let mut s2 = s + 1;
                        while s2 * SECTOR < end {
                            // Skip whole bytes of equal bits at once.
                            if s2 % 8 == 0 && s2 * SECTOR + 8 * SECTOR <= end {
                                let byte = bits.get((s2 / 8) as usize).copied().unwrap_or(0);
                                if (present && byte == 0xFF) || (!present && byte == 0) {
                                    s2 += 8;
                                    continue;
                                }
                            }
                            if bit(bits, s2) != present {
                                break;
                            }
                            s2 += 1;
                        }
                        let run_end = end.min(s2 * SECTOR);
                        let len = (run_end - a) as usize;
                        let start = done + (a - in_block) as usize;
                        let run = if present {
                            Run {
                                kind: RunKind::File,
                                at: data + a,
                                start,
                                len,
                                voff: block * bs + a,
                            }
                        } else {
                            Run {
                                kind: RunKind::Parent,
                                at: block * bs + a,
                                start,
                                len,
                                voff: block * bs + a,
                            }
                        };
                        self.push(sp, &mut pending, run, buf)?;
                        a = run_end;
                    }
                }
            }
            done += n;
        }
        if let Some(p) = pending.take() {
            self.flush(sp, &p, buf)?;
        }
        Ok(())
    }
}

impl VhdDisk {
    /// Maps a changed-range question through the block map: a block whose
    /// BAT entry or sector bitmap may have changed is changed as a whole;
    /// otherwise the block's data in the file (and, for the sectors a
    /// differencing disk leaves to it, the parent) answers. A changed
    /// dynamic disk header is unknown (the BAT may have moved).
    fn changed_sparse(&self, sp: &Sparse, offset: u64, end: u64) -> Change {
        let head = self.src.changed(sp.header_offset, 1024);
        if head != Change::Unchanged {
            return Change::Unknown.and(head);
        }
        let bs = sp.block_size;
        let mut answer = Change::Unchanged;
        let mut at = offset;
        while at < end {
            let block = at / bs;
            let block_end = ((block + 1) * bs).min(end);
            let in_block = at % bs;
            let n = block_end - at;
            let entry = usize::try_from(block)
                .ok()
                .and_then(|i| sp.bat.get(i))
                .copied();
            let part = match entry {
                // Past the BAT: zeros or the parent, whatever the file says.
                None => Change::Unchanged,
                Some(_) => self.src.changed(sp.bat_offset + block * 4, 4),
            };
            let part = if part != Change::Unchanged {
                // A BAT entry that may differ: the whole block may.
                part.and(Change::Changed)
            } else {
                match entry {
                    Some(e) if e != UNALLOCATED => {
                        let base = u64::from(e) * SECTOR;
                        let bm = self.src.changed(base, sp.bitmap_size);
                        if sp.parent.is_some() && bm != Change::Unchanged {
                            bm.and(Change::Changed)
                        } else {
                            let data = self.src.changed(base + sp.bitmap_size + in_block, n);
                            match &sp.parent {
                                None => data,
                                Some(p) => match self.bitmap(sp, block, e).as_deref() {
                                    Ok(Bitmap::Full) => data,
                                    Ok(Bitmap::Empty) => parent_changed(p, at, n),
                                    Ok(Bitmap::Partial(_)) => data.and(parent_changed(p, at, n)),
                                    Err(_) => Change::Unknown,
                                },
                            }
                        }
                    }
                    _ => match &sp.parent {
                        Some(p) => parent_changed(p, at, n),
                        None => Change::Unchanged,
                    },
                }
            };
            answer = answer.and(part);
            if answer == Change::Changed {
                return answer;
            }
            at = block_end;
        }
        answer
    }

    /// The virtual-disk ranges this file holds itself: for a differencing
    /// disk, the sectors its block bitmaps mark present (what changed
    /// against its parent); for a dynamic disk, its allocated blocks; for a
    /// fixed disk, everything.
    pub fn held_ranges(&self) -> Result<RangeSet, IoError> {
        let vsize = self.info.virtual_size;
        let Kind::Sparse(sp) = &self.kind else {
            return Ok(RangeSet::from_extents([(0, vsize)]));
        };
        let bs = sp.block_size;
        let spb = bs / SECTOR;
        let mut out = RangeSet::new();
        for (block, &e) in sp.bat.iter().enumerate() {
            if e == UNALLOCATED {
                continue;
            }
            let block = block as u64;
            let start = block * bs;
            if start >= vsize {
                break;
            }
            let clip = |off: u64, len: u64| (off, len.min(vsize.saturating_sub(off)));
            if sp.parent.is_none() {
                let (o, l) = clip(start, bs);
                out.insert(o, l);
                continue;
            }
            match &*self.bitmap(sp, block, e)? {
                Bitmap::Full => {
                    let (o, l) = clip(start, bs);
                    out.insert(o, l);
                }
                Bitmap::Empty => {}
                Bitmap::Partial(bits) => {
                    for (first, n) in flr_io::set_runs(spb, |i| bit(bits, i)) {
                        let (o, l) = clip(start + first * SECTOR, n * SECTOR);
                        out.insert(o, l);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// A parent's answer; the part past its end reads as zeros (unchanged).
fn parent_changed(p: &VhdDisk, at: u64, len: u64) -> Change {
    let plen = p.len();
    if at >= plen {
        return Change::Unchanged;
    }
    p.changed(at, len.min(plen - at))
}

/// Bit `s` of a VHD sector bitmap (most significant bit of byte 0 is sector 0).
fn bit(bits: &[u8], s: u64) -> bool {
    let byte = usize::try_from(s / 8)
        .ok()
        .and_then(|i| bits.get(i))
        .copied()
        .unwrap_or(0);
    byte & (0x80 >> (s % 8)) != 0
}

/// Reads from a parent; the part past the parent's end reads as zeros.
fn read_parent(p: &VhdDisk, at: u64, out: &mut [u8]) -> Result<(), IoError> {
    let plen = p.len();
    if at >= plen {
        out.fill(0);
        return Ok(());
    }
    let avail = usize::try_from(plen - at)
        .unwrap_or(usize::MAX)
        .min(out.len());
    let (head, tail) = out.split_at_mut(avail);
    p.read_exact_at(at, head)?;
    tail.fill(0);
    Ok(())
}

fn read_footer(src: &Source, warnings: &mut Vec<String>) -> Result<(Footer, u64), VhdError> {
    let len = src.len();
    let mut tail = [0u8; FOOTER_SIZE];
    src.read_exact_at(len - FOOTER_SIZE as u64, &mut tail)?;
    let end = match Footer::parse(&tail) {
        Some(f) => Some((f, len - FOOTER_SIZE as u64)),
        None => Footer::parse(&tail[1..]).map(|f| (f, len - 511)),
    };
    let mut head_buf = [0u8; FOOTER_SIZE];
    src.read_exact_at(0, &mut head_buf)?;
    let head = Footer::parse(&head_buf).filter(|f| f.is_sparse());
    match (end, head) {
        (Some((f, pos)), head) if f.checksum_ok() => {
            if f.is_sparse() {
                let tail_bytes = if pos == len - 511 {
                    &tail[1..]
                } else {
                    &tail[..]
                };
                if head.is_none() {
                    warnings.push(
                        "the copy of the footer at offset 0 is missing or damaged".to_string(),
                    );
                } else if head_buf[..tail_bytes.len()] != *tail_bytes {
                    warnings.push(
                        "the copy of the footer at offset 0 differs from the footer at the end"
                            .to_string(),
                    );
                }
            }
            Ok((f, pos))
        }
        (Some((f, pos)), Some(h)) if f.is_sparse() && h.checksum_ok() => {
            warnings.push(format!(
                "footer checksum mismatch (stored {:#010x}, computed {:#010x}); using the copy at offset 0",
                f.stored_checksum, f.computed_checksum
            ));
            Ok((h, pos))
        }
        (Some((f, pos)), _) => {
            warnings.push(format!(
                "footer checksum mismatch (stored {:#010x}, computed {:#010x}); reading anyway",
                f.stored_checksum, f.computed_checksum
            ));
            Ok((f, pos))
        }
        (None, Some(h)) => {
            warnings.push(
                "no footer at the end of the file (truncated or damaged?); using the copy at offset 0"
                    .to_string(),
            );
            if !h.checksum_ok() {
                warnings.push(format!(
                    "footer copy checksum mismatch (stored {:#010x}, computed {:#010x}); reading anyway",
                    h.stored_checksum, h.computed_checksum
                ));
            }
            Ok((h, len))
        }
        (None, None) => Err(VhdError::NotVhd(format!(
            "no \"conectix\" footer at the end of the file (offset {:#x}) nor a dynamic disk's copy at offset 0",
            len - FOOTER_SIZE as u64
        ))),
    }
}

fn read_dyn_header(
    src: &Source,
    at: u64,
    warnings: &mut Vec<String>,
) -> Result<DynHeader, VhdError> {
    let fits = at
        .checked_add(HEADER_SIZE as u64)
        .is_some_and(|e| e <= src.len());
    if !fits {
        return Err(VhdError::Corrupt {
            offset: 16,
            what: format!(
                "the footer's data offset {at:#x} (dynamic disk header) is past the end of the file"
            ),
        });
    }
    let mut b = vec![0u8; HEADER_SIZE];
    src.read_exact_at(at, &mut b)?;
    let Some(h) = DynHeader::parse(&b) else {
        return Err(VhdError::Corrupt {
            offset: at,
            what: "no \"cxsparse\" dynamic disk header at the footer's data offset".into(),
        });
    };
    if h.stored_checksum != h.computed_checksum {
        warnings.push(format!(
            "dynamic disk header checksum mismatch (stored {:#010x}, computed {:#010x}); reading anyway",
            h.stored_checksum, h.computed_checksum
        ));
    }
    if h.version >> 16 != 1 {
        warnings.push(format!(
            "dynamic disk header version {:#x} (expected 0x10000)",
            h.version
        ));
    }
    Ok(h)
}

fn read_bat(src: &Source, at: u64, entries: u64) -> Result<Vec<u32>, VhdError> {
    let bytes = entries * 4;
    let fits = at.checked_add(bytes).is_some_and(|e| e <= src.len());
    if !fits {
        return Err(VhdError::Corrupt {
            offset: at,
            what: format!(
                "the BAT ({entries} entries at {at:#x}) extends past the end of the file ({} bytes)",
                src.len()
            ),
        });
    }
    // One allocation of the table itself, filled through a 1 MiB buffer
    // (not the whole raw table and then a converted copy).
    let mut bat = Vec::with_capacity(usize::try_from(entries).unwrap_or(0));
    let mut raw = vec![0u8; (1usize << 20).min(bytes as usize)];
    let mut done = 0u64;
    while done < bytes {
        let n = raw.len().min((bytes - done) as usize);
        src.read_exact_at(at + done, &mut raw[..n])?;
        bat.extend(
            raw[..n]
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])),
        );
        done += n as u64;
    }
    Ok(bat)
}

impl ReadAt for VhdDisk {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        check_range(LAYER, offset, buf.len(), self.info.virtual_size)?;
        if buf.is_empty() {
            return Ok(());
        }
        match &self.kind {
            Kind::Fixed => self.src.read_exact_at(offset, buf),
            Kind::Sparse(sp) => self.read_sparse(sp, offset, buf),
        }
    }

    fn len(&self) -> u64 {
        self.info.virtual_size
    }

    fn layer(&self) -> &str {
        LAYER
    }

    fn changed(&self, offset: u64, len: u64) -> Change {
        let Some(end) = offset.checked_add(len) else {
            return Change::Unknown;
        };
        if end > self.info.virtual_size {
            return Change::Unknown;
        }
        if len == 0 {
            return Change::Unchanged;
        }
        match &self.kind {
            // A fixed disk's virtual offsets are its file offsets.
            Kind::Fixed => self.src.changed(offset, len),
            Kind::Sparse(sp) => self.changed_sparse(sp, offset, end),
        }
    }

    fn is_known_zero(&self, offset: u64, len: u64) -> bool {
        let Some(end) = offset.checked_add(len) else {
            return false;
        };
        if end > self.info.virtual_size {
            return false;
        }
        let Kind::Sparse(sp) = &self.kind else {
            return false;
        };
        let bs = sp.block_size;
        let mut at = offset;
        while at < end {
            let block = at / bs;
            let block_end = ((block + 1) * bs).min(end);
            let entry = usize::try_from(block)
                .ok()
                .and_then(|i| sp.bat.get(i))
                .copied()
                .unwrap_or(UNALLOCATED);
            if entry != UNALLOCATED {
                return false;
            }
            if let Some(p) = &sp.parent {
                let plen = p.len();
                if at < plen && !p.is_known_zero(at, block_end.min(plen) - at) {
                    return false;
                }
            }
            at = block_end;
        }
        true
    }
}
