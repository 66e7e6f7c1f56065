//! `get`'s selection and safety options end to end on the demo fixture
//! (ext4 on p2): `--include`/`--exclude`, `--dry-run`, `--skip-existing`
//! (resume), `--compare`, `--overwrite`. Expected files and contents come
//! from the fixture generator's manifest (`testdata/disks/demo.p2.tsv`,
//! hashed from the source tree), never from flr.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::util::*;

const TSV: &str = "disks/demo.p2.tsv";

/// Regular files and symlinks below `root`, as `/`-separated relative paths.
fn leaves(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                walk(root, &e.path(), out);
            } else {
                let rel = e.path().strip_prefix(root).unwrap().to_owned();
                out.insert(rel.to_str().unwrap().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// The manifest's files and symlinks for which `keep` holds.
fn expected(keep: impl Fn(&str) -> bool) -> Vec<ManifestEntry> {
    manifest(TSV)
        .into_iter()
        .filter(|e| e.kind != 'd' && keep(&e.path))
        .collect()
}

fn names(entries: &[ManifestEntry]) -> BTreeSet<String> {
    entries.iter().map(|e| e.path.clone()).collect()
}

fn get(args: &[&str]) -> std::process::Output {
    let image = demo();
    let mut all = vec!["get", p(&image)];
    all.extend_from_slice(args);
    run(&all)
}

fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn summary(out: &std::process::Output) -> serde_json::Value {
    let lines = json_lines(out);
    let s = lines.last().expect("a summary line").clone();
    assert_eq!(s["type"], "summary", "{s}");
    s
}

/// Every entry's content (files), target (symlinks) or existence (folders)
/// in DEST, against the manifest.
fn check_files(dest: &Path, entries: &[ManifestEntry]) {
    assert!(!entries.is_empty());
    for e in entries {
        let path = dest.join(&e.path);
        match e.kind {
            'f' => {
                let data = std::fs::read(&path)
                    .unwrap_or_else(|err| panic!("{}: not restored: {err}", e.path));
                assert_eq!(data.len() as u64, e.size, "{}: size", e.path);
                assert_eq!(sha256_hex(&data), e.sha256, "{}: content", e.path);
            }
            'l' => {
                let t = std::fs::read_link(&path)
                    .unwrap_or_else(|err| panic!("{}: not a symlink: {err}", e.path));
                assert_eq!(
                    sha256_hex(t.to_str().unwrap().as_bytes()),
                    e.sha256,
                    "{}",
                    e.path
                );
            }
            _ => assert!(path.is_dir(), "{}: folder missing", e.path),
        }
    }
}

/// Flips a bit of the file's first byte and puts its mtime back: a change
/// that size and mtime do not show. Returns the new bytes.
fn change_in_place(path: &Path) -> Vec<u8> {
    let before = std::fs::metadata(path).unwrap();
    let mut changed = std::fs::read(path).unwrap();
    changed[0] ^= 0x20;
    std::fs::write(path, &changed).unwrap();
    set_mtime(path, filetime_of(&before));
    changed
}

/// `get p2:/etc -o d --overwrite=if-different`, JSON summary.
fn if_different(d: &Path) -> std::process::Output {
    get(&[
        "p2:/etc",
        "-o",
        p(d),
        "--overwrite=if-different",
        "--format",
        "json",
    ])
}

fn inode(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).unwrap().ino()
}

#[test]
fn include_takes_matching_names_and_paths_only() {
    let dest = tempfile::tempdir().unwrap();
    let out = get(&[
        "p2:/",
        "-o",
        p(dest.path()),
        "--include",
        "*.txt",
        "--include",
        "etc/*",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Independent of flr: a name ending in .txt anywhere, or one level below etc/.
    let want = expected(|p| {
        p.ends_with(".txt") || p.strip_prefix("etc/").is_some_and(|r| !r.contains('/'))
    });
    assert_eq!(leaves(dest.path()), names(&want));
    check_files(dest.path(), &want);
    // Folders that hold nothing selected are not created.
    for d in ["usr", "var", "lost+found"] {
        assert!(!dest.path().join(d).exists(), "{d} was created");
    }
    let s = summary(&out);
    let files = want.iter().filter(|e| e.kind == 'f').count() as u64;
    assert_eq!(s["files"], files);
    assert_eq!(s["symlinks"], want.len() as u64 - files);
    assert!(s["excluded"].as_u64().unwrap() > 0, "{s}");
}

#[test]
fn exclude_leaves_out_names_and_whole_folders() {
    let dest = tempfile::tempdir().unwrap();
    let out = get(&[
        "p2:/",
        "-o",
        p(dest.path()),
        "--exclude",
        "/var",
        "--exclude",
        "*.txt",
        "--checksum",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let want = expected(|p| !p.starts_with("var/") && !p.ends_with(".txt"));
    assert_eq!(leaves(dest.path()), names(&want));
    check_tree(dest.path(), &checksums(&out), &want);
    assert!(
        !dest.path().join("var").exists(),
        "an excluded folder was created"
    );
    // The folder asked for is excluded too when it matches.
    let dest2 = tempfile::tempdir().unwrap();
    let out = get(&["p2:/etc", "-o", p(dest2.path()), "--exclude", "etc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(leaves(dest2.path()).is_empty());
}

#[test]
fn bad_glob_is_a_usage_error() {
    let dest = tempfile::tempdir().unwrap();
    let out = get(&["p2:/", "-o", p(dest.path()), "--include", "a[b"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--include \"a[b\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let base = tempfile::tempdir().unwrap();
    let dest = base.path().join("new");
    let out = get(&["p2:/", "-o", p(&dest), "--dry-run", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!dest.exists(), "--dry-run created DEST");
    let lines = json_lines(&out);
    let plans: Vec<&serde_json::Value> = lines.iter().filter(|l| l["type"] == "plan").collect();
    for e in manifest(TSV) {
        let rec = plans
            .iter()
            .find(|l| l["path"] == e.path.as_str())
            .unwrap_or_else(|| panic!("no plan record for {}", e.path));
        let action = match e.kind {
            'f' => "write",
            'l' => "symlink",
            _ => "mkdir",
        };
        assert_eq!(rec["action"], action, "{rec}");
        assert_eq!(rec["source"], format!("p2:/{}", e.path), "{rec}");
        if e.kind == 'f' {
            assert_eq!(rec["size"], e.size, "{rec}");
        }
    }
    let s = summary(&out);
    assert_eq!(s["dry_run"], true);
    assert_eq!(
        s["files"],
        manifest(TSV).iter().filter(|e| e.kind == 'f').count() as u64
    );

    // Into a DEST that already holds one file: the conflict is planned
    // (exit 1, as the real run would end), the file is untouched.
    std::fs::create_dir_all(dest.join("etc")).unwrap();
    std::fs::write(dest.join("etc/hosts"), b"mine").unwrap();
    let out = get(&["p2:/etc", "-o", p(&dest), "--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with("conflict") && l.contains("etc/hosts")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("write") && l.contains("etc/fstab (62 bytes)")),
        "{text}"
    );
    assert_eq!(std::fs::read(dest.join("etc/hosts")).unwrap(), b"mine");
    assert!(!dest.join("etc/fstab").exists());
    // With --overwrite=rename the plan names the new file.
    let out = get(&["p2:/etc", "-o", p(&dest), "--dry-run", "--overwrite=rename"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("etc/hosts~1"), "{}", stdout(&out));
    assert!(!dest.join("etc/hosts~1").exists());
}

/// A restore interrupted by SIGKILL leaves finished files under their
/// names, a temporary file, and files not yet written; `--skip-existing`
/// keeps the finished ones (same inode: not rewritten), writes the
/// missing ones and removes the stale temporary file.
#[test]
fn skip_existing_resumes_an_interrupted_restore() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    let out = get(&["p2:/", "-o", p(d)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let all = expected(|_| true);
    // The state an interrupted run leaves: one file missing, one partial
    // (of a process that is gone: above the kernel's pid_max), plus a
    // partial of a live process (pid 1) that must be left alone.
    std::fs::remove_file(d.join("home/alice/notes.txt")).unwrap();
    let stale = d.join("var/log/.flr-4194999-7.partial");
    std::fs::write(&stale, b"half").unwrap();
    let live = d.join("etc/.flr-1-0.partial");
    std::fs::write(&live, b"busy").unwrap();
    let inodes: Vec<(String, u64)> = all
        .iter()
        .filter(|e| e.path != "home/alice/notes.txt")
        .map(|e| (e.path.clone(), inode(&d.join(&e.path))))
        .collect();
    let out = get(&["p2:/", "-o", p(d), "--skip-existing", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    check_files(d, &manifest(TSV));
    for (path, ino) in &inodes {
        assert_eq!(inode(&d.join(path)), *ino, "{path} was rewritten");
    }
    assert!(!stale.exists(), "the stale partial is still there");
    assert!(live.exists(), "a live restore's partial was removed");
    std::fs::remove_file(&live).unwrap();
    let s = summary(&out);
    assert_eq!(s["files"], 1, "{s}");
    assert_eq!(s["kept"], inodes.len() as u64, "{s}");
    assert_eq!(s["stale_partials"], 1, "{s}");
    // The first restore kept no journal: every file was compared with the
    // image, and what was found identical went into the journal.
    assert_eq!(s["kept_by_journal"], 0, "{s}");
    let mut want = names(&all);
    want.insert(".flr-restore.jsonl".into());
    assert_eq!(leaves(d), want);
}

/// The restore journal: a resumable restore (`--skip-existing`) records
/// each file it writes; a resume keeps the files untouched since without
/// reading them or the image; a chmod (change time moved, bytes the same)
/// is hashed against the record and kept; bytes changed with size and
/// mtime put back are found; lines that do not parse are ignored; a dry
/// run creates no journal.
#[test]
fn the_restore_journal_proves_untouched_files() {
    use std::os::unix::fs::PermissionsExt;
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    let planned = get(&["p2:/etc", "-o", p(d), "--skip-existing", "--dry-run"]);
    assert!(planned.status.success(), "{}", stderr(&planned));
    assert!(
        !d.join(".flr-restore.jsonl").exists(),
        "a dry run wrote a journal"
    );

    let out = get(&["p2:/etc", "-o", p(d), "--skip-existing", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let want = expected(|p| p.starts_with("etc/"));
    let files = want.iter().filter(|e| e.kind == 'f').count() as u64;
    assert_eq!(files, 2, "{files}");
    let links = want.iter().filter(|e| e.kind == 'l').count() as u64;
    check_files(d, &want);
    let journal = d.join(".flr-restore.jsonl");
    let meta = std::fs::metadata(&journal).expect("the journal is written");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&journal).unwrap();
    assert_eq!(text.lines().count() as u64, files, "{text}");
    assert!(!text.contains("etc/"), "paths in the journal: {text}");

    let again = || get(&["p2:/etc", "-o", p(d), "--skip-existing", "--format", "json"]);
    let out = again();
    assert!(out.status.success(), "{}", stderr(&out));
    let s = summary(&out);
    assert_eq!(
        (s["kept"].as_u64(), s["kept_by_journal"].as_u64()),
        (Some(files + links), Some(files)),
        "{s}"
    );
    assert_eq!(s["files"], 0, "{s}");

    // chmod: the change time moves, the bytes do not.
    let fstab = d.join("etc/fstab");
    let mut perm = std::fs::metadata(&fstab).unwrap().permissions();
    perm.set_mode(perm.mode() ^ 0o004);
    std::fs::set_permissions(&fstab, perm).unwrap();
    // Junk and a line for no file in DEST are ignored.
    let mut t = std::fs::read_to_string(&journal).unwrap();
    t.push_str("not json\n{\"v\":1,\"ino\":1,\"size\":0}\n");
    std::fs::write(&journal, t).unwrap();
    let out = again();
    assert!(out.status.success(), "{}", stderr(&out));
    let s = summary(&out);
    assert_eq!(s["kept"].as_u64(), Some(files + links), "{s}");
    assert_eq!(s["kept_by_journal"].as_u64(), Some(files - 1), "{s}");
    // Recorded again with its new change time.
    let s = summary(&again());
    assert_eq!(s["kept_by_journal"].as_u64(), Some(files), "{s}");

    // Bytes changed in place, size and mtime put back.
    let hosts = d.join("etc/hosts");
    let changed = change_in_place(&hosts);
    let out = again();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("etc/hosts"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&hosts).unwrap(),
        changed,
        "hosts was replaced"
    );
    // --no-journal: everything compared with the image, nothing recorded.
    let lines = std::fs::read_to_string(&journal).unwrap().lines().count();
    let out = get(&[
        "p2:/etc",
        "-o",
        p(d),
        "--skip-existing",
        "--no-journal",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let s = summary(&out);
    assert_eq!(s["kept_by_journal"], 0, "{s}");
    assert_eq!(s["kept"].as_u64(), Some(files - 1 + links), "{s}");
    assert_eq!(
        std::fs::read_to_string(&journal).unwrap().lines().count(),
        lines
    );
    let out = if_different(d);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = summary(&out);
    assert_eq!(
        (s["replaced"].as_u64(), s["files"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    check_files(d, &want);
}

/// A file changed in DEST with its size and mtime kept: the sha256
/// comparison sees it (and, with the default policy, refuses to replace
/// it); size-mtime does not (its documented blind spot); if-different
/// replaces it and keeps the rest.
#[test]
fn compare_modes_and_if_different() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    assert!(get(&["p2:/etc", "-o", p(d)]).status.success());
    let hosts = d.join("etc/hosts");
    let changed = change_in_place(&hosts);
    let fstab_ino = inode(&d.join("etc/fstab"));

    let out = get(&["p2:/etc", "-o", p(d), "--skip-existing"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("etc/hosts"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&hosts).unwrap(), changed);

    let out = get(&[
        "p2:/etc",
        "-o",
        p(d),
        "--skip-existing",
        "--compare",
        "size-mtime",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&hosts).unwrap(), changed);

    let out = if_different(d);
    assert!(out.status.success(), "{}", stderr(&out));
    let want = expected(|p| p == "etc/hosts");
    check_files(d, &want);
    assert_eq!(
        inode(&d.join("etc/fstab")),
        fstab_ino,
        "fstab was rewritten"
    );
    let s = summary(&out);
    assert_eq!(s["replaced"], 1, "{s}");
    assert_eq!(s["files"], 1, "{s}");
}

#[test]
fn overwrite_policies() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    let want = expected(|p| p == "etc/hosts");
    let hosts = d.join("hosts");
    std::fs::write(&hosts, b"mine").unwrap();

    // error (the default): reported, exit 1, left alone.
    let out = get(&["p2:/etc/hosts", "-o", p(d)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&hosts).unwrap(), b"mine");

    // skip: left alone, success.
    let out = get(&["p2:/etc/hosts", "-o", p(d), "--overwrite=skip"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&hosts).unwrap(), b"mine");

    // rename: the new one beside it, twice.
    for n in 1..=2 {
        let out = get(&["p2:/etc/hosts", "-o", p(d), "--overwrite=rename"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let data = std::fs::read(d.join(format!("hosts~{n}"))).unwrap();
        assert_eq!(sha256_hex(&data), want[0].sha256);
    }
    assert_eq!(std::fs::read(&hosts).unwrap(), b"mine");

    // always, and --force as its alias.
    for flag in ["--overwrite=always", "--force"] {
        std::fs::write(&hosts, b"mine").unwrap();
        let out = get(&["p2:/etc/hosts", "-o", p(d), flag]);
        assert!(out.status.success(), "{flag}: {}", stderr(&out));
        assert_eq!(sha256_hex(&std::fs::read(&hosts).unwrap()), want[0].sha256);
    }
    // A symlink: identical target is kept with --skip-existing.
    let out = get(&["p2:/etc/localtime", "-o", p(d)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ino = inode(&d.join("localtime"));
    let out = get(&[
        "p2:/etc/localtime",
        "-o",
        p(d),
        "--skip-existing",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(summary(&out)["kept"], 1);
    assert_eq!(inode(&d.join("localtime")), ino);
}

fn filetime_of(m: &std::fs::Metadata) -> std::time::SystemTime {
    m.modified().unwrap()
}

fn set_mtime(path: &Path, t: std::time::SystemTime) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(t).unwrap();
}
