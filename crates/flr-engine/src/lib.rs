//! Stacks flr's layers over one image: byte source → container (raw, VHD,
//! VHDX) → partition table (MBR, GPT) → volumes, each with the content found
//! on it (a filesystem flr opens, or an encrypted/unsupported layer named
//! with the reason), like a dfvfs scanner that reports locked layers.
//!
//! Volumes get stable short ids: `p1`, `p2`, … after the partition numbers
//! (GPT entry index; MBR 1–4 primary, 5+ logical), or `disk` when the
//! filesystem lies directly on the disk.
//!
//! # Errors
//! [`EngineError`] keeps the error of the layer that failed and says which
//! layer it was.
#![deny(missing_docs)]

mod ade;
mod detect;
mod encrypted;
mod keyring;
mod lvm;

pub use detect::{detect, read_head, ContentKind};
pub use encrypted::{EncryptionInfo, LuksSummary};
pub use keyring::{ChainKey, KeyRing};
pub use lvm::VgReport;

use std::path::Path;
use std::sync::Arc;

use flr_fs::{Filesystem, FsError, FsInfo};
use flr_io::{FileParentResolver, FileSource, IoError, ParentResolver, Slice, Source};
use serde::Serialize;

/// What the container layer is.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerInfo {
    /// `raw`, `vhd`, `vhdx`.
    pub format: &'static str,
    /// `fixed`, `dynamic`, `differencing` (VHD/VHDX), none for raw.
    pub subtype: Option<String>,
    /// Size of the virtual disk in bytes.
    pub virtual_size: u64,
    /// Size of the image file in bytes.
    pub file_size: u64,
    /// Logical sector size the container declares (VHDX), if any.
    pub logical_sector_size: Option<u32>,
    /// Parent images of a differencing disk, nearest first.
    pub parents: Vec<String>,
    /// Non-fatal findings (bad footer checksum, unreplayed log…).
    pub warnings: Vec<String>,
}

/// The partition table, if any.
#[derive(Debug, Clone, Serialize)]
pub struct TableInfo {
    /// `gpt` or `mbr`.
    pub scheme: &'static str,
    /// Logical sector size used.
    pub sector_size: u32,
    /// Disk GUID (GPT) or signature (MBR).
    pub disk_id: Option<String>,
    /// Non-fatal findings (backup GPT header used…).
    pub warnings: Vec<String>,
}

/// Partition facts of a volume.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionInfo {
    /// Partition number.
    pub number: u32,
    /// Type: GPT type GUID or MBR type byte as `0x83`.
    pub type_id: String,
    /// Name of the type, where known.
    pub type_name: Option<String>,
    /// GPT partition name.
    pub name: Option<String>,
    /// GPT partition GUID.
    pub guid: Option<String>,
    /// MBR: a logical partition inside an extended one.
    pub logical: bool,
    /// MBR: the boot flag.
    pub bootable: bool,
}

/// What was found on a volume.
#[derive(Debug, Clone, Serialize)]
pub struct ContentInfo {
    /// The kind of content.
    pub kind: ContentKind,
    /// Filesystem facts, when flr opened it.
    pub fs: Option<FsInfo>,
    /// LUKS header summary.
    pub luks: Option<LuksSummary>,
    /// The encryption layer under the content, when there is one (BitLocker
    /// today): scheme, cipher, protectors, and how it was unlocked.
    pub encryption: Option<EncryptionInfo>,
    /// `readable`, `locked`, `unsupported`, `error`, `empty`, `unknown`.
    pub verdict: &'static str,
    /// One line for the operator.
    pub detail: String,
}

/// One volume: a partition, or the whole disk.
#[derive(Clone)]
pub struct Volume {
    /// Stable short id (`p1`, `disk`).
    pub id: String,
    /// Byte offset on the virtual disk.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// Partition facts (None for `disk`).
    pub partition: Option<PartitionInfo>,
    /// What is on it.
    pub content: ContentInfo,
    source: Source,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("id", &self.id)
            .field("offset", &self.offset)
            .field("size", &self.size)
            .finish()
    }
}

