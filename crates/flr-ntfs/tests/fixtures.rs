//! flr-ntfs against the committed fixture made by mkntfs and ntfs-3g
//! (testdata/ntfs/gen.sh): the manifest and mtimes of the source mirror,
//! the serial set with ntfslabel, ntfsinfo's geometry, and refusals.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use flr_fs::{FileKind, Filesystem, FsError, FsPath};
use flr_io::{MemSource, ReadAt};
use flr_ntfs::{probe, NtfsFs};

fn testdata(name: &str) -> String {
    std::fs::read_to_string(flr_testdata::testdata_dir().join("ntfs").join(name)).unwrap()
}

fn unreadable() -> Vec<(String, String)> {
    testdata("ntfs.unreadable.tsv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (p, r) = l.split_once('\t').unwrap();
            (p.to_string(), r.to_string())
        })
        .collect()
}

#[test]
fn listing_and_contents_match_the_source() {
    let fs = open_fixture();
    let found = walk(&fs);
    let manifest = flr_testdata::manifest("ntfs/ntfs.manifest.tsv");
    let want: BTreeMap<&str, _> = manifest.iter().map(|m| (m.path.as_str(), m)).collect();
    assert_eq!(
        found.keys().map(String::as_str).collect::<Vec<_>>(),
        want.keys().copied().collect::<Vec<_>>(),
        "listing (metafiles hidden, DOS names skipped) differs from the manifest"
    );
    let refused: BTreeMap<String, String> = unreadable().into_iter().collect();
    for (p, m) in &want {
        let f = &found[*p];
        assert_eq!(f.kind, m.kind, "{p}: kind");
        if m.kind == 'f' || m.kind == 'l' {
            assert_eq!(f.size, m.size, "{p}: size");
        }
        if let Some(why) = refused.get(*p) {
            let r = f
                .meta
                .unreadable
                .as_deref()
                .unwrap_or_else(|| panic!("{p} must be unreadable"));
            assert!(r.contains(why.as_str()), "{p}: {r}");
        } else {
            assert_eq!(f.meta.unreadable, None, "{p}");
            assert_eq!(f.sha256, m.sha256, "{p}: content");
        }
        assert!(f.meta.inode.is_some_and(|i| i >= 24), "{p}: record number");
        assert_eq!(f.meta.mode, None);
    }
    // Hard links share a record.
    assert_eq!(
        found["README.txt"].meta.inode,
        found["hardlink.txt"].meta.inode
    );
}

#[test]
fn mtimes_match_the_source() {
    let fs = open_fixture();
    let found = walk(&fs);
    for l in testdata("ntfs.attrs.tsv")
        .lines()
        .filter(|l| !l.starts_with('#'))
    {
        let (p, t) = l.split_once('\t').unwrap();
        let (s, ns) = t.split_once('.').unwrap();
        let (mut secs, mut nanos): (i64, u32) = (s.parse().unwrap(), ns.parse().unwrap());
        if secs < 0 && nanos > 0 {
            secs -= 1;
            nanos = 1_000_000_000 - nanos;
        }
        let m = found[p].meta.mtime.expect("mtime");
        assert_eq!((m.secs, m.nanos), (secs, nanos), "{p}: mtime");
    }
}

