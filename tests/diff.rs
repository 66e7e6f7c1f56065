//! `flr diff` and `verify --since` on testdata/diff (ext4, XFS, NTFS, Btrfs
//! and FAT in fixed VHDs, the newer copy changed by the kernel, ntfs-3g or
//! mtools; ext4 and NTFS also as differencing VHD children of the older copy,
//! ext4 also as a VHDX chain; an ext4 image stored as a file on ext4,
//! changed inside through a loop device; the ext4 pair on an LVM thin LV):
//! the diff lists exactly the changes the generator made (its expected
//! lists), and `verify --since` with the older snapshot's manifest gives
//! every file the hash a full read of the newer image gives.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

fn flr(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_flr"))
        .args(args)
        .output()
        .expect("run flr")
}

fn pair(fs: &str) -> (String, String) {
    let o = flr_testdata::fixture(&format!("diff/{fs}-old.vhd.zst"));
    let n = flr_testdata::fixture(&format!("diff/{fs}-new.vhd.zst"));
    (o.display().to_string(), n.display().to_string())
}

const ALL: [&str; 5] = ["ext4", "xfs", "ntfs", "btrfs", "fat"];

/// The generator's list: (change, path, former path) → a field that must
/// be among the differences.
fn expected(fs: &str) -> BTreeMap<(String, String, String), String> {
    let text = std::fs::read_to_string(
        flr_testdata::testdata_dir().join(format!("diff/{fs}.expected.tsv")),
    )
    .unwrap();
    let mut want = BTreeMap::new();
    for l in text.lines() {
        let c: Vec<&str> = l.split('\t').collect();
        want.insert(
            (c[0].to_string(), c[1].to_string(), c[2].to_string()),
            c[3].to_string(),
        );
    }
    want
}

/// What `flr diff --json` listed: (change, path, former path) → fields.
pub(crate) type Changes = BTreeMap<(String, String, String), BTreeSet<String>>;

/// The `flr diff --json` lines: the changes, and the summary lines.
pub(crate) fn parse_diff(stdout: &[u8]) -> (Changes, Vec<serde_json::Value>) {
    let mut got = BTreeMap::new();
    let mut summaries = Vec::new();
    for l in String::from_utf8_lossy(stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["version"], 1);
        if v["type"] == "summary" {
            summaries.push(v);
            continue;
        }
        let key = (
            v["change"].as_str().unwrap().to_string(),
            v["path"].as_str().unwrap().to_string(),
            v["old_path"].as_str().unwrap_or("").to_string(),
        );
        let fields = v["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect();
        got.insert(key, fields);
    }
    (got, summaries)
}

/// Checks a diff's changes against the generator's list for `fs`
/// (testdata/diff/{fs}.expected.tsv): the same entries, each with the
/// field the generator names among its differences. Returns that list.
pub(crate) fn check_expected(
    fs: &str,
    got: &Changes,
) -> BTreeMap<(String, String, String), String> {
    let want = expected(fs);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{fs}: the change list"
    );
    for (k, field) in &want {
        if !field.is_empty() {
            assert!(
                got[k].contains(field),
                "{fs}: {k:?} lacks {field}: {:?}",
                got[k]
            );
        }
    }
    want
}

