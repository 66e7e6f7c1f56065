//! Linux software RAID (md) for flr, read-only: finds md members on any
//! volume, assembles them into arrays by array UUID (across disks), and
//! gives each array whose bytes it can return as a [`flr_io::ReadAt`].
//!
//! * **Superblocks**: 0.90 (at the end of the member, either byte order),
//!   1.0 (at the end), 1.1 (at the start) and 1.2 (4 KiB in), each
//!   checksummed. [`probe`] tells cheaply whether a volume is a member;
//!   [`Member::read`] reads what its superblock says.
//! * **Assembly** ([`assemble`]): members are grouped by array UUID; the
//!   superblock with the highest events count describes the array, members
//!   with a lower count are stale and left out ([`Array::stale`]), a role
//!   claimed twice is reported ([`Array::duplicates`]). [`Array::complete`]
//!   tells whether every role is present, so a caller can wait for the
//!   members on other disks.
//! * **Levels**: linear, RAID0 (unequal members in zones, both multi-zone
//!   layouts), RAID1, RAID4, RAID5 (left/right symmetric/asymmetric,
//!   parity first/last), RAID6 (those and the DDF rotating layouts and the
//!   RAID5-with-Q-last ones), RAID10 (near, far and offset copies, any
//!   count). Reads go straight to the members' data, one positioned read
//!   per contiguous run; RAID4/5/6 never read parity while the data
//!   member is there.
//! * **Degraded arrays** read by reconstruction: one member missing for
//!   RAID4/5 (XOR of the rest of the stripe), two for RAID6 (P and Q
//!   syndromes in GF(2^8)), and RAID1/RAID10 while a copy of every chunk
//!   survives. An array missing more than its level survives is
//!   [`ArrayStatus::Failed`], naming the roles absent, and refuses to open.
//! * **Unsupported**, named and never misread ([`Unsupported`]): a reshape
//!   in progress, a write journal, a partial parity log, external metadata
//!   (IMSM and DDF containers), multipath and faulty levels, an unrecorded
//!   multi-zone RAID0 layout. A write-intent bitmap is ignored (it only
//!   says what may need resyncing).
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! # fn member(role: u16, fill: u8) -> Vec<u8> { flr_md::doc_member(role, fill) }
//! // Two members of a RAID1 (here built in memory; normally partitions).
//! let a: flr_io::Source = Arc::new(flr_io::MemSource::new(member(0, 0xaa)));
//! let b: flr_io::Source = Arc::new(flr_io::MemSource::new(member(1, 0xaa)));
//! let mut head = vec![0u8; 8192];
//! a.read_exact_at(0, &mut head)?;
//! assert!(flr_md::probe(&head, a.as_ref()));
//! let members = vec![
//!     flr_md::Member::read(a, "p1")?,
//!     flr_md::Member::read(b, "d2/p1")?,
//! ];
//! let arrays = flr_md::assemble(&members);
//! let array = &arrays[0];
//! assert!(array.complete());
//! assert_eq!(array.level, flr_md::Level::Raid1);
//! let dev = array.open()?;
//! let mut buf = [0u8; 4];
//! dev.read_exact_at(0, &mut buf)?;
//! assert_eq!(buf, [0xaa; 4]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Errors
//! [`MdError`]: the layer below failed ([`MdError::Io`]); a superblock is
//! corrupt (bad checksum, absurd chunk size, member count or offsets),
//! named with its byte offset in the member ([`MdError::Corrupt`]); the
//! volume is not a member ([`MdError::NotMember`]); the metadata is of a
//! kind flr does not read ([`MdError::Unsupported`]); or an array cannot
//! be read, with the reason ([`MdError::NotReadable`]). Reads of an opened
//! array fail with an [`flr_io::IoError`] naming the array's layer and the
//! byte offset.
#![deny(missing_docs)]

mod layer;
pub use layer::{MdFormat, ARRAY_KIND, FORMAT};
mod format;
mod layout;
mod read;

use std::collections::BTreeMap;
use std::sync::Arc;

use flr_io::{IoError, ReadAt, Source};

use format::Super;
use layout::{Geometry, Parity, Raid10};

