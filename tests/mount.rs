//! `flr mount` through the kernel: every committed fixture is mounted and
//! checked with ordinary tools (`find`, `stat`, `sha256sum`, `cp -a`)
//! against the manifests its generator computed from the source trees;
//! writes fail with EROFS; a signal or `fusermount3 -u` unmounts and leaves
//! no mount and no process behind. Needs /dev/fuse (and root or
//! fusermount3): skipped loudly elsewhere.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

const EROFS: i32 = 30;

/// Whether FUSE mounts can be made here; prints the loud skip line if not.
pub(crate) fn fuse_available(test: &str) -> bool {
    let root = is_root();
    let ok = Path::new("/dev/fuse").exists()
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .is_ok()
        && (root || flr_testdata::have_tool("fusermount3"));
    if !ok {
        flr_testdata::loud(&format!(
            "SKIPPED {test}: no usable /dev/fuse (or fusermount3); .ci/run runs this tier"
        ));
    }
    ok
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn is_mounted(dir: &Path) -> bool {
    let want = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .any(|m| Path::new(&m.replace("\\040", " ")) == want)
}

/// A foreground `flr mount`; dropping it unmounts with SIGTERM and checks
/// that the mount and the process are gone.
pub(crate) struct Mount {
    child: Option<Child>,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) stderr: String,
    later: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Mount {
    /// Mounts `image` with extra arguments (`--volume`, `--key`…) and waits
    /// until the kernel shows the mount.
    pub(crate) fn new(image: &Path, extra: &[&str]) -> Mount {
        Mount::source(p(image), extra)
    }

    /// As [`Mount::new`] for any source argument (a blob URL, a connection string).
    pub(crate) fn source(image: &str, extra: &[&str]) -> Mount {
        Mount::with(flr(), image, extra)
    }

    /// As [`Mount::source`], started from `cmd` (the flr binary with its
    /// configuration and environment already set).
    pub(crate) fn with(mut cmd: std::process::Command, image: &str, extra: &[&str]) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["mount"];
        args.extend_from_slice(extra);
        args.extend([image, p(dir.path())]);
        let mut child = cmd
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start flr mount");
        // Its stderr: the lines before "mounted", then the rest in a thread.
        let err = child.stderr.take().unwrap();
        let mut reader = std::io::BufReader::new(err);
        let mut stderr = String::new();
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).unwrap_or(0);
            stderr.push_str(&line);
            if n == 0 {
                let st = child.wait().unwrap();
                panic!("flr mount {args:?} ended before mounting ({st}): {stderr}");
            }
            if line.starts_with("flr: mounted ") {
                break;
            }
        }
        let later = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = later.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
            let rest = sink.lock().unwrap();
            if !rest.is_empty() {
                eprintln!("flr mount stderr: {rest}");
            }
        });
        assert!(is_mounted(dir.path()), "not in /proc/mounts: {stderr}");
        Mount {
            child: Some(child),
            dir,
            stderr,
            later,
        }
    }

    /// What the mount wrote on stderr after "mounted", once it holds every
    /// one of `lines` (or after 10 s: the lines reach the pipe before the
    /// kernel's answer, but the thread reading it may not have run yet).
    pub(crate) fn stderr_since_mounted(&self, lines: &[&str]) -> String {
        let t = Instant::now();
        loop {
            let text = self.later.lock().unwrap().clone();
            if lines.iter().all(|l| text.contains(l)) || t.elapsed() > Duration::from_secs(10) {
                return text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Unmounts with `signal` and checks that everything is gone.
    pub(crate) fn stop(&mut self, signal: &str) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let st = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let t = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "flr mount did not end after {signal}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(0), "flr mount after {signal}: {status}");
        assert!(!is_mounted(self.path()), "still mounted after {signal}");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(mut c) = self.child.take() {
                let _ = Command::new("kill")
                    .args(["-TERM", &c.id().to_string()])
                    .status();
                let _ = c.wait();
            }
            return;
        }
        self.stop("-TERM");
    }
}

