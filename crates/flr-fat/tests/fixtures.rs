//! flr-fat against volumes made by mkfs.fat + mcopy (testdata/fat/gen.sh):
//! every file's size and sha256 from the source tree's manifest, the
//! directory tree, label / serial from `minfo`, cluster counts from
//! `fsck.fat -v`; then damaged volumes.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use flr_fat::{probe, FatFs, FatType};
use flr_fs::{FileKind, Filesystem, FsError, FsPath};
use flr_io::{FileSource, MemSource, ReadAt, Source};

const IMAGES: [(&str, FatType); 4] = [
    ("fat12.img", FatType::Fat12),
    ("fat16.img", FatType::Fat16),
    ("fat32.img", FatType::Fat32),
    ("fat32-4k.img", FatType::Fat32),
];

/// 2021-03-04 05:06:08 UTC, the mtime gen.sh gives every source file.
const MTIME: i64 = 1_614_834_368;

fn src(img: &str) -> Source {
    Arc::new(FileSource::open(flr_testdata::fixture(&format!("fat/{img}.zst"))).unwrap())
}

fn text(rel: &str) -> String {
    std::fs::read_to_string(flr_testdata::testdata_dir().join(rel)).unwrap()
}

/// `key: value` / `key=value` from minfo's output.
fn minfo(img: &str, key: &str) -> String {
    let t = text(&format!("fat/{img}.minfo.txt"));
    t.lines()
        .find_map(|l| {
            l.strip_prefix(key).map(|v| {
                v.trim_start_matches([':', '=', ' '])
                    .trim_matches('"')
                    .to_string()
            })
        })
        .unwrap_or_else(|| panic!("{key} not in minfo output"))
}

/// (bytes per cluster, data clusters, used clusters) from fsck.fat -v.
fn fsck(img: &str) -> (u64, u64, u64) {
    let t = text(&format!("fat/{img}.fsck.txt"));
    let num = |suffix: &str| -> u64 {
        t.lines()
            .find(|l| l.contains(suffix))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{suffix} not in fsck output"))
    };
    let cs = num("bytes per cluster");
    let clusters = num("data clusters");
    let used = t
        .lines()
        .find(|l| l.contains(" files, "))
        .and_then(|l| l.rsplit(", ").next())
        .and_then(|u| u.split('/').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    (cs, clusters, used)
}

#[test]
fn info_matches_mkfs_and_fsck() {
    for (img, ty) in IMAGES {
        let s = src(img);
        assert!(probe(s.as_ref()), "{img}");
        let fs = FatFs::open(s).unwrap();
        assert_eq!(fs.fat_type(), ty, "{img}");
        let info = fs.info();
        let want_type = match ty {
            FatType::Fat12 => "fat12",
            FatType::Fat16 => "fat16",
            FatType::Fat32 => "fat32",
        };
        assert_eq!(info.fs_type, want_type);
        let serial = minfo(img, "serial number");
        assert_eq!(
            info.id.as_deref(),
            Some(format!("{}-{}", &serial[..4], &serial[4..]).as_str()),
            "{img}"
        );
        assert_eq!(
            info.label.as_deref(),
            Some(minfo(img, "disk label").trim_end())
        );
        let (cs, clusters, used) = fsck(img);
        assert_eq!(u64::from(info.block_size), cs, "{img}");
        assert_eq!(info.total_bytes, clusters * cs, "{img}");
        assert_eq!(info.free_bytes, Some((clusters - used) * cs), "{img}");
    }
}

#[test]
fn every_file_matches_the_manifest() {
    for (img, _) in IMAGES {
        let fs = FatFs::open(src(img)).unwrap();
        let manifest = flr_testdata::manifest(&format!("fat/{img}.manifest.tsv"));
        let tree = common::walk(&fs);
        let expected: BTreeMap<String, (FileKind, u64)> = manifest
            .iter()
            .map(|m| {
                let kind = if m.kind == 'd' {
                    FileKind::Dir
                } else {
                    FileKind::File
                };
                (m.path.clone(), (kind, m.size))
            })
            .collect();
        assert_eq!(tree, expected, "{img}: directory tree");
        for m in manifest.iter().filter(|m| m.kind == 'f') {
            let path = format!("/{}", m.path);
            let meta = fs.metadata(&FsPath::parse(&path)).unwrap();
            assert_eq!(meta.size, m.size, "{img}:{path}");
            assert_eq!(meta.mtime.map(|t| t.secs), Some(MTIME), "{img}:{path}");
            assert_eq!(meta.inode, None);
            // Odd buffer sizes cross cluster and run boundaries.
            for chunk in [7001, 1 << 20] {
                let data = common::read_all(&fs, &path, chunk);
                assert_eq!(flr_testdata::sha256_hex(&data), m.sha256, "{img}:{path}");
            }
        }
    }
}

#[test]
fn random_access_reads() {
    for (img, _) in IMAGES {
        let fs = FatFs::open(src(img)).unwrap();
        let whole = common::read_all(&fs, "/big.txt", 1 << 20);
        let mut h = fs.open(&FsPath::parse("/big.txt")).unwrap();
        let mut x: u64 = 12345;
        for _ in 0..200 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let off = (x >> 33) % (whole.len() as u64 + 100);
            let len = ((x >> 13) % 9000) as usize;
            let mut buf = vec![0u8; len];
            let n = h.read_at(off, &mut buf).unwrap();
            let start = (off as usize).min(whole.len());
            let end = (start + len).min(whole.len());
            assert_eq!(n, end - start);
            assert_eq!(&buf[..n], &whole[start..end]);
        }
    }
}

