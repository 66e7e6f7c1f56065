//! `flr manifest` and `flr verify`: a clean image verifies; a copy with one
//! file's data block corrupted (the block found by debugfs or TSK, not by
//! flr) is reported as changed with the right path and exit 7; missing and
//! extra files; unreadable files; sampling and budgets; a volume whose KEK
//! version is disabled in the test Key Vault is blocked (exit 4, with the
//! reason); JUnit XML parses (python3's xml.etree) and the Prometheus file
//! has the flr_verify_* metrics.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::util::*;

fn json_file(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `flr manifest` of `img` into a file in `dir`.
fn make_manifest(img: &Path, dir: &Path, extra: &[&str]) -> PathBuf {
    let mut args = vec!["manifest"];
    args.extend_from_slice(extra);
    args.push(p(img));
    let out = run_ok(&args);
    let path = dir.join("baseline.json");
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

/// Runs `flr verify` with --json/--junit/--prometheus into `dir`; returns
/// the output and the JSON report.
fn verify(args: &[&str], dir: &Path) -> (Output, serde_json::Value) {
    let json = dir.join("report.json");
    let junit = dir.join("junit.xml");
    let prom = dir.join("metrics.prom");
    let mut a = vec!["verify"];
    a.extend_from_slice(args);
    a.extend([
        "--json",
        p(&json),
        "--junit",
        p(&junit),
        "--prometheus",
        p(&prom),
    ]);
    let out = run(&a);
    let report = json_file(&json);
    assert_eq!(
        out.status.code(),
        Some(report["exit_code"].as_i64().unwrap() as i32),
        "{report}"
    );
    (out, report)
}

/// The JUnit file parses as XML; returns (testcase names, failed testcase names).
fn junit(dir: &Path) -> Option<(Vec<String>, Vec<String>)> {
    let script = r#"
import sys, xml.etree.ElementTree as E
root = E.parse(sys.argv[1]).getroot()
assert root.tag == "testsuites", root.tag
for c in root.iter("testcase"):
    print(("FAIL " if c.find("failure") is not None else "OK ") + c.get("name"))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, p(&dir.join("junit.xml"))])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let text = stdout(&o);
            let all = text
                .lines()
                .map(|l| l.split_once(' ').unwrap().1.to_string())
                .collect();
            let failed = text
                .lines()
                .filter_map(|l| l.strip_prefix("FAIL "))
                .map(String::from)
                .collect();
            Some((all, failed))
        }
        Ok(o) => panic!("junit.xml does not parse: {}", stderr(&o)),
        Err(_) => {
            flr_testdata::loud("SKIPPED junit XML check: no python3");
            None
        }
    }
}

fn prometheus(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("metrics.prom")).unwrap()
}

/// The value of a metric line `name{labels} value`.
fn metric(text: &str, name_and_labels_prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name_and_labels_prefix} in {text}"))
}

