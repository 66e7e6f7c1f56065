//! Windows fidelity end to end, on testdata/ntfsmeta (an NTFS volume filled
//! by ntfs-3g, a FAT volume by mtools): alternate data streams listed,
//! read and restored as xattrs or side files, the Windows attribute column
//! of `ls -l`, and the `windows` object (attributes, reparse kind, owner,
//! SDDL) of `ls` JSON and the manifest. Every expected value comes from
//! gen.sh: the bytes it gave setfattr, what getfattr and mattrib read back,
//! and the SDDL written by hand for the ACEs it packed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::util::{fixture, p, run, run_ok, sha256_hex, stderr, stdout};

struct Stream {
    path: String,
    name: String,
    size: u64,
    sha256: String,
}

fn tsv(name: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(flr_testdata::testdata_dir().join("ntfsmeta").join(name))
        .expect("fixture table");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

fn streams() -> Vec<Stream> {
    tsv("streams.tsv")
        .into_iter()
        .map(|r| Stream {
            path: r[0].clone(),
            name: r[1].clone(),
            size: r[2].parse().unwrap(),
            sha256: r[3].clone(),
        })
        .collect()
}

/// getfattr's answer `g` for stream `s` of `file` is the bytes gen.sh wrote.
fn check_stream_value(s: &Stream, file: &std::path::Path, g: &std::process::Output) {
    let name = format!("user.ntfs.stream.{}", s.name);
    assert!(
        g.status.success(),
        "{name} on {}: {}",
        file.display(),
        stderr(g)
    );
    assert_eq!(g.stdout.len() as u64, s.size, "{name}");
    assert_eq!(sha256_hex(&g.stdout), s.sha256, "{name}");
}

fn img() -> std::path::PathBuf {
    fixture("ntfsmeta/ntfsmeta.img.zst")
}

/// The letters `ls -l` shows for FILE_ATTRIBUTE_* bits, as README documents
/// them (`rhsalcepon`).
fn letters(attrs: u32) -> String {
    [
        (0x1, 'r'),
        (0x2, 'h'),
        (0x4, 's'),
        (0x20, 'a'),
        (0x400, 'l'),
        (0x800, 'c'),
        (0x4000, 'e'),
        (0x200, 'p'),
        (0x1000, 'o'),
        (0x2000, 'n'),
    ]
    .iter()
    .map(|&(b, c)| if attrs & b != 0 { c } else { '-' })
    .collect()
}

fn hex32(s: &str) -> u32 {
    u32::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}

#[test]
fn ls_streams_lists_every_stream_in_text_and_json() {
    let img = img();
    let out = run_ok(&["ls", p(&img), "disk:/", "-R", "--streams"]);
    let got: BTreeSet<String> = stdout(&out)
        .lines()
        .filter(|l| l.contains(':'))
        .map(str::to_string)
        .collect();
    let want: BTreeSet<String> = streams()
        .iter()
        .map(|s| format!("/{}:{}", s.path, s.name))
        .collect();
    assert_eq!(got, want);
    // Without --streams, none.
    let plain = stdout(&run_ok(&["ls", p(&img), "disk:/", "-R"]));
    assert!(!plain.lines().any(|l| l.contains(':')), "{plain}");

    let out = run_ok(&[
        "--format",
        "json",
        "ls",
        p(&img),
        "disk:/",
        "-R",
        "--streams",
    ]);
    let mut seen = BTreeMap::new();
    for line in stdout(&out).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["type"] == "stream" {
            assert_eq!(v["report_version"], 1);
            assert_eq!(
                v["path"].as_str().unwrap(),
                format!(
                    "{}:{}",
                    v["file"].as_str().unwrap(),
                    v["stream"].as_str().unwrap()
                )
            );
            seen.insert(
                v["path"].as_str().unwrap().to_string(),
                v["size"].as_u64().unwrap(),
            );
        }
    }
    let want: BTreeMap<String, u64> = streams()
        .iter()
        .map(|s| (format!("/{}:{}", s.path, s.name), s.size))
        .collect();
    assert_eq!(seen, want);
}

