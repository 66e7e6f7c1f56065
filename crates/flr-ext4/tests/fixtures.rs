//! flr-ext4 against the committed fixtures made by mke2fs/the kernel
//! (testdata/ext4/gen.sh): manifests and attributes from the source tree,
//! identity from dumpe2fs, and a differential walk against ext4-view.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use flr_ext4::{probe, Ext4Fs};
use flr_fs::{FileKind, Filesystem, FsError, FsPath};
use flr_io::{FileSource, MemSource, ReadAt};

fn attrs(name: &str) -> BTreeMap<String, (u32, u32, u32, i64, u32)> {
    let text = std::fs::read_to_string(
        flr_testdata::testdata_dir().join(format!("ext4/{name}.attrs.tsv")),
    )
    .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            let (s, ns) = c[4].split_once('.').unwrap();
            let mut secs: i64 = s.parse().unwrap();
            let mut nanos: u32 = ns.parse().unwrap();
            // stat prints negative times as e.g. -302486400.000000000; a
            // negative value with a fraction counts the fraction toward zero.
            if secs < 0 && nanos > 0 {
                secs -= 1;
                nanos = 1_000_000_000 - nanos;
            }
            (
                c[0].to_string(),
                (
                    u32::from_str_radix(c[1], 8).unwrap(),
                    c[2].parse().unwrap(),
                    c[3].parse().unwrap(),
                    secs,
                    nanos,
                ),
            )
        })
        .collect()
}

fn check_info(fs: &Ext4Fs, name: &str, fs_type: &str) {
    let d = dumpe2fs(name);
    let info = fs.info();
    assert_eq!(info.fs_type, fs_type);
    assert_eq!(
        info.label.as_deref(),
        Some(d["Filesystem volume name"].as_str())
    );
    assert_eq!(info.id.as_deref(), Some(d["Filesystem UUID"].as_str()));
    let bs: u64 = d["Block size"].parse().unwrap();
    assert_eq!(u64::from(info.block_size), bs);
    assert_eq!(
        info.total_bytes,
        d["Block count"].parse::<u64>().unwrap() * bs
    );
    assert_eq!(
        info.free_bytes,
        Some(d["Free blocks"].parse::<u64>().unwrap() * bs)
    );
}

/// Checks modes, owners and mtimes against the source tree. `full_time`:
/// the image stores nanoseconds and 64-bit seconds (kernel-written ext4);
/// otherwise (mke2fs -d) only 32-bit seconds are stored.
fn check_attrs(found: &BTreeMap<String, Found>, name: &str, full_time: bool) {
    for (p, (mode, uid, gid, secs, nanos)) in attrs(name) {
        let f = found.get(&p).unwrap_or_else(|| panic!("{p} missing"));
        let m = &f.meta;
        if f.kind != 'l' {
            assert_eq!(m.mode, Some(mode), "{p}: mode");
        }
        assert_eq!((m.uid, m.gid), (Some(uid), Some(gid)), "{p}: owner");
        let t = m.mtime.expect("mtime");
        if full_time {
            assert_eq!((t.secs, t.nanos), (secs, nanos), "{p}: mtime");
        } else {
            assert_eq!(
                t.secs,
                i64::from(secs as i32),
                "{p}: mtime seconds (32-bit)"
            );
            assert_eq!(t.nanos, 0, "{p}: no nanoseconds stored");
        }
        assert!(m.inode.is_some_and(|i| i > 2), "{p}: inode number");
    }
}

fn image_bytes(name: &str) -> Vec<u8> {
    std::fs::read(flr_testdata::fixture(&format!("ext4/{name}.img.zst"))).unwrap()
}

#[test]
fn ext4_matches_source_tree() {
    let fs = open_fixture("ext4");
    check_info(&fs, "ext4", "ext4");
    assert!(!fs.journal_replayed());
    let found = walk(&fs);
    check_manifest(&found, &flr_testdata::manifest("ext4/ext4.manifest.tsv"));
    check_attrs(&found, "ext4", true);
    check_against_ext4_view(&found, &image_bytes("ext4"), &[]);
    // Hard links share an inode.
    assert_eq!(
        found["README.txt"].meta.inode,
        found["hardlink.txt"].meta.inode
    );
}

#[test]
fn ext3_matches_source_tree() {
    let fs = open_fixture("ext3");
    check_info(&fs, "ext3", "ext3");
    let found = walk(&fs);
    check_manifest(&found, &flr_testdata::manifest("ext4/tree.manifest.tsv"));
    check_attrs(&found, "tree", false);
    check_against_ext4_view(&found, &image_bytes("ext3"), &[]);
}

