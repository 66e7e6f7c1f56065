use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) use flr_testdata::{fixture, manifest, sha256_hex, ManifestEntry};

pub(crate) fn flr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flr"))
}

pub(crate) fn run(args: &[&str]) -> Output {
    let out = flr().args(args).output().expect("run flr");
    // A panic exits with 101: never acceptable, whatever the input.
    assert_ne!(
        out.status.code(),
        Some(101),
        "flr panicked on {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub(crate) fn run_ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "flr {args:?} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub(crate) fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Restores `vol:/` of `image` into a fresh folder with `--checksum` and
/// returns the folder and the sha256 of every restored file by path.
pub(crate) fn restore_all(
    image: &Path,
    vol: &str,
) -> (tempfile::TempDir, BTreeMap<String, String>) {
    let dest = tempfile::tempdir().expect("tempdir");
    let spec = format!("{vol}:/");
    let out = run(&["get", p(image), &spec, "-o", p(dest.path()), "--checksum"]);
    (dest, checksums(&out))
}

/// The `sha256  path` lines that `get --checksum` prints, by path.
pub(crate) fn checksums(out: &Output) -> BTreeMap<String, String> {
    stdout(out)
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(h, p)| (p.to_string(), h.to_string()))
        .collect()
}

/// Checks a restored tree against a manifest: every file's size and sha256
/// (both from `--checksum` and from the bytes on disk), every symlink's target,
/// every folder's existence.
pub(crate) fn check_tree(dest: &Path, sums: &BTreeMap<String, String>, entries: &[ManifestEntry]) {
    assert!(!entries.is_empty());
    for e in entries {
        let path = dest.join(&e.path);
        match e.kind {
            'f' => {
                let data = std::fs::read(&path)
                    .unwrap_or_else(|err| panic!("{}: not restored: {err}", e.path));
                assert_eq!(data.len() as u64, e.size, "{}: size", e.path);
                assert_eq!(sha256_hex(&data), e.sha256, "{}: content", e.path);
                assert_eq!(
                    sums.get(&e.path),
                    Some(&e.sha256),
                    "{}: --checksum line",
                    e.path
                );
            }
            'l' => {
                let t = std::fs::read_link(&path)
                    .unwrap_or_else(|err| panic!("{}: not a symlink: {err}", e.path));
                let t = t.to_str().unwrap().as_bytes().to_vec();
                assert_eq!(sha256_hex(&t), e.sha256, "{}: link target {t:?}", e.path);
            }
            'd' => assert!(
                std::fs::symlink_metadata(&path)
                    .map(|m| m.is_dir())
                    .unwrap_or(false),
                "{}: folder missing",
                e.path
            ),
            k => panic!("unknown manifest kind {k}"),
        }
    }
}

pub(crate) fn demo() -> PathBuf {
    flr_testdata::testdata_dir().join("demo.vhd")
}

/// The records of a JSONL audit log (none when the file does not exist).
pub(crate) fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}