/// An error from the md layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MdError {
    /// The layer below failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// No md superblock (nor external RAID metadata) on the volume.
    #[error("not an md RAID member (no superblock)")]
    NotMember,
    /// A structure is corrupt.
    #[error("{what}: corrupt at byte offset {offset:#x}: {detail}")]
    Corrupt {
        /// Which structure (`md superblock`).
        what: &'static str,
        /// Byte offset in the member.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// The volume carries RAID metadata flr does not read.
    #[error("md: unsupported metadata at byte offset {offset:#x}: {what}")]
    Unsupported {
        /// Byte offset of the metadata in the volume.
        offset: u64,
        /// What it is.
        what: Unsupported,
    },
    /// The array cannot be read.
    #[error("md array {array}: {reason}")]
    NotReadable {
        /// The array's name (or UUID).
        array: String,
        /// Why.
        reason: String,
    },
}

/// Something flr recognises but does not read, so that it is named
/// rather than misread.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unsupported {
    /// A reshape (level, layout, chunk or member-count change) in progress.
    Reshape,
    /// A write journal (RAID4/5/6 with `--write-journal`).
    Journal,
    /// A partial parity log (RAID5 `--consistency-policy=ppl`).
    Ppl,
    /// External metadata managed in a container (Intel IMSM, SNIA DDF).
    ExternalMetadata(&'static str),
    /// A level flr does not read (multipath −4, faulty −5, …).
    Level(i32),
    /// A layout the level does not define.
    Layout {
        /// The level.
        level: Level,
        /// The raw layout word.
        layout: u32,
    },
    /// A RAID0 of unequal members whose superblock does not record which
    /// of the two multi-zone layouts wrote it (Linux before 3.14 and 3.14
    /// to 5.3 differ).
    Raid0LayoutUnrecorded,
    /// Feature bits the kernel does not define.
    Features(u32),
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsupported::Reshape => write!(f, "a reshape is in progress"),
            Unsupported::Journal => write!(f, "the array has a write journal"),
            Unsupported::Ppl => write!(f, "the array keeps a partial parity log (PPL)"),
            Unsupported::ExternalMetadata(k) => {
                write!(f, "{k} external metadata (a container managed by mdmon)")
            }
            Unsupported::Level(l) => write!(f, "RAID level {l} is not supported"),
            Unsupported::Layout { level, layout } => {
                write!(f, "layout {layout:#x} is not defined for {level}")
            }
            Unsupported::Raid0LayoutUnrecorded => write!(
                f,
                "a RAID0 of unequal members without a recorded layout: kernels before 3.14 and 3.14 to 5.3 place its later zones differently"
            ),
            Unsupported::Features(b) => write!(f, "unknown feature bits {b:#x}"),
        }
    }
}

/// The superblock format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metadata {
    /// 0.90, at the end of the member, in the creating host's byte order.
    V090 {
        /// Written by a big-endian host.
        big_endian: bool,
    },
    /// 1.0 (end), 1.1 (start) or 1.2 (4 KiB in).
    V1 {
        /// 0, 1 or 2.
        minor: u8,
    },
}

impl std::fmt::Display for Metadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Metadata::V090 { big_endian: false } => write!(f, "0.90"),
            Metadata::V090 { big_endian: true } => write!(f, "0.90 (big-endian)"),
            Metadata::V1 { minor } => write!(f, "1.{minor}"),
        }
    }
}

/// The RAID level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Concatenation.
    Linear,
    /// Striping.
    Raid0,
    /// Mirroring.
    Raid1,
    /// Striping with a dedicated parity member.
    Raid4,
    /// Striping with rotating parity.
    Raid5,
    /// Striping with two rotating syndromes.
    Raid6,
    /// Striped copies.
    Raid10,
    /// Another level number (multipath −4, faulty −5, container …).
    Other(i32),
}

