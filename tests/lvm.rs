//! LVM2 through the flr binary and the engine: a VG over two disks (linear LV spanning both,
//! striped LV, an LV on one disk), a missing PV, the RHEL Azure Disk Encryption OS disk
//! (GPT → XFS /boot holding luks/osluksheader → LUKS2 root with that detached header → LVM →
//! XFS LVs), and the corpus image.

use std::path::{Path, PathBuf};

use flr_engine::{KeyRing, Scan};
use flr_fs::{FileKind, FsPath};

use crate::util::*;

fn lv_sha(lv: &str) -> (u64, String) {
    let t =
        std::fs::read_to_string(flr_testdata::testdata_dir().join("lvm/lv-sha256.tsv")).unwrap();
    let l = t
        .lines()
        .find(|l| l.starts_with(&format!("{lv}\t")))
        .unwrap();
    let c: Vec<&str> = l.split('\t').collect();
    (c[1].parse().unwrap(), c[2].to_string())
}

/// Walks a filesystem through the engine's `Filesystem` and checks it against a manifest.
fn check_fs(fs: &dyn flr_fs::Filesystem, manifest_name: &str) {
    for e in manifest(manifest_name) {
        let path = FsPath::parse(&e.path);
        let m = fs
            .metadata(&path)
            .unwrap_or_else(|err| panic!("{}: {err}", e.path));
        match e.kind {
            'f' => {
                let mut f = fs.open(&path).unwrap();
                let mut data = vec![0u8; usize::try_from(f.size()).unwrap()];
                let mut done = 0;
                while done < data.len() {
                    let n = f.read_at(done as u64, &mut data[done..]).unwrap();
                    assert!(n > 0);
                    done += n;
                }
                assert_eq!(sha256_hex(&data), e.sha256, "{}", e.path);
            }
            'l' => assert_eq!(
                sha256_hex(&fs.read_link(&path).unwrap()),
                e.sha256,
                "{}",
                e.path
            ),
            'd' => assert_eq!(m.kind, FileKind::Dir, "{}", e.path),
            k => panic!("kind {k}"),
        }
    }
}

#[test]
fn a_vg_over_two_disks_opens_together() {
    let d1 = fixture("lvm/two-pv-1.img.zst");
    let d2 = fixture("lvm/two-pv-2.img.zst");
    let images = flr_engine::open_paths(&[&d1, &d2], Scan::Full, &KeyRing::default()).unwrap();
    // The LVs go with the image of the VG's first PV: disk 1, whole-disk PV "disk".
    let ids: Vec<&str> = images[0].volumes.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "disk",
            "disk/datavg/stripe",
            "disk/datavg/solo",
            "disk/datavg/span"
        ]
    );
    assert_eq!(images[1].volumes.len(), 1);
    let vg = &images[0].groups[0].report;
    assert_eq!(vg.json(|_| String::new())["name"], "datavg");
    assert!(vg.warnings.is_empty());
    for lv in ["stripe", "solo", "span"] {
        let v = images[0].volume(&format!("disk/datavg/{lv}")).unwrap();
        assert_eq!(
            v.content.verdict,
            flr_engine::Verdict::Readable,
            "{lv}: {}",
            v.content.detail
        );
        let (size, sha) = lv_sha(lv);
        assert_eq!(v.size, size);
        let src = v.source();
        let mut all = vec![0u8; usize::try_from(size).unwrap()];
        src.read_exact_at(0, &mut all).unwrap();
        assert_eq!(sha256_hex(&all), sha, "{lv}: LV bytes");
        check_fs(v.open_fs().unwrap().as_ref(), &format!("lvm/{lv}.tsv"));
    }
}