#[test]
fn info_matches_the_tools() {
    let fs = open_fixture();
    let info = fs.info();
    assert_eq!(info.fs_type, "ntfs");
    assert_eq!(info.label.as_deref(), Some("flr-ntfs"));
    // Set by gen.sh with ntfslabel --new-serial; the boot sector dump shows it.
    assert_eq!(info.id.as_deref(), Some("1234567890ABCDEF"));
    assert!(testdata("ntfs.bootsector.txt")
        .lines()
        .any(|l| l.starts_with("00000040:") && l.contains("efcd ab90 7856 3412")));
    let ni = testdata("ntfs.ntfsinfo.txt");
    let field = |k: &str| -> u64 {
        ni.lines()
            .find_map(|l| l.trim().strip_prefix(k))
            .map(|v| v.trim().parse().unwrap())
            .unwrap()
    };
    assert_eq!(u64::from(info.block_size), field("Cluster Size:"));
    assert_eq!(
        info.total_bytes / u64::from(info.block_size),
        field("Volume Size in Clusters:")
    );
    let free_clusters: u64 = ni
        .lines()
        .find_map(|l| l.trim().strip_prefix("Free Clusters:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        info.free_bytes,
        Some(free_clusters * u64::from(info.block_size))
    );
}

#[test]
fn links_and_their_targets() {
    let fs = open_fixture();
    let link = |p: &str| String::from_utf8(fs.read_link(&FsPath::parse(p)).unwrap()).unwrap();
    assert_eq!(link("/reparse-rel"), "dir\\nested\\deep\\file.txt");
    assert_eq!(
        link("/reparse-abs"),
        "\\??\\C:\\Windows\\System32\\drivers\\etc\\hosts"
    );
    assert_eq!(link("/junction"), "\\??\\C:\\Users");
    assert_eq!(link("/wsl-link"), "../../../etc/passwd");
    assert_eq!(link("/link-interix"), "dir/nested/deep/file.txt");
    let j = fs.metadata(&FsPath::parse("/junction")).unwrap();
    assert_eq!(j.kind, FileKind::Symlink);
    assert!(matches!(
        fs.read_dir(&FsPath::parse("/junction")),
        Err(FsError::NotADirectory { .. })
    ));
    assert!(matches!(
        fs.open(&FsPath::parse("/reparse-rel")),
        Err(FsError::NotAFile { .. })
    ));
    assert!(matches!(
        fs.read_link(&FsPath::parse("/README.txt")),
        Err(FsError::Unsupported { .. })
    ));
}

#[test]
fn refused_files_fail_to_open() {
    let fs = open_fixture();
    let list = unreadable();
    assert_eq!(list.len(), 3);
    for (p, why) in list {
        match fs.open(&FsPath::parse(&p)) {
            Err(FsError::Unsupported { reason, .. }) => {
                assert!(reason.contains(&why), "{p}: {reason}")
            }
            Err(e) => panic!("{p}: wrong error {e}"),
            Ok(_) => panic!("{p}: opened, but its data cannot be returned correctly"),
        }
    }
    // A small file in the compressed directory is stored resident: readable.
    assert_eq!(read_all(&fs, &FsPath::parse("/comp/small.txt")), b"tiny\n");
    // The big one is LZNT1-compressed by ntfs-3g and decompresses to its source bytes
    // (the manifest check covers its sha256; here: it really is stored compressed).
    let big = fs.metadata(&FsPath::parse("/comp/big.txt")).unwrap();
    assert_eq!(big.unreadable, None);
    assert_eq!(read_all(&fs, &FsPath::parse("/comp/big.txt")).len(), 65536);
}

#[test]
fn names_streams_and_lookups() {
    let fs = open_fixture();
    // The 8.3 alias is not listed, and only the unnamed stream is returned.
    let root: Vec<String> = fs
        .read_dir(&FsPath::root())
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .collect();
    assert!(root.contains(&"LongFileName.txt".to_string()));
    assert!(!root.iter().any(|n| n.contains('~') || n.starts_with('$')));
    assert_eq!(read_all(&fs, &FsPath::parse("/ads.txt")), b"main stream\n");
    // Exact names first; otherwise a unique case-insensitive match.
    assert_eq!(
        fs.metadata(&FsPath::parse("/longfilename.TXT"))
            .unwrap()
            .size,
        10
    );
    assert_eq!(
        fs.metadata(&FsPath::parse("/CAFÉ/NAÏVE-Ü.TXT"))
            .unwrap()
            .size,
        7
    );
    // Metafiles are hidden from the listing but still resolve.
    assert_eq!(fs.metadata(&FsPath::parse("/$MFT")).unwrap().inode, Some(0));
    assert!(matches!(
        fs.metadata(&FsPath::parse("/nope")),
        Err(FsError::NotFound { .. })
    ));
    assert!(matches!(
        fs.metadata(&FsPath::parse("/README.txt/x")),
        Err(FsError::NotADirectory { .. })
    ));
}

#[test]
fn sparse_and_fragmented_reads() {
    let fs = open_fixture();
    let mut h = fs.open(&FsPath::parse("/sparse.bin")).unwrap();
    let mut six = [0xffu8; 6];
    assert_eq!(h.read_at(1048576, &mut six).unwrap(), 6);
    assert_eq!(&six, b"middle");
    assert_eq!(h.read_at(1048570, &mut six).unwrap(), 6);
    assert_eq!(six, [0; 6]);
    // Random access across the 512 runs of the attribute-list file.
    let all = read_all(&fs, &FsPath::parse("/fragmented.bin"));
    for k in [0usize, 1, 160, 161, 382, 383, 511] {
        assert_eq!(
            &all[k * 4096..k * 4096 + 11],
            format!("block {k:04}\n").as_bytes()
        );
    }
    let mut h = fs.open(&FsPath::parse("/fragmented.bin")).unwrap();
    let mut off = 0u64;
    let mut step = 1usize;
    while off < all.len() as u64 {
        let mut b = vec![0u8; step];
        let n = h.read_at(off, &mut b).unwrap();
        assert_eq!(&b[..n], &all[off as usize..off as usize + n], "at {off}");
        off += (n as u64).max(1) * 3 + 5;
        step = step * 7 % 30_000 + 1;
    }
}

#[test]
fn probe_and_corrupt_inputs() {
    let img = std::fs::read(flr_testdata::fixture("ntfs/ntfs.img.zst")).unwrap();
    assert!(probe(&MemSource::new(img.clone())));
    assert!(!probe(&MemSource::new(vec![0; 512])));
    assert!(!probe(&MemSource::new(vec![0; 4])));
    let open = |v: Vec<u8>| NtfsFs::open(Arc::new(MemSource::new(v)) as Arc<dyn ReadAt>);
    // Truncated: the boot sector claims more than there is.
    assert!(open(img[..1 << 20].to_vec()).is_err());
    // Zeroed boot sector.
    let mut z = img.clone();
    z[..512].fill(0);
    assert!(open(z).is_err());
    // Garbage in the root directory's file record (record 5 at MFT + 5 KiB).
    let mft = u64::from_le_bytes(img[0x30..0x38].try_into().unwrap()) as usize * 4096;
    let mut g = img.clone();
    for (i, b) in g[mft + 5 * 1024..mft + 6 * 1024].iter_mut().enumerate() {
        *b = (i * 37 % 251) as u8;
    }
    assert!(open(g).is_err());
    // Garbage in a file's record: that file fails, the rest still lists.
    let fs = open(img.clone()).unwrap();
    let rec = fs
        .metadata(&FsPath::parse("/medium.txt"))
        .unwrap()
        .inode
        .unwrap() as usize;
    let mut g = img.clone();
    for (i, b) in g[mft + rec * 1024 + 16..mft + rec * 1024 + 1024]
        .iter_mut()
        .enumerate()
    {
        *b = (i * 91 % 253) as u8;
    }
    let fs = open(g).unwrap();
    let root = fs.read_dir(&FsPath::root()).unwrap();
    let bad = root.iter().find(|e| e.name == b"medium.txt").unwrap();
    assert!(bad.meta.unreadable.is_some());
    assert!(fs.open(&FsPath::parse("/medium.txt")).is_err());
    assert!(fs.open(&FsPath::parse("/README.txt")).is_ok());
}

/// Flips bytes across the MFT and index blocks and walks the result:
/// errors are fine, panics and hangs are not.
#[test]
fn damaged_metadata_never_panics() {
    damage_rounds(25, 0x2545_f491_4f6c_dd1d);
}

/// The same, many more rounds: `FLR_SOAK_ROUNDS=20000 FLR_SOAK_SEED=7 cargo
/// test --release -p flr-ntfs --test fixtures -- --ignored soak`.
#[test]
#[ignore]
fn damaged_metadata_soak() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    damage_rounds(env("FLR_SOAK_ROUNDS", 2000), env("FLR_SOAK_SEED", 1) | 1);
}

