//! What a layer format is, for flr's scanner.
//!
//! Every layer crate (a container, a partition table, an encryption scheme,
//! a volume manager, a filesystem) exports one [`Format`] descriptor: a
//! cheap [`Format::probe`] on the first bytes of a node (and, where the
//! format needs it, a read at its end), and an [`Format::open`] that says
//! what the node is, as one of [`Opened`]:
//!
//! * [`Opened::Disk`]: the bytes this layer presents in place (a VHD's
//!   virtual disk), which the scanner probes again;
//! * [`Opened::Table`]: child volumes (a partition table's partitions);
//! * [`Opened::Locked`]: an encrypted volume, with the key kinds it accepts;
//!   the scanner gives it keys and gets the unlocked bytes back;
//! * [`Opened::Member`]: one member of something spread over several nodes
//!   (an LVM2 physical volume), assembled by [`Format::assemble`] once the
//!   members are found, wherever they were found;
//! * [`Opened::Filesystem`]: a filesystem;
//! * [`Opened::Unsupported`]: recognised, named, not read.
//!
//! The engine (`flr-engine`) holds the one list of descriptors and scans
//! every node against it; a new format is its crate, its descriptor, and
//! one line in that list. This crate also holds the facts `probe` reports
//! about each layer ([`ContainerInfo`], [`TableInfo`], [`PartitionInfo`],
//! [`EncryptionInfo`], [`LuksSummary`], [`GroupReport`]).
//!
//! Keys reach a reader only through [`Locked::unlock`]: where they come
//! from (files, prompts, the key chain, policy) is decided above the
//! engine.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use flr_layer::{Format, Kind, LayerKind, Recognised, read_head};
//!
//! static SWAP: Recognised = Recognised::new(
//!     Kind::new("swap", "Linux swap", LayerKind::Other),
//!     &[(4086, b"SWAPSPACE2")],
//!     "swap space holds no files",
//! );
//! let mut bytes = vec![0u8; 8192];
//! bytes[4086..4096].copy_from_slice(b"SWAPSPACE2");
//! let src: flr_io::Source = Arc::new(flr_io::MemSource::new(bytes));
//! let head = read_head(src.as_ref()).unwrap();
//! assert!(SWAP.probe(&head, src.as_ref()));
//! ```
//!
//! # Errors
//! [`LayerError`] keeps the error of the layer that failed (its message
//! names the layer and offset) and says whether the format is unsupported
//! (a valid structure flr does not read) or the data is broken.
#![deny(missing_docs)]

use std::any::Any;
use std::fmt;

use flr_fs::Filesystem;
use flr_io::{IoError, ParentResolver, ReadAt, Source};
pub use flr_keys::{KeyKind, KeyMaterial};
use serde::Serialize;

mod facts;
mod size;

pub use facts::{
    ContainerInfo, EncryptionInfo, GroupReport, LuksSummary, PartitionInfo, TableInfo,
};
pub use size::human_size;

/// How many bytes of a node's start every probe sees (enough for the Btrfs
/// superblock magic at 64 KiB + 64).
pub const HEAD_LEN: usize = 0x10048;

/// Reads the start of a node (up to [`HEAD_LEN`] bytes; less if it is
/// smaller) for the probes.
pub fn read_head(src: &dyn ReadAt) -> Result<Vec<u8>, IoError> {
    let n = usize::try_from(src.len().min(HEAD_LEN as u64)).unwrap_or(HEAD_LEN);
    let mut head = vec![0u8; n];
    src.read_exact_at(0, &mut head)?;
    Ok(head)
}

/// Which layer of the stack a format is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerKind {
    /// A virtual-disk container (VHD, VHDX).
    Container,
    /// A partition table (MBR, GPT).
    PartitionTable,
    /// An encrypted volume (LUKS, BitLocker).
    Encryption,
    /// A volume manager (LVM2, md RAID): members assembled into volumes.
    VolumeManager,
    /// A filesystem.
    Filesystem,
    /// Anything else that is recognised (swap), or nothing recognised.
    Other,
}