impl Level {
    /// Levels that stripe in chunks (and so need a chunk size).
    fn striped(self) -> bool {
        matches!(
            self,
            Level::Raid0 | Level::Raid4 | Level::Raid5 | Level::Raid6 | Level::Raid10
        )
    }
    /// Levels whose per-member size is the superblock's `size` field
    /// (linear and RAID0 use each member's whole data area).
    fn uses_size(self) -> bool {
        matches!(
            self,
            Level::Raid1 | Level::Raid4 | Level::Raid5 | Level::Raid6 | Level::Raid10
        )
    }
    /// How many members the level can lose (RAID10: at least).
    pub fn survives(self, disks: u32, near_far_copies: u32) -> u32 {
        match self {
            Level::Raid1 => disks.saturating_sub(1),
            Level::Raid4 | Level::Raid5 => 1,
            Level::Raid6 => 2,
            Level::Raid10 => near_far_copies.saturating_sub(1),
            _ => 0,
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Level::Linear => write!(f, "linear"),
            Level::Raid0 => write!(f, "raid0"),
            Level::Raid1 => write!(f, "raid1"),
            Level::Raid4 => write!(f, "raid4"),
            Level::Raid5 => write!(f, "raid5"),
            Level::Raid6 => write!(f, "raid6"),
            Level::Raid10 => write!(f, "raid10"),
            Level::Other(-4) => write!(f, "multipath"),
            Level::Other(-5) => write!(f, "faulty"),
            Level::Other(v) => write!(f, "level {v}"),
        }
    }
}

/// A member's role in its array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Active in position `n` (0-based).
    Active(u32),
    /// A spare (holds nothing of the array).
    Spare,
    /// Marked faulty.
    Faulty,
    /// The array's write journal.
    Journal,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Active(n) => write!(f, "{n}"),
            Role::Spare => write!(f, "spare"),
            Role::Faulty => write!(f, "faulty"),
            Role::Journal => write!(f, "journal"),
        }
    }
}

/// RAID0's placement of the zones after the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raid0Layout {
    /// All members the same size (one zone): no layout needed.
    SingleZone,
    /// Layout 1, "original": the member is picked from the array chunk.
    Original,
    /// Layout 2, "alternate": the member is picked from the zone chunk.
    Alternate,
    /// Several zones and no recorded layout: ambiguous, not read.
    Unrecorded,
}

impl std::fmt::Display for Raid0Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Raid0Layout::SingleZone => "single zone",
            Raid0Layout::Original => "original",
            Raid0Layout::Alternate => "alternate",
            Raid0Layout::Unrecorded => "unrecorded",
        })
    }
}

/// RAID4/5/6 parity placement (the kernel's algorithm numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ParityLayout {
    LeftAsymmetric,
    RightAsymmetric,
    LeftSymmetric,
    RightSymmetric,
    /// Parity on the first member(s).
    ParityFirst,
    /// Parity on the last member(s) (RAID4's placement).
    ParityLast,
    /// RAID6 DDF layouts.
    RotatingZeroRestart,
    RotatingNRestart,
    RotatingNContinue,
    /// RAID6 as a RAID5 layout with Q on the last member.
    LeftAsymmetric6,
    RightAsymmetric6,
    LeftSymmetric6,
    RightSymmetric6,
    ParityFirst6,
}

impl ParityLayout {
    fn from_raw(v: u32, level: Level) -> Option<ParityLayout> {
        use ParityLayout::*;
        let l = match v {
            0 => LeftAsymmetric,
            1 => RightAsymmetric,
            2 => LeftSymmetric,
            3 => RightSymmetric,
            4 => ParityFirst,
            5 => ParityLast,
            8 => RotatingZeroRestart,
            9 => RotatingNRestart,
            10 => RotatingNContinue,
            16 => LeftAsymmetric6,
            17 => RightAsymmetric6,
            18 => LeftSymmetric6,
            19 => RightSymmetric6,
            20 => ParityFirst6,
            _ => return None,
        };
        (level == Level::Raid6 || v <= 5).then_some(l)
    }
}

impl std::fmt::Display for ParityLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use ParityLayout::*;
        f.write_str(match self {
            LeftAsymmetric => "left-asymmetric",
            RightAsymmetric => "right-asymmetric",
            LeftSymmetric => "left-symmetric",
            RightSymmetric => "right-symmetric",
            ParityFirst => "parity-first",
            ParityLast => "parity-last",
            RotatingZeroRestart => "ddf-zero-restart",
            RotatingNRestart => "ddf-N-restart",
            RotatingNContinue => "ddf-N-continue",
            LeftAsymmetric6 => "left-asymmetric-6",
            RightAsymmetric6 => "right-asymmetric-6",
            LeftSymmetric6 => "left-symmetric-6",
            RightSymmetric6 => "right-symmetric-6",
            ParityFirst6 => "parity-first-6",
        })
    }
}