/// Panic locations seen while walking damaged images (the ntfs crate's
/// panics are caught by flr-ntfs and turned into errors; flr-ntfs's own
/// code must not panic at all).
static PANICS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn record_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_damage_test = std::thread::current()
                .name()
                .is_some_and(|n| n.contains("damaged_metadata"));
            if let (Some(l), true) = (info.location(), in_damage_test) {
                PANICS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("{}:{}", l.file(), l.line()));
            }
            previous(info);
        }));
    });
}

fn damage_rounds(rounds: u64, mut seed: u64) {
    record_panics();
    let img = std::fs::read(flr_testdata::fixture("ntfs/ntfs.img.zst")).unwrap();
    let mft = u64::from_le_bytes(img[0x30..0x38].try_into().unwrap()) as usize * 4096;
    for _round in 0..rounds {
        let mut v = img.clone();
        for _ in 0..100 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Mostly the MFT (first 400 records), sometimes anywhere.
            let at = if seed & 3 == 0 {
                (seed >> 8) as usize % v.len()
            } else {
                mft + (seed >> 8) as usize % (400 * 1024)
            };
            v[at] ^= (seed >> 40) as u8 | 1;
        }
        let Ok(fs) = NtfsFs::open(Arc::new(MemSource::new(v))) else {
            continue;
        };
        let _ = fs.info();
        let mut todo = vec![FsPath::root()];
        let mut seen = std::collections::HashSet::new();
        let mut visited = 0;
        while let Some(d) = todo.pop() {
            visited += 1;
            if visited > 500 {
                break;
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
    let seen = PANICS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let own: Vec<&String> = seen
        .iter()
        .filter(|l| !l.contains(".cargo/registry"))
        .collect();
    assert!(own.is_empty(), "flr-ntfs panicked at {own:?}");
    if !seen.is_empty() {
        eprintln!("caught panics inside the ntfs crate at: {seen:?}");
    }
}

/// mkntfs leaves `$LogFile` reset and `$Volume` clean; setting the `$Volume` dirty flag (the
/// VOLUME_INFORMATION attribute of record 3) makes the volume dirty, its `$LogFile` still
/// has nothing flr would need.
#[test]
fn consistency_from_the_volume_flag_and_the_logfile() {
    let c = open_fixture().consistency();
    assert_eq!(
        (c.unmount, &c.journal),
        (flr_fs::Unmount::Clean, &flr_fs::Journal::Clean),
        "{c:?}"
    );
    assert_eq!(c.sentence(), "clean");
    let mut img = std::fs::read(flr_testdata::fixture("ntfs/ntfs.img.zst")).unwrap();
    let le16 = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let le32 = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let cluster = le16(&img, 11) * img[13] as usize;
    let mft = u64::from_le_bytes(img[0x30..0x38].try_into().unwrap()) as usize * cluster;
    let rec = mft + 3 * 1024;
    assert_eq!(&img[rec..rec + 4], b"FILE");
    let mut a = rec + le16(&img, rec + 0x14);
    loop {
        let ty = le32(&img, a);
        assert_ne!(ty, 0xffff_ffff, "no VOLUME_INFORMATION in $Volume");
        if ty == 0x70 {
            let v = a + le16(&img, a + 0x14);
            img[v + 10] |= 1;
            break;
        }
        a += le32(&img, a + 4);
    }
    let c = NtfsFs::open(Arc::new(MemSource::new(img)))
        .unwrap()
        .consistency();
    assert_eq!(c.unmount, flr_fs::Unmount::Dirty);
    assert!(
        c.sentence().starts_with("not cleanly unmounted"),
        "{}",
        c.sentence()
    );
}
