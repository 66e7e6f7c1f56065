//! Detached LUKS headers found on the disk itself: the Azure Disk
//! Encryption OS-disk layout.
//!
//! ADE encrypts a Linux VM's root partition with LUKS and moves the LUKS
//! header off it: the partition holds ciphertext from its first sector
//! (data offset 0) and the header is the file `luks/osluksheader` on the
//! unencrypted boot filesystem of the same disk. Nothing on the root
//! partition says it is encrypted, so on its own it scans as "unknown".
//!
//! The scan hands every node no format claims to [`may_be_ciphertext`]: a
//! node qualifies when its partition type is not one that never holds data
//! (BIOS boot, EFI, swap, Microsoft reserved) and its first 4 KiB look like
//! ciphertext (near-uniform bytes). When such nodes exist, the scan asks
//! the [`HeaderProvider`]s for headers; [`AdeOsDisk`] searches every
//! readable filesystem found so far for the file. The scan then pairs each
//! header with the candidate it belongs to (one candidate is taken as it
//! is; among several, the one a key was given for and whose decrypted
//! content is recognised wins), and an explicit `--luks-header` for a
//! volume always takes precedence. The volume's report names the header it
//! used (`EncryptionInfo::header`).

use std::sync::Arc;

use flr_fs::{FileKind, FsPath};
use flr_io::{MemSource, Source};
use flr_layer::PartitionInfo;

use crate::Volume;

/// A detached header found by a provider.
pub(crate) struct FoundHeader {
    /// The volume holding it.
    pub(crate) holder: String,
    /// Its path there.
    pub(crate) path: &'static str,
    /// Its bytes.
    pub(crate) source: Source,
}

/// A source of detached headers, consulted for nodes that look like
/// ciphertext and carry no header of their own.
pub(crate) trait HeaderProvider: Sync {
    /// The headers it finds, given the readable filesystems found so far
    /// (id, volume).
    fn headers(&self, filesystems: &[(String, Volume)]) -> Vec<FoundHeader>;
}

/// The ADE OS-disk layout: `luks/osluksheader` on the boot filesystem.
pub(crate) struct AdeOsDisk;

/// Where ADE keeps the root partition's header, relative to the root of a
/// filesystem: the boot partition (mounted at /boot), or a root filesystem
/// that holds /boot itself.
const HEADER_PATHS: &[&str] = &["luks/osluksheader", "boot/luks/osluksheader"];

/// The largest header file read (cryptsetup's default LUKS2 header is
/// 16 MiB; anything far larger is not a header).
const MAX_HEADER: u64 = 64 << 20;

/// Partition types that never hold an encrypted root.
const NOT_DATA_TYPES: &[&str] = &[
    "21686148-6449-6e6f-744e-656564454649", // BIOS boot
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", // EFI system
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", // Linux swap
    "e3c9e316-0b5c-4db8-817d-f92df00215ae", // Microsoft reserved
    "0x82",                                 // MBR Linux swap
    "0xef",                                 // MBR EFI
];

impl HeaderProvider for AdeOsDisk {
    fn headers(&self, filesystems: &[(String, Volume)]) -> Vec<FoundHeader> {
        let mut out = Vec::new();
        for (id, v) in filesystems {
            let Ok(fs) = v.open_fs() else { continue };
            for path in HEADER_PATHS {
                let p = FsPath::parse(path);
                let Ok(m) = fs.metadata(&p) else { continue };
                if m.kind != FileKind::File || m.size > MAX_HEADER || m.size < 4096 {
                    continue;
                }
                let Ok(mut f) = fs.open(&p) else { continue };
                let Ok(len) = usize::try_from(m.size) else {
                    continue;
                };
                let mut bytes = vec![0u8; len];
                let mut done = 0;
                while done < len {
                    match f.read_at(done as u64, &mut bytes[done..]) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => done += n,
                    }
                }
                if done == len && bytes.starts_with(b"LUKS\xba\xbe") {
                    out.push(FoundHeader {
                        holder: id.clone(),
                        path,
                        source: Arc::new(MemSource::new(bytes)),
                    });
                }
            }
        }
        out
    }
}

/// Whether a node no format claims may be ciphertext whose header lies
/// elsewhere: not of a type that never holds data, and its first 4 KiB
/// look like ciphertext.
pub(crate) fn may_be_ciphertext(partition: Option<&PartitionInfo>, head: &[u8]) -> bool {
    if let Some(p) = partition {
        if NOT_DATA_TYPES.contains(&p.type_id.to_ascii_lowercase().as_str()) {
            return false;
        }
    }
    head.len() >= 4096 && looks_encrypted(&head[..4096])
}

/// Whether `data` looks like ciphertext: every byte value about equally
/// common (a chi-square test against the uniform distribution; code, text
/// and zero-filled sectors fail it by orders of magnitude).
pub(crate) fn looks_encrypted(data: &[u8]) -> bool {
    if data.len() < 1024 {
        return false;
    }
    let mut counts = [0u32; 256];
    for &b in data {
        counts[usize::from(b)] += 1;
    }
    let expected = data.len() as f64 / 256.0;
    let chi2: f64 = counts
        .iter()
        .map(|&c| {
            let d = f64::from(c) - expected;
            d * d / expected
        })
        .sum();
    // 255 degrees of freedom: mean 255, standard deviation about 22.6;
    // 400 is more than six deviations out.
    chi2 < 400.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ciphertext_passes_and_structured_data_does_not() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let random: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        assert!(looks_encrypted(&random));
        assert!(!looks_encrypted(&[0u8; 4096]));
        let text: Vec<u8> = b"GRUB core image, boot code and text ".repeat(120);
        assert!(!looks_encrypted(&text));
    }
}
