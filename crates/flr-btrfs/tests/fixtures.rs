//! The committed fixtures (testdata/btrfs, made by gen.sh through the
//! kernel's Btrfs): every object against the manifests taken from the
//! kernel mount, subvolumes against `btrfs subvolume list`, degraded
//! RAID5/RAID6/RAID1C4 reads, the tree-log state, and corrupted copies.

use std::collections::BTreeMap;
use std::sync::Arc;

use flr_btrfs::{assemble, BtrfsFs, Device, Profile, TreeLog};
use flr_fs::{FileKind, Filesystem, FsPath};
use flr_io::{MemSource, ReadAt, Slice, Source};

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(flr_testdata::fixture(rel)).unwrap()
}

fn mem(bytes: Vec<u8>) -> Source {
    Arc::new(MemSource::new(bytes))
}

fn file_sha(fs: &dyn Filesystem, p: &FsPath) -> Result<(u64, String), flr_fs::FsError> {
    let mut h = fs.open(p)?;
    let mut data = Vec::new();
    // Odd read sizes cross sector, stripe and extent boundaries.
    let mut buf = vec![0u8; 77_777];
    loop {
        let n = h.read_at(data.len() as u64, &mut buf)?;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
    }
    Ok((data.len() as u64, flr_testdata::sha256_hex(&data)))
}

/// Checks every line of a manifest against `fs` (paths relative to its root).
fn check_manifest(fs: &dyn Filesystem, rel: &str) -> usize {
    let m = flr_testdata::manifest(rel);
    for e in &m {
        let p = FsPath::parse(&e.path);
        let meta = fs
            .metadata(&p)
            .unwrap_or_else(|err| panic!("{rel}: {}: {err}", e.path));
        match e.kind {
            'd' => assert_eq!(meta.kind, FileKind::Dir, "{}", e.path),
            'l' => {
                assert_eq!(meta.kind, FileKind::Symlink, "{}", e.path);
                let t = fs.read_link(&p).unwrap();
                assert_eq!(t.len() as u64, e.size, "{}", e.path);
                assert_eq!(flr_testdata::sha256_hex(&t), e.sha256, "{}", e.path);
            }
            _ => {
                assert_eq!(meta.kind, FileKind::File, "{}", e.path);
                assert_eq!(meta.size, e.size, "{}", e.path);
                let (n, sha) = file_sha(fs, &p).unwrap_or_else(|err| panic!("{}: {err}", e.path));
                assert_eq!((n, sha.as_str()), (e.size, e.sha256.as_str()), "{}", e.path);
            }
        }
    }
    // Nothing more than the manifest: walk and count.
    let mut count = 0;
    let mut todo = vec![FsPath::root()];
    while let Some(d) = todo.pop() {
        for e in fs.read_dir(&d).unwrap() {
            count += 1;
            if e.meta.kind == FileKind::Dir {
                todo.push(d.join(&e.name));
            }
        }
    }
    assert_eq!(count, m.len(), "{rel}: objects listed");
    m.len()
}