#[test]
fn cat_reads_each_stream_as_written() {
    let img = img();
    for s in streams() {
        let spec = format!("disk:/{}:{}", s.path, s.name);
        let out = run_ok(&["cat", p(&img), &spec]);
        assert_eq!(out.stdout.len() as u64, s.size, "{spec}");
        assert_eq!(sha256_hex(&out.stdout), s.sha256, "{spec}");
    }
    // The stream type suffix Windows shows is accepted.
    let big = streams().into_iter().find(|s| s.name == "big").unwrap();
    let out = run_ok(&["cat", p(&img), "disk:/ads.txt:big:$DATA"]);
    assert_eq!(sha256_hex(&out.stdout), big.sha256);
    // The file itself is still its unnamed stream.
    assert_eq!(
        run_ok(&["cat", p(&img), "disk:/ads.txt"]).stdout,
        b"main stream\n"
    );
    let o = run(&["cat", p(&img), "disk:/ads.txt:nosuch"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("ads.txt:nosuch"), "{}", stderr(&o));
}

/// Whether user xattrs can be set in `dir` (tmpfs before Linux 6.6 and
/// some container filesystems refuse them).
fn user_xattrs_work(dir: &Path) -> bool {
    let probe = dir.join("probe");
    std::fs::write(&probe, b"x").unwrap();
    let ok = std::process::Command::new("setfattr")
        .args(["-n", "user.flr.probe", "-v", "1", p(&probe)])
        .status()
        .is_ok_and(|s| s.success());
    std::fs::remove_file(&probe).unwrap();
    ok
}

/// Whether `dir`'s filesystem takes a user xattr value of `size` bytes
/// (ext4 without ea_inode: about one block).
fn xattr_fits(dir: &Path, size: u64) -> bool {
    let probe = dir.join("probe-size");
    std::fs::write(&probe, b"x").unwrap();
    let value = format!("0x{}", "ab".repeat(size as usize));
    let ok = size <= 65536
        && std::process::Command::new("setfattr")
            .args(["-n", "user.flr.size", "-v", &value, p(&probe)])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    std::fs::remove_file(&probe).unwrap();
    ok
}

#[test]
fn get_restores_streams_as_xattrs_by_default() {
    if !flr_testdata::have_tool("getfattr") || !flr_testdata::have_tool("setfattr") {
        flr_testdata::loud("SKIPPED get_restores_streams_as_xattrs_by_default: no getfattr/setfattr (Debian package attr)");
        return;
    }
    let img = img();
    let base = tempfile::tempdir().unwrap();
    if !user_xattrs_work(base.path()) {
        flr_testdata::loud(&format!(
            "SKIPPED get_restores_streams_as_xattrs_by_default: {} refuses user xattrs",
            base.path().display()
        ));
        return;
    }
    let dest = base.path().join("out");
    let o = run(&[
        "get",
        p(&img),
        "disk:/ads.txt",
        "disk:/comp",
        "disk:/folder",
        "-o",
        p(&dest),
    ]);
    // The 300000-byte stream cannot be an xattr anywhere (Linux caps values
    // at 64 KiB), nor a 60000-byte one on ext4 without ea_inode: each is
    // reported and the restore is partial (exit code 1), never silent.
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("\"huge\"") && err.contains("--streams=files"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dest.join("ads.txt")).unwrap(),
        b"main stream\n"
    );
    for s in &streams() {
        let file = dest.join(&s.path);
        let name = format!("user.ntfs.stream.{}", s.name);
        let g = std::process::Command::new("getfattr")
            .args(["--only-values", "-n", &name, p(&file)])
            .output()
            .unwrap();
        if s.name == "huge" || !xattr_fits(base.path(), s.size) {
            assert!(!g.status.success(), "{name} cannot be there");
            assert!(
                err.contains(&format!("{}: stream {:?} not restored", s.path, s.name)),
                "{name} not reported: {err}"
            );
            continue;
        }
        check_stream_value(s, &file, &g);
    }
    // --streams=none restores the data alone.
    let dest2 = base.path().join("none");
    run_ok(&[
        "get",
        p(&img),
        "disk:/ads.txt",
        "-o",
        p(&dest2),
        "--streams=none",
    ]);
    let g = std::process::Command::new("getfattr")
        .args(["-d", "-m", "user\\.", p(&dest2.join("ads.txt"))])
        .output()
        .unwrap();
    assert!(!stdout(&g).contains("ntfs.stream"), "{}", stdout(&g));
}

