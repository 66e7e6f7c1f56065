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
        let fs = open_path(&unpacked.join(img));
        assert_eq!(fs.info().fs_type, "ntfs");
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
