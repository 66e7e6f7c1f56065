//! Stacks flr's layers over one image, or over a VM's disks together, by
//! a recursive scan in the spirit of dfvfs's source scanner: every node
//! (the image, a partition, an unlocked volume, a logical volume, an
//! array, a disk image stored as a file) is probed against one list of
//! formats ([`formats`]) until it ends as a filesystem, a locked or
//! unsupported volume, or an error. Volume groups whose members lie on
//! several nodes are assembled once their members are found, wherever they
//! were found (a PV inside a LUKS volume inside a partition, a LUKS volume
//! inside an LV, an LV on a PV inside another LV, on any disk opened
//! together). Depth is capped and cycles are errors.
//!
//! # Volume ids
//! Each volume gets a stable id used as `ID:/path` on the command line:
//!
//! * `p1`, `p2`, … after the partition numbers of the disk's table (GPT
//!   entry index; MBR 1–4 primary, 5+ logical), or `disk` for a disk with
//!   no partition table;
//! * an encryption layer keeps its volume's id: an unlocked `p3` is still
//!   `p3`;
//! * a logical volume is `PV-ID/VG/LV`, where PV-ID is the id of the VG's
//!   first PV present (`p3/rootvg/rootlv`, `disk/datavg/cryptlv`);
//! * a partition table found on a volume adds `/pN` to its id
//!   (`p3/rootvg/vmdisk/p1`), and a VG on an LV composes the same way
//!   (`disk/outer/lv1/inner/lv2`);
//! * with several disks ([`open_disks`]), the volumes of disk N ≥ 2 start
//!   with `dN/` (`d2/p1`);
//! * a disk image stored as a file in a volume ([`Image::volume`] with a
//!   nested id) is `ID:/path/to/file.vhdx::` followed by an id in that
//!   image (`p2:/Profiles/alice.vhdx::p1`); `::` repeats for deeper nesting.
//!
//! # Errors
//! [`EngineError`] keeps the error of the layer that failed and says which
//! layer it was. A broken container or partition table of the image itself
//! is an error; anything wrong further in is reported on its volume
//! ([`Verdict::Error`], with the reason) and the rest stays usable.
#![deny(missing_docs)]

mod ade;
mod compare;
mod formats;
mod keyring;
mod nested;
mod scan;

pub use compare::{
    compare_blocks, open_pair, open_pair_paths, BlockStats, CompareFacts, CompareOptions,
    KnownChanges, Level, Method, Pair, Side,
};
pub use formats::{detect, formats, FORMATS};
pub use keyring::{ChainKey, DetachedHeader, KeyRing};
pub use nested::{FsFile, FsParentResolver};

pub use flr_layer::{
    human_size, ContainerInfo, EncryptionInfo, GroupReport, Kind, LayerKind, LuksSummary,
    PartitionInfo, TableInfo,
};

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use flr_fs::{Filesystem, FsError, FsInfo};
use flr_io::{FileParentResolver, FileSource, IoError, NoParentResolver, ParentResolver, Source};
use flr_layer::{Format, LayerError, OpenContext, Opened};
use serde::Serialize;

/// What flr can do with a volume, as the scan left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// A filesystem flr reads: its files can be listed and restored.
    Readable,
    /// Encrypted, and no key given (or none that opens it).
    Locked,
    /// Recognised, but flr does not read it.
    Unsupported,
    /// Damaged, truncated, or unreadable below.
    Error,
    /// Reads as zeros.
    Empty,
    /// Nothing recognised.
    Unknown,
    /// Holds other volumes (an LVM2 PV, a partition table): they are listed
    /// as volumes of their own.
    Container,
}