#[test]
fn get_restores_streams_as_side_files_inside_dest() {
    let img = img();
    let base = tempfile::tempdir().unwrap();
    let dest = base.path().join("out");
    let o = run_ok(&[
        "--format",
        "json",
        "get",
        p(&img),
        "disk:/ads.txt",
        "disk:/comp",
        "disk:/folder",
        "-o",
        p(&dest),
        "--streams=files",
    ]);
    let summary: serde_json::Value =
        serde_json::from_str(stdout(&o).lines().last().unwrap()).unwrap();
    let want = streams();
    assert_eq!(summary["streams"].as_u64(), Some(want.len() as u64));
    assert_eq!(summary["files"], 2);
    for s in &want {
        let side = dest.join(format!("{}:{}", s.path, s.name));
        let data = std::fs::read(&side).unwrap_or_else(|e| panic!("{}: {e}", side.display()));
        assert_eq!(sha256_hex(&data), s.sha256, "{}", side.display());
    }
    // Nothing was written beside DEST (the stream named `..` stays a name).
    let beside: Vec<_> = std::fs::read_dir(base.path()).unwrap().collect();
    assert_eq!(beside.len(), 1);
    assert!(dest.join("ads.txt:..").is_file());
    assert_eq!(
        std::fs::read(dest.join("ads.txt")).unwrap(),
        b"main stream\n"
    );
}

/// The `ls -l` column against system.ntfs_attrib_be as getfattr read it.
#[test]
fn ls_long_shows_windows_attributes_for_ntfs() {
    let img = img();
    let out = stdout(&run_ok(&["ls", p(&img), "disk:/", "-l", "-R"]));
    let cols: BTreeMap<String, String> = out
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                // mode, uid, gid, size, mtime (2), btime (2), name
                f.get(8)?.trim_start_matches('/').to_string(),
                f[0].to_string(),
            ))
        })
        .collect();
    let rows = tsv("ntfs-attrs.tsv");
    assert!(rows.len() >= 10);
    for r in rows {
        let attrs = hex32(&r[1]);
        let kind = match r[2].as_str() {
            "0xa000000c" | "0xa0000003" => 'l',
            _ if attrs & 0x10 != 0 => 'd',
            _ => '-',
        };
        let want = format!("{kind}{}", letters(attrs));
        assert_eq!(cols.get(&r[0]), Some(&want), "{}: {out}", r[0]);
    }
}