fn lines(rel: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(flr_testdata::testdata_dir().join(rel))
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

fn check_subvols(fs: &BtrfsFs, rel: &str, default_rel: &str) {
    let want = lines(rel);
    let got = fs.subvolumes().unwrap();
    assert_eq!(got[0].id, 5);
    assert_eq!(got.len(), want.len() + 1, "{:?}", got);
    for (g, w) in got[1..].iter().zip(&want) {
        assert_eq!(g.id.to_string(), w[0]);
        assert_eq!(g.path, w[1]);
        assert_eq!(g.read_only, w[2] == "1", "{}", g.path);
        assert_eq!(g.uuid.as_deref(), Some(w[3].as_str()), "{}", g.path);
        assert_eq!(g.parent_uuid.as_deref().unwrap_or("-"), w[4], "{}", g.path);
        assert!(g.created.is_some() && g.generation > 0);
    }
    let def: u64 = lines(default_rel)[0][0].parse().unwrap();
    assert_eq!(fs.default_subvolume(), def);
    assert!(got.iter().any(|s| s.id == def && s.is_default));
}

#[test]
fn features_match_the_kernel_mount() {
    let fs = BtrfsFs::open(mem(read("btrfs/features.img.zst"))).unwrap();
    assert_eq!(fs.info().label.as_deref(), Some("flr-features"));
    assert_eq!(
        fs.info().id.as_deref(),
        Some("6c1f0a52-3b8e-4d07-9a1e-5f2b7c9d0e11")
    );
    assert_eq!(fs.csum_type(), flr_btrfs::CsumType::XxHash64);
    assert_eq!(fs.tree_log(), TreeLog::Clean);
    // The default subvolume is `sub`: its root is what the filesystem shows.
    assert_eq!(fs.subvolume_id(), 256);
    assert!(fs.metadata(&FsPath::parse("/nested/n.txt")).is_ok());
    check_subvols(&fs, "btrfs/features.subvols.tsv", "btrfs/features.default");
    let top = fs.open_subvolume(5).unwrap();
    let n = check_manifest(&top, "btrfs/features.tsv");
    assert!(n > 2000);
    // The snapshot copied the link to sub/nested: an empty folder there.
    let e = top.read_dir(&FsPath::parse("/snap/nested")).unwrap();
    assert!(e.is_empty());
    // The same subvolume by path and by id.
    let snap = top.open_subvolume_path("/snap/").unwrap();
    assert_eq!(snap.subvolume_id(), 258);
    assert!(snap.metadata(&FsPath::parse("/a.txt")).is_ok());
    assert!(top.open_subvolume_path("nope").is_err());
    assert!(top.open_subvolume(4).is_err());
    // `..` never leaves the view's root.
    assert!(snap.metadata(&FsPath::parse("/../../a.txt")).is_ok());
    // xattrs, as the kernel lists them.
    for w in lines("btrfs/features.xattrs.tsv") {
        let x = top.xattrs(&FsPath::parse(&w[0])).unwrap();
        let hit = x.iter().find(|x| x.name == w[1].as_bytes()).unwrap();
        assert_eq!(hex::encode(&hit.value), w[2], "{} {}", w[0], w[1]);
    }
    // mkfs.btrfs --rootdir kept the hard link as one inode with two names.
    let a = top.stat(&FsPath::parse("/from-mkfs/etc/hostname")).unwrap();
    assert_eq!(a.nlink, 2);
    let i = |p: &str| top.metadata(&FsPath::parse(p)).unwrap().inode;
    assert_eq!(
        i("/from-mkfs/etc/hostname"),
        i("/from-mkfs/etc/hostname.hardlink")
    );
    let st = top.stat(&FsPath::parse("/nocow.bin")).unwrap();
    assert_ne!(st.flags & 1, 0, "nocow.bin has nodatasum");
    assert_eq!(st.mode & 0o170000, 0o100000);
}

#[test]
fn tree_log_is_reported() {
    let fs = BtrfsFs::open(mem(read("btrfs/log.img.zst"))).unwrap();
    match fs.tree_log() {
        TreeLog::NotReplayed { subvolumes, .. } => assert_eq!(subvolumes, vec![5]),
        other => panic!("{other:?}"),
    }
    let m = flr_testdata::manifest("btrfs/log.tsv");
    let (n, sha) = file_sha(&fs, &FsPath::parse(&m[0].path)).unwrap();
    assert_eq!((n, sha), (m[0].size, m[0].sha256.clone()));
    // Only the log holds it.
    assert!(fs.metadata(&FsPath::parse("/fsynced.txt")).is_err());
}

fn raid_devices(name: &str, n: usize) -> Vec<Device> {
    (1..=n)
        .map(|i| {
            Device::read(
                mem(read(&format!("btrfs/{name}-{i}.img.zst"))),
                &format!("d{i}"),
            )
            .unwrap()
        })
        .collect()
}

fn check_raid(name: &str, n: usize, profile: Profile, survivable: usize) {
    let all = raid_devices(name, n);
    let a = assemble(&all);
    assert_eq!(a.len(), 1);
    assert!(a[0].complete());
    let fs = a[0].open().unwrap();
    assert!(fs
        .profiles()
        .iter()
        .any(|(k, p)| k == "data" && *p == profile));
    assert!(fs
        .profiles()
        .iter()
        .any(|(k, p)| k == "metadata" && *p == profile));
    check_manifest(&fs, "btrfs/raid.tsv");
    // Every set of `survivable` members removed.
    let mut sets: Vec<Vec<usize>> = vec![vec![]];
    for _ in 0..survivable {
        sets = sets
            .into_iter()
            .flat_map(|s| {
                let from = s.last().map_or(0, |l| l + 1);
                (from..n).map(move |k| {
                    let mut t = s.clone();
                    t.push(k);
                    t
                })
            })
            .collect();
    }
    for gone in sets {
        let devs: Vec<Device> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| !gone.contains(i))
            .map(|(_, d)| d.clone())
            .collect();
        let a = assemble(&devs);
        assert!(!a[0].complete());
        let mut missing: Vec<u64> = a[0].missing.iter().map(|m| m.devid.unwrap()).collect();
        missing.sort();
        assert_eq!(
            missing,
            gone.iter().map(|g| *g as u64 + 1).collect::<Vec<_>>()
        );
        let fs = a[0]
            .open()
            .unwrap_or_else(|e| panic!("{name} without {gone:?}: {e}"));
        check_manifest(&fs, "btrfs/raid.tsv");
    }
}

