//! VHDX reading checked against independent oracles: images made by qemu-img
//! and by testdata/container/mkdiff.py, with virtual-disk hashes from libvhdi
//! and qemu-img (testdata/container/expected.tsv).

use std::path::Path;
use std::sync::Arc;

use flr_io::{FileParentResolver, FileSource, MemSource, NoParentResolver, ReadAt, Source};
use flr_vhdx::{probe, DiskType, VhdxDisk, VhdxError};

const MIB: u64 = 1 << 20;

use flr_testdata::chains::{container_fixture as fixture, read_all};
use flr_testdata::container_expected as expected;

fn open(path: &Path) -> Result<VhdxDisk, VhdxError> {
    let src: Source = Arc::new(FileSource::open(path).expect("open fixture"));
    VhdxDisk::open(src, &FileParentResolver::new(path))
}

fn open_mem(data: Vec<u8>) -> Result<VhdxDisk, VhdxError> {
    VhdxDisk::open(Arc::new(MemSource::new(data)), &NoParentResolver)
}

const VHDX_FIXTURES: &[&str] = &[
    "vhdx-fixed.vhdx",
    "vhdx-dynamic.vhdx",
    "vhdx-diff1.vhdx",
    "vhdx-diff2.vhdx",
];

#[test]
fn every_fixture_hashes_as_the_oracles_say() {
    flr_testdata::chains::check_container_fixtures(VHDX_FIXTURES, 123_457, |path| {
        let d = open(path).map_err(|e| e.to_string())?;
        let warnings = d.info().warnings.clone();
        Ok((Arc::new(d), warnings))
    });
}

#[test]
fn info_describes_the_images() {
    let d = open(&fixture("vhdx-fixed.vhdx")).unwrap();
    let i = d.info();
    assert_eq!(i.disk_type, DiskType::Fixed);
    assert!(i.leave_blocks_allocated && !i.has_parent);
    assert_eq!(i.logical_sector_size, 512);
    assert!(i.creator.to_lowercase().contains("qemu"), "{}", i.creator);

    let d = open(&fixture("vhdx-dynamic.vhdx")).unwrap();
    let i = d.info();
    assert_eq!(i.disk_type, DiskType::Dynamic);
    assert_eq!(i.block_size, 1 << 20);
    assert_eq!(i.virtual_size, 8_390_656);
    assert!(!i.log_not_replayed);

    let d = open(&fixture("vhdx-diff2.vhdx")).unwrap();
    let i = d.info();
    assert_eq!(i.disk_type, DiskType::Differencing);
    assert!(i.has_parent);
    assert_eq!(i.physical_sector_size, 4096);
    assert_eq!(i.chain.len(), 2);
    assert!(i.chain[0].ends_with("vhdx-diff1.vhdx"), "{:?}", i.chain);
    assert!(i.chain[1].ends_with("vhdx-dynamic.vhdx"), "{:?}", i.chain);
    assert_eq!(i.parent_locators[0], ".\\vhdx-diff1.vhdx");
    let p = d.parent().unwrap();
    assert_eq!(
        i.parent_linkage
            .as_deref()
            .map(|s| s.trim_matches(['{', '}'])),
        Some(p.info().data_write_guid.as_str())
    );
    // libvhdi prints the DataWriteGuid as the identifier and the linkage as the parent id.
    let vi = std::fs::read_to_string(
        flr_testdata::testdata_dir().join("container/vhdx-diff2.vhdx.vhdiinfo.txt"),
    )
    .unwrap();
    assert!(
        vi.contains(&i.data_write_guid),
        "{vi} vs {}",
        i.data_write_guid
    );
    assert!(vi.contains(&p.info().data_write_guid), "{vi}");
}

#[test]
fn reads_at_odd_offsets_match_the_raw_disk() {
    let raw = std::fs::read(flr_testdata::fixture("container/raw.img.zst")).unwrap();
    for name in ["vhdx-fixed.vhdx", "vhdx-dynamic.vhdx"] {
        let d = open(&fixture(name)).unwrap();
        check_windows(&d, &raw, name);
    }
    let d = open(&fixture("vhdx-diff2.vhdx")).unwrap();
    let all = read_all(&d, usize::MAX);
    check_windows(&d, &all, "vhdx-diff2.vhdx");
}

