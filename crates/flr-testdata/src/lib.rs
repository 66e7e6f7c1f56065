//! Test support shared by every flr crate's tests: finds the committed
//! fixtures under `testdata/`, decompresses `.zst` ones once into
//! `target/fixtures/`, reads their manifests, and locates (and unpacks) the
//! third-party corpus in `../shared/corpus` when it is present.
//!
//! Tests that need the corpus call [`corpus`] and return early when it gives
//! `None`; it prints a loud `SKIPPED` line so a skip is never silent.
#![deny(missing_docs)]

pub mod chains;

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

/// A read-only kernel mount of a private, sparse copy of an image (the
/// fixture itself is never mounted), unmounted and deleted on drop: the
/// oracle for the tests that compare flr with what the kernel sees.
#[derive(Debug)]
pub struct LoopMount {
    dir: PathBuf,
    mnt: PathBuf,
}

impl LoopMount {
    /// Mounts a copy of `img` with `mount -o loop,ro,OPTS` (`opts` may be
    /// empty; `fstype` as `mount -t` takes it, empty to let mount probe).
    /// `None`, after a loud skip line naming `test`, when the copy or the
    /// mount fails (no root, no loop devices, no driver).
    pub fn new(img: &Path, fstype: &str, opts: &str, test: &str) -> Option<LoopMount> {
        let dir = std::env::temp_dir().join(format!(
            "flr-loop-{}-{}",
            std::process::id(),
            NEXT_MOUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).ok()?;
        let copy = dir.join("image");
        let cp = Command::new("cp")
            .arg("--sparse=always")
            .arg(img)
            .arg(&copy)
            .status();
        if !cp.is_ok_and(|s| s.success()) {
            loud(&format!("SKIPPED {test}: cannot copy {}", img.display()));
            let _ = std::fs::remove_dir_all(&dir);
            return None;
        }
        let mut o = String::from("loop,ro");
        if !opts.is_empty() {
            o.push(',');
            o.push_str(opts);
        }
        let mut cmd = Command::new("mount");
        if !fstype.is_empty() {
            cmd.arg("-t").arg(fstype);
        }
        let out = cmd.arg("-o").arg(&o).arg(&copy).arg(&mnt).output();
        match out {
            Ok(o) if o.status.success() => Some(LoopMount { dir, mnt }),
            other => {
                loud(&format!(
                    "SKIPPED {test}: cannot loop-mount {} (needs root and loop devices): {}",
                    img.display(),
                    other
                        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
                        .unwrap_or_else(|e| e.to_string())
                ));
                let _ = std::fs::remove_dir_all(&dir);
                None
            }
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mnt
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static NEXT_MOUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One extent as the kernel's FIEMAP reports it through `filefrag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fiemap {
    /// Byte offset in the file.
    pub logical: u64,
    /// Byte offset on the device (Btrfs: its logical address space).
    pub physical: u64,
    /// Length in bytes.
    pub len: u64,
    /// filefrag's flags (`last`, `eof`, `unwritten`, `inline`, `encoded`,
    /// `shared`, `merged`...).
    pub flags: Vec<String>,
}

/// `filefrag -e -v -b1 FILE`: the file's extents in bytes, as the kernel
/// maps them. `None` when filefrag is missing or fails on the file.
pub fn filefrag(file: &Path) -> Option<Vec<Fiemap>> {
    let out = Command::new("filefrag")
        .args(["-e", "-v", "-b1"])
        .arg(file)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v = Vec::new();
    for line in text.lines() {
        // "   0:        0..    4095:   19206144..  19210239:   4096:     last,eof"
        let mut cols = line.split(':');
        let Some(first) = cols.next() else { continue };
        if first.trim().parse::<u64>().is_err() {
            continue;
        }
        let cols: Vec<&str> = cols.map(str::trim).collect();
        let start = |s: &str| {
            s.split("..")
                .next()
                .and_then(|a| a.trim().parse::<u64>().ok())
        };
        let (Some(logical), Some(physical), Some(len)) = (
            cols.first().and_then(|c| start(c)),
            cols.get(1).and_then(|c| start(c)),
            cols.get(2).and_then(|c| c.parse::<u64>().ok()),
        ) else {
            continue;
        };
        // The last column holds the flags; "expected" (when present) sits
        // before it.
        let flags = cols
            .last()
            .filter(|_| cols.len() > 3)
            .map(|f| {
                f.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty() && s.parse::<u64>().is_err())
                    .collect()
            })
            .unwrap_or_default();
        v.push(Fiemap {
            logical,
            physical,
            len,
            flags,
        });
    }
    Some(v)
}

/// Byte ranges sorted and with touching or overlapping ones joined: the
/// form in which two tools' extent lists are compared.
pub fn normalize_ranges(r: impl IntoIterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = r.into_iter().filter(|&(_, l)| l > 0).collect();
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (o, l) in v {
        if let Some(last) = out.last_mut() {
            if o <= last.0 + last.1 {
                last.1 = last.1.max(o + l - last.0);
                continue;
            }
        }
        out.push((o, l));
    }
    out
}
