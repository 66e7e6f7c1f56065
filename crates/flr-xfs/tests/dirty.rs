//! Log replay on kernel-made crash-consistent images (testdata/xfs/gen-dirty.sh, and
//! gen-dirty-v4.sh for v4, whose kernel runs under qemu): every
//! path the kernel shows after its own replay (the dirty-*.tsv manifests, hashed from a
//! kernel mount of a copy) is read through flr's replayed view and compared, nothing more is
//! there; clean fixtures report clean; damaged logs are read without replay, with the reason,
//! and never panic.

use std::collections::BTreeMap;
use std::sync::Arc;

use flr_fs::{Filesystem, FsPath, Journal, NotReplayed, Unmount};
use flr_io::{FileSource, MemSource, Source};
use flr_xfs::XfsFs;

mod common;
use common::{next, walk, walk_hostile};

const DIRTY: [&str; 4] = ["dirty-v5", "dirty-v5-wrap", "dirty-v5-lsn", "dirty-v4"];

fn image(name: &str) -> Vec<u8> {
    std::fs::read(flr_testdata::fixture(&format!("xfs/{name}.img.zst"))).unwrap()
}

fn mem(b: Vec<u8>) -> Source {
    Arc::new(MemSource::new(b))
}

fn kernel_view(name: &str) -> BTreeMap<String, (char, u64, String)> {
    flr_testdata::manifest(&format!("xfs/{name}.tsv"))
        .into_iter()
        .map(|m| (m.path, (m.kind, m.size, m.sha256)))
        .collect()
}

/// The kernel's recovery counts per event (dirty-*.kernel-replay.tsv).
fn kernel_counts(name: &str) -> BTreeMap<String, u64> {
    std::fs::read_to_string(
        flr_testdata::testdata_dir().join(format!("xfs/{name}.kernel-replay.tsv")),
    )
    .unwrap()
    .lines()
    .map(|l| {
        let (k, v) = l.split_once('\t').unwrap();
        (k.to_string(), v.parse().unwrap())
    })
    .collect()
}

#[test]
fn every_file_matches_the_kernels_replay() {
    for name in DIRTY {
        let src: Source = Arc::new(
            FileSource::open(flr_testdata::fixture(&format!("xfs/{name}.img.zst"))).unwrap(),
        );
        let fs = XfsFs::open(src.clone()).unwrap();
        let c = fs.consistency();
        assert_eq!(c.unmount, Unmount::Dirty, "{name}");
        let Journal::Replayed {
            transactions,
            unfinished,
        } = c.journal
        else {
            panic!("{name}: {c:?}");
        };
        assert!(transactions > 0, "{name}");
        assert_eq!(unfinished, 0, "{name}");
        assert!(!c.may_miss_changes(), "{name}");
        assert!(
            c.sentence().starts_with("log replayed in memory: "),
            "{}",
            c.sentence()
        );
        assert_eq!(fs.info().consistency, c);
        let want = kernel_view(name);
        let got = walk(&fs);
        for (p, w) in &want {
            assert_eq!(got.get(p), Some(w), "{name}: {p}");
        }
        assert_eq!(
            got.len(),
            want.len(),
            "{name}: paths the kernel does not show"
        );
        let st = fs.replay_stats().unwrap().clone();
        eprintln!("{name}: {} paths match; {st:?}", want.len());
        assert_eq!(st.transactions, transactions);
        assert_eq!(st.bytes, fs.replayed_bytes());
        assert!(st.buffers > 0 && st.inodes > 0, "{name}: {st:?}");
        // Item by item, what the kernel's recovery did (its tracepoints, counted by
        // gen-dirty.sh while it mounted a copy).
        let k = kernel_counts(name);
        assert_eq!(st.buffers, k["buf_reg_buf"], "{name}: buffers");
        assert_eq!(
            st.inode_buffers, k["buf_inode_buf"],
            "{name}: inode buffers"
        );
        assert_eq!(
            st.inodes,
            k["inode_recover"] - k["inode_skip"],
            "{name}: inodes"
        );
        assert_eq!(
            st.inode_creates, k["icreate_recover"],
            "{name}: inode creates"
        );
        assert_eq!(
            st.older_than_disk,
            k["buf_skip"] + k["inode_skip"],
            "{name}: older than the disk"
        );
        assert_eq!(
            st.cancelled,
            k["buf_cancel"] - k["buf_cancel_add"] - k["buf_cancel_ref_inc"]
                + k["inode_cancel"]
                + k["icreate_cancel"],
            "{name}: cancelled"
        );
        // What each fixture is there to prove was reached.
        match name {
            "dirty-v5" => assert!(st.inode_creates > 0, "new inode chunks: {st:?}"),
            "dirty-v5-wrap" => assert!(st.cancelled > 0, "cancelled buffers: {st:?}"),
            "dirty-v5-lsn" => assert!(st.older_than_disk > 0, "items older than the disk: {st:?}"),
            // Made by a kernel with v4 support under qemu (gen-dirty-v4.sh).
            _ => assert_eq!(fs.info().fs_type, "xfs (v4)"),
        }

        // Without the replay the newest changes are missing, and the state says so.
        let raw = XfsFs::open_without_replay(src).unwrap();
        let c = raw.consistency();
        assert_eq!(
            c.journal,
            Journal::NotReplayed {
                reason: NotReplayed::Disabled
            }
        );
        assert!(c.may_miss_changes());
        assert_ne!(
            walk(&raw),
            want,
            "{name}: the log held nothing the disk lacked"
        );
    }
}

