//! flr-ext4 against third-party images (../shared/corpus): ground truth from
//! `expected/*.files.tsv` (checked there with The Sleuth Kit / 7-Zip) and a
//! full differential walk against ext4-view. Skips loudly without the corpus.

mod common;

use common::*;
use flr_fs::{Filesystem, FsPath};

const IMAGES: &[(&str, Option<&str>, &str)] = &[
    (
        "ext/ext4-view/test_disk1.bin",
        Some("ext4-view-test_disk1.ext4.files.tsv"),
        "ext4",
    ),
    (
        "ext/ext4-view/test_disk_ext3.bin",
        Some("ext4-view-test_disk_ext3.files.tsv"),
        "ext3",
    ),
    ("ext/ext4-view/test_disk_4k_block_journal.bin", None, "ext4"),
    (
        "ext/dissect-extfs/ext4.bin",
        Some("dissect-extfs-ext4.files.tsv"),
        "ext4",
    ),
    ("ext/nobodd/ext2.img", Some("nobodd-ext2.files.tsv"), "ext2"),
];

#[test]
fn corpus_ext_images() {
    let Some((unpacked, corpus)) = flr_testdata::corpus("flr-ext4 corpus_ext_images") else {
        return;
    };
    for (img, expected, fs_type) in IMAGES {
        let path = unpacked.join(img);
        let fs = open_path(&path);
        let info = fs.info();
        assert_eq!(info.fs_type, *fs_type, "{img}");
        if let Some(b) = blkid(&path) {
            assert_eq!(Some(&info.fs_type), b.get("TYPE"), "{img}: type vs blkid");
            assert_eq!(info.label.as_ref(), b.get("LABEL"), "{img}: label vs blkid");
            assert_eq!(info.id.as_ref(), b.get("UUID"), "{img}: UUID vs blkid");
        }
        let found = walk(&fs);
        if let Some(tsv) = expected {
            let text = std::fs::read_to_string(corpus.join("expected").join(tsv)).unwrap();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let c: Vec<&str> = line.split('\t').collect();
                let (p, size, sha, ino) = (
                    c[0],
                    c[1].parse::<u64>().unwrap(),
                    c[2],
                    c[3].parse::<u64>().unwrap(),
                );
                let f = found.get(p).unwrap_or_else(|| panic!("{img}: {p} missing"));
                assert_eq!(f.size, size, "{img}: {p} size");
                assert_eq!(f.sha256, sha, "{img}: {p} sha256");
                assert_eq!(f.meta.inode, Some(ino), "{img}: {p} inode");
                let m = fs.metadata(&FsPath::parse(p)).unwrap();
                assert_eq!(m.inode, Some(ino));
            }
        }
        let bytes = std::fs::read(&path).unwrap();
        check_against_ext4_view(&found, &bytes, &[]);
        eprintln!("{img}: {} paths agree with ext4-view", found.len());
    }
}

/// ext4-view's own test shows /dir500 exists only through the journal.
#[test]
fn corpus_journal_only_directory() {
    let Some((unpacked, _)) = flr_testdata::corpus("flr-ext4 corpus_journal_only_directory") else {
        return;
    };
    let fs = open_path(&unpacked.join("ext/ext4-view/test_disk_4k_block_journal.bin"));
    assert!(fs.journal_replayed());
    assert!(fs.metadata(&FsPath::parse("/dir500")).is_ok());
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