fn sh(cmd: &str, args: &[&str], cwd: &Path) -> std::process::Output {
    Command::new(cmd)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

/// `find DIR -mindepth 1 -printf '%y\t%P\t%s\t%l\n'`: kind, path, size, link target.
/// With `may_fail`, find may report folders it cannot list (unreadable ones).
fn find_listing(dir: &Path, may_fail: bool) -> BTreeMap<String, (char, u64, String)> {
    let out = sh(
        "find",
        &[".", "-mindepth", "1", "-printf", "%y\\t%P\\t%s\\t%l\\n"],
        dir,
    );
    assert!(may_fail || out.status.success(), "find: {}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| {
            let c: Vec<&str> = l.splitn(4, '\t').collect();
            (
                c[1].to_string(),
                (
                    c[0].chars().next().unwrap(),
                    c[2].parse().unwrap(),
                    c[3].to_string(),
                ),
            )
        })
        .collect()
}

/// `sha256sum` of files under `dir`, by path.
fn sha256sum(dir: &Path, files: &[&str]) -> BTreeMap<String, String> {
    if files.is_empty() {
        return BTreeMap::new();
    }
    let mut args = vec!["--"];
    args.extend_from_slice(files);
    let out = sh("sha256sum", &args, dir);
    assert!(out.status.success(), "sha256sum: {}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| {
            let (h, f) = l.split_once("  ").unwrap();
            (f.to_string(), h.to_string())
        })
        .collect()
}

fn read_unreadable(rel: &str) -> Vec<String> {
    std::fs::read_to_string(flr_testdata::testdata_dir().join(rel))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect()
}

/// Checks the tree at `dir` against `manifest` with find and sha256sum;
/// `unreadable` files must be listed but fail to read; `allowed_extra`
/// names may be present without being in the manifest (lost+found).
pub(crate) fn check_against(dir: &Path, manifest_rel: &str, unreadable: &[String]) {
    let want = manifest(manifest_rel);
    let got = find_listing(dir, !unreadable.is_empty());
    let extra: Vec<&String> = got
        .keys()
        .filter(|k| {
            let dir_of_listed = got.get(*k).is_some_and(|e| e.0 == 'd')
                && want.iter().any(|w| w.path.starts_with(&format!("{k}/")));
            !want.iter().any(|w| &w.path == *k)
                && !dir_of_listed
                && !k.starts_with("lost+found")
                && !unreadable.iter().any(|u| u == *k)
        })
        .collect();
    assert!(
        extra.is_empty(),
        "{manifest_rel}: not in the manifest: {extra:?}"
    );
    let mut files = Vec::new();
    for w in &want {
        // Inside a folder that cannot be listed (fscrypt): not shown.
        if unreadable
            .iter()
            .any(|u| w.path.starts_with(&format!("{u}/")))
        {
            assert!(!got.contains_key(&w.path), "{}: listed", w.path);
            continue;
        }
        let Some((kind, size, target)) = got.get(&w.path) else {
            panic!("{manifest_rel}: {} missing from the mount", w.path);
        };
        let kind = match kind {
            'f' => 'f',
            'd' => 'd',
            'l' => 'l',
            other => panic!("{}: find type {other}", w.path),
        };
        if w.kind == 'p' {
            // A FIFO (or other special file) is shown as an empty file that
            // cannot be opened: a FIFO node would block its readers.
            assert_eq!((kind, *size), ('f', 0), "{}: special", w.path);
            assert!(!sh("cat", &["--", &w.path], dir).status.success());
            continue;
        }
        assert_eq!(kind, w.kind, "{}: type", w.path);
        match w.kind {
            'f' => {
                assert_eq!(*size, w.size, "{}: size", w.path);
                if !unreadable.contains(&w.path) {
                    files.push(w.path.as_str());
                }
            }
            'l' => {
                assert_eq!(target.len() as u64, w.size, "{}: link length", w.path);
                assert_eq!(
                    sha256_hex(target.as_bytes()),
                    w.sha256,
                    "{}: target",
                    w.path
                );
            }
            _ => {}
        }
    }
    let sums = sha256sum(dir, &files);
    for w in want.iter().filter(|w| files.contains(&w.path.as_str())) {
        assert_eq!(sums.get(&w.path), Some(&w.sha256), "{}: sha256sum", w.path);
    }
    for u in unreadable {
        let out = sh("cat", &["--", u], dir);
        if got.get(u).is_some_and(|e| e.0 == 'f') {
            assert!(!out.status.success(), "{u}: unreadable file was read");
        }
    }
}

