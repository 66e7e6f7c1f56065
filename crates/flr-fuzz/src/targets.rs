//! The targets: each takes the fuzzer's bytes and drives one parser the
//! way flr does, reading (bounded) everything it offers. A target never
//! judges the result: an error is a fine answer, only a panic, a hang or
//! an allocation the size of a header's claim is a bug.

use std::sync::Arc;

use flr_fs::{FileKind, Filesystem, FsPath};
use flr_io::{NoParentResolver, ReadAt, Source};
use serde_json::Value;

use crate::fixup;
use crate::sparse::SparseImage;

/// Entries a walk visits at most.
const MAX_ENTRIES: usize = 2048;
/// Bytes a walk reads from each file at most.
const MAX_FILE_BYTES: u64 = 256 << 10;
/// Bytes a walk reads in all at most.
const MAX_TOTAL_BYTES: u64 = 4 << 20;

fn image(data: &[u8]) -> SparseImage {
    SparseImage::decode(data)
}

fn source(img: SparseImage) -> Source {
    Arc::new(img)
}

/// Reads a few places of a block device: its start, its end, and a spread
/// of offsets between, checking the answers' shape.
fn read_around(dev: &dyn ReadAt) {
    let len = dev.len();
    let mut buf = vec![0u8; 64 << 10];
    for k in 0..8u64 {
        let off = (len / 8).saturating_mul(k) & !511;
        let n = (buf.len() as u64).min(len.saturating_sub(off)) as usize;
        let _ = dev.read_exact_at(off, &mut buf[..n]);
        let _ = dev.is_known_zero(off, n as u64);
    }
    if len >= 4096 {
        let _ = dev.read_exact_at(len - 4096, &mut buf[..4096]);
    }
    // Past the end must be an error, never a panic or a short success.
    assert!(dev.read_exact_at(len, &mut buf[..1]).is_err());
}

/// Walks a filesystem breadth first within the bounds above, reading
/// links and the first bytes of each file.
pub(crate) fn walk(fs: &dyn Filesystem) {
    let _ = fs.info();
    let _ = fs.consistency().sentence();
    let mut queue = std::collections::VecDeque::from([(FsPath::root(), 0u32)]);
    let mut seen = 0usize;
    let mut budget = MAX_TOTAL_BYTES;
    let mut buf = vec![0u8; 64 << 10];
    while let Some((dir, depth)) = queue.pop_front() {
        let _ = fs.metadata(&dir);
        let Ok(entries) = fs.read_dir(&dir) else {
            continue;
        };
        for e in entries {
            seen += 1;
            if seen > MAX_ENTRIES {
                return;
            }
            if e.name.is_empty() || e.name.contains(&b'/') {
                continue;
            }
            let path = dir.join(&e.name);
            // Windows metadata and alternate data streams (NTFS, FAT).
            let _ = fs.windows_meta(&path);
            if let Ok(streams) = fs.streams(&path) {
                for s in streams.iter().take(4) {
                    if let Ok(mut h) = fs.open_stream(&path, &s.name) {
                        let _ = h.read_at(0, &mut buf);
                    }
                }
            }
            match e.meta.kind {
                FileKind::Dir if depth < 32 => queue.push_back((path, depth + 1)),
                FileKind::Symlink => {
                    let _ = fs.read_link(&path);
                }
                FileKind::File if budget > 0 => {
                    let Ok(mut h) = fs.open(&path) else {
                        continue;
                    };
                    let size = h.size();
                    let mut off = 0u64;
                    while off < size.min(MAX_FILE_BYTES) && budget > 0 {
                        match h.read_at(off, &mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                assert!(n <= buf.len(), "read_at returned more than asked");
                                off += n as u64;
                                budget = budget.saturating_sub(n as u64);
                            }
                        }
                    }
                    // A read far past the end returns 0, not garbage.
                    if let Ok(n) = h.read_at(size.saturating_add(1 << 20), &mut buf[..16]) {
                        assert_eq!(n, 0, "read past the end of a {size}-byte file");
                    }
                }
                _ => {}
            }
        }
    }
}

