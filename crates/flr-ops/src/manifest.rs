//! `flr manifest`: path, type, size, mtime, mode and sha256 of every object
//! of every volume, as one JSON document (`flr verify --manifest` compares
//! an image against it).
//!
//! The document is written one entry per line, so baselines diff well:
//!
//! ```text
//! {"format":"flr-manifest","version":1,"image":"disk.vhd","created":"…","volumes":[
//! {"id":"p2","fs_type":"ext4","label":"root","fs_id":"…","entries":[
//! {"path":"/etc/hosts","type":"file","size":50,"mtime":"2023-11-14T22:13:20Z","mode":"0644","sha256":"…"},
//! …
//! ]}
//! ]}
//! ```
//!
//! Paths are UTF-8 when the name is (FAT, NTFS, most ext); a path that is
//! not also carries `path_hex`, its exact bytes, which is what comparisons
//! use.

use std::cell::RefCell;
use std::collections::HashSet;
use std::time::Instant;

use flr_engine::Image;
use flr_fs::{FileKind, Filesystem, FsError, FsPath, Metadata, Timestamp};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ls::{format_time, MAX_DEPTH};
use crate::{AlignedBuf, Context, OpsError};

/// A manifest: what every volume held when it was made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `flr-manifest`.
    pub format: String,
    /// Format version (1).
    pub version: u32,
    /// The image it was made from, as given.
    pub image: String,
    /// When it was made (UTC, RFC 3339).
    pub created: String,
    /// One per volume whose files were listed.
    pub volumes: Vec<ManifestVolume>,
}

/// One volume of a manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestVolume {
    /// Volume id (`p2`).
    pub id: String,
    /// Filesystem type.
    #[serde(default)]
    pub fs_type: Option<String>,
    /// Volume label.
    #[serde(default)]
    pub label: Option<String>,
    /// Filesystem UUID or serial.
    #[serde(default)]
    pub fs_id: Option<String>,
    /// Every object but the root folder, sorted by path bytes.
    pub entries: Vec<Entry>,
}

/// One object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// `/`-separated path from the volume's root (lossy UTF-8 when the
    /// name's bytes are not UTF-8; then `path_hex` holds them).
    pub path: String,
    /// The exact path bytes, hex, when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    /// `file`, `dir`, `symlink`, `special`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Size in bytes (a symlink: its target's length).
    pub size: u64,
    /// Modification time, UTC, RFC 3339 with nanoseconds when not whole.
    #[serde(default)]
    pub mtime: Option<String>,
    /// Creation (birth) time, where the filesystem has one (same format);
    /// informative: a restore cannot set it, `verify` does not compare it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub btime: Option<String>,
    /// Last status change time, where the filesystem has one; informative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctime: Option<String>,
    /// Unix permission bits, octal, where the filesystem has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// sha256 of a file's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A symlink's target (lossy UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Why a file's data could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
    /// The file id (inode, MFT record number), where the filesystem has
    /// one: `verify --since` carries a hash only to the same object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inode: Option<u64>,
    /// Set when the sha256 was not read from this image but carried from a
    /// baseline whose blocks prove it unchanged (`verify --since`): the id
    /// of the image it was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried: Option<String>,
    /// Windows attributes, reparse kind, owner SID and SDDL (NTFS, FAT;
    /// absent in manifests of other filesystems and older manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<crate::WindowsEntry>,
}

impl Entry {
    /// The exact path bytes: the key comparisons use.
    pub fn key(&self) -> Vec<u8> {
        self.path_hex
            .as_deref()
            .and_then(|h| hex::decode(h).ok())
            .unwrap_or_else(|| self.path.as_bytes().to_vec())
    }
}

/// The path bytes `/a/b` of an `FsPath`.
pub(crate) fn path_bytes(p: &FsPath) -> Vec<u8> {
    let mut v = Vec::new();
    for c in &p.0 {
        v.push(b'/');
        v.extend_from_slice(c);
    }
    if v.is_empty() {
        v.push(b'/');
    }
    v
}