#[test]
fn a_missing_pv_is_reported_and_the_other_lvs_restore() {
    let d2 = fixture("lvm/two-pv-2.img.zst");
    let out = run_ok(&["probe", p(&d2)]);
    let s = stdout(&out);
    assert!(s.contains("p1/datavg/solo"), "{s}");
    assert!(
        s.contains("PV aaaaaa-1111-2222-3333-4444-5555-aaaaaa (expected at /dev/"),
        "{s}"
    );
    let (dest, sums) = restore_all(&d2, "p1/datavg/solo");
    check_tree(dest.path(), &sums, &manifest("lvm/solo.tsv"));
    // An LV on the missing PV: never bytes.
    let o = run(&["cat", p(&d2), "p1/datavg/span:"]);
    assert!(!o.status.success());
    assert!(o.stdout.is_empty());
    assert!(
        stderr(&o).contains("aaaaaa-1111-2222-3333-4444-5555-aaaaaa"),
        "{}",
        stderr(&o)
    );
    let o = run(&["ls", p(&d2), "p1/datavg/stripe:/"]);
    assert!(!o.status.success());
}

#[test]
fn lv_volume_ids_work_on_the_command_line() {
    let d1 = fixture("lvm/two-pv-1.img.zst");
    // Disk 1 alone: its whole-disk PV; every LV touches... stripe and span need disk 2.
    let s = stdout(&run_ok(&["probe", p(&d1)]));
    assert!(s.contains("disk/datavg/span"), "{s}");
    assert!(s.contains("bbbbbb-1111-2222-3333-4444-5555-bbbbbb"), "{s}");
    let json: serde_json::Value =
        serde_json::from_slice(&run_ok(&["probe", "--json", p(&d1)]).stdout).unwrap();
    let vols = json["volumes"].as_array().unwrap();
    let solo = vols.iter().find(|v| v["id"] == "disk/datavg/solo").unwrap();
    assert_eq!(solo["content"]["kind"], "lvm-lv");
    assert_eq!(solo["content"]["verdict"], "error");
    // The volume group itself, with the missing PV named (UUIDs from pvs, see pv-uuids.tsv).
    let vg = &json["volume_groups"][0];
    assert_eq!(vg["name"], "datavg", "{json}");
    let pvs = vg["pvs"].to_string();
    assert!(
        pvs.contains("aaaaaa-1111-2222-3333-4444-5555-aaaaaa"),
        "{pvs}"
    );
    assert!(
        pvs.contains("bbbbbb-1111-2222-3333-4444-5555-bbbbbb"),
        "{pvs}"
    );
    assert!(pvs.contains("missing"), "{pvs}");
    assert_eq!(vg["lvs"].as_array().map(Vec::len), Some(3), "{vg}");
    // Streaming an LV whose PV is missing: "not readable" (4), naming the PV.
    let o = run(&["cat", p(&d1), "disk/datavg/span:"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    assert!(stderr(&o).contains("bbbbbb-1111-2222-3333-4444-5555-bbbbbb"));
}

/// Builds the RHEL ADE OS disk: the committed VHD with p3's ciphertext put back, made by
/// encrypting the committed plaintext with the xts-mode crate under cryptsetup's volume key
/// and checked against the sha256 of what cryptsetup wrote.
fn ade_rhel_disk() -> PathBuf {
    let vhd = fixture("lvm/ade-rhel.vhd.zst");
    // Beside the decompressed fixtures (target/fixtures, or $CARGO_TARGET_DIR/fixtures).
    let out = vhd.with_file_name("ade-rhel-full.vhd");
    let plain = fixture("lvm/ade-rhel-p3.plain.zst");
    let fresh = |p: &Path| {
        std::fs::metadata(p).and_then(|m| m.modified()).ok()
            >= std::fs::metadata(&vhd).and_then(|m| m.modified()).ok()
    };
    if out.exists() && fresh(&out) {
        return out;
    }
    let t = std::fs::read_to_string(flr_testdata::testdata_dir().join("lvm/ade-rhel.tsv")).unwrap();
    let get = |k: &str| {
        t.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}\t")))
            .unwrap()
            .to_string()
    };
    let offset: usize = get("p3_offset").parse().unwrap();
    let key = hex::decode(get("volume_key")).unwrap();
    let mut data = std::fs::read(&plain).unwrap();
    assert_eq!(data.len().to_string(), get("p3_length"));
    {
        use aes::cipher::KeyInit;
        let (a, b) = key.split_at(32);
        let xts = xts_mode::Xts128::new(
            aes::Aes256::new_from_slice(a).unwrap(),
            aes::Aes256::new_from_slice(b).unwrap(),
        );
        xts.encrypt_area(&mut data, 512, 0, xts_mode::get_tweak_default);
    }
    assert_eq!(
        sha256_hex(&data),
        get("ciphertext_sha256"),
        "the rebuilt ciphertext differs from cryptsetup's"
    );
    let mut disk = std::fs::read(&vhd).unwrap();
    assert!(disk[offset..offset + data.len()].iter().all(|&b| b == 0));
    disk[offset..offset + data.len()].copy_from_slice(&data);
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &disk).unwrap();
    std::fs::rename(&tmp, &out).unwrap();
    out
}