pub(crate) fn vhd(data: &[u8]) {
    if let Ok(d) = flr_vhd::VhdDisk::open(source(image(data)), &NoParentResolver) {
        let _ = d.info();
        read_around(&d);
    }
}

pub(crate) fn vhdx(data: &[u8]) {
    let mut img = image(data);
    fixup::vhdx(&mut img);
    if let Ok(d) = flr_vhdx::VhdxDisk::open(source(img), &NoParentResolver) {
        let _ = d.info();
        read_around(&d);
    }
}

fn partitions(img: SparseImage) {
    let src = source(img);
    for hint in [None, Some(4096)] {
        if let Ok(Some(t)) = flr_part::read_table(&src, hint) {
            for p in &t.partitions {
                let _ = p.type_name();
                if let Ok(v) = p.open(&src) {
                    let mut s = [0u8; 512];
                    let _ = v.read_exact_at(0, &mut s);
                    let _ = v.read_exact_at(v.len().saturating_sub(512), &mut s);
                }
            }
        }
    }
}

pub(crate) fn mbr(data: &[u8]) {
    partitions(image(data));
}

pub(crate) fn gpt(data: &[u8]) {
    let mut img = image(data);
    fixup::gpt(&mut img);
    partitions(img);
}

pub(crate) fn luks(data: &[u8]) {
    let mut img = image(data);
    fixup::luks2(&mut img);
    let src = source(img);
    if let Ok(v) = flr_luks::LuksVolume::open(src.clone(), src) {
        let _ = v.info();
    }
}

/// The passphrases of the committed LUKS fixtures (test keys, public).
const FIXTURE_PASSPHRASES: [&[u8]; 2] = [
    include_bytes!("../../../testdata/luks/pass-luks1.bin"),
    include_bytes!("../../../testdata/luks/pass-luks2.bin"),
];

/// A LUKS volume unlocked with the fixtures' passphrases under tight KDF
/// limits (so a mutated cost cannot turn one input into minutes), then
/// read: keyslot areas, anti-forensic merge, digest, sector decryption
/// with mutated sector sizes, offsets and IV schemes, and the filesystem
/// inside when there is one.
pub(crate) fn luks_unlock(data: &[u8]) {
    let mut img = image(data);
    fixup::luks2(&mut img);
    let src = source(img);
    let limits = flr_luks::Limits {
        argon2_max_kib: 1024,
        argon2_max_work: 4096,
        pbkdf2_max_iterations: 20_000,
        ..flr_luks::Limits::default()
    };
    let Ok(v) = flr_luks::LuksVolume::open_with(src.clone(), src, limits) else {
        return;
    };
    for pass in FIXTURE_PASSPHRASES {
        let key = flr_keys::KeyMaterial::Passphrase(flr_keys::Secret::from_slice(pass));
        if let Ok(u) = v.unlock(&key) {
            read_around(&u);
            let dev: Source = Arc::new(u);
            if let Ok(fs) = flr_ext4::Ext4Fs::open(dev) {
                walk(&fs);
            }
            return;
        }
    }
}

/// LUKS2 JSON metadata: the input is the JSON text, placed in a valid
/// binary header (checksummed) in front of a 16 MiB zero device.
pub(crate) fn luks2_json(data: &[u8]) {
    let img = fixup::luks2_around_json(data);
    let src = source(img);
    if let Ok(v) = flr_luks::LuksVolume::open(src.clone(), src) {
        let _ = v.info();
    }
}

pub(crate) fn bitlocker(data: &[u8]) {
    if let Ok(v) = flr_bitlocker::BitLockerVolume::open(source(image(data))) {
        let _ = v.info();
        // An absent or wrong key must be refused, whatever the metadata says.
        let _ = v.unlock(None);
    }
}