#[test]
fn the_fixtures_have_their_shapes() {
    let want = kernel_view("dirty-v5");
    let has = |p: &str| want.contains_key(p);
    assert!(has("new/deeper/note.txt") && has("new/two-megabytes.bin"));
    assert!(has("home/azure/new-name.txt") && !has("home/azure/old-name.txt"));
    assert!(!has("home/azure/doomed.txt"));
    assert_eq!(want["home/azure/grow.bin"].1, 80000);
    assert_eq!(want["home/azure/shrink.bin"].1, 4097);
    assert_eq!(
        want["new/unsynced.txt"].1, 0,
        "its data never reached the disk"
    );
    assert_eq!(want.keys().filter(|k| k.starts_with("many/")).count(), 300);
    // The wrap fixtures' live log crosses the physical end: tail block > head block.
    for name in ["dirty-v5-wrap", "dirty-v5-lsn"] {
        let s = std::fs::read_to_string(
            flr_testdata::testdata_dir().join(format!("xfs/{name}.log.txt")),
        )
        .unwrap();
        let w: Vec<u64> = s
            .split_whitespace()
            .filter_map(|t| t.parse().ok())
            .collect();
        assert!(w[0] > w[1], "{name}: {s}");
    }
}

#[test]
fn clean_fixtures_report_clean() {
    for name in ["v5", "v4", "v5-1k", "v5-dir16k", "v4-noftype"] {
        let fs = XfsFs::open(mem(image(name))).unwrap();
        let c = fs.consistency();
        assert_eq!(
            (c.unmount, &c.journal),
            (Unmount::Clean, &Journal::Clean),
            "{name}"
        );
        assert!(!c.may_miss_changes(), "{name}");
        assert_eq!(c.sentence(), "clean");
        assert_eq!(fs.replayed_bytes(), 0);
    }
}

// ---- damaged logs --------------------------------------------------------------------------

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes(b[o..o + 4].try_into().unwrap())
}

/// (log start byte, log size in 512-byte blocks) from the superblock.
fn log_geometry(img: &[u8]) -> (usize, usize) {
    let bs = be32(img, 4) as usize;
    let agblocks = be32(img, 84) as usize;
    let agblklog = img[124];
    let logstart = u64::from_be_bytes(img[48..56].try_into().unwrap()) as usize;
    let ag = logstart >> agblklog;
    let agb = logstart & ((1 << agblklog) - 1);
    (
        (ag * agblocks + agb) * bs,
        be32(img, 96) as usize * bs / 512,
    )
}

