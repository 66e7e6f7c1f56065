//! `flr diff` and `verify --since` of remote images: the testdata/diff
//! pairs (ext4, XFS, NTFS in fixed VHDs, the newer copy changed by the
//! kernel or ntfs-3g) uploaded to the test Blob service (flr-kvtest) as one
//! page blob and two snapshots (the older image, then only the 4 KiB
//! pieces that differ written over it). The diff must list exactly the
//! generator's changes, found by the service's page-range diff (snapshot
//! URLs: `prevsnapshot`; snapshot resource ids: `x-ms-previous-snapshot-url`,
//! both granted and revoked), and `verify --since` must agree with a full
//! verify of the newer snapshot. The service answers at most a few ranges
//! per page so continuation markers are followed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use flr_kvtest::TestVault;

use crate::diff::{check_expected, parse_diff};

const CLIENT: &str = "flr-diff-app";
const CLIENT_SECRET: &str = "diff-secret";
const CONTAINER: &str = "diffs";
const SUB: &str = "/subscriptions/5d4c3b2a-0000-4000-8000-00000000d1ff/resourceGroups/rg-diff/providers/Microsoft.Compute";

struct Remote {
    kv: TestVault,
    _dir: tempfile::TempDir,
    dir: PathBuf,
    cfg: PathBuf,
}

impl Remote {
    fn new() -> Remote {
        let kv = TestVault::start();
        kv.add_client(CLIENT, CLIENT_SECRET);
        // Few ranges per answer: every diff here takes several pages.
        kv.set_page_list_max(3);
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("flr.toml");
        std::fs::write(
            &cfg,
            format!(
                "[azure]\nresource_manager = \"{url}\"\ncredential = \"client-secret\"\ntenant = \"{tenant}\"\nca_file = \"{ca}\"\naccess_seconds = 600\n",
                url = kv.url(),
                ca = kv.ca_path().display(),
                tenant = kv.tenant(),
            ),
        )
        .unwrap();
        Remote {
            kv,
            dir: dir.path().to_path_buf(),
            _dir: dir,
            cfg,
        }
    }

    /// Uploads `fs`'s pair as blob `{fs}.vhd` with two snapshots: (old, new).
    fn upload(&self, fs: &str) -> (String, String) {
        let o = flr_testdata::fixture(&format!("diff/{fs}-old.vhd.zst"));
        let n = flr_testdata::fixture(&format!("diff/{fs}-new.vhd.zst"));
        let blob = format!("{fs}.vhd");
        self.kv.sync_page_blob(CONTAINER, &blob, &o);
        let t_old = self.kv.snapshot_blob(CONTAINER, &blob);
        let written = self.kv.sync_page_blob(CONTAINER, &blob, &n);
        assert!(written > 0, "{fs}: the newer image differs");
        let t_new = self.kv.snapshot_blob(CONTAINER, &blob);
        // The snapshots hold the images byte for byte.
        assert!(
            self.kv.blob_bytes(CONTAINER, &blob, Some(&t_old))[..]
                == std::fs::read(&o).unwrap()[..]
        );
        assert!(
            self.kv.blob_bytes(CONTAINER, &blob, Some(&t_new))[..]
                == std::fs::read(&n).unwrap()[..]
        );
        (t_old, t_new)
    }

    fn url(&self, fs: &str, snapshot: &str) -> String {
        self.kv
            .blob_url(CONTAINER, &format!("{fs}.vhd"), Some(snapshot))
    }

