//! Test support shared by every flr crate's tests: finds the committed
//! fixtures under `testdata/`, decompresses `.zst` ones once into
//! `target/fixtures/`, reads their manifests, and locates (and unpacks) the
//! third-party corpus in `../shared/corpus` when it is present.
//!
//! Tests that need the corpus call [`corpus`] and return early when it gives
//! `None`; it prints a loud `SKIPPED` line so a skip is never silent.
#![deny(missing_docs)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The repository root (the folder holding `testdata/`).
pub fn repo_root() -> PathBuf {
    // crates/flr-testdata -> repo root
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("flr-testdata lives two levels below the repo root")
        .to_path_buf()
}

/// `testdata/` in the repository.
pub fn testdata_dir() -> PathBuf {
    repo_root().join("testdata")
}

fn scratch_dir() -> PathBuf {
    let d = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("fixtures");
    std::fs::create_dir_all(&d).expect("create target/fixtures");
    d
}

static LOCK: Mutex<()> = Mutex::new(());

/// The path of a committed fixture, `rel` relative to `testdata/`. A `.zst`
/// fixture is decompressed (once, atomically) into `target/fixtures/` and
/// the path of the decompressed file is returned.
pub fn fixture(rel: &str) -> PathBuf {
    let src = testdata_dir().join(rel);
    assert!(src.exists(), "fixture {} is missing", src.display());
    let Some(stem) = rel.strip_suffix(".zst") else {
        return src;
    };
    let out = scratch_dir().join(stem);
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let fresh = match (std::fs::metadata(&out), std::fs::metadata(&src)) {
        (Ok(o), Ok(s)) => o.modified().ok() >= s.modified().ok(),
        _ => false,
    };
    if !fresh {
        std::fs::create_dir_all(out.parent().expect("has parent")).expect("mkdir");
        let f = std::fs::File::open(&src).expect("open fixture");
        let mut dec = ruzstd::decoding::StreamingDecoder::new(std::io::BufReader::new(f))
            .expect("fixture is zstd");
        let tmp = out.with_extension(format!("tmp{}", std::process::id()));
        let mut o = std::fs::File::create(&tmp).expect("create scratch file");
        std::io::copy(&mut dec, &mut o).expect("decompress fixture");
        drop(o);
        std::fs::rename(&tmp, &out).expect("rename scratch file");
    }
    out
}

/// One line of a manifest: what the source file was when the image was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Path inside the filesystem, without a leading `/`.
    pub path: String,
    /// `f` file, `d` directory, `l` symlink.
    pub kind: char,
    /// Size in bytes (files), target length (links).
    pub size: u64,
    /// sha256 of the content (files) or of the link target (links); empty for dirs.
    pub sha256: String,
}

/// A container fixture's expectations (`testdata/container/expected.tsv`,
/// hashes from libvhdi and qemu-img, not from flr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerImage {
    /// Virtual disk size in bytes.
    pub size: u64,
    /// sha256 of the whole virtual disk.
    pub sha256: String,
    /// The parent image's fixture name, for a differencing disk.
    pub parent: Option<String>,
}

/// `testdata/container/expected.tsv`, by image name.
pub fn container_expected() -> std::collections::HashMap<String, ContainerImage> {
    let text = std::fs::read_to_string(testdata_dir().join("container/expected.tsv"))
        .expect("read expected.tsv");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            assert!(c.len() >= 6, "bad line {l:?}");
            (
                c[0].to_string(),
                ContainerImage {
                    size: c[1].parse().expect("size"),
                    sha256: c[2].to_string(),
                    parent: (c[5] != "-").then(|| c[5].to_string()),
                },
            )
        })
        .collect()
}

/// Reads a manifest TSV (`kind path size sha256`, `#` comments) under `testdata/`.
pub fn manifest(rel: &str) -> Vec<ManifestEntry> {
    let text = std::fs::read_to_string(testdata_dir().join(rel)).expect("read manifest");
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            assert!(c.len() >= 4, "bad manifest line {l:?}");
            ManifestEntry {
                kind: c[0].chars().next().expect("kind"),
                path: c[1].to_string(),
                size: c[2].parse().expect("size"),
                sha256: c[3].to_string(),
            }
        })
        .collect()
}

/// sha256 of bytes, as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// sha256 of a reader's bytes, as lowercase hex.
pub fn sha256_reader(mut r: impl Read) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// The third-party corpus, unpacked: `Some((unpacked_dir, corpus_dir))` when
/// `../shared/corpus` (or `$FLR_CORPUS`) exists and unpacks; otherwise prints
/// a loud skip line naming `test` and returns `None`.
pub fn corpus(test: &str) -> Option<(PathBuf, PathBuf)> {
    let dir = std::env::var_os("FLR_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/corpus"));
    if !dir.join("unpack.sh").exists() {
        loud(&format!(
            "SKIPPED {test}: corpus not found at {} (set FLR_CORPUS); .ci/run runs this tier",
            dir.display()
        ));
        return None;
    }
    let out = scratch_dir().join("corpus");
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let stamp = out.join(".unpacked");
    if !stamp.exists() {
        let st = Command::new("bash")
            .arg(dir.join("unpack.sh"))
            .arg(&out)
            .status();
        match st {
            Ok(s) if s.success() => {
                std::fs::write(&stamp, b"ok").expect("write stamp");
            }
            other => {
                loud(&format!(
                    "SKIPPED {test}: corpus unpack failed ({other:?}); needs gzip, xz, zstd, qemu-img"
                ));
                return None;
            }
        }
    }
    Some((out, dir))
}

/// Prints a line straight to the process's stderr, past the test harness's
/// output capture, so that skipped tiers are seen in every `cargo test` run.
pub fn loud(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Whether an external program is on PATH (for tiers that need Debian tools).
pub fn have_tool(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