fn check_windows(d: &dyn ReadAt, truth: &[u8], name: &str) {
    let size = truth.len() as u64;
    let mut cases: Vec<(u64, usize)> = vec![
        (0, 1),
        (1, 511),
        (10 * 512 - 1, 4 * 512 + 2), // the partially present run of diff1
        (MIB - 3, 7),                // across a block boundary
        (2 * MIB - 700, 5 * MIB as usize),
        (5 * MIB - 1025, 2050),
        (8 * MIB - 1, 2),
        (size - 1, 1),
        (size - 2049, 2049),
        (0, size as usize),
    ];
    let mut x: u64 = 0xD1B5_4A32_D192_ED03;
    for _ in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = x % size;
        let len = ((x >> 40) % 300_000).min(size - off) as usize;
        cases.push((off, len));
    }
    for (off, len) in cases {
        let mut buf = vec![0x55u8; len];
        d.read_exact_at(off, &mut buf)
            .unwrap_or_else(|e| panic!("{name}: read {len} at {off}: {e}"));
        assert!(
            buf[..] == truth[off as usize..off as usize + len],
            "{name}: {len} bytes at {off} differ"
        );
    }
    let mut b = [0u8; 2];
    assert!(d.read_exact_at(size - 1, &mut b).is_err());
}

#[test]
fn holes_are_known_zero() {
    let d = open(&fixture("vhdx-dynamic.vhdx")).unwrap();
    assert!(d.is_known_zero(2 * MIB, 2 * MIB));
    assert!(d.is_known_zero(6 * MIB + 3, 1000));
    assert!(!d.is_known_zero(MIB, MIB));
    assert!(!d.is_known_zero(2 * MIB - 1, 2));
    // Block 6 is a hole in the whole chain; block 3 was written by diff2,
    // block 2 by diff1.
    let d = open(&fixture("vhdx-diff2.vhdx")).unwrap();
    assert!(d.is_known_zero(6 * MIB, MIB));
    assert!(!d.is_known_zero(3 * MIB, MIB));
    assert!(!d.is_known_zero(2 * MIB, MIB));
    let f = open(&fixture("vhdx-fixed.vhdx")).unwrap();
    assert!(!f.is_known_zero(2 * MIB, 512));
}

#[test]
fn probe_finds_vhdx_only() {
    for name in VHDX_FIXTURES {
        assert!(probe(&FileSource::open(fixture(name)).unwrap()), "{name}");
    }
    assert!(!probe(
        &FileSource::open(fixture("vhd-dynamic.vhd")).unwrap()
    ));
    assert!(!probe(&MemSource::new(b"vhdx".to_vec())));
}

// ---------------------------------------------------------------------------
// Damaged and hostile images.
// ---------------------------------------------------------------------------

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn fix_crc(b: &mut [u8], at: usize, len: usize) {
    b[at + 4..at + 8].fill(0);
    let c = crc32c(&b[at..at + len]);
    b[at + 4..at + 8].copy_from_slice(&c.to_le_bytes());
}

fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// (BAT offset, metadata offset) from region table 1.
fn regions(b: &[u8]) -> (usize, usize) {
    let rt = 192 * 1024;
    let n = u32::from_le_bytes(b[rt + 8..rt + 12].try_into().unwrap()) as usize;
    let (mut bat, mut meta) = (0, 0);
    for i in 0..n {
        let e = rt + 16 + 32 * i;
        let off = le64(b, e + 16) as usize;
        match b[e] {
            0x66 => bat = off,  // 2DC27766-…
            0x06 => meta = off, // 8B7CA206-…
            _ => {}
        }
    }
    (bat, meta)
}

const H1: usize = 64 * 1024;
const H2: usize = 128 * 1024;
const RT1: usize = 192 * 1024;
const RT2: usize = 256 * 1024;

