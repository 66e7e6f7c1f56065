//! Path safety: an ext4 image whose names and symlinks try to reach outside
//! the destination (built by testdata/disks/gen.sh, names patched in with
//! Python after mkfs.ext4), restored with `get` and shown by `flr mount`.
//! Expected names follow the rules of `flr_ops::safe_component` applied to
//! the names the generator wrote; expected contents are the generator's.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::mount::{fuse_available, Mount};
use crate::util::*;

/// Every path below `root` (relative), listed by `find`, which walks with
/// directory handles: paths longer than PATH_MAX are listed too.
fn tree(root: &Path) -> BTreeSet<String> {
    let out = Command::new("find")
        .args([".", "-mindepth", "1", "-printf", "%P\\0"])
        .current_dir(root)
        .output()
        .expect("find");
    assert!(out.status.success(), "find: {}", stderr(&out));
    out.stdout
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).expect("UTF-8 name"))
        .collect()
}

/// The content of the file `name` found anywhere below `root` (through
/// `find -execdir`, so its path may exceed PATH_MAX).
fn find_cat(root: &Path, name: &str) -> Vec<u8> {
    let out = Command::new("find")
        .args([".", "-name", name, "-execdir", "cat", "{}", ";"])
        .current_dir(root)
        .output()
        .expect("find");
    assert!(out.status.success(), "find: {}", stderr(&out));
    out.stdout
}

/// The 18 levels of 250-byte folder names below `deep/` (gen.sh).
fn deep_names() -> Vec<String> {
    (0..18)
        .map(|i| format!("{i:02}{}", "d".repeat(248)))
        .collect()
}

fn restore_root() -> (tempfile::TempDir, std::path::PathBuf, std::process::Output) {
    let img = fixture("disks/hostile.img.zst");
    let outer = tempfile::tempdir().unwrap();
    let dest = outer.path().join("dest");
    let out = run(&["get", p(&img), "disk:/", "-o", p(&dest)]);
    (outer, dest, out)
}