impl Verdict {
    /// The name, as JSON has it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Readable => "readable",
            Verdict::Locked => "locked",
            Verdict::Unsupported => "unsupported",
            Verdict::Error => "error",
            Verdict::Empty => "empty",
            Verdict::Unknown => "unknown",
            Verdict::Container => "container",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What was found on a volume.
#[derive(Debug, Clone, Serialize)]
pub struct ContentInfo {
    /// The kind of content: the format of the innermost layer.
    pub kind: Kind,
    /// Filesystem facts, when flr opened it.
    pub fs: Option<FsInfo>,
    /// LUKS header summary.
    pub luks: Option<LuksSummary>,
    /// The encryption layer under the content, when there is one: scheme,
    /// cipher, protectors, and how it was unlocked.
    pub encryption: Option<EncryptionInfo>,
    /// What flr can do with the volume.
    pub verdict: Verdict,
    /// One line for the operator.
    pub detail: String,
    /// The layers found on the volume's bytes, outermost first, when there
    /// is more than the content itself (`["luks", "lvm2"]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<&'static str>,
    /// A container (VHD, VHDX) found on the volume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerInfo>,
    /// A partition table found on the volume (its partitions are volumes
    /// `ID/p1`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_table: Option<TableInfo>,
    /// The filesystem's subvolumes and snapshots (Btrfs), each reachable as
    /// the volume `ID@/PATH` (`p2@/@/.snapshots/5/snapshot`; `ID@/` is the
    /// top level, showing them all as folders).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subvolumes: Vec<flr_fs::Subvolume>,
}

impl ContentInfo {
    fn new(kind: Kind, verdict: Verdict, detail: impl Into<String>) -> ContentInfo {
        ContentInfo {
            kind,
            fs: None,
            luks: None,
            encryption: None,
            verdict,
            detail: detail.into(),
            layers: Vec::new(),
            container: None,
            partition_table: None,
            subvolumes: Vec::new(),
        }
    }

    /// Whether an encryption layer is involved (unlocked or not).
    pub fn is_encrypted(&self) -> bool {
        self.encryption.is_some() || self.kind.is_encrypted()
    }
}

/// One volume: a partition, the whole disk, a logical volume…
#[derive(Clone)]
pub struct Volume {
    /// Stable id (`p1`, `disk`, `p3/rootvg/rootlv`).
    pub id: String,
    /// Byte offset in what it lies on (the disk for `pN`; 0 for an LV).
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// Partition facts (None for `disk` and logical volumes).
    pub partition: Option<PartitionInfo>,
    /// What is on it.
    pub content: ContentInfo,
    /// The volume it lies on (`p3` for `p3/p1`; the first PV's volume for
    /// an LV), if any.
    pub parent: Option<String>,
    source: Source,
    filesystem: Option<&'static dyn Format>,
    refused: bool,
    opener: Option<flr_layer::FsOpener>,
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
    /// The volume's bytes (decrypted, when it was unlocked).
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The volume's bytes, for reading it whole (`cat ID:`): refused when
    /// they are not the volume's (still encrypted) or cannot be given at
    /// all (an LV of a layout flr does not read, an array missing too many
    /// members).
    pub fn bytes(&self) -> Result<&Source, EngineError> {
        let locked = self.content.verdict == Verdict::Locked
            || (self.content.kind.is_encrypted() && self.content.encryption.is_none());
        if locked || self.refused {
            return Err(EngineError::NotReadable {
                volume: self.id.clone(),
                kind: self.content.kind.display,
                reason: self.content.detail.clone(),
            });
        }
        Ok(&self.source)
    }

    /// Opens the filesystem on this volume.
    pub fn open_fs(&self) -> Result<Box<dyn Filesystem>, EngineError> {
        if let Some(open) = &self.opener {
            return open().map_err(|source| EngineError::Filesystem {
                volume: self.id.clone(),
                source,
            });
        }
        let Some(format) = self.filesystem else {
            return Err(EngineError::NotReadable {
                volume: self.id.clone(),
                kind: self.content.kind.display,
                reason: self.content.detail.clone(),
            });
        };
        let ctx = OpenContext {
            id: &self.id,
            parents: &NoParentResolver,
            sector_size: None,
        };
        match format.open(self.source.clone(), &ctx) {
            Ok(Opened::Filesystem(fs)) => Ok(fs),
            Ok(_) => Err(EngineError::NotReadable {
                volume: self.id.clone(),
                kind: self.content.kind.display,
                reason: "not a filesystem".into(),
            }),
            Err(e) => Err(match e.into_inner().downcast::<FsError>() {
                Ok(fs) => EngineError::Filesystem {
                    volume: self.id.clone(),
                    source: *fs,
                },
                Err(other) => EngineError::Filesystem {
                    volume: self.id.clone(),
                    source: FsError::Corrupt {
                        fs: self.content.kind.name,
                        offset: None,
                        what: other.to_string(),
                    },
                },
            }),
        }
    }