/// Runs `flr diff OLD NEW [ID:/] --json` and checks its list against the
/// generator's; returns the summary line.
fn diff_matches(fs: &str, old: &str, new: &str, volume: &[&str]) -> serde_json::Value {
    let out = flr(&[&["diff", old, new][..], volume, &["--json"]].concat());
    assert!(
        out.status.success(),
        "{fs}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (got, summaries) = parse_diff(&out.stdout);
    let want = check_expected(fs, &got);
    let s = summaries.into_iter().next().expect("a summary line");
    let count = |c: &str| want.keys().filter(|k| k.0 == c).count();
    for c in ["added", "removed", "renamed", "changed"] {
        assert_eq!(s[c], count(c), "{fs}: {c} in {s}");
    }
    s
}

#[test]
fn diff_lists_exactly_what_the_generator_changed() {
    for fs in ALL {
        let (old, new) = pair(fs);
        let s = diff_matches(fs, &old, &new, &[]);
        // Every filesystem maps files to blocks: the untouched tree is
        // proven equal without reading it (changed ranges are 4 KiB
        // blocks: an inode-table block, an MFT record block, a Btrfs leaf
        // or a directory cluster shared with a changed object is changed,
        // and those objects are compared by their metadata).
        assert_eq!(s["mode"], "changed-folders", "{fs}: {s}");
        assert!(s["proven_unchanged"].as_u64().unwrap() >= 10, "{fs}: {s}");
        assert!(s["files_hashed"].as_u64().unwrap() <= 3, "{fs}: {s}");
    }
}

/// A differencing child of the older image (VHD; for ext4 also a VHDX
/// chain), holding exactly the blocks the kernel or ntfs-3g changed: the
/// diff lists what the generator
/// changed, learns the changed blocks from the child's sector bitmaps
/// alone (no byte of either disk read to find them), and reads of the
/// parent beyond metadata are the hashes of files whose data changed.
#[test]
fn diff_parent_child_lists_what_the_child_changed() {
    for (fs, ext) in [("ext4", "vhd"), ("ntfs", "vhd"), ("ext4", "vhdx")] {
        let parent = flr_testdata::fixture(&format!("diff/{fs}-old.{ext}.zst"));
        let child = flr_testdata::fixture(&format!("diff/{fs}-child.{ext}.zst"));
        assert_eq!(
            parent.parent(),
            child.parent(),
            "the child finds its parent beside it"
        );
        let (p, c) = (parent.display().to_string(), child.display().to_string());
        let s = diff_matches(fs, &p, &c, &[]);
        assert_eq!(s["mode"], "changed-folders", "{fs}: {s}");
        // Only same-size files whose data blocks changed are hashed
        // (rewrite.bin; NTFS also the files whose resident data lives in a
        // changed record).
        assert!(s["files_hashed"].as_u64().unwrap() <= 2, "{fs}: {s}");
        let text = flr(&["--stats", "diff", &p, &c]);
        assert!(text.status.success(), "{fs}");
        let err = String::from_utf8_lossy(&text.stderr);
        let line = err
            .lines()
            .find(|l| l.contains("changed ranges by"))
            .unwrap_or_else(|| panic!("{fs}: no changed-ranges line in {err}"));
        assert!(
            line.contains("changed ranges by differencing")
                && line.contains("(0 bytes read to find them"),
            "{fs}: {line}"
        );
    }
}

/// A disk image stored as a file, changed inside through a loop device
/// (nested-old/new.vhd: /images/inner.vhd on ext4): the diff of its volume
/// lists what the generator changed in it, and proves the untouched files
/// equal from the outer volume's changed blocks and the file's layout on
/// both sides, without hashing them.
#[test]
fn diff_inside_a_disk_image_stored_as_a_file() {
    let (old, new) = pair("nested");
    let inner = "disk:/images/inner.vhd::disk:/";
    let s = diff_matches("nested", &old, &new, &[inner]);
    assert_eq!(s["mode"], "changed-folders", "{s}");
    assert!(s["proven_unchanged"].as_u64().unwrap() >= 10, "{s}");
    assert!(s["files_hashed"].as_u64().unwrap() <= 2, "{s}");
    // The outer volume: the image file changed, nothing else.
    let out = flr(&["diff", &old, &new, "--json"]);
    assert!(out.status.success());
    let (rows, _) = parse_diff(&out.stdout);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows.keys().next().unwrap().1, "/images/inner.vhd");
}

/// path → sha256 of every file in a manifest document.
fn hashes(doc: &str) -> BTreeMap<String, String> {
    let v: serde_json::Value = serde_json::from_str(doc).unwrap();
    let mut out = BTreeMap::new();
    for vol in v["volumes"].as_array().unwrap() {
        for e in vol["entries"].as_array().unwrap() {
            if let Some(h) = e["sha256"].as_str() {
                out.insert(e["path"].as_str().unwrap().to_string(), h.to_string());
            }
        }
    }
    out
}

/// ext4 on an LVM thin LV (thin-old/new.vhd: the ext4 pair laid out in a
/// thin pool, the newer with its changed blocks rewritten in place or
/// copied on write to fresh data blocks): the thin LV compares its block
/// mappings with the older pool's, so the diff walks only changed folders
/// and still lists exactly the ext4 pair's changes.
#[test]
fn diff_on_a_thin_lv_compares_its_mappings() {
    let (old, new) = pair("thin");
    let s = diff_matches("thin", &old, &new, &[]);
    assert_eq!(s["volume"], "disk/thindiff/data", "{s}");
    assert_eq!(s["mode"], "changed-folders", "{s}");
    assert!(s["proven_unchanged"].as_u64().unwrap() >= 10, "{s}");
    // Chunks are 64 KiB: small files sharing a rewritten chunk are hashed.
    assert!(s["files_hashed"].as_u64().unwrap() <= 8, "{s}");
}

#[test]
fn verify_since_agrees_with_a_full_verify() {
    let dir = tempfile::tempdir().unwrap();
    for fs in ALL.into_iter().chain(["nested", "thin"]) {
        let (old, new) = pair(fs);
        let base = dir.path().join(format!("{fs}-old.json"));
        let next = dir.path().join(format!("{fs}-next.json"));
        let out = flr(&["manifest", &old]);
        assert!(
            out.status.success(),
            "{fs}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&base, &out.stdout).unwrap();
        let full = flr(&["manifest", &new]);
        assert!(full.status.success());
        let out = flr(&[
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
        assert!(
            out.status.success(),
            "{fs}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let next_doc = std::fs::read_to_string(&next).unwrap();
        assert_eq!(
            hashes(&next_doc),
            hashes(&String::from_utf8(full.stdout).unwrap()),
            "{fs}: carried and read hashes against a full read"
        );
        let t = &report["totals"];
        if fs == "ext4" || fs == "thin" {
            assert!(t["files_carried"].as_u64().unwrap() >= 10, "{fs}: {t}");
            assert!(t["files_read"].as_u64().unwrap() <= 14, "{fs}: {t}");
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