#[test]
fn raid5_reads_with_any_member_missing() {
    check_raid("raid5", 3, Profile::Raid5, 1);
}

#[test]
fn raid6_reads_with_any_two_members_missing() {
    check_raid("raid6", 4, Profile::Raid6, 2);
}

#[test]
fn raid1c4_reads_with_any_three_members_missing() {
    check_raid("raid1c4", 4, Profile::Raid1c4, 3);
}

#[test]
fn too_many_missing_is_an_error_naming_the_devices() {
    let all = raid_devices("raid5", 3);
    let a = assemble(&all[..1]);
    assert_eq!(a[0].missing.len(), 2);
    let err = match a[0].open() {
        Err(e) => e.to_string(),
        Ok(fs) => fs
            .open_subvolume(5)
            .and_then(|t| file_sha(&t, &FsPath::parse("/big.bin")))
            .unwrap_err()
            .to_string(),
    };
    assert!(err.contains("RAID5") || err.contains("missing"), "{err}");
}

#[test]
fn opensuse_layout() {
    let disk = mem(read("btrfs/suse.vhd.zst"));
    let part = lines("btrfs/suse.part");
    let (off, len): (u64, u64) = (part[0][0].parse().unwrap(), part[0][1].parse().unwrap());
    let p2: Source = Arc::new(Slice::new(disk, off, len, "partition p2").unwrap());
    let head = {
        let mut h = vec![0u8; 68 << 10];
        p2.read_exact_at(0, &mut h).unwrap();
        h
    };
    assert!(flr_btrfs::probe(&head, p2.as_ref()));
    assert!(!flr_btrfs::probe(&vec![0u8; 68 << 10], p2.as_ref()));
    let fs = BtrfsFs::open(p2).unwrap();
    check_subvols(&fs, "btrfs/suse.subvols.tsv", "btrfs/suse.default");
    // The default subvolume (snapshot 1) is what the root shows.
    let motd = |fs: &BtrfsFs| {
        let mut h = fs.open(&FsPath::parse("/etc/motd")).unwrap();
        let mut b = vec![0u8; 100];
        let n = h.read_at(0, &mut b).unwrap();
        String::from_utf8(b[..n].to_vec()).unwrap()
    };
    assert_eq!(motd(&fs), "Welcome, patched twice\n");
    let snap2 = fs.open_subvolume_path("@/.snapshots/2/snapshot").unwrap();
    assert_eq!(motd(&snap2), "Welcome, patched\n");
    assert_eq!(motd(&fs.open_subvolume_path("@").unwrap()), "Welcome\n");
    let top = fs.open_subvolume(5).unwrap();
    check_manifest(&top, "btrfs/suse.tsv");
    let by_path: BTreeMap<String, u64> = fs
        .subvolumes()
        .unwrap()
        .into_iter()
        .map(|s| (s.path, s.id))
        .collect();
    assert_eq!(by_path["@/home"], 257);
}