    /// Whether the volume holds a filesystem flr reads.
    pub fn is_readable(&self) -> bool {
        (self.filesystem.is_some() || self.opener.is_some())
            && self.content.verdict == Verdict::Readable
    }

    /// The volume `{id}@{path}`: its filesystem rooted at the subvolume at
    /// `path` (`/`: the top level).
    fn subvolume(&self, path: &str) -> Result<Volume, EngineError> {
        // Checked now, so that a wrong path is an error of this lookup.
        match self.open_fs()?.open_subvolume(path) {
            None => {
                return Err(EngineError::NotReadable {
                    volume: self.id.clone(),
                    kind: self.content.kind.display,
                    reason: "this filesystem has no subvolumes".into(),
                })
            }
            Some(Err(source)) => {
                return Err(EngineError::Filesystem {
                    volume: self.id.clone(),
                    source,
                })
            }
            Some(Ok(_)) => {}
        }
        let base = self.clone();
        let p = path.to_string();
        let mut v = self.clone();
        v.id = format!("{}@{path}", self.id);
        v.parent = Some(self.id.clone());
        v.content.subvolumes = Vec::new();
        v.content.detail = format!("subvolume {path} of the filesystem on {}", self.id);
        v.opener = Some(Arc::new(move || {
            let fs = base.open_fs().map_err(|e| match e {
                EngineError::Filesystem { source, .. } => source,
                other => FsError::Unsupported {
                    path: p.clone(),
                    reason: other.to_string(),
                },
            })?;
            fs.open_subvolume(&p).unwrap_or_else(|| {
                Err(FsError::Unsupported {
                    path: p.clone(),
                    reason: "this filesystem has no subvolumes".into(),
                })
            })
        }));
        Ok(v)
    }
}

/// An assembled group (a volume group) and the verdict each of its
/// volumes ended in.
#[derive(Debug, Clone)]
pub struct Group {
    /// What the format reports.
    pub report: GroupReport,
    /// (volume id, verdict) of the group's volumes.
    pub states: Vec<(String, Verdict)>,
}

impl Group {
    /// The verdict of volume `id` of this group (`unknown` if absent).
    pub fn state(&self, id: &str) -> String {
        self.states
            .iter()
            .find(|(v, _)| v == id)
            .map_or("unknown", |(_, s)| s.as_str())
            .to_string()
    }
}

/// An opened image: its container, partition table and volumes.
pub struct Image {
    /// Where it came from.
    pub location: String,
    /// Container facts.
    pub container: ContainerInfo,
    /// Partition table facts.
    pub table: Option<TableInfo>,
    /// Volumes in disk order, then the volumes assembled from several nodes
    /// (LVM2 logical volumes `p3/vg/lv`) in the order they were found.
    pub volumes: Vec<Volume>,
    /// The groups (LVM2 volume groups) assembled on this image (and, with
    /// [`open_sources`], the images opened with it).
    pub groups: Vec<Group>,
    disk: Source,
    prefix: String,
    keys: KeyRing,
    scan: Scan,
    nested: Mutex<HashMap<String, Arc<Image>>>,
    /// The older image of a [`Pair`] this one is compared against: a disk
    /// image stored in one of its files is then compared against the same
    /// file's older version (see [`FsFile`]).
    base: Option<Arc<Image>>,
}

impl Image {
    /// The virtual disk's bytes.
    pub fn disk(&self) -> &Source {
        &self.disk
    }