#[test]
fn json_and_manifest_carry_windows_metadata() {
    let img = img();
    let out = stdout(&run_ok(&[
        "--format",
        "json",
        "ls",
        p(&img),
        "disk:/",
        "-R",
    ]));
    let mut by_path = BTreeMap::new();
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        by_path.insert(
            v["path"]
                .as_str()
                .unwrap()
                .trim_start_matches('/')
                .to_string(),
            v,
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&run_ok(&["manifest", p(&img)]).stdout).unwrap();
    let mut in_manifest = BTreeMap::new();
    for e in manifest["volumes"][0]["entries"].as_array().unwrap() {
        in_manifest.insert(
            e["path"]
                .as_str()
                .unwrap()
                .trim_start_matches('/')
                .to_string(),
            e.clone(),
        );
    }
    for r in tsv("ntfs-attrs.tsv") {
        for (what, v) in [("ls", &by_path[&r[0]]), ("manifest", &in_manifest[&r[0]])] {
            let w = &v["windows"];
            assert_eq!(
                hex32(w["attributes"].as_str().unwrap()),
                hex32(&r[1]),
                "{what} {}",
                r[0]
            );
            let names: Vec<&str> = w["attribute_names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap())
                .collect();
            assert_eq!(
                names.contains(&"hidden"),
                hex32(&r[1]) & 2 != 0,
                "{what} {}",
                r[0]
            );
            match r[2].as_str() {
                "-" => assert!(w.get("reparse_tag").is_none(), "{what} {}", r[0]),
                tag => {
                    assert_eq!(w["reparse_tag"], tag, "{what} {}", r[0]);
                    let kind = match tag {
                        "0xa000000c" => "symlink",
                        "0xa0000003" => "junction",
                        "0x80000017" => "wof",
                        _ => unreachable!("gen.sh writes these three"),
                    };
                    assert_eq!(w["reparse_kind"], kind, "{what} {}", r[0]);
                }
            }
        }
    }
    for r in tsv("sd.tsv") {
        for (what, v) in [("ls", &by_path[&r[0]]), ("manifest", &in_manifest[&r[0]])] {
            let w = &v["windows"];
            assert_eq!(w["owner"], r[1].as_str(), "{what}");
            assert_eq!(w["group"], r[2].as_str(), "{what}");
            assert_eq!(w["sddl"], r[3].as_str(), "{what}");
        }
    }
    // Every object of an NTFS volume made by mkntfs has a descriptor.
    assert!(by_path.values().all(|v| v["windows"]["sddl"].is_string()));
}

/// FAT: the attribute byte as mattrib shows it (A, S, H, R).
#[test]
fn fat_attributes_in_ls_long_and_json() {
    let img = fixture("ntfsmeta/fat.img.zst");
    let out = stdout(&run_ok(&["ls", p(&img), "disk:/", "-l"]));
    let json = stdout(&run_ok(&["--format", "json", "ls", p(&img), "disk:/"]));
    let text = std::fs::read_to_string(flr_testdata::testdata_dir().join("ntfsmeta/fat-attrs.txt"))
        .unwrap();
    let mut n = 0;
    for line in text.lines() {
        let (flags, path) = line.split_once("::/").unwrap();
        let bit = |c: char, b: u32| if flags.contains(c) { b } else { 0 };
        let attrs = bit('R', 1) | bit('H', 2) | bit('S', 4) | bit('A', 0x20);
        let kind = if path.contains('.') { '-' } else { 'd' };
        let want = format!("{kind}{}", letters(attrs));
        let row = out
            .lines()
            .find(|l| l.split_whitespace().last() == Some(path))
            .unwrap_or_else(|| panic!("{path} not listed: {out}"));
        assert_eq!(row.split_whitespace().next(), Some(want.as_str()), "{path}");
        let rec: serde_json::Value = json
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["path"] == format!("/{path}"))
            .unwrap();
        let dir_bit = if kind == 'd' { 0x10 } else { 0 };
        assert_eq!(
            hex32(rec["windows"]["attributes"].as_str().unwrap()),
            attrs | dir_bit,
            "{path}"
        );
        n += 1;
    }
    assert_eq!(n, 7);
}

/// A Windows-made NTFS volume (corpus: dissect.ntfs's test image): every
/// object's descriptor parses, and the owner of the Recycle Bin folder
/// Windows made for a user is that user, whose SID Windows wrote as the
/// folder's name (the oracle: Windows itself, not flr).
#[test]
fn windows_made_ntfs_descriptors() {
    let Some((unpacked, _)) = flr_testdata::corpus("windows_made_ntfs_descriptors") else {
        return;
    };
    let img = unpacked.join("ntfs/dissect-ntfs/ntfs.bin");
    let o = run_ok(&["--format", "json", "ls", p(&img), "disk:/", "-R"]);
    assert!(
        !stderr(&o).contains("Windows metadata not read"),
        "{}",
        stderr(&o)
    );
    let mut bins = 0;
    let mut n = 0;
    for line in stdout(&o).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let w = &v["windows"];
        let sddl = w["sddl"]
            .as_str()
            .unwrap_or_else(|| panic!("no SDDL: {line}"));
        assert!(sddl.starts_with("O:") && sddl.contains("D:"), "{line}");
        n += 1;
        let path = v["path"].as_str().unwrap();
        if let Some(sid) = path.strip_prefix("/$RECYCLE.BIN/") {
            if !sid.contains('/') {
                assert!(sid.starts_with("S-1-5-21-"), "{path}");
                assert_eq!(w["owner"], sid, "{line}");
                bins += 1;
            }
        }
    }
    assert!(n > 100 && bins == 1, "{n} objects, {bins} recycle bins");
}

