//! Resource limits on hostile sizes, with images built at test time (never
//! committed): a 16 TiB virtual disk with almost nothing allocated (VHDX
//! from `qemu-img`, raw sparse file with a GPT from `sgdisk` and a small
//! ext4 from `mkfs.ext4 -d` placed in its partition) opens at once with
//! bounded memory, and a folder of a million entries (made by the kernel
//! on a loop mount) lists in streaming fashion. Peak memory is the child's
//! maximum resident set as GNU time reports it (`%M`, from wait4). Each tier
//! prints a SKIPPED line when its tools (or root for the loop mount) are
//! missing; .ci/run installs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::util::*;

/// Peak memory allowed for opening, probing and listing (KiB).
const RSS_CAP_KIB: u64 = 64 * 1024;

/// The virtual size the brief names: 16 TiB.
const SIXTEEN_TIB: u64 = 16 << 40;

fn tools(test: &str, names: &[&str]) -> bool {
    for n in names {
        if !flr_testdata::have_tool(n) {
            flr_testdata::loud(&format!("SKIPPED {test}: needs {n}; .ci/run installs it"));
            return false;
        }
    }
    if !Path::new("/usr/bin/time").exists() {
        flr_testdata::loud(&format!(
            "SKIPPED {test}: needs GNU time (/usr/bin/time, Debian package time); .ci/run installs it"
        ));
        return false;
    }
    true
}