/// An array's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Linear and RAID1 have none.
    None,
    /// RAID0's multi-zone placement.
    Raid0(Raid0Layout),
    /// RAID4/5/6 parity placement.
    Parity(ParityLayout),
    /// RAID10 copies.
    Raid10 {
        /// Copies on consecutive members.
        near: u32,
        /// Copies in far regions (or offset rows).
        far: u32,
        /// Far copies in the next rows rather than far regions.
        offset: bool,
        /// The far-set layout version (0: the whole array is one set).
        far_sets: u32,
    },
    /// A layout word the level does not define.
    Unknown(u32),
}

/// An md array UUID (printed as mdadm does: four groups of eight hex digits).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArrayUuid(pub [u8; 16]);

impl std::fmt::Display for ArrayUuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 && i % 4 == 0 {
                write!(f, ":")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for ArrayUuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// Whether a volume is an md member: `head` is its first bytes (8 KiB is
/// enough for 1.1 and 1.2; the engine passes its usual 64 KiB), `src` the
/// volume, read near its end for 0.90 and 1.0 (two small reads). Checksums
/// are checked, so a stray magic number is not a member. Volumes with
/// Intel IMSM or SNIA DDF metadata answer true too: [`Member::read`] then
/// names them as unsupported.
pub fn probe(head: &[u8], src: &dyn ReadAt) -> bool {
    if head.get(4096..).is_some_and(format::quick_v1) || format::quick_v1(head) {
        return true;
    }
    let len = src.len();
    let mut b = vec![0u8; 4096];
    if let Some(at) = format::sb10_offset(len) {
        let n = 4096.min(len - at) as usize;
        if src.read_exact_at(at, &mut b[..n]).is_ok() && format::quick_v1(&b[..n]) {
            return true;
        }
    }
    if let Some(at) = format::sb090_offset(len) {
        if src.read_exact_at(at, &mut b).is_ok() && format::quick_v090(&b) {
            return true;
        }
    }
    format::external_metadata(src).is_some()
}

/// A member of an md array, found on some volume (a partition, a whole
/// disk, a LUKS volume, an LV, an array).
#[derive(Clone)]
pub struct Member {
    /// Where it was found (the engine's volume id, e.g. `p1`, `d2/p1`).
    pub location: String,
    /// The superblock format.
    pub metadata: Metadata,
    /// The array's UUID.
    pub uuid: ArrayUuid,
    /// The array's name (1.x, e.g. `host:data`; empty for 0.90).
    pub name: String,
    /// The array's level.
    pub level: Level,
    /// The raw layout word.
    pub layout: u32,
    /// Chunk size in bytes (0 where the level has none).
    pub chunk: u64,
    /// Members the array has.
    pub raid_disks: u32,
    /// This member's role.
    pub role: Role,
    /// The events counter (bumped at every superblock update).
    pub events: u64,
    /// Where the array's data starts in this member.
    pub data_offset: u64,
    /// Bytes of data space in this member.
    pub data_size: u64,
    /// Where the superblock lies in this member.
    pub super_offset: u64,
    /// The 1.x feature bits (0 for 0.90).
    pub feature_map: u32,
    /// The member's own UUID (1.x).
    pub device_uuid: Option<[u8; 16]>,
    sb: Super,
    source: Source,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("location", &self.location)
            .field("metadata", &self.metadata)
            .field("uuid", &self.uuid)
            .field("level", &self.level)
            .field("role", &self.role)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl Member {
    /// Reads the member's superblock (1.2, 1.1, 1.0, then 0.90).
    pub fn read(source: Source, location: &str) -> Result<Member, MdError> {
        let sb = format::read_super(source.as_ref())?;
        Ok(Member {
            location: location.to_string(),
            metadata: sb.metadata,
            uuid: ArrayUuid(sb.uuid),
            name: sb.name.clone(),
            level: sb.level,
            layout: sb.layout,
            chunk: sb.chunk,
            raid_disks: sb.raid_disks,
            role: sb.role(),
            events: sb.events,
            data_offset: sb.data_offset,
            data_size: sb.data_size,
            super_offset: sb.offset,
            feature_map: sb.feature_map,
            device_uuid: sb.device_uuid,
            sb,
            source,
        })
    }
}

/// A member in its array's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRef {
    /// Where it was found.
    pub location: String,
    /// Its events counter.
    pub events: u64,
    /// Where the array's data starts in it.
    pub data_offset: u64,
}

/// A role of the array and the member that fills it, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The role (0-based).
    pub role: u32,
    /// The member found for it; `None` when missing.
    pub member: Option<MemberRef>,
}

