//! `flr diff OLD NEW`: what changed between two versions of a disk (two
//! snapshots, a differencing disk and its parent), file by file.
//!
//! The newer image's stack answers [`flr_io::ReadAt::changed`] (the page
//! ranges two snapshots differ in, the blocks a child disk holds, a block
//! compare), and each filesystem says which volume bytes define a file or
//! folder ([`Filesystem::extents`]). The comparison walks the newer tree:
//!
//! * a folder whose bytes did not change lists the same names and file ids
//!   as before, so its entries are paired by name without reading the older
//!   listing; a changed folder's two listings are compared, entries paired
//!   by name and file id;
//! * an entry whose bytes did not change is equal, nothing more is read;
//!   otherwise its metadata is compared (type, size, mtime, mode, owner,
//!   link target) and, for a file, its content: equal without reading when
//!   both versions map the same unchanged data extents, else by size and
//!   then by the sha256 of both;
//! * an object removed from one place and added at another with the same
//!   file id (inode, MFT record) is reported as renamed.
//!
//! When the stack cannot say what changed, or the filesystem cannot map a
//! file to its bytes, or a journal was replayed in memory (the filesystem's
//! view is then not its volume's bytes), every folder is compared: the
//! report's `mode` says `whole-tree` instead of `changed-folders`.
//!
//! # JSON Lines (`--json`), version 1
//! One object per line. Each change:
//! `{"version":1,"type":"change","volume":"p1","change":"changed","path":"/a","old_path":null,"kind":"file","fields":["content","size"],"old_size":1,"new_size":2}`
//! with `change` one of `added`, `removed`, `changed`, `renamed` (then
//! `old_path` is the former path and `fields` what else differs) and
//! `fields` from `type`, `content`, `size`, `mtime`, `mode`, `owner`,
//! `target`. Then one summary per volume:
//! `{"version":1,"type":"summary","volume":"p1","mode":"changed-folders",…}`
//! with the counts and bytes of [`DiffSummary`].

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use flr_engine::Image;
use flr_fs::{FileKind, Filesystem, FsError, FsPath, Journal, Metadata};
use flr_io::{Change, ReadAt};
use serde::Serialize;

use crate::manifest::{hash_file, kind_name, HashError};
use crate::{Context, OpsError, OutputFormat, VolPath};

/// The JSON Lines schema version.
pub const DIFF_VERSION: u32 = 1;

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// In the newer version only.
    Added,
    /// In the older version only.
    Removed,
    /// At the same path in both, different.
    Changed,
    /// Moved to another path (the same file id); `fields` says what else.
    Renamed,
}

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffEntry {
    /// Added, removed, changed, renamed.
    pub change: ChangeKind,
    /// The path (the newer one; a removed object's former path).
    pub path: String,
    /// A renamed object's former path.
    pub old_path: Option<String>,
    /// `file`, `dir`, `symlink`, `special` (the newer version's).
    pub kind: &'static str,
    /// What differs: `type`, `content`, `size`, `mtime`, `mode`, `owner`,
    /// `target`.
    pub fields: Vec<&'static str>,
    /// Size before.
    pub old_size: Option<u64>,
    /// Size after.
    pub new_size: Option<u64>,
}

/// Whether folders were skipped by their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiffMode {
    /// Only folders whose bytes changed were compared listing by listing.
    ChangedFolders,
    /// Every folder was compared (nothing says what changed).
    WholeTree,
}

/// Counts and bytes of one volume's comparison.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiffSummary {
    /// Objects added.
    pub added: u64,
    /// Objects removed.
    pub removed: u64,
    /// Objects changed in place.
    pub changed: u64,
    /// Objects renamed or moved.
    pub renamed: u64,
    /// Bytes of the added files.
    pub bytes_added: u64,
    /// Bytes of the removed files.
    pub bytes_removed: u64,
    /// Bytes of the changed files (their newer size).
    pub bytes_changed: u64,
    /// Objects of the newer tree visited.
    pub objects: u64,
    /// Objects proven equal by their bytes alone (nothing else read).
    pub proven_unchanged: u64,
    /// Folders whose two listings were compared.
    pub folders_compared: u64,
    /// Files whose content was hashed in both versions.
    pub files_hashed: u64,
    /// Bytes hashed (both versions together).
    pub bytes_hashed: u64,
    /// Seconds.
    pub seconds: f64,
}

