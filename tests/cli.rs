//! The committed fixtures, end to end through the CLI.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::util::*;

fn probe_json(image: &Path) -> serde_json::Value {
    let out = run_ok(&["probe", p(image), "--json"]);
    serde_json::from_slice(&out.stdout).expect("probe --json is JSON")
}

/// Partition starts and sizes as sfdisk reported them when the fixture was made.
fn sfdisk_layout(json: &str) -> Vec<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(flr_testdata::testdata_dir().join(json)).unwrap(),
    )
    .unwrap();
    let ss = v["partitiontable"]["sectorsize"].as_u64().unwrap_or(512);
    v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !matches!(p["type"].as_str(), Some("5" | "f" | "85")))
        .map(|p| {
            (
                p["start"].as_u64().unwrap() * ss,
                p["size"].as_u64().unwrap() * ss,
            )
        })
        .collect()
}

fn check_layout(report: &serde_json::Value, sfdisk: &str) {
    let want = sfdisk_layout(sfdisk);
    let got: Vec<(u64, u64)> = report["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["offset"].as_u64().unwrap(), v["size"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, want, "partition layout vs {sfdisk}");
}

fn check_demo(image: &Path, format: &str) {
    let r = probe_json(image);
    assert_eq!(r["container"]["format"], format);
    assert_eq!(r["partition_table"]["scheme"], "gpt");
    assert_eq!(
        r["partition_table"]["disk_id"]
            .as_str()
            .unwrap()
            .to_lowercase(),
        "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
    );
    check_layout(&r, "disks/demo.sfdisk.json");
    let p1 = volume(&r, "p1");
    assert_eq!(p1["content"]["fs"]["fs_type"], "fat12");
    assert_eq!(p1["content"]["fs"]["label"], "EFI");
    assert_eq!(p1["content"]["fs"]["id"], "1A2B-3C4D");
    assert_eq!(p1["partition"]["name"], "EFI system");
    let p2 = volume(&r, "p2");
    assert_eq!(p2["content"]["fs"]["fs_type"], "ext4");
    assert_eq!(p2["content"]["fs"]["label"], "root");
    assert_eq!(
        p2["content"]["fs"]["id"],
        "6e1f0c3a-5d2b-4b7e-9a31-0c5d1e2f3a4b"
    );
    let p3 = volume(&r, "p3");
    assert_eq!(p3["content"]["fs"]["fs_type"], "ntfs");
    assert_eq!(p3["content"]["fs"]["label"], "DATA");
    for v in ["p1", "p2", "p3"] {
        assert_eq!(volume(&r, v)["content"]["verdict"], "readable");
    }
    for (vol, man) in [
        ("p1", "disks/demo.p1.tsv"),
        ("p2", "disks/demo.p2.tsv"),
        ("p3", "disks/demo.p3.tsv"),
    ] {
        let (dest, sums) = restore_all(image, vol);
        check_tree(dest.path(), &sums, &manifest(man));
        if vol == "p2" {
            // unix mode and mtime come back from ext4.
            let m = std::fs::metadata(dest.path().join("home/alice/notes.txt")).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o600);
            assert_eq!(m.mtime(), 1_700_000_000);
        }
    }
}

#[test]
fn demo_vhd_dynamic_gpt_fat_ext4_ntfs() {
    check_demo(&demo(), "vhd");
}

#[test]
fn demo_vhdx() {
    check_demo(&fixture("disks/demo.vhdx.zst"), "vhdx");
}