/// Every write-like operation fails with EROFS.
fn check_read_only(dir: &Path, file: &str) {
    let f = dir.join(file);
    let new = dir.join("flr-new-file");
    let errno = |r: std::io::Result<()>| r.err().and_then(|e| e.raw_os_error());
    let ow = |p: &Path, create: bool| {
        std::fs::OpenOptions::new()
            .write(true)
            .create(create)
            .open(p)
            .map(|_| ())
    };
    assert_eq!(errno(ow(&f, false)), Some(EROFS), "open for write");
    assert_eq!(errno(ow(&new, true)), Some(EROFS), "create");
    assert_eq!(
        errno(std::fs::create_dir(dir.join("d"))),
        Some(EROFS),
        "mkdir"
    );
    assert_eq!(errno(std::fs::remove_file(&f)), Some(EROFS), "unlink");
    assert_eq!(
        errno(std::fs::rename(&f, dir.join("renamed"))),
        Some(EROFS),
        "rename"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        errno(std::fs::set_permissions(
            &f,
            std::fs::Permissions::from_mode(0o777)
        )),
        Some(EROFS),
        "chmod"
    );
    assert_eq!(
        errno(std::os::unix::fs::symlink("x", dir.join("link"))),
        Some(EROFS),
        "symlink"
    );
    let out = sh("truncate", &["-s", "0", "--", file], dir);
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
    let out = sh("touch", &["--", file], dir);
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
}

/// `cp -a` of the whole mount: the copy has the same bytes, modes and mtimes.
fn check_cp_a(dir: &Path, sample: &str, mode: u32, mtime: i64) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dest = tempfile::tempdir().unwrap();
    let out = sh("cp", &["-a", ".", p(dest.path())], dir);
    assert!(out.status.success(), "cp -a: {}", stderr(&out));
    let a = std::fs::read(dir.join(sample)).unwrap();
    let b = std::fs::read(dest.path().join(sample)).unwrap();
    assert_eq!(a, b);
    let m = std::fs::metadata(dest.path().join(sample)).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, mode, "{sample}: mode");
    assert_eq!(m.mtime(), mtime, "{sample}: mtime");
}

