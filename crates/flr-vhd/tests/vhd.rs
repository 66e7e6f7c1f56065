//! VHD reading checked against independent oracles: images made by qemu-img
//! and by testdata/container/mkdiff.py, with virtual-disk hashes from libvhdi
//! and qemu-img (testdata/container/expected.tsv).

use std::path::Path;
use std::sync::Arc;

use flr_io::{FileParentResolver, FileSource, MemSource, NoParentResolver, ReadAt, Source};
use flr_vhd::{probe, DiskType, VhdDisk, VhdError};

use flr_testdata::chains::{container_fixture as fixture, read_all};
use flr_testdata::container_expected as expected;

fn open(path: &Path) -> Result<VhdDisk, VhdError> {
    let src: Source = Arc::new(FileSource::open(path).expect("open fixture"));
    VhdDisk::open(src, &FileParentResolver::new(path))
}

const VHD_FIXTURES: &[&str] = &[
    "vhd-fixed.vhd",
    "vhd-dynamic.vhd",
    "vhd-diff1.vhd",
    "vhd-diff2.vhd",
    "vhd-subbyte.vhd",
];

#[test]
fn every_fixture_hashes_as_the_oracles_say() {
    flr_testdata::chains::check_container_fixtures(VHD_FIXTURES, 77_777, |path| {
        let d = open(path).map_err(|e| e.to_string())?;
        let warnings = d.info().warnings.clone();
        Ok((Arc::new(d), warnings))
    });
}

#[test]
fn info_describes_the_images() {
    let d = open(&fixture("vhd-fixed.vhd")).unwrap();
    assert_eq!(d.info().disk_type, DiskType::Fixed);
    assert_eq!(d.info().block_size, None);
    assert_eq!(d.info().creator_application, "qem2");
    let d = open(&fixture("vhd-dynamic.vhd")).unwrap();
    assert_eq!(d.info().disk_type, DiskType::Dynamic);
    assert_eq!(d.info().block_size, Some(2 << 20));
    assert!(d.info().chain.is_empty());
    // libvhdi prints the identifier in stored byte order, as flr does.
    let vi = std::fs::read_to_string(
        flr_testdata::testdata_dir().join("container/vhd-dynamic.vhd.vhdiinfo.txt"),
    )
    .unwrap();
    assert!(
        vi.contains(&d.info().unique_id),
        "{vi} vs {}",
        d.info().unique_id
    );

    let d = open(&fixture("vhd-diff2.vhd")).unwrap();
    let i = d.info();
    assert_eq!(i.disk_type, DiskType::Differencing);
    assert_eq!(i.chain.len(), 2);
    assert!(i.chain[0].ends_with("vhd-diff1.vhd"), "{:?}", i.chain);
    assert!(i.chain[1].ends_with("vhd-dynamic.vhd"), "{:?}", i.chain);
    assert_eq!(i.parent_locators[0], ".\\vhd-diff1.vhd");
    assert_eq!(i.parent_name.as_deref(), Some("vhd-diff1.vhd"));
    let parent = d.parent().expect("parent");
    assert_eq!(Some(parent.info().unique_id.clone()), i.parent_unique_id);
    let vi = std::fs::read_to_string(
        flr_testdata::testdata_dir().join("container/vhd-diff2.vhd.vhdiinfo.txt"),
    )
    .unwrap();
    assert!(vi.contains(i.parent_unique_id.as_deref().unwrap()), "{vi}");
}

#[test]
fn reads_at_odd_offsets_match_the_raw_disk() {
    let raw = std::fs::read(flr_testdata::fixture("container/raw.img.zst")).unwrap();
    for name in ["vhd-fixed.vhd", "vhd-dynamic.vhd"] {
        let d = open(&fixture(name)).unwrap();
        check_windows(&d, &raw, name);
    }
    // Differencing chains: compare with one whole read checked by hash above.
    for name in ["vhd-diff2.vhd", "vhd-subbyte.vhd"] {
        let d = open(&fixture(name)).unwrap();
        let all = read_all(&d, usize::MAX);
        check_windows(&d, &all, name);
    }
}