#[test]
fn hostile_names_stay_inside_dest() {
    let (outer, dest, out) = restore_root();
    let err = stderr(&out);
    // Two entries cannot be restored (a duplicate name, and a file named ".."
    // that no path reaches), the rest are: a partial result.
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("second entry with this name"), "{err}");
    assert!(
        err.contains("disk:/..: an entry with this name besides the folder's own link"),
        "{err}"
    );
    // Nothing outside DEST: the parent holds only DEST.
    assert_eq!(
        tree(outer.path())
            .into_iter()
            .filter(|p| !p.starts_with("dest"))
            .count(),
        0
    );
    for outside in [
        "/tmp/flr-escape",
        "/tmp/flr-slash",
        "/tmp/flr-abs-name",
        "/tmp/evil.txt",
    ] {
        assert!(!Path::new(outside).exists(), "{outside}");
    }
    let t = tree(&dest);
    let read = |rel: &str| std::fs::read(dest.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    // Backslashes, device names and control characters were made safe.
    assert_eq!(read(".._.._evil-backslash.txt"), b"backslash\n");
    assert_eq!(read("_CON"), b"device\n");
    assert_eq!(read("_aux.txt"), b"device\n");
    assert_eq!(read("_nul.txt"), b"reserved nul\n");
    assert_eq!(read("_COM1"), b"reserved com1\n");
    assert_eq!(read("_LPT9.log"), b"reserved lpt9\n");
    assert_eq!(read("term_[2Jclear"), b"escape\n");
    // A "/" inside a name, an absolute-looking name and a NUL byte: one
    // component each, inside DEST.
    assert_eq!(read(".._.._.._tmp_flr-slash"), b"slash\n");
    assert_eq!(read("_tmp_flr-abs-name"), b"absolute\n");
    assert_eq!(read("nul_byte.txt"), b"nul byte\n");
    // 255 bytes is allowed as is; a name that grows past 255 bytes when made
    // safe is cut and given a hash suffix.
    let long = format!("{}.txt", "n".repeat(251));
    assert_eq!(read(&long), b"long name\n");
    let grown: Vec<&String> = t.iter().filter(|n| n.starts_with("_aux.xxx")).collect();
    assert_eq!(grown.len(), 1, "{t:?}");
    assert!(grown[0].len() <= 255 && grown[0].contains('~'), "{grown:?}");
    assert_eq!(read(grown[0]), b"long reserved\n");
    // Each rename is reported with the original name (escaped) and the new one,
    // and the summary counts them.
    let renamed: Vec<&str> = err
        .lines()
        .filter(|l| l.contains(": restored as "))
        .collect();
    for orig in [
        "/..\\\\..\\\\evil-backslash.txt",
        "/CON",
        "/aux.txt",
        "/nul.txt",
        "/COM1",
        "/LPT9.log",
        "/term\\x1b[2Jclear",
        "/..\\x2f..\\x2f..\\x2ftmp\\x2fflr-slash",
        "/\\x2ftmp\\x2fflr-abs-name",
        "/nul\\x00byte.txt",
        &format!("/aux.{}", "x".repeat(251)),
    ] {
        let head = format!("flr: disk:{orig}: restored as ");
        assert!(
            renamed.iter().any(|l| l.starts_with(&head)),
            "no report for {orig}: {err}"
        );
    }
    assert!(
        err.contains(&format!("; {} names made safe", renamed.len())),
        "{err}"
    );
    // Names that differ only in case or in Unicode normalisation are distinct
    // names on Linux: both land under their own names, nothing is renamed.
    assert_eq!(read("Readme.txt"), b"mixed case\n");
    assert_eq!(read("README.TXT"), b"upper case\n");
    assert_eq!(read("caf\u{e9}.txt"), b"nfc\n");
    assert_eq!(read("cafe\u{301}.txt"), b"nfd\n");
    for n in [
        "Readme.txt",
        "README.TXT",
        "caf\u{e9}.txt",
        "cafe\u{301}.txt",
    ] {
        assert!(!err.contains(&format!("disk:/{n}:")), "{n}: {err}");
    }
    // Two entries named L (a symlink to /tmp and a folder): whichever comes first is
    // restored as what it is; nothing is ever written through the link.
    let l = std::fs::symlink_metadata(dest.join("L")).unwrap();
    if l.file_type().is_symlink() {
        assert_eq!(
            std::fs::read_link(dest.join("L")).unwrap(),
            Path::new("/tmp")
        );
    } else {
        assert!(t.contains("L/evil.txt"), "{t:?}");
    }
    // Links pointing outside are kept as links with their stored targets.
    assert_eq!(
        std::fs::read_link(dest.join("abs-link")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        std::fs::read_link(dest.join("up-link")).unwrap(),
        Path::new("../../../../../../tmp/flr-escape")
    );
    // No ".." ever becomes a path step.
    assert!(!t.iter().any(|p| p.split('/').any(|c| c == "..")), "{t:?}");
    assert_eq!(read("dir/ok.txt"), b"inside\n");
    // The deep folder chain was restored whole, though its path is longer than PATH_MAX.
    let bottom = format!("deep/{}/bottom.txt", deep_names().join("/"));
    assert!(bottom.len() > 4096);
    assert!(t.contains(&bottom), "deep path missing");
    assert_eq!(find_cat(&dest, "bottom.txt"), b"deep down\n");
}

#[test]
fn hard_links_are_restored_as_independent_copies() {
    let img = fixture("disks/hostile.img.zst");
    let dest = tempfile::tempdir().unwrap();
    let out = run_ok(&["get", p(&img), "disk:/hard", "-o", p(dest.path())]);
    assert!(
        stderr(&out).contains("restored 2 files"),
        "{}",
        stderr(&out)
    );
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(dest.path().join("hard/a.txt")).unwrap();
    let b = std::fs::metadata(dest.path().join("hard/b.txt")).unwrap();
    assert_eq!(
        std::fs::read(dest.path().join("hard/a.txt")).unwrap(),
        b"linked\n"
    );
    assert_eq!(
        std::fs::read(dest.path().join("hard/b.txt")).unwrap(),
        b"linked\n"
    );
    assert!(a.is_file() && b.is_file());
    assert_ne!(a.ino(), b.ino(), "restored as one inode");
    assert_eq!((a.nlink(), b.nlink()), (1, 1));
}

#[test]
fn path_longer_than_path_max_is_restored_through_folder_handles() {
    let img = fixture("disks/hostile.img.zst");
    let dest = tempfile::tempdir().unwrap();
    let out = run_ok(&[
        "get",
        p(&img),
        "disk:/deep",
        "-o",
        p(dest.path()),
        "--checksum",
    ]);
    // The --checksum line names the whole relative path.
    let want = format!("deep/{}/bottom.txt", deep_names().join("/"));
    let sums = checksums(&out);
    assert_eq!(
        sums.get(&want).map(String::as_str),
        Some(sha256_hex(b"deep down\n").as_str()),
        "{sums:?}"
    );
    assert_eq!(find_cat(dest.path(), "bottom.txt"), b"deep down\n");
    // And a single file far down: the volume path itself is longer than PATH_MAX.
    let dest2 = tempfile::tempdir().unwrap();
    let spec = format!("disk:/{want}");
    let out = run_ok(&["get", p(&img), &spec, "-o", p(dest2.path())]);
    assert_eq!(
        std::fs::read(dest2.path().join("bottom.txt")).unwrap(),
        b"deep down\n",
        "{}",
        stderr(&out)
    );
}

#[test]
fn symlink_already_in_dest_is_not_followed() {
    let img = fixture("disks/hostile.img.zst");
    let outer = tempfile::tempdir().unwrap();
    let dest = outer.path().join("dest");
    let elsewhere = outer.path().join("elsewhere");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dest.join("dir")).unwrap();
    let out = run(&["get", p(&img), "disk:/dir", "-o", p(&dest)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("symlink"), "{}", stderr(&out));
    assert!(
        std::fs::read_dir(&elsewhere).unwrap().next().is_none(),
        "wrote through a symlink"
    );
}

#[test]
fn hostile_names_in_a_mount_are_renamed_or_hidden() {
    if !fuse_available("hostile_names_in_a_mount_are_renamed_or_hidden") {
        return;
    }
    let img = fixture("disks/hostile.img.zst");
    let m = Mount::new(&img, &["--volume", "disk"]);
    let root = m.path();
    let names: BTreeSet<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    // "/" and NUL cannot be in a file name here: shown under a safe name.
    let read = |rel: &str| std::fs::read(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    assert_eq!(read(".._.._.._tmp_flr-slash"), b"slash\n");
    assert_eq!(read("_tmp_flr-abs-name"), b"absolute\n");
    assert_eq!(read("nul_byte.txt"), b"nul byte\n");
    // The file named ".." is not shown; readdir and lookup agree.
    assert!(!names.iter().any(|n| n == "." || n == ".."), "{names:?}");
    assert_eq!(
        std::fs::canonicalize(root.join("dir/..")).unwrap(),
        std::fs::canonicalize(root).unwrap()
    );
    // Names Linux can hold are shown as stored.
    for n in [
        "CON",
        "..\\..\\evil-backslash.txt",
        "Readme.txt",
        "README.TXT",
    ] {
        assert!(names.contains(n), "{n}: {names:?}");
    }
    assert_eq!(read("caf\u{e9}.txt"), b"nfc\n");
    assert_eq!(read("cafe\u{301}.txt"), b"nfd\n");
    // Symlinks give their stored targets; the kernel resolves them outside
    // the mount only because they say so, never through the mount.
    assert_eq!(
        std::fs::read_link(root.join("abs-link")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        std::fs::read_link(root.join("up-link")).unwrap(),
        Path::new("../../../../../../tmp/flr-escape")
    );
    // Hard links: two names, same content.
    assert_eq!(read("hard/a.txt"), b"linked\n");
    assert_eq!(read("hard/b.txt"), b"linked\n");
    // The deep chain is walkable through the mount.
    assert_eq!(find_cat(root, "bottom.txt"), b"deep down\n");
    // Each rename and each hidden entry is reported.
    let lines = [
        "disk:/..\\x2f..\\x2f..\\x2ftmp\\x2fflr-slash: shown as \".._.._.._tmp_flr-slash\"",
        "disk:/\\x2ftmp\\x2fflr-abs-name: shown as \"_tmp_flr-abs-name\"",
        "disk:/nul\\x00byte.txt: shown as \"nul_byte.txt\"",
        "disk:/: an entry named \"..\" is not shown",
    ];
    let err = m.stderr_since_mounted(&lines);
    for line in lines {
        assert!(err.contains(line), "missing {line:?} in {err}");
    }
}

#[test]
fn ls_escapes_what_a_name_cannot_hold() {
    let img = fixture("disks/hostile.img.zst");
    let out = run_ok(&["ls", p(&img), "disk:/"]);
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    for want in [
        "..\\x2f..\\x2f..\\x2ftmp\\x2fflr-slash",
        "\\x2ftmp\\x2fflr-abs-name",
        "nul\\x00byte.txt",
        "term\\x1b[2Jclear",
        "..",
    ] {
        assert!(lines.iter().any(|l| l == want), "{want}: {lines:?}");
    }
    // One line per entry, and no name shows a bare "/" except a folder's mark.
    for l in &lines {
        assert!(!l.trim_end_matches('/').contains('/'), "{l}");
    }
    // -R and --json name each entry by its whole path, escaped the same way.
    let out = run_ok(&["ls", "-R", p(&img), "disk:/"]);
    assert!(stdout(&out)
        .lines()
        .any(|l| l == "/\\x2ftmp\\x2fflr-abs-name"));
    let out = run_ok(&["ls", "--json", p(&img), "disk:/"]);
    let paths: Vec<String> = stdout(&out)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["path"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(paths.iter().any(|p| p == "/nul\\x00byte.txt"), "{paths:?}");
    assert!(
        paths
            .iter()
            .any(|p| p == "/..\\x2f..\\x2f..\\x2ftmp\\x2fflr-slash"),
        "{paths:?}"
    );
}

/// The FAT volume's long names, as gen.sh patched them in after mcopy.
#[test]
fn fat_long_names_stay_inside_dest() {
    let img = fixture("disks/hostile-fat.img.zst");
    let outer = tempfile::tempdir().unwrap();
    let dest = outer.path().join("dest");
    let out = run_ok(&["get", p(&img), "disk:/", "-o", p(&dest)]);
    let err = stderr(&out);
    assert_eq!(
        tree(outer.path())
            .iter()
            .filter(|p| !p.starts_with("dest"))
            .count(),
        0
    );
    let read = |rel: &str| std::fs::read(dest.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    // Made safe by get, and reported.
    assert_eq!(read("_aux.txt"), b"aux\n");
    assert_eq!(read("back_slash.txt"), b"back\n");
    assert_eq!(read("ctl_char.txt"), b"ctl\n");
    assert_eq!(read("slash_name.txt"), b"slash\n");
    for orig in [
        "/aux.txt",
        "/back\\\\slash.txt",
        "/ctl\\x1bchar.txt",
        "/slash\\x2fname.txt",
    ] {
        assert!(
            err.contains(&format!("flr: disk:{orig}: restored as ")),
            "no report for {orig}: {err}"
        );
    }
    // A long name ".." (no path reaches it) is given by the FAT reader as its
    // 8.3 name.
    assert_eq!(read("PPPPP~1"), b"dots\n");
    assert_eq!(tree(&dest).len(), 5, "{:?}", tree(&dest));
    if !fuse_available("fat_long_names_stay_inside_dest (mount part)") {
        return;
    }
    let m = Mount::new(&img, &["--volume", "disk"]);
    let names: BTreeSet<String> = std::fs::read_dir(m.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let want: BTreeSet<String> = [
        "aux.txt",
        "back\\slash.txt",
        "ctl\u{1b}char.txt",
        "slash_name.txt",
        "PPPPP~1",
    ]
    .map(String::from)
    .into();
    assert_eq!(names, want);
    assert_eq!(
        std::fs::read(m.path().join("slash_name.txt")).unwrap(),
        b"slash\n"
    );
    let line = "disk:/slash\\x2fname.txt: shown as \"slash_name.txt\"";
    let err = m.stderr_since_mounted(&[line]);
    assert!(err.contains(line), "{err}");
}