#[test]
fn a_damaged_header_or_region_table_falls_back_to_the_other() {
    let exp = expected();
    let good = bytes("vhdx-dynamic.vhdx");
    for (at, what) in [
        (H1 + 20, "header"),
        (H2 + 20, "header"),
        (RT1 + 40, "region table"),
    ] {
        let mut b = good.clone();
        b[at] ^= 0xFF;
        let d = open_mem(b).unwrap_or_else(|e| panic!("{at:#x}: {e}"));
        assert!(
            d.info().warnings.iter().any(|w| w.contains(what)),
            "{at:#x}: {:?}",
            d.info().warnings
        );
        assert_eq!(
            flr_testdata::sha256_hex(&read_all(&d, usize::MAX)),
            exp["vhdx-dynamic.vhdx"].sha256
        );
    }
    // Both copies damaged: refused, naming the structure.
    let mut b = good.clone();
    b[H1 + 20] ^= 0xFF;
    b[H2 + 20] ^= 0xFF;
    let err = open_mem(b).unwrap_err().to_string();
    assert!(err.contains("no valid header"), "{err}");
    let mut b = good.clone();
    b[RT1 + 40] ^= 0xFF;
    b[RT2 + 40] ^= 0xFF;
    let err = open_mem(b).unwrap_err().to_string();
    assert!(err.contains("region table"), "{err}");
}

#[test]
fn the_newer_header_wins() {
    // Give header 1 a higher sequence number and another DataWriteGuid.
    let mut b = bytes("vhdx-dynamic.vhdx");
    let s2 = le64(&b, H2 + 8);
    b[H1 + 8..H1 + 16].copy_from_slice(&(s2 + 10).to_le_bytes());
    b[H1 + 32..H1 + 48].copy_from_slice(&[0x11; 16]);
    fix_crc(&mut b, H1, 4096);
    let d = open_mem(b).unwrap();
    assert_eq!(d.info().header_sequence, s2 + 10);
    assert_eq!(
        d.info().data_write_guid,
        "11111111-1111-1111-1111-111111111111"
    );
}

#[test]
fn a_non_empty_log_is_a_warning_that_it_was_not_replayed() {
    let exp = expected();
    let mut b = bytes("vhdx-dynamic.vhdx");
    for h in [H1, H2] {
        b[h + 48..h + 64].copy_from_slice(&[0xAB; 16]);
        fix_crc(&mut b, h, 4096);
    }
    let d = open_mem(b).unwrap();
    assert!(d.info().log_not_replayed);
    assert!(
        d.info().warnings.iter().any(|w| w.contains("NOT replayed")),
        "{:?}",
        d.info().warnings
    );
    assert_eq!(
        flr_testdata::sha256_hex(&read_all(&d, usize::MAX)),
        exp["vhdx-dynamic.vhdx"].sha256
    );
}

#[test]
fn unknown_required_regions_and_items_are_refused() {
    let good = bytes("vhdx-dynamic.vhdx");
    // A third, required region with an unknown GUID.
    let mut b = good.clone();
    let n = u32::from_le_bytes(b[RT1 + 8..RT1 + 12].try_into().unwrap()) as usize;
    let e = RT1 + 16 + 32 * n;
    b[e..e + 16].copy_from_slice(&[0x42; 16]);
    b[e + 16..e + 24].copy_from_slice(&(MIB).to_le_bytes());
    b[e + 24..e + 28].copy_from_slice(&(MIB as u32).to_le_bytes());
    b[e + 28..e + 32].copy_from_slice(&1u32.to_le_bytes());
    b[RT1 + 8..RT1 + 12].copy_from_slice(&((n + 1) as u32).to_le_bytes());
    fix_crc(&mut b, RT1, 64 * 1024);
    let err = open_mem(b.clone()).unwrap_err().to_string();
    assert!(err.contains("unknown required region"), "{err}");
    // Not required: ignored with a warning.
    b[e + 28] = 0;
    fix_crc(&mut b, RT1, 64 * 1024);
    let d = open_mem(b).unwrap();
    assert!(d
        .info()
        .warnings
        .iter()
        .any(|w| w.contains("unknown optional region")));

    // An unknown required metadata item: rename the page 83 item.
    let mut b = good.clone();
    let (_, meta) = regions(&b);
    let count = u16::from_le_bytes(b[meta + 10..meta + 12].try_into().unwrap()) as usize;
    let mut renamed = false;
    for i in 0..count {
        let e = meta + 32 + 32 * i;
        if b[e..e + 4] == [0xAB, 0x12, 0xCA, 0xBE] {
            b[e] = 0xAC;
            b[e + 24] |= 4; // required
            renamed = true;
        }
    }
    assert!(renamed, "page 83 item not found");
    let err = open_mem(b).unwrap_err().to_string();
    assert!(err.contains("unknown required metadata item"), "{err}");
}