fn sh(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs flr under GNU time: its output, its peak resident set (KiB) and
/// the wall time.
fn measured(args: &[&str]) -> (Output, u64, Duration) {
    let rss = tempfile::NamedTempFile::new().unwrap();
    let t = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o", p(rss.path()), env!("CARGO_BIN_EXE_flr")])
        .args(args)
        .output()
        .expect("run flr under time");
    let took = t.elapsed();
    assert_ne!(
        out.status.code(),
        Some(101),
        "flr panicked: {}",
        stderr(&out)
    );
    let kib = std::fs::read_to_string(rss.path())
        .unwrap()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("GNU time's %M");
    (out, kib, took)
}

fn check_bounded(what: &str, out: &Output, kib: u64, took: Duration) {
    assert!(out.status.success(), "{what}: {}", stderr(out));
    eprintln!("{what}: peak RSS {kib} KiB, {:.2} s", took.as_secs_f64());
    assert!(
        kib < RSS_CAP_KIB,
        "{what}: peak RSS {kib} KiB (cap {RSS_CAP_KIB} KiB)"
    );
    // A sanity bound only (the machine may be busy): an eager read of the
    // virtual size would take hours, not a minute.
    assert!(took < Duration::from_secs(60), "{what}: took {took:?}");
}

#[test]
fn sixteen_tib_vhdx_opens_at_once_with_bounded_memory() {
    let test = "sixteen_tib_vhdx_opens_at_once_with_bounded_memory";
    if !tools(test, &["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("empty16t.vhdx");
    sh(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vhdx",
            "-o",
            "subformat=dynamic",
            p(&img),
            "16T",
        ],
    );
    // Almost nothing allocated: the file holds headers and the BAT only.
    let file_len = std::fs::metadata(&img).unwrap().len();
    assert!(file_len < 64 << 20, "{file_len}");
    let (out, kib, took) = measured(&["probe", "--json", p(&img)]);
    check_bounded("probe of an empty 16 TiB VHDX", &out, kib, took);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        stdout(&out).contains(&SIXTEEN_TIB.to_string()),
        "virtual size not reported: {v}"
    );
}

/// A folder for a 16 TiB sparse file: tmpfs takes it (ext4 stops just below 16 TiB).
fn sparse_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

#[test]
fn sixteen_tib_gpt_disk_with_a_small_ext4_lists_with_bounded_memory() {
    let test = "sixteen_tib_gpt_disk_with_a_small_ext4_lists_with_bounded_memory";
    if !tools(test, &["qemu-img", "sgdisk", "mkfs.ext4", "truncate", "dd"]) {
        return;
    }
    let dir = sparse_dir();
    let raw = dir.path().join("disk16t.raw");
    let st = Command::new("truncate")
        .args(["-s", "16T", p(&raw)])
        .status()
        .unwrap();
    if !st.success() {
        flr_testdata::loud(&format!(
            "SKIPPED {test}: no filesystem here holds a 16 TiB sparse file"
        ));
        return;
    }
    // GPT: one 32 MiB Linux partition at sector 2048, the backup header at the
    // end of the 16 TiB.
    sh("sgdisk", &["-n", "1:2048:+32M", "-t", "1:8300", p(&raw)]);
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    let hosts = b"127.0.0.1 localhost\n10.1.2.3 far-away\n";
    std::fs::write(src.join("etc/hosts"), hosts).unwrap();
    std::fs::write(src.join("readme.txt"), b"sixteen tebibytes\n").unwrap();
    let fsimg = dir.path().join("small.ext4");
    sh("truncate", &["-s", "32M", p(&fsimg)]);
    sh("mkfs.ext4", &["-q", "-F", "-d", p(&src), p(&fsimg)]);
    let of = format!("of={}", p(&raw));
    let iff = format!("if={}", p(&fsimg));
    sh(
        "dd",
        &[
            &iff,
            &of,
            "bs=512",
            "seek=2048",
            "conv=notrunc,sparse",
            "status=none",
        ],
    );
    let (out, kib, took) = measured(&["probe", p(&raw)]);
    check_bounded("probe of a 16 TiB raw GPT disk", &out, kib, took);
    assert!(stdout(&out).contains("ext4"), "{}", stdout(&out));
    let (out, kib, took) = measured(&["ls", p(&raw), "p1:/"]);
    check_bounded("ls in a 16 TiB raw GPT disk", &out, kib, took);
    let names: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(names, ["etc/", "lost+found/", "readme.txt"], "{names:?}");
    let (out, kib, took) = measured(&["cat", p(&raw), "p1:/etc/hosts"]);
    check_bounded("cat in a 16 TiB raw GPT disk", &out, kib, took);
    assert_eq!(out.stdout, hosts);
    // The same disk as a dynamic VHDX (qemu-img skips the holes).
    let vhdx = dir.path().join("disk16t.vhdx");
    sh(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "vhdx",
            "-o",
            "subformat=dynamic",
            p(&raw),
            p(&vhdx),
        ],
    );
    drop(std::fs::remove_file(&raw));
    let (out, kib, took) = measured(&["cat", p(&vhdx), "p1:/readme.txt"]);
    check_bounded("cat in a 16 TiB VHDX", &out, kib, took);
    assert_eq!(out.stdout, b"sixteen tebibytes\n");
}