pub(crate) fn bek(data: &[u8]) {
    let _ = flr_bitlocker::startup_key_id(data);
}

pub(crate) fn lvm(data: &[u8]) {
    let mut img = image(data);
    fixup::thin(&mut img);
    let src = source(img);
    if let Ok(pv) = flr_lvm::PhysicalVolume::read(src, "fuzz") {
        let _ = pv.vg_name();
        for vg in flr_lvm::assemble(std::slice::from_ref(&pv)) {
            let _ = vg.missing();
            for lv in &vg.lvs {
                if let Ok(dev) = vg.open_lv(&lv.name) {
                    read_around(&*dev);
                }
            }
        }
    }
}

/// Members an md input is cut into: the image is split into this many
/// equal slices (whole sectors), each read as a member, and all of them
/// assembled together.
pub(crate) const MD_SLICES: usize = 4;

fn md_slices(len: u64) -> Vec<(u64, u64)> {
    let per = (len / MD_SLICES as u64) & !511;
    if per == 0 {
        return vec![(0, len)];
    }
    (0..MD_SLICES as u64).map(|i| (i * per, per)).collect()
}

pub(crate) fn md(data: &[u8]) {
    let mut img = image(data);
    let slices = md_slices(img.len());
    fixup::md(&mut img, &slices);
    let src = source(img);
    let mut members = Vec::new();
    for (i, (base, len)) in md_slices(src.len()).into_iter().enumerate() {
        let Ok(slice) = flr_io::Slice::new(src.clone(), base, len, format!("member {i}")) else {
            continue;
        };
        let slice: Source = Arc::new(slice);
        let mut head = vec![0u8; (64u64 << 10).min(len) as usize];
        let _ = slice.read_exact_at(0, &mut head);
        let _ = flr_md::probe(&head, slice.as_ref());
        if let Ok(m) = flr_md::Member::read(slice, &format!("m{i}")) {
            members.push(m);
        }
    }
    // The whole image as one member too (an array over the slices may
    // also be a member of another: md on md).
    let _ = flr_md::Member::read(src, "whole");
    for a in flr_md::assemble(&members) {
        let _ = (
            a.complete(),
            a.missing(),
            a.readable(),
            a.label(),
            a.first_location(),
        );
        let _ = (
            a.layout.to_string(),
            a.level.to_string(),
            a.metadata.to_string(),
        );
        match a.open() {
            Ok(dev) => read_around(&*dev),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
}

macro_rules! fs_target {
    ($name:ident, $ty:path) => {
        pub(crate) fn $name(data: &[u8]) {
            if let Ok(fs) = <$ty>::open(source(image(data))) {
                walk(&fs);
            }
        }
    };
}

fs_target!(fat, flr_fat::FatFs);
fs_target!(ext4, flr_ext4::Ext4Fs);
fs_target!(ntfs, flr_ntfs::NtfsFs);

/// XFS: the superblock and log records re-checksummed, so that mutations
/// reach the log replay.
pub(crate) fn xfs(data: &[u8]) {
    let mut img = image(data);
    fixup::xfs(&mut img);
    if let Ok(fs) = flr_xfs::XfsFs::open(source(img)) {
        walk(&fs);
    }
}

/// Btrfs: the device's superblock, assembly (one device, so a multi-device
/// seed reads degraded), then the default subvolume, the top level and
/// every listed subvolume walked, with the xattrs of each root.
pub(crate) fn btrfs(data: &[u8]) {
    let mut img = image(data);
    fixup::btrfs(&mut img);
    let src = source(img);
    let head = {
        let n = src.len().min(68 << 10) as usize;
        let mut h = vec![0u8; n];
        let _ = src.read_exact_at(0, &mut h);
        h
    };
    let _ = flr_btrfs::probe(&head, src.as_ref());
    let Ok(dev) = flr_btrfs::Device::read(src, "fuzz") else {
        return;
    };
    for a in flr_btrfs::assemble(&[dev]) {
        let _ = a.complete();
        let Ok(fs) = a.open() else {
            continue;
        };
        let _ = fs.tree_log();
        let _ = fs.profiles();
        walk(&fs);
        let _ = fs.xattrs(&FsPath::root());
        if let Ok(top) = fs.open_subvolume(flr_btrfs::TOP_LEVEL) {
            walk(&top);
        }
        if let Ok(list) = fs.subvolumes() {
            for s in list.iter().take(16) {
                if let Ok(sub) = fs.open_subvolume(s.id) {
                    let _ = sub.stat(&FsPath::root());
                    walk(&sub);
                }
                let _ = fs.open_subvolume_path(&s.path);
            }
        }
    }
}

/// Bytes → container → partitions → volumes → every filesystem, walked.
pub(crate) fn stack(data: &[u8]) {
    let mut img = image(data);
    fixup::vhdx(&mut img);
    fixup::gpt(&mut img);
    let keys = flr_engine::KeyRing::new();
    let Ok(image) = flr_engine::open_source(
        source(img),
        "fuzz",
        &NoParentResolver,
        flr_engine::Scan::Full,
        &keys,
    ) else {
        return;
    };
    for v in &image.volumes {
        if let Ok(fs) = v.open_fs() {
            walk(&*fs);
            // Disk images stored as files open as nested disks: a few of
            // them, one level down.
            for path in image_candidates(&*fs) {
                if let Ok(inner) = image.nested_image(v, &path.to_string()) {
                    for iv in &inner.volumes {
                        if let Ok(ifs) = iv.open_fs() {
                            walk(&*ifs);
                        }
                    }
                }
            }
        }
    }
}

/// Up to 8 regular files near the root whose first bytes a format of the
/// engine's list claims (what `ls` would show as a disk image).
fn image_candidates(fs: &dyn Filesystem) -> Vec<FsPath> {
    let mut out = Vec::new();
    let mut queue = std::collections::VecDeque::from([(FsPath::root(), 0u32)]);
    let mut seen = 0usize;
    while let Some((dir, depth)) = queue.pop_front() {
        let Ok(entries) = fs.read_dir(&dir) else {
            continue;
        };
        for e in entries {
            seen += 1;
            if seen > 4096 || out.len() >= 8 {
                return out;
            }
            if e.name.is_empty() || e.name.contains(&b'/') {
                continue;
            }
            let path = dir.join(&e.name);
            match e.meta.kind {
                FileKind::Dir if depth < 4 => queue.push_back((path, depth + 1)),
                FileKind::File if e.meta.size >= 512 => {
                    let Ok(mut h) = fs.open(&path) else { continue };
                    let mut head =
                        vec![0u8; 4096.min(usize::try_from(e.meta.size).unwrap_or(4096))];
                    if h.read_at(0, &mut head).is_ok() {
                        let src = flr_io::MemSource::new(head.clone());
                        if flr_engine::detect(&head, &src).is_some() {
                            out.push(path);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// What the key chain takes from Key Vault and Resource Manager: the
/// input is one JSON answer, given to every interpreter of an answer.
pub(crate) fn keyvault(data: &[u8]) {
    use flr_keychain::response;
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let _ = response::service_error(403, &v);
    let _ = response::key_bundle(&v);
    let _ = response::secret_versions_page(&v);
    let _ = response::unwrapped_key(v.clone());
    let bundle = response::secret_bundle(v.clone());
    // The BEK secret's value: base64 of a passphrase or a .BEK file.
    if let Some(value) = &bundle.value {
        if let Ok(raw) = flr_keychain::offline::b64_decode(&String::from_utf8_lossy(value.expose()))
        {
            let _ = flr_bitlocker::startup_key_id(&raw);
        }
    }
    // The disk's own JSON (`az disk show`, ARM GET): its ADE settings.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = flr_keychain::metadata::parse(text, "fuzz");
    }
}
