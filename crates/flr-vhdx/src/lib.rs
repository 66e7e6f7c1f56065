//! Read-only VHDX container ([MS-VHDX] *Virtual Hard Disk v2 File Format*
//! v1.0): fixed, dynamic and differencing disks.
//!
//! [`VhdxDisk`] is a [`ReadAt`] over the virtual disk. It never writes, and
//! in particular never replays the log: a file that was not closed cleanly
//! (non-zero `LogGuid`) opens with a warning saying the log was not replayed.
//!
//! Opening checks the two headers (CRC-32C; the valid one with the higher
//! sequence number wins), the region table (CRC-32C; an unknown *required*
//! region is refused), the metadata (file parameters, virtual disk size,
//! sector sizes, page 83 data, parent locator; an unknown *required* item is
//! refused) and reads the BAT once.
//!
//! Payload block states read as follows:
//!
//! | state | non-differencing | differencing |
//! |---|---|---|
//! | `NOT_PRESENT` (0) | zeros | the parent |
//! | `UNDEFINED` (1), `ZERO` (2), `UNMAPPED` (3, and 0.95's 5) | zeros | zeros |
//! | `FULLY_PRESENT` (6) | the file | the file |
//! | `PARTIALLY_PRESENT` (7) | the file | per sector: the file where the sector bitmap bit is set, else the parent |
//!
//! Differencing chains are followed to any depth up to [`MAX_CHAIN_DEPTH`];
//! a cycle is an error. A parent whose `DataWriteGuid` matches neither
//! `parent_linkage` nor `parent_linkage2` opens with a warning.
#![deny(missing_docs)]

mod format;
mod layer;
pub use layer::{container_info, VhdxFormat, FORMAT};

/// CRC-32C (Castagnoli), as VHDX checksums its headers, region tables and
/// log entries (also used by the fuzz harness to re-checksum mutated headers).
pub use format::crc32c;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use flr_io::{check_range, Change, IoError, ParentResolver, RangeSet, ReadAt, Source};

use format::{Guid, MIB};

/// The layer name used in errors.
pub const LAYER: &str = "vhdx";

/// Deepest differencing chain followed.
pub const MAX_CHAIN_DEPTH: usize = 64;

/// Largest BAT accepted (entries).
const MAX_BAT_ENTRIES: u64 = 1 << 27;
/// Largest virtual disk accepted: the format's 64 TiB.
const MAX_VIRTUAL_SIZE: u64 = 64 << 40;
/// Largest metadata item read.
const MAX_ITEM_LEN: u32 = 1 << 20;
/// Memory allowed for cached partial sector bitmaps.
const BITMAP_CACHE_BYTES: usize = 64 << 20;

const PAYLOAD_NOT_PRESENT: u64 = 0;
const PAYLOAD_UNDEFINED: u64 = 1;
const PAYLOAD_ZERO: u64 = 2;
const PAYLOAD_UNMAPPED: u64 = 3;
const PAYLOAD_UNMAPPED_V095: u64 = 5;
const PAYLOAD_FULLY_PRESENT: u64 = 6;
const PAYLOAD_PARTIALLY_PRESENT: u64 = 7;
const SB_PRESENT: u64 = 6;

/// The kind of VHDX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    /// Every block allocated (the `LeaveBlockAllocated` file parameter).
    Fixed,
    /// Blocks allocated on write.
    Dynamic,
    /// Holds only the changes to a parent (the `HasParent` file parameter).
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

/// What the headers and metadata say about a VHDX.
#[derive(Debug, Clone)]
pub struct VhdxInfo {
    /// Fixed, dynamic or differencing (from the file parameters).
    pub disk_type: DiskType,
    /// Size of the virtual disk in bytes.
    pub virtual_size: u64,
    /// Payload block size in bytes (1 MiB to 256 MiB).
    pub block_size: u32,
    /// Logical sector size (512 or 4096).
    pub logical_sector_size: u32,
    /// Physical sector size (512 or 4096).
    pub physical_sector_size: u32,
    /// The `HasParent` file parameter: a differencing disk.
    pub has_parent: bool,
    /// The `LeaveBlockAllocated` file parameter (fixed disks).
    pub leave_blocks_allocated: bool,
    /// Page 83 data (the virtual disk id), GUID text.
    pub page83_id: String,
    /// `DataWriteGuid` of the header in use, GUID text (what children link to).
    pub data_write_guid: String,
    /// `FileWriteGuid` of the header in use, GUID text.
    pub file_write_guid: String,
    /// Sequence number of the header in use.
    pub header_sequence: u64,
    /// Whether the log is non-empty (it was NOT replayed).
    pub log_not_replayed: bool,
    /// The creator string of the file identifier (`qemu v…`, `Microsoft Windows …`).
    pub creator: String,
    /// Differencing disks: `parent_linkage` (the parent's expected `DataWriteGuid`).
    pub parent_linkage: Option<String>,
    /// Differencing disks: all key/value pairs of the parent locator.
    pub parent_locator: Vec<(String, String)>,
    /// Differencing disks: the parent paths, in the order they were tried
    /// (`relative_path`, `volume_path`, `absolute_win32_path`).
    pub parent_locators: Vec<String>,
    /// Differencing disks: where each ancestor was found, nearest first
    /// (`chain[0]` is the parent). Empty otherwise.
    pub chain: Vec<String>,
    /// Damage and oddities that did not stop opening, including the
    /// parents' (prefixed with `parent <path>:`).
    pub warnings: Vec<String>,
}

