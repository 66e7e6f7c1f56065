//! FAT volumes from other projects' test suites (the shared corpus), against
//! the expected `*.files.tsv` (path, size, sha256 checked with 7-Zip/TSK).

mod common;

use std::sync::Arc;

use flr_fat::{probe, FatFs, FatType};
use flr_fs::{FileKind, Filesystem, FsPath};
use flr_io::{FileSource, ReadAt, Slice, Source};

/// (image after unpack, byte offset of the volume, expected tsv, FAT type).
const CASES: &[(&str, u64, &str, FatType)] = &[
    (
        "fat/rust-fatfs/fat12.img",
        0,
        "rust-fatfs-fat12.files.tsv",
        FatType::Fat12,
    ),
    (
        "fat/rust-fatfs/fat16.img",
        0,
        "rust-fatfs-fat16.files.tsv",
        FatType::Fat16,
    ),
    (
        "fat/dissect-fat/fat12.bin",
        0,
        "dissect-fat-fat12.files.tsv",
        FatType::Fat12,
    ),
    (
        "fat/dissect-fat/fat16.bin",
        0,
        "dissect-fat-fat16.files.tsv",
        FatType::Fat16,
    ),
    (
        "fat/dissect-fat/disk3.img",
        0,
        "dissect-fat-disk3-1024bps.files.tsv",
        FatType::Fat12,
    ),
    (
        "fat/nobodd/fat12.img",
        0,
        "nobodd-fat12.files.tsv",
        FatType::Fat12,
    ),
    (
        "fat/nobodd/fat16.img",
        0,
        "nobodd-fat16.files.tsv",
        FatType::Fat16,
    ),
    // Below the FAT32 cluster-count minimum: FAT32 by its BPB.
    (
        "fat/nobodd/fat32.img",
        0,
        "nobodd-fat32.files.tsv",
        FatType::Fat32,
    ),
    (
        "fat/keramics/fat16.raw",
        0,
        "keramics-fat16.files.tsv",
        FatType::Fat16,
    ),
    (
        "fat/keramics/fat32.raw",
        0,
        "keramics-fat32.files.tsv",
        FatType::Fat32,
    ),
    (
        "gpt/nobodd/gpt_disk+fat32@p1.img",
        2048 * 512,
        "nobodd-gpt+fat32@2048.files.tsv",
        FatType::Fat32,
    ),
    (
        "gpt/nobodd/mbr_disk+fat16@p1.img",
        2048 * 512,
        "nobodd-mbr+fat16@2048.files.tsv",
        FatType::Fat16,
    ),
];

#[test]
fn corpus_fat_files_match_expected() {
    let Some((unpacked, corpus)) = flr_testdata::corpus("corpus_fat_files_match_expected") else {
        return;
    };
    for &(image, offset, tsv, ty) in CASES {
        let disk: Source = Arc::new(FileSource::open(unpacked.join(image)).unwrap());
        let vol: Source = if offset == 0 {
            disk
        } else {
            let len = disk.len() - offset;
            Arc::new(Slice::new(disk, offset, len, "volume").unwrap())
        };
        assert!(probe(vol.as_ref()), "{image}");
        let fs = FatFs::open(vol).unwrap_or_else(|e| panic!("{image}: {e}"));
        assert_eq!(fs.fat_type(), ty, "{image}");
        let tree = common::walk(&fs);
        let text = std::fs::read_to_string(corpus.join("expected").join(tsv)).unwrap();
        let expected = common::corpus_tsv(&text);
        assert!(!expected.is_empty());
        for (path, size, sha) in &expected {
            assert_eq!(
                tree.get(path.as_str()),
                Some(&(FileKind::File, *size)),
                "{image}: {path} in the listing"
            );
            let data = common::read_all(&fs, &format!("/{path}"), 65536);
            assert_eq!(&flr_testdata::sha256_hex(&data), sha, "{image}: {path}");
            assert!(fs.metadata(&FsPath::parse(path)).unwrap().mtime.is_some());
        }
        let info = fs.info();
        assert!(
            info.id.is_some() && info.total_bytes > 0,
            "{image}: {info:?}"
        );
        // dosfstools' fatlabel as the oracle for label and serial.
        if offset == 0 && flr_testdata::have_tool("fatlabel") {
            let run = |args: &[&str]| -> String {
                let out = std::process::Command::new("fatlabel")
                    .args(args)
                    .arg(unpacked.join(image))
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                text.lines().last().unwrap_or("").trim().to_string()
            };
            let label = run(&[]);
            assert_eq!(
                info.label.as_deref(),
                (!label.is_empty()).then_some(label.as_str()),
                "{image}"
            );
            let id = run(&["-i"]).to_uppercase();
            assert_eq!(
                info.id.as_deref(),
                Some(format!("{}-{}", &id[..4], &id[4..]).as_str()),
                "{image}"
            );
        }
    }
}
