//! flr-xfs on the committed fixtures (testdata/xfs, made by mkfs.xfs and the
//! kernel's XFS driver, see gen.sh): every manifest entry read back and
//! compared with the source tree's sizes and sha256s, the directory and file
//! formats xfs_db reported, timestamps, the 4 GiB sparse file, CRC checks,
//! and the corpus images.

use std::sync::Arc;

use flr_fs::{Filesystem, FsError, FsPath};
use flr_io::{FileSource, MemSource, Source};
use flr_xfs::XfsFs;

mod common;
use common::{next, read_all, walk, walk_hostile};

fn open(rel: &str) -> XfsFs {
    let p = flr_testdata::fixture(rel);
    XfsFs::open(Arc::new(FileSource::open(p).unwrap())).unwrap()
}

fn check_manifest(fs: &dyn Filesystem, manifest: &str, extra: &[&str]) {
    let found = walk(fs);
    let want = flr_testdata::manifest(manifest);
    for m in &want {
        let f = found
            .get(&m.path)
            .unwrap_or_else(|| panic!("{manifest}: {} missing", m.path));
        assert_eq!(
            (f.0, f.1, f.2.as_str()),
            (m.kind, m.size, m.sha256.as_str()),
            "{}",
            m.path
        );
    }
    assert_eq!(
        found.len(),
        want.len() + extra.len(),
        "{manifest}: extra paths in the image"
    );
    for x in extra {
        assert!(found.contains_key(*x), "{x}");
    }
}

#[test]
fn v5_every_file_matches_the_source_tree() {
    let fs = open("xfs/v5.img.zst");
    let info = fs.info();
    assert_eq!(info.fs_type, "xfs");
    assert_eq!(info.label.as_deref(), Some("xfsv5"));
    assert_eq!(
        info.id.as_deref(),
        Some("7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d")
    );
    assert_eq!(info.block_size, 4096);
    check_manifest(&fs, "xfs/v5.tsv", &["big.bin"]);
}

#[test]
fn v4_every_file_matches_the_source_tree() {
    let fs = open("xfs/v4.img.zst");
    assert_eq!(fs.info().fs_type, "xfs (v4)");
    assert_eq!(fs.info().label.as_deref(), Some("xfsv4"));
    check_manifest(&fs, "xfs/v4.tsv", &[]);
}

#[test]
fn the_fixture_covers_every_format() {
    // What xfs_db said when the fixture was made: the formats the walk above went through.
    let f =
        std::fs::read_to_string(flr_testdata::testdata_dir().join("xfs/v5.formats.txt")).unwrap();
    let line = |p: &str| {
        f.lines()
            .find(|l| l.starts_with(&format!("{p}\t")))
            .unwrap()
            .to_string()
    };
    assert!(line("etc").contains("(local)"));
    assert!(line("block").contains("(extents) core.nextents = 1"));
    assert!(line("btree").contains("(btree)"));
    assert!(line("sparse.bin").contains("(btree)"));
    let fs = open("xfs/v5.img.zst");
    assert_eq!(fs.read_dir(&FsPath::parse("/node")).unwrap().len(), 3000);
    assert_eq!(fs.read_dir(&FsPath::parse("/btree")).unwrap().len(), 2500);
    assert_eq!(fs.read_dir(&FsPath::parse("/leaf")).unwrap().len(), 400);
}

#[test]
fn bigtime_and_pre_1970_mtimes() {
    let fs = open("xfs/v5.img.zst");
    let text =
        std::fs::read_to_string(flr_testdata::testdata_dir().join("xfs/v5-times.tsv")).unwrap();
    for l in text.lines() {
        let (p, t) = l.split_once('\t').unwrap();
        let m = fs.metadata(&FsPath::parse(p)).unwrap();
        assert_eq!(m.mtime.unwrap().secs, t.parse::<i64>().unwrap(), "{p}");
    }
}

#[test]
fn file_past_4_gib_with_a_hole() {
    let fs = open("xfs/v5.img.zst");
    let text =
        std::fs::read_to_string(flr_testdata::testdata_dir().join("xfs/v5-big.tsv")).unwrap();
    let c: Vec<&str> = text.trim().split('\t').collect();
    let size: u64 = c[1].parse().unwrap();
    let mut f = fs.open(&FsPath::parse(c[0])).unwrap();
    assert_eq!(f.size(), size);
    let mut tail = vec![0u8; 8192];
    assert_eq!(f.read_at(size - 8192, &mut tail).unwrap(), 8192);
    assert_eq!(flr_testdata::sha256_hex(&tail), c[2]);
    let mut hole = vec![1u8; 1 << 20];
    assert_eq!(f.read_at(3 << 30, &mut hole).unwrap(), 1 << 20);
    assert!(hole.iter().all(|&b| b == 0));
    // A read across the end of the hole into the data.
    let mut across = vec![1u8; 8192];
    assert_eq!(f.read_at(size - 12288, &mut across).unwrap(), 8192);
    assert!(across[..4096].iter().all(|&b| b == 0));
    assert_eq!(&across[4096..], &tail[..4096]);
}

#[test]
fn symlinks_short_and_long() {
    let fs = open("xfs/v5.img.zst");
    assert_eq!(
        fs.read_link(&FsPath::parse("/links/short")).unwrap(),
        b"../etc/hostname"
    );
    let long = fs.read_link(&FsPath::parse("/links/long")).unwrap();
    assert_eq!(long.len(), 999);
    assert!(long.starts_with(b"d000/d001/"));
    assert!(matches!(
        fs.open(&FsPath::parse("/links/short")),
        Err(FsError::NotAFile { .. })
    ));
    assert!(matches!(
        fs.metadata(&FsPath::parse("/nope")),
        Err(FsError::NotFound { .. })
    ));
    assert!(matches!(
        fs.read_dir(&FsPath::parse("/etc/hostname")),
        Err(FsError::NotADirectory { .. })
    ));
}