fn check_windows(d: &dyn ReadAt, truth: &[u8], name: &str) {
    let mb = 1u64 << 20;
    let size = truth.len() as u64;
    let mut cases: Vec<(u64, usize)> = vec![
        (0, 1),
        (1, 511),
        (511, 2),
        (5 * 512 + 7, 3 * 512),
        (2 * mb - 3, 7),                 // across a 2 MiB block boundary
        (2 * mb - 700, 5 * mb as usize), // across several blocks, holes included
        (4 * mb - 1, 2),
        (5 * mb + 4095, 8193),
        (size - 1, 1),
        (size - 2049, 2049),
        (0, size as usize),
    ];
    // Plus a deterministic scatter of odd windows.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = x % size;
        let len = ((x >> 40) % 300_000).min(size - off) as usize;
        cases.push((off, len));
    }
    for (off, len) in cases {
        let mut buf = vec![0xAAu8; len];
        d.read_exact_at(off, &mut buf)
            .unwrap_or_else(|e| panic!("{name}: read {len} at {off}: {e}"));
        assert!(
            buf[..] == truth[off as usize..off as usize + len],
            "{name}: {len} bytes at {off} differ"
        );
    }
    let mut b = [0u8; 2];
    assert!(
        d.read_exact_at(size - 1, &mut b).is_err(),
        "{name}: read past the end"
    );
}

#[test]
fn holes_are_known_zero() {
    let mb = 1u64 << 20;
    let d = open(&fixture("vhd-dynamic.vhd")).unwrap();
    // Block 1 (MiB 2-3) is all zeros in the raw disk, so qemu left it unallocated.
    assert!(d.is_known_zero(2 * mb, 2 * mb));
    assert!(d.is_known_zero(3 * mb + 5, 100));
    assert!(!d.is_known_zero(0, 512));
    assert!(!d.is_known_zero(2 * mb - 1, 2));
    assert!(!d.is_known_zero(d.len() - 1, 2));
    // The child allocated block 1 (written sectors 4101..4119).
    let d = open(&fixture("vhd-diff1.vhd")).unwrap();
    assert!(!d.is_known_zero(2 * mb, 2 * mb));
    let f = open(&fixture("vhd-fixed.vhd")).unwrap();
    assert!(!f.is_known_zero(2 * mb, 512));
}

#[test]
fn probe_finds_vhds_only() {
    for name in VHD_FIXTURES {
        let src = FileSource::open(fixture(name)).unwrap();
        assert!(probe(&src), "{name}");
    }
    let raw = FileSource::open(flr_testdata::fixture("container/raw.img.zst")).unwrap();
    assert!(!probe(&raw));
    let vhdx = FileSource::open(fixture("vhdx-dynamic.vhdx")).unwrap();
    assert!(!probe(&vhdx));
    assert!(!probe(&MemSource::new(vec![0; 100])));
}

// ---------------------------------------------------------------------------
// Damaged and hostile images: errors or warnings, never panics.
// ---------------------------------------------------------------------------

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

fn open_mem(data: Vec<u8>) -> Result<VhdDisk, VhdError> {
    VhdDisk::open(Arc::new(MemSource::new(data)), &NoParentResolver)
}

fn fix_footer_checksum(b: &mut [u8], at: usize) {
    b[at + 64..at + 68].fill(0);
    let sum: u32 = b[at..at + 512].iter().map(|&x| u32::from(x)).sum();
    b[at + 64..at + 68].copy_from_slice(&(!sum).to_be_bytes());
}

fn fix_header_checksum(b: &mut [u8], at: usize) {
    b[at + 36..at + 40].fill(0);
    let sum: u32 = b[at..at + 1024].iter().map(|&x| u32::from(x)).sum();
    b[at + 36..at + 40].copy_from_slice(&(!sum).to_be_bytes());
}

/// Header offset and BAT offset of a dynamic VHD.
fn layout(b: &[u8]) -> (usize, usize) {
    let end = b.len() - 512;
    let hdr = u64::from_be_bytes(b[end + 16..end + 24].try_into().unwrap()) as usize;
    let bat = u64::from_be_bytes(b[hdr + 16..hdr + 24].try_into().unwrap()) as usize;
    (hdr, bat)
}

#[test]
fn bad_footer_checksum_is_only_a_warning() {
    let exp = expected();
    for name in ["vhd-fixed.vhd", "vhd-dynamic.vhd"] {
        let mut b = bytes(name);
        let end = b.len() - 512;
        b[end + 64] ^= 0x55;
        if name == "vhd-dynamic.vhd" {
            b[64] ^= 0x55; // the copy at offset 0 too
        }
        let d = open_mem(b).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            d.info().warnings.iter().any(|w| w.contains("checksum")),
            "{name}: {:?}",
            d.info().warnings
        );
        let all = read_all(&d, usize::MAX);
        assert_eq!(flr_testdata::sha256_hex(&all), exp[name].sha256);
    }
}

