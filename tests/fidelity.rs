//! POSIX fidelity of restores, against the kernel: `testdata/fidelity/gen.sh`
//! filled ext4, XFS and Btrfs images through loop mounts with setfattr,
//! setfacl, chown, chmod, truncate/dd/fallocate and touch, and recorded
//! what the kernel shows (getfattr, getfacl, stat). Here `flr get
//! --preserve=all` restores each image onto this machine's disk and the same
//! tools read the restored tree back; `flr mount` is read with getfattr.
//! Needs root (owners, `trusted.*`) and attr/acl: skipped loudly without.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::util::*;

const FILESYSTEMS: [&str; 3] = ["ext4", "xfs", "btrfs"];

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Whether this test can run here; prints the loud skip line if not.
fn ready(test: &str, tools: &[&str]) -> bool {
    if !is_root() {
        flr_testdata::loud(&format!(
            "SKIPPED {test}: needs root (owners, trusted.* xattrs); .ci/run runs this tier"
        ));
        return false;
    }
    if let Some(t) = tools.iter().find(|t| !flr_testdata::have_tool(t)) {
        flr_testdata::loud(&format!(
            "SKIPPED {test}: {t} is missing (Debian packages attr, acl); .ci/run installs them"
        ));
        return false;
    }
    true
}