#[test]
fn clean_demo_image_verifies_against_its_manifest() {
    let img = flr_testdata::testdata_dir().join("demo.vhd");
    let dir = tempfile::tempdir().unwrap();
    let base = make_manifest(&img, dir.path(), &[]);
    // The manifest's hashes are those the fixture generator computed from
    // the source files.
    let m = json_file(&base);
    for (id, tsv) in [
        ("p1", "disks/demo.p1.tsv"),
        ("p2", "disks/demo.p2.tsv"),
        ("p3", "disks/demo.p3.tsv"),
    ] {
        let vol = m["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["id"] == id)
            .unwrap();
        for e in manifest(tsv).iter().filter(|e| e.kind == 'f') {
            let got = vol["entries"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["path"] == format!("/{}", e.path))
                .unwrap_or_else(|| panic!("{id}:{} not in the manifest", e.path));
            assert_eq!(got["sha256"], e.sha256.as_str(), "{id}:{}", e.path);
            assert_eq!(got["size"], e.size, "{id}:{}", e.path);
        }
    }
    let (out, r) = verify(&[p(&img), "--manifest", p(&base)], dir.path());
    assert_eq!(out.status.code(), Some(0), "{r}");
    assert_eq!(r["status"], "ok");
    let files: usize = [
        "disks/demo.p1.tsv",
        "disks/demo.p2.tsv",
        "disks/demo.p3.tsv",
    ]
    .iter()
    .map(|t| manifest(t).iter().filter(|e| e.kind == 'f').count())
    .sum();
    assert_eq!(r["totals"]["files_read"], files as u64, "{r}");
    assert_eq!(r["totals"]["volumes_opened"], 3);
    if let Some((all, failed)) = junit(dir.path()) {
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(failed.is_empty(), "{failed:?}");
    }
    let prom = prometheus(dir.path());
    for name in [
        "flr_verify_success",
        "flr_verify_exit_code",
        "flr_verify_duration_seconds",
        "flr_verify_last_run_timestamp_seconds",
        "flr_verify_volumes",
        "flr_verify_volume_ok",
        "flr_verify_files_read",
        "flr_verify_bytes_read",
        "flr_verify_files_unreadable",
        "flr_verify_structural_errors",
        "flr_verify_files_missing",
        "flr_verify_files_changed",
        "flr_verify_files_extra",
    ] {
        assert!(
            prom.contains(&format!("# TYPE {name} gauge")),
            "{name}: {prom}"
        );
    }
    assert_eq!(metric(&prom, "flr_verify_success{"), 1.0);
    assert_eq!(metric(&prom, "flr_verify_files_read{"), files as f64);
    // The human summary on stdout.
    assert!(stdout(&out).contains(": OK (full mode"), "{}", stdout(&out));
}

/// The byte offset of the first data block of `path` in the ext4 image
/// `img`, as debugfs (not flr) finds it.
pub(crate) fn ext4_data_offset(img: &Path, path: &str) -> u64 {
    let blocks = std::process::Command::new("debugfs")
        .args(["-R", &format!("blocks {path}"), p(img)])
        .output()
        .unwrap();
    let first: u64 = stdout(&blocks)
        .split_whitespace()
        .nth(3)
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("debugfs: {}", stdout(&blocks)));
    let stats = std::process::Command::new("debugfs")
        .args(["-R", "stats", p(img)])
        .output()
        .unwrap();
    let bs: u64 = stdout(&stats)
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    first * bs
}

/// Copies `src` to a temporary file and flips 16 bytes at `offset`.
pub(crate) fn corrupted_copy(src: &Path, offset: u64) -> tempfile::NamedTempFile {
    use std::io::{Read, Seek, SeekFrom, Write};
    let t = tempfile::NamedTempFile::new().unwrap();
    std::fs::copy(src, t.path()).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(t.path())
        .unwrap();
    let mut b = [0u8; 16];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    for x in &mut b {
        *x ^= 0xa5;
    }
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&b).unwrap();
    t
}

/// Verifies the corrupted copy against the clean image's manifest: exactly
/// `path` is changed (sha256 only), exit 7, a failed JUnit case for it.
fn check_corruption_found(clean: &Path, bad: &Path, path: &str) {
    let dir = tempfile::tempdir().unwrap();
    let base = make_manifest(clean, dir.path(), &[]);
    let (out, r) = verify(&[p(bad), "--manifest", p(&base)], dir.path());
    assert_eq!(out.status.code(), Some(7), "{r}");
    assert_eq!(r["status"], "mismatch");
    let v = &r["volumes"][0];
    let changed = v["changed"].as_array().unwrap();
    assert_eq!(changed.len(), 1, "{v}");
    assert_eq!(changed[0]["path"], path);
    assert_eq!(changed[0]["fields"], serde_json::json!(["sha256"]));
    assert_eq!(v["missing"].as_array().unwrap().len(), 0);
    assert_eq!(v["extra"].as_array().unwrap().len(), 0);
    assert!(
        stdout(&out).contains(&format!("changed (sha256): {path}")),
        "{}",
        stdout(&out)
    );
    if let Some((_, failed)) = junit(dir.path()) {
        assert!(failed.contains(&format!("disk:{path}")), "{failed:?}");
    }
    assert_eq!(
        metric(&prometheus(dir.path()), "flr_verify_files_changed{"),
        1.0
    );
    assert_eq!(metric(&prometheus(dir.path()), "flr_verify_success{"), 0.0);
    // Without the manifest there is nothing to compare: the corrupted copy
    // verifies as the clean image does.
    let (clean_out, _) = verify(&[p(clean)], dir.path());
    let (out, _) = verify(&[p(bad)], dir.path());
    assert_eq!(out.status.code(), clean_out.status.code());
}

