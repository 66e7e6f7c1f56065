//! Automatic discovery of the Azure Disk Encryption OS-disk layout.
//!
//! ADE encrypts a Linux VM's root partition with LUKS and moves the LUKS
//! header off it: the partition holds ciphertext from its first sector
//! (data offset 0) and the header is the file `luks/osluksheader` on the
//! unencrypted boot filesystem of the same disk. Nothing on the root
//! partition says it is encrypted, so without this step it scans as
//! "unknown".
//!
//! After the volumes are scanned, every readable filesystem is searched for
//! that file; a LUKS header found there is paired with the partition that
//! holds its data:
//!
//! - only partitions whose content is unknown, whose type is not one that
//!   never holds data (BIOS boot, EFI, swap, Microsoft reserved), and whose
//!   first 4 KiB look like ciphertext (near-uniform bytes) qualify;
//! - one candidate is taken as it is; among several, the one a key was
//!   given for and whose decrypted content is recognised wins;
//! - an explicit `--luks-header` for a volume always takes precedence.
//!
//! The volume's report names the header it used (`EncryptionInfo::header`).

use std::sync::Arc;

use flr_fs::{FileKind, FsPath};
use flr_io::{MemSource, ReadAt};

use crate::encrypted::{self, DetachedHeader};
use crate::{ContentKind, KeyRing, Scan, Source, Volume};

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

struct Found {
    holder: String,
    path: &'static str,
    bytes: Vec<u8>,
}

/// Finds ADE detached headers and opens the partitions they belong to.
pub(crate) fn discover(volumes: &mut [Volume], keys: &KeyRing, scan: Scan) {
    // Filesystems are searched only when some partition could hold the
    // ciphertext: a plain disk costs no extra reads.
    let possible: Vec<usize> = volumes
        .iter()
        .enumerate()
        .filter(|(_, v)| is_candidate(v, keys))
        .map(|(i, _)| i)
        .collect();
    if possible.is_empty() {
        return;
    }
    let headers = find_headers(volumes);
    for h in headers {
        let origin = format!("{}:/{} (found automatically: ADE layout)", h.holder, h.path);
        let src: Source = Arc::new(MemSource::new(h.bytes));
        // Still unclaimed (an earlier header may have opened one).
        let candidates: Vec<usize> = possible
            .iter()
            .copied()
            .filter(|&i| {
                volumes[i].id != h.holder && volumes[i].content.kind == ContentKind::Unknown
            })
            .collect();
        let attach = |v: &Volume| {
            let head = crate::read_head(v.source.as_ref()).unwrap_or_default();
            encrypted::luks(
                &v.id,
                &head,
                v.source.clone(),
                Some(DetachedHeader {
                    src: src.clone(),
                    origin: origin.clone(),
                }),
                keys,
                scan,
            )
        };
        let chosen = match candidates.as_slice() {
            [] => None,
            [one] => Some((*one, attach(&volumes[*one]))),
            many => many
                .iter()
                .filter(|&&i| keys.has_key_for(&volumes[i].id))
                .map(|&i| (i, attach(&volumes[i])))
                .find(|(_, (c, _))| c.encryption.is_some() && c.kind != ContentKind::Unknown),
        };
        match chosen {
            Some((i, (content, source))) => {
                let v = &mut volumes[i];
                v.content = content;
                v.source = source;
            }
            None => {
                for &i in &candidates {
                    let v = &mut volumes[i];
                    v.content.detail = format!(
                        "{}; it may be the encrypted root whose LUKS header is {origin}: \
                         give its key with --key {}=passphrase-file:FILE to check",
                        v.content.detail, v.id
                    );
                }
            }
        }
    }
}

fn find_headers(volumes: &[Volume]) -> Vec<Found> {
    let mut out = Vec::new();
    for v in volumes {
        if !v.content.kind.is_filesystem_flr_reads() || v.content.verdict != "readable" {
            continue;
        }
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
                out.push(Found {
                    holder: v.id.clone(),
                    path,
                    bytes,
                });
            }
        }
    }
    out
}

fn is_candidate(v: &Volume, keys: &KeyRing) -> bool {
    if v.content.kind != ContentKind::Unknown || keys.luks_header(&v.id).is_some() {
        return false;
    }
    if let Some(p) = &v.partition {
        if NOT_DATA_TYPES.contains(&p.type_id.to_ascii_lowercase().as_str()) {
            return false;
        }
    }
    let mut head = vec![0u8; 4096];
    v.source.read_exact_at(0, &mut head).is_ok() && looks_encrypted(&head)
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