#[test]
fn bat_entry_past_the_end_is_a_read_error_naming_the_offset() {
    let mut b = bytes("vhdx-dynamic.vhdx");
    let (bat, _) = regions(&b);
    // Block 0: fully present at 4 GiB.
    b[bat..bat + 8].copy_from_slice(&((4096u64 << 20) | 6).to_le_bytes());
    // Block 1: reserved state 4.
    b[bat + 8..bat + 16].copy_from_slice(&((3u64 << 20) | 4).to_le_bytes());
    let d = open_mem(b).unwrap();
    assert!(
        d.info().warnings.iter().any(|w| w.contains("past the end")),
        "{:?}",
        d.info().warnings
    );
    let mut buf = [0u8; 1000];
    let err = d.read_exact_at(512, &mut buf).unwrap_err().to_string();
    assert!(
        err.contains("vhdx") && err.contains("0x200") && err.contains("past the end"),
        "{err}"
    );
    let err = d.read_exact_at(MIB + 7, &mut buf).unwrap_err().to_string();
    assert!(err.contains("reserved state"), "{err}");
    d.read_exact_at(5 * MIB, &mut buf).unwrap();
}

#[test]
fn absurd_metadata_is_refused() {
    let good = bytes("vhdx-dynamic.vhdx");
    let (_, meta) = regions(&good);
    let count = u16::from_le_bytes(good[meta + 10..meta + 12].try_into().unwrap()) as usize;
    let item = |b: &[u8], first: [u8; 4]| -> usize {
        (0..count)
            .map(|i| meta + 32 + 32 * i)
            .find(|&e| b[e..e + 4] == first)
            .map(|e| meta + u32::from_le_bytes(b[e + 16..e + 20].try_into().unwrap()) as usize)
            .expect("item")
    };
    let params = item(&good, [0x37, 0x67, 0xA1, 0xCA]);
    let size = item(&good, [0x24, 0x42, 0xA5, 0x2F]);
    let logical = item(&good, [0x1D, 0xBF, 0x41, 0x81]);
    for bs in [0u32, 3, 512, 3 << 20, 512 << 20, u32::MAX] {
        let mut b = good.clone();
        b[params..params + 4].copy_from_slice(&bs.to_le_bytes());
        let err = open_mem(b).unwrap_err().to_string();
        assert!(err.contains("block size"), "{bs}: {err}");
    }
    for vs in [0u64, 1 << 50, u64::MAX] {
        let mut b = good.clone();
        b[size..size + 8].copy_from_slice(&vs.to_le_bytes());
        let err = open_mem(b).unwrap_err().to_string();
        assert!(err.contains("virtual disk size"), "{vs}: {err}");
    }
    // A virtual size the BAT region is too small for.
    let mut b = good.clone();
    b[size..size + 8].copy_from_slice(&(60u64 << 40).to_le_bytes());
    assert!(open_mem(b).is_err());
    let mut b = good.clone();
    b[logical..logical + 4].copy_from_slice(&1000u32.to_le_bytes());
    let err = open_mem(b).unwrap_err().to_string();
    assert!(err.contains("logical sector size"), "{err}");
}

#[test]
fn truncated_images_fail_cleanly() {
    for name in VHDX_FIXTURES {
        let full = bytes(name);
        for cut in [
            0usize,
            7,
            8,
            4096,
            200 * 1024,
            320 * 1024,
            MIB as usize,
            full.len() / 2,
            full.len() - 1,
        ] {
            let b = full[..cut.min(full.len())].to_vec();
            if let Ok(d) = open_mem(b) {
                let mut buf = vec![0u8; 1 << 20];
                let mut off = 0;
                while off < d.len() {
                    let n = (buf.len() as u64).min(d.len() - off) as usize;
                    let _ = d.read_exact_at(off, &mut buf[..n]);
                    off += n as u64;
                }
            }
        }
    }
}