/// The comparison of one volume.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeDiff {
    /// Volume id.
    pub volume: String,
    /// Changed folders only, or the whole tree.
    pub mode: DiffMode,
    /// Why the whole tree was compared, when it was.
    pub mode_reason: Option<String>,
    /// The differences, sorted by path.
    pub entries: Vec<DiffEntry>,
    /// Counts and bytes.
    pub summary: DiffSummary,
    /// Folders that could not be read, and other problems (the comparison
    /// goes on).
    pub errors: Vec<String>,
}

/// Options of `diff`.
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// One volume, and the folder to start at (`ID:/path`); every volume
    /// the two images share when `None`.
    pub path: Option<VolPath>,
}

/// Compares the volumes of `old` and `new` (the newer image's stack
/// answering `changed`) and writes the report: text, or JSON Lines.
pub fn diff(
    old: &Image,
    new: &Image,
    opts: &DiffOptions,
    ctx: &mut Context<'_>,
) -> Result<Vec<VolumeDiff>, OpsError> {
    let mut out = Vec::new();
    let ids: Vec<String> = match &opts.path {
        Some(p) => vec![p.volume.clone()],
        None => new
            .volumes
            .iter()
            .filter(|v| v.is_readable())
            .map(|v| v.id.clone())
            .filter(|id| old.volumes.iter().any(|o| &o.id == id && o.is_readable()))
            .collect(),
    };
    if ids.is_empty() {
        return Err(OpsError::Usage(
            "diff: the two images have no readable volume in common".into(),
        ));
    }
    let root = opts
        .path
        .as_ref()
        .map(|p| p.path.clone())
        .unwrap_or_default();
    for id in ids {
        let ov = old.volume(&id)?;
        let nv = new.volume(&id)?;
        let ofs = ov.open_fs()?;
        let nfs = nv.open_fs()?;
        let d = diff_fs(&id, ofs.as_ref(), nfs.as_ref(), nv.source().as_ref(), &root).map_err(
            |source| OpsError::Fs {
                volume: id.clone(),
                source,
            },
        )?;
        write_diff(&d, ctx)?;
        out.push(d);
    }
    Ok(out)
}

/// Writes one volume's comparison as text or JSON Lines.
pub fn write_diff(d: &VolumeDiff, ctx: &mut Context<'_>) -> Result<(), OpsError> {
    match ctx.format {
        OutputFormat::Json => {
            #[derive(Serialize)]
            struct Line<'a> {
                version: u32,
                #[serde(rename = "type")]
                ty: &'static str,
                volume: &'a str,
                #[serde(flatten)]
                entry: &'a DiffEntry,
            }
            #[derive(Serialize)]
            struct Sum<'a> {
                version: u32,
                #[serde(rename = "type")]
                ty: &'static str,
                volume: &'a str,
                mode: DiffMode,
                mode_reason: &'a Option<String>,
                errors: &'a [String],
                #[serde(flatten)]
                summary: &'a DiffSummary,
            }
            for e in &d.entries {
                let l = Line {
                    version: DIFF_VERSION,
                    ty: "change",
                    volume: &d.volume,
                    entry: e,
                };
                writeln!(ctx.out, "{}", serde_json::to_string(&l).unwrap_or_default())?;
            }
            let s = Sum {
                version: DIFF_VERSION,
                ty: "summary",
                volume: &d.volume,
                mode: d.mode,
                mode_reason: &d.mode_reason,
                errors: &d.errors,
                summary: &d.summary,
            };
            writeln!(ctx.out, "{}", serde_json::to_string(&s).unwrap_or_default())?;
        }
        OutputFormat::Human => {
            for e in &d.entries {
                let mark = match e.change {
                    ChangeKind::Added => "A",
                    ChangeKind::Removed => "D",
                    ChangeKind::Changed => "M",
                    ChangeKind::Renamed => "R",
                };
                let what = if e.fields.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", e.fields.join(", "))
                };
                match &e.old_path {
                    Some(o) => writeln!(ctx.out, "{mark} {}:{o} -> {}{what}", d.volume, e.path)?,
                    None => writeln!(ctx.out, "{mark} {}:{}{what}", d.volume, e.path)?,
                }
            }
            let s = &d.summary;
            writeln!(
                ctx.err,
                "flr: diff {}: {} added ({} B), {} removed ({} B), {} changed ({} B), {} renamed; \
                 {} objects, {} proven unchanged by their blocks, {} folders compared, {} files hashed ({} B); \
                 mode {}{}; {:.2} s",
                d.volume,
                s.added,
                s.bytes_added,
                s.removed,
                s.bytes_removed,
                s.changed,
                s.bytes_changed,
                s.renamed,
                s.objects,
                s.proven_unchanged,
                s.folders_compared,
                s.files_hashed,
                s.bytes_hashed,
                match d.mode {
                    DiffMode::ChangedFolders => "changed-folders",
                    DiffMode::WholeTree => "whole-tree",
                },
                d.mode_reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                s.seconds
            )?;
            for e in &d.errors {
                writeln!(ctx.err, "flr: diff {}: {e}", d.volume)?;
            }
        }
    }
    Ok(())
}

