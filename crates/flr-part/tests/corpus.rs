//! Partition tables of third-party disks (the shared corpus) against The
//! Sleuth Kit's `mmls` output stored beside them.

use std::path::Path;
use std::sync::Arc;

use flr_io::{FileSource, Source};
use flr_part::{read_table, PartKind, Scheme};

struct Row {
    slot: String,
    start: u64,
    length: u64,
    desc: String,
}

/// The partition rows of an `mmls` listing (not Meta, not unallocated).
fn mmls_rows(text: &str) -> Vec<Row> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let idx = it.next()?;
            if !idx.ends_with(':') || !idx[..idx.len() - 1].chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let slot = it.next()?.to_string();
            if slot == "Meta" || slot.starts_with('-') {
                return None;
            }
            let start = it.next()?.parse().ok()?;
            let _end: u64 = it.next()?.parse().ok()?;
            let length = it.next()?.parse().ok()?;
            let desc = it.collect::<Vec<_>>().join(" ");
            Some(Row {
                slot,
                start,
                length,
                desc,
            })
        })
        .collect()
}

fn check(test: &str, image: &str, mmls: &str, scheme: Scheme) {
    let Some((unpacked, corpus)) = flr_testdata::corpus(test) else {
        return;
    };
    let text = std::fs::read_to_string(corpus.join("expected").join(mmls)).unwrap();
    let rows = mmls_rows(&text);
    assert!(!rows.is_empty());
    let disk: Source = Arc::new(FileSource::open(Path::new(&unpacked).join(image)).unwrap());
    let t = read_table(&disk, None).unwrap().expect("a partition table");
    assert_eq!(t.scheme, scheme);
    assert_eq!(t.sector_size, 512);
    assert_eq!(t.partitions.len(), rows.len(), "{t:#?}");
    let mut logical_seen = 0;
    for r in &rows {
        let p = t
            .partitions
            .iter()
            .find(|p| p.start == r.start * 512)
            .unwrap_or_else(|| panic!("no partition at sector {}: {t:#?}", r.start));
        assert_eq!(
            p.size,
            r.length * 512,
            "length of the partition at {}",
            r.start
        );
        match &p.kind {
            PartKind::Gpt { name, .. } => {
                // mmls slots are 0-based entry indices.
                assert_eq!(p.number, r.slot.parse::<u32>().unwrap() + 1);
                assert_eq!(name, &r.desc);
            }
            PartKind::Mbr {
                type_byte, logical, ..
            } => {
                let hex = r.desc.rsplit("(0x").next().unwrap().trim_end_matches(')');
                assert_eq!(
                    *type_byte,
                    u8::from_str_radix(hex, 16).unwrap(),
                    "{}",
                    r.desc
                );
                let (table, slot) = r.slot.split_once(':').unwrap();
                if table == "000" {
                    assert!(!logical);
                    assert_eq!(p.number, slot.parse::<u32>().unwrap() + 1);
                } else {
                    // mmls lists logicals in disk order, which is chain order here.
                    assert!(logical);
                    assert_eq!(p.number, 5 + logical_seen);
                    logical_seen += 1;
                }
            }
        }
    }
}

#[test]
fn corpus_nobodd_gpt() {
    check(
        "corpus_nobodd_gpt",
        "gpt/nobodd/gpt_disk+fat32@p1.img",
        "gpt_nobodd_unpacked_gpt_disk+fat32@p1.img.mmls.txt",
        Scheme::Gpt,
    );
}

#[test]
fn corpus_nobodd_mbr() {
    check(
        "corpus_nobodd_mbr",
        "gpt/nobodd/mbr_disk+fat16@p1.img",
        "gpt_nobodd_unpacked_mbr_disk+fat16@p1.img.mmls.txt",
        Scheme::Mbr,
    );
}

#[test]
fn corpus_dfvfs_mbr() {
    check(
        "corpus_dfvfs_mbr",
        "mbr/dfvfs/mbr.raw",
        "mbr_dfvfs_unpacked_mbr.raw.mmls.txt",
        Scheme::Mbr,
    );
}

#[test]
fn corpus_bare_filesystems_have_no_table() {
    let Some((unpacked, _)) = flr_testdata::corpus("corpus_bare_filesystems_have_no_table") else {
        return;
    };
    for img in [
        "fat/nobodd/fat12.img",
        "fat/nobodd/fat16.img",
        "fat/nobodd/fat32.img",
        "fat/rust-fatfs/fat12.img",
        "fat/rust-fatfs/fat16.img",
        "fat/dissect-fat/fat12.bin",
        "fat/dissect-fat/fat16.bin",
        "fat/dissect-fat/disk3.img",
        "fat/keramics/fat16.raw",
        "fat/keramics/fat32.raw",
        "exfat/dissect-fat/exfat.bin",
        "ntfs/dissect-ntfs/ntfs.bin",
        "bitlocker/dissect-fve/aes_128.bin",
        "bitlocker/cryptsetup-bitlk/bitlk-aes-xts-128-4k.img",
        "bitlocker/cryptsetup-bitlk/bitlk-togo-aes-cbc-128.img",
        "vhd/dfvfs/ext2.vhd",
    ] {
        let path = Path::new(&unpacked).join(img);
        let disk: Source = Arc::new(FileSource::open(&path).unwrap());
        let t = read_table(&disk, None).unwrap();
        assert!(t.is_none(), "{img}: {t:?}");
    }
}