/// The kind of content found on a node, as `probe` names it: a stable
/// short name (its JSON value), a display name, and the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// The name in JSON and in `flr probe`'s stack line: `ext`, `luks`,
    /// `lvm2`, `bitlocker-to-go`.
    pub name: &'static str,
    /// The name for people: `ext`, `LUKS`, `LVM2 physical volume`.
    pub display: &'static str,
    /// Its layer.
    pub layer: LayerKind,
}

impl Kind {
    /// A kind.
    pub const fn new(name: &'static str, display: &'static str, layer: LayerKind) -> Kind {
        Kind {
            name,
            display,
            layer,
        }
    }

    /// All zero as far as the first sectors go.
    pub const EMPTY: Kind = Kind::new("empty", "empty", LayerKind::Other);

    /// Nothing recognised.
    pub const UNKNOWN: Kind = Kind::new("unknown", "unknown", LayerKind::Other);

    /// Whether this is an encrypted layer.
    pub fn is_encrypted(self) -> bool {
        self.layer == LayerKind::Encryption
    }
}

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name)
    }
}

/// What the scanner knows when it opens a node.
pub struct OpenContext<'a> {
    /// The node's volume id (`p3`, `p3/rootvg/rootlv`), for messages and
    /// as a member's location.
    pub id: &'a str,
    /// Finds the parents of a differencing disk.
    pub parents: &'a dyn ParentResolver,
    /// The logical sector size a container below declared, if any.
    pub sector_size: Option<u32>,
}

/// A format descriptor: one per layer crate, listed once in the engine.
pub trait Format: Send + Sync {
    /// What this format's content is called.
    fn kind(&self) -> Kind;

    /// Whether the node looks like this format: `head` is its first
    /// [`HEAD_LEN`] bytes (fewer when the node is smaller); `src` is the node,
    /// for a format that must look at its end. Cheap: no parsing beyond
    /// signatures and a few fields.
    fn probe(&self, head: &[u8], src: &dyn ReadAt) -> bool;

    /// Whether flr reads this format (false for the formats only
    /// recognised and named, [`Recognised`]). A quick scan skips opening the
    /// filesystems it reads until they are used.
    fn reads(&self) -> bool {
        true
    }

    /// Whether a quick scan may leave the node unopened until it is used:
    /// true for a filesystem flr reads whose `open` gives the filesystem
    /// itself (not for one assembled from several nodes, such as Btrfs).
    fn opens_lazily(&self) -> bool {
        self.kind().layer == LayerKind::Filesystem && self.reads()
    }