#[test]
fn ade_rhel_os_disk_luks_lvm_xfs() {
    let disk = ade_rhel_disk();
    let pass = flr_testdata::testdata_dir().join("luks/pass-ade.bin");
    let key = format!("p3=passphrase-file:{}", p(&pass));
    let json: serde_json::Value =
        serde_json::from_slice(&run_ok(&["probe", "--json", "--key", &key, p(&disk)]).stdout)
            .unwrap();
    let vols = json["volumes"].as_array().unwrap();
    let ids: Vec<&str> = vols.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        ["p1", "p2", "p3", "p3/rootvg/rootlv", "p3/rootvg/varlv"]
    );
    let p2 = &vols[1]["content"];
    assert_eq!(p2["fs"]["fs_type"], "xfs");
    let p3 = &vols[2]["content"];
    assert_eq!(p3["kind"], "lvm2");
    assert!(
        p3["encryption"]["header"]
            .as_str()
            .unwrap()
            .contains("p2:/luks/osluksheader"),
        "{p3}"
    );
    for (id, label) in [("p3/rootvg/rootlv", "root"), ("p3/rootvg/varlv", "var")] {
        let v = vols.iter().find(|v| v["id"] == id).unwrap();
        assert_eq!(v["content"]["verdict"], "readable", "{v}");
        assert_eq!(v["content"]["fs"]["label"], label);
    }
    for (id, m) in [
        ("p3/rootvg/rootlv", "lvm/ade-rhel-root.tsv"),
        ("p3/rootvg/varlv", "lvm/ade-rhel-var.tsv"),
        ("p2", "lvm/ade-rhel-boot.tsv"),
    ] {
        let dest = tempfile::tempdir().unwrap();
        let spec = format!("{id}:/");
        let out = run_ok(&[
            "get",
            "--key",
            &key,
            p(&disk),
            &spec,
            "-o",
            p(dest.path()),
            "--checksum",
        ]);
        check_tree(dest.path(), &checksums(&out), &manifest(m));
    }
    let cat = run_ok(&[
        "cat",
        "--key",
        &key,
        p(&disk),
        "p3/rootvg/rootlv:/etc/hostname",
    ]);
    assert_eq!(cat.stdout, b"rhel-ade-01\n");
    // Without the key: the root is named as locked, with the header found.
    let s = stdout(&run_ok(&["probe", p(&disk)]));
    assert!(s.contains("osluksheader"), "{s}");
    assert!(!s.contains("p3/rootvg"), "{s}");
}