/// Finds `needle` in `hay`, every place.
fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn corrupt_copies() {
    let img = read("btrfs/features.img.zst");
    let fs = BtrfsFs::open(mem(img.clone()))
        .unwrap()
        .open_subvolume(5)
        .unwrap();
    let want = file_sha(&fs, &FsPath::parse("/inline-2049")).unwrap();
    let mut h = fs.open(&FsPath::parse("/inline-2049")).unwrap();
    let mut head = vec![0u8; 64];
    h.read_at(0, &mut head).unwrap();
    drop(h);
    // One flipped byte in the file's data sector: an error naming the logical
    // address, never other bytes.
    let at = find_all(&img, &head);
    assert_eq!(at.len(), 1, "the data is stored once (single profile)");
    let mut bad = img.clone();
    bad[at[0] + 100] ^= 1;
    let fs2 = BtrfsFs::open(mem(bad)).unwrap().open_subvolume(5).unwrap();
    let err = file_sha(&fs2, &FsPath::parse("/inline-2049"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("checksum mismatch") && err.contains("logical address 0x"),
        "{err}"
    );
    // Metadata is DUP: spoil the first copy of the leaf naming the file and the
    // second copy serves.
    let leaf = find_all(&img, b"inline-2049");
    assert!(leaf.len() >= 2, "{leaf:?}");
    let mut bad = img.clone();
    bad[leaf[0]] ^= 0x20;
    let fs3 = BtrfsFs::open(mem(bad.clone()))
        .unwrap()
        .open_subvolume(5)
        .unwrap();
    assert_eq!(
        file_sha(&fs3, &FsPath::parse("/inline-2049")).unwrap(),
        want
    );
    // Every copy spoiled: an error, not a listing without the file.
    for &l in &leaf {
        bad[l] = b'X';
    }
    let e = BtrfsFs::open(mem(bad)).and_then(|f| {
        f.open_subvolume(5)?
            .metadata(&FsPath::parse("/inline-2049"))
    });
    assert!(e.is_err());
    // A bad primary superblock: the mirror at 64 MiB serves; both bad: an
    // error naming the primary's offset.
    let mut bad = img;
    bad[0x10000 + 0x100] ^= 1;
    let fs4 = BtrfsFs::open(mem(bad.clone()))
        .unwrap()
        .open_subvolume(5)
        .unwrap();
    assert_eq!(
        file_sha(&fs4, &FsPath::parse("/inline-2049")).unwrap(),
        want
    );
    bad[0x400_0000 + 0x100] ^= 1;
    let err = BtrfsFs::open(mem(bad)).unwrap_err().to_string();
    assert!(err.contains("0x10000") && err.contains("checksum"), "{err}");
}

#[test]
fn raid5_repairs_a_corrupt_data_piece_from_parity() {
    let mut all = raid_devices("raid5", 3);
    let fs = assemble(&all)[0].open().unwrap();
    let mut h = fs.open(&FsPath::parse("/big.bin")).unwrap();
    let mut probe = vec![0u8; 64];
    h.read_at(200_000, &mut probe).unwrap();
    drop(h);
    drop(fs);
    // Spoil that piece on whichever device holds it.
    let mut spoiled = 0;
    for (i, d) in all.iter_mut().enumerate() {
        let mut img = read(&format!("btrfs/raid5-{}.img.zst", i + 1));
        let hits = find_all(&img, &probe);
        if hits.is_empty() {
            continue;
        }
        img[hits[0]] ^= 0xff;
        *d = Device::read(mem(img), d.location()).unwrap();
        spoiled += 1;
    }
    assert_eq!(spoiled, 1);
    let fs = assemble(&all)[0].open().unwrap();
    check_manifest(&fs, "btrfs/raid.tsv");
}
