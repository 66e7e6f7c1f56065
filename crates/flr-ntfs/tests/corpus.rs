//! flr-ntfs against third-party NTFS images (../shared/corpus): ground truth
//! from `expected/*.files.tsv`, checked there with The Sleuth Kit (TSK is
//! right about `sparse-file`, 7-Zip is not). Files TSK decompresses but flr
//! refuses (NTFS compression) are checked for size and for the refusal.
//! Skips loudly without the corpus.

mod common;

use common::*;
use flr_fs::{Filesystem, FsPath};

const IMAGES: &[(&str, &str)] = &[
    (
        "ntfs/colinfinck-ntfs/testfs1",
        "colinfinck-testfs1.ntfs.files.tsv",
    ),
    ("ntfs/dissect-ntfs/ntfs.bin", "dissect-ntfs.ntfs.files.tsv"),
];

#[test]
fn corpus_ntfs_images() {
    let Some((unpacked, corpus)) = flr_testdata::corpus("flr-ntfs corpus_ntfs_images") else {
        return;
    };
    for (img, tsv) in IMAGES {
        let path = unpacked.join(img);
        let fs = open_path(&path);
        let info = fs.info();
        assert_eq!(info.fs_type, "ntfs");
        if let Some(b) = blkid(&path) {
            assert_eq!(
                b.get("TYPE").map(String::as_str),
                Some("ntfs"),
                "{img}: type vs blkid"
            );
            assert_eq!(info.label.as_ref(), b.get("LABEL"), "{img}: label vs blkid");
            assert_eq!(info.id.as_ref(), b.get("UUID"), "{img}: serial vs blkid");
        }
        let found = walk(&fs);
        let text = std::fs::read_to_string(corpus.join("expected").join(tsv)).unwrap();
        let mut n = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let c: Vec<&str> = line.split('\t').collect();
            let (p, size, sha) = (c[0], c[1].parse::<u64>().unwrap(), c[2]);
            // TSK's inode column is record-type-id.
            let rec: u64 = c[3].split('-').next().unwrap().parse().unwrap();
            let f = found.get(p).unwrap_or_else(|| panic!("{img}: {p} missing"));
            assert_eq!(f.size, size, "{img}: {p} size");
            // Every listed file, LZNT1-compressed ones included, must read back exactly.
            assert_eq!(
                f.meta.unreadable, None,
                "{img}: {p} unexpectedly unreadable"
            );
            assert_eq!(f.sha256, sha, "{img}: {p} sha256");
            assert_eq!(f.meta.inode, Some(rec), "{img}: {p} record");
            assert_eq!(fs.metadata(&FsPath::parse(p)).unwrap().inode, Some(rec));
            n += 1;
        }
        eprintln!(
            "{img}: {n} expected files agree; {} paths walked",
            found.len()
        );
    }
}

/// `blkid -p -o export` of an image, as key → value (the independent
/// oracle for type, label and UUID/serial), when blkid is installed.
fn blkid(path: &std::path::Path) -> Option<std::collections::BTreeMap<String, String>> {
    if !flr_testdata::have_tool("blkid") {
        eprintln!("SKIPPED blkid cross-check: blkid not installed");
        return None;
    }
    let out = std::process::Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(path)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.replace("\\ ", " ")))
            .collect(),
    )
}
