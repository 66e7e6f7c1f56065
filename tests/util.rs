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

/// Puts LUKS ciphertext back into a committed fixture that holds its payloads as plaintext
/// (ciphertext does not compress): each row of `tsv` (`volume`, payload offset in the
/// image, length, volume key as hex, sector size, sha256 of the ciphertext cryptsetup
/// wrote) is encrypted in place with the xts-mode crate (aes-xts-plain64, IV = sector
/// number from the payload's start) and checked against cryptsetup's sha256 before the
/// image is used; a `disk` row, if any, gives the sha256 of the whole image. The result is
/// kept beside the decompressed fixture as `out_name`.
pub(crate) fn rebuild_ciphertext(zst: &str, tsv: &str, out_name: &str) -> PathBuf {
    use aes::cipher::KeyInit;
    let plain = fixture(zst);
    let out = plain.with_file_name(out_name);
    let fresh = std::fs::metadata(&out).and_then(|m| m.modified()).ok()
        >= std::fs::metadata(&plain).and_then(|m| m.modified()).ok();
    if out.exists() && fresh {
        return out;
    }
    let table = std::fs::read_to_string(flr_testdata::testdata_dir().join(tsv)).unwrap();
    let mut disk = std::fs::read(&plain).unwrap();
    let mut whole = None;
    for l in table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let c: Vec<&str> = l.split('\t').collect();
        if c[0] == "disk" {
            whole = Some(c[1].to_string());
            continue;
        }
        let (off, len): (usize, usize) = (c[1].parse().unwrap(), c[2].parse().unwrap());
        let key = hex::decode(c[3]).unwrap();
        let sector: usize = c[4].parse().unwrap();
        let data = &mut disk[off..off + len];
        let (a, b) = key.split_at(key.len() / 2);
        match a.len() {
            16 => xts_mode::Xts128::new(
                aes::Aes128::new_from_slice(a).unwrap(),
                aes::Aes128::new_from_slice(b).unwrap(),
            )
            .encrypt_area(data, sector, 0, xts_mode::get_tweak_default),
            32 => xts_mode::Xts128::new(
                aes::Aes256::new_from_slice(a).unwrap(),
                aes::Aes256::new_from_slice(b).unwrap(),
            )
            .encrypt_area(data, sector, 0, xts_mode::get_tweak_default),
            n => panic!("{tsv}: a {n}-byte XTS half key"),
        }
        assert_eq!(
            sha256_hex(data),
            c[5],
            "{tsv}: {}: the rebuilt ciphertext differs from cryptsetup's",
            c[0]
        );
    }
    if let Some(w) = whole {
        assert_eq!(sha256_hex(&disk), w, "{tsv}: the rebuilt image differs");
    }
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &disk).unwrap();
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// Checks a mounted (or otherwise readable) tree against a manifest with ordinary file
/// reads: every file's size and sha256, every symlink's target, every folder.
pub(crate) fn check_dir(dir: &Path, entries: &[ManifestEntry]) {
    let mut sums = BTreeMap::new();
    for e in entries.iter().filter(|e| e.kind == 'f') {
        let data = std::fs::read(dir.join(&e.path))
            .unwrap_or_else(|err| panic!("{}: cannot read: {err}", e.path));
        sums.insert(e.path.clone(), sha256_hex(&data));
    }
    check_tree(dir, &sums, entries);
}

/// The volume `id` of a `probe --json` report.
pub(crate) fn volume<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("no volume {id} in {report}"))
}

/// `rest[0]` (the command), then `keys`, then the rest.
pub(crate) fn with<'a>(keys: &'a [String], rest: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = Vec::new();
    v.push(rest[0]);
    v.extend(keys.iter().map(String::as_str));
    v.extend_from_slice(&rest[1..]);
    v
}

/// `probe --json`'s document.
pub(crate) fn probe(args: &[&str]) -> serde_json::Value {
    serde_json::from_slice(&run_ok(args).stdout).unwrap()
}

/// `get` of a whole volume, `manifest` and `verify` of it: each against the source
/// manifest. `keys` are extra arguments (`--key …`, `--with-disk …`) placed after the
/// command name.
pub(crate) fn restore_and_verify(image: &Path, keys: &[String], id: &str, manifest_name: &str) {
    let entries = manifest(manifest_name);
    let dest = tempfile::tempdir().unwrap();
    let spec = format!("{id}:/");
    let out = run_ok(&with(
        keys,
        &["get", p(image), &spec, "-o", p(dest.path()), "--checksum"],
    ));
    check_tree(dest.path(), &checksums(&out), &entries);

    // The manifest flr writes holds the source's sizes and digests.
    let m: serde_json::Value = serde_json::from_slice(
        &run_ok(&with(keys, &["manifest", p(image), "--volume", id])).stdout,
    )
    .unwrap();
    let got = m["volumes"][0]["entries"].as_array().unwrap();
    for e in entries.iter().filter(|e| e.kind == 'f') {
        let g = got
            .iter()
            .find(|g| g["path"] == format!("/{}", e.path) || g["path"] == e.path.as_str())
            .unwrap_or_else(|| panic!("{id}: {} not in flr's manifest", e.path));
        assert_eq!(g["sha256"], e.sha256.as_str(), "{id}: {}", e.path);
        assert_eq!(g["size"], e.size, "{id}: {}", e.path);
    }
    let files = entries.iter().filter(|e| e.kind == 'f').count();
    let mpath = dest.path().join("manifest.json");
    std::fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
    let v: serde_json::Value = serde_json::from_slice(
        &run_ok(&with(
            keys,
            &[
                "verify",
                p(image),
                "--volume",
                id,
                "--manifest",
                p(&mpath),
                "--json",
                "-",
            ],
        ))
        .stdout,
    )
    .unwrap();
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["volumes"][0]["state"], "opened", "{v}");
    assert_eq!(v["volumes"][0]["files_read"], files, "{v}");
}