#[test]
fn names_match_case_insensitively_and_by_short_name() {
    let fs = FatFs::open(src("fat16.img")).unwrap();
    let get = |p: &str| fs.metadata(&FsPath::parse(p));
    assert_eq!(get("/HELLO.TXT").unwrap().size, 11);
    assert_eq!(get("/program files/SOME APP/Config.INI").unwrap().size, 11);
    // mtools' 8.3 aliases.
    assert_eq!(get("/PROGRA~1/SOMEAP~1/CONFIG.INI").unwrap().size, 11);
    assert_eq!(get("/café ünïcode ✓.txt").unwrap().size, 8);
    assert_eq!(get("/").unwrap().kind, FileKind::Dir);
    assert!(matches!(get("/nope"), Err(FsError::NotFound { .. })));
    assert!(matches!(
        get("/hello.txt/x"),
        Err(FsError::NotADirectory { .. })
    ));
    assert!(matches!(
        fs.open(&FsPath::parse("/docs")),
        Err(FsError::NotAFile { .. })
    ));
    assert!(matches!(
        fs.read_dir(&FsPath::parse("/hello.txt")),
        Err(FsError::NotADirectory { .. })
    ));
    assert!(matches!(
        fs.read_link(&FsPath::parse("/hello.txt")),
        Err(FsError::Unsupported { .. })
    ));
    // Names keep their case.
    let names: Vec<String> = fs
        .read_dir(&FsPath::root())
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .collect();
    assert!(names.contains(&"MixedCase.Txt".to_string()), "{names:?}");
    assert!(names.contains(&"lower.txt".to_string()), "{names:?}");
}

/// The `fatfs` crate as a second reader, where it accepts the volume.
#[test]
fn fatfs_crate_agrees_on_the_tree() {
    use flr_io::{ReadOnlyCursor, ReaderCursor};
    for (img, _) in IMAGES {
        let s = src(img);
        let disk = ReadOnlyCursor(ReaderCursor::new(s.clone()));
        let theirs = match fatfs::FileSystem::new(disk, fatfs::FsOptions::new()) {
            Ok(fs) => fs,
            Err(e) => {
                // fatfs goes by the cluster count and refuses this one.
                assert_eq!(img, "fat32-4k.img", "fatfs refused {img}: {e}");
                continue;
            }
        };
        let mut listed = BTreeMap::new();
        let mut todo = vec![(String::new(), theirs.root_dir())];
        while let Some((prefix, dir)) = todo.pop() {
            for e in dir.iter() {
                let e = e.unwrap();
                let name = e.file_name();
                if name == "." || name == ".." {
                    continue;
                }
                let path = format!("{prefix}{name}");
                if e.is_dir() {
                    listed.insert(path.clone(), (FileKind::Dir, 0));
                    todo.push((format!("{path}/"), e.to_dir()));
                } else {
                    listed.insert(path, (FileKind::File, e.len()));
                }
            }
        }
        let ours = FatFs::open(s).unwrap();
        assert_eq!(common::walk(&ours), listed, "{img}");
    }
}

// ---- damaged volumes: errors, never panics or hangs ----

fn bytes(img: &str) -> Vec<u8> {
    std::fs::read(flr_testdata::fixture(&format!("fat/{img}.zst"))).unwrap()
}

fn mem(v: Vec<u8>) -> Source {
    Arc::new(MemSource::new(v))
}