fn tool(cmd: &str, args: &[&str], cwd: &Path) -> String {
    let o = Command::new(cmd)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A getfattr/getfacl dump (`# file: PATH` blocks) as path → its sorted lines.
fn blocks(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut cur = None;
    for line in text.lines() {
        if let Some(f) = line.strip_prefix("# file: ") {
            cur = Some(f.to_string());
            out.entry(f.to_string()).or_default();
        } else if !line.is_empty() {
            if let Some(f) = &cur {
                out.get_mut(f).unwrap().push(line.to_string());
            }
        }
    }
    for v in out.values_mut() {
        v.sort();
    }
    // lost+found is made by mkfs, not by the generator.
    out.retain(|k, _| !k.starts_with("./lost+found"));
    out
}

/// `FS.stat` lines (or the same format run on the destination) by path.
fn stats(text: &str) -> BTreeMap<String, Vec<String>> {
    text.lines()
        .map(|l| {
            let f: Vec<String> = l.split('|').map(str::to_string).collect();
            (f[0].clone(), f)
        })
        .collect()
}

fn stat_dest(dest: &Path, paths: &[&String]) -> BTreeMap<String, Vec<String>> {
    let mut args = vec!["--format=%n|%f|%u|%g|%s|%b|%.9X|%.9Y|%.9W"];
    args.extend(paths.iter().map(|p| p.as_str()));
    stats(&tool("stat", &args, dest))
}

fn expected(rel: &str) -> String {
    std::fs::read_to_string(flr_testdata::testdata_dir().join("fidelity").join(rel)).unwrap()
}

/// A tmpfs mounted for one test: it takes every xattr the fixtures hold
/// (the root disk's ext4 keeps at most one block of them per file, less
/// than XFS's `many.txt` and `remote.txt`), ACLs and `trusted.*`.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn new() -> Tmpfs {
        let dir = tempfile::tempdir_in(flr_testdata::repo_root().join("target")).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount -t tmpfs failed");
        Tmpfs(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

fn restore(fs: &str, extra: &[&str]) -> (Tmpfs, std::process::Output) {
    let img = fixture(&format!("fidelity/{fs}.img.zst"));
    let dest = Tmpfs::new();
    let mut args = vec!["get", p(&img), "disk:/", "-o", p(dest.path())];
    args.extend_from_slice(extra);
    let out = run(&args);
    (dest, out)
}

#[test]
fn xattrs_acls_owners_and_times_restored() {
    if !ready(
        "xattrs_acls_owners_and_times_restored",
        &["getfattr", "getfacl", "stat"],
    ) {
        return;
    }
    for fs in FILESYSTEMS {
        let (dest, out) = restore(fs, &["--preserve=all", "--format", "json"]);
        assert!(out.status.success(), "{fs}: {}", stderr(&out));
        let sum: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(sum["not_preserved"], 0, "{fs}: {}", stderr(&out));
        let d = dest.path();

        // Every xattr, named and valued as the kernel showed them on the
        // source; XFS's kernel also lists its stored form of an ACL as
        // trusted.SGI_ACL_*, which a restore leaves to the destination.
        let mut want = blocks(&expected(&format!("{fs}.getfattr")));
        for v in want.values_mut() {
            v.retain(|l| !l.starts_with("trusted.SGI_ACL_"));
        }
        want.retain(|_, v| !v.is_empty());
        let got = blocks(&tool(
            "getfattr",
            &["-R", "-d", "-m-", "--absolute-names", "-e", "hex", "."],
            d,
        ));
        assert!(want.len() >= 5, "{fs}: the generator recorded too little");
        assert_eq!(got, want, "{fs}: getfattr of the restored tree");

        // ACLs, owners, setuid/setgid flags and permission bits, as getfacl shows them.
        let want = blocks(&expected(&format!("{fs}.getfacl")));
        let got = blocks(&tool("getfacl", &["-R", "-n", "-p", "."], d));
        assert_eq!(got, want, "{fs}: getfacl of the restored tree");

        // Type and mode, owner, size, atime (files) and mtime.
        let want = stats(&expected(&format!("{fs}.stat")));
        let got = stat_dest(d, &want.keys().collect::<Vec<_>>());
        for (path, w) in &want {
            let g = &got[path];
            assert_eq!(g[1..4], w[1..4], "{fs}:{path}: mode, uid, gid");
            let file = w[1].starts_with('8');
            if file {
                assert_eq!(g[4], w[4], "{fs}:{path}: size");
            }
            assert_eq!(g[7], w[7], "{fs}:{path}: mtime");
            if file {
                assert_eq!(g[6], w[6], "{fs}:{path}: atime");
            }
        }
    }
}

#[test]
fn sparse_files_stay_sparse() {
    if !ready("sparse_files_stay_sparse", &["stat"]) {
        return;
    }
    for fs in FILESYSTEMS {
        let (dest, out) = restore(fs, &[]);
        assert!(out.status.success(), "{fs}: {}", stderr(&out));
        let want = stats(&expected(&format!("{fs}.stat")));
        let sparse = "./sparse.bin".to_string();
        let pre = "./prealloc.bin".to_string();
        let got = stat_dest(dest.path(), &[&sparse, &pre]);
        let blocks =
            |m: &BTreeMap<String, Vec<String>>, k: &str| -> u64 { m[k][5].parse().unwrap() };
        // 8 KiB of data in 8 MiB: the source holds 16 512-byte blocks; the
        // restored file about as many (never the 16384 a dense copy takes).
        let (s, g) = (blocks(&want, &sparse), blocks(&got, &sparse));
        assert!(
            g <= s + 8,
            "{fs}: sparse.bin takes {g} blocks, the source {s}"
        );
        // fallocate'd space never written is a hole in the copy.
        let (s, g) = (blocks(&want, &pre), blocks(&got, &pre));
        assert!(
            g <= 16 && g < s,
            "{fs}: prealloc.bin takes {g} blocks, the source {s}"
        );
        // And the bytes are the same.
        let img = fixture(&format!("fidelity/{fs}.img.zst"));
        let cat = run_ok(&["cat", p(&img), "disk:/sparse.bin"]);
        let restored = std::fs::read(dest.path().join("sparse.bin")).unwrap();
        assert_eq!(cat.stdout.len(), 8 << 20);
        assert!(cat.stdout == restored, "{fs}: sparse.bin bytes differ");
    }
}

#[test]
fn refused_attributes_are_reported() {
    if !ready(
        "refused_attributes_are_reported",
        &["getfattr", "stat", "setpriv"],
    ) {
        return;
    }
    // As nobody, trusted.* and owners cannot be set: reported, not fatal,
    // and setuid/setgid are not minted for the restoring user.
    let img = fixture("fidelity/ext4.img.zst");
    let base = flr_testdata::repo_root().join("target");
    let dest = tempfile::tempdir_in(base).unwrap();
    let st = Command::new("chown")
        .args(["65534:65534", p(dest.path())])
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_flr"))
        .args(["get", p(&img), "disk:/", "-o", p(dest.path())])
        .args(["--preserve=all", "--format", "json"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let sum: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(sum["not_preserved"].as_u64().unwrap() >= 4, "{sum} {err}");
    let line = |path: &str| {
        err.lines()
            .find(|l| l.starts_with(&format!("flr: disk:{path}: warning: not preserved: ")))
            .unwrap_or_else(|| panic!("no warning for {path}: {err}"))
            .to_string()
    };
    assert!(
        line("/plain.txt").contains("xattr trusted.t1: Operation not permitted"),
        "{err}"
    );
    assert!(
        line("/suid").contains("owner 1001:1002: Operation not permitted"),
        "{err}"
    );
    // The user.* ones it may set are there.
    let x = tool(
        "getfattr",
        &["-d", "-m", "user", "-e", "hex", "plain.txt"],
        dest.path(),
    );
    assert!(x.contains("user.bin=0x00ff10e2"), "{x}");
    let m = tool("stat", &["--format=%a", "suid", "sgid"], dest.path());
    assert_eq!(m, "755\n755\n", "setuid/setgid without the owner");
}

#[test]
fn mount_shows_xattrs() {
    if !ready("mount_shows_xattrs", &["getfattr"])
        || !crate::mount::fuse_available("mount_shows_xattrs")
    {
        return;
    }
    for fs in FILESYSTEMS {
        let img = fixture(&format!("fidelity/{fs}.img.zst"));
        let m = crate::mount::Mount::new(&img, &["--volume", "disk"]);
        let want = blocks(&expected(&format!("{fs}.getfattr")));
        let mut checked = 0;
        for (path, lines) in &want {
            // The kernel keeps POSIX ACL names for itself on FUSE without
            // ACL support; every other name is read from flr.
            let lines: Vec<&String> = lines.iter().filter(|l| !l.starts_with("system.")).collect();
            if lines.is_empty() {
                continue;
            }
            let got = blocks(&tool(
                "getfattr",
                &["-d", "-m-", "--absolute-names", "-e", "hex", path],
                m.path(),
            ));
            let got: Vec<&String> = got[path]
                .iter()
                .filter(|l| !l.starts_with("system."))
                .collect();
            assert_eq!(got, lines, "{fs}:{path} through the mount");
            checked += 1;
        }
        assert!(checked >= 2, "{fs}: only {checked} files with xattrs");
        // Writes stay refused.
        let o = Command::new("setfattr")
            .args(["-n", "user.new", "-v", "1"])
            .arg(m.path().join("plain.txt"))
            .output()
            .unwrap();
        assert!(!o.status.success());
    }
}

#[test]
fn ls_shows_access_change_and_birth_times() {
    if !flr_testdata::have_tool("date") {
        flr_testdata::loud("SKIPPED ls_shows_access_change_and_birth_times: no date(1)");
        return;
    }
    // `date -u` formats the generator's stat figures (epoch seconds).
    let utc = |secs: &str| {
        let whole = secs.split('.').next().unwrap();
        tool(
            "date",
            &["-u", "-d", &format!("@{whole}"), "+%F %T"],
            Path::new("/"),
        )
        .trim()
        .to_string()
    };
    for fs in FILESYSTEMS {
        let img = fixture(&format!("fidelity/{fs}.img.zst"));
        let want = stats(&expected(&format!("{fs}.stat")));
        let w = &want["./times.txt"];
        let out = run_ok(&["--format", "json", "ls", p(&img), "disk:/times.txt"]);
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j["atime"], "1999-12-31 23:59:58", "{fs}: {j}");
        assert_eq!(j["mtime"], "2001-02-03 04:05:06", "{fs}: {j}");
        assert_eq!(j["atime"], utc(&w[6]), "{fs}: {j}");
        assert_eq!(j["btime"], utc(&w[8]), "{fs}: {j}");
        assert!(j["ctime"].is_string(), "{fs}: {j}");
        let long = stdout(&run_ok(&["ls", "-l", p(&img), "disk:/times.txt"]));
        assert!(
            long.contains(&format!("2001-02-03 04:05:06 {} times.txt", utc(&w[8]))),
            "{long}"
        );
    }
}

#[test]
fn cat_into_a_file_skips_holes_and_into_a_pipe_writes_zeros() {
    if !flr_testdata::have_tool("stat") || !flr_testdata::have_tool("sh") {
        flr_testdata::loud("SKIPPED cat_into_a_file_skips_holes…: no stat or sh");
        return;
    }
    let img = fixture("fidelity/ext4.img.zst");
    let dir = tempfile::tempdir_in(flr_testdata::repo_root().join("target")).unwrap();
    let flr = env!("CARGO_BIN_EXE_flr");
    let sh = |script: &str| {
        let o = Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("FLR", flr)
            .env("IMG", &img)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    // Into a file: sparse, as the source (16 blocks of 512 bytes).
    sh(r#""$FLR" cat "$IMG" disk:/sparse.bin > out.bin"#);
    let blocks: u64 = sh("stat --format=%b out.bin").parse().unwrap();
    assert!(blocks <= 24, "cat > file took {blocks} blocks");
    // After something already written, and appended (>>: every byte).
    sh(r#"{ printf head; "$FLR" cat "$IMG" disk:/sparse.bin; printf tail; } > mid.bin"#);
    sh(
        r#"printf head > app.bin; "$FLR" cat "$IMG" disk:/sparse.bin >> app.bin; printf tail >> app.bin"#,
    );
    // Into a pipe: every zero is written.
    let n = sh(r#""$FLR" cat "$IMG" disk:/sparse.bin | wc -c"#);
    assert_eq!(n, (8u64 << 20).to_string());
    let data = std::fs::read(dir.path().join("out.bin")).unwrap();
    assert_eq!(data.len(), 8 << 20);
    let mut framed = b"head".to_vec();
    framed.extend_from_slice(&data);
    framed.extend_from_slice(b"tail");
    for f in ["mid.bin", "app.bin"] {
        assert!(std::fs::read(dir.path().join(f)).unwrap() == framed, "{f}");
    }
    // The data blocks (at 1 MiB and 5 MiB) are really there.
    assert!(data[1 << 20..(1 << 20) + 4096].iter().any(|&b| b != 0));
    assert!(data[5 << 20..(5 << 20) + 4096].iter().any(|&b| b != 0));
}