#[test]
fn mbr_with_logical_partitions() {
    let img = fixture("disks/mbr.img.zst");
    let r = probe_json(&img);
    assert_eq!(r["partition_table"]["scheme"], "mbr");
    check_layout(&r, "disks/mbr.sfdisk.json");
    let ids: Vec<&str> = r["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["p1", "p5", "p6"]);
    assert_eq!(volume(&r, "p5")["partition"]["logical"], true);
    assert_eq!(volume(&r, "p1")["content"]["fs"]["id"], "0BAD-F00D");
    for (vol, man) in [
        ("p1", "disks/demo.p1.tsv"),
        ("p5", "disks/demo.p2.tsv"),
        ("p6", "disks/demo.p3.tsv"),
    ] {
        let (dest, sums) = restore_all(&img, vol);
        check_tree(dest.path(), &sums, &manifest(man));
    }
}

#[test]
fn ls_lists_and_cat_streams() {
    let img = demo();
    let out = run_ok(&["ls", p(&img), "p2:/etc", "-l"]);
    let s = stdout(&out);
    assert!(
        s.contains("hosts") && s.contains("localtime -> ../usr/share/zoneinfo/UTC"),
        "{s}"
    );
    let out = run_ok(&["ls", p(&img), "p3:/", "-R", "--json"]);
    let paths: Vec<String> = stdout(&out)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["path"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        paths.contains(&"/Users/Bob/Documents/report.txt".to_string()),
        "{paths:?}"
    );
    let out = run_ok(&["cat", p(&img), "p2:/etc/hosts"]);
    let want = manifest("disks/demo.p2.tsv")
        .into_iter()
        .find(|e| e.path == "etc/hosts")
        .unwrap();
    assert_eq!(sha256_hex(&out.stdout), want.sha256);
    // `ID:` streams the raw volume: as long as the partition sfdisk made.
    let out = run_ok(&["cat", p(&img), "p1:"]);
    assert_eq!(
        out.stdout.len() as u64,
        sfdisk_layout("disks/demo.sfdisk.json")[0].1
    );
    assert_eq!(&out.stdout[54..59], b"FAT12");
}

#[test]
fn get_refuses_to_overwrite_without_force() {
    let img = demo();
    let dest = tempfile::tempdir().unwrap();
    run_ok(&["get", p(&img), "p2:/etc/hosts", "-o", p(dest.path())]);
    std::fs::write(dest.path().join("hosts"), b"local edit").unwrap();
    let out = run(&["get", p(&img), "p2:/etc/hosts", "-o", p(dest.path())]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(dest.path().join("hosts")).unwrap(),
        b"local edit"
    );
    run_ok(&[
        "get",
        p(&img),
        "p2:/etc/hosts",
        "-o",
        p(dest.path()),
        "--force",
    ]);
    assert!(std::fs::read(dest.path().join("hosts"))
        .unwrap()
        .starts_with(b"127.0.0.1"));
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(dest.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["hosts"]);
}

#[test]
fn usage_errors_have_distinct_exit_codes() {
    let img = demo();
    let out = run(&["ls", p(&img), "p9:/"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("p1, p2, p3"), "{}", stderr(&out));
    let out = run(&["cat", p(&img), "p2:/no/such/file"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["cat", p(&img), "p2:/etc"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["get", p(&img), "nocolon"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["probe", "/no/such/image.vhd"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("/no/such/image.vhd"),
        "{}",
        stderr(&out)
    );
}

/// Copies the first `len` bytes of `src` to a temp file.
fn truncated(src: &Path, len: u64) -> tempfile::NamedTempFile {
    let data = std::fs::read(src).unwrap();
    let t = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(t.path(), &data[..usize::try_from(len).unwrap()]).unwrap();
    t
}

#[test]
fn truncated_and_corrupt_images_fail_cleanly() {
    let img = demo();
    // Cut a dynamic VHD in the middle: the footer is gone, so it is taken as a raw disk;
    // whatever flr says, it must not panic and a read past the end must name the layer.
    let len = std::fs::metadata(&img).unwrap().len();
    for cut in [0, 511, 512, 4096, len / 2, len - 1] {
        let t = truncated(&img, cut);
        let _ = run(&["probe", p(t.path())]);
        let _ = run(&[
            "get",
            p(t.path()),
            "p2:/",
            "-o",
            p(tempfile::tempdir().unwrap().path()),
        ]);
    }
    // A raw disk whose ext4 partition was cut: reading names the layer and the offset.
    let raw = fixture("disks/mbr.img.zst");
    let t = truncated(&raw, 20480 * 512 + 300 * 1024);
    let out = run(&[
        "get",
        p(t.path()),
        "p5:/",
        "-o",
        p(tempfile::tempdir().unwrap().path()),
    ]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("0x"), "error names an offset: {e}");
    // Garbage: no table, no filesystem.
    let g = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(g.path(), vec![0x5a; 1 << 20]).unwrap();
    let out = run_ok(&["probe", p(g.path()), "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["volumes"][0]["content"]["verdict"], "unknown");
    let out = run(&["ls", p(g.path()), "disk:/"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
}

/// LUKS fixtures (testdata/luks, made by qemu-img and cryptsetup): every file
/// of the ext4 inside comes back through `--key` (and `--luks-header` for the
/// ADE OS-disk layout: detached header, data from sector 0).
#[test]
fn luks_volumes_restore_with_their_keys() {
    let td = flr_testdata::testdata_dir().join("luks");
    for (image, pass, header) in [
        ("luks1-qemu-xts", "pass-luks1.bin", None),
        ("luks1-qemu-xts512", "pass-luks1.bin", None),
        ("luks1-qemu-cbc-essiv", "pass-luks1.bin", None),
        ("luks1-qemu-cbc-plain64", "pass-luks1.bin", None),
        ("luks1-qemu-cbc-plain", "pass-luks1.bin", None),
        ("luks2-argon2id-4k", "pass-luks2.bin", None),
        (
            "luks2-detached-pbkdf2",
            "pass-ade.bin",
            Some("luks/luks2-detached-pbkdf2.hdr.zst"),
        ),
    ] {
        let img = fixture(&format!("luks/{image}.img.zst"));
        let key = format!("disk=passphrase-file:{}", p(&td.join(pass)));
        let mut args = vec!["get".to_string(), "--key".into(), key.clone()];
        let hdr_arg;
        if let Some(h) = header {
            hdr_arg = format!("disk={}", p(&fixture(h)));
            args.extend(["--luks-header".to_string(), hdr_arg.clone()]);
        }
        let dest = tempfile::tempdir().unwrap();
        args.extend([
            p(&img).to_string(),
            "disk:/".into(),
            "-o".into(),
            p(dest.path()).into(),
            "--checksum".into(),
        ]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_ok(&argv);
        let sums = checksums(&out);
        let want: Vec<_> = manifest("luks/files.tsv")
            .into_iter()
            .filter(|e| e.kind == 'f')
            .collect();
        check_tree(dest.path(), &sums, &want);
        // The wrong passphrase (the LUKS2 one without its trailing newline): exit 4.
        if image == "luks2-argon2id-4k" {
            let bad = tempfile::NamedTempFile::new().unwrap();
            let mut bytes = std::fs::read(td.join(pass)).unwrap();
            bytes.pop();
            std::fs::write(bad.path(), bytes).unwrap();
            let k = format!("disk=passphrase-file:{}", p(bad.path()));
            let out = run(&["ls", "--key", &k, p(&img), "disk:/"]);
            assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
        }
    }
}

/// Restores every file of `manifest` from `ID:/` of `image` with `extra`
/// arguments, and checks each against the manifest's sha256.
fn restore_checked(image: &Path, id: &str, extra: &[&str], manifest_name: &str) {
    let dest = tempfile::tempdir().unwrap();
    let mut args = vec!["get"];
    args.extend_from_slice(extra);
    let from = format!("{id}:/");
    args.extend([p(image), &from, "-o", p(dest.path()), "--checksum"]);
    let out = run_ok(&args);
    let want: Vec<_> = manifest(manifest_name)
        .into_iter()
        .filter(|e| e.kind == 'f')
        .collect();
    check_tree(dest.path(), &checksums(&out), &want);
}

/// The ADE OS-disk layout (fixed VHD; GPT with the root partition's LUKS2
/// header detached into /luks/osluksheader on the boot partition): the
/// header is found without being named, probe says where it came from, and
/// the root filesystem restores with the 172-character passphrase.
#[test]
fn ade_os_disk_header_is_found_on_the_boot_partition() {
    let img = fixture("luks/ade-os.vhd.zst");
    let pass = flr_testdata::testdata_dir().join("luks/pass-ade.bin");
    let key = format!("p1=passphrase-file:{}", p(&pass));

    // Locked: recognised as LUKS through the found header, with the reason.
    let report = probe_json(&img);
    let v1 = &report["volumes"][0];
    assert_eq!(v1["id"], "p1");
    assert_eq!(v1["content"]["verdict"], "locked", "{v1}");
    assert_eq!(
        v1["content"]["encryption"]["header"],
        "p2:/luks/osluksheader (found automatically: ADE layout)"
    );
    // The boot partition and the EFI partition stay as they are.
    assert_eq!(report["volumes"][1]["content"]["fs"]["label"], "boot");
    assert_eq!(report["volumes"][2]["content"]["fs"]["label"], "EFI");

    // Unlocked: the root filesystem, described as a plain one would be.
    let out = run_ok(&["probe", "--key", &key, p(&img)]);
    let text = stdout(&out);
    assert!(
        text.contains("LUKS header: p2:/luks/osluksheader (found automatically: ADE layout)"),
        "{text}"
    );
    assert!(text.contains("label \"root\""), "{text}");
    assert!(text.contains("unlocked with passphrase"), "{text}");
    restore_checked(&img, "p1", &["--key", &key], "luks/ade-root.tsv");
    // The header file itself restores byte for byte from the boot partition.
    restore_checked(&img, "p2", &[], "luks/ade-boot.tsv");

    // Named explicitly, the same header gives the same result, and the
    // report says it came from the command line.
    let hdr = tempfile::tempdir().unwrap();
    run_ok(&["get", p(&img), "p2:/luks/osluksheader", "-o", p(hdr.path())]);
    let hdr_arg = format!("p1={}", p(&hdr.path().join("osluksheader")));
    let out = run_ok(&["probe", "--key", &key, "--luks-header", &hdr_arg, p(&img)]);
    assert!(stdout(&out).contains("(--luks-header)"), "{}", stdout(&out));

    // A wrong passphrase: exit 4, nothing written.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), b"not the BEK").unwrap();
    let k = format!("p1=passphrase-file:{}", p(bad.path()));
    let out = run(&["ls", "--key", &k, p(&img), "p1:/"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
}

/// The ADE data-disk layout: LUKS2 in place with a 16 MiB data offset.
#[test]
fn ade_data_disk_with_a_16_mib_offset_restores() {
    let img = fixture("luks/ade-data.img.zst");
    let pass = flr_testdata::testdata_dir().join("luks/pass-ade.bin");
    let key = format!("p1=passphrase-file:{}", p(&pass));
    let report = probe_json(&img);
    let enc = &report["volumes"][0]["content"]["encryption"];
    assert_eq!(enc["header"], "on the volume", "{enc}");
    assert_eq!(enc["cipher"], "aes-xts-plain64 512-bit", "{enc}");
    restore_checked(&img, "p1", &["--key", &key], "luks/ade-data.tsv");
}

/// `--key ID=ask` reads the passphrase from the terminal with echo off: run
/// under `script` (a pseudo-terminal), the passphrase is typed after the
/// prompt appears and must not come back in the terminal's output.
#[test]
fn passphrase_prompt_reads_the_terminal_without_echo() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    if !flr_testdata::have_tool("script") {
        flr_testdata::loud(
            "SKIPPED passphrase prompt test: `script` (util-linux) is not installed",
        );
        return;
    }
    let img = fixture("luks/ade-os.vhd.zst");
    let pass = std::fs::read(flr_testdata::testdata_dir().join("luks/pass-ade.bin")).unwrap();
    let cmd = format!(
        "{} cat --key p1=ask {} p1:/etc/hostname",
        env!("CARGO_BIN_EXE_flr"),
        p(&img)
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("passphrase for p1: ") {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "no prompt: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&pass).unwrap();
    stdin.write_all(b"\n").unwrap();
    stdin.flush().unwrap();
    out.read_to_end(&mut seen).unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("ade-vm-01"), "{text}");
    let pass_text = String::from_utf8_lossy(&pass);
    assert!(
        !text.contains(&pass_text[..20]),
        "the passphrase was echoed: {text}"
    );
}

/// An online encryption that was initialised but never finished (header
/// with the online-reencrypt-v2 requirement and backup segments): flr
/// names the state and the way out instead of reading half-converted data.
#[test]
fn unfinished_online_reencryption_is_reported_not_read() {
    let img = fixture("luks/luks2-reencrypt-unfinished.img.zst");
    let pass = flr_testdata::testdata_dir().join("luks/pass-luks1.bin");
    let key = format!("disk=passphrase-file:{}", p(&pass));
    let report = probe_json(&img);
    let c = &report["volumes"][0]["content"];
    assert_eq!(c["verdict"], "unsupported", "{c}");
    let detail = c["detail"].as_str().unwrap();
    assert!(detail.contains("online-reencrypt"), "{detail}");
    assert!(detail.contains("reencrypt --resume-only"), "{detail}");
    let out = run(&["ls", "--key", &key, p(&img), "disk:/"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("online reencryption"),
        "{}",
        stderr(&out)
    );
}