#[test]
fn corrupted_ext4_block_is_a_changed_file() {
    if !flr_testdata::have_tool("debugfs") {
        flr_testdata::loud(
            "SKIPPED corrupted_ext4_block_is_a_changed_file: no debugfs (e2fsprogs)",
        );
        return;
    }
    let img = fixture("ext4/ext4.img.zst");
    let bad = corrupted_copy(&img, ext4_data_offset(&img, "/medium.txt") + 100);
    check_corruption_found(&img, bad.path(), "/medium.txt");
}

#[test]
fn corrupted_ntfs_cluster_is_a_changed_file() {
    if !flr_testdata::have_tool("istat") {
        flr_testdata::loud(
            "SKIPPED corrupted_ntfs_cluster_is_a_changed_file: no istat (sleuthkit)",
        );
        return;
    }
    let img = fixture("ntfs/ntfs.img.zst");
    let tool = |args: &[&str]| {
        let o = std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    let inode = tool(&["ifind", "-n", "/medium.txt", p(&img)]);
    let istat = tool(&["istat", p(&img), inode.trim()]);
    // The cluster list follows the non-resident $DATA attribute's line.
    let after = istat
        .split("Type: $DATA")
        .nth(1)
        .and_then(|s| s.split_once('\n'))
        .map(|(_, rest)| rest)
        .unwrap();
    let cluster: u64 = after.split_whitespace().nth(2).unwrap().parse().unwrap();
    let fsstat = tool(&["fsstat", p(&img)]);
    let cs: u64 = fsstat
        .lines()
        .find_map(|l| l.strip_prefix("Cluster Size:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    let bad = corrupted_copy(&img, cluster * cs + 7);
    check_corruption_found(&img, bad.path(), "/medium.txt");
}

#[test]
fn missing_extra_unreadable_sample_and_budget() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture("ext4/ext4.img.zst");
    let base = make_manifest(&img, dir.path(), &[]);
    // Edit the baseline: drop README.txt (now extra), add a file that is
    // not in the image (missing), and change a recorded mtime.
    let mut m = json_file(&base);
    let entries = m["volumes"][0]["entries"].as_array_mut().unwrap();
    entries.retain(|e| e["path"] != "/README.txt");
    let mut ghost = entries[0].clone();
    ghost["path"] = "/no-such-file".into();
    entries.push(ghost);
    let bin = entries
        .iter_mut()
        .find(|e| e["path"] == "/sparse.bin")
        .unwrap();
    bin["mtime"] = "2001-01-01T00:00:00Z".into();
    let edited = dir.path().join("edited.json");
    std::fs::write(&edited, m.to_string()).unwrap();
    let (out, r) = verify(&[p(&img), "--manifest", p(&edited)], dir.path());
    assert_eq!(out.status.code(), Some(7), "{r}");
    let v = &r["volumes"][0];
    assert_eq!(v["missing"], serde_json::json!(["/no-such-file"]));
    assert_eq!(v["extra"], serde_json::json!(["/README.txt"]));
    assert_eq!(v["changed"][0]["path"], "/sparse.bin");
    assert_eq!(v["changed"][0]["fields"], serde_json::json!(["mtime"]));
    if let Some((_, failed)) = junit(dir.path()) {
        let f: BTreeSet<&str> = failed.iter().map(String::as_str).collect();
        for want in ["disk:/no-such-file", "disk:/README.txt", "disk:/sparse.bin"] {
            assert!(f.contains(want), "{failed:?}");
        }
    }

    // A seeded sample: the seed is reported and repeats the same reads.
    let (out, r) = verify(&[p(&img), "--sample", "5", "--seed", "1234"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{r}");
    assert_eq!(r["seed"], 1234);
    assert_eq!(r["mode"], "sample");
    assert_eq!(r["totals"]["files_read"], 5);
    let bytes = r["totals"]["bytes_read"].clone();
    let (_, r2) = verify(&[p(&img), "--sample", "5", "--seed", "1234"], dir.path());
    assert_eq!(r2["totals"]["bytes_read"], bytes);
    // Without --seed one is chosen and reported.
    let (_, r3) = verify(&[p(&img), "--sample", "5"], dir.path());
    assert!(r3["seed"].as_u64().is_some(), "{r3}");

    // A byte budget stops the reading; what was not read is counted.
    let (out, r) = verify(&[p(&img), "--max-bytes", "64K"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{r}");
    assert_eq!(r["budget_exhausted"], true);
    assert!(r["totals"]["bytes_read"].as_u64().unwrap() <= 65536);
    assert!(r["totals"]["files_not_checked"].as_u64().unwrap() > 0);

    // Files flr cannot read (NTFS EFS and WOF): reported with the reason,
    // exit 3; a manifest that records them as unreadable accepts them.
    let ntfs = fixture("ntfs/ntfs.img.zst");
    let (out, r) = verify(&[p(&ntfs)], dir.path());
    assert_eq!(out.status.code(), Some(3), "{r}");
    let un: Vec<&str> = r["volumes"][0]["unreadable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["path"].as_str().unwrap())
        .collect();
    assert!(
        un.contains(&"/efs.txt") && un.contains(&"/wof.bin"),
        "{un:?}"
    );
    let base = make_manifest(&ntfs, dir.path(), &[]);
    let (out, r) = verify(&[p(&ntfs), "--manifest", p(&base)], dir.path());
    assert_eq!(out.status.code(), Some(0), "{r}");
}

mod vault {
    //! The ADE OS disk's key behind the test Key Vault, as in
    //! tests/keyvault.rs: KEK version 1 wraps the LUKS passphrase.
    use super::*;
    use flr_kvtest::TestVault;

    const CLIENT: &str = "flr-verify-app";
    const CLIENT_SECRET: &str = "verify-secret";

    pub(super) struct Vault {
        pub(super) kv: TestVault,
        pub(super) dir: tempfile::TempDir,
        pub(super) kid: String,
        pub(super) meta: PathBuf,
        pub(super) config: PathBuf,
    }

    impl Vault {
        pub(super) fn new() -> Vault {
            let kv = TestVault::start();
            kv.add_client(CLIENT, CLIENT_SECRET);
            let kid = kv.create_rsa_key("ade-kek", 2048);
            let pass =
                std::fs::read(flr_testdata::testdata_dir().join("luks/pass-ade.bin")).unwrap();
            let wrapped = kv.wrap(&kid, "RSA-OAEP-256", &pass);
            let secret = kv.set_secret(
                "0C6E2B7A-0000-4000-8000-00000000AAAA",
                &wrapped,
                Some("Wrapped BEK"),
                &[
                    ("DiskEncryptionKeyFileName", "LinuxPassPhraseFileName"),
                    ("DiskEncryptionKeyEncryptionKeyURL", &kid),
                    ("DiskEncryptionKeyEncryptionAlgorithm", "RSA-OAEP-256"),
                ],
            );
            let dir = tempfile::tempdir().unwrap();
            let vault_id =
                "/subscriptions/0/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/test";
            let meta = dir.path().join("snapshot.json");
            std::fs::write(
                &meta,
                serde_json::json!({
                    "name": "ade-snap",
                    "encryptionSettingsCollection": {
                        "enabled": true,
                        "encryptionSettingsVersion": "1.1",
                        "encryptionSettings": [{
                            "diskEncryptionKey": {"secretUrl": secret, "sourceVault": {"id": vault_id}},
                            "keyEncryptionKey": {"keyUrl": kid, "sourceVault": {"id": vault_id}}
                        }]
                    }
                })
                .to_string(),
            )
            .unwrap();
            let config = dir.path().join("flr.toml");
            std::fs::write(
                &config,
                format!(
                    "[[vault]]\nurl = \"{}\"\ncredential = \"client-secret\"\nca_file = \"{}\"\n\n[policy]\nvaults = [\"https://127.0.0.1:*\"]\n\n[audit]\npath = \"{}\"\n",
                    kv.url(),
                    kv.ca_path().display(),
                    dir.path().join("audit.jsonl").display()
                ),
            )
            .unwrap();
            Vault {
                kv,
                dir,
                kid,
                meta,
                config,
            }
        }

        pub(super) fn flr(&self, args: &[&str]) -> Output {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_flr"))
                .args(args)
                .env("AZURE_CLIENT_ID", CLIENT)
                .env("AZURE_CLIENT_SECRET", CLIENT_SECRET)
                .env_remove("AZURE_TENANT_ID")
                .env_remove("FLR_CONFIG")
                .output()
                .unwrap();
            assert_ne!(out.status.code(), Some(101), "panic: {}", stderr(&out));
            out
        }
    }
}

#[test]
fn key_vault_unlocks_and_a_disabled_kek_blocks() {
    let v = vault::Vault::new();
    let img = fixture("luks/ade-os.vhd.zst");
    let json = v.dir.path().join("r.json");
    let junit_dir = tempfile::tempdir().unwrap();
    let args = |json: &Path, junit: &Path| {
        vec![
            "verify".to_string(),
            "--config".into(),
            p(&v.config).into(),
            "--metadata".into(),
            p(&v.meta).into(),
            p(&img).into(),
            "--json".into(),
            p(json).into(),
            "--junit".into(),
            p(junit).into(),
        ]
    };
    let junit_path = junit_dir.path().join("junit.xml");
    // The key chain unlocks the root: every volume opens and reads.
    let a = args(&json, &junit_path);
    let out = v.flr(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let r = json_file(&json);
    assert_eq!(out.status.code(), Some(0), "{r} {}", stderr(&out));
    let p1 = &r["volumes"][0];
    assert_eq!(p1["id"], "p1");
    assert_eq!(p1["state"], "opened", "{p1}");
    let root_files = manifest("luks/ade-root.tsv").len() as u64;
    assert!(p1["files_read"].as_u64().unwrap() >= root_files, "{p1}");

    // KEK version 1 disabled: p1 blocked with the reason, exit 4; the
    // other volumes still verify.
    v.kv.set_key_attributes(&v.kid, Some(false), None, None);
    let out = v.flr(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let r = json_file(&json);
    assert_eq!(out.status.code(), Some(4), "{r} {}", stderr(&out));
    assert_eq!(r["status"], "blocked");
    let p1 = &r["volumes"][0];
    assert_eq!(p1["state"], "blocked", "{p1}");
    assert_eq!(p1["verdict"], "blocked");
    assert_eq!(p1["reasons"][0], "kek-disabled", "{p1}");
    let version = v.kid.rsplit('/').next().unwrap();
    assert!(p1["sentence"].as_str().unwrap().contains(version), "{p1}");
    assert_eq!(r["volumes"][1]["state"], "opened");
    assert_eq!(r["totals"]["volumes_blocked"], 1);
    if let Some((_, failed)) = junit(junit_dir.path()) {
        assert_eq!(failed, vec!["volume p1".to_string()], "{failed:?}");
    }
}

/// A blob source (Azurite, connection string with the account key): the
/// manifest made from the local file verifies against the blob, and the
/// blob mounts.
#[test]
fn blob_sources_verify_and_mount() {
    let Some(a) = flr_kvtest::azurite::azurite() else {
        flr_testdata::loud(
            "SKIPPED verify::blob_sources_verify_and_mount: Azurite is not installed (npm install -g azurite, or set FLR_AZURITE_ENDPOINT)",
        );
        return;
    };
    let local = fixture("disks/demo.vhdx.zst");
    let container = "flr-verify-tests";
    flr_blob::upload::create_container(&format!("{}/{container}?{}", a.endpoint, a.write_sas()))
        .expect("create container");
    let src = flr_io::FileSource::open(&local).unwrap();
    flr_blob::upload::put_page_blob(&a.writable_url(container, "demo.vhdx"), &src).expect("upload");
    let conn = format!(
        "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};BlobEndpoint={};Container={container};Blob=demo.vhdx",
        flr_blob::DEV_ACCOUNT,
        flr_blob::DEV_KEY,
        a.endpoint
    );
    let dir = tempfile::tempdir().unwrap();
    let base = make_manifest(&local, dir.path(), &[]);
    let (out, r) = verify(&[&conn, "--manifest", p(&base)], dir.path());
    assert_eq!(out.status.code(), Some(0), "{r} {}", stderr(&out));
    assert_eq!(r["totals"]["volumes_opened"], 3);
    // The report names the blob, never its key.
    assert!(!r.to_string().contains(flr_blob::DEV_KEY));

    if !crate::mount::fuse_available("verify::blob_sources_verify_and_mount (mount)") {
        return;
    }
    let m = crate::mount::Mount::source(&conn, &[]);
    crate::mount::check_against(&m.path().join("p2"), "disks/demo.p2.tsv", &[]);
}
