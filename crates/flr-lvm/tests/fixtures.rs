//! flr-lvm on the committed fixtures (testdata/lvm, made by pvcreate/vgcreate/lvcreate,
//! see gen.sh): a VG over two disks with a linear LV spanning both, a striped LV and an
//! LV on one disk; each LV's bytes against the sha256 of the filesystem image written
//! into it; a missing PV; the corpus image.

use std::sync::Arc;

use flr_io::{FileSource, ReadAt, Slice, Source};
use flr_lvm::{assemble, LvStatus, PhysicalVolume};

fn disk(rel: &str) -> Source {
    Arc::new(FileSource::open(flr_testdata::fixture(rel)).unwrap())
}

/// Disk 2's PV is GPT partition 1 at sector 2048 (gen.sh: `sgdisk -n 1:2048:0`).
fn disk2_p1() -> Source {
    let d = disk("lvm/two-pv-2.img.zst");
    let len = d.len() - 2048 * 512 - 33 * 512;
    Arc::new(Slice::new(d, 2048 * 512, len, "p1").unwrap())
}

fn sha_of(src: &dyn ReadAt) -> String {
    let mut buf = vec![0u8; 1 << 20];
    let mut all = Vec::with_capacity(usize::try_from(src.len()).unwrap());
    let mut at = 0;
    while at < src.len() {
        let n = (src.len() - at).min(buf.len() as u64) as usize;
        src.read_exact_at(at, &mut buf[..n]).unwrap();
        all.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
    flr_testdata::sha256_hex(&all)
}

fn expected() -> Vec<(String, u64, String)> {
    std::fs::read_to_string(flr_testdata::testdata_dir().join("lvm/lv-sha256.tsv"))
        .unwrap()
        .lines()
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            (c[0].to_string(), c[1].parse().unwrap(), c[2].to_string())
        })
        .collect()
}

#[test]
fn two_disks_assemble_into_one_vg() {
    let pv1 = PhysicalVolume::read(disk("lvm/two-pv-1.img.zst"), "disk").unwrap();
    let pv2 = PhysicalVolume::read(disk2_p1(), "d2/p1").unwrap();
    assert_eq!(pv1.uuid, "aaaaaa-1111-2222-3333-4444-5555-aaaaaa");
    assert_eq!(pv2.uuid, "bbbbbb-1111-2222-3333-4444-5555-bbbbbb");
    assert!(flr_lvm::probe(pv1_src().as_ref()));
    let vgs = assemble(&[pv1, pv2]);
    assert_eq!(vgs.len(), 1);
    let vg = &vgs[0];
    assert_eq!(vg.name, "datavg");
    assert_eq!(vg.extent_size, 1 << 20);
    assert!(vg.missing().is_empty());
    assert_eq!(vg.first_location(), Some("disk"));
    let names: Vec<&str> = vg.lvs.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["stripe", "solo", "span"]);
    assert_eq!(vg.lvs[0].layout, "striped (2 × 64 KiB)");
    assert_eq!(vg.lvs[2].layout, "linear");
    for (lv, size, sha) in expected() {
        let src = vg.open_lv(&lv).unwrap();
        assert_eq!(src.len(), size, "{lv}");
        assert_eq!(
            sha_of(src.as_ref()),
            sha,
            "{lv}: bytes differ from the image written into it"
        );
    }
    // Reads that cross a stripe chunk and the PV boundary of the spanning LV.
    let span = vg.open_lv("span").unwrap();
    let mut b = vec![0u8; 3 << 20];
    span.read_exact_at((23 << 20) - (1 << 20) - 5, &mut b)
        .unwrap();
    assert!(span.read_exact_at(span.len() - 1, &mut [0u8; 2]).is_err());
}

fn pv1_src() -> Source {
    disk("lvm/two-pv-1.img.zst")
}

#[test]
fn a_missing_pv_is_named_and_the_other_lvs_open() {
    let pv2 = PhysicalVolume::read(disk2_p1(), "p1").unwrap();
    let vgs = assemble(&[pv2]);
    let vg = &vgs[0];
    let missing = vg.missing();
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].uuid, "aaaaaa-1111-2222-3333-4444-5555-aaaaaa");
    assert!(
        missing[0].expected_at.starts_with("/dev/"),
        "{}",
        missing[0].expected_at
    );
    let solo = vg.lvs.iter().find(|l| l.name == "solo").unwrap();
    assert_eq!(solo.status, LvStatus::Readable);
    let (_, _, sha) = expected().into_iter().find(|e| e.0 == "solo").unwrap();
    assert_eq!(sha_of(vg.open_lv("solo").unwrap().as_ref()), sha);
    for name in ["span", "stripe"] {
        let lv = vg.lvs.iter().find(|l| l.name == name).unwrap();
        match &lv.status {
            LvStatus::MissingPv(r) => {
                assert!(r.contains("aaaaaa-1111-2222-3333-4444-5555-aaaaaa"), "{r}")
            }
            other => panic!("{name}: {other:?}"),
        }
        let Err(e) = vg.open_lv(name) else {
            panic!("{name} opened")
        };
        let e = e.to_string();
        assert!(e.contains("datavg/") && e.contains("missing"), "{e}");
    }
}

#[test]
fn hostile_labels_and_metadata_do_not_panic() {
    let bytes = {
        let s = pv1_src();
        let mut v = vec![0u8; 1 << 20];
        s.read_exact_at(0, &mut v).unwrap();
        v
    };
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..400 {
        let mut b = bytes.clone();
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = (x % 12288) as usize;
            b[at] = (x >> 40) as u8;
        }
        if let Ok(pv) = PhysicalVolume::read(Arc::new(flr_io::MemSource::new(b)), "x") {
            for vg in assemble(&[pv]) {
                for lv in &vg.lvs {
                    if let Ok(s) = vg.open_lv(&lv.name) {
                        let _ = s.read_exact_at(0, &mut [0u8; 4096]);
                    }
                }
            }
        }
    }
}

#[test]
fn corpus_lvm_image() {
    let Some((unpacked, corpus)) = flr_testdata::corpus("flr-lvm corpus_lvm_image") else {
        return;
    };
    let src: Source = Arc::new(FileSource::open(unpacked.join("lvm/dfvfs/lvm.raw")).unwrap());
    let pv = PhysicalVolume::read(src, "disk").unwrap();
    let vgs = assemble(&[pv]);
    assert_eq!(vgs.len(), 1);
    let readable: Vec<_> = vgs[0]
        .lvs
        .iter()
        .filter(|l| l.status == LvStatus::Readable)
        .collect();
    assert!(!readable.is_empty());
    // The expected table is checked file by file through the engine (tests/lvm.rs);
    // here: the LV starts with an ext2 superblock.
    let lv = vgs[0].open_lv(&readable[0].name).unwrap();
    let mut m = [0u8; 2];
    lv.read_exact_at(1080, &mut m).unwrap();
    assert_eq!(m, [0x53, 0xef]);
    assert!(corpus.join("expected/dfvfs-lvm-lv1.files.tsv").exists());
}