/// `2023-11-14T22:13:20Z` (with `.nnnnnnnnn` when the nanoseconds are not 0).
pub(crate) fn rfc3339(t: Timestamp) -> String {
    let base = format_time(t).replace(' ', "T");
    if t.nanos == 0 {
        format!("{base}Z")
    } else {
        format!("{base}.{:09}Z", t.nanos)
    }
}

/// Now, as RFC 3339.
pub(crate) fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(Timestamp {
        secs: i64::try_from(d.as_secs()).unwrap_or(0),
        nanos: 0,
    })
}

pub(crate) fn kind_name(k: FileKind) -> &'static str {
    match k {
        FileKind::File => "file",
        FileKind::Dir => "dir",
        FileKind::Symlink => "symlink",
        FileKind::Special => "special",
    }
}

/// One object found by [`walk`].
pub(crate) struct Found {
    pub(crate) path: FsPath,
    pub(crate) meta: Metadata,
    pub(crate) target: Option<Vec<u8>>,
}

impl Found {
    /// The manifest entry, without the file's sha256.
    pub(crate) fn entry(&self) -> Entry {
        let bytes = path_bytes(&self.path);
        let utf8 = std::str::from_utf8(&bytes).is_ok();
        Entry {
            path: String::from_utf8_lossy(&bytes).into_owned(),
            path_hex: (!utf8).then(|| hex::encode(&bytes)),
            kind: kind_name(self.meta.kind).into(),
            size: self.meta.size,
            mtime: self.meta.mtime.map(rfc3339),
            btime: self.meta.btime.map(rfc3339),
            ctime: self.meta.ctime.map(rfc3339),
            mode: self.meta.mode.map(|m| format!("{:04o}", m & 0o7777)),
            sha256: None,
            target: self
                .target
                .as_ref()
                .map(|t| String::from_utf8_lossy(t).into_owned()),
            unreadable: self.meta.unreadable.clone(),
            inode: self.meta.inode,
            carried: None,
            windows: None,
        }
    }
}