#[test]
fn demo_images_mount_with_every_volume_as_a_folder() {
    if !fuse_available("demo_images_mount_with_every_volume_as_a_folder") {
        return;
    }
    for (img, vols) in [
        (
            flr_testdata::testdata_dir().join("demo.vhd"),
            [
                ("p1", "disks/demo.p1.tsv"),
                ("p2", "disks/demo.p2.tsv"),
                ("p3", "disks/demo.p3.tsv"),
            ],
        ),
        (
            fixture("disks/demo.vhdx.zst"),
            [
                ("p1", "disks/demo.p1.tsv"),
                ("p2", "disks/demo.p2.tsv"),
                ("p3", "disks/demo.p3.tsv"),
            ],
        ),
        (
            fixture("disks/mbr.img.zst"),
            [
                ("p1", "disks/demo.p1.tsv"),
                ("p5", "disks/demo.p2.tsv"),
                ("p6", "disks/demo.p3.tsv"),
            ],
        ),
    ] {
        let mut m = Mount::new(&img, &[]);
        let mut top: Vec<String> = std::fs::read_dir(m.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        top.sort();
        assert_eq!(top, vols.iter().map(|v| v.0).collect::<Vec<_>>());
        for (id, man) in vols {
            check_against(&m.path().join(id), man, &[]);
        }
        let ext = m.path().join(vols[1].0);
        // Unix mode and mtime from ext4, through stat(1).
        let out = sh("stat", &["-c", "%a %Y %s", "home/alice/notes.txt"], &ext);
        assert_eq!(stdout(&out).trim(), "600 1700000000 45", "{}", stderr(&out));
        check_read_only(&ext, "etc/hosts");
        check_cp_a(&ext, "home/alice/notes.txt", 0o600, 1_700_000_000);
        m.stop("-INT");
    }
}

#[test]
fn filesystem_fixtures_mount_alone_with_volume() {
    if !fuse_available("filesystem_fixtures_mount_alone_with_volume") {
        return;
    }
    for (img, man, unreadable) in [
        ("ext4/ext4.img.zst", "ext4/ext4.manifest.tsv", None),
        (
            "ext4/ext4-crypt.img.zst",
            "ext4/ext4-crypt.manifest.tsv",
            Some("ext4/ext4-crypt.unreadable.tsv"),
        ),
        (
            "ext4/ext4-journal.img.zst",
            "ext4/ext4-journal.manifest.tsv",
            None,
        ),
        ("fat/fat12.img.zst", "fat/fat12.img.manifest.tsv", None),
        ("fat/fat32.img.zst", "fat/fat32.img.manifest.tsv", None),
        (
            "ntfs/ntfs.img.zst",
            "ntfs/ntfs.manifest.tsv",
            Some("ntfs/ntfs.unreadable.tsv"),
        ),
    ] {
        let img = fixture(img);
        let m = Mount::new(&img, &["--volume", "disk"]);
        let unreadable = unreadable.map(read_unreadable).unwrap_or_default();
        check_against(m.path(), man, &unreadable);
    }
    // ext4 modes, owners and nanosecond mtimes, as stat(1) shows them.
    let img = fixture("ext4/ext4.img.zst");
    let m = Mount::new(&img, &["--volume", "disk"]);
    let attrs =
        std::fs::read_to_string(flr_testdata::testdata_dir().join("ext4/ext4.attrs.tsv")).unwrap();
    let mut checked = 0;
    for l in attrs.lines().filter(|l| !l.starts_with('#')).take(40) {
        let c: Vec<&str> = l.split('\t').collect();
        let out = sh("stat", &["-c", "%a\t%u\t%g\t%.9Y", "--", c[0]], m.path());
        let got = stdout(&out);
        let want = format!("{}\t{}\t{}\t{}", c[1], c[2], c[3], c[4]);
        // Symlinks' own modes are not kept by Linux (always 777).
        if got.trim().split('\t').next() == Some("777") && c[1] != "777" {
            continue;
        }
        assert_eq!(got.trim(), want, "{}", c[0]);
        checked += 1;
    }
    assert!(checked > 10);
}

#[test]
fn luks_volumes_mount_with_their_keys_and_locked_ones_are_absent() {
    if !fuse_available("luks_volumes_mount_with_their_keys_and_locked_ones_are_absent") {
        return;
    }
    let td = flr_testdata::testdata_dir().join("luks");
    let img = fixture("luks/luks1-qemu-xts.img.zst");
    let key = format!("disk=passphrase-file:{}", p(&td.join("pass-luks1.bin")));
    let m = Mount::new(&img, &["--key", &key, "--volume", "disk"]);
    let files: Vec<_> = manifest("luks/files.tsv");
    let want: Vec<&str> = files.iter().map(|e| e.path.as_str()).collect();
    let sums = sha256sum(m.path(), &want);
    for e in &files {
        assert_eq!(sums.get(&e.path), Some(&e.sha256), "{}", e.path);
    }
    drop(m);

    // The ADE OS disk: without its key the root is absent and stderr says
    // why; with it, all three volumes are folders.
    let img = fixture("luks/ade-os.vhd.zst");
    let m = Mount::new(&img, &[]);
    assert!(m.stderr.contains("p1 not shown (blocked"), "{}", m.stderr);
    assert!(!m.path().join("p1").exists());
    check_against(&m.path().join("p2"), "luks/ade-boot.tsv", &[]);
    drop(m);
    let key = format!("p1=passphrase-file:{}", p(&td.join("pass-ade.bin")));
    let m = Mount::new(&img, &["--key", &key]);
    let root = m.path().join("p1");
    let files = manifest("luks/ade-root.tsv");
    let want: Vec<&str> = files.iter().map(|e| e.path.as_str()).collect();
    let sums = sha256sum(&root, &want);
    for e in &files {
        assert_eq!(sums.get(&e.path), Some(&e.sha256), "{}", e.path);
    }
    // Asking for the locked volume by id without a key: an error, no mount.
    drop(m);
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["mount", "--volume", "p1", p(&img), p(dir.path())]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(!is_mounted(dir.path()));
}

#[test]
fn daemon_detaches_and_external_unmount_ends_it() {
    if !fuse_available("daemon_detaches_and_external_unmount_ends_it") {
        return;
    }
    let img = flr_testdata::testdata_dir().join("demo.vhd");
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    // output() waits for EOF on stdout and stderr: the daemon must not keep them.
    let out = run(&["mount", "--daemon", p(&img), p(dir.path())]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(t.elapsed() < Duration::from_secs(30));
    let pid: u32 = stderr(&out)
        .split("(pid ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {}", stderr(&out)));
    assert!(is_mounted(dir.path()));
    let data = std::fs::read(dir.path().join("p2/etc/hosts")).unwrap();
    assert_eq!(data.len(), 50);
    // A signal from the terminal's process group does not reach it; an
    // unmount by another program ends it.
    let out = if flr_testdata::have_tool("fusermount3") {
        sh("fusermount3", &["-u", p(dir.path())], Path::new("/"))
    } else {
        sh("umount", &[p(dir.path())], Path::new("/"))
    };
    assert!(out.status.success(), "{}", stderr(&out));
    let t = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        // A zombie would mean nobody reaps it: the daemon's parent has exited,
        // so init does.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.contains(") Z ") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the daemon {pid} is still running after the unmount"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!is_mounted(dir.path()));

    // A mount point that is not a folder: a usage error, nothing mounted.
    let f = tempfile::NamedTempFile::new().unwrap();
    let out = run(&["mount", p(&img), p(f.path())]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// LVM logical volumes (ids `disk/datavg/LV`) nest as folders; a volume
/// group spanning two disks given with --with-disk.
#[test]
fn lvm_volumes_nest_as_folders() {
    if !fuse_available("lvm_volumes_nest_as_folders") {
        return;
    }
    let d1 = fixture("lvm/two-pv-1.img.zst");
    let d2 = fixture("lvm/two-pv-2.img.zst");
    let m = Mount::new(&d1, &["--with-disk", p(&d2)]);
    // The PV itself ("disk") holds no filesystem: no message for it.
    assert!(!m.stderr.contains("disk not shown"), "{}", m.stderr);
    let vg = m.path().join("disk/datavg");
    let mut lvs: Vec<String> = std::fs::read_dir(&vg)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    lvs.sort();
    assert_eq!(lvs, ["solo", "span", "stripe"]);
    for lv in ["solo", "span", "stripe"] {
        check_against(&vg.join(lv), &format!("lvm/{lv}.tsv"), &[]);
    }
}

/// `--allow-other`: another user can enter, and the image's modes are
/// enforced for them (default_permissions): a 0644 file reads, a 0600 one
/// owned by root does not.
#[test]
fn allow_other_lets_other_users_in_with_the_image_modes() {
    if !fuse_available("allow_other_lets_other_users_in_with_the_image_modes") {
        return;
    }
    if !is_root() || !flr_testdata::have_tool("setpriv") {
        flr_testdata::loud(
            "SKIPPED mount::allow_other_lets_other_users_in_with_the_image_modes: needs root and setpriv",
        );
        return;
    }
    let img = flr_testdata::testdata_dir().join("demo.vhd");
    let as_nobody = |m: &Mount, file: &str| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
            .arg(m.path().join(file))
            .output()
            .unwrap()
    };
    let m = Mount::new(&img, &["--allow-other"]);
    let out = as_nobody(&m, "p2/etc/hosts");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout.len(), 50);
    let out = as_nobody(&m, "p2/home/alice/notes.txt");
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    drop(m);
    // Without it, other users cannot enter at all.
    let m = Mount::new(&img, &[]);
    let out = as_nobody(&m, "p2/etc/hosts");
    assert!(!out.status.success());
}