/// A folder for a million new files: tmpfs when it has the inodes to spare
/// (four times faster here than the disk), else the default temporary folder.
fn many_files_dir() -> tempfile::TempDir {
    let free_inodes = Command::new("stat")
        .args(["-f", "-c", "%d", "/dev/shm"])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    if free_inodes > 2 * MILLION as u64 {
        if let Ok(d) = tempfile::tempdir_in("/dev/shm") {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

/// Detaches the loop mount even when the test fails.
struct LoopMount(PathBuf);

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

const MILLION: usize = 1_000_000;

/// The generator's names: `f0000000` … `f0999999`.
fn million_names() -> Vec<String> {
    (0..MILLION).map(|i| format!("f{i:07}")).collect()
}

/// An ext4 image whose folder `/big` holds a million entries, made by the
/// kernel on a loop mount (mkfs.ext4 -d and debugfs insert entries one by one
/// in linear time each: hours for a million). Entries are hard links in
/// groups of 60,000 to one file (ext4 allows 65,000 links to a file), so the
/// image stays small. None when a loop mount cannot be made here.
fn million_entry_image(test: &str, dir: &Path) -> Option<PathBuf> {
    let img = dir.join("million.ext4");
    sh("truncate", &["-s", "96M", p(&img)]);
    sh(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-O",
            "^has_journal",
            "-b",
            "4096",
            "-N",
            "2048",
            p(&img),
        ],
    );
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-o", "loop", p(&img), p(&mnt)])
        .output()
        .unwrap();
    if !st.status.success() {
        flr_testdata::loud(&format!(
            "SKIPPED {test}: cannot loop-mount ext4 here (needs root and /dev/loop*): {}",
            String::from_utf8_lossy(&st.stderr).trim()
        ));
        return None;
    }
    let guard = LoopMount(mnt.clone());
    let t = Instant::now();
    let big = mnt.join("big");
    std::fs::create_dir(&big).unwrap();
    let mut first = PathBuf::new();
    for (i, name) in million_names().iter().enumerate() {
        let path = big.join(name);
        if i % 60_000 == 0 {
            std::fs::write(&path, b"").unwrap();
            first = path;
        } else {
            std::fs::hard_link(&first, &path).unwrap();
        }
    }
    drop(guard);
    eprintln!(
        "{test}: a million entries made in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Some(img)
}

#[test]
fn million_entry_folder_lists_streaming_with_bounded_memory() {
    let test = "million_entry_folder_lists_streaming_with_bounded_memory";
    if !tools(test, &["mkfs.ext4", "mount", "umount", "truncate"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(img) = million_entry_image(test, dir.path()) else {
        return;
    };
    let (out, kib, took) = measured(&["ls", p(&img), "disk:/big"]);
    assert!(out.status.success(), "{}", stderr(&out));
    eprintln!(
        "ls of a million entries: peak RSS {kib} KiB, {:.2} s",
        took.as_secs_f64()
    );
    // Listed in the folder's order as read, and said so.
    assert!(
        stderr(&out).contains("more than 10000 entries: listed in the folder's order"),
        "{}",
        stderr(&out)
    );
    let mut names: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(names.len(), MILLION);
    names.sort_unstable();
    let want = million_names();
    assert!(names.iter().zip(&want).all(|(a, b)| a == b), "names differ");
    // Bounded: collecting a million entries with their metadata takes
    // hundreds of MiB.
    assert!(
        kib < RSS_CAP_KIB,
        "peak RSS {kib} KiB (cap {RSS_CAP_KIB} KiB)"
    );
    assert!(took < Duration::from_secs(300), "took {took:?}");

    // JSON Lines stream the same way.
    let (out, kib, _) = measured(&["ls", "--json", p(&img), "disk:/big"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout.iter().filter(|&&b| b == b'\n').count(), MILLION);
    assert!(kib < RSS_CAP_KIB, "--json: peak RSS {kib} KiB");

    // get: every entry restored (memory grows with the folder here: the
    // clash-detection sets and the reader's lookup index; see the README).
    let dest = many_files_dir();
    let (out, kib, took) = measured(&["get", p(&img), "disk:/big", "-o", p(dest.path())]);
    assert!(out.status.success(), "{}", stderr(&out));
    eprintln!(
        "get of a million entries: peak RSS {kib} KiB, {:.2} s",
        took.as_secs_f64()
    );
    let restored = std::fs::read_dir(dest.path().join("big")).unwrap().count();
    assert_eq!(restored, MILLION);
    drop(dest);

    // mount: readdir hands the folder out in thousands of calls, each at its
    // offset; every name comes exactly once.
    if crate::mount::fuse_available(test) {
        let m = crate::mount::Mount::new(&img, &["--volume", "disk"]);
        let t = Instant::now();
        let mut names: Vec<String> = std::fs::read_dir(m.path().join("big"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        eprintln!(
            "readdir of a million entries through flr mount: {:.2} s",
            t.elapsed().as_secs_f64()
        );
        names.sort_unstable();
        assert_eq!(names, want);
    }
}
