//! Linux software RAID through the flr binary and the scanner: the corpus arrays mdadm made
//! (every one, and again with each member removed where the level survives it), LVM on a
//! RAID5, and Azure Disk Encryption's RAID-on-crypt (an md RAID0 over the unlocked LUKS
//! volumes of two data disks). Expected bytes come from the corpus's table and from the
//! generators' source trees (`testdata/md/gen-stacks.sh`), never from flr.

use std::path::PathBuf;

use crate::mount::{fuse_available, Mount};
use crate::util::*;

/// `image --with-disk other…` for a VM's disks.
fn disks(paths: &[PathBuf]) -> Vec<String> {
    paths[1..]
        .iter()
        .flat_map(|d| ["--with-disk".to_string(), p(d).to_string()])
        .collect()
}

#[test]
fn corpus_arrays_and_every_member_removed() {
    let Some((unpacked, corpus)) =
        flr_testdata::corpus("md::corpus_arrays_and_every_member_removed")
    else {
        return;
    };
    let table = std::fs::read_to_string(corpus.join("expected/dissect-volume-md.tsv")).unwrap();
    let dir = unpacked.join("md/dissect-volume");
    let mut checked = 0;
    for line in table.lines().skip(1).filter(|l| !l.is_empty()) {
        let c: Vec<&str> = line.split('\t').collect();
        let (level, uuid, name, sha) = (c[3], c[8], c[9], c[13]);
        let members: Vec<PathBuf> = c[1].split(',').map(|m| dir.join(m)).collect();
        let short = match name.rsplit(':').next() {
            Some(n) if !n.is_empty() && !name.starts_with('-') => n.to_string(),
            _ => uuid
                .chars()
                .filter(char::is_ascii_hexdigit)
                .take(8)
                .collect(),
        };
        let id = format!("disk/md/{short}");
        let spec = format!("{id}:");
        // Every member: the array reads as mdadm and the kernel laid it out.
        let args = disks(&members);
        let out = run_ok(&with(&args, &["cat", p(&members[0]), &spec]));
        assert_eq!(sha256_hex(&out.stdout), sha, "{id} ({level})");
        let report = probe(&with(&args, &["probe", "--json", p(&members[0])]));
        let arr = &report["md_arrays"][0];
        assert_eq!(arr["uuid"], uuid, "{arr}");
        assert_eq!(arr["level"], level, "{arr}");
        assert_eq!(volume(&report, &id)["parent"], "disk");
        // Each member removed in turn.
        let survives = matches!(level, "raid1" | "raid5" | "raid10");
        for gone in 0..members.len() {
            let rest: Vec<PathBuf> = members
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != gone)
                .map(|(_, m)| m.clone())
                .collect();
            let args = disks(&rest);
            let out = run(&with(&args, &["cat", p(&rest[0]), &spec]));
            if survives {
                assert!(
                    out.status.success(),
                    "{id} without member {gone}: {}",
                    stderr(&out)
                );
                assert_eq!(sha256_hex(&out.stdout), sha, "{id} without member {gone}");
                let r = probe(&with(&args, &["probe", "--json", p(&rest[0])]));
                let state = r["md_arrays"][0]["state"].as_str().unwrap().to_string();
                assert!(state.starts_with("degraded"), "{id}: {state}");
            } else {
                assert_eq!(out.status.code(), Some(4), "{id} without member {gone}");
                assert!(stderr(&out).contains("missing"), "{id}: {}", stderr(&out));
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 6);
}

fn lvm_on_md() -> Vec<PathBuf> {
    (0..3)
        .map(|r| fixture(&format!("md/stack-lvm-on-md-{r}.img.zst")))
        .collect()
}

#[test]
fn lvm_on_a_raid5_with_and_without_each_member() {
    let members = lvm_on_md();
    let id = "disk/md/lvmmd/mdvg/datalv";
    let args = disks(&members);
    let report = probe(&with(&args, &["probe", "--json", p(&members[0])]));
    let ids: Vec<&str> = report["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "disk",
            "disk/md/lvmmd",
            "disk/md/lvmmd/mdvg/datalv",
            "d2/disk",
            "d3/disk"
        ]
    );
    assert_eq!(volume(&report, "disk/md/lvmmd")["content"]["kind"], "lvm2");
    restore_and_verify(&members[0], &args, id, "md/lvm-on-md.tsv");
    for gone in 0..3 {
        let rest: Vec<PathBuf> = (0..3)
            .filter(|&i| i != gone)
            .map(|i| members[i].clone())
            .collect();
        let args = disks(&rest);
        let dest = tempfile::tempdir().unwrap();
        let spec = format!("{id}:/");
        let out = run_ok(&with(
            &args,
            &[
                "get",
                p(&rest[0]),
                &spec,
                "-o",
                p(dest.path()),
                "--checksum",
            ],
        ));
        check_tree(dest.path(), &checksums(&out), &manifest("md/lvm-on-md.tsv"));
    }
    if fuse_available("md::lvm_on_a_raid5_with_and_without_each_member (mount)") {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut extra = refs.clone();
        extra.extend(["--volume", id]);
        let m = Mount::new(&members[0], &extra);
        check_dir(m.dir.path(), &manifest("md/lvm-on-md.tsv"));
    }
}

fn crypt_disks() -> Vec<PathBuf> {
    (1..=2)
        .map(|k| {
            rebuild_ciphertext(
                &format!("md/stack-crypt-md-{k}.img.zst"),
                &format!("md/crypt-md-{k}.tsv"),
                &format!("crypt-md-{k}-full.img"),
            )
        })
        .collect()
}