/// Why a VHDX could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VhdxError {
    /// No VHDX file identifier.
    #[error("vhdx: not a VHDX image: {0}")]
    NotVhdx(String),
    /// A structure needed to read the disk is damaged.
    #[error("vhdx: corrupt structure at offset {offset:#x}: {what}")]
    Corrupt {
        /// File offset of the structure.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// A valid feature flr does not read (an unknown required region or metadata item).
    #[error("vhdx: unsupported at offset {offset:#x}: {what}")]
    Unsupported {
        /// File offset of the structure.
        offset: u64,
        /// What is missing.
        what: String,
    },
    /// The parent of a differencing disk could not be opened; the message
    /// names every path tried.
    #[error("vhdx: cannot open the parent of this differencing disk: {}", parent_message(.0))]
    ParentNotFound(#[source] IoError),
    /// The chain of parents is too deep or loops back on itself.
    #[error("vhdx: differencing chain: {0}")]
    Chain(String),
    /// The parent was found but could not be opened as a VHDX.
    #[error("vhdx: parent {path}: {source}")]
    Parent {
        /// Where the parent was found.
        path: String,
        /// Why it failed.
        #[source]
        source: Box<VhdxError>,
    },
    /// Reading the file failed.
    #[error(transparent)]
    Io(#[from] IoError),
}

impl flr_io::ChainFailure for VhdxError {
    fn chain(message: String) -> Self {
        VhdxError::Chain(message)
    }
    fn not_found(error: IoError) -> Self {
        VhdxError::ParentNotFound(error)
    }
    fn parent(path: String, error: Self) -> Self {
        VhdxError::Parent {
            path,
            source: Box::new(error),
        }
    }
    fn is_chain(&self) -> bool {
        matches!(self, VhdxError::Chain(_))
    }
}

fn parent_message(e: &IoError) -> String {
    match e {
        IoError::Os { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

impl From<VhdxError> for IoError {
    fn from(e: VhdxError) -> Self {
        match e {
            VhdxError::Io(e) => e,
            VhdxError::ParentNotFound(e) => e,
            VhdxError::Corrupt { offset, what } => IoError::corrupt(LAYER, offset, what),
            VhdxError::Unsupported { offset, what } => IoError::unsupported(LAYER, offset, what),
            other => IoError::corrupt(LAYER, 0, other.to_string()),
        }
    }
}

/// Whether `src` starts with the VHDX file identifier `vhdxfile`.
pub fn probe(src: &dyn ReadAt) -> bool {
    let mut sig = [0u8; 8];
    src.len() >= 8 && src.read_exact_at(0, &mut sig).is_ok() && &sig == format::FILE_SIGNATURE
}

enum Bitmap {
    Full,
    Empty,
    /// One bit per logical sector of the block, least significant bit first.
    Partial(Vec<u8>),
}

/// An opened VHDX: a [`ReadAt`] over its virtual disk (layer name `vhdx`).
pub struct VhdxDisk {
    src: Source,
    info: VhdxInfo,
    bat: Vec<u64>,
    /// File offset of the BAT region.
    bat_offset: u64,
    block_size: u64,
    sector: u64,
    chunk_ratio: u64,
    parent: Option<Box<VhdxDisk>>,
    bitmaps: RwLock<HashMap<u64, Arc<Bitmap>>>,
    cached_bytes: AtomicUsize,
}

impl std::fmt::Debug for VhdxDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhdxDisk")
            .field("info", &self.info)
            .finish()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RunKind {
    File,
    Parent,
    Zero,
}

struct Run {
    kind: RunKind,
    /// File offset (File) or virtual offset (Parent).
    at: u64,
    start: usize,
    len: usize,
    voff: u64,
}

fn corrupt(offset: u64, what: impl Into<String>) -> VhdxError {
    VhdxError::Corrupt {
        offset,
        what: what.into(),
    }
}

/// Metadata values gathered from the metadata region.
struct Meta {
    block_size: u32,
    leave_allocated: bool,
    has_parent: bool,
    virtual_size: u64,
    logical: u32,
    physical: u32,
    page83: Guid,
    locator: Option<(Guid, Vec<(String, String)>)>,
}

impl VhdxDisk {
    /// Opens the VHDX in `src`. Differencing disks open their parents through
    /// `parents` (use [`flr_io::FileParentResolver`] for a local file, or
    /// [`flr_io::NoParentResolver`] when there is no folder to look in).
    pub fn open(src: Source, parents: &dyn ParentResolver) -> Result<VhdxDisk, VhdxError> {
        let mut seen = Vec::new();
        Self::open_chain(src, parents, &mut seen)
    }

    /// What the headers and metadata say, with warnings.
    pub fn info(&self) -> &VhdxInfo {
        &self.info
    }

    /// The opened parent of a differencing disk.
    pub fn parent(&self) -> Option<&VhdxDisk> {
        self.parent.as_deref()
    }

    fn open_chain(
        src: Source,
        parents: &dyn ParentResolver,
        seen: &mut Vec<String>,
    ) -> Result<VhdxDisk, VhdxError> {
        let len = src.len();
        let mut ident = [0u8; 520];
        if len < 8 {
            return Err(VhdxError::NotVhdx(format!("the file is only {len} bytes")));
        }
        src.read_exact_at(0, &mut ident[..8])?;
        if &ident[..8] != format::FILE_SIGNATURE {
            return Err(VhdxError::NotVhdx(
                "no \"vhdxfile\" signature at offset 0".into(),
            ));
        }
        // Headers and region tables live in the first 320 KiB.
        if len < 320 * format::KIB {
            return Err(corrupt(
                0,
                format!("the file is {len} bytes, too short for the VHDX header section"),
            ));
        }
        src.read_exact_at(0, &mut ident)?;
        let creator_units: Vec<u16> = ident[8..520]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let creator = String::from_utf16_lossy(&creator_units);
        let mut warnings = Vec::new();

        let header = read_headers(&src, &mut warnings)?;
        let log_not_replayed = header.log_guid != [0; 16];
        if log_not_replayed {
            warnings.push(format!(
                "the log is not empty (LogGuid {}, {} bytes at {:#x}): the file was not closed cleanly and the log was NOT replayed (flr never writes), so the most recent writes may be missing",
                format::guid_text(&header.log_guid),
                header.log_length,
                header.log_offset
            ));
        }

        let regions = read_region_table(&src, &mut warnings)?;
        let mut bat_region = None;
        let mut meta_region = None;
        for r in &regions {
            if r.guid == format::BAT_REGION {
                bat_region = Some(r.clone());
            } else if r.guid == format::METADATA_REGION {
                meta_region = Some(r.clone());
            } else if r.required {
                return Err(VhdxError::Unsupported {
                    offset: format::REGION_TABLE_OFFSETS[0],
                    what: format!("unknown required region {}", format::guid_text(&r.guid)),
                });
            } else {
                warnings.push(format!(
                    "unknown optional region {} ignored",
                    format::guid_text(&r.guid)
                ));
            }
        }
        let bat_region = bat_region.ok_or_else(|| {
            corrupt(
                format::REGION_TABLE_OFFSETS[0],
                "the region table has no BAT region",
            )
        })?;
        let meta_region = meta_region.ok_or_else(|| {
            corrupt(
                format::REGION_TABLE_OFFSETS[0],
                "the region table has no metadata region",
            )
        })?;
        for (name, r) in [("BAT", &bat_region), ("metadata", &meta_region)] {
            let fits = r
                .offset
                .checked_add(u64::from(r.length))
                .is_some_and(|e| e <= len);
            if !fits || r.offset < MIB {
                return Err(corrupt(
                    format::REGION_TABLE_OFFSETS[0],
                    format!(
                        "the {name} region ({} bytes at {:#x}) lies outside the file ({len} bytes)",
                        r.length, r.offset
                    ),
                ));
            }
        }

        let meta = read_metadata(&src, &meta_region, &mut warnings)?;
        let bs = u64::from(meta.block_size);
        let sector = u64::from(meta.logical);
        let chunk_ratio = (1u64 << 23) * sector / bs;
        let data_blocks = meta.virtual_size.div_ceil(bs);
        let sb_blocks = data_blocks.div_ceil(chunk_ratio);
        let entries = if meta.has_parent {
            sb_blocks * (chunk_ratio + 1)
        } else if data_blocks == 0 {
            0
        } else {
            data_blocks + (data_blocks - 1) / chunk_ratio
        };
        if entries > MAX_BAT_ENTRIES {
            return Err(VhdxError::Unsupported {
                offset: meta_region.offset,
                what: format!(
                    "virtual size {} with {bs}-byte blocks needs {entries} BAT entries (limit {MAX_BAT_ENTRIES})",
                    meta.virtual_size
                ),
            });
        }
        if entries * 8 > u64::from(bat_region.length) {
            return Err(corrupt(
                bat_region.offset,
                format!(
                    "the BAT region is {} bytes but {entries} entries are needed",
                    bat_region.length
                ),
            ));
        }
        // Read in 1 MiB pieces: the BAT is held once (8 bytes per block:
        // 4 MiB for 16 TiB in 32 MiB blocks), never twice.
        let bat_bytes = entries * 8;
        let mut bat: Vec<u64> = Vec::with_capacity(entries as usize);
        let mut raw = vec![0u8; bat_bytes.min(MIB) as usize];
        let mut done = 0u64;
        while done < bat_bytes {
            let n = (bat_bytes - done).min(MIB) as usize;
            src.read_exact_at(bat_region.offset + done, &mut raw[..n])?;
            bat.extend(
                raw[..n]
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])),
            );
            done += n as u64;
        }
        drop(raw);
        let mut past_eof = 0u64;
        let mut reserved = 0u64;
        for (i, &e) in bat.iter().enumerate() {
            let is_sb = (i as u64 + 1) % (chunk_ratio + 1) == 0;
            let state = e & 7;
            let off = e & !0xF_FFFF;
            let need = if is_sb {
                (state == SB_PRESENT).then_some(MIB)
            } else {
                match state {
                    PAYLOAD_FULLY_PRESENT | PAYLOAD_PARTIALLY_PRESENT => Some(bs),
                    4 => {
                        reserved += 1;
                        None
                    }
                    _ => None,
                }
            };
            if let Some(n) = need {
                if off == 0 || off.checked_add(n).is_none_or(|end| end > len) {
                    past_eof += 1;
                }
            }
        }
        if past_eof > 0 {
            warnings.push(format!(
                "{past_eof} BAT entries point at offset 0 or past the end of the file; reading those blocks fails"
            ));
        }
        if reserved > 0 {
            warnings.push(format!(
                "{reserved} BAT entries have the reserved state 4; reading those blocks fails"
            ));
        }

        let mut info = VhdxInfo {
            disk_type: if meta.has_parent {
                DiskType::Differencing
            } else if meta.leave_allocated {
                DiskType::Fixed
            } else {
                DiskType::Dynamic
            },
            virtual_size: meta.virtual_size,
            block_size: meta.block_size,
            logical_sector_size: meta.logical,
            physical_sector_size: meta.physical,
            has_parent: meta.has_parent,
            leave_blocks_allocated: meta.leave_allocated,
            page83_id: format::guid_text(&meta.page83),
            data_write_guid: format::guid_text(&header.data_write_guid),
            file_write_guid: format::guid_text(&header.file_write_guid),
            header_sequence: header.sequence,
            log_not_replayed,
            creator,
            parent_linkage: None,
            parent_locator: Vec::new(),
            parent_locators: Vec::new(),
            chain: Vec::new(),
            warnings,
        };
        let parent = if meta.has_parent {
            let (kind, kv) = meta.locator.clone().ok_or_else(|| {
                corrupt(
                    meta_region.offset,
                    "HasParent is set but there is no parent locator metadata item",
                )
            })?;
            Some(Box::new(Self::open_parent(
                kind, kv, &mut info, parents, seen,
            )?))
        } else {
            None
        };
        Ok(VhdxDisk {
            src,
            info,
            bat,
            bat_offset: bat_region.offset,
            block_size: bs,
            sector,
            chunk_ratio,
            parent,
            bitmaps: RwLock::new(HashMap::new()),
            cached_bytes: AtomicUsize::new(0),
        })
    }

    fn open_parent(
        kind: Guid,
        kv: Vec<(String, String)>,
        info: &mut VhdxInfo,
        parents: &dyn ParentResolver,
        seen: &mut Vec<String>,
    ) -> Result<VhdxDisk, VhdxError> {
        if kind != format::VHDX_PARENT_LOCATOR_TYPE {
            return Err(VhdxError::Unsupported {
                offset: 0,
                what: format!(
                    "parent locator type {} (only VHDX parents, {}, are known)",
                    format::guid_text(&kind),
                    format::guid_text(&format::VHDX_PARENT_LOCATOR_TYPE)
                ),
            });
        }
        let get = |k: &str| {
            kv.iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
                .filter(|v| !v.trim().is_empty())
        };
        let linkage = get("parent_linkage");
        let linkage2 = get("parent_linkage2");
        let mut candidates = Vec::new();
        for k in ["relative_path", "volume_path", "absolute_win32_path"] {
            if let Some(v) = get(k) {
                if !candidates.contains(&v) {
                    candidates.push(v);
                }
            }
        }
        info.parent_linkage = linkage.clone();
        info.parent_locator = kv.clone();
        info.parent_locators = candidates.clone();
        if linkage.is_none() {
            info.warnings.push(
                "the parent locator has no parent_linkage; the parent cannot be verified".into(),
            );
        }
        if candidates.is_empty() {
            return Err(VhdxError::ParentNotFound(IoError::corrupt(
                LAYER,
                0,
                "the parent locator holds no relative_path, volume_path or absolute_win32_path",
            )));
        }
        let (parent, ppath) = flr_io::open_parent_step(
            parents,
            &candidates,
            seen,
            MAX_CHAIN_DEPTH,
            Self::open_chain,
        )?;
        let pdwg = parent.info.data_write_guid.clone();
        let matches = [&linkage, &linkage2]
            .iter()
            .any(|l| l.as_deref().is_some_and(|l| format::guid_key(l) == pdwg));
        if linkage.is_some() && !matches {
            info.warnings.push(format!(
                "parent {ppath} has DataWriteGuid {pdwg}, but this disk's parent_linkage is {}: the parent was modified after this disk was made, or is not its parent",
                linkage.as_deref().unwrap_or("?")
            ));
        }
        if parent.info.virtual_size != info.virtual_size {
            info.warnings.push(format!(
                "parent {ppath} is {} bytes, this disk {} bytes",
                parent.info.virtual_size, info.virtual_size
            ));
        }
        if parent.info.logical_sector_size != info.logical_sector_size {
            info.warnings.push(format!(
                "parent {ppath} has {}-byte logical sectors, this disk {}",
                parent.info.logical_sector_size, info.logical_sector_size
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

    fn entry(&self, idx: u64) -> u64 {
        usize::try_from(idx)
            .ok()
            .and_then(|i| self.bat.get(i))
            .copied()
            .unwrap_or(0)
    }

    fn payload_entry(&self, block: u64) -> u64 {
        self.entry(block + block / self.chunk_ratio)
    }

    /// The sector bitmap of a partially present block.
    fn bitmap(&self, block: u64) -> Result<Arc<Bitmap>, IoError> {
        if let Some(b) = self
            .bitmaps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&block)
        {
            return Ok(b.clone());
        }
        let voff = block * self.block_size;
        let chunk = block / self.chunk_ratio;
        let sb = self.entry(chunk * (self.chunk_ratio + 1) + self.chunk_ratio);
        if sb & 7 != SB_PRESENT {
            return Err(IoError::corrupt(
                LAYER,
                voff,
                format!(
                    "block {block} is partially present but the sector bitmap of its chunk is not (state {})",
                    sb & 7
                ),
            ));
        }
        let spb = self.block_size / self.sector;
        let nbytes = spb / 8;
        let at = (sb & !0xF_FFFF) + (block % self.chunk_ratio) * nbytes;
        let mut bits = vec![0u8; nbytes as usize];
        self.src.read_exact_at(at, &mut bits).map_err(|e| {
            e.reading(
                LAYER,
                voff,
                format_args!("sector bitmap of block {block} at file offset {at:#x}"),
            )
        })?;
        let bm = if bits.iter().all(|&b| b == 0xFF) {
            Bitmap::Full
        } else if bits.iter().all(|&b| b == 0) {
            Bitmap::Empty
        } else {
            Bitmap::Partial(bits)
        };
        let bm = Arc::new(bm);
        let cost = match &*bm {
            Bitmap::Partial(b) => b.len(),
            _ => 0,
        };
        if self.cached_bytes.load(Ordering::Relaxed) + cost <= BITMAP_CACHE_BYTES {
            self.cached_bytes.fetch_add(cost, Ordering::Relaxed);
            self.bitmaps
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(block, bm.clone());
        }
        Ok(bm)
    }

    fn flush(&self, run: &Run, buf: &mut [u8]) -> Result<(), IoError> {
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
            RunKind::File => {
                let end = run.at.checked_add(run.len as u64);
                if end.is_none_or(|e| e > self.src.len()) {
                    return Err(IoError::corrupt(
                        LAYER,
                        run.voff,
                        format!(
                            "block data at file offset {:#x} ({} bytes) lies past the end of the file ({:#x} bytes)",
                            run.at,
                            run.len,
                            self.src.len()
                        ),
                    ));
                }
                self.src.read_exact_at(run.at, out).map_err(|e| {
                    e.reading(
                        LAYER,
                        run.voff,
                        format_args!("block data at file offset {:#x}", run.at),
                    )
                })
            }
            RunKind::Parent => match &self.parent {
                Some(p) => read_parent(p, run.at, out),
                None => {
                    out.fill(0);
                    Ok(())
                }
            },
        }
    }

    fn push(&self, pending: &mut Option<Run>, next: Run, buf: &mut [u8]) -> Result<(), IoError> {
        if let Some(p) = pending.as_mut() {
            let contiguous = p.start + p.len == next.start
                && (p.kind == RunKind::Zero || p.at + p.len as u64 == next.at);
            if p.kind == next.kind && contiguous {
                p.len += next.len;
                return Ok(());
            }
        }
        if let Some(p) = pending.take() {
            self.flush(&p, buf)?;
        }
        *pending = Some(next);
        Ok(())
    }

    fn read_blocks(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let bs = self.block_size;
        let diff = self.parent.is_some();
        let mut pending: Option<Run> = None;
        let mut done = 0usize;
        while done < buf.len() {
            let voff = offset + done as u64;
            let block = voff / bs;
            let in_block = voff % bs;
            let n = usize::try_from((bs - in_block).min((buf.len() - done) as u64))
                .unwrap_or(buf.len() - done);
            let e = self.payload_entry(block);
            let state = e & 7;
            let data = e & !0xF_FFFF;
            let whole = |kind, at| Run {
                kind,
                at,
                start: done,
                len: n,
                voff,
            };
            match state {
                PAYLOAD_FULLY_PRESENT => {
                    self.check_offset(block, data, voff)?;
                    self.push(&mut pending, whole(RunKind::File, data + in_block), buf)?;
                }
                PAYLOAD_PARTIALLY_PRESENT if !diff => {
                    self.check_offset(block, data, voff)?;
                    self.push(&mut pending, whole(RunKind::File, data + in_block), buf)?;
                }
                PAYLOAD_PARTIALLY_PRESENT => {
                    self.check_offset(block, data, voff)?;
                    let bm = self.bitmap(block)?;
                    match &*bm {
                        Bitmap::Full => {
                            self.push(&mut pending, whole(RunKind::File, data + in_block), buf)?
                        }
                        Bitmap::Empty => {
                            self.push(&mut pending, whole(RunKind::Parent, voff), buf)?
                        }
                        Bitmap::Partial(bits) => {
                            let end = in_block + n as u64;
                            let mut a = in_block;
                            while a < end {
                                let s = a / self.sector;
                                let present = bit(bits, s);
                                let mut s2 = s + 1;
                                while s2 * self.sector < end {
                                    if s2 % 8 == 0 && (s2 + 8) * self.sector <= end {
                                        let byte =
                                            bits.get((s2 / 8) as usize).copied().unwrap_or(0);
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
                                let run_end = end.min(s2 * self.sector);
                                let len = (run_end - a) as usize;
                                let start = done + (a - in_block) as usize;
                                let v = block * bs + a;
                                let run = if present {
                                    Run {
                                        kind: RunKind::File,
                                        at: data + a,
                                        start,
                                        len,
                                        voff: v,
                                    }
                                } else {
                                    Run {
                                        kind: RunKind::Parent,
                                        at: v,
                                        start,
                                        len,
                                        voff: v,
                                    }
                                };
                                self.push(&mut pending, run, buf)?;
                                a = run_end;
                            }
                        }
                    }
                }
                PAYLOAD_NOT_PRESENT if diff => {
                    self.push(&mut pending, whole(RunKind::Parent, voff), buf)?;
                }
                PAYLOAD_NOT_PRESENT
                | PAYLOAD_UNDEFINED
                | PAYLOAD_ZERO
                | PAYLOAD_UNMAPPED
                | PAYLOAD_UNMAPPED_V095 => {
                    self.push(&mut pending, whole(RunKind::Zero, 0), buf)?;
                }
                other => {
                    return Err(IoError::corrupt(
                        LAYER,
                        voff,
                        format!("BAT entry of block {block} has the reserved state {other}"),
                    ));
                }
            }
            done += n;
        }
        if let Some(p) = pending.take() {
            self.flush(&p, buf)?;
        }
        Ok(())
    }

    fn check_offset(&self, block: u64, data: u64, voff: u64) -> Result<(), IoError> {
        if data < MIB {
            return Err(IoError::corrupt(
                LAYER,
                voff,
                format!("BAT entry of block {block} points into the header section (file offset {data:#x})"),
            ));
        }
        Ok(())
    }
}

impl VhdxDisk {
    /// Whether `n` bytes at virtual offset `at` inside `block` may differ:
    /// a BAT entry (payload, or the sector bitmap of a differencing disk's
    /// partially present block) or a sector bitmap that may differ makes
    /// the whole block changed; otherwise the payload in the file, and the
    /// parent for what the block leaves to it, answer.
    fn changed_block(&self, block: u64, at: u64, n: u64) -> Change {
        let idx = block + block / self.chunk_ratio;
        let bat = self.src.changed(self.bat_offset + idx * 8, 8);
        if bat != Change::Unchanged {
            return bat.and(Change::Changed);
        }
        let e = self.payload_entry(block);
        let data = (e & !0xF_FFFF) + at % self.block_size;
        let parent = || match &self.parent {
            Some(p) if at < p.len() => p.changed(at, n.min(p.len() - at)),
            _ => Change::Unchanged,
        };
        match e & 7 {
            PAYLOAD_FULLY_PRESENT => self.src.changed(data, n),
            PAYLOAD_PARTIALLY_PRESENT if self.parent.is_none() => self.src.changed(data, n),
            PAYLOAD_PARTIALLY_PRESENT => {
                let chunk = block / self.chunk_ratio;
                let sb_idx = chunk * (self.chunk_ratio + 1) + self.chunk_ratio;
                let sb_entry = self.src.changed(self.bat_offset + sb_idx * 8, 8);
                if sb_entry != Change::Unchanged {
                    return sb_entry.and(Change::Changed);
                }
                let nbytes = self.block_size / self.sector / 8;
                let bits_at =
                    (self.entry(sb_idx) & !0xF_FFFF) + (block % self.chunk_ratio) * nbytes;
                let bits = self.src.changed(bits_at, nbytes);
                if bits != Change::Unchanged {
                    return bits.and(Change::Changed);
                }
                match self.bitmap(block).as_deref() {
                    Ok(Bitmap::Full) => self.src.changed(data, n),
                    Ok(Bitmap::Empty) => parent(),
                    Ok(Bitmap::Partial(_)) => self.src.changed(data, n).and(parent()),
                    Err(_) => Change::Unknown,
                }
            }
            PAYLOAD_NOT_PRESENT if self.parent.is_some() => parent(),
            _ => Change::Unchanged,
        }
    }

    /// The virtual-disk ranges this file holds itself: for a differencing
    /// disk, the sectors present in it (what changed against its parent);
    /// for a dynamic disk, its present blocks; for a fixed disk, every
    /// present block.
    pub fn held_ranges(&self) -> Result<RangeSet, IoError> {
        let vsize = self.info.virtual_size;
        let bs = self.block_size;
        let blocks = vsize.div_ceil(bs);
        let spb = bs / self.sector;
        let mut out = RangeSet::new();
        let clip = |off: u64, len: u64| (off, len.min(vsize.saturating_sub(off)));
        for block in 0..blocks {
            let start = block * bs;
            match self.payload_entry(block) & 7 {
                PAYLOAD_FULLY_PRESENT => {
                    let (o, l) = clip(start, bs);
                    out.insert(o, l);
                }
                PAYLOAD_PARTIALLY_PRESENT if self.parent.is_none() => {
                    let (o, l) = clip(start, bs);
                    out.insert(o, l);
                }
                // A differencing disk that says "zeros" hides its parent.
                PAYLOAD_UNDEFINED | PAYLOAD_ZERO | PAYLOAD_UNMAPPED | PAYLOAD_UNMAPPED_V095
                    if self.parent.is_some() =>
                {
                    let (o, l) = clip(start, bs);
                    out.insert(o, l);
                }
                PAYLOAD_PARTIALLY_PRESENT => match &*self.bitmap(block)? {
                    Bitmap::Full => {
                        let (o, l) = clip(start, bs);
                        out.insert(o, l);
                    }
                    Bitmap::Empty => {}
                    Bitmap::Partial(bits) => {
                        for (first, n) in flr_io::set_runs(spb, |i| bit(bits, i)) {
                            let (o, l) = clip(start + first * self.sector, n * self.sector);
                            out.insert(o, l);
                        }
                    }
                },
                _ => {}
            }
        }
        Ok(out)
    }
}

/// Bit `s` of a VHDX sector bitmap (least significant bit of byte 0 is sector 0).
fn bit(bits: &[u8], s: u64) -> bool {
    let byte = usize::try_from(s / 8)
        .ok()
        .and_then(|i| bits.get(i))
        .copied()
        .unwrap_or(0);
    byte & (1 << (s % 8)) != 0
}

fn read_parent(p: &VhdxDisk, at: u64, out: &mut [u8]) -> Result<(), IoError> {
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

fn read_headers(src: &Source, warnings: &mut Vec<String>) -> Result<format::Header, VhdxError> {
    let mut found: Vec<(usize, format::Header)> = Vec::new();
    let mut problems = Vec::new();
    for (i, &off) in format::HEADER_OFFSETS.iter().enumerate() {
        let mut b = vec![0u8; format::HEADER_SIZE];
        src.read_exact_at(off, &mut b)?;
        match format::Header::parse(&b) {
            Ok(h) => found.push((i, h)),
            Err(why) => problems.push(format!("header {} at {off:#x}: {why}", i + 1)),
        }
    }
    match found.len() {
        0 => Err(corrupt(
            format::HEADER_OFFSETS[0],
            format!("no valid header: {}", problems.join("; ")),
        )),
        1 => {
            warnings.push(format!("{}; using the other header", problems.join("; ")));
            Ok(found.remove(0).1)
        }
        _ => {
            let (a, b) = (&found[0].1, &found[1].1);
            if a.sequence == b.sequence
                && (a.data_write_guid != b.data_write_guid || a.log_guid != b.log_guid)
            {
                warnings.push(format!(
                    "both headers have sequence number {} but differ; using header 1",
                    a.sequence
                ));
            }
            let pick = if b.sequence > a.sequence { 1 } else { 0 };
            Ok(found.remove(pick).1)
        }
    }
}

fn read_region_table(
    src: &Source,
    warnings: &mut Vec<String>,
) -> Result<Vec<format::Region>, VhdxError> {
    let mut problems = Vec::new();
    for (i, &off) in format::REGION_TABLE_OFFSETS.iter().enumerate() {
        let mut b = vec![0u8; format::REGION_TABLE_SIZE];
        src.read_exact_at(off, &mut b)?;
        match format::parse_region_table(&b) {
            Ok(r) => {
                if i > 0 {
                    warnings.push(format!("{}; using the copy", problems.join("; ")));
                }
                return Ok(r);
            }
            Err(why) => problems.push(format!("region table {} at {off:#x}: {why}", i + 1)),
        }
    }
    Err(corrupt(
        format::REGION_TABLE_OFFSETS[0],
        format!("no valid region table: {}", problems.join("; ")),
    ))
}

fn read_metadata(
    src: &Source,
    region: &format::Region,
    warnings: &mut Vec<String>,
) -> Result<Meta, VhdxError> {
    let base = region.offset;
    let rlen = u64::from(region.length);
    let tlen = (format::METADATA_TABLE_SIZE as u64).min(rlen);
    let mut table = vec![0u8; tlen as usize];
    src.read_exact_at(base, &mut table)?;
    let entries = format::parse_metadata_table(&table).map_err(|w| corrupt(base, w))?;
    let item = |e: &format::MetaEntry| -> Result<Vec<u8>, VhdxError> {
        let fits = u64::from(e.offset)
            .checked_add(u64::from(e.length))
            .is_some_and(|end| end <= rlen);
        if !fits || e.length > MAX_ITEM_LEN {
            return Err(corrupt(
                base,
                format!(
                    "metadata item {} ({} bytes at {:#x}) lies outside the metadata region",
                    format::guid_text(&e.id),
                    e.length,
                    e.offset
                ),
            ));
        }
        let mut b = vec![0u8; e.length as usize];
        src.read_exact_at(base + u64::from(e.offset), &mut b)?;
        Ok(b)
    };
    let mut params = None;
    let mut vsize = None;
    let mut logical = None;
    let mut physical = None;
    let mut page83 = None;
    let mut locator = None;
    for e in &entries {
        let at = base + u64::from(e.offset);
        if e.is_user {
            continue;
        }
        if e.id == format::FILE_PARAMETERS {
            let b = item(e)?;
            params = Some((format::le_u32(&b, 0), format::le_u32(&b, 4), b.len(), at));
        } else if e.id == format::VIRTUAL_DISK_SIZE {
            let b = item(e)?;
            vsize = Some((format::le_u64(&b, 0), b.len(), at));
        } else if e.id == format::LOGICAL_SECTOR_SIZE {
            let b = item(e)?;
            logical = Some((format::le_u32(&b, 0), at));
        } else if e.id == format::PHYSICAL_SECTOR_SIZE {
            let b = item(e)?;
            physical = Some((format::le_u32(&b, 0), at));
        } else if e.id == format::PAGE_83_DATA {
            let b = item(e)?;
            page83 = Some(format::guid_at(&b, 0));
        } else if e.id == format::PARENT_LOCATOR {
            let b = item(e)?;
            locator = Some(
                format::parse_parent_locator(&b)
                    .map_err(|w| corrupt(at, format!("parent locator: {w}")))?,
            );
        } else if e.required {
            return Err(VhdxError::Unsupported {
                offset: at,
                what: format!(
                    "unknown required metadata item {}",
                    format::guid_text(&e.id)
                ),
            });
        }
    }
    let missing = |what: &str| corrupt(base, format!("the {what} metadata item is missing"));
    let (block_size, flags, plen, pat) = params.ok_or_else(|| missing("file parameters"))?;
    if plen < 8 {
        return Err(corrupt(pat, "the file parameters item is too short"));
    }
    if !(MIB as u32..=256 << 20).contains(&block_size) || !block_size.is_power_of_two() {
        return Err(corrupt(
            pat,
            format!("block size {block_size} is not a power of two between 1 MiB and 256 MiB"),
        ));
    }
    let (virtual_size, vlen, vat) = vsize.ok_or_else(|| missing("virtual disk size"))?;
    let (logical, lat) = logical.ok_or_else(|| missing("logical sector size"))?;
    if logical != 512 && logical != 4096 {
        return Err(corrupt(
            lat,
            format!("logical sector size {logical} (512 or 4096)"),
        ));
    }
    let physical = match physical {
        Some((p, _)) if p == 512 || p == 4096 => p,
        Some((p, pat)) => {
            warnings.push(format!(
                "physical sector size {p} at {pat:#x} is neither 512 nor 4096"
            ));
            p
        }
        None => {
            warnings.push("the physical sector size metadata item is missing".into());
            logical
        }
    };
    if vlen < 8 || virtual_size == 0 || virtual_size > MAX_VIRTUAL_SIZE {
        return Err(corrupt(
            vat,
            format!("virtual disk size {virtual_size} (1 byte to 64 TiB)"),
        ));
    }
    if virtual_size % u64::from(logical) != 0 {
        warnings.push(format!(
            "virtual disk size {virtual_size} is not a multiple of the {logical}-byte logical sector"
        ));
    }
    let page83 = page83.unwrap_or_else(|| {
        warnings.push("the page 83 data metadata item is missing".into());
        [0; 16]
    });
    let has_parent = flags & 2 != 0;
    if !has_parent && locator.is_some() {
        warnings.push("a parent locator is present but HasParent is not set; ignored".into());
    }
    Ok(Meta {
        block_size,
        leave_allocated: flags & 1 != 0,
        has_parent,
        virtual_size,
        logical,
        physical,
        page83,
        locator,
    })
}

impl ReadAt for VhdxDisk {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        check_range(LAYER, offset, buf.len(), self.info.virtual_size)?;
        if buf.is_empty() {
            return Ok(());
        }
        self.read_blocks(offset, buf)
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
        if end > self.info.virtual_size || self.info.log_not_replayed {
            // A log not replayed may rewrite the BAT and blocks.
            return Change::Unknown;
        }
        let bs = self.block_size;
        let mut answer = Change::Unchanged;
        let mut at = offset;
        while at < end {
            let block = at / bs;
            let block_end = ((block + 1) * bs).min(end);
            let part = self.changed_block(block, at, block_end - at);
            answer = answer.and(part);
            if answer == Change::Changed {
                return answer;
            }
            at = block_end;
        }
        answer
    }

    fn is_known_zero(&self, offset: u64, len: u64) -> bool {
        let Some(end) = offset.checked_add(len) else {
            return false;
        };
        if end > self.info.virtual_size {
            return false;
        }
        let bs = self.block_size;
        let mut at = offset;
        while at < end {
            let block = at / bs;
            let block_end = ((block + 1) * bs).min(end);
            match self.payload_entry(block) & 7 {
                PAYLOAD_UNDEFINED | PAYLOAD_ZERO | PAYLOAD_UNMAPPED | PAYLOAD_UNMAPPED_V095 => {}
                PAYLOAD_NOT_PRESENT => {
                    if let Some(p) = &self.parent {
                        let plen = p.len();
                        if at < plen && !p.is_known_zero(at, block_end.min(plen) - at) {
                            return false;
                        }
                    }
                }
                _ => return false,
            }
            at = block_end;
        }
        true
    }
}