    /// Opens the node. [`Opened::Declined`] when a closer look shows it is
    /// not this format after all (the scanner then tries the next one).
    fn open(&self, src: Source, ctx: &OpenContext<'_>) -> Result<Opened, LayerError>;

    /// For a volume manager: groups the members found so far (each with
    /// the location it was found at) and builds what each group yields.
    /// Called again as more members are found; a group is emitted once.
    fn assemble(&self, members: &[MemberRef<'_>]) -> Vec<Group> {
        let _ = members;
        Vec::new()
    }

    /// For an encryption format whose header can live apart from its data
    /// (LUKS): opens `data` with the header in `header`. `None` when the
    /// format has no detached headers.
    fn open_detached(&self, header: Source, data: Source) -> Option<Result<Opened, LayerError>> {
        let _ = (header, data);
        None
    }
}

/// What a node turned out to be.
pub enum Opened {
    /// The bytes this layer presents, in place of the node's (a container's
    /// virtual disk); the scanner probes them again.
    Disk {
        /// The virtual disk.
        source: Source,
        /// What the container is.
        info: ContainerInfo,
    },
    /// Child volumes laid out on the node.
    Table {
        /// What the table is.
        info: TableInfo,
        /// Its partitions, in table order; each [`Child::id`] is the suffix
        /// added to the node's id (`p1`).
        children: Vec<Child>,
    },
    /// An encrypted volume that needs a key.
    Locked(Box<dyn Locked>),
    /// One member of a multi-node volume.
    Member(Member),
    /// A filesystem.
    Filesystem(Box<dyn Filesystem>),
    /// Recognised, but flr does not read it: why.
    Unsupported(String),
    /// Not this format after all.
    Declined,
}

/// An encrypted volume before it is unlocked: what it is, which keys it
/// takes, and the only way to its plaintext.
pub trait Locked: Send + Sync {
    /// The content kind while locked (`luks`, `bitlocker`, `bitlocker-to-go`).
    fn kind(&self) -> Kind;

    /// The scheme, cipher and protectors, for `probe`.
    fn info(&self) -> EncryptionInfo;

    /// The LUKS header summary, for LUKS volumes.
    fn luks(&self) -> Option<LuksSummary> {
        None
    }

    /// The key kinds this volume can be opened with, in the order a hint
    /// lists them.
    fn accepts(&self) -> &'static [KeyKind];

    /// How a disk-wide secret from the key chain (the ADE BEK) is used on
    /// this volume: as the LUKS passphrase, or as the BitLocker startup key.
    fn chain_key(&self) -> KeyKind;

    /// Whether it may open without any key (a BitLocker clear key, when
    /// protection is suspended): the scanner tries `unlock(None)` first
    /// when no key was given.
    fn may_open_without_key(&self) -> bool {
        false
    }

    /// A short description of the locked volume for its detail line, e.g.
    /// `LUKS2 volume (uuid …)`.
    fn describe(&self) -> String;

    /// The plaintext, when `key` opens the volume (`None`: without a key).
    fn unlock(&self, key: Option<&KeyMaterial>) -> Result<Source, LayerError>;
}

/// One member of a volume spread over several nodes, as read from its own
/// node: the format reads it back in [`Format::assemble`].
pub struct Member {
    /// The format's own member type (downcast in `assemble`).
    pub payload: Box<dyn Any + Send + Sync>,
    /// One line for the member's node until it is assembled.
    pub summary: String,
}

/// A member handed to [`Format::assemble`], with where it was found.
pub struct MemberRef<'a> {
    /// The volume id of the node it was read from.
    pub location: &'a str,
    /// The format's member, as [`Member::payload`] held it.
    pub payload: &'a (dyn Any + Send + Sync),
}

/// What one assembled group (a volume group, an array) yields.
pub struct Group {
    /// A stable key (the VG or array id): a group is emitted once.
    pub key: String,
    /// Whether every member the metadata lists was found. The scanner
    /// assembles complete groups first and incomplete ones only when no
    /// other node is left to scan (a member may still turn up inside
    /// another volume).
    pub complete: bool,
    /// The detail line for each member node that belongs to the group:
    /// (index into the members given to `assemble`, detail).
    pub member_notes: Vec<(usize, String)>,
    /// The volumes the group yields; each [`Child::id`] is a full volume id
    /// (built from the members' locations, e.g. `p3/rootvg/rootlv`).
    pub children: Vec<Child>,
    /// What `probe` reports about the group (`None` for a member that
    /// belongs to no group, which only gets its note).
    pub report: Option<GroupReport>,
    /// For a filesystem spread over its members (a multi-device Btrfs): the
    /// member whose volume shows it, and how to open it. That member's
    /// volume becomes the filesystem's (its id stays the member's).
    pub filesystem: Option<GroupFs>,
}

/// How a group's filesystem is opened (it needs all its members, so no
/// single node's bytes open it).
pub type FsOpener =
    std::sync::Arc<dyn Fn() -> Result<Box<dyn Filesystem>, flr_fs::FsError> + Send + Sync>;

/// A filesystem made of a group's members.
pub struct GroupFs {
    /// The member (index into the members given to `assemble`) whose
    /// volume shows the filesystem.
    pub member: usize,
    /// Its kind (`btrfs`).
    pub kind: Kind,
    /// Opens it.
    pub open: FsOpener,
}

/// A volume laid out on a node, or yielded by a group.
pub struct Child {
    /// Its id: for a table's children the suffix (`p1`), for a group's the
    /// full id.
    pub id: String,
    /// Byte offset in the node it lies on (0 for a group's volumes).
    pub offset: u64,
    /// Size in bytes (what the table or metadata says, even when the bytes
    /// available are fewer).
    pub size: u64,
    /// Its bytes.
    pub source: Source,
    /// Partition facts, for a table's children.
    pub partition: Option<PartitionInfo>,
    /// What it is, written before its detail line
    /// (`LVM2 linear LV rootvg/rootlv`).
    pub label: Option<String>,
    /// Set when its bytes cannot be read at all: it is not scanned.
    pub refused: Option<Refusal>,
    /// Set when it is damaged but still scanned (a partition running past
    /// the end of a truncated disk): the sentence, shown before its detail.
    pub damage: Option<String>,
}

/// Why a child's bytes cannot be read.
pub struct Refusal {
    /// The kind shown for it (`lvm-lv`).
    pub kind: Kind,
    /// A valid layout flr does not read (true), or broken/missing (false).
    pub unsupported: bool,
    /// The reason.
    pub reason: String,
}

/// A layer failed to open a node.
#[derive(Debug)]
pub struct LayerError {
    unsupported: bool,
    source: Box<dyn std::error::Error + Send + Sync>,
    luks: Option<LuksSummary>,
}

impl LayerError {
    /// The data is broken or could not be read.
    pub fn broken(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> LayerError {
        LayerError {
            unsupported: false,
            source: e.into(),
            luks: None,
        }
    }

    /// A valid structure that flr does not read (yet).
    pub fn unsupported(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> LayerError {
        LayerError {
            unsupported: true,
            source: e.into(),
            luks: None,
        }
    }

    /// What a LUKS header said, read even though the volume could not be
    /// opened (for `probe`).
    pub fn with_luks(mut self, summary: Option<LuksSummary>) -> LayerError {
        self.luks = summary;
        self
    }

    /// The LUKS header summary attached with [`LayerError::with_luks`].
    pub fn luks(&self) -> Option<&LuksSummary> {
        self.luks.as_ref()
    }

    /// Whether the format is unsupported rather than the data broken.
    pub fn is_unsupported(&self) -> bool {
        self.unsupported
    }

    /// The error of the layer that failed.
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.source.as_ref()
    }

    /// Takes the error of the layer that failed.
    pub fn into_inner(self) -> Box<dyn std::error::Error + Send + Sync> {
        self.source
    }
}

impl fmt::Display for LayerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.source.fmt(f)
    }
}