/// Walks a whole filesystem, depth first, sorted by name. Folders that
/// cannot be read (and loops, and too-deep nesting) are reported in
/// `errors` and the walk goes on.
pub(crate) fn walk(fs: &dyn Filesystem, errors: &mut Vec<String>) -> Vec<Found> {
    let mut out = Vec::new();
    let root_inode = fs.metadata(&FsPath::root()).ok().and_then(|m| m.inode);
    // (folder, depth, ancestors' inodes)
    // One level of folders at a time, listed in parallel: over a network
    // each listing is a round trip or more, and sibling folders' listings
    // need not wait for each other. The results are taken in name order.
    let mut level: Vec<(FsPath, usize, Vec<u64>)> =
        vec![(FsPath::root(), 0, root_inode.into_iter().collect())];
    while !level.is_empty() {
        let listed: Vec<_> = level
            .par_iter()
            .map(|(dir, depth, _)| (*depth <= MAX_DEPTH).then(|| fs.read_dir(dir)))
            .collect();
        let mut next = Vec::new();
        for ((dir, depth, ancestors), listing) in level.into_iter().zip(listed) {
            walk_listing(
                fs, dir, depth, ancestors, listing, &mut out, &mut next, errors,
            );
        }
        level = next;
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// One folder's listing in [`walk`]: its entries to `out`, its subfolders
/// to `next`.
#[allow(clippy::too_many_arguments)]
fn walk_listing(
    fs: &dyn Filesystem,
    dir: FsPath,
    depth: usize,
    ancestors: Vec<u64>,
    listing: Option<Result<Vec<flr_fs::DirEntry>, FsError>>,
    out: &mut Vec<Found>,
    next: &mut Vec<(FsPath, usize, Vec<u64>)>,
    errors: &mut Vec<String>,
) {
    {
        let Some(listing) = listing else {
            errors.push(format!(
                "{dir}: folders nested deeper than {MAX_DEPTH} levels (a loop?)"
            ));
            return;
        };
        let mut entries = match listing {
            Ok(e) => e,
            Err(e) => {
                errors.push(format!("{dir}: cannot list the folder: {e}"));
                return;
            }
        };
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let mut names = HashSet::new();
        let mut subdirs = Vec::new();
        for e in entries {
            if !names.insert(e.name.clone()) {
                errors.push(format!("{}: listed twice in its folder", dir.join(&e.name)));
                continue;
            }
            let path = dir.join(&e.name);
            let target = if e.meta.kind == FileKind::Symlink {
                match fs.read_link(&path) {
                    Ok(t) => Some(t),
                    Err(err) => {
                        errors.push(format!("{path}: cannot read the link: {err}"));
                        None
                    }
                }
            } else {
                None
            };
            if e.meta.kind == FileKind::Dir {
                match e.meta.inode {
                    Some(i) if ancestors.contains(&i) => {
                        errors.push(format!(
                            "{path}: folder loop (inode {i} is also one of its parents)"
                        ));
                    }
                    i => {
                        let mut a = ancestors.clone();
                        a.extend(i);
                        subdirs.push((path.clone(), depth + 1, a));
                    }
                }
            }
            out.push(Found {
                path,
                meta: e.meta,
                target,
            });
        }
        next.extend(subdirs);
    }
}

/// Read size for hashing: large sequential reads.
const HASH_CHUNK: usize = 1 << 20;

thread_local! {
    static HASH_BUF: RefCell<Option<AlignedBuf>> = const { RefCell::new(None) };
}

/// Why hashing stopped early.
pub(crate) enum HashError {
    /// The filesystem failed.
    Fs(FsError),
    /// `keep_going` said stop (time budget).
    Stopped,
}

/// sha256 of a file's data, read in large sequential pieces. `keep_going`
/// is asked between pieces.
pub(crate) fn hash_file(
    fs: &dyn Filesystem,
    path: &FsPath,
    mut on_bytes: impl FnMut(u64) -> bool,
) -> Result<(String, u64), HashError> {
    let mut h = fs.open(path).map_err(HashError::Fs)?;
    let size = h.size();
    HASH_BUF.with(|cell| {
        let mut slot = cell.borrow_mut();
        let buf = slot
            .get_or_insert_with(|| AlignedBuf::new(HASH_CHUNK))
            .as_mut();
        let mut hasher = Sha256::new();
        let mut off = 0u64;
        while off < size {
            let want = usize::try_from((size - off).min(buf.len() as u64)).unwrap_or(buf.len());
            let n = h.read_at(off, &mut buf[..want]).map_err(HashError::Fs)?;
            if n == 0 {
                return Err(HashError::Fs(FsError::Corrupt {
                    fs: "filesystem",
                    offset: None,
                    what: format!("{path}: data ends at {off} bytes, but the size is {size}"),
                }));
            }
            hasher.update(&buf[..n]);
            off += n as u64;
            if !on_bytes(n as u64) {
                return Err(HashError::Stopped);
            }
        }
        Ok((hex::encode(hasher.finalize()), off))
    })
}

/// Options of `manifest`.
#[derive(Debug, Clone, Default)]
pub struct ManifestOptions {
    /// Only these volumes (all readable ones when empty).
    pub volumes: Vec<String>,
    /// Draw a progress bar on stderr (the session decides when).
    pub progress: bool,
}

/// Writes the manifest of every readable volume (or those asked for) to
/// `ctx.out`. Volumes that cannot be read are named on `ctx.err`; asking
/// for one by id is an error.
pub fn manifest(
    image: &Image,
    opts: &ManifestOptions,
    ctx: &mut Context<'_>,
) -> Result<Manifest, OpsError> {
    let volumes = crate::selected_volumes(image, &opts.volumes)?;
    let started = Instant::now();
    let mut m = Manifest {
        format: "flr-manifest".into(),
        version: 1,
        image: image.location.clone(),
        created: now_rfc3339(),
        volumes: Vec::new(),
    };
    let mut problems = 0usize;
    for v in &volumes {
        if v.content.verdict != flr_engine::Verdict::Readable {
            if opts.volumes.contains(&v.id) {
                v.open_fs()?;
            }
            writeln!(
                ctx.err,
                "flr: manifest: {} skipped ({}): {}",
                v.id, v.content.verdict, v.content.detail
            )?;
            continue;
        }
        let fs = v.open_fs()?;
        let mut errors = Vec::new();
        let found = walk(fs.as_ref(), &mut errors);
        let hashed = |f: &&Found| f.meta.kind == FileKind::File && f.meta.unreadable.is_none();
        let bar = crate::progress::Progress::new(
            opts.progress,
            &format!("manifest {}", v.id),
            Some(found.iter().filter(hashed).map(|f| f.meta.size).sum()),
            found.iter().filter(hashed).count() as u64,
        );
        let files_done = std::sync::atomic::AtomicU64::new(0);
        let (entries, win_errors): (Vec<Entry>, Vec<Option<String>>) = found
            .par_iter()
            .map(|f| {
                let mut e = f.entry();
                let win_error = match crate::winmeta::entry_of(fs.as_ref(), &f.path) {
                    Ok(w) => {
                        e.windows = w;
                        None
                    }
                    Err(err) => Some(format!("{}: Windows metadata not read: {err}", e.path)),
                };
                if hashed(&f) {
                    let r = hash_file(fs.as_ref(), &f.path, |n| {
                        bar.bytes(n);
                        true
                    });
                    bar.set_files(
                        files_done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
                    );
                    match r {
                        Ok((sha, _)) => e.sha256 = Some(sha),
                        Err(HashError::Fs(err)) => e.unreadable = Some(err.to_string()),
                        Err(HashError::Stopped) => {}
                    }
                }
                (e, win_error)
            })
            .unzip();
        errors.extend(win_errors.into_iter().flatten());
        bar.finish();
        for e in entries.iter().filter(|e| e.unreadable.is_some()) {
            problems += 1;
            writeln!(
                ctx.err,
                "flr: manifest: {}:{}: unreadable: {}",
                v.id,
                e.path,
                e.unreadable.as_deref().unwrap_or_default()
            )?;
        }
        for e in &errors {
            problems += 1;
            writeln!(ctx.err, "flr: manifest: {}:{e}", v.id)?;
        }
        let info = v.content.fs.clone().unwrap_or_else(|| fs.info());
        m.volumes.push(ManifestVolume {
            id: v.id.clone(),
            fs_type: Some(info.fs_type),
            label: info.label,
            fs_id: info.id,
            entries,
        });
    }
    write_manifest(&m, ctx.out)?;
    writeln!(
        ctx.err,
        "flr: manifest: {} volume(s), {} entries, {} problem(s), {:.1} s",
        m.volumes.len(),
        m.volumes.iter().map(|v| v.entries.len()).sum::<usize>(),
        problems,
        started.elapsed().as_secs_f64()
    )?;
    Ok(m)
}

/// Writes `m` as JSON, one entry per line.
pub fn write_manifest(m: &Manifest, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    write!(
        out,
        "{{\"format\":{},\"version\":{},\"image\":{},\"created\":{},\"volumes\":[",
        s(&m.format),
        m.version,
        s(&m.image),
        s(&m.created)
    )?;
    for (i, v) in m.volumes.iter().enumerate() {
        write!(
            out,
            "{}\n{{\"id\":{},\"fs_type\":{},\"label\":{},\"fs_id\":{},\"entries\":[",
            if i == 0 { "" } else { "," },
            s(&v.id),
            s(&v.fs_type),
            s(&v.label),
            s(&v.fs_id)
        )?;
        for (k, e) in v.entries.iter().enumerate() {
            write!(out, "{}\n{}", if k == 0 { "" } else { "," }, s(e))?;
        }
        write!(out, "\n]}}")?;
    }
    writeln!(out, "\n]}}")?;
    Ok(())
}

/// A value as compact JSON.
fn s<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Reads a manifest written by `flr manifest`.
pub fn read_manifest(text: &str) -> Result<Manifest, String> {
    let m: Manifest = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if m.format != "flr-manifest" {
        return Err(format!("not an flr manifest (format {:?})", m.format));
    }
    if m.version != 1 {
        return Err(format!("manifest version {} is not supported", m.version));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(
            rfc3339(Timestamp {
                secs: 1_700_000_000,
                nanos: 0
            }),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            rfc3339(Timestamp { secs: 0, nanos: 5 }),
            "1970-01-01T00:00:00.000000005Z"
        );
    }

    /// A manifest written before the `windows` field existed still reads,
    /// and one with it keeps it.
    #[test]
    fn windows_field_is_optional() {
        let old = r#"{"format":"flr-manifest","version":1,"image":"x","created":"t","volumes":[
{"id":"p1","fs_type":"ntfs","label":null,"fs_id":null,"entries":[
{"path":"/a","type":"file","size":1,"mtime":null,"sha256":"00"}
]}
]}"#;
        let m = read_manifest(old).unwrap();
        assert_eq!(m.volumes[0].entries[0].windows, None);
        let new = old.replace(
            r#""sha256":"00"}"#,
            r#""sha256":"00","windows":{"attributes":"0x00000022","attribute_names":["hidden","archive"],"owner":"S-1-5-18","sddl":"O:SY"}}"#,
        );
        let m = read_manifest(&new).unwrap();
        let w = m.volumes[0].entries[0].windows.as_ref().unwrap();
        assert_eq!(w.attributes, "0x00000022");
        assert_eq!(w.owner.as_deref(), Some("S-1-5-18"));
        let mut out = Vec::new();
        write_manifest(&m, &mut out).unwrap();
        assert_eq!(
            read_manifest(std::str::from_utf8(&out).unwrap())
                .unwrap()
                .volumes[0]
                .entries[0]
                .windows,
            m.volumes[0].entries[0].windows
        );
    }

    #[test]
    fn written_manifests_read_back() {
        let m = Manifest {
            format: "flr-manifest".into(),
            version: 1,
            image: "a \"b\".vhd".into(),
            created: now_rfc3339(),
            volumes: vec![ManifestVolume {
                id: "p1".into(),
                fs_type: Some("ext4".into()),
                label: None,
                fs_id: None,
                entries: vec![
                    Entry {
                        path: "/a".into(),
                        path_hex: None,
                        kind: "file".into(),
                        size: 3,
                        mtime: Some("2023-11-14T22:13:20Z".into()),
                        btime: None,
                        ctime: None,
                        mode: Some("0644".into()),
                        sha256: Some("00".into()),
                        target: None,
                        unreadable: None,
                        inode: Some(12),
                        carried: None,
                        windows: None,
                    },
                    Entry {
                        path: "/\u{fffd}".into(),
                        path_hex: Some("2fff".into()),
                        kind: "dir".into(),
                        size: 0,
                        mtime: None,
                        btime: None,
                        ctime: None,
                        mode: None,
                        sha256: None,
                        target: None,
                        unreadable: None,
                        inode: Some(12),
                        carried: None,
                        windows: None,
                    },
                ],
            }],
        };
        let mut out = Vec::new();
        write_manifest(&m, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 6, "{text}");
        let back = read_manifest(&text).unwrap();
        assert_eq!(back.volumes[0].entries, m.volumes[0].entries);
        assert_eq!(back.volumes[0].entries[1].key(), b"/\xff");
        assert!(read_manifest(
            "{\"format\":\"x\",\"version\":1,\"image\":\"\",\"created\":\"\",\"volumes\":[]}"
        )
        .is_err());
    }
}