#[test]
fn random_damage_never_panics() {
    let bases = [bytes("vhdx-dynamic.vhdx"), bytes("vhdx-diff1.vhdx")];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..300 {
        let mut b = bases[round % 2].clone();
        let (bat, meta) = regions(&b);
        let mut dirty = Vec::new();
        for _ in 0..(1 + next() % 6) {
            let region = match next() % 5 {
                0 => H1..H1 + 128,
                1 => RT1..RT1 + 128,
                2 => meta..meta + 512,
                3 => meta + 64 * 1024..meta + 64 * 1024 + 512,
                _ => bat..bat + 128,
            };
            let at = region.start + (next() as usize % region.len());
            b[at] = next() as u8;
            dirty.push(at);
        }
        // Keep checksums valid half of the time so parsing goes deeper.
        if round % 4 < 2 {
            for s in [H1, H2] {
                fix_crc(&mut b, s, 4096);
            }
            fix_crc(&mut b, RT1, 64 * 1024);
        }
        if let Ok(d) = open_mem(b) {
            let mut buf = vec![0u8; 300_000];
            for _ in 0..4 {
                let len = d.len().min(buf.len() as u64);
                let off = if d.len() > len {
                    next() % (d.len() - len)
                } else {
                    0
                };
                let _ = d.read_exact_at(off, &mut buf[..len as usize]);
                let _ = d.is_known_zero(off, len);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Parents.
// ---------------------------------------------------------------------------

#[test]
fn missing_parent_names_the_paths_tried() {
    let dir = tempfile::tempdir().unwrap();
    let child = dir.path().join("vhdx-diff1.vhdx");
    std::fs::copy(fixture("vhdx-diff1.vhdx"), &child).unwrap();
    let err = open(&child).unwrap_err().to_string();
    let want = dir.path().join("vhdx-dynamic.vhdx");
    assert!(err.contains(&want.display().to_string()), "{err}");
    let err = open_mem(bytes("vhdx-diff1.vhdx")).unwrap_err().to_string();
    assert!(err.contains("vhdx-dynamic.vhdx"), "{err}");
}

#[test]
fn a_parent_with_another_data_write_guid_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let child = dir.path().join("vhdx-diff1.vhdx");
    std::fs::copy(fixture("vhdx-diff1.vhdx"), &child).unwrap();
    // Same content, other DataWriteGuid: the fixed image.
    std::fs::copy(
        fixture("vhdx-fixed.vhdx"),
        dir.path().join("vhdx-dynamic.vhdx"),
    )
    .unwrap();
    let d = open(&child).unwrap();
    assert!(
        d.info()
            .warnings
            .iter()
            .any(|w| w.contains("DataWriteGuid")),
        "{:?}",
        d.info().warnings
    );
    let exp = expected();
    assert_eq!(
        flr_testdata::sha256_hex(&read_all(&d, usize::MAX)),
        exp["vhdx-diff1.vhdx"].sha256
    );
}

#[test]
fn parent_cycles_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let selfish = dir.path().join("vhdx-dynamic.vhdx");
    std::fs::copy(fixture("vhdx-diff1.vhdx"), &selfish).unwrap();
    let err = open(&selfish).unwrap_err().to_string();
    assert!(err.contains("cycle"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("vhdx-diff1.vhdx"),
        dir.path().join("vhdx-diff1.vhdx"),
    )
    .unwrap();
    std::fs::copy(
        fixture("vhdx-diff2.vhdx"),
        dir.path().join("vhdx-dynamic.vhdx"),
    )
    .unwrap();
    let err = open(&dir.path().join("vhdx-diff1.vhdx"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cycle"), "{err}");
}

// ---------------------------------------------------------------------------
// Third-party corpus: images made by Hyper-V.
// ---------------------------------------------------------------------------

#[test]
fn corpus_virtual_disks_hash_as_qemu_and_libvhdi_say() {
    let seen =
        flr_testdata::chains::check_corpus_virtual_disks("flr-vhdx corpus", "vhdx", |path| {
            let d = open(path).map_err(|e| e.to_string())?;
            Ok((d.len(), format!("{:?}", d.info().disk_type), Arc::new(d)))
        });
    if let Some(seen) = seen {
        assert_eq!(seen, 2, "expected two VHDX images in the corpus");
    }
}

#[test]
fn endless_chains_stop_at_the_depth_cap() {
    let image = bytes("vhdx-diff1.vhdx");
    let res = flr_testdata::chains::EndlessParents::new(image.clone());
    let err = VhdxDisk::open(Arc::new(MemSource::new(image)), &res)
        .unwrap_err()
        .to_string();
    assert!(err.contains("more than 64 parents"), "{err}");
    assert_eq!(res.opened(), flr_vhdx::MAX_CHAIN_DEPTH);
}