impl std::error::Error for LayerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// A format flr recognises by its signatures but does not read: opening
/// it gives [`Opened::Unsupported`] with the reason. Formats without a
/// crate of their own (exFAT, ReFS, swap) are listed this way.
pub struct Recognised {
    kind: Kind,
    signatures: &'static [(usize, &'static [u8])],
    reason: &'static str,
}

impl Recognised {
    /// `signatures`: (byte offset, magic) pairs, any one of which
    /// identifies the format.
    pub const fn new(
        kind: Kind,
        signatures: &'static [(usize, &'static [u8])],
        reason: &'static str,
    ) -> Recognised {
        Recognised {
            kind,
            signatures,
            reason,
        }
    }
}

impl Format for Recognised {
    fn kind(&self) -> Kind {
        self.kind
    }

    fn reads(&self) -> bool {
        false
    }

    fn probe(&self, head: &[u8], _src: &dyn ReadAt) -> bool {
        self.signatures
            .iter()
            .any(|(off, magic)| head.get(*off..off + magic.len()) == Some(*magic))
    }

    fn open(&self, _src: Source, _ctx: &OpenContext<'_>) -> Result<Opened, LayerError> {
        Ok(Opened::Unsupported(self.reason.to_string()))
    }
}

/// Whether `head` has `magic` at `offset`: the probes' building block.
pub fn has_magic(head: &[u8], offset: usize, magic: &[u8]) -> bool {
    head.get(offset..offset + magic.len()) == Some(magic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognised_formats_probe_by_signature() {
        static R: Recognised = Recognised::new(
            Kind::new("x", "X", LayerKind::Filesystem),
            &[(3, b"EXFAT   "), (0, b"ZZ")],
            "not yet",
        );
        let src = flr_io::MemSource::new(vec![0; 16]);
        assert!(R.probe(b"ZZ", &src));
        assert!(R.probe(b"\0\0\0EXFAT   ", &src));
        assert!(!R.probe(b"\0\0\0EXFAT", &src));
        assert_eq!(serde_json::to_string(&R.kind()).unwrap(), "\"x\"");
    }
}