/// Flips one byte inside a metadata block: the CRC check names the block.
#[test]
fn crc_mismatches_are_reported() {
    let bytes = std::fs::read(flr_testdata::fixture("xfs/v5.img.zst")).unwrap();
    // The superblock.
    let mut b = bytes.clone();
    b[0x80] ^= 0xff;
    let e = XfsFs::open(Arc::new(MemSource::new(b)) as Source)
        .unwrap_err()
        .to_string();
    assert!(e.contains("superblock CRC mismatch"), "{e}");
    // The inode of /etc/hostname: listing /etc still works, opening the file does not.
    let fs = XfsFs::open(Arc::new(MemSource::new(bytes.clone())) as Source).unwrap();
    let ino = fs
        .metadata(&FsPath::parse("/etc/hostname"))
        .unwrap()
        .inode
        .unwrap();
    drop(fs);
    let at = inode_offset(&bytes, ino);
    let mut b = bytes.clone();
    b[at as usize + 60] ^= 1; // in di_size
    let fs = XfsFs::open(Arc::new(MemSource::new(b)) as Source).unwrap();
    let list = fs.read_dir(&FsPath::parse("/etc")).unwrap();
    let bad = list.iter().find(|e| e.name == b"hostname").unwrap();
    let why = bad.meta.unreadable.as_deref().unwrap();
    assert!(
        why.contains("CRC mismatch") && why.contains(&format!("{at:#x}")),
        "{why}"
    );
    assert!(fs.open(&FsPath::parse("/etc/hostname")).is_err());
}

fn inode_offset(img: &[u8], ino: u64) -> u64 {
    let be32 = |o: usize| u32::from_be_bytes(img[o..o + 4].try_into().unwrap());
    let bs = u64::from(be32(4));
    let agblocks = u64::from(be32(84));
    let isz = u64::from(u16::from_be_bytes([img[104], img[105]]));
    let (inopblog, agblklog) = (u32::from(img[123]), u32::from(img[124]));
    let agno = ino >> (inopblog + agblklog);
    let agbno = (ino >> inopblog) & ((1 << agblklog) - 1);
    (agno * agblocks + agbno) * bs + (ino & ((1 << inopblog) - 1)) * isz
}

/// Every truncation and a sweep of byte flips over the metadata area: errors, never panics.
#[test]
fn hostile_images_do_not_panic() {
    let bytes = std::fs::read(flr_testdata::fixture("xfs/v4.img.zst")).unwrap();
    let meta_end = 2 << 20;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for round in 0..300 {
        let mut b = bytes.clone();
        for _ in 0..8 {
            let r = next(&mut x);
            b[(r % meta_end) as usize] = (r >> 32) as u8;
        }
        if round % 50 == 0 {
            b.truncate((x % (bytes.len() as u64)) as usize);
        }
        if let Ok(fs) = XfsFs::open(Arc::new(MemSource::new(b)) as Source) {
            walk_hostile(&fs, 5000);
        }
    }
}

#[test]
fn corpus_xfs_images() {
    let Some((unpacked, corpus)) = flr_testdata::corpus("flr-xfs corpus_xfs_images") else {
        return;
    };
    for (img, tsv) in [
        ("xfs/dissect-xfs/xfs.bin", "dissect-xfs-xfs.files.tsv"),
        (
            "xfs/dissect-xfs/xfs_bigtime.bin",
            "dissect-xfs-xfs_bigtime.files.tsv",
        ),
    ] {
        let fs = XfsFs::open(Arc::new(FileSource::open(unpacked.join(img)).unwrap())).unwrap();
        let text = std::fs::read_to_string(corpus.join("expected").join(tsv)).unwrap();
        let mut n = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let c: Vec<&str> = line.split('\t').collect();
            let p = FsPath::parse(c[0]);
            let m = fs.metadata(&p).unwrap();
            assert_eq!(m.size, c[1].parse::<u64>().unwrap(), "{img}: {}", c[0]);
            assert_eq!(
                m.inode,
                Some(c[3].parse::<u64>().unwrap()),
                "{img}: {}",
                c[0]
            );
            assert_eq!(
                flr_testdata::sha256_hex(&read_all(&fs, &p)),
                c[2],
                "{img}: {}",
                c[0]
            );
            n += 1;
        }
        let walked = walk(&fs);
        assert!(walked.len() >= n, "{img}");
        eprintln!(
            "{img}: {n} expected files match; {} paths walked",
            walked.len()
        );
    }
}

#[test]
fn v5_with_16k_directory_blocks_and_4k_sectors() {
    let fs = open("xfs/v5-dir16k.img.zst");
    assert_eq!(fs.info().label.as_deref(), Some("dir16k"));
    check_manifest(&fs, "xfs/v4.tsv", &[]);
}

#[test]
fn v5_with_1k_blocks() {
    let fs = open("xfs/v5-1k.img.zst");
    assert_eq!(fs.info().block_size, 1024);
    check_manifest(&fs, "xfs/v4.tsv", &[]);
}

#[test]
fn v4_without_file_types_in_directories() {
    let fs = open("xfs/v4-noftype.img.zst");
    assert_eq!(fs.info().label.as_deref(), Some("noftype"));
    check_manifest(&fs, "xfs/v4.tsv", &[]);
}