impl Volume {
    /// The volume's bytes.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Opens the filesystem on this volume.
    pub fn open_fs(&self) -> Result<Box<dyn Filesystem>, EngineError> {
        open_filesystem(self.content.kind, self.source.clone()).map_err(|e| match e {
            OpenFsError::Fs(source) => EngineError::Filesystem {
                volume: self.id.clone(),
                source,
            },
            OpenFsError::NotReadable(reason) => EngineError::NotReadable {
                volume: self.id.clone(),
                kind: self.content.kind.name(),
                reason: if self.content.detail.is_empty() {
                    reason.to_string()
                } else {
                    self.content.detail.clone()
                },
            },
        })
    }
}

enum OpenFsError {
    Fs(FsError),
    NotReadable(&'static str),
}

fn open_filesystem(kind: ContentKind, src: Source) -> Result<Box<dyn Filesystem>, OpenFsError> {
    Ok(match kind {
        ContentKind::Fat => Box::new(flr_fat::FatFs::open(src).map_err(OpenFsError::Fs)?),
        ContentKind::Ext => Box::new(flr_ext4::Ext4Fs::open(src).map_err(OpenFsError::Fs)?),
        ContentKind::Ntfs => Box::new(flr_ntfs::NtfsFs::open(src).map_err(OpenFsError::Fs)?),
        ContentKind::Xfs => Box::new(flr_xfs::XfsFs::open(src).map_err(OpenFsError::Fs)?),
        other => {
            return Err(OpenFsError::NotReadable(
                other.not_readable_reason().unwrap_or("not a filesystem"),
            ))
        }
    })
}

/// An opened image: its container, partition table and volumes.
pub struct Image {
    /// Where it came from.
    pub location: String,
    /// Container facts.
    pub container: ContainerInfo,
    /// Partition table facts.
    pub table: Option<TableInfo>,
    /// Volumes in disk order, then the LVM2 logical volumes (`p3/vg/lv`)
    /// of the volume groups whose first PV is on this image.
    pub volumes: Vec<Volume>,
    /// The LVM2 volume groups assembled on this image (and, with
    /// [`open_sources`], the images opened with it).
    pub volume_groups: Vec<VgReport>,
    disk: Source,
}

impl Image {
    /// The virtual disk's bytes.
    pub fn disk(&self) -> &Source {
        &self.disk
    }