/// A member left out of its array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    /// Where it was found.
    pub location: String,
    /// The role it claims.
    pub role: Role,
    /// Its events counter.
    pub events: u64,
    /// Why it is left out.
    pub reason: String,
}

/// Two members claiming the same role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The role.
    pub role: u32,
    /// The member used.
    pub kept: String,
    /// The member ignored.
    pub ignored: String,
}

/// Whether (and how) an array can be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArrayStatus {
    /// Every role present.
    Clean,
    /// Roles missing, the level survives it: reads reconstruct.
    Degraded {
        /// The missing roles.
        missing: Vec<u32>,
    },
    /// More roles missing than the level survives: nothing is read.
    Failed {
        /// The missing roles.
        missing: Vec<u32>,
    },
    /// A layout or state flr does not read.
    Unsupported(Unsupported),
    /// The superblocks or members are inconsistent.
    Corrupt(String),
}

/// An assembled md array.
#[derive(Debug, Clone)]
pub struct Array {
    /// Its UUID.
    pub uuid: ArrayUuid,
    /// Its name (1.x; empty for 0.90).
    pub name: String,
    /// Superblock format of the newest member.
    pub metadata: Metadata,
    /// Its level.
    pub level: Level,
    /// Its layout.
    pub layout: Layout,
    /// Chunk size in bytes (0 where the level has none).
    pub chunk: u64,
    /// Members the array has.
    pub raid_disks: u32,
    /// Its size in bytes (`None` when a missing member's size is needed
    /// to know it: linear and RAID0).
    pub size: Option<u64>,
    /// The newest events count.
    pub events: u64,
    /// False when the array was not shut down cleanly (a resync pending:
    /// parity may lag the data of the last writes).
    pub clean: bool,
    /// Every role in order, with the member found for it.
    pub members: Vec<Slot>,
    /// Members left out: stale (lower events count), recovering,
    /// inconsistent with the newest superblock.
    pub stale: Vec<LeftOut>,
    /// Spares and members marked faulty (hold nothing to read).
    pub spares: Vec<LeftOut>,
    /// Roles claimed twice.
    pub duplicates: Vec<Duplicate>,
    /// Whether it can be read.
    pub status: ArrayStatus,
    legs: Vec<Option<read::Leg>>,
    geometry: Option<Geometry>,
}

impl Array {
    /// Whether every role has its member (an engine may wait for more
    /// disks while this is false).
    pub fn complete(&self) -> bool {
        self.members.iter().all(|s| s.member.is_some())
    }

    /// The roles with no member.
    pub fn missing(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter(|s| s.member.is_none())
            .map(|s| s.role)
            .collect()
    }

    /// Whether [`Array::open`] will succeed.
    pub fn readable(&self) -> bool {
        matches!(
            self.status,
            ArrayStatus::Clean | ArrayStatus::Degraded { .. }
        )
    }

    /// A name for messages: the array's name, else its UUID.
    pub fn label(&self) -> String {
        if self.name.is_empty() {
            self.uuid.to_string()
        } else {
            self.name.clone()
        }
    }

    /// The location of the member in the lowest role present (a stable
    /// prefix for the array's volume id).
    pub fn first_location(&self) -> Option<&str> {
        self.members
            .iter()
            .find_map(|s| s.member.as_ref().map(|m| m.location.as_str()))
    }

    /// Opens the array for reading.
    pub fn open(&self) -> Result<Source, MdError> {
        let refuse = |reason: String| MdError::NotReadable {
            array: self.label(),
            reason,
        };
        match &self.status {
            ArrayStatus::Clean | ArrayStatus::Degraded { .. } => {}
            ArrayStatus::Failed { missing } => {
                return Err(refuse(format!(
                    "{} of {} members missing (roles {}); {} survives {}",
                    missing.len(),
                    self.raid_disks,
                    list(missing),
                    self.level,
                    match self.layout {
                        Layout::Raid10 { near, far, .. } => format!(
                            "only while a copy of every chunk is there ({} copies)",
                            near * far
                        ),
                        _ => self.level.survives(self.raid_disks, 0).to_string(),
                    }
                )))
            }
            ArrayStatus::Unsupported(u) => return Err(refuse(u.to_string())),
            ArrayStatus::Corrupt(c) => return Err(refuse(c.clone())),
        }
        let (Some(geometry), Some(size)) = (&self.geometry, self.size) else {
            return Err(refuse("no geometry".into()));
        };
        Ok(Arc::new(read::ArraySource {
            layer: format!("md {}", self.label()),
            size,
            geometry: geometry.clone(),
            legs: self.legs.clone(),
        }))
    }
}