    /// The image this one is compared against, when it is the newer of a
    /// [`Pair`].
    pub fn base(&self) -> Option<&Arc<Image>> {
        self.base.as_ref()
    }

    /// Makes this image the newer of a pair with `old`: layers whose maps
    /// are data (LV segments, thin mappings) compare theirs with their
    /// older selves, volume by volume (same id; see
    /// [`ReadAt::set_base`](flr_io::ReadAt::set_base)), and images stored
    /// in its files with their older versions.
    pub(crate) fn set_base(&mut self, old: Arc<Image>) {
        for v in &self.volumes {
            if let Some(o) = old.volumes.iter().find(|o| o.id == v.id) {
                v.source().set_base(o.source().as_ref());
            }
        }
        self.base = Some(old);
    }

    /// The reports of the groups whose JSON section is `section`
    /// (`volume_groups`).
    pub fn groups_in(&self, section: &str) -> impl Iterator<Item = &Group> + '_ {
        let section = section.to_string();
        self.groups
            .iter()
            .filter(move |g| g.report.section == section)
    }

    /// Finds a volume by id. An id with `::` names a volume of a disk
    /// image stored as a file (`p2:/images/data.vhdx::p1`): that image is
    /// opened (once, then kept) and scanned with the same keys.
    pub fn volume(&self, id: &str) -> Result<Volume, EngineError> {
        if let Some(v) = self.volumes.iter().find(|v| v.id == id) {
            return Ok(v.clone());
        }
        if let Some(n) = nested::NestedId::parse(id, &self.prefix) {
            let outer = self.volume(&n.outer)?;
            return self.nested_image(&outer, n.path)?.volume(id);
        }
        // `ID@/PATH`: a subvolume of the filesystem on volume ID.
        if let Some((base, path)) = id
            .strip_prefix(&self.prefix)
            .filter(|rel| !rel.contains("::"))
            .and_then(|_| id.split_once("@/"))
        {
            if let Some(v) = self.volumes.iter().find(|v| v.id == base) {
                return v.subvolume(&format!("/{path}"));
            }
        }
        Err(EngineError::NoSuchVolume {
            id: id.to_string(),
            available: self
                .volumes
                .iter()
                .map(|v| v.id.clone())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Opens the disk image stored in the file at `path` (as given, `/` separated)
    /// on volume `vol`, and scans it with the same keys: a VHD, VHDX or raw
    /// image read through the filesystem's own file handles, never copied
    /// out. Its volumes have ids `{vol}:{path}::{id}`. A differencing
    /// image's parents are looked for beside it in the same filesystem.
    pub fn nested_image(&self, vol: &Volume, path: &str) -> Result<Arc<Image>, EngineError> {
        let key = format!("{}:{path}", vol.id);
        if let Some(img) = self
            .nested
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(img.clone());
        }
        let img = Arc::new(nested::open(self, vol, path)?);
        self.nested
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, img.clone());
        Ok(img)
    }

    /// Whether the image holds anything flr recognises: a container, a
    /// partition table, or a volume that is not unknown or empty (what
    /// makes a file worth showing as a disk image).
    pub fn recognised(&self) -> bool {
        self.container.format != "raw"
            || self.table.is_some()
            || self
                .volumes
                .iter()
                .any(|v| !matches!(v.content.verdict, Verdict::Unknown | Verdict::Empty))
    }
}

/// An error while opening or stacking layers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The image file could not be read.
    #[error("{0}")]
    Io(#[from] IoError),
    /// The image's container or partition table is broken (the message
    /// names the layer and offset).
    #[error("{error}")]
    Layer {
        /// The format that failed (`vhd`, `partition-table`).
        format: &'static str,
        /// Its error.
        #[source]
        error: LayerError,
    },
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
    /// A file that was to be opened as a disk image is not one.
    #[error("{volume}:{path}: {reason}")]
    NotAnImage {
        /// The volume holding the file.
        volume: String,
        /// The file's path.
        path: String,
        /// Why.
        reason: String,
    },
}

impl EngineError {
    /// Whether the failure is a format flr does not read (rather than
    /// broken data).
    pub fn is_unsupported(&self) -> bool {
        match self {
            EngineError::Layer { error, .. } => error.is_unsupported(),
            EngineError::Io(IoError::Unsupported { .. }) | EngineError::NotReadable { .. } => true,
            _ => false,
        }
    }
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

/// Scans an already opened source: the container, the partition table,
/// each volume's content, and every layer found inside, recursively.
pub fn open_source(
    file: Source,
    location: &str,
    parents: &dyn ParentResolver,
    scan: Scan,
    keys: &KeyRing,
) -> Result<Image, EngineError> {
    let roots = vec![scan::RootSpec {
        source: file,
        location: location.to_string(),
        prefix: String::new(),
        parents,
    }];
    let mut images = scan::scan(roots, scan, keys)?;
    Ok(images.remove(0))
}

/// Opens several images together (a VM's OS disk and its data disks), so
/// that volume groups spanning them are assembled. Each image keeps its
/// own volume ids; a group's volumes go to the image that holds its first
/// member. The same key ring serves every image.
pub fn open_sources(
    sources: Vec<(Source, String)>,
    parents: &dyn ParentResolver,
    scan: Scan,
    keys: &KeyRing,
) -> Result<Vec<Image>, EngineError> {
    let roots = sources
        .into_iter()
        .map(|(source, location)| scan::RootSpec {
            source,
            location,
            prefix: String::new(),
            parents,
        })
        .collect();
    scan::scan(roots, scan, keys)
}

/// Opens several local image files together; see [`open_sources`].
pub fn open_paths(paths: &[&Path], scan: Scan, keys: &KeyRing) -> Result<Vec<Image>, EngineError> {
    let mut files = Vec::with_capacity(paths.len());
    let mut resolvers = Vec::with_capacity(paths.len());
    for path in paths {
        files.push(Arc::new(FileSource::open(path)?) as Source);
        resolvers.push(FileParentResolver::new(path));
    }
    let roots = files
        .into_iter()
        .zip(&resolvers)
        .zip(paths)
        .map(|((source, parents), path)| scan::RootSpec {
            source,
            location: path.display().to_string(),
            prefix: String::new(),
            parents,
        })
        .collect();
    scan::scan(roots, scan, keys)
}

/// Opens a VM's disks as one image, for the command line: the first disk's
/// volumes keep their ids, the volumes of disk N (N ≥ 2) are named
/// `dN/<id>` (`d2/p1`), and the volume groups spanning the disks are
/// assembled (`p3/rootvg/rootlv`, or `d2/p1/datavg/data` when the VG's first
/// PV is on disk 2). Container and partition-table facts are the first
/// disk's; `location` lists every disk.
pub fn open_disks(
    sources: Vec<(Source, String)>,
    parents: &dyn ParentResolver,
    scan: Scan,
    keys: &KeyRing,
) -> Result<Image, EngineError> {
    if sources.is_empty() {
        return Err(EngineError::NoSuchVolume {
            id: String::new(),
            available: "no disk given".into(),
        });
    }
    let roots = sources
        .into_iter()
        .enumerate()
        .map(|(k, (source, location))| scan::RootSpec {
            source,
            location,
            prefix: if k == 0 {
                String::new()
            } else {
                format!("d{}/", k + 1)
            },
            parents,
        })
        .collect();
    let images = scan::scan(roots, scan, keys)?;
    let mut it = images.into_iter();
    let mut first = it.next().ok_or_else(|| EngineError::NoSuchVolume {
        id: String::new(),
        available: "no disk given".into(),
    })?;
    for img in it {
        first.location = format!("{} + {}", first.location, img.location);
        first.volumes.extend(img.volumes);
        first.groups.extend(img.groups);
    }
    Ok(first)
}