#[test]
fn corpus_lvm_through_the_binary() {
    let Some((unpacked, corpus)) = flr_testdata::corpus("tests/lvm corpus_lvm_through_the_binary")
    else {
        return;
    };
    let img = unpacked.join("lvm/dfvfs/lvm.raw");
    let json: serde_json::Value =
        serde_json::from_slice(&run_ok(&["probe", "--json", p(&img)]).stdout).unwrap();
    let lvs: Vec<&serde_json::Value> = json["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["id"].as_str().unwrap().contains('/'))
        .collect();
    assert!(!lvs.is_empty(), "{json}");
    let lv1 = lvs
        .iter()
        .find(|v| v["id"].as_str().unwrap().ends_with("/lv1"))
        .unwrap_or(&lvs[0]);
    let id = lv1["id"].as_str().unwrap();
    let (_dest, sums) = restore_all(&img, id);
    let text = std::fs::read_to_string(corpus.join("expected/dfvfs-lvm-lv1.files.tsv")).unwrap();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let c: Vec<&str> = line.split('\t').collect();
        assert_eq!(
            sums.get(c[0]).map(String::as_str),
            Some(c[2]),
            "{id}: {}",
            c[0]
        );
    }
}

#[test]
fn with_disk_opens_a_spanning_vg_from_the_command_line() {
    let d1 = fixture("lvm/two-pv-1.img.zst");
    let d2 = fixture("lvm/two-pv-2.img.zst");
    // Disk 2 given first: disk 1's volumes are d2/…, and the VG's first PV is on disk 1.
    let s = stdout(&run_ok(&["probe", p(&d2), "--with-disk", p(&d1)]));
    assert!(s.contains("d2/disk/datavg/span"), "{s}");
    assert!(!s.contains("missing"), "{s}");
    for lv in ["span", "stripe", "solo"] {
        let dest = tempfile::tempdir().unwrap();
        let spec = format!("d2/disk/datavg/{lv}:/");
        let out = run_ok(&[
            "get",
            p(&d2),
            "--with-disk",
            p(&d1),
            &spec,
            "-o",
            p(dest.path()),
            "--checksum",
        ]);
        check_tree(
            dest.path(),
            &checksums(&out),
            &manifest(&format!("lvm/{lv}.tsv")),
        );
    }
    let (size, sha) = lv_sha("span");
    let raw = run_ok(&["cat", p(&d1), "--with-disk", p(&d2), "disk/datavg/span:"]);
    assert_eq!(raw.stdout.len() as u64, size);
    assert_eq!(sha256_hex(&raw.stdout), sha);
}

/// The corpus's LVM2 LVs through the binary, thin LVs included: every row of
/// `dissect-volume-lvm.tsv` that names an LVM2 image is read whole (`cat ID:`) and
/// compared with the table's sha256; the pool itself is named, not read.
#[test]
fn corpus_lvm_table_through_the_binary() {
    let Some((unpacked, corpus)) = flr_testdata::corpus("lvm::corpus_lvm_table_through_the_binary")
    else {
        return;
    };
    let table = std::fs::read_to_string(corpus.join("expected/dissect-volume-lvm.tsv")).unwrap();
    let dir = unpacked.join("lvm/dissect-volume");
    let mut checked = 0;
    for l in table.lines().skip(1) {
        let c: Vec<&str> = l.split('\t').collect();
        if c.len() < 9 || c[1].starts_with('(') || c[8].len() != 64 {
            continue;
        }
        let images: Vec<std::path::PathBuf> = c[0].split(',').map(|i| dir.join(i)).collect();
        let mut args: Vec<String> = images[1..]
            .iter()
            .flat_map(|i| ["--with-disk".to_string(), p(i).to_string()])
            .collect();
        args.insert(0, "cat".into());
        args.push(p(&images[0]).to_string());
        args.push(format!("disk/{}:", c[1]));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_ok(&refs);
        assert_eq!(sha256_hex(&out.stdout), c[8], "{} {}", c[0], c[1]);
        checked += 1;
    }
    assert!(checked >= 4, "{checked} LVs checked");
    let s = stdout(&run_ok(&["probe", p(&dir.join("lvm-thin.bin"))]));
    assert!(s.contains("thin pool"), "{s}");
}
