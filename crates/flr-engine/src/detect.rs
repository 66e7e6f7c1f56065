//! What lies on a volume, found from content signatures (never from names).
//!
//! The table below lists, per format, the magic bytes and where they sit.
//! Formats flr can open are handed to their reader; the rest are named with
//! the reason they cannot be opened yet.

use flr_io::ReadAt;
use serde::Serialize;

/// The kind of content found on a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContentKind {
    /// FAT12/16/32.
    Fat,
    /// ext2/3/4.
    Ext,
    /// NTFS.
    Ntfs,
    /// exFAT.
    Exfat,
    /// XFS.
    Xfs,
    /// Btrfs.
    Btrfs,
    /// ReFS.
    Refs,
    /// An LVM2 physical volume.
    Lvm2,
    /// An LVM2 logical volume flr cannot read (thin, snapshot, cache, a
    /// missing PV…); readable LVs show the content found on them.
    LvmLv,
    /// LUKS1 or LUKS2.
    Luks,
    /// BitLocker (NTFS-style header).
    #[serde(rename = "bitlocker")]
    BitLocker,
    /// BitLocker To Go (FAT-style header).
    #[serde(rename = "bitlocker-to-go")]
    BitLockerToGo,
    /// Linux swap.
    Swap,
    /// All zero as far as the first sectors go.
    Empty,
    /// Nothing recognised.
    Unknown,
}

impl ContentKind {
    /// Whether flr can open this kind as a filesystem today.
    pub fn is_filesystem_flr_reads(self) -> bool {
        matches!(
            self,
            ContentKind::Fat | ContentKind::Ext | ContentKind::Ntfs | ContentKind::Xfs
        )
    }

    /// Whether this is an encrypted container.
    pub fn is_encrypted(self) -> bool {
        matches!(
            self,
            ContentKind::Luks | ContentKind::BitLocker | ContentKind::BitLockerToGo
        )
    }

    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            ContentKind::Fat => "FAT",
            ContentKind::Ext => "ext",
            ContentKind::Ntfs => "NTFS",
            ContentKind::Exfat => "exFAT",
            ContentKind::Xfs => "XFS",
            ContentKind::Btrfs => "Btrfs",
            ContentKind::Refs => "ReFS",
            ContentKind::Lvm2 => "LVM2 physical volume",
            ContentKind::LvmLv => "LVM2 logical volume",
            ContentKind::Luks => "LUKS",
            ContentKind::BitLocker => "BitLocker",
            ContentKind::BitLockerToGo => "BitLocker To Go",
            ContentKind::Swap => "Linux swap",
            ContentKind::Empty => "empty",
            ContentKind::Unknown => "unknown",
        }
    }

    /// Why flr cannot open this kind yet (None when it can).
    pub fn not_readable_reason(self) -> Option<&'static str> {
        Some(match self {
            ContentKind::Fat | ContentKind::Ext | ContentKind::Ntfs | ContentKind::Xfs => {
                return None
            }
            ContentKind::Exfat => "exFAT is not supported yet",
            ContentKind::Btrfs => "Btrfs is not supported yet",
            ContentKind::Refs => "ReFS is not supported",
            ContentKind::Lvm2 => {
                "an LVM2 physical volume holds no files itself: its logical volumes are listed as volumes PV-ID/VG/LV"
            }
            ContentKind::LvmLv => "this LVM2 logical volume cannot be read",
            ContentKind::Luks => "LUKS volume: locked (give its key with --key)",
            ContentKind::BitLocker | ContentKind::BitLockerToGo => {
                "BitLocker volume: locked (give its key with --key)"
            }
            ContentKind::Swap => "swap space holds no files",
            ContentKind::Empty => "the volume reads as zeros (no filesystem)",
            ContentKind::Unknown => "no known filesystem or container signature",
        })
    }
}

/// The BitLocker To Go identifier GUID {4967D63B-2E29-4AD8-8399-F6A339E3D001}
/// as stored on disk (mixed-endian), at byte 424 of the boot sector.
const BITLOCKER_TO_GO_GUID: [u8; 16] = [
    0x3b, 0xd6, 0x67, 0x49, 0x29, 0x2e, 0xd8, 0x4a, 0x83, 0x99, 0xf6, 0xa3, 0x39, 0xe3, 0xd0, 0x01,
];