    fn flr(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_flr"))
            .arg("--config")
            .arg(&self.cfg)
            .args(args)
            .env("AZURE_CLIENT_ID", CLIENT)
            .env("AZURE_CLIENT_SECRET", CLIENT_SECRET)
            .env("AZURE_AUTHORITY_HOST", self.kv.url())
            .env_remove("AZURE_TENANT_ID")
            .env_remove("FLR_CONFIG")
            .output()
            .expect("run flr");
        assert_ne!(out.status.code(), Some(101), "panic: {}", text(&out.stderr));
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(!all.contains("sig="), "a SAS signature leaked: {all}");
        out
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// path → sha256 of every file in a manifest document.
fn hashes(doc: &str) -> BTreeMap<String, String> {
    let v: serde_json::Value = serde_json::from_str(doc).unwrap();
    let mut out = BTreeMap::new();
    for vol in v["volumes"].as_array().unwrap() {
        for e in vol["entries"].as_array().unwrap() {
            if let Some(h) = e["sha256"].as_str() {
                out.insert(
                    format!(
                        "{}:{}",
                        vol["id"].as_str().unwrap_or(""),
                        e["path"].as_str().unwrap()
                    ),
                    h.to_string(),
                );
            }
        }
    }
    out
}

#[test]
fn remote_diff_of_two_snapshots_lists_what_the_generator_changed() {
    let r = Remote::new();
    for fs in ["ext4", "xfs", "ntfs"] {
        let (t_old, t_new) = r.upload(fs);
        r.kv.reset_log();
        let out = r.flr(&[
            "diff",
            &r.url(fs, &t_old),
            &r.url(fs, &t_new),
            "--json",
            "--stats",
        ]);
        assert!(out.status.success(), "{fs}: {}", text(&out.stderr));
        check_expected(fs, &parse_diff(&out.stdout).0);
        let log = r.kv.requests();
        let diffs: Vec<_> = log
            .iter()
            .filter(|q| q.page_diff == Some("prevsnapshot"))
            .collect();
        assert!(
            diffs.len() >= 2,
            "{fs}: the diff took pages with markers: {diffs:?}"
        );
        assert!(diffs.iter().any(|q| q.query.contains("marker=")), "{fs}");
        assert!(diffs.iter().all(|q| q.status == 200), "{fs}: {diffs:?}");
    }
}

#[test]
fn remote_verify_since_agrees_with_a_full_verify() {
    let r = Remote::new();
    for fs in ["ext4", "xfs", "ntfs"] {
        let (t_old, t_new) = r.upload(fs);
        let (old, new) = (r.url(fs, &t_old), r.url(fs, &t_new));
        let base = r.dir.join(format!("{fs}-old.json"));
        let next = r.dir.join(format!("{fs}-next.json"));
        let out = r.flr(&["manifest", &old]);
        assert!(out.status.success(), "{fs}: {}", text(&out.stderr));
        std::fs::write(&base, &out.stdout).unwrap();
        let full = r.flr(&["manifest", &new]);
        assert!(full.status.success(), "{fs}: {}", text(&full.stderr));
        let out = r.flr(&[
            "verify",
            &new,
            "--since",
            base.to_str().unwrap(),
            "--base",
            &old,
            "--write-manifest",
            next.to_str().unwrap(),
            "--json",
            "-",
        ]);
        assert!(out.status.success(), "{fs}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("changed ranges by blob-diff"),
            "{fs}: {}",
            text(&out.stderr)
        );
        let next_doc = std::fs::read_to_string(&next).unwrap();
        assert!(!next_doc.contains("sig="), "{fs}: a SAS in the manifest");
        assert_eq!(
            hashes(&next_doc),
            hashes(&text(&full.stdout)),
            "{fs}: carried and read hashes against a full read of the newer snapshot"
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let t = &report["totals"];
        if fs == "ext4" {
            // ext4 maps files to blocks (XFS and NTFS do not yet here:
            // everything is read, and still must agree).
            assert!(t["files_carried"].as_u64().unwrap() >= 10, "{fs}: {t}");
            assert!(
                next_doc.contains("\"carried\""),
                "{fs}: carried entries marked"
            );
        }
        assert_eq!(
            t["files_carried"].as_u64().unwrap() + t["files_read"].as_u64().unwrap(),
            t["files"].as_u64().unwrap(),
            "{fs}: {t}"
        );
    }
}

#[test]
fn remote_diff_of_snapshot_resource_ids_grants_and_revokes_both() {
    let r = Remote::new();
    let fs = "ext4";
    let (t_old, t_new) = r.upload(fs);
    let disk = format!("{SUB}/disks/vm-data");
    let (id_old, id_new) = (
        format!("{SUB}/snapshots/vm-data-mon"),
        format!("{SUB}/snapshots/vm-data-tue"),
    );
    for (id, t) in [(&id_old, &t_old), (&id_new, &t_new)] {
        let props = serde_json::json!({
            "incremental": true,
            "creationData": {"createOption": "CopyStart", "sourceResourceId": disk},
            "diskSizeGB": 1,
            "encryption": {"type": "EncryptionAtRestWithPlatformKey"},
        });
        r.kv.add_disk_resource(id, props, &r.url(fs, t));
    }
    r.kv.reset_log();
    let out = r.flr(&["diff", &id_old, &id_new, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    check_expected(fs, &parse_diff(&out.stdout).0);
    assert_eq!(
        r.kv.disk_access(&id_old),
        (1, 1, false),
        "the older snapshot granted and revoked"
    );
    assert_eq!(
        r.kv.disk_access(&id_new),
        (1, 1, false),
        "the newer snapshot granted and revoked"
    );
    let log = r.kv.requests();
    // The managed-disk form: the older snapshot's URL in a header, paged.
    let diffs: Vec<_> = log.iter().filter(|q| q.page_diff.is_some()).collect();
    assert!(diffs.len() >= 2, "{diffs:?}");
    assert!(
        diffs
            .iter()
            .all(|q| q.page_diff == Some("previous-snapshot-url") && q.status == 200),
        "{diffs:?}"
    );
    assert!(
        diffs.iter().any(|q| q.query.contains("marker=")),
        "{diffs:?}"
    );
}

#[test]
fn remote_diff_of_unrelated_blobs_compares_blocks() {
    let r = Remote::new();
    let fs = "xfs";
    let o = flr_testdata::fixture(&format!("diff/{fs}-old.vhd.zst"));
    let n = flr_testdata::fixture(&format!("diff/{fs}-new.vhd.zst"));
    r.kv.sync_page_blob(CONTAINER, "a.vhd", &o);
    r.kv.sync_page_blob(CONTAINER, "b.vhd", &n);
    let out = r.flr(&[
        "diff",
        &r.kv.blob_url(CONTAINER, "a.vhd", None),
        &r.kv.blob_url(CONTAINER, "b.vhd", None),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    check_expected(fs, &parse_diff(&out.stdout).0);
}

/// The JSON summary (the last line) of a `--format json get`.
fn get_summary(out: &Output) -> serde_json::Value {
    let t = text(&out.stdout);
    let last = t.lines().last().expect("a summary line");
    serde_json::from_str(last).unwrap()
}

/// A restore from a snapshot, resumed: the restore journal the first run
/// wrote keeps every file without fetching its data again. The server
/// counts the blob bytes it serves: the resume is served only metadata
/// (superblock, group descriptors, inode tables and folders, in the
/// reader's 16 KiB blocks), here about an eighth of the first run.
#[test]
fn a_resumed_remote_restore_fetches_no_file_data_again() {
    let r = Remote::new();
    let (_, t_new) = r.upload("ext4");
    let url = r.url("ext4", &t_new);
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path().to_str().unwrap();
    let args = [
        "--format",
        "json",
        "get",
        &url,
        "disk:/",
        "-o",
        d,
        "--skip-existing",
    ];
    let b0 = r.kv.blob_bytes_served();
    let out = r.flr(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let first = r.kv.blob_bytes_served() - b0;
    let s1 = get_summary(&out);
    let files = s1["files"].as_u64().unwrap();
    let bytes = s1["bytes"].as_u64().unwrap();
    assert!(files >= 20 && bytes >= 800_000, "{s1}");
    assert!(first >= bytes, "{first} bytes served for {bytes} restored");

    let b1 = r.kv.blob_bytes_served();
    let out = r.flr(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let again = r.kv.blob_bytes_served() - b1;
    let s2 = get_summary(&out);
    assert_eq!(s2["files"], 0, "{s2}");
    assert_eq!(s2["kept_by_journal"].as_u64(), Some(files), "{s2}");
    // Only metadata (superblock, group descriptors, inode tables, folders).
    assert!(
        again * 4 < first,
        "the resume fetched {again} bytes; the first restore {first}"
    );
    eprintln!("remote resume: {again} bytes served against {first} for the first restore");
}