#[test]
fn raid_on_crypt_two_encrypted_data_disks() {
    let d = crypt_disks();
    let pass = flr_testdata::testdata_dir().join("md/pass-md.bin");
    let mut args = disks(&d);
    // Without keys: both members are named locked, nothing is assembled.
    let bare = probe(&with(&args, &["probe", "--json", p(&d[0])]));
    assert_eq!(volume(&bare, "p1")["content"]["verdict"], "locked");
    assert_eq!(volume(&bare, "d2/p1")["content"]["verdict"], "locked");
    assert!(bare.get("md_arrays").is_none(), "{bare}");
    for id in ["p1", "d2/p1"] {
        args.extend([
            "--key".to_string(),
            format!("{id}=passphrase-file:{}", p(&pass)),
        ]);
    }
    let report = probe(&with(&args, &["probe", "--json", p(&d[0])]));
    let c = &volume(&report, "p1")["content"];
    assert_eq!(c["kind"], "md", "{c}");
    assert_eq!(c["layers"], serde_json::json!(["luks"]));
    let a = volume(&report, "p1/md/cryptmd");
    assert_eq!(a["content"]["fs"]["fs_type"], "ext4", "{a}");
    assert_eq!(report["md_arrays"][0]["level"], "raid0");
    restore_and_verify(&d[0], &args, "p1/md/cryptmd", "md/crypt-md.tsv");
    // Only one disk: a RAID0 does not survive it, and says which member is missing.
    let one: Vec<String> = vec!["--key".into(), format!("p1=passphrase-file:{}", p(&pass))];
    let out = run(&with(&one, &["cat", p(&d[0]), "p1/md/cryptmd:/README"]));
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("role"), "{}", stderr(&out));
}

/// Azure Disk Encryption's RAID-on-crypt built from the corpus: each member of the mdadm
/// RAID5 becomes the plaintext of a LUKS2 volume (`cryptsetup reencrypt --encrypt` on a
/// copy, its own passphrase per disk) in the one GPT partition of a dynamic VHD; the array
/// must read as the corpus table says, with every disk's key given in one command, and
/// degraded with one disk left out.
#[test]
fn raid_on_crypt_from_corpus_members() {
    let test = "md::raid_on_crypt_from_corpus_members";
    let Some((unpacked, corpus)) = flr_testdata::corpus(test) else {
        return;
    };
    for tool in ["cryptsetup", "sgdisk", "qemu-img"] {
        if !flr_testdata::have_tool(tool) {
            flr_testdata::loud(&format!(
                "SKIPPED {test}: needs {tool} (cryptsetup-bin, gdisk, qemu-utils)"
            ));
            return;
        }
    }
    let table = std::fs::read_to_string(corpus.join("expected/dissect-volume-md.tsv")).unwrap();
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("md-raid5\t"))
        .unwrap()
        .split('\t')
        .collect();
    let sha = row[13];
    let dir = tempfile::tempdir().unwrap();
    let mut vhds = Vec::new();
    let mut keys = Vec::new();
    for (k, m) in row[1].split(',').enumerate() {
        let member = unpacked.join("md/dissect-volume").join(m);
        let pass = dir.path().join(format!("pass{k}"));
        std::fs::write(&pass, format!("disk {k} of the array\n")).unwrap();
        let script = format!(
            "cp '{m}' luks{k}.img
             truncate -s $(( $(stat -c %s luks{k}.img) + 1048576 )) luks{k}.img
             cryptsetup reencrypt -q --encrypt --type luks2 --force-offline-reencrypt \
               --cipher aes-xts-plain64 --key-size 256 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
               --luks2-metadata-size 16k --luks2-keyslots-size 256k --reduce-device-size 1M \
               --key-file '{pass}' luks{k}.img >/dev/null 2>&1
             n=$(stat -c %s luks{k}.img)
             truncate -s $(( n + 4194304 )) disk{k}.raw
             sgdisk -n 1:2048:+$(( n / 512 )) -t 1:8300 disk{k}.raw >/dev/null
             dd if=luks{k}.img of=disk{k}.raw bs=1M seek=1 conv=notrunc status=none
             qemu-img convert -f raw -O vpc -o subformat=dynamic disk{k}.raw disk{k}.vhd",
            m = p(&member),
            pass = p(&pass),
        );
        let out = std::process::Command::new("bash")
            .args(["-euc", &script])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let vhd = dir.path().join(format!("disk{k}.vhd"));
        let id = if k == 0 {
            "p1".to_string()
        } else {
            format!("d{}/p1", k + 1)
        };
        keys.push(format!("{id}=passphrase-file:{}", p(&pass)));
        vhds.push(vhd);
    }
    let mut args = disks(&vhds);
    for k in &keys {
        args.extend(["--key".to_string(), k.clone()]);
    }
    let out = run_ok(&with(&args, &["cat", p(&vhds[0]), "p1/md/raid5:"]));
    assert_eq!(sha256_hex(&out.stdout), sha, "RAID5 on three LUKS2 volumes");
    let report = probe(&with(&args, &["probe", "--json", p(&vhds[0])]));
    for id in ["p1", "d2/p1", "d3/p1"] {
        let c = &volume(&report, id)["content"];
        assert_eq!(c["kind"], "md", "{id}: {c}");
        assert_eq!(c["encryption"]["scheme"], "luks2", "{id}: {c}");
    }
    // The second disk left out: the array reads degraded, by reconstruction.
    let rest = vec![vhds[0].clone(), vhds[2].clone()];
    let mut args = disks(&rest);
    args.extend(["--key".to_string(), keys[0].clone()]);
    args.extend(["--key".to_string(), keys[2].replacen("d3/", "d2/", 1)]);
    let out = run_ok(&with(&args, &["cat", p(&rest[0]), "p1/md/raid5:"]));
    assert_eq!(
        sha256_hex(&out.stdout),
        sha,
        "RAID5 on LUKS2, one disk missing"
    );
}