    /// Finds a volume by id.
    pub fn volume(&self, id: &str) -> Result<&Volume, EngineError> {
        self.volumes
            .iter()
            .find(|v| v.id == id)
            .ok_or_else(|| EngineError::NoSuchVolume {
                id: id.to_string(),
                available: self
                    .volumes
                    .iter()
                    .map(|v| v.id.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// An error while opening or stacking layers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The image file could not be read.
    #[error("{0}")]
    Io(#[from] IoError),
    /// The VHD container is broken.
    #[error("{0}")]
    Vhd(#[from] flr_vhd::VhdError),
    /// The VHDX container is broken.
    #[error("{0}")]
    Vhdx(#[from] flr_vhdx::VhdxError),
    /// The partition table is broken.
    #[error("partition table: {0}")]
    Partition(#[from] flr_part::PartError),
    /// No volume has that id.
    #[error("no volume {id:?} in this image (volumes: {available})")]
    NoSuchVolume {
        /// What was asked for.
        id: String,
        /// What exists.
        available: String,
    },
    /// The volume holds something flr cannot open (yet), or is locked.
    #[error("volume {volume}: {kind}: {reason}")]
    NotReadable {
        /// Volume id.
        volume: String,
        /// What it holds.
        kind: &'static str,
        /// Why it cannot be opened.
        reason: String,
    },
    /// The filesystem failed.
    #[error("volume {volume}: {source}")]
    Filesystem {
        /// Volume id.
        volume: String,
        /// The filesystem error.
        #[source]
        source: FsError,
    },
}

/// How much a scan looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scan {
    /// Open every filesystem to read its facts (label, serial, sizes) and
    /// prove it opens: what `probe` shows.
    #[default]
    Full,
    /// Signatures only; filesystems are opened when used. For commands that
    /// work on one volume (on a remote source this saves reads).
    Quick,
}

/// Opens a local image file read-only and scans it.
pub fn open_path(path: &Path, scan: Scan, keys: &KeyRing) -> Result<Image, EngineError> {
    let file: Source = Arc::new(FileSource::open(path)?);
    let resolver = FileParentResolver::new(path);
    open_source(file, &path.display().to_string(), &resolver, scan, keys)
}

/// Scans an already opened source: detects the container, the partition
/// table and each volume's content. Filesystems are opened to read their
/// facts (label, serial, sizes) but not walked. LVM2 volume groups whose
/// PVs are all on this image are assembled and their LVs added as volumes.
pub fn open_source(
    file: Source,
    location: &str,
    parents: &dyn ParentResolver,
    scan: Scan,
    keys: &KeyRing,
) -> Result<Image, EngineError> {
    let mut img = [scan_source(file, location, parents, scan, keys)?];
    lvm::attach(&mut img, scan);
    let [img] = img;
    Ok(img)
}

/// Opens several images together (a VM's OS disk and its data disks), so
/// that LVM2 volume groups spanning them are assembled. Each image keeps
/// its own volume ids; an LV is added to the image that holds its VG's
/// first PV. The same key ring serves every image.
pub fn open_sources(
    sources: Vec<(Source, String)>,
    parents: &dyn ParentResolver,
    scan: Scan,
    keys: &KeyRing,
) -> Result<Vec<Image>, EngineError> {
    let mut images = Vec::with_capacity(sources.len());
    for (src, location) in sources {
        images.push(scan_source(src, &location, parents, scan, keys)?);
    }
    lvm::attach(&mut images, scan);
    Ok(images)
}

/// Opens several local image files together; see [`open_sources`].
pub fn open_paths(paths: &[&Path], scan: Scan, keys: &KeyRing) -> Result<Vec<Image>, EngineError> {
    let mut images = Vec::with_capacity(paths.len());
    for path in paths {
        let file: Source = Arc::new(FileSource::open(path)?);
        let resolver = FileParentResolver::new(path);
        images.push(scan_source(
            file,
            &path.display().to_string(),
            &resolver,
            scan,
            keys,
        )?);
    }
    lvm::attach(&mut images, scan);
    Ok(images)
}

/// Opens a VM's disks as one image, for the command line: the first disk's
/// volumes keep their ids, the volumes of disk N (N ≥ 2) are named
/// `dN/<id>` (`d2/p1`), and the LVs of volume groups spanning the disks are
/// assembled (`p3/rootvg/rootlv`, or `d2/p1/datavg/data` when the VG's first
/// PV is on disk 2). Container and partition-table facts are the first
/// disk's; `location` lists every disk.
pub fn open_disks(
    sources: Vec<(Source, String)>,
    parents: &dyn ParentResolver,
    scan: Scan,
    keys: &KeyRing,
) -> Result<Image, EngineError> {
    let mut images = Vec::with_capacity(sources.len());
    for (k, (src, location)) in sources.into_iter().enumerate() {
        let mut img = scan_source(src, &location, parents, scan, keys)?;
        if k > 0 {
            for v in &mut img.volumes {
                v.id = format!("d{}/{}", k + 1, v.id);
            }
        }
        images.push(img);
    }
    lvm::attach(&mut images, scan);
    let mut it = images.into_iter();
    let Some(mut first) = it.next() else {
        return Err(EngineError::NoSuchVolume {
            id: String::new(),
            available: "no disk given".into(),
        });
    };
    for img in it {
        first.location = format!("{} + {}", first.location, img.location);
        first.volumes.extend(img.volumes);
        first.volume_groups.extend(img.volume_groups);
    }
    Ok(first)
}

fn scan_source(
    file: Source,
    location: &str,
    parents: &dyn ParentResolver,
    scan: Scan,
    keys: &KeyRing,
) -> Result<Image, EngineError> {
    let file_size = file.len();
    let (disk, container) = open_container(file, parents)?;
    let container = ContainerInfo {
        file_size,
        ..container
    };
    let head = read_head(disk.as_ref())?;
    let whole_disk_kind = detect(&head, disk.as_ref());
    // A filesystem or encrypted volume right at sector 0 means no partition table.
    let table = if matches!(whole_disk_kind, ContentKind::Unknown | ContentKind::Empty) {
        flr_part::read_table(&disk, container.logical_sector_size)?
    } else {
        None
    };
    let mut volumes = Vec::new();
    let table_info = match table {
        None => {
            volumes.push(make_volume(
                "disk".into(),
                0,
                None,
                disk.clone(),
                scan,
                keys,
            )?);
            None
        }
        Some(t) => {
            for p in &t.partitions {
                let id = format!("p{}", p.number);
                // A partition that runs past the end of the disk (a truncated image) is
                // cut at the end and flagged, so the other volumes stay usable.
                let avail = disk.len().saturating_sub(p.start);
                let len = p.size.min(avail);
                let part = Slice::new(
                    disk.clone(),
                    p.start.min(disk.len()),
                    len,
                    format!("partition {id}"),
                )
                .map_err(EngineError::Io)?;
                let mut v = make_volume(
                    id,
                    p.start,
                    Some(partition_info(p)),
                    Arc::new(part),
                    scan,
                    keys,
                )?;
                if len < p.size {
                    v.size = p.size;
                    v.content.verdict = "error";
                    v.content.detail = format!(
                        "the partition table says {} bytes at offset {:#x}, but the disk ends {} bytes in (truncated image?); {}",
                        p.size, p.start, len, v.content.detail
                    );
                }
                volumes.push(v);
            }
            Some(TableInfo {
                scheme: match t.scheme {
                    flr_part::Scheme::Gpt => "gpt",
                    flr_part::Scheme::Mbr => "mbr",
                },
                sector_size: t.sector_size,
                disk_id: t.disk_id.clone(),
                warnings: t.warnings.clone(),
            })
        }
    };
    ade::discover(&mut volumes, keys, scan);
    Ok(Image {
        location: location.to_string(),
        container,
        table: table_info,
        volumes,
        volume_groups: Vec::new(),
        disk,
    })
}

fn partition_info(p: &flr_part::Partition) -> PartitionInfo {
    match &p.kind {
        flr_part::PartKind::Gpt {
            type_guid,
            type_name,
            guid,
            name,
            ..
        } => PartitionInfo {
            number: p.number,
            type_id: type_guid.clone(),
            type_name: type_name.map(str::to_string),
            name: (!name.is_empty()).then(|| name.clone()),
            guid: Some(guid.clone()),
            logical: false,
            bootable: false,
        },
        flr_part::PartKind::Mbr {
            type_byte,
            type_name,
            bootable,
            logical,
        } => PartitionInfo {
            number: p.number,
            type_id: format!("{type_byte:#04x}"),
            type_name: type_name.map(str::to_string),
            name: None,
            guid: None,
            logical: *logical,
            bootable: *bootable,
        },
    }
}

fn make_volume(
    id: String,
    offset: u64,
    partition: Option<PartitionInfo>,
    source: Source,
    scan: Scan,
    keys: &KeyRing,
) -> Result<Volume, EngineError> {
    let size = source.len();
    let (content, source) = match read_head(source.as_ref()) {
        Err(e) => (
            ContentInfo {
                kind: ContentKind::Unknown,
                fs: None,
                luks: None,
                encryption: None,
                verdict: "error",
                detail: format!("cannot read the volume: {e}"),
            },
            source,
        ),
        // A detached LUKS header given for this volume: the volume is LUKS data
        // whatever its first bytes look like (ciphertext from sector 0).
        Ok(head) => match keys.luks_header(&id) {
            Some(path) => match encrypted::header_from_file(path) {
                Ok(h) => encrypted::luks(&id, &head, source, Some(h), keys, scan),
                Err(e) => (
                    ContentInfo {
                        kind: ContentKind::Luks,
                        fs: None,
                        luks: None,
                        encryption: None,
                        verdict: "error",
                        detail: format!("detached LUKS header: {e}"),
                    },
                    source,
                ),
            },
            None => match detect(&head, source.as_ref()) {
                ContentKind::BitLocker | ContentKind::BitLockerToGo => {
                    encrypted::bitlocker(&id, source, keys, scan)
                }
                ContentKind::Luks => encrypted::luks(&id, &head, source, None, keys, scan),
                kind => (content_info(kind, &source, scan), source),
            },
        },
    };
    Ok(Volume {
        id,
        offset,
        size,
        partition,
        content,
        source,
    })
}

pub(crate) fn content_info(kind: ContentKind, source: &Source, scan: Scan) -> ContentInfo {
    let mut c = ContentInfo {
        kind,
        fs: None,
        luks: None,
        encryption: None,
        verdict: "unknown",
        detail: String::new(),
    };
    if kind.is_filesystem_flr_reads() && scan == Scan::Quick {
        c.verdict = "readable";
        c.detail = format!(
            "{} signature (filesystem not inspected in this scan)",
            kind.name()
        );
        return c;
    }
    if kind.is_filesystem_flr_reads() {
        match open_filesystem(kind, source.clone()) {
            Ok(fs) => {
                let info = fs.info();
                c.detail = format!(
                    "{} filesystem: files can be listed and restored",
                    info.fs_type
                );
                c.fs = Some(info);
                c.verdict = "readable";
            }
            Err(OpenFsError::Fs(e)) => {
                c.verdict = "error";
                c.detail = format!(
                    "{} signature found, but the filesystem does not open: {e}",
                    kind.name()
                );
            }
            Err(OpenFsError::NotReadable(r)) => {
                c.verdict = "unsupported";
                c.detail = r.to_string();
            }
        }
        return c;
    }
    c.verdict = match kind {
        k if k.is_encrypted() => "locked",
        ContentKind::Empty => "empty",
        ContentKind::Unknown => "unknown",
        _ => "unsupported",
    };
    c.detail = kind
        .not_readable_reason()
        .unwrap_or("not readable")
        .to_string();
    c
}

fn open_container(
    file: Source,
    parents: &dyn ParentResolver,
) -> Result<(Source, ContainerInfo), EngineError> {
    if flr_vhdx::probe(file.as_ref()) {
        let d = flr_vhdx::VhdxDisk::open(file, parents)?;
        let i = d.info().clone();
        let info = ContainerInfo {
            format: "vhdx",
            subtype: Some(
                match i.disk_type {
                    flr_vhdx::DiskType::Fixed => "fixed",
                    flr_vhdx::DiskType::Dynamic => "dynamic",
                    flr_vhdx::DiskType::Differencing => "differencing",
                }
                .to_string(),
            ),
            virtual_size: i.virtual_size,
            file_size: 0,
            logical_sector_size: Some(i.logical_sector_size),
            parents: i.chain.clone(),
            warnings: i.warnings.clone(),
        };
        return Ok((Arc::new(d), info));
    }
    if flr_vhd::probe(file.as_ref()) {
        let d = flr_vhd::VhdDisk::open(file, parents)?;
        let i = d.info().clone();
        let info = ContainerInfo {
            format: "vhd",
            subtype: Some(
                match i.disk_type {
                    flr_vhd::DiskType::Fixed => "fixed",
                    flr_vhd::DiskType::Dynamic => "dynamic",
                    flr_vhd::DiskType::Differencing => "differencing",
                }
                .to_string(),
            ),
            virtual_size: i.virtual_size,
            file_size: 0,
            logical_sector_size: None,
            parents: i.chain.clone(),
            warnings: i.warnings.clone(),
        };
        return Ok((Arc::new(d), info));
    }
    let len = file.len();
    Ok((
        file,
        ContainerInfo {
            format: "raw",
            subtype: None,
            virtual_size: len,
            file_size: 0,
            logical_sector_size: None,
            parents: Vec::new(),
            warnings: Vec::new(),
        },
    ))
}