fn list(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

/// Groups members into arrays by array UUID, each described by the
/// superblock with the highest events count. Arrays are listed in the
/// order their first member appears.
pub fn assemble(members: &[Member]) -> Vec<Array> {
    let mut order: Vec<ArrayUuid> = Vec::new();
    let mut groups: BTreeMap<ArrayUuid, Vec<&Member>> = BTreeMap::new();
    for m in members {
        if !groups.contains_key(&m.uuid) {
            order.push(m.uuid);
        }
        groups.entry(m.uuid).or_default().push(m);
    }
    order
        .iter()
        .filter_map(|u| groups.get(u).map(|g| build_array(g)))
        .collect()
}

fn same_geometry(a: &Super, b: &Super) -> bool {
    a.level == b.level
        && a.layout == b.layout
        && a.chunk == b.chunk
        && a.raid_disks == b.raid_disks
        && a.size == b.size
        && (a.feature_map & format::feature::RAID0_LAYOUT)
            == (b.feature_map & format::feature::RAID0_LAYOUT)
}

fn build_array(group: &[&Member]) -> Array {
    let newest = group.iter().map(|m| m.events).max().unwrap_or(0);
    // OK: the group is never empty and one member carries the maximum.
    let auth = group
        .iter()
        .find(|m| m.events == newest)
        .expect("a member carries the highest events count");
    let sb = &auth.sb;
    let disks = sb.raid_disks as usize;
    let mut slots: Vec<Option<&Member>> = vec![None; disks];
    let mut stale = Vec::new();
    let mut spares = Vec::new();
    let mut duplicates = Vec::new();
    for m in group {
        let left_out = |reason: String| LeftOut {
            location: m.location.clone(),
            role: m.role,
            events: m.events,
            reason,
        };
        if m.events < newest {
            stale.push(left_out(format!(
                "stale: events {} < {newest} on {}",
                m.events, auth.location
            )));
            continue;
        }
        if !same_geometry(&m.sb, sb) {
            stale.push(left_out(format!(
                "its superblock disagrees with the one on {} (level, layout, chunk, size or member count)",
                auth.location
            )));
            continue;
        }
        // The newest table decides the role of each device number.
        let role = match (m.sb.metadata, sb.metadata) {
            (Metadata::V1 { .. }, Metadata::V1 { .. }) => usize::try_from(m.sb.dev_number)
                .ok()
                .and_then(|i| sb.roles.get(i).copied())
                .unwrap_or(m.role),
            _ => m.role,
        };
        match role {
            Role::Active(r) if (r as usize) < disks => {
                if m.sb.recovery_offset < m.sb.data_size
                    || m.sb.feature_map & format::feature::REPLACEMENT != 0
                {
                    stale.push(left_out(format!(
                        "recovering (valid only up to byte {:#x} of its data)",
                        m.sb.recovery_offset
                    )));
                    continue;
                }
                let slot = &mut slots[r as usize];
                match slot {
                    Some(kept) => duplicates.push(Duplicate {
                        role: r,
                        kept: kept.location.clone(),
                        ignored: m.location.clone(),
                    }),
                    None => *slot = Some(m),
                }
            }
            Role::Active(r) => stale.push(left_out(format!(
                "role {r} is beyond the array's {disks} members"
            ))),
            other => spares.push(left_out(format!("{other}"))),
        }
    }
    let members: Vec<Slot> = slots
        .iter()
        .enumerate()
        .map(|(r, m)| Slot {
            role: r as u32,
            member: m.map(|m| MemberRef {
                location: m.location.clone(),
                events: m.events,
                data_offset: m.data_offset,
            }),
        })
        .collect();
    let legs: Vec<Option<read::Leg>> = slots
        .iter()
        .map(|m| {
            m.map(|m| read::Leg {
                src: read::Src(m.source.clone()),
                base: m.sb.data_offset,
                len: m.sb.data_size,
                location: m.location.clone(),
            })
        })
        .collect();
    let missing: Vec<u32> = members
        .iter()
        .filter(|s| s.member.is_none())
        .map(|s| s.role)
        .collect();
    let (layout, built) = geometry(sb, &slots);
    let (geometry, size, mut status) = match built {
        Ok((g, size)) => (Some(g), Some(size), ArrayStatus::Clean),
        Err((size, st)) => (None, size, st),
    };
    if status == ArrayStatus::Clean && !missing.is_empty() {
        status = match geometry.as_ref().map(|g| survives(g, &legs)) {
            Some(true) => ArrayStatus::Degraded {
                missing: missing.clone(),
            },
            _ => ArrayStatus::Failed {
                missing: missing.clone(),
            },
        };
    }
    Array {
        uuid: auth.uuid,
        name: sb.name.clone(),
        metadata: sb.metadata,
        level: sb.level,
        layout,
        chunk: sb.chunk,
        raid_disks: sb.raid_disks,
        size,
        events: newest,
        clean: sb.clean,
        members,
        stale,
        spares,
        duplicates,
        status,
        legs,
        geometry,
    }
}

/// Whether the members present hold every byte.
fn survives(g: &Geometry, legs: &[Option<read::Leg>]) -> bool {
    let absent = legs.iter().filter(|l| l.is_none()).count();
    match g {
        Geometry::Linear { .. } | Geometry::Raid0 { .. } => absent == 0,
        Geometry::Raid1 { .. } => absent < legs.len(),
        Geometry::Parity(p) => absent <= p.disks - p.data_disks(),
        Geometry::Raid10(r) => {
            // The copies of chunk c depend only on c·near mod disks, so
            // the first `disks` chunks show every pattern.
            let mut v = Vec::new();
            (0..r.disks as u64).all(|c| {
                r.copies(c, 0, &mut v);
                v.iter()
                    .any(|&(d, _)| legs.get(d).is_some_and(Option::is_some))
            })
        }
    }
}

type Built = Result<(Geometry, u64), (Option<u64>, ArrayStatus)>;

/// The array's layout and geometry from the newest superblock and the
/// members found for each role.
fn geometry(sb: &Super, slots: &[Option<&Member>]) -> (Layout, Built) {
    let disks = slots.len();
    let unsupported = |u: Unsupported| Err((None, ArrayStatus::Unsupported(u)));
    let bad_layout = |level| {
        (
            Layout::Unknown(sb.layout),
            unsupported(Unsupported::Layout {
                level,
                layout: sb.layout,
            }),
        )
    };
    if let Some(u) = sb.unsupported() {
        return (Layout::Unknown(sb.layout), unsupported(u));
    }
    let chunk = sb.chunk;
    // Whole chunks of a member's data area (linear rounds only with a chunk).
    let whole = |m: &Member| match chunk {
        0 => m.sb.data_size,
        c => m.sb.data_size / c * c,
    };
    let failed_missing = |size| {
        let missing = (0..disks as u32)
            .filter(|&r| slots[r as usize].is_none())
            .collect();
        Err((size, ArrayStatus::Failed { missing }))
    };
    match sb.level {
        Level::Linear => {
            if slots.iter().any(Option::is_none) {
                return (Layout::None, failed_missing(None));
            }
            let mut ends = Vec::with_capacity(disks);
            let mut at = 0u64;
            for m in slots.iter().flatten() {
                at = at.saturating_add(whole(m));
                ends.push(at);
            }
            (Layout::None, Ok((Geometry::Linear { ends }, at)))
        }
        Level::Raid0 => {
            let recorded = layout::raid0_layout(
                sb.layout,
                sb.feature_map & format::feature::RAID0_LAYOUT != 0,
            );
            if slots.iter().any(Option::is_none) {
                return (Layout::Raid0(recorded), failed_missing(None));
            }
            let sizes: Vec<u64> = slots.iter().flatten().map(|m| whole(m)).collect();
            let zones = layout::raid0_zones(&sizes);
            let size = zones.last().map_or(0, |z| z.end);
            let l = if zones.len() <= 1 {
                Raid0Layout::SingleZone
            } else {
                recorded
            };
            if l == Raid0Layout::Unrecorded {
                return (
                    Layout::Raid0(l),
                    Err((
                        Some(size),
                        ArrayStatus::Unsupported(Unsupported::Raid0LayoutUnrecorded),
                    )),
                );
            }
            (
                Layout::Raid0(l),
                Ok((
                    Geometry::Raid0 {
                        chunk,
                        zones,
                        alternate: l == Raid0Layout::Alternate,
                    },
                    size,
                )),
            )
        }
        Level::Raid1 => (Layout::None, Ok((Geometry::Raid1 { disks }, sb.size))),
        Level::Raid4 | Level::Raid5 | Level::Raid6 => {
            let (level, min) = match sb.level {
                Level::Raid4 => (4, 2),
                Level::Raid5 => (5, 2),
                _ => (6, 4),
            };
            let Some(pl) = (if level == 4 {
                Some(ParityLayout::ParityLast)
            } else {
                ParityLayout::from_raw(sb.layout, sb.level)
            }) else {
                return bad_layout(sb.level);
            };
            if disks < min {
                return (
                    Layout::Parity(pl),
                    Err((
                        None,
                        ArrayStatus::Corrupt(format!("{} with {disks} members", sb.level)),
                    )),
                );
            }
            let g = Parity {
                level,
                layout: pl,
                disks,
                chunk,
            };
            let per = sb.size / chunk * chunk;
            let size = per.saturating_mul(g.data_disks() as u64);
            (Layout::Parity(pl), Ok((Geometry::Parity(g), size)))
        }
        Level::Raid10 => {
            let Some((near, far, offset, far_set)) = layout::raid10_layout(sb.layout, disks) else {
                return bad_layout(sb.level);
            };
            let l = Layout::Raid10 {
                near: near as u32,
                far: far as u32,
                offset,
                far_sets: sb.layout >> 17,
            };
            // The kernel's sizing: whole chunks per member, shared by the far
            // copies, times members over near copies; then the chunks each
            // member really uses (rounded up) give the far stride.
            let per_dev = sb.size / chunk;
            let d = disks as u64;
            let (n, f) = (near as u64, far as u64);
            let array_chunks = (per_dev / f).saturating_mul(d) / n;
            let used = array_chunks.saturating_mul(n * f).div_ceil(d);
            let stride = if offset {
                chunk
            } else {
                (used / f).saturating_mul(chunk)
            };
            let size = ((used / f).saturating_mul(d) / n).saturating_mul(chunk);
            (
                l,
                Ok((
                    Geometry::Raid10(Raid10 {
                        disks,
                        near,
                        far,
                        offset,
                        far_set,
                        chunk,
                        stride,
                    }),
                    size,
                )),
            )
        }
        Level::Other(v) => (
            Layout::Unknown(sb.layout),
            unsupported(Unsupported::Level(v)),
        ),
    }
}

/// A 1.2 RAID1 member of 64 KiB (data at 8 KiB, 32 KiB used, filled with
/// `fill`) for the crate example; not part of the API.
#[doc(hidden)]
pub fn doc_member(role: u16, fill: u8) -> Vec<u8> {
    let mut m = vec![fill; 64 << 10];
    let sb = &mut m[4096..4096 + 256 + 4];
    sb.fill(0);
    let put32 = |b: &mut [u8], o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_le_bytes());
    let put64 = |b: &mut [u8], o: usize, v: u64| b[o..o + 8].copy_from_slice(&v.to_le_bytes());
    put32(sb, 0, format::MAGIC);
    put32(sb, 4, 1);
    sb[16..32].copy_from_slice(&[7; 16]);
    sb[32..36].copy_from_slice(b"demo");
    put32(sb, 72, 1);
    put64(sb, 80, 64);
    put32(sb, 92, 2);
    put64(sb, 128, 16);
    put64(sb, 136, 112);
    put64(sb, 144, 8);
    put32(sb, 160, u32::from(role));
    put64(sb, 208, u64::MAX);
    put32(sb, 220, 2);
    sb[256..258].copy_from_slice(&0u16.to_le_bytes());
    sb[258..260].copy_from_slice(&1u16.to_le_bytes());
    let c = format::sb1_csum(sb);
    put32(sb, 216, c);
    m
}
