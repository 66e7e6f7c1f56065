//! The jbd2 replay on a kernel-made crash-consistent image (testdata/ext4/gen-dirty.sh):
//! every path the kernel shows after its own recovery (ext4-dirty.tsv, hashed from a kernel
//! mount of a copy) is read through flr and compared; the consistency says dirty and
//! replayed; clean fixtures say clean.

mod common;

use std::sync::Arc;

use common::*;
use flr_ext4::Ext4Fs;
use flr_fs::{Filesystem, Journal, NotReplayed, Unmount};
use flr_io::MemSource;

#[test]
fn every_file_matches_the_kernels_recovery() {
    let fs = open_fixture("ext4-dirty");
    assert!(fs.journal_replayed());
    let c = fs.consistency();
    assert_eq!(c.unmount, Unmount::Dirty, "needs_recovery is set");
    assert!(
        matches!(c.journal, Journal::Replayed { transactions, unfinished: 0 } if transactions > 0),
        "{c:?}"
    );
    assert!(!c.may_miss_changes());
    assert!(
        c.sentence().starts_with("journal replayed in memory: "),
        "{}",
        c.sentence()
    );
    let found = walk(&fs);
    check_manifest(&found, &flr_testdata::manifest("ext4/ext4-dirty.tsv"));
    let has = |p: &str| found.contains_key(p);
    assert!(has("new/two-megabytes.bin") && has("home/azure/new-name.txt"));
    assert!(!has("home/azure/doomed.txt") && !has("home/azure/old-name.txt"));
    assert_eq!(found["home/azure/grow.bin"].size, 80000);
    assert_eq!(found["home/azure/shrink.bin"].size, 4097);
}

#[test]
fn clean_fixtures_report_clean() {
    for name in ["ext4", "ext3", "ext4-metabg", "ext4-crypt"] {
        let c = open_fixture(name).consistency();
        assert_eq!(
            (c.unmount, &c.journal),
            (Unmount::Clean, &Journal::Clean),
            "{name}"
        );
        assert_eq!(c.sentence(), "clean");
        assert!(!c.may_miss_changes());
    }
    for name in ["ext2", "ext4-inline"] {
        let c = open_fixture(name).consistency();
        assert_eq!(
            (c.unmount, &c.journal),
            (Unmount::Clean, &Journal::None),
            "{name}"
        );
        assert!(!c.may_miss_changes());
    }
}

/// A journal superblock flr cannot use: the filesystem is read without the replay, and the
/// state says why.
#[test]
fn a_damaged_journal_is_read_around() {
    let img = std::fs::read(flr_testdata::fixture("ext4/ext4-dirty.img.zst")).unwrap();
    let fs = Ext4Fs::open(Arc::new(MemSource::new(img.clone()))).unwrap();
    drop(fs);
    // Find the journal superblock (jbd2 magic, block type 3 or 4, at a block boundary).
    let at = (0..img.len() / 4096)
        .map(|b| b * 4096)
        .find(|&o| img[o..o + 4] == [0xc0, 0x3b, 0x39, 0x98] && matches!(img[o + 7], 3 | 4))
        .expect("a journal superblock");
    let mut b = img.clone();
    b[at + 0x28..at + 0x2c].copy_from_slice(&0x8000_0000u32.to_be_bytes()); // unknown feature
    let fs = Ext4Fs::open(Arc::new(MemSource::new(b))).unwrap();
    assert!(!fs.journal_replayed());
    let c = fs.consistency();
    assert!(
        matches!(
            &c.journal,
            Journal::NotReplayed {
                reason: NotReplayed::Unsupported { .. }
            }
        ),
        "{c:?}"
    );
    assert!(c.may_miss_changes());
    assert!(
        c.sentence().starts_with("dirty: journal not replayed ("),
        "{}",
        c.sentence()
    );
    let mut b = img;
    b[at + 0x10..at + 0x14].copy_from_slice(&u32::MAX.to_be_bytes()); // absurd journal length
    let c = Ext4Fs::open(Arc::new(MemSource::new(b)))
        .unwrap()
        .consistency();
    assert!(
        matches!(
            &c.journal,
            Journal::NotReplayed {
                reason: NotReplayed::Damaged { .. }
            }
        ),
        "{c:?}"
    );
}
