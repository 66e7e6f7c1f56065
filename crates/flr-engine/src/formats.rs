//! The one list of formats the scanner knows, in the order it probes them.
//!
//! Every node (the image, a partition, an unlocked volume, a logical
//! volume, a disk image stored as a file) is probed against this list,
//! first match wins. Adding a format is its crate's descriptor and one line
//! here; `detect`, `probe`'s output, the fuzz `stack` target and the docs
//! read this list.
//!
//! The order matters where signatures overlap: containers first (their
//! magic is unambiguous); BitLocker before NTFS and FAT, whose boot
//! sectors it imitates; md before the filesystems, since a 0.90 or 1.0
//! RAID1 member shows the array's filesystem at its byte 0 (md declines a
//! superblock that lies inside a partition of the node's own table: that
//! partition is the member); filesystems before LVM2; FAT, whose
//! probe is a plausibility check of its boot sector rather than a magic
//! number, after every other filesystem; the partition table last, since
//! filesystem boot sectors also end in `55 AA`.

use flr_layer::{Format, Kind, LayerKind, Recognised};

/// Formats recognised by signature and named, but not read (yet).
static EXFAT: Recognised = Recognised::new(
    Kind::new("exfat", "exFAT", LayerKind::Filesystem),
    &[(3, b"EXFAT   ")],
    "exFAT is not supported yet",
);
static REFS: Recognised = Recognised::new(
    Kind::new("refs", "ReFS", LayerKind::Filesystem),
    &[(3, b"ReFS\0\0\0\0")],
    "ReFS is not supported",
);
static SWAP: Recognised = Recognised::new(
    Kind::new("swap", "Linux swap", LayerKind::Other),
    &[(4086, b"SWAPSPACE2"), (4086, b"SWAP-SPACE")],
    "swap space holds no files",
);

/// Every format, in probing order.
pub static FORMATS: &[&dyn Format] = &[
    &flr_vhdx::FORMAT,
    &flr_vhd::FORMAT,
    &flr_bitlocker::FORMAT,
    &flr_luks::FORMAT,
    &flr_md::FORMAT,
    &flr_ntfs::FORMAT,
    &EXFAT,
    &REFS,
    &flr_xfs::FORMAT,
    &flr_ext4::FORMAT,
    &flr_lvm::FORMAT,
    &SWAP,
    &flr_btrfs::FORMAT,
    &flr_fat::FORMAT,
    &flr_part::FORMAT,
];

/// The formats, for listings (`flr probe --formats`, the docs' table).
pub fn formats() -> &'static [&'static dyn Format] {
    FORMATS
}

/// The first format whose probe claims a node with these first bytes
/// (`head`, up to [`flr_layer::HEAD_LEN`]) and bytes (`src`).
pub fn detect(head: &[u8], src: &dyn flr_io::ReadAt) -> Option<&'static dyn Format> {
    FORMATS.iter().copied().find(|f| f.probe(head, src))
}