/// Why changed ranges cannot be trusted for this pair, if they cannot.
pub(crate) fn distrust(
    old: &dyn Filesystem,
    new: &dyn Filesystem,
    new_src: &dyn ReadAt,
    root: &FsPath,
) -> Option<String> {
    replayed(old, "older")
        .or_else(|| distrust_new(new, new_src))
        .or_else(|| match new.extents(root) {
            Ok(_) => None,
            Err(e) => Some(format!("{root}: {e}")),
        })
}

/// Why the older filesystem's view may differ from its volume's bytes.
pub(crate) fn replayed(fs: &dyn Filesystem, which: &str) -> Option<String> {
    matches!(fs.consistency().journal, Journal::Replayed { .. }).then(|| {
        format!(
            "the {which} filesystem's {} was replayed in memory",
            match fs.consistency().journal_name {
                "" => "journal",
                n => n,
            }
        )
    })
}

/// Why the newer filesystem's blocks cannot say what changed, if they
/// cannot: its stack does not know, its reader cannot map files, or a
/// journal was replayed (ext2/3/4 name the journal copies they read, so
/// theirs is trusted).
pub(crate) fn distrust_new(new: &dyn Filesystem, new_src: &dyn ReadAt) -> Option<String> {
    if new_src.changed(0, new_src.len().max(1)) == Change::Unknown {
        return Some("the image's stack does not say which blocks changed".into());
    }
    let ty = new.info().fs_type;
    if !ty.starts_with("ext") {
        if let Some(r) = replayed(new, "newer") {
            return Some(r);
        }
    }
    match new.extents(&FsPath::root()) {
        Ok(Some(_)) => None,
        Ok(None) => Some(format!("{ty} cannot map files to their blocks")),
        Err(e) => Some(format!("/: {e}")),
    }
}

/// One object of a listing.
#[derive(Clone)]
struct Obj {
    path: FsPath,
    meta: Metadata,
}

struct Walker<'a> {
    old: &'a dyn Filesystem,
    new: &'a dyn Filesystem,
    src: &'a dyn ReadAt,
    trust: bool,
    out: VolumeDiff,
    /// Objects present only in the older version, by file id (rename
    /// candidates), and those without one.
    removed: Vec<Obj>,
    added: Vec<Obj>,
}