/// Record headers (block numbers) from the tail's record on, in log order.
fn records(img: &[u8]) -> Vec<usize> {
    let (start, bbs) = log_geometry(img);
    let hdr = |b: usize| &img[start + b * 512..start + b * 512 + 512];
    // The tail: the newest record's tail LSN (the record with the highest LSN).
    let mut newest = (0u64, 0usize);
    for b in 0..bbs {
        let h = hdr(b);
        if be32(h, 0) == 0xFEED_BABE {
            let lsn = u64::from_be_bytes(h[16..24].try_into().unwrap());
            newest = newest.max((lsn, b));
        }
    }
    let tail_lsn = u64::from_be_bytes(hdr(newest.1)[24..32].try_into().unwrap());
    let mut b = (tail_lsn & 0xffff_ffff) as usize;
    let mut out = Vec::new();
    loop {
        out.push(b);
        if b == newest.1 {
            return out;
        }
        let h = hdr(b);
        let size = be32(h, 320) as usize;
        let hblks = if size > 32768 {
            size.div_ceil(32768)
        } else {
            1
        };
        b = (b + hblks + (be32(h, 12) as usize).div_ceil(512)) % bbs;
    }
}

/// Recomputes a record's CRC after its data was patched (the data as written: cycle words in
/// place).
fn fix_crc(img: &mut [u8], blk: usize) {
    let (start, bbs) = log_geometry(img);
    let at = start + blk * 512;
    let len = be32(img, at + 12) as usize;
    let size = be32(img, at + 320) as usize;
    let hblks = if size > 32768 {
        size.div_ceil(32768)
    } else {
        1
    };
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
    let mut d = crc.digest();
    let mut h = img[at..at + 328].to_vec();
    h[32..36].fill(0);
    d.update(&h);
    for j in 1..len.div_ceil(32768) {
        d.update(&img[at + j * 512..at + j * 512 + 260]);
    }
    let mut data = Vec::new();
    for i in 0..len.div_ceil(512) {
        let o = start + ((blk + hblks + i) % bbs) * 512;
        data.extend_from_slice(&img[o..o + 512]);
    }
    d.update(&data[..len]);
    img[at + 32..at + 36].copy_from_slice(&d.finalize().to_le_bytes());
}

fn not_replayed(img: Vec<u8>) -> NotReplayed {
    let fs = XfsFs::open(mem(img)).unwrap();
    let c = fs.consistency();
    assert_eq!(c.unmount, Unmount::Dirty);
    assert!(c.may_miss_changes());
    assert!(
        c.sentence().starts_with("dirty: log not replayed ("),
        "{}",
        c.sentence()
    );
    assert_eq!(fs.replayed_bytes(), 0);
    // The filesystem is still read, as it is on disk.
    fs.read_dir(&FsPath::root()).unwrap();
    match c.journal {
        Journal::NotReplayed { reason } => reason,
        j => panic!("{j:?}"),
    }
}

#[test]
fn a_bad_crc_before_the_last_records_stops_the_replay() {
    let img = image("dirty-v5-wrap");
    let recs = records(&img);
    assert!(recs.len() > 10, "{} records", recs.len());
    let (start, _) = log_geometry(&img);
    let mut b = img.clone();
    let at = start + recs[1] * 512 + 512 + 100; // inside the second record's data
    b[at] ^= 0x40;
    match not_replayed(b) {
        NotReplayed::Damaged { offset, what } => {
            assert_eq!(offset, Some((start + recs[1] * 512) as u64));
            assert!(what.contains("CRC mismatch"), "{what}");
        }
        r => panic!("{r:?}"),
    }
}

