//! The recursive scanner on stacks outside the old fixed pipeline, through the flr binary:
//! crypt-on-LVM (a whole-disk PV → LV → LUKS2 → ext4), LVM on LUKS on an LV (PV → LV →
//! LUKS2 → PV → LV → XFS), an FSLogix-style profile VHDX stored as a file in an ext4 volume
//! of a VHD, and a BitLocker volume in a GPT partition of a VHDX stored as a file in an NTFS
//! volume of a VHD. Every file is checked through `cat`, `get`, `mount`, `manifest` and
//! `verify` against the manifests the generators computed from the source trees
//! (`testdata/stack/gen.sh`), never against flr; the BitLocker volume against the
//! decrypted-volume sha256 its corpus documents.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::mount::{fuse_available, Mount};
use crate::util::*;

fn stacks() -> PathBuf {
    rebuild_ciphertext(
        "stack/stacks.img.zst",
        "stack/stacks.tsv",
        "stacks-full.img",
    )
}

fn stack_keys() -> Vec<String> {
    let pass = flr_testdata::testdata_dir().join("stack/pass-stack.bin");
    ["disk/datavg/cryptlv", "disk/datavg/nestlv"]
        .iter()
        .flat_map(|id| {
            [
                "--key".to_string(),
                format!("{id}=passphrase-file:{}", p(&pass)),
            ]
        })
        .collect()
}

#[test]
fn crypt_on_lvm_and_lvm_on_luks_on_an_lv() {
    let img = stacks();
    let keys = stack_keys();
    // Without keys: the LUKS volumes inside the LVs are found and named locked, with the
    // id their key is given under.
    let bare = probe(&["probe", "--json", p(&img)]);
    let ids: Vec<&str> = bare["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["disk", "disk/datavg/cryptlv", "disk/datavg/nestlv"]);
    let c = &volume(&bare, "disk/datavg/cryptlv")["content"];
    assert_eq!(c["verdict"], "locked", "{c}");
    assert_eq!(c["kind"], "luks");
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("--key disk/datavg/cryptlv=passphrase-file:FILE"),
        "{c}"
    );
    let out = run(&["cat", p(&img), "disk/datavg/cryptlv:/etc/hostname"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));

    // With the keys: every layer opens, and the inner VG's LV appears under the LV that
    // holds its PV.
    let full = probe(&with(&keys, &["probe", "--json", p(&img)]));
    let ids: Vec<&str> = full["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "disk",
            "disk/datavg/cryptlv",
            "disk/datavg/nestlv",
            "disk/datavg/nestlv/innervg/datalv"
        ]
    );
    let c = &volume(&full, "disk/datavg/cryptlv")["content"];
    assert_eq!(c["verdict"], "readable", "{c}");
    assert_eq!(c["fs"]["fs_type"], "ext4");
    assert_eq!(c["encryption"]["scheme"], "luks2");
    assert_eq!(c["layers"], serde_json::json!(["luks"]));
    let n = &volume(&full, "disk/datavg/nestlv")["content"];
    assert_eq!(n["kind"], "lvm2", "{n}");
    assert_eq!(n["verdict"], "container");
    assert_eq!(n["layers"], serde_json::json!(["luks"]));
    let d = volume(&full, "disk/datavg/nestlv/innervg/datalv");
    assert_eq!(d["content"]["fs"]["fs_type"], "xfs", "{d}");
    assert_eq!(d["parent"], "disk/datavg/nestlv");
    let groups: Vec<&str> = full["volume_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["datavg", "innervg"]);

    let cat = run_ok(&with(
        &keys,
        &["cat", p(&img), "disk/datavg/cryptlv:/etc/hostname"],
    ));
    assert_eq!(cat.stdout, b"crypt-on-lvm\n");
    let cat = run_ok(&with(
        &keys,
        &["cat", p(&img), "disk/datavg/nestlv/innervg/datalv:/README"],
    ));
    assert_eq!(cat.stdout, b"LVM on LUKS on an LV\n");
    restore_and_verify(&img, &keys, "disk/datavg/cryptlv", "stack/stacks-crypt.tsv");
    restore_and_verify(
        &img,
        &keys,
        "disk/datavg/nestlv/innervg/datalv",
        "stack/stacks-nested.tsv",
    );

    if fuse_available("scanner::crypt_on_lvm_and_lvm_on_luks_on_an_lv (mount)") {
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let m = Mount::new(&img, &refs);
        check_dir(
            &m.dir.path().join("disk/datavg/cryptlv"),
            &manifest("stack/stacks-crypt.tsv"),
        );
        check_dir(
            &m.dir.path().join("disk/datavg/nestlv/innervg/datalv"),
            &manifest("stack/stacks-nested.tsv"),
        );
    }
}

const PROFILE: &str = "p1:/Profiles/alice/Profile_alice.vhdx";