/// Compares one filesystem's two versions below `root`. `new_src` is the
/// newer filesystem's volume (it answers `changed`).
pub fn diff_fs(
    volume: &str,
    old: &dyn Filesystem,
    new: &dyn Filesystem,
    new_src: &dyn ReadAt,
    root: &FsPath,
) -> Result<VolumeDiff, FsError> {
    let t0 = Instant::now();
    let reason = distrust(old, new, new_src, root);
    let mut w = Walker {
        old,
        new,
        src: new_src,
        trust: reason.is_none(),
        out: VolumeDiff {
            volume: volume.into(),
            mode: if reason.is_none() {
                DiffMode::ChangedFolders
            } else {
                DiffMode::WholeTree
            },
            mode_reason: reason,
            entries: Vec::new(),
            summary: DiffSummary::default(),
            errors: Vec::new(),
        },
        removed: Vec::new(),
        added: Vec::new(),
    };
    let om = old.metadata(root)?;
    let nm = new.metadata(root)?;
    if om.kind != FileKind::Dir || nm.kind != FileKind::Dir {
        return Err(FsError::NotADirectory {
            path: root.to_string(),
        });
    }
    w.folder(root, root, 0)?;
    w.pair_renames();
    w.out
        .entries
        .sort_by(|a, b| a.path.cmp(&b.path).then(a.change.cmp(&b.change)));
    w.out.summary.seconds = t0.elapsed().as_secs_f64();
    Ok(w.out)
}

/// `owner` when uid or gid differ.
fn meta_fields(a: &Metadata, b: &Metadata) -> Vec<&'static str> {
    let mut f = Vec::new();
    if a.kind != b.kind {
        f.push("type");
        return f;
    }
    if a.size != b.size {
        f.push("size");
    }
    if a.mtime != b.mtime {
        f.push("mtime");
    }
    if a.mode != b.mode {
        f.push("mode");
    }
    if a.uid != b.uid || a.gid != b.gid {
        f.push("owner");
    }
    f
}

/// Same object in both listings: same name and, where both have one, the
/// same file id and kind.
fn same_object(a: &Metadata, b: &Metadata) -> bool {
    match (a.inode, b.inode) {
        (Some(x), Some(y)) => x == y,
        _ => a.kind == b.kind,
    }
}

const MAX_DEPTH: usize = crate::ls::MAX_DEPTH;