/// `flr mount` shows each named stream that fits an xattr value (64 KiB)
/// as the read-only xattr `user.ntfs.stream.NAME`, the bytes gen.sh wrote
/// (streams.tsv); the larger ones are left out (cat reads them).
#[test]
fn mount_shows_streams_as_xattrs() {
    if !flr_testdata::have_tool("getfattr") {
        flr_testdata::loud(
            "SKIPPED mount_shows_streams_as_xattrs: no getfattr (Debian package attr)",
        );
        return;
    }
    if !crate::mount::fuse_available("mount_shows_streams_as_xattrs") {
        return;
    }
    let m = crate::mount::Mount::new(&img(), &["--volume", "disk"]);
    let (mut shown, mut left_out) = (0, 0);
    for s in &streams() {
        let name = format!("user.ntfs.stream.{}", s.name);
        let file = m.path().join(&s.path);
        let g = std::process::Command::new("getfattr")
            .args(["--only-values", "-n", &name, p(&file)])
            .output()
            .unwrap();
        if s.size > 64 << 10 {
            assert!(!g.status.success(), "{name} is too large for an xattr");
            left_out += 1;
            continue;
        }
        check_stream_value(s, &file, &g);
        shown += 1;
    }
    assert!(
        shown >= 3 && left_out >= 1,
        "{shown} shown, {left_out} left out"
    );
    let o = std::process::Command::new("setfattr")
        .args(["-n", "user.ntfs.stream.new", "-v", "1"])
        .arg(m.path().join("ads.txt"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "a write went through");
}

/// `verify --manifest` compares the Windows metadata a manifest records:
/// the image against its own manifest is ok; the same manifest with one
/// object's SDDL and another's attribute bits edited (as if the volume had
/// changed) names exactly those fields; `verify --write-manifest` records
/// the same `windows` objects as `manifest`.
#[test]
fn verify_compares_windows_metadata() {
    let img = img();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.json");
    let m = run_ok(&["manifest", p(&img)]);
    std::fs::write(&base, &m.stdout).unwrap();
    let written = dir.path().join("written.json");
    let report = dir.path().join("r.json");
    run_ok(&[
        "verify",
        p(&img),
        "--manifest",
        p(&base),
        "--write-manifest",
        p(&written),
        "--json",
        p(&report),
    ]);
    let doc = |path: &std::path::Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let r = doc(&report);
    assert_eq!(r["status"], "ok", "{r}");
    let windows = |d: &serde_json::Value| -> Vec<(String, serde_json::Value)> {
        d["volumes"][0]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["path"].as_str().unwrap().to_string(),
                    e["windows"].clone(),
                )
            })
            .collect()
    };
    let want = windows(&doc(&base));
    assert!(want.iter().filter(|(_, w)| w["sddl"].is_string()).count() >= 5);
    assert_eq!(windows(&doc(&written)), want);

    // Edit two entries of the manifest.
    let (sd_path, attr_path) = ("/ads.txt", "/folder");
    let mut edited = doc(&base);
    for e in edited["volumes"][0]["entries"].as_array_mut().unwrap() {
        if e["path"] == sd_path {
            e["windows"]["sddl"] = "O:SYG:SYD:(A;;FA;;;WD)".into();
        }
        if e["path"] == attr_path {
            e["windows"]["attributes"] = "0x00000016".into();
        }
    }
    std::fs::write(&base, serde_json::to_vec(&edited).unwrap()).unwrap();
    let out = run(&[
        "verify",
        p(&img),
        "--manifest",
        p(&base),
        "--json",
        p(&report),
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let r = doc(&report);
    let mut changed: Vec<(String, serde_json::Value)> = r["volumes"][0]["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["path"].as_str().unwrap().to_string(), c["fields"].clone()))
        .collect();
    changed.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        changed,
        vec![
            (sd_path.to_string(), serde_json::json!(["sddl"])),
            (attr_path.to_string(), serde_json::json!(["attributes"])),
        ],
        "{r}"
    );
}
