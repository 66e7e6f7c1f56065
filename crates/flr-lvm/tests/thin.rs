//! Thin pools on the third-party corpus (`lvm/dissect-volume`, made by
//! lvm2 and dm-thin on Fedora, checked with `thin_dump`): the LVM thin LVs,
//! the bare dm-thin pools, and the LVM linear and mirror images beside
//! them, against `expected/dissect-volume-lvm.tsv`. Skipped, loudly, when
//! the corpus is absent (`FLR_CORPUS`).

use std::path::Path;
use std::sync::Arc;

use flr_io::{FileSource, ReadAt, Source};
use flr_lvm::{assemble, LvStatus, PhysicalVolume, ThinPool};

fn open(p: &Path) -> Source {
    Arc::new(FileSource::open(p).unwrap())
}

fn sha_of(src: &dyn ReadAt, at: u64, len: u64) -> String {
    let mut all = vec![0u8; usize::try_from(len).unwrap()];
    // Reads that start and end inside thin blocks.
    let step = 100_000;
    let mut done = 0;
    while done < all.len() {
        let n = step.min(all.len() - done);
        src.read_exact_at(at + done as u64, &mut all[done..done + n])
            .unwrap();
        done += n;
    }
    flr_testdata::sha256_hex(&all)
}

/// (images, vg/lv, lv_size, content_sha256, lv_sha256) per row.
fn table(corpus: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(corpus.join("expected/dissect-volume-lvm.tsv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[test]
fn corpus_lvm_thin_mirror_and_linear_lvs() {
    let Some((unpacked, corpus)) =
        flr_testdata::corpus("flr-lvm corpus_lvm_thin_mirror_and_linear_lvs")
    else {
        return;
    };
    let dir = unpacked.join("lvm/dissect-volume");
    let mut checked = 0;
    for row in table(&corpus) {
        let (images, vglv, size, lv_sha) = (&row[0], &row[1], &row[3], &row[8]);
        if vglv.starts_with("(no LVM)") {
            continue;
        }
        let pvs: Vec<PhysicalVolume> = images
            .split(',')
            .map(|i| PhysicalVolume::read(open(&dir.join(i)), i).unwrap())
            .collect();
        let vgs = assemble(&pvs);
        let (vg_name, lv_name) = vglv.split_once('/').unwrap();
        let vg = vgs.iter().find(|v| v.name == vg_name).unwrap();
        let lv = vg.lvs.iter().find(|l| l.name == lv_name).unwrap();
        assert_eq!(lv.status, LvStatus::Readable, "{vglv}");
        let dev = vg.open_lv(lv_name).unwrap();
        let size: u64 = size.parse().unwrap();
        assert_eq!(dev.len(), size, "{vglv}");
        assert_eq!(&sha_of(dev.as_ref(), 0, size), lv_sha, "{vglv}");
        if lv.layout == "thin" {
            // 32 blocks of 64 KiB are mapped; the second half never was.
            assert!(dev.is_known_zero(2 << 20, 2 << 20), "{vglv}");
            assert!(!dev.is_known_zero((2 << 20) - 1, 2), "{vglv}");
            // The pool is named, not read.
            let pool = vg.lvs.iter().find(|l| l.name == "data").unwrap();
            assert!(matches!(&pool.status, LvStatus::Unsupported(r) if r.contains("thin pool")));
        }
        checked += 1;
    }
    assert_eq!(checked, 4);
}

#[test]
fn corpus_bare_dm_thin_pools() {
    let Some((unpacked, _)) = flr_testdata::corpus("flr-lvm corpus_bare_dm_thin_pools") else {
        return;
    };
    let dir = unpacked.join("lvm/dissect-volume");
    let pool = Arc::new(
        ThinPool::open(
            open(&dir.join("dm-thin-metadata.bin")),
            open(&dir.join("dm-thin-data.bin")),
            "thin pool",
        )
        .unwrap(),
    );
    assert_eq!(pool.block_bytes(), 64 << 10);
    let devs = pool.devices().unwrap();
    assert_eq!(
        devs.iter()
            .map(|d| (d.id, d.mapped_blocks))
            .collect::<Vec<_>>(),
        [(0, 32), (1, 32)]
    );
    for id in [0, 1] {
        let dev = pool.open_device(id, 2 << 20, "thin").unwrap();
        assert_eq!(
            sha_of(dev.as_ref(), 0, 2 << 20),
            "399d9ca83ae31eabd0b9dfde49953ec0b7bffd61893c699789da653ac9908102"
        );
    }
    assert!(pool.open_device(7, 1 << 20, "thin").is_err());

    let empty = Arc::new(
        ThinPool::open(
            open(&dir.join("dm-thin-empty-metadata.bin")),
            open(&dir.join("dm-thin-empty-data.bin")),
            "thin pool",
        )
        .unwrap(),
    );
    let dev = empty.open_device(0, 4 << 20, "thin").unwrap();
    assert_eq!(
        sha_of(dev.as_ref(), 8 << 16, 1 << 16),
        "f0f3e56599e2004b050e321c0a6991df93d3a520022c6916d8751f6e573d9c20"
    );
    let mut b = vec![0u8; 43];
    dev.read_exact_at(8 << 16, &mut b).unwrap();
    assert_eq!(b, b"https://www.youtube.com/watch?v=dQw4w9WgXcQ");
    assert!(dev.is_known_zero(0, 8 << 16));
    assert!(!dev.is_known_zero(0, 9 << 16));
    assert!(dev.is_known_zero(9 << 16, (4 << 20) - (9 << 16)));
    let mut z = vec![1u8; 3 << 16];
    dev.read_exact_at((7 << 16) + 5, &mut z).unwrap();
    assert!(z[..(1 << 16) - 5].iter().all(|&x| x == 0));
    assert_eq!(&z[(1 << 16) - 5..(1 << 16) - 5 + 5], b"https");
    let dev1 = empty.open_device(1, 4 << 20, "thin").unwrap();
    assert!(dev1.is_known_zero(0, 4 << 20));
    assert_eq!(
        sha_of(dev1.as_ref(), 0, 1 << 20),
        flr_testdata::sha256_hex(&vec![0u8; 1 << 20])
    );
}

// ------------------------------------------------- own fixture (gen-thin.sh)

fn thin_disk() -> Source {
    open(&flr_testdata::fixture("lvm/thin-pool.img.zst"))
}

/// (origin block → data block) per device, from thin_dump's output.
fn thin_dump_mappings() -> std::collections::BTreeMap<u64, std::collections::BTreeMap<u64, u64>> {
    let text =
        std::fs::read_to_string(flr_testdata::testdata_dir().join("lvm/thin-dump.xml")).unwrap();
    let attr = |l: &str, k: &str| -> u64 {
        let at = l.find(&format!("{k}=\"")).unwrap() + k.len() + 2;
        l[at..].split('"').next().unwrap().parse().unwrap()
    };
    let mut out = std::collections::BTreeMap::new();
    let mut dev = 0;
    for l in text.lines() {
        if l.contains("<device ") {
            dev = attr(l, "dev_id");
            out.insert(dev, std::collections::BTreeMap::new());
        } else if l.contains("<single_mapping ") {
            out.get_mut(&dev)
                .unwrap()
                .insert(attr(l, "origin_block"), attr(l, "data_block"));
        } else if l.contains("<range_mapping ") {
            let (o, d, n) = (
                attr(l, "origin_begin"),
                attr(l, "data_begin"),
                attr(l, "length"),
            );
            for i in 0..n {
                out.get_mut(&dev).unwrap().insert(o + i, d + i);
            }
        }
    }
    out
}

#[test]
fn thin_fixture_lvs_match_their_mappings() {
    let pv = PhysicalVolume::read(thin_disk(), "disk").unwrap();
    let vgs = assemble(&[pv]);
    let vg = &vgs[0];
    let expected =
        std::fs::read_to_string(flr_testdata::testdata_dir().join("lvm/thin-sha256.tsv")).unwrap();
    let dump = thin_dump_mappings();
    let tdata = vg.open_lv("pool_tdata").unwrap();
    let block = 64u64 << 10;
    for l in expected.lines().filter(|l| !l.starts_with('#')) {
        let c: Vec<&str> = l.split('\t').collect();
        let (name, size, dev_id, sha) = (
            c[0],
            c[1].parse::<u64>().unwrap(),
            c[2].parse::<u64>().unwrap(),
            c[4],
        );
        let lv = vg.lvs.iter().find(|x| x.name == name).unwrap();
        assert_eq!(lv.status, LvStatus::Readable, "{name}");
        assert_eq!(lv.layout, "thin");
        let dev = vg.open_lv(name).unwrap();
        assert_eq!(dev.len(), size);
        assert_eq!(sha_of(dev.as_ref(), 0, size), sha, "{name}: content");
        // Block by block against thin_dump: mapped blocks read their data
        // block, the others are known zeros.
        let maps = &dump[&dev_id];
        let mut a = vec![0u8; block as usize];
        let mut b = vec![0u8; block as usize];
        for v in 0..size / block {
            match maps.get(&v) {
                Some(&d) => {
                    assert!(!dev.is_known_zero(v * block, block));
                    dev.read_exact_at(v * block, &mut a).unwrap();
                    tdata.read_exact_at(d * block, &mut b).unwrap();
                    assert!(a == b, "{name} block {v} should be data block {d}");
                }
                None => assert!(dev.is_known_zero(v * block, block), "{name} block {v}"),
            }
        }
    }
    // The pool through the public API: the device details.
    let pool =
        Arc::new(ThinPool::open(vg.open_lv("pool_tmeta").unwrap(), tdata, "thinvg/pool").unwrap());
    assert_eq!(pool.transaction(), 3);
    let devs: Vec<(u64, u64)> = pool
        .devices()
        .unwrap()
        .iter()
        .map(|d| (d.id, d.mapped_blocks))
        .collect();
    assert_eq!(devs, [(1, 301), (2, 297), (3, 0)]);
}

#[test]
fn damaged_thin_metadata_is_refused_never_misread() {
    let src = thin_disk();
    let mut img = vec![0u8; src.len() as usize];
    src.read_exact_at(0, &mut img).unwrap();
    let pv = PhysicalVolume::read(Arc::new(flr_io::MemSource::new(img.clone())), "disk").unwrap();
    let vg = assemble(&[pv]).remove(0);
    let tmeta_at = 1u64 << 20; // pe_start, extent 0 (gen-thin.sh checks the PE ranges)
    let good = vg.open_lv("thin1").unwrap();
    let mut want = vec![0u8; 1 << 20];
    good.read_exact_at(0, &mut want).unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for round in 0..300 {
        let mut b = img.clone();
        // Damage within the metadata blocks in use (the first 64 KiB).
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = tmeta_at as usize + (x % (64 << 10)) as usize;
        b[at] ^= 1 << (round % 8);
        let pv = PhysicalVolume::read(Arc::new(flr_io::MemSource::new(b)), "disk").unwrap();
        let vg = assemble(&[pv]).remove(0);
        for name in ["thin1", "thin2", "thin3"] {
            if let Ok(dev) = vg.open_lv(name) {
                let mut got = vec![0u8; 1 << 20];
                // Checksums guard every metadata block: a read either fails
                // or returns what the intact pool returns.
                if dev.read_exact_at(0, &mut got).is_ok() && name == "thin1" {
                    assert!(got == want, "round {round}: misread");
                }
            }
        }
    }
}
