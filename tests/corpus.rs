//! The corpus tier: third-party images in ../shared/corpus with expected
//! hashes made by other tools. Skips loudly when the corpus is absent.

use crate::util::*;

/// (expected table, image after unpack, volume id)
const FILE_TABLES: &[(&str, &str, &str)] = &[
    ("dfvfs-ext2.vhd.files.tsv", "vhd/dfvfs/ext2.vhd", "disk"),
    ("dfvfs-mbr-p1-ext2.files.tsv", "mbr/dfvfs/mbr.raw", "p1"),
    ("dfvfs-mbr-p5-ext4.files.tsv", "mbr/dfvfs/mbr.raw", "p5"),
    (
        "dissect-extfs-ext4.files.tsv",
        "ext/dissect-extfs/ext4.bin",
        "disk",
    ),
    (
        "ext4-view-test_disk1.ext4.files.tsv",
        "ext/ext4-view/test_disk1.bin",
        "disk",
    ),
    ("nobodd-ext2.files.tsv", "ext/nobodd/ext2.img", "disk"),
    (
        "colinfinck-testfs1.ntfs.files.tsv",
        "ntfs/colinfinck-ntfs/testfs1",
        "disk",
    ),
    (
        "dissect-ntfs.ntfs.files.tsv",
        "ntfs/dissect-ntfs/ntfs.bin",
        "disk",
    ),
    (
        "dissect-fat-disk3-1024bps.files.tsv",
        "fat/dissect-fat/disk3.img",
        "disk",
    ),
    (
        "dissect-fat-fat12.files.tsv",
        "fat/dissect-fat/fat12.bin",
        "disk",
    ),
    (
        "dissect-fat-fat16.files.tsv",
        "fat/dissect-fat/fat16.bin",
        "disk",
    ),
    ("keramics-fat16.files.tsv", "fat/keramics/fat16.raw", "disk"),
    ("keramics-fat32.files.tsv", "fat/keramics/fat32.raw", "disk"),
    ("nobodd-fat12.files.tsv", "fat/nobodd/fat12.img", "disk"),
    ("nobodd-fat16.files.tsv", "fat/nobodd/fat16.img", "disk"),
    ("nobodd-fat32.files.tsv", "fat/nobodd/fat32.img", "disk"),
    (
        "nobodd-gpt+fat32@2048.files.tsv",
        "gpt/nobodd/gpt_disk+fat32@p1.img",
        "p1",
    ),
    (
        "nobodd-mbr+fat16@2048.files.tsv",
        "gpt/nobodd/mbr_disk+fat16@p1.img",
        "p1",
    ),
    (
        "rust-fatfs-fat12.files.tsv",
        "fat/rust-fatfs/fat12.img",
        "disk",
    ),
    (
        "rust-fatfs-fat16.files.tsv",
        "fat/rust-fatfs/fat16.img",
        "disk",
    ),
];

#[test]
fn corpus_files_match_expected_hashes() {
    let Some((unpacked, corpus)) = flr_testdata::corpus("corpus_files_match_expected_hashes")
    else {
        return;
    };
    let mut checked = 0;
    for (table, image, vol) in FILE_TABLES {
        let img = unpacked.join(image);
        let text = std::fs::read_to_string(corpus.join("expected").join(table)).unwrap();
        let (dest, sums) = restore_all(&img, vol);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let c: Vec<&str> = line.split('\t').collect();
            let (path, size, sha) = (c[0], c[1].parse::<u64>().unwrap(), c[2]);
            assert_eq!(
                sums.get(path).map(String::as_str),
                Some(sha),
                "{image} {vol}:/{path}"
            );
            assert_eq!(
                std::fs::metadata(dest.path().join(path)).unwrap().len(),
                size,
                "{image} {path}"
            );
            checked += 1;
        }
    }
    eprintln!("corpus: {checked} files matched their expected sha256");
    assert!(checked > 50);
}

/// Images flr cannot open yet must be named with the reason, not misread.
#[test]
fn corpus_unsupported_layers_are_named() {
    let Some((unpacked, _)) = flr_testdata::corpus("corpus_unsupported_layers_are_named") else {
        return;
    };
    for (image, kind) in [
        ("exfat/dissect-fat/exfat.bin", "exfat"),
        ("xfs/dissect-xfs/xfs.bin", "xfs"),
        ("lvm/dfvfs/lvm.raw", "lvm2"),
        ("luks/cryptsetup/compatimage.img", "luks"),
        ("bitlocker/dissect-fve/aes_128.bin", "bitlocker"),
    ] {
        let img = unpacked.join(image);
        let out = run_ok(&["probe", p(&img), "--json"]);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let kinds: Vec<&str> = r["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["content"]["kind"].as_str())
            .collect();
        assert!(kinds.contains(&kind), "{image}: {kinds:?}");
        let bad = r["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["content"]["kind"] == kind)
            .unwrap();
        assert_ne!(bad["content"]["verdict"], "readable");
        assert!(!bad["content"]["detail"].as_str().unwrap().is_empty());
    }
}