#[test]
fn footer_copy_at_offset_zero_rescues_a_damaged_end() {
    let exp = expected();
    let mut b = bytes("vhd-dynamic.vhd");
    let end = b.len() - 512;
    b[end..end + 8].copy_from_slice(b"garbage!");
    let d = open_mem(b).unwrap();
    assert!(
        d.info().warnings.iter().any(|w| w.contains("offset 0")),
        "{:?}",
        d.info().warnings
    );
    assert_eq!(
        flr_testdata::sha256_hex(&read_all(&d, 1 << 20)),
        exp["vhd-dynamic.vhd"].sha256
    );
}

#[test]
fn old_511_byte_footer_is_read() {
    // Old Virtual PC images end with a 511-byte footer.
    let mut b = bytes("vhd-fixed.vhd");
    let end = b.len() - 512;
    let mut footer = b[end..].to_vec();
    b.truncate(end);
    footer.truncate(511); // the last byte is reserved (zero), so the checksum holds
    b.extend_from_slice(&footer);
    assert!(probe(&MemSource::new(b.clone())));
    let d = open_mem(b).unwrap();
    assert!(d.info().warnings.is_empty(), "{:?}", d.info().warnings);
    let raw = std::fs::read(flr_testdata::fixture("container/raw.img.zst")).unwrap();
    assert!(read_all(&d, usize::MAX) == raw);
}