#[test]
fn a_torn_last_record_is_cut_off_like_the_kernel_does() {
    let img = image("dirty-v5-wrap");
    let recs = records(&img);
    let (start, _) = log_geometry(&img);
    let mut b = img.clone();
    let last = *recs.last().unwrap();
    b[start + last * 512 + 512 + 100] ^= 0x40;
    // The head moves back before the torn record; the tail comes from the record before it
    // (which may reach further back than the torn one's), and the rest replays.
    let fs = XfsFs::open(mem(b)).unwrap();
    assert!(
        matches!(fs.consistency().journal, Journal::Replayed { transactions, .. } if transactions > 0),
        "{:?}",
        fs.consistency()
    );
    walk(&fs);
}

#[test]
fn absurd_lengths_and_unknown_items_stop_the_replay() {
    let img = image("dirty-v5-wrap");
    let recs = records(&img);
    let (start, _) = log_geometry(&img);
    let first = start + recs[0] * 512;

    // A record length past any record buffer.
    let mut b = img.clone();
    b[first + 12..first + 16].copy_from_slice(&u32::MAX.to_be_bytes());
    match not_replayed(b) {
        NotReplayed::Damaged { offset, what } => {
            assert_eq!(offset, Some(first as u64));
            assert!(what.contains("length"), "{what}");
        }
        r => panic!("{r:?}"),
    }

    // An op header whose length runs past its record (CRC made to match).
    let mut b = img.clone();
    let op = first + 512;
    b[op + 4..op + 8].copy_from_slice(&0x00ff_ffffu32.to_be_bytes());
    fix_crc(&mut b, recs[0]);
    match not_replayed(b) {
        NotReplayed::Damaged { what, .. } => assert!(what.contains("runs past"), "{what}"),
        r => panic!("{r:?}"),
    }

    // A record written by a big-endian host.
    let mut b = img.clone();
    b[first + 300..first + 304].copy_from_slice(&2u32.to_be_bytes());
    fix_crc(&mut b, recs[0]);
    assert!(matches!(not_replayed(b), NotReplayed::Unsupported { .. }));

    // An unknown item type: the first item format after a transaction header in the record.
    let mut b = img.clone();
    let len = be32(&b, first + 12) as usize;
    let mut o = 0;
    let mut patched = false;
    let mut regions_seen = std::collections::HashMap::new();
    while o + 12 <= len && !patched {
        let h = first + 512 + o;
        let tid = be32(&b, h);
        let olen = be32(&b, h + 4) as usize;
        let flags = b[h + 9];
        let n = regions_seen.entry(tid).or_insert(0u32);
        if flags & 1 != 0 {
            *n = 0;
        } else if olen > 0 && flags & 0x08 == 0 {
            *n += 1;
            // Region 1 is the transaction header, region 2 the first item's format; its
            // first two bytes must not be a block's cycle word.
            let d = h + 12;
            if *n == 2 && (d - start) % 512 > 4 && (d - start) % 512 < 510 {
                b[d..d + 2].copy_from_slice(&0x7777u16.to_le_bytes());
                patched = true;
            }
        }
        o += 12 + olen;
    }
    assert!(patched, "no item format found in the first record");
    fix_crc(&mut b, recs[0]);
    match not_replayed(b) {
        NotReplayed::Unsupported { what } => assert!(what.contains("0x7777"), "{what}"),
        r => panic!("{r:?}"),
    }
}

/// Byte flips all over the log: a replay or a reason, never a panic.
#[test]
fn hostile_logs_do_not_panic() {
    for name in DIRTY {
        let img = image(name);
        let (start, bbs) = log_geometry(&img);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..60 {
            let mut b = img.clone();
            for _ in 0..16 {
                let r = next(&mut x);
                b[start + (r % (bbs as u64 * 512)) as usize] = (r >> 40) as u8;
            }
            if let Ok(fs) = XfsFs::open(mem(b)) {
                walk_hostile(&fs, 2000);
            }
        }
    }
}