#[test]
fn ext2_matches_source_tree() {
    let fs = open_fixture("ext2");
    check_info(&fs, "ext2", "ext2");
    let found = walk(&fs);
    check_manifest(&found, &flr_testdata::manifest("ext4/tree.manifest.tsv"));
    check_attrs(&found, "tree", false);
    check_against_ext4_view(&found, &image_bytes("ext2"), &[]);
}

#[test]
fn dirty_journal_is_replayed() {
    let fs = open_fixture("ext4-journal");
    assert!(
        fs.journal_replayed(),
        "the snapshot was taken with committed, unreplayed transactions"
    );
    check_info(&fs, "ext4-journal", "ext4");
    let found = walk(&fs);
    check_manifest(
        &found,
        &flr_testdata::manifest("ext4/ext4-journal.manifest.tsv"),
    );
    // reuse.bin sits on blocks an earlier transaction journaled and a later
    // one revoked: flr matches the source tree (check_manifest above, and
    // gen.sh's e2fsck-recovered mount); ext4-view 1.0 replays the revoked
    // copies and returns old directory blocks inside the file.
    check_against_ext4_view(&found, &image_bytes("ext4-journal"), &["reuse.bin"]);
}

#[test]
fn symlinks_are_not_followed() {
    let fs = open_fixture("ext4");
    let link = |p: &str| fs.read_link(&FsPath::parse(p)).unwrap();
    assert_eq!(link("/dir/link-out"), b"../../../etc/passwd");
    assert_eq!(link("/link-abs"), b"/etc/hostname");
    assert_eq!(link("/link-rel"), b"dir/nested/deep/file.txt");
    assert_eq!(
        link("/link-long"),
        b"this/is/a/rather/long/symlink/target/that/does/not/fit/in/the/inode/at/all"
    );
    let m = fs.metadata(&FsPath::parse("/link-dir")).unwrap();
    assert_eq!(m.kind, FileKind::Symlink);
    // A symlink in the middle of a path is not a directory.
    assert!(matches!(
        fs.metadata(&FsPath::parse("/link-dir/entry-001.txt")),
        Err(FsError::NotADirectory { .. })
    ));
    assert!(matches!(
        fs.open(&FsPath::parse("/link-rel")),
        Err(FsError::NotAFile { .. })
    ));
    assert!(matches!(
        fs.read_link(&FsPath::parse("/README.txt")),
        Err(FsError::Unsupported { .. })
    ));
    // `..` names the parent inside the image.
    let up = fs
        .metadata(&FsPath::parse("/dir/nested/../nested/deep/file.txt"))
        .unwrap();
    assert_eq!(up.size, 30);
    assert!(matches!(
        fs.metadata(&FsPath::parse("/nope")),
        Err(FsError::NotFound { .. })
    ));
    assert!(matches!(
        fs.read_dir(&FsPath::parse("/README.txt")),
        Err(FsError::NotADirectory { .. })
    ));
}

#[test]
fn holes_and_unwritten_extents_read_as_zeros() {
    let fs = open_fixture("ext4");
    let mut h = fs.open(&FsPath::parse("/prealloc.bin")).unwrap();
    let mut buf = vec![0xffu8; 256 * 1024];
    assert_eq!(h.read_at(0, &mut buf).unwrap(), 256 * 1024);
    assert_eq!(&buf[102400..102404], b"data");
    buf[102400..102404].fill(0);
    assert!(
        buf.iter().all(|&b| b == 0),
        "unwritten extents must read as zeros, not stale bytes"
    );
    let mut h = fs.open(&FsPath::parse("/sparse.bin")).unwrap();
    let mut six = [0xffu8; 6];
    assert_eq!(h.read_at(1048576, &mut six).unwrap(), 6);
    assert_eq!(&six, b"middle");
    assert_eq!(h.read_at(1048570, &mut six).unwrap(), 6);
    assert_eq!(six, [0; 6]);
    assert_eq!(h.read_at(3 * 1048576 - 2, &mut six).unwrap(), 2);
    assert_eq!(&six[..2], b"il");
    assert_eq!(h.read_at(3 * 1048576, &mut six).unwrap(), 0);
}

#[test]
fn random_access_matches_sequential() {
    for name in ["ext4", "ext3"] {
        let fs = open_fixture(name);
        for p in ["/medium.txt", "/islands.bin"] {
            let all = read_all(&fs, &FsPath::parse(p));
            let mut h = fs.open(&FsPath::parse(p)).unwrap();
            let mut off = 0u64;
            let mut step = 1usize;
            while off < all.len() as u64 {
                let mut b = vec![0u8; step];
                let n = h.read_at(off, &mut b).unwrap();
                assert_eq!(
                    &b[..n],
                    &all[off as usize..off as usize + n],
                    "{name}{p} at {off}"
                );
                off += (n as u64).max(1) * 3 + 7;
                step = step * 7 % 50_000 + 1;
            }
        }
    }
}