#[test]
fn truncated_images_fail_cleanly() {
    for name in VHD_FIXTURES {
        let full = bytes(name);
        for cut in [
            0usize,
            100,
            511,
            512,
            1000,
            1536,
            4096,
            full.len() / 2,
            full.len() - 1,
        ] {
            let b = full[..cut.min(full.len())].to_vec();
            if let Ok(d) = open_mem(b) {
                // Whatever opened must read or fail, never panic.
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
fn bat_entry_past_the_end_is_a_read_error_naming_the_offset() {
    let mut b = bytes("vhd-dynamic.vhd");
    let (_, bat) = layout(&b);
    b[bat..bat + 4].copy_from_slice(&0x00F0_0000u32.to_be_bytes());
    let d = open_mem(b).unwrap();
    assert!(
        d.info().warnings.iter().any(|w| w.contains("past the end")),
        "{:?}",
        d.info().warnings
    );
    let mut buf = [0u8; 4096];
    let err = d.read_exact_at(4096, &mut buf).unwrap_err().to_string();
    assert!(
        err.contains("vhd") && err.contains("0x1000") && err.contains("past the end"),
        "{err}"
    );
    // Other blocks still read.
    d.read_exact_at(5 << 20, &mut buf).unwrap();
}

#[test]
fn absurd_sizes_are_refused() {
    let base = bytes("vhd-dynamic.vhd");
    let (hdr, _) = layout(&base);
    // Block sizes that are zero, not a multiple of 512, or huge.
    for bs in [0u32, 3, 1000, 0x8000_0000, u32::MAX] {
        let mut b = base.clone();
        b[hdr + 32..hdr + 36].copy_from_slice(&bs.to_be_bytes());
        fix_header_checksum(&mut b, hdr);
        let err = open_mem(b).unwrap_err().to_string();
        assert!(err.contains("block size"), "{bs}: {err}");
    }
    // A virtual size that would need an enormous BAT.
    let mut b = base.clone();
    let end = b.len() - 512;
    b[end + 48..end + 56].copy_from_slice(&(1u64 << 62).to_be_bytes());
    fix_footer_checksum(&mut b, end);
    let copy = b[end..].to_vec();
    b[..512].copy_from_slice(&copy);
    assert!(open_mem(b).is_err());
    // A table offset past the end, and max_table_entries beyond the file.
    let mut b = base.clone();
    b[hdr + 16..hdr + 24].copy_from_slice(&u64::MAX.to_be_bytes());
    fix_header_checksum(&mut b, hdr);
    assert!(open_mem(b).is_err());
    // A fixed disk whose footer claims more than the file holds: reads what is there.
    let mut b = bytes("vhd-fixed.vhd");
    let end = b.len() - 512;
    b[end + 48..end + 56].copy_from_slice(&(1u64 << 40).to_be_bytes());
    fix_footer_checksum(&mut b, end);
    let d = open_mem(b).unwrap();
    assert_eq!(d.len(), end as u64);
    assert!(!d.info().warnings.is_empty());
}

#[test]
fn random_damage_never_panics() {
    let bases = [bytes("vhd-dynamic.vhd"), bytes("vhd-diff1.vhd")];
    let mut x: u64 = 0x1234_5678_9ABC_DEF1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..400 {
        let mut b = bases[round % 2].clone();
        let (hdr, bat) = layout(&b);
        let end = b.len() - 512;
        for _ in 0..(1 + next() % 6) {
            // Damage the footer, the header, the BAT or a bitmap.
            let region = match next() % 4 {
                0 => end..b.len(),
                1 => hdr..hdr + 1024,
                2 => bat..bat + 64,
                _ => 0..b.len(),
            };
            let at = region.start + (next() as usize % region.len());
            b[at] = next() as u8;
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
// Parents: missing, refused, cyclic.
// ---------------------------------------------------------------------------

#[test]
fn missing_parent_names_the_paths_tried() {
    let dir = tempfile::tempdir().unwrap();
    let child = dir.path().join("vhd-diff1.vhd");
    std::fs::copy(fixture("vhd-diff1.vhd"), &child).unwrap();
    let err = open(&child).unwrap_err().to_string();
    eprintln!("{err}");
    let expected_path = dir.path().join("vhd-dynamic.vhd");
    assert!(
        err.contains(&expected_path.display().to_string()),
        "error does not name {}: {err}",
        expected_path.display()
    );
    assert!(
        err.contains("C:\\\\flr-fixtures") || err.contains("C:\\flr-fixtures"),
        "{err}"
    );

    let err = open_mem(bytes("vhd-diff1.vhd")).unwrap_err().to_string();
    assert!(err.contains("vhd-dynamic.vhd"), "{err}");
}

#[test]
fn a_parent_with_another_id_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let child = dir.path().join("vhd-subbyte.vhd");
    std::fs::copy(fixture("vhd-subbyte.vhd"), &child).unwrap();
    // Put the fixed image where the dynamic parent should be: same content, other id.
    std::fs::copy(fixture("vhd-fixed.vhd"), dir.path().join("vhd-dynamic.vhd")).unwrap();
    let d = open(&child).unwrap();
    assert!(
        d.info().warnings.iter().any(|w| w.contains("unique id")),
        "{:?}",
        d.info().warnings
    );
    let exp = expected();
    assert_eq!(
        flr_testdata::sha256_hex(&read_all(&d, usize::MAX)),
        exp["vhd-subbyte.vhd"].sha256
    );
}

#[test]
fn parent_cycles_are_detected() {
    // A child whose locator names itself.
    let dir = tempfile::tempdir().unwrap();
    let selfish = dir.path().join("vhd-dynamic.vhd");
    std::fs::copy(fixture("vhd-diff1.vhd"), &selfish).unwrap();
    let err = open(&selfish).unwrap_err().to_string();
    eprintln!("{err}");
    assert!(err.contains("cycle"), "{err}");

    // Two children naming each other: diff1 -> "vhd-dynamic.vhd" (really diff2)
    // -> "vhd-diff1.vhd" -> ...
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("vhd-diff1.vhd"), dir.path().join("vhd-diff1.vhd")).unwrap();
    std::fs::copy(fixture("vhd-diff2.vhd"), dir.path().join("vhd-dynamic.vhd")).unwrap();
    let err = open(&dir.path().join("vhd-diff1.vhd"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cycle"), "{err}");
}

// ---------------------------------------------------------------------------
// Third-party corpus: images made by Hyper-V and by dfvfs's authors.
// ---------------------------------------------------------------------------

#[test]
fn corpus_virtual_disks_hash_as_qemu_and_libvhdi_say() {
    let seen = flr_testdata::chains::check_corpus_virtual_disks("flr-vhd corpus", "vpc", |path| {
        let d = open(path).map_err(|e| e.to_string())?;
        Ok((d.len(), format!("{:?}", d.info().disk_type), Arc::new(d)))
    });
    if let Some(seen) = seen {
        assert_eq!(seen, 3, "expected three VHD images in the corpus");
    }
}

#[test]
fn endless_chains_stop_at_the_depth_cap() {
    let image = bytes("vhd-diff1.vhd");
    let res = flr_testdata::chains::EndlessParents::new(image.clone());
    let err = VhdDisk::open(Arc::new(MemSource::new(image)), &res)
        .unwrap_err()
        .to_string();
    assert!(err.contains("more than 64 parents"), "{err}");
    assert_eq!(res.opened(), flr_vhd::MAX_CHAIN_DEPTH);
}