#[test]
fn zeroed_boot_sector_is_an_error() {
    let mut d = bytes("fat16.img");
    d[..512].fill(0);
    let s = mem(d);
    assert!(!probe(s.as_ref()));
    let e = FatFs::open(s).unwrap_err();
    assert!(matches!(e, FsError::Corrupt { fs: "fat", .. }), "{e}");
}

#[test]
fn truncated_volume_fails_reads_not_the_process() {
    let mut d = bytes("fat12.img");
    d.truncate(200 * 1024);
    let fs = FatFs::open(mem(d)).unwrap();
    let root = fs.read_dir(&FsPath::root()).unwrap();
    assert!(root.iter().any(|e| e.name == b"big.txt"));
    let mut h = fs.open(&FsPath::parse("/big.txt")).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    let err = loop {
        match h.read_at(off, &mut buf) {
            Ok(0) => panic!("read past the truncation"),
            Ok(n) => off += n as u64,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, FsError::Io(_)), "{err}");
    // Cut inside the FAT: open fails.
    let mut d = bytes("fat32.img");
    d.truncate(20000);
    assert!(FatFs::open(mem(d)).is_err());
}

/// Finds the FAT32 FAT entry offset of `cluster` in fat32.img.
fn fat32_entry_at(d: &[u8], cluster: u32) -> usize {
    let bps = u16::from_le_bytes([d[11], d[12]]) as usize;
    let reserved = u16::from_le_bytes([d[14], d[15]]) as usize;
    reserved * bps + cluster as usize * 4
}

/// The first cluster of `name`'s short entry in fat32.img's root directory.
fn first_cluster(d: &[u8], name: &str) -> u32 {
    let bps = u16::from_le_bytes([d[11], d[12]]) as usize;
    let reserved = u16::from_le_bytes([d[14], d[15]]) as usize;
    let fats = d[16] as usize;
    let fatsz = u32::from_le_bytes([d[36], d[37], d[38], d[39]]) as usize;
    let root = (reserved + fats * fatsz) * bps;
    let upper = name.to_uppercase();
    let (base, ext) = upper.split_once('.').unwrap();
    let want = format!("{base:<8}{ext:<3}");
    for e in d[root..root + 65536].chunks(32) {
        if &e[..11] == want.as_bytes() {
            let hi = u16::from_le_bytes([e[20], e[21]]) as u32;
            let lo = u16::from_le_bytes([e[26], e[27]]) as u32;
            return hi << 16 | lo;
        }
    }
    panic!("{name} not found")
}

#[test]
fn cluster_chain_loop_is_an_error() {
    let mut d = bytes("fat32.img");
    let c = first_cluster(&d, "big.txt");
    // Point big.txt's 3rd cluster back to its first.
    let mut cur = c;
    for _ in 0..2 {
        let at = fat32_entry_at(&d, cur);
        cur = u32::from_le_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]]) & 0x0FFF_FFFF;
    }
    let at = fat32_entry_at(&d, cur);
    d[at..at + 4].copy_from_slice(&c.to_le_bytes());
    let fs = FatFs::open(mem(d)).unwrap();
    let e = fs.open(&FsPath::parse("/big.txt")).err().unwrap();
    assert!(e.to_string().contains("loops"), "{e}");
    // Other files are still fine.
    assert_eq!(common::read_all(&fs, "/hello.txt", 4096), b"hello, FAT\n");
}

#[test]
fn chain_ending_early_is_an_error() {
    let mut d = bytes("fat32.img");
    let c = first_cluster(&d, "big.txt");
    let at = fat32_entry_at(&d, c);
    d[at..at + 4].copy_from_slice(&0x0FFF_FFFFu32.to_le_bytes());
    let fs = FatFs::open(mem(d)).unwrap();
    let e = fs.open(&FsPath::parse("/big.txt")).err().unwrap();
    assert!(
        matches!(e, FsError::Corrupt { .. }) && e.to_string().contains("ends"),
        "{e}"
    );
}