#[test]
fn encrypted_inodes_are_refused() {
    let fs = open_fixture("ext4-crypt");
    let text = std::fs::read_to_string(
        flr_testdata::testdata_dir().join("ext4/ext4-crypt.unreadable.tsv"),
    )
    .unwrap();
    let refused: Vec<(&str, &str)> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('\t'))
        .collect();
    assert_eq!(refused.len(), 3);
    for (p, why) in refused {
        let path = FsPath::parse(p);
        let m = match fs.metadata(&path) {
            Ok(m) => m,
            // Names inside an encrypted directory cannot be looked up.
            Err(FsError::Unsupported { reason, .. }) => {
                assert!(reason.contains(why), "{p}: {reason}");
                continue;
            }
            Err(e) => panic!("{p}: {e}"),
        };
        let reason = m
            .unreadable
            .unwrap_or_else(|| panic!("{p} should be unreadable"));
        assert!(reason.contains(why), "{p}: {reason}");
        let err = match m.kind {
            FileKind::Dir => fs.read_dir(&path).map(|_| ()).unwrap_err(),
            _ => fs.open(&path).map(|_| ()).unwrap_err(),
        };
        assert!(matches!(err, FsError::Unsupported { .. }), "{p}: {err}");
    }
    // The parent listing still shows the encrypted entries.
    let root: Vec<Vec<u8>> = fs
        .read_dir(&FsPath::root())
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(root.contains(&b"secret".to_vec()));
    let plain = fs.read_dir(&FsPath::parse("/plain")).unwrap();
    assert!(plain[0].meta.unreadable.is_some());
    assert_eq!(read_all(&fs, &FsPath::parse("/ok.txt")), b"readable\n");
}

#[test]
fn probe_recognises_only_ext() {
    let p = flr_testdata::fixture("ext4/ext4.img.zst");
    let src = FileSource::open(&p).unwrap();
    assert!(probe(&src));
    assert!(!probe(&MemSource::new(vec![0; 4096])));
    assert!(!probe(&MemSource::new(vec![0; 100])));
}

#[test]
fn corrupt_images_fail_cleanly() {
    let img = image_bytes("ext4");
    let open = |v: Vec<u8>| Ext4Fs::open(Arc::new(MemSource::new(v)) as Arc<dyn ReadAt>);
    // Truncated: the superblock is there, the rest is not.
    let r = open(img[..64 * 1024].to_vec());
    if let Ok(fs) = r {
        assert!(
            fs.read_dir(&FsPath::root()).is_err()
                || fs.open(&FsPath::parse("/medium.txt")).is_err()
        );
    }
    // Zeroed superblock.
    let mut z = img.clone();
    z[1024..2048].fill(0);
    assert!(matches!(open(z), Err(FsError::Corrupt { .. })));
    // Absurd geometry.
    let mut g = img.clone();
    g[1024 + 0x18] = 30;
    assert!(open(g).is_err());
}

/// Flips bytes all over the metadata of each fixture and walks the result:
/// errors are fine, panics and hangs are not.
#[test]
fn damaged_metadata_never_panics() {
    damage_rounds(40, 0x9e37_79b9_7f4a_7c15);
}

/// The same, many more rounds: `FLR_SOAK_ROUNDS=5000 FLR_SOAK_SEED=7 cargo
/// test --release -p flr-ext4 --test fixtures -- --ignored soak`.
#[test]
#[ignore]
fn damaged_metadata_soak() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    damage_rounds(env("FLR_SOAK_ROUNDS", 1000), env("FLR_SOAK_SEED", 1) | 1);
}

/// Reports rounds that take long (a damaged image must not make flr crawl).
struct SlowRound {
    name: &'static str,
    round: u64,
    started: std::time::Instant,
}

impl Drop for SlowRound {
    fn drop(&mut self) {
        let t = self.started.elapsed();
        if t > std::time::Duration::from_secs(2) {
            eprintln!("slow round: {} #{}: {t:?}", self.name, self.round);
        }
    }
}