impl Walker<'_> {
    fn unchanged(&self, path: &FsPath) -> bool {
        if !self.trust {
            return false;
        }
        match self.new.extents(path) {
            Ok(Some(x)) => x.changed(self.src) == Change::Unchanged,
            _ => false,
        }
    }

    fn list(fs: &dyn Filesystem, dir: &FsPath) -> Result<BTreeMap<Vec<u8>, Metadata>, FsError> {
        Ok(fs
            .read_dir(dir)?
            .into_iter()
            .map(|e| (e.name, e.meta))
            .collect())
    }

    /// Compares the folder at `op` (older) with the one at `np` (newer),
    /// known to be the same object.
    fn folder(&mut self, op: &FsPath, np: &FsPath, depth: usize) -> Result<(), FsError> {
        if depth > MAX_DEPTH {
            self.out.errors.push(format!(
                "{np}: folders nested deeper than {MAX_DEPTH} levels"
            ));
            return Ok(());
        }
        let newer = match Self::list(self.new, np) {
            Ok(l) => l,
            Err(e) => {
                self.out
                    .errors
                    .push(format!("{np}: cannot list the newer folder: {e}"));
                return Ok(());
            }
        };
        // An unchanged folder lists what it listed before.
        let same_listing = self.unchanged(np);
        let older = if same_listing {
            None
        } else {
            self.out.summary.folders_compared += 1;
            match Self::list(self.old, op) {
                Ok(l) => Some(l),
                Err(e) => {
                    self.out
                        .errors
                        .push(format!("{op}: cannot list the older folder: {e}"));
                    return Ok(());
                }
            }
        };
        for (name, nm) in &newer {
            self.out.summary.objects += 1;
            let npath = np.join(name);
            let opath = op.join(name);
            let om = match &older {
                None => None, // same object, metadata read only if needed
                Some(o) => match o.get(name) {
                    Some(om) if same_object(om, nm) => Some(om.clone()),
                    _ => {
                        self.added.push(Obj {
                            path: npath,
                            meta: nm.clone(),
                        });
                        continue;
                    }
                },
            };
            self.object(&opath, &npath, om, nm, depth)?;
        }
        if let Some(o) = &older {
            for (name, om) in o {
                let paired = newer.get(name).is_some_and(|nm| same_object(om, nm));
                if !paired {
                    self.removed.push(Obj {
                        path: op.join(name),
                        meta: om.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// One object present at both paths (the same file id).
    fn object(
        &mut self,
        op: &FsPath,
        np: &FsPath,
        om: Option<Metadata>,
        nm: &Metadata,
        depth: usize,
    ) -> Result<(), FsError> {
        if self.unchanged(np) {
            self.out.summary.proven_unchanged += 1;
            if nm.kind == FileKind::Dir {
                self.folder(op, np, depth + 1)?;
            }
            return Ok(());
        }
        let om = match om {
            Some(m) => m,
            None => match self.old.metadata(op) {
                Ok(m) => m,
                Err(e) => {
                    self.out.errors.push(format!("{op}: older version: {e}"));
                    return Ok(());
                }
            },
        };
        let fields = self.compare(op, np, &om, nm);
        if !fields.is_empty() {
            self.push(ChangeKind::Changed, np, None, &om, nm, fields);
        }
        if nm.kind == FileKind::Dir && om.kind == FileKind::Dir {
            self.folder(op, np, depth + 1)?;
        }
        Ok(())
    }

    /// What differs between two versions of one object.
    fn compare(
        &mut self,
        op: &FsPath,
        np: &FsPath,
        om: &Metadata,
        nm: &Metadata,
    ) -> Vec<&'static str> {
        let mut fields = meta_fields(om, nm);
        if fields.first() == Some(&"type") {
            return fields;
        }
        match nm.kind {
            FileKind::File => match self.same_content(op, np, om, nm) {
                Ok(true) => {}
                Ok(false) => fields.insert(0, "content"),
                Err(e) => {
                    self.out
                        .errors
                        .push(format!("{np}: cannot compare the content: {e}"));
                    fields.insert(0, "content");
                }
            },
            FileKind::Symlink => {
                let a = self.old.read_link(op).ok();
                let b = self.new.read_link(np).ok();
                if a != b {
                    fields.push("target");
                }
            }
            _ => {}
        }
        fields
    }

    /// Whether a file's two versions hold the same bytes: proven by equal,
    /// unchanged data extents, else by size and sha256.
    fn same_content(
        &mut self,
        op: &FsPath,
        np: &FsPath,
        om: &Metadata,
        nm: &Metadata,
    ) -> Result<bool, FsError> {
        if om.size != nm.size {
            return Ok(false);
        }
        if self.trust {
            if let (Ok(Some(a)), Ok(Some(b))) = (self.old.extents(op), self.new.extents(np)) {
                if b.same_data(&a, self.src) {
                    return Ok(true);
                }
            }
        }
        if om.unreadable.is_some() || nm.unreadable.is_some() {
            // Neither can be read: only the metadata can tell.
            return Ok(true);
        }
        let h = |fs: &dyn Filesystem, p: &FsPath| match hash_file(fs, p, |_| true) {
            Ok(r) => Ok(r),
            Err(HashError::Fs(e)) => Err(e),
            Err(HashError::Stopped) => Err(FsError::Corrupt {
                fs: "filesystem",
                offset: None,
                what: "hashing stopped".into(),
            }),
        };
        let (a, na) = h(self.old, op)?;
        let (b, nb) = h(self.new, np)?;
        self.out.summary.files_hashed += 1;
        self.out.summary.bytes_hashed += na + nb;
        Ok(a == b)
    }

    fn push(
        &mut self,
        change: ChangeKind,
        path: &FsPath,
        old_path: Option<&FsPath>,
        om: &Metadata,
        nm: &Metadata,
        fields: Vec<&'static str>,
    ) {
        let s = &mut self.out.summary;
        match change {
            ChangeKind::Changed => {
                s.changed += 1;
                if nm.kind == FileKind::File {
                    s.bytes_changed += nm.size;
                }
            }
            ChangeKind::Renamed => s.renamed += 1,
            ChangeKind::Added => {
                s.added += 1;
                if nm.kind == FileKind::File {
                    s.bytes_added += nm.size;
                }
            }
            ChangeKind::Removed => {
                s.removed += 1;
                if om.kind == FileKind::File {
                    s.bytes_removed += om.size;
                }
            }
        }
        self.out.entries.push(DiffEntry {
            change,
            path: path.to_string(),
            old_path: old_path.map(|p| p.to_string()),
            kind: kind_name(nm.kind),
            fields,
            old_size: (change != ChangeKind::Added).then_some(om.size),
            new_size: (change != ChangeKind::Removed).then_some(nm.size),
        });
    }

    /// Removed and added objects with the same file id and kind are one
    /// object renamed (a folder is then compared with its former self);
    /// the rest are reported as they are, with everything below them.
    fn pair_renames(&mut self) {
        let removed = std::mem::take(&mut self.removed);
        let added = std::mem::take(&mut self.added);
        let mut by_id: HashMap<(u64, &str), Vec<usize>> = HashMap::new();
        for (i, r) in removed.iter().enumerate() {
            if let Some(id) = r.meta.inode {
                by_id
                    .entry((id, kind_name(r.meta.kind)))
                    .or_default()
                    .push(i);
            }
        }
        let mut taken = vec![false; removed.len()];
        for a in &added {
            let m = a
                .meta
                .inode
                .and_then(|id| by_id.get_mut(&(id, kind_name(a.meta.kind))))
                .and_then(|v| v.pop());
            match m {
                Some(i) => {
                    taken[i] = true;
                    let r = &removed[i];
                    let fields = self.compare(&r.path, &a.path, &r.meta, &a.meta);
                    self.push(
                        ChangeKind::Renamed,
                        &a.path,
                        Some(&r.path),
                        &r.meta,
                        &a.meta,
                        fields,
                    );
                    if a.meta.kind == FileKind::Dir {
                        // Compared with its former self; what it gained or
                        // lost joins the pools, paired in the next round.
                        if let Err(e) = self.folder(&r.path, &a.path, 0) {
                            self.out.errors.push(format!("{}: {e}", a.path));
                        }
                    }
                }
                None => self.whole(&a.path, &a.meta, ChangeKind::Added),
            }
        }
        for (i, r) in removed.iter().enumerate() {
            if !taken[i] {
                self.whole(&r.path, &r.meta, ChangeKind::Removed);
            }
        }
        if !self.removed.is_empty() || !self.added.is_empty() {
            self.pair_renames();
        }
    }

    /// An added or removed object and, for a folder, everything below it.
    fn whole(&mut self, path: &FsPath, meta: &Metadata, change: ChangeKind) {
        let fs = if change == ChangeKind::Added {
            self.new
        } else {
            self.old
        };
        let mut stack = vec![(path.clone(), meta.clone(), 0usize)];
        while let Some((p, m, depth)) = stack.pop() {
            if change == ChangeKind::Added {
                self.out.summary.objects += 1;
            }
            self.push(change, &p, None, &m, &m, Vec::new());
            if m.kind == FileKind::Dir && depth < MAX_DEPTH {
                match fs.read_dir(&p) {
                    Ok(list) => {
                        for e in list {
                            stack.push((p.join(&e.name), e.meta, depth + 1));
                        }
                    }
                    Err(e) => self.out.errors.push(format!("{p}: cannot list: {e}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: FileKind, size: u64, inode: u64) -> Metadata {
        Metadata {
            kind,
            size,
            mtime: None,
            mode: Some(0o644),
            uid: Some(0),
            gid: Some(0),
            inode: Some(inode),
            ..Default::default()
        }
    }

    #[test]
    fn fields_that_differ() {
        let a = meta(FileKind::File, 1, 5);
        let mut b = a.clone();
        assert!(meta_fields(&a, &b).is_empty());
        b.size = 2;
        b.uid = Some(1);
        assert_eq!(meta_fields(&a, &b), vec!["size", "owner"]);
        b.kind = FileKind::Dir;
        assert_eq!(meta_fields(&a, &b), vec!["type"]);
        assert!(same_object(&a, &meta(FileKind::Dir, 0, 5)));
        assert!(!same_object(&a, &meta(FileKind::File, 1, 6)));
    }
}