#[test]
fn directory_pointing_at_its_ancestor_is_not_followed() {
    let mut d = bytes("fat32.img");
    let docs = first_cluster(&d, "docs.");
    // In docs/, make the entry `nested` point at docs itself.
    let bps = u16::from_le_bytes([d[11], d[12]]) as usize;
    let reserved = u16::from_le_bytes([d[14], d[15]]) as usize;
    let fatsz = u32::from_le_bytes([d[36], d[37], d[38], d[39]]) as usize;
    let data = (reserved + 2 * fatsz) * bps;
    let at = data + (docs as usize - 2) * bps; // 1-sector clusters
    let mut patched = false;
    for e in d[at..at + bps].chunks_mut(32) {
        if &e[..11] == b"NESTED     " {
            e[20..22].copy_from_slice(&((docs >> 16) as u16).to_le_bytes());
            e[26..28].copy_from_slice(&(docs as u16).to_le_bytes());
            patched = true;
        }
    }
    assert!(patched);
    let fs = FatFs::open(mem(d)).unwrap();
    let tree = common::walk(&fs); // terminates
    assert_eq!(tree["docs/nested"].0, FileKind::Special);
    let list = fs.read_dir(&FsPath::parse("/docs")).unwrap();
    let nested = list.iter().find(|e| e.name == b"nested").unwrap();
    assert!(nested.meta.unreadable.as_deref().unwrap().contains("loop"));
    assert!(fs.read_dir(&FsPath::parse("/docs/nested")).is_err());
}

#[test]
fn hostile_bytes_do_not_panic() {
    // Random bytes sprinkled over the boot sector, FATs and directories.
    for img in ["fat12.img", "fat16.img", "fat32.img"] {
        let base = bytes(img);
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..60 {
            let mut d = base.clone();
            for _ in 0..40 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let region = (x % 4) as usize;
                let at = match region {
                    0 => (x >> 8) as usize % 512,
                    _ => (x >> 8) as usize % (700 * 1024),
                };
                d[at] = (x >> 48) as u8;
            }
            let s = mem(d);
            let _ = probe(s.as_ref());
            let Ok(fs) = FatFs::open(s) else { continue };
            let _ = fs.info();
            let mut todo = vec![FsPath::root()];
            let mut seen = 0;
            while let Some(dir) = todo.pop() {
                let Ok(list) = fs.read_dir(&dir) else {
                    continue;
                };
                for e in list {
                    seen += 1;
                    if seen > 5000 {
                        break;
                    }
                    let p = dir.join(&e.name);
                    match e.meta.kind {
                        FileKind::Dir => todo.push(p),
                        FileKind::File => {
                            if let Ok(mut h) = fs.open(&p) {
                                let mut buf = vec![0u8; 65536];
                                let _ = h.read_at(0, &mut buf);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

#[test]
fn tiny_sources_are_refused() {
    for n in [0usize, 100, 511, 512, 1024] {
        let s = mem(vec![0; n]);
        assert!(!probe(s.as_ref()));
        assert!(FatFs::open(s).is_err());
    }
    let _ = ReadAt::len(&MemSource::new(vec![]));
}

/// mkfs.fat leaves FAT16 and FAT32 clean (FAT[1] clean bit set, boot-sector dirty flag clear);
/// FAT12 records nothing beyond the boot-sector flag. Setting the flag, or clearing the
/// FAT[1] bit, makes the volume dirty: no journal, so a warning.
#[test]
fn consistency_from_the_dirty_flag_and_the_fat1_clean_bit() {
    use flr_fs::{Journal, Unmount};
    for (img, flag_at, fat1_clean) in [
        ("fat12.img", 0x25, None),
        ("fat16.img", 0x25, Some((2usize, 0x80u8))),
        ("fat32.img", 0x41, Some((4, 0x08))),
    ] {
        let bytes = std::fs::read(flr_testdata::fixture(&format!("fat/{img}.zst"))).unwrap();
        let open = |b: Vec<u8>| {
            FatFs::open(Arc::new(MemSource::new(b)))
                .unwrap()
                .consistency()
        };
        let c = open(bytes.clone());
        assert_eq!(
            (c.unmount, &c.journal),
            (Unmount::Clean, &Journal::None),
            "{img}"
        );
        assert!(!c.may_miss_changes(), "{img}");
        let mut b = bytes.clone();
        b[flag_at] |= 1;
        let c = open(b);
        assert_eq!(c.unmount, Unmount::Dirty, "{img}");
        assert!(c.may_miss_changes(), "{img}");
        assert!(c.sentence().starts_with("dirty: "), "{}", c.sentence());
        if let Some((entry, bit)) = fat1_clean {
            let reserved = u16::from_le_bytes([bytes[14], bytes[15]]) as usize;
            let bps = u16::from_le_bytes([bytes[11], bytes[12]]) as usize;
            let mut b = bytes.clone();
            // The high byte of FAT entry 1 in the first FAT.
            b[reserved * bps + entry * 2 - 1] &= !bit;
            assert_eq!(open(b).unmount, Unmount::Dirty, "{img}");
        }
    }
}