#[test]
fn a_profile_vhdx_stored_in_ext4_opens_as_a_nested_disk() {
    let img = fixture("stack/fslogix.vhd.zst");
    let none: Vec<String> = Vec::new();
    // The outer share, as any ext4.
    restore_and_verify(&img, &none, "p1", "stack/fslogix-outer.tsv");

    // `ls` of the image file shows the disk inside it.
    let ls = stdout(&run_ok(&["ls", p(&img), PROFILE]));
    assert!(ls.contains(&format!("{PROFILE}::p1")), "{ls}");
    assert!(ls.contains("ntfs") || ls.contains("NTFS"), "{ls}");
    assert!(ls.contains("VHDX"), "{ls}");
    // A file that is not an image is listed as the file it is.
    let ls = stdout(&run_ok(&[
        "ls",
        "-l",
        p(&img),
        "p1:/Profiles/bob/Profile_bob.vhdx.lock",
    ]));
    assert!(ls.contains("Profile_bob.vhdx.lock"), "{ls}");
    assert!(!ls.contains("::"), "{ls}");

    let inner = format!("{PROFILE}::p1");
    let ls = stdout(&run_ok(&["ls", p(&img), &format!("{inner}:/Documents")]));
    assert!(
        ls.contains("report.txt") && ls.contains("budget.xlsx"),
        "{ls}"
    );
    let cat = run_ok(&["cat", p(&img), &format!("{inner}:/Documents/report.txt")]);
    assert_eq!(cat.stdout, b"Quarterly report, draft 3.\n");
    restore_and_verify(&img, &none, &inner, "stack/fslogix-profile.tsv");

    // probe of the nested disk: its container and table, in the same JSON as any image.
    if fuse_available("scanner::a_profile_vhdx_stored_in_ext4_opens_as_a_nested_disk (mount)") {
        let m = Mount::new(&img, &["--volume", &inner]);
        check_dir(m.dir.path(), &manifest("stack/fslogix-profile.tsv"));
    }

    // Errors name what was asked for.
    let out = run(&["ls", p(&img), "p1:/Profiles/readme.txt::p1:/"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("readme.txt"), "{}", stderr(&out));
    let out = run(&["ls", p(&img), &format!("{PROFILE}::p7:/")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{PROFILE}::p1")),
        "{}",
        stderr(&out)
    );
}

/// Builds, with mkntfs, ntfscp, sgdisk and qemu-img, a VHD with one NTFS partition holding
/// `vms/bitlocker.vhdx`, a VHDX (GPT, one partition) whose partition is the corpus BitLocker
/// volume `name`.
fn bitlocker_in_vhdx_in_ntfs(dir: &Path, bitlocker: &Path) -> Option<PathBuf> {
    for tool in ["mkntfs", "ntfscp", "ntfsfix", "sgdisk", "qemu-img"] {
        if !flr_testdata::have_tool(tool) {
            flr_testdata::loud(&format!(
                "SKIPPED scanner::bitlocker_in_a_vhdx_in_ntfs_in_a_vhd: needs {tool} (ntfs-3g, gdisk, qemu-utils)"
            ));
            return None;
        }
    }
    let sh = |script: &str| {
        let out = Command::new("bash")
            .args(["-euc", script])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let size = std::fs::metadata(bitlocker).unwrap().len();
    sh(&format!(
        "truncate -s {} inner.raw
         sgdisk -n 1:2048:+{}K -t 1:0700 inner.raw >/dev/null
         dd if='{}' of=inner.raw bs=1M seek=1 conv=notrunc,sparse status=none
         qemu-img convert -f raw -O vhdx -o subformat=dynamic,block_size=1M inner.raw bitlocker.vhdx
         truncate -s 40M ntfs.img
         mkntfs -F -Q -q -L vmhost ntfs.img 2>/dev/null
         ntfscp -q ntfs.img bitlocker.vhdx bitlocker.vhdx
         truncate -s 48M outer.raw
         sgdisk -n 1:2048:+40M -t 1:0700 outer.raw >/dev/null
         dd if=ntfs.img of=outer.raw bs=1M seek=1 conv=notrunc,sparse status=none
         qemu-img convert -f raw -O vpc -o subformat=dynamic outer.raw outer.vhd",
        size + (2 << 20),
        size / 1024,
        bitlocker.display()
    ));
    Some(dir.join("outer.vhd"))
}

#[test]
fn bitlocker_in_a_vhdx_in_ntfs_in_a_vhd() {
    let Some((corpus, _)) = flr_testdata::corpus("scanner::bitlocker_in_a_vhdx_in_ntfs_in_a_vhd")
    else {
        return;
    };
    let bitlk = corpus.join("bitlocker/cryptsetup-bitlk");
    let conf = std::fs::read_to_string(bitlk.join("images.conf")).unwrap();
    let section = conf
        .split("[bitlk-aes-xts-128]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    let get = |k: &str| {
        section
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap()
            .to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(img) = bitlocker_in_vhdx_in_ntfs(dir.path(), &bitlk.join("bitlk-aes-xts-128.img"))
    else {
        return;
    };
    let file = "p1:/bitlocker.vhdx";
    let ls = stdout(&run_ok(&["ls", p(&img), file]));
    assert!(ls.contains(&format!("{file}::p1")), "{ls}");
    assert!(ls.contains("locked"), "{ls}");
    let id = format!("{file}::p1");
    let key = format!("{id}=recovery:{}", get("RP"));
    let out = run_ok(&["cat", "--key", &key, p(&img), &format!("{id}:")]);
    assert_eq!(sha256_hex(&out.stdout), get("SHA256SUM"));
    let report = probe(&["probe", "--json", "--key", &key, p(&img)]);
    assert_eq!(
        volume(&report, "p1")["content"]["fs"]["fs_type"],
        "ntfs",
        "{report}"
    );
}