fn damage_rounds(rounds: u64, seed0: u64) {
    for name in ["ext4", "ext2", "ext4-journal", "ext4-metabg"] {
        let img = image_bytes(name);
        let mut seed = seed0;
        for round in 0..rounds {
            let started = std::time::Instant::now();
            let _slow = SlowRound {
                name,
                round,
                started,
            };
            if std::env::var_os("FLR_SOAK_TRACE").is_some() {
                eprintln!("round {name} #{round}");
            }
            let mut v = img.clone();
            for _ in 0..200 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // Aim at the first 1.5 MiB, where the metadata lives.
                let at = (seed % (1536 * 1024)) as usize;
                if (1024..1024 + 0x100).contains(&at) && round % 4 != 0 {
                    continue; // mostly keep the superblock sane so deeper code runs
                }
                v[at] ^= (seed >> 32) as u8 | 1;
            }
            if let Ok(dump) = std::env::var("FLR_SOAK_DUMP") {
                if dump == format!("{name}:{round}") {
                    std::fs::write("/tmp/flr-soak-dump.img", &v).unwrap();
                }
            }
            let Ok(fs) = Ext4Fs::open(Arc::new(MemSource::new(v))) else {
                continue;
            };
            let _ = fs.info();
            let mut todo = vec![FsPath::root()];
            let mut seen = std::collections::HashSet::new();
            let mut visited = 0;
            while let Some(d) = todo.pop() {
                visited += 1;
                if visited > 2000 {
                    break;
                }
                // The streamed listing meets the same damage: it must end, not panic.
                if let Ok(stream) = fs.read_dir_stream(&d) {
                    let _ = stream.take(100_000).count();
                }
                let Ok(entries) = fs.read_dir(&d) else {
                    continue;
                };
                for e in entries {
                    let p = d.join(&e.name);
                    match e.meta.kind {
                        // A damaged entry can point back up the tree: walk
                        // each directory once (as any recursive walk must).
                        FileKind::Dir if seen.insert(e.meta.inode) => todo.push(p),
                        FileKind::Dir => {}
                        FileKind::Symlink => {
                            let _ = fs.read_link(&p);
                        }
                        _ => {
                            if let Ok(mut h) = fs.open(&p) {
                                let mut b = vec![0u8; 1 << 16];
                                let _ = h.read_at(0, &mut b);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn meta_bg_descriptors_are_found() {
    // Files in groups 16+ need the descriptor block of the second metagroup.
    let fs = open_fixture("ext4-metabg");
    check_info(&fs, "ext4-metabg", "ext4");
    let found = walk(&fs);
    check_manifest(&found, &flr_testdata::manifest("ext4/tree.manifest.tsv"));
    assert!(found["many/entry-300.txt"].meta.inode.unwrap() > 16 * 16);
}

#[test]
fn inline_data_is_refused_not_misread() {
    let fs = open_fixture("ext4-inline");
    let text = std::fs::read_to_string(
        flr_testdata::testdata_dir().join("ext4/ext4-inline.unreadable.tsv"),
    )
    .unwrap();
    let refused: Vec<(&str, &str)> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('\t'))
        .collect();
    for (p, why) in &refused {
        let path = FsPath::parse(p);
        let m = fs.metadata(&path).unwrap();
        assert!(
            m.unreadable.as_deref().is_some_and(|r| r.contains(why)),
            "{p}: {:?}",
            m.unreadable
        );
        let err = match m.kind {
            FileKind::Dir => fs.read_dir(&path).map(|_| ()).unwrap_err(),
            _ => fs.open(&path).map(|_| ()).unwrap_err(),
        };
        assert!(matches!(err, FsError::Unsupported { .. }), "{p}: {err}");
    }
    // Everything else reads as in the source tree.
    for m in flr_testdata::manifest("ext4/ext4-inline.manifest.tsv") {
        let below_refused = refused
            .iter()
            .any(|(p, _)| m.path == *p || m.path.starts_with(&format!("{p}/")));
        if below_refused || m.kind != 'f' {
            continue;
        }
        let path = FsPath::parse(&m.path);
        match fs.metadata(&path).unwrap().unreadable {
            Some(_) => assert!(m.size <= 60, "{}: only tiny files are inline", m.path),
            None => assert_eq!(
                flr_testdata::sha256_hex(&read_all(&fs, &path)),
                m.sha256,
                "{}",
                m.path
            ),
        }
    }
    assert_eq!(read_all(&fs, &FsPath::parse("/big.txt")).len(), 2000 * 18);
}

#[test]
fn streamed_listings_equal_the_collected_ones() {
    // Linear and htree folders (the fixtures' "many" folders are indexed).
    for name in ["ext4", "ext3", "ext2", "ext4-journal", "ext4-metabg"] {
        let fs = open_fixture(name);
        let mut todo = vec![FsPath::root()];
        let mut dirs = 0;
        while let Some(dir) = todo.pop() {
            dirs += 1;
            let listed = fs.read_dir(&dir).unwrap();
            let streamed: Vec<_> = fs
                .read_dir_stream(&dir)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(listed.len(), streamed.len(), "{name}:{dir}");
            for (a, b) in listed.iter().zip(&streamed) {
                assert_eq!((&a.name, &a.meta), (&b.name, &b.meta), "{name}:{dir}");
            }
            for e in listed {
                if e.meta.kind == FileKind::Dir {
                    todo.push(dir.join(&e.name));
                }
            }
        }
        assert!(dirs > 3, "{name}: {dirs} folders");
        assert!(matches!(
            fs.read_dir_stream(&FsPath::parse("/no-such-folder")),
            Err(FsError::NotFound { .. })
        ));
    }
}