/// (kind, offset, magic): checked in order, first match wins. BitLocker
/// comes before NTFS and FAT because its boot sector imitates theirs.
const SIGNATURES: &[(ContentKind, usize, &[u8])] = &[
    (ContentKind::BitLocker, 3, b"-FVE-FS-"),
    (ContentKind::BitLockerToGo, 424, &BITLOCKER_TO_GO_GUID),
    (ContentKind::Luks, 0, b"LUKS\xba\xbe"),
    (ContentKind::Ntfs, 3, b"NTFS    "),
    (ContentKind::Exfat, 3, b"EXFAT   "),
    (ContentKind::Refs, 3, b"ReFS\0\0\0\0"),
    (ContentKind::Xfs, 0, b"XFSB"),
    (ContentKind::Ext, 1080, &[0x53, 0xef]),
    (ContentKind::Lvm2, 512, b"LABELONE"),
    (ContentKind::Lvm2, 0, b"LABELONE"),
    (ContentKind::Lvm2, 1024, b"LABELONE"),
    (ContentKind::Lvm2, 1536, b"LABELONE"),
    (ContentKind::Swap, 4086, b"SWAPSPACE2"),
    (ContentKind::Swap, 4086, b"SWAP-SPACE"),
    (ContentKind::Btrfs, 0x10040, b"_BHRfS_M"),
];

/// How many bytes of a volume's start the signature table looks at.
pub(crate) const HEAD_LEN: usize = 0x10048;

/// Reads the start of a volume (up to [`HEAD_LEN`] bytes; less if it is
/// smaller) for signature checks.
pub fn read_head(src: &dyn ReadAt) -> Result<Vec<u8>, flr_io::IoError> {
    let n = usize::try_from(src.len().min(HEAD_LEN as u64)).unwrap_or(HEAD_LEN);
    let mut head = vec![0u8; n];
    src.read_exact_at(0, &mut head)?;
    Ok(head)
}

/// Finds the kind of content from the first bytes of a volume.
pub fn detect(head: &[u8], src: &dyn ReadAt) -> ContentKind {
    for (kind, off, magic) in SIGNATURES {
        if head.get(*off..off + magic.len()) == Some(*magic) {
            // ext: also require a sane block-size field so a stray 0xEF53 does not count.
            if *kind == ContentKind::Ext {
                let log = head
                    .get(1048..1052)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                if !matches!(log, Some(0..=6)) {
                    continue;
                }
            }
            if *kind == ContentKind::Lvm2 && head.get(off + 24..off + 32) != Some(b"LVM2 001") {
                continue;
            }
            return *kind;
        }
    }
    if flr_fat::probe(src) {
        return ContentKind::Fat;
    }
    if head.iter().take(64 * 1024).all(|&b| b == 0) {
        return ContentKind::Empty;
    }
    ContentKind::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;
    use flr_io::MemSource;

    fn with(at: usize, magic: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; HEAD_LEN];
        v[at..at + magic.len()].copy_from_slice(magic);
        v
    }

    #[test]
    fn signatures() {
        for (k, off, magic) in [
            (ContentKind::Luks, 0, &b"LUKS\xba\xbe\0\x02"[..]),
            (ContentKind::BitLocker, 3, b"-FVE-FS-"),
            (ContentKind::Xfs, 0, b"XFSB"),
            (ContentKind::Exfat, 3, b"EXFAT   "),
        ] {
            let v = with(off, magic);
            let src = MemSource::new(v.clone());
            assert_eq!(detect(&v, &src), k);
        }
        let mut lvm = with(512, b"LABELONE");
        lvm[536..544].copy_from_slice(b"LVM2 001");
        assert_eq!(
            detect(&lvm, &MemSource::new(lvm.clone())),
            ContentKind::Lvm2
        );
        let zeros = vec![0u8; HEAD_LEN];
        assert_eq!(
            detect(&zeros, &MemSource::new(zeros.clone())),
            ContentKind::Empty
        );
    }
}
