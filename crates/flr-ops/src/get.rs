//! `flr get`: restore files and folders into a destination folder.
//!
//! The walk ([`Job::restore`]) decides, entry by entry, whether it is
//! selected (`--include`/`--exclude`, [`crate::select`]) and what to do
//! when its name is already taken in DEST (`--overwrite`,
//! `--skip-existing`); [`Job::write_file`] and [`Job::write_symlink`] then
//! write one entry to one name in one destination folder (temporary name,
//! then rename). With `--dry-run` the same decisions are printed as `plan`
//! records and nothing is created.

use std::cell::{Cell, OnceCell};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;

use flr_engine::Image;
use flr_fs::{FileKind, Filesystem, FsPath, Metadata};
use sha2::Digest;

use crate::extract::{DestDir, Existing, ExistingKind, Overwrite, WriteError};
use crate::journal::{source_id, Journal, Verdict};
use crate::ls::{Listing, MAX_DEPTH};
use crate::names::safe_component;
use crate::progress::Progress;
use crate::select::Selection;
use crate::{copy_file_streams, fs_err, Context, CopyError, OpsError, OutputFormat, VolPath};
use flr_fs::{display_name, display_path};

/// What `get` does when a name it restores is already taken in DEST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverwritePolicy {
    /// Report the entry as failed and leave what is there (the default).
    #[default]
    Error,
    /// Leave what is there and go on (counted as kept).
    Skip,
    /// Replace it (`--force`).
    Always,
    /// Write the new one beside it, as `NAME~N.EXT` (the first free N).
    Rename,
    /// Replace it unless it is identical (`--compare`); identical ones are kept.
    IfDifferent,
}

/// How `--skip-existing` (and `--overwrite=if-different`) decide that a
/// file already in DEST is the one being restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compare {
    /// Same size and the same bytes: both files are read side by side and
    /// compared, stopping at the first difference (equal bytes, so equal
    /// sha256, without hashing either).
    #[default]
    Content,
    /// Same size and same sha256 (both files are read and hashed).
    Sha256,
    /// Same size and same mtime (to the nanosecond, or to the second when
    /// DEST keeps whole seconds): no data is read, so a file changed in
    /// place without its size or mtime changing is not noticed.
    SizeMtime,
}

/// Options of `get`.
#[derive(Debug, Clone, Default)]
pub struct GetOptions {
    /// Destination folder (created if missing).
    pub dest: PathBuf,
    /// What to do with names already taken in DEST.
    pub overwrite: OverwritePolicy,
    /// Keep a file already in DEST when it is identical (resume of an
    /// interrupted restore); others follow `overwrite`.
    pub skip_existing: bool,
    /// Use the restore journal (read it, and add to it) when identical
    /// files are kept (`--no-journal` clears it).
    pub journal: bool,
    /// How "identical" is decided.
    pub compare: Compare,
    /// `--include`/`--exclude`.
    pub selection: Selection,
    /// Print what would be done; create and write nothing.
    pub dry_run: bool,
    /// Print each restored file's sha256.
    pub checksum: bool,
    /// How large files are read.
    pub streams: crate::Streams,
    /// How NTFS alternate data streams are restored (`--streams`).
    pub ntfs_streams: crate::NtfsStreams,
    /// `--format json`: the summary is the command's data, on stdout
    /// (else, with a JSON context, on stderr: the old `get --json`).
    pub summary_on_stdout: bool,
    /// The temporary files being written (a signal handler removes them).
    pub partials: std::sync::Arc<crate::extract::Partials>,
    /// What is kept besides data, mode and times (`--preserve`).
    pub preserve: crate::Preserve,
    /// Draw a progress bar on stderr (the session decides when).
    pub progress: bool,
}

/// What `get` did (docs/json.md: `report_version` 1).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GetSummary {
    /// The schema's version (docs/json.md).
    pub report_version: u32,
    /// `"summary"` (the per-file lines of `--checksum` are `"file"`).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Regular files restored.
    pub files: u64,
    /// Folders created or filled.
    pub dirs: u64,
    /// Symlinks recreated.
    pub symlinks: u64,
    /// Bytes of file data written.
    pub bytes: u64,
    /// Names changed to be safe on this machine.
    pub renamed: u64,
    /// Items not restored (each reported).
    pub failed: u64,
    /// Special files (devices, FIFOs) skipped.
    pub skipped: u64,
    /// Alternate data streams restored (as xattrs or side files).
    pub streams: u64,
    /// Files and symlinks already in DEST and left as they were (identical
    /// with `--skip-existing`, or any with `--overwrite=skip`).
    pub kept: u64,
    /// Files and symlinks that replaced what was in DEST.
    pub replaced: u64,
    /// Files and symlinks written beside a taken name (`--overwrite=rename`).
    pub written_beside: u64,
    /// Entries left out by `--include`/`--exclude`.
    pub excluded: u64,
    /// Temporary files of an interrupted earlier restore removed from DEST.
    pub stale_partials: u64,
    /// Of `kept`: files the restore journal proved identical without
    /// reading them or the image (written by flr from the same source
    /// file, untouched since).
    pub kept_by_journal: u64,
    /// `--dry-run`: the counts are what would be done; nothing was written.
    pub dry_run: bool,
    /// Objects restored without some of what `--preserve` asked for (an
    /// xattr, ACL or owner the destination refused; each reported).
    pub not_preserved: u64,
}

/// The version of `get`'s JSON summary.
pub const GET_REPORT_VERSION: u32 = 1;

/// A folder in DEST, opened (or, with `--dry-run`, looked up) the first
/// time something is written into it: with `--include`, folders that end
/// up holding nothing selected are never created.
struct Target<'p> {
    parent: Option<&'p Target<'p>>,
    /// Its name in the parent (a safe component).
    name: Vec<u8>,
    /// The image folder it receives, for messages.
    src: FsPath,
    /// Path relative to DEST, for messages and plan records.
    rel: String,
    slot: OnceCell<Slot>,
}

enum Slot {
    Open(DestDir),
    /// `--dry-run`: not in DEST yet (it would be created).
    Absent,
    /// Could not be created or opened (reported once).
    Failed,
}

impl<'p> Target<'p> {
    fn root() -> Target<'static> {
        Target {
            parent: None,
            name: Vec::new(),
            src: FsPath::root(),
            rel: String::new(),
            slot: OnceCell::new(),
        }
    }

    fn child(&'p self, name: &[u8], src: &FsPath) -> Target<'p> {
        Target {
            parent: Some(self),
            name: name.to_vec(),
            src: src.clone(),
            rel: self.rel_of(name),
            slot: OnceCell::new(),
        }
    }

    /// The DEST-relative path of `name` inside this folder.
    fn rel_of(&self, name: &[u8]) -> String {
        if self.rel.is_empty() {
            display_name(name)
        } else {
            format!("{}/{}", self.rel, display_name(name))
        }
    }
}

/// What to do with one file or symlink.
enum Action {
    /// Write under `name`; `replace` when something is there.
    Write { name: Vec<u8>, replace: bool },
    /// Leave what is in DEST (`why`: identical, exists).
    Keep { why: &'static str },
    /// The name is taken and the policy says fail.
    Conflict,
}

struct Job<'a, 'c> {
    vol: &'a str,
    fs: &'a dyn Filesystem,
    opts: &'a GetOptions,
    ctx: &'a mut Context<'c>,
    sum: GetSummary,
    /// Inodes of the folders being restored, root first: an entry that points
    /// back at one of them (a damaged image) would otherwise recurse forever.
    ancestors: HashSet<u64>,
    bar: &'a Progress,
    /// Files done (written, kept or failed), for the bar.
    done: &'a Cell<u64>,
    /// Verdicts of [`Job::compare_ahead`]: image path → (name in DEST,
    /// identical?), taken when the file is reached.
    verdicts: HashMap<FsPath, Ahead>,
    /// The restore journal (`--skip-existing`, `if-different`).
    journal: Option<&'a mut Journal>,
    /// The image's location, for the journal's source identities.
    location: &'a str,
}

/// A verdict of [`Job::compare_ahead`]: the name in DEST it is for, what
/// was there, and whether it is identical.
type Ahead = (Vec<u8>, Existing, Result<Same, String>);

/// Whether a file already in DEST is the one being restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Same {
    Differs,
    /// Equal; with the sha256 of the image file's bytes when it was
    /// worked out on the way (to go into the journal).
    Equal(Option<[u8; 32]>),
    /// Equal by the restore journal, nothing read.
    Untouched,
}

/// Bytes and files that a restore of `path` will write, for the progress
/// bar's total (the same selection as the walk; loops and depth bounded).
#[allow(clippy::too_many_arguments)]
fn count(
    fs: &dyn Filesystem,
    sel: &Selection,
    path: &FsPath,
    meta: &Metadata,
    selected: bool,
    depth: usize,
    ancestors: &mut HashSet<u64>,
    n: &mut (u64, u64),
) {
    if !path.is_root() && sel.excluded(path) {
        return;
    }
    let selected = selected || (!path.is_root() && sel.included(path));
    match meta.kind {
        FileKind::File if selected && meta.unreadable.is_none() => {
            n.0 += meta.size;
            n.1 += 1;
        }
        FileKind::Dir if depth < MAX_DEPTH => {
            if meta.inode.is_some_and(|i| !ancestors.insert(i)) {
                return;
            }
            if let Ok(listing) = Listing::read(fs, path) {
                for e in listing.flatten() {
                    if e.name != b"." && e.name != b".." {
                        let p = path.join(&e.name);
                        count(fs, sel, &p, &e.meta, selected, depth + 1, ancestors, n);
                    }
                }
            }
            if let Some(i) = meta.inode {
                ancestors.remove(&i);
            }
        }
        _ => {}
    }
}

/// Restores each `spec` into `opts.dest`: a file lands as `DEST/name`, a
/// folder as `DEST/name/…`, a volume root's contents directly in `DEST`.
pub fn get(
    image: &Image,
    specs: &[VolPath],
    opts: &GetOptions,
    ctx: &mut Context<'_>,
) -> Result<GetSummary, OpsError> {
    let root = Target::root();
    let slot = if opts.dry_run {
        DestDir::open_existing_root(&opts.dest).map_or(Slot::Absent, Slot::Open)
    } else {
        let d = DestDir::open_root(&opts.dest, opts.partials.clone())
            .map_err(|e| OpsError::Usage(e.to_string()))?;
        Slot::Open(d)
    };
    let _ = root.slot.set(slot);
    let mut filesystems: HashMap<String, Box<dyn Filesystem>> = HashMap::new();
    let mut items = Vec::with_capacity(specs.len());
    for spec in specs {
        let vol = image.volume(&spec.volume)?;
        if !filesystems.contains_key(&vol.id) {
            let fs = vol.open_fs()?;
            crate::warn_consistency(ctx.err, &vol.id, fs.as_ref())?;
            filesystems.insert(vol.id.clone(), fs);
        }
        let fs = filesystems[&vol.id].as_ref();
        let meta = fs.metadata(&spec.path).map_err(fs_err(&vol.id))?;
        items.push((spec, vol.id, meta));
    }
    // The bar's total comes from one walk of the metadata first (only when
    // a bar is drawn), so it can show an ETA.
    let bar = if opts.progress && !opts.dry_run {
        let mut n = (0u64, 0u64);
        for (spec, vol, meta) in &items {
            let fs = filesystems[vol].as_ref();
            let top = !spec.path.is_root();
            count(
                fs,
                &opts.selection,
                &spec.path,
                meta,
                top,
                0,
                &mut HashSet::new(),
                &mut n,
            );
        }
        Progress::new(true, "get", Some(n.0), n.1)
    } else {
        Progress::off()
    };
    let done = Cell::new(0u64);
    let mut lifted = bar.wrap(&mut *ctx.err);
    let mut ctx = Context {
        out: &mut *ctx.out,
        err: &mut lifted,
        format: ctx.format,
    };
    let mut total = GetSummary::default();
    let mut root_names = HashSet::new();
    let keeps =
        opts.journal && (opts.skip_existing || opts.overwrite == OverwritePolicy::IfDifferent);
    let mut journal = match root.slot.get() {
        Some(Slot::Open(d)) if keeps => Some(Journal::open(d, opts.dry_run)),
        _ => None,
    };
    if let Some(p) = journal.as_mut().and_then(|j| j.problem.take()) {
        let _ = writeln!(ctx.err, "flr: {p}");
    }
    if journal.is_some() {
        root_names.insert(crate::journal::NAME.to_vec());
    }
    let mut first = true;
    for (spec, vol, meta) in &items {
        let fs = filesystems[vol].as_ref();
        let mut job = Job {
            vol,
            fs,
            opts,
            ctx: &mut ctx,
            sum: GetSummary::default(),
            ancestors: HashSet::new(),
            bar: &bar,
            done: &done,
            verdicts: HashMap::new(),
            journal: journal.as_mut(),
            location: &image.location,
        };
        if first {
            first = false;
            if let Some(Slot::Open(d)) = root.slot.get().filter(|_| !opts.dry_run) {
                job.sum.stale_partials += d.remove_stale_partials();
            }
        }
        if spec.path.is_root() {
            job.ancestors.extend(meta.inode);
            job.restore_dir_contents(&spec.path, &root, false, 0);
            if let (Some(t), Some(Slot::Open(d))) = (meta.mtime, root.slot.get()) {
                if !opts.dry_run {
                    let _ = d.set_mtime(t);
                }
            }
        } else {
            let name = spec.path.file_name().unwrap_or(b"").to_vec();
            // The path asked for is selected as a whole, unless excluded.
            job.restore(&spec.path, &name, meta, &root, &mut root_names, true, 0);
        }
        total.add(&job.sum);
    }
    if let Some(j) = journal.as_mut() {
        j.flush();
        if let Some(p) = j.problem.take() {
            let _ = writeln!(ctx.err, "flr: {p}");
        }
    }
    bar.finish();
    total.report_version = GET_REPORT_VERSION;
    total.kind = "summary";
    total.dry_run = opts.dry_run;
    print_summary(&total, opts, &mut ctx)?;
    if total.failed > 0 {
        let all = total.files + total.symlinks + total.failed;
        return Err(OpsError::Partial {
            failed: usize::try_from(total.failed).unwrap_or(usize::MAX),
            total: usize::try_from(all).unwrap_or(usize::MAX),
        });
    }
    Ok(total)
}

impl GetSummary {
    fn add(&mut self, s: &GetSummary) {
        self.files += s.files;
        self.dirs += s.dirs;
        self.symlinks += s.symlinks;
        self.bytes += s.bytes;
        self.renamed += s.renamed;
        self.failed += s.failed;
        self.skipped += s.skipped;
        self.kept += s.kept;
        self.replaced += s.replaced;
        self.written_beside += s.written_beside;
        self.excluded += s.excluded;
        self.stale_partials += s.stale_partials;
        self.kept_by_journal += s.kept_by_journal;
        self.not_preserved += s.not_preserved;
        self.streams += s.streams;
    }
}

fn print_summary(
    total: &GetSummary,
    opts: &GetOptions,
    ctx: &mut Context<'_>,
) -> Result<(), OpsError> {
    if ctx.format == OutputFormat::Json {
        let w: &mut dyn Write = if opts.summary_on_stdout {
            &mut *ctx.out
        } else {
            &mut *ctx.err
        };
        serde_json::to_writer(&mut *w, total).map_err(std::io::Error::from)?;
        writeln!(w)?;
        return Ok(());
    }
    let mut extra = String::new();
    let mut note = |n: u64, what: &str| {
        if n > 0 {
            extra.push_str(&format!("; {n} {what}"));
        }
    };
    note(total.kept, "already there, kept");
    note(total.replaced, "replaced");
    note(total.written_beside, "written beside a taken name");
    note(total.excluded, "left out by --include/--exclude");
    note(total.renamed, "names made safe");
    note(total.streams, "alternate data streams");
    note(total.skipped, "special files skipped");
    note(total.stale_partials, "stale temporary files removed");
    note(
        total.not_preserved,
        "items without some attributes (see warnings)",
    );
    note(total.failed, "FAILED");
    writeln!(
        ctx.err,
        "flr: {} {} files ({} bytes), {} folders, {} symlinks into {}{extra}",
        if total.dry_run {
            "dry run: would restore"
        } else {
            "restored"
        },
        total.files,
        total.bytes,
        total.dirs,
        total.symlinks,
        opts.dest.display(),
    )?;
    Ok(())
}

/// `NAME~N.EXT` (`NAME~N` without an extension): the N-th name beside a
/// taken one that keeps the extension, so the file still opens as before.
fn beside_name(name: &[u8], n: u32) -> Vec<u8> {
    let tag = format!("~{n}");
    match name.iter().rposition(|&b| b == b'.').filter(|&i| i > 0) {
        Some(dot) => [&name[..dot], tag.as_bytes(), &name[dot..]].concat(),
        None => [name, tag.as_bytes()].concat(),
    }
}

fn same_mtime(dest: Existing, src: Option<flr_fs::Timestamp>) -> bool {
    let Some(src) = src else { return false };
    dest.mtime.secs == src.secs && (dest.mtime.nanos == src.nanos || dest.mtime.nanos == 0)
}

impl Job<'_, '_> {
    fn fail(&mut self, path: &FsPath, msg: impl std::fmt::Display) {
        self.sum.failed += 1;
        let _ = writeln!(
            self.ctx.err,
            "flr: {}:{}: {msg}",
            self.vol,
            display_path(path)
        );
    }

    /// Reports what the destination refused of `extra` (see `fidelity`).
    fn report_refused(&mut self, path: &FsPath, extra: &crate::fidelity::Extra) {
        if let Some(msg) = extra.refused_message() {
            self.sum.not_preserved += 1;
            let _ = writeln!(
                self.ctx.err,
                "flr: {}:{}: {msg}",
                self.vol,
                display_path(path)
            );
        }
    }

    fn extra(&self, path: &FsPath, meta: &Metadata) -> crate::fidelity::Extra {
        crate::fidelity::Extra::of(self.fs, path, meta, self.opts.preserve)
    }

    fn json(&self) -> bool {
        self.opts.summary_on_stdout && self.ctx.format == OutputFormat::Json
    }

    /// Whether an identical file already in DEST is kept.
    fn keeps_identical(&self) -> bool {
        self.opts.skip_existing || self.opts.overwrite == OverwritePolicy::IfDifferent
    }

    /// `--dry-run`: one line (or JSON record) per thing that would be done.
    fn plan(&mut self, action: &str, path: &FsPath, rel: &str, size: Option<u64>, why: &str) {
        if self.json() {
            let mut line = serde_json::json!({
                "report_version": GET_REPORT_VERSION,
                "type": "plan",
                "action": action,
                "path": rel,
                "source": format!("{}:{}", self.vol, display_path(path)),
            });
            if let Some(n) = size {
                line["size"] = n.into();
            }
            if !why.is_empty() {
                line["reason"] = why.into();
            }
            let _ = writeln!(self.ctx.out, "{line}");
        } else {
            let size = size.map(|n| format!(" ({n} bytes)")).unwrap_or_default();
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(": {why}")
            };
            let _ = writeln!(self.ctx.out, "{action:<8} {rel}{size}{why}");
        }
    }

    /// The folder `t` in DEST: created on first use (looked up with
    /// `--dry-run`). `None` when it cannot be written into (reported once)
    /// or, with `--dry-run`, does not exist yet.
    fn open<'t>(&mut self, t: &'t Target<'_>) -> Option<&'t DestDir> {
        if t.slot.get().is_none() {
            let slot = match t.parent {
                // The root's slot is set before the walk.
                None => Slot::Failed,
                Some(parent) => {
                    let pd = self.open(parent);
                    let parent_absent = matches!(parent.slot.get(), Some(Slot::Absent));
                    if self.opts.dry_run {
                        match pd.and_then(|d| d.existing_subdir(&t.name)) {
                            Some(d) => {
                                self.sum.dirs += 1;
                                Slot::Open(d)
                            }
                            None if pd.is_some() || parent_absent => {
                                self.sum.dirs += 1;
                                self.plan("mkdir", &t.src, &t.rel, None, "");
                                Slot::Absent
                            }
                            None => Slot::Failed,
                        }
                    } else {
                        match pd.map(|d| d.subdir(&t.name)) {
                            Some(Ok(d)) => {
                                self.sum.dirs += 1;
                                self.sum.stale_partials += d.remove_stale_partials();
                                Slot::Open(d)
                            }
                            Some(Err(e)) => {
                                let src = t.src.clone();
                                self.fail(&src, e);
                                Slot::Failed
                            }
                            None => Slot::Failed,
                        }
                    }
                }
            };
            let _ = t.slot.set(slot);
        }
        match t.slot.get() {
            Some(Slot::Open(d)) => Some(d),
            _ => None,
        }
    }

    /// Whether `t` can take entries: open, or (`--dry-run`) to be created.
    fn usable(&mut self, t: &Target<'_>) -> bool {
        self.open(t).is_some() || matches!(t.slot.get(), Some(Slot::Absent))
    }

    /// Picks the safe, unique name for `name` inside one destination folder.
    fn dest_name(&mut self, path: &FsPath, name: &[u8], used: &mut HashSet<Vec<u8>>) -> Vec<u8> {
        let (mut safe, why) = safe_component(name);
        if used.contains(&safe) {
            let base = safe.clone();
            let mut n = 1u32;
            while used.contains(&safe) {
                safe = base.clone();
                safe.extend_from_slice(format!("~{n}").as_bytes());
                n += 1;
            }
        }
        if safe != name {
            self.sum.renamed += 1;
            let _ = writeln!(
                self.ctx.err,
                "flr: {}:{}: restored as {:?} ({})",
                self.vol,
                display_path(path),
                display_name(&safe),
                why.as_deref().unwrap_or("name already used in this folder"),
            );
        }
        used.insert(safe.clone());
        safe
    }

    /// Whether the file already at `name` in `dir` is the one being restored
    /// (the verdict worked out ahead for its folder, if there is one).
    fn identical_file(
        &mut self,
        path: &FsPath,
        meta: &Metadata,
        dir: &DestDir,
        name: &[u8],
        ex: Existing,
        ahead: Option<Result<Same, String>>,
    ) -> Result<Same, String> {
        if let Some(v) = ahead {
            return v;
        }
        let j = self
            .journal
            .as_deref()
            .map(|j| (j, self.location, self.vol));
        same_file(self.fs, self.opts, j, path, meta, dir, name, ex)
    }

    /// Works out, in parallel, whether each file of a folder whose name is
    /// already taken in DEST by a file of its size is identical to it, so
    /// that a resumed restore compares many files at once instead of one
    /// after another (`--skip-existing`, `if-different`; not for
    /// size-mtime, which reads nothing).
    fn compare_ahead(
        &mut self,
        dir: &FsPath,
        entries: &[flr_fs::DirEntry],
        into: &Target<'_>,
        selected: bool,
    ) {
        if !self.keeps_identical() || self.opts.compare == Compare::SizeMtime {
            return;
        }
        let Some(Slot::Open(d)) = into.slot.get() else {
            return;
        };
        let sel = &self.opts.selection;
        let mut todo = Vec::new();
        let mut seen = HashSet::new();
        for e in entries {
            if e.meta.kind != FileKind::File || e.meta.unreadable.is_some() {
                continue;
            }
            let path = dir.join(&e.name);
            if sel.excluded(&path) || !(selected || sel.included(&path)) {
                continue;
            }
            // Only names that stay as they are (a renamed one is decided
            // when it is reached).
            if safe_component(&e.name).0 != e.name || !seen.insert(e.name.clone()) {
                continue;
            }
            if let Some(ex) = d.existing(&e.name) {
                if ex.kind == ExistingKind::File && ex.size == e.meta.size {
                    todo.push((path, e, ex));
                }
            }
        }
        if todo.len() < 2 {
            return;
        }
        use rayon::prelude::*;
        let (fs, opts) = (self.fs, self.opts);
        let j = self
            .journal
            .as_deref()
            .map(|j| (j, self.location, self.vol));
        let verdicts: Vec<_> = todo
            .into_par_iter()
            .map(|(path, e, ex)| {
                let v = same_file(fs, opts, j, &path, &e.meta, d, &e.name, ex);
                (path, (e.name.clone(), ex, v))
            })
            .collect();
        self.verdicts.extend(verdicts);
    }

    /// Decides what happens to one file or symlink whose safe name is `safe`.
    fn decide(
        &mut self,
        path: &FsPath,
        meta: &Metadata,
        dir: Option<&DestDir>,
        safe: &[u8],
        used: &mut HashSet<Vec<u8>>,
    ) -> Result<Action, String> {
        let ahead = self.verdicts.remove(path).filter(|(n, _, _)| n == safe);
        let (ex, ahead) = match ahead {
            Some((_, ex, v)) => (Some(ex), Some(v)),
            None => (dir.and_then(|d| d.existing(safe)), None),
        };
        let Some(ex) = ex else {
            return Ok(Action::Write {
                name: safe.to_vec(),
                replace: false,
            });
        };
        let dir = dir.expect("an existing entry was found in it");
        if self.keeps_identical() {
            let same = match meta.kind {
                FileKind::Symlink => {
                    ex.kind == ExistingKind::Symlink
                        && self.fs.read_link(path).ok() == dir.link_target(safe)
                }
                _ => {
                    let same = self.identical_file(path, meta, dir, safe, ex, ahead)?;
                    match same {
                        Same::Untouched => self.sum.kept_by_journal += 1,
                        // Found identical by reading: into the journal, so
                        // the next resume need not read it again.
                        Same::Equal(Some(sha)) => {
                            let src = source_id(self.location, self.vol, path, meta);
                            if let Some(j) = self.journal.as_deref_mut() {
                                j.record(&ex.stat(), src, &sha);
                            }
                        }
                        Same::Equal(None) | Same::Differs => {}
                    }
                    same != Same::Differs
                }
            };
            if same {
                return Ok(Action::Keep { why: "identical" });
            }
        }
        Ok(match self.opts.overwrite {
            OverwritePolicy::Error => Action::Conflict,
            OverwritePolicy::Skip => Action::Keep { why: "exists" },
            OverwritePolicy::Always | OverwritePolicy::IfDifferent => {
                if ex.kind == ExistingKind::Dir {
                    Action::Conflict
                } else {
                    Action::Write {
                        name: safe.to_vec(),
                        replace: true,
                    }
                }
            }
            OverwritePolicy::Rename => {
                let mut n = 1u32;
                let name = loop {
                    let c = beside_name(safe, n);
                    if !used.contains(&c) && !dir.exists(&c) {
                        break c;
                    }
                    n += 1;
                };
                used.insert(name.clone());
                Action::Write {
                    name,
                    replace: false,
                }
            }
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn restore(
        &mut self,
        path: &FsPath,
        name: &[u8],
        meta: &Metadata,
        into: &Target<'_>,
        used: &mut HashSet<Vec<u8>>,
        selected: bool,
        depth: usize,
    ) {
        let sel = &self.opts.selection;
        if sel.excluded(path) {
            self.sum.excluded += 1;
            return;
        }
        let selected = selected || sel.included(path);
        if meta.kind != FileKind::Dir && !selected {
            self.sum.excluded += 1;
            return;
        }
        let safe = self.dest_name(path, name, used);
        match meta.kind {
            FileKind::File | FileKind::Symlink => self.restore_entry(path, &safe, meta, into, used),
            FileKind::Dir => {
                if depth >= MAX_DEPTH {
                    self.fail(
                        path,
                        format!("folders nested deeper than {MAX_DEPTH} levels (a loop?)"),
                    );
                    return;
                }
                if let Some(ino) = meta.inode {
                    if self.ancestors.contains(&ino) {
                        self.fail(
                            path,
                            format!("folder loop: inode {ino} is one of its own parent folders (damaged image); not descending"),
                        );
                        return;
                    }
                }
                let sub = into.child(&safe, path);
                // Every folder is restored, empty or not, unless --include
                // picks entries inside: then only the folders they need.
                if selected && !self.usable(&sub) {
                    return;
                }
                if let Some(ino) = meta.inode {
                    self.ancestors.insert(ino);
                }
                self.restore_dir_contents(path, &sub, selected, depth + 1);
                if let Some(ino) = meta.inode {
                    self.ancestors.remove(&ino);
                }
                if let (Some(Slot::Open(pd)), Some(Slot::Open(d))) =
                    (into.slot.get(), sub.slot.get())
                {
                    if !self.opts.dry_run {
                        let ow = if self.opts.overwrite == OverwritePolicy::Always {
                            Overwrite::Replace
                        } else {
                            Overwrite::Refuse
                        };
                        let r = crate::winmeta::folder_streams(
                            self.fs,
                            path,
                            self.opts.ntfs_streams,
                            (pd, &safe, d),
                            ow,
                        );
                        self.sum.streams += r.restored;
                        for p in r.problems {
                            self.fail(path, p);
                        }
                    }
                }
                if let Some(Slot::Open(d)) = sub.slot.get() {
                    if !self.opts.dry_run {
                        let extra = self.extra(path, meta);
                        if let Err(e) = d.finish(&extra) {
                            self.fail(path, e);
                        }
                        self.report_refused(path, &extra);
                    }
                }
            }
            FileKind::Special => {
                self.sum.skipped += 1;
                let _ = writeln!(
                    self.ctx.err,
                    "flr: {}:{}: special file (device, FIFO or socket) not restored",
                    self.vol,
                    display_path(path)
                );
            }
        }
    }

    fn restore_dir_contents(
        &mut self,
        dir: &FsPath,
        into: &Target<'_>,
        selected: bool,
        depth: usize,
    ) {
        // As `ls` (see `Listing`); an error while reading is reported after
        // what was read is restored.
        let fs = self.fs;
        let mut listing = match Listing::read(fs, dir) {
            Ok(l) => l,
            Err(e) => return self.fail(dir, e),
        };
        let mut broken = listing.error.take();
        let mut entries = Vec::new();
        for e in listing {
            match e {
                Ok(e) => entries.push(e),
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            }
        }
        self.compare_ahead(dir, &entries, into, selected);
        let mut used = HashSet::new();
        if into.parent.is_none() && self.journal.is_some() {
            used.insert(crate::journal::NAME.to_vec());
        }
        let mut names = HashSet::new();
        for e in entries {
            let path = dir.join(&e.name);
            // A corrupt folder can hold two entries with one name; a path reaches only
            // the first, so the second cannot be restored faithfully.
            if !names.insert(e.name.clone()) {
                self.fail(&path, "a second entry with this name in the same folder (corrupt folder): only the first is restored");
                continue;
            }
            // An entry named `.` or `..` besides the folder's own links (a corrupt
            // or crafted folder): a path reaches the folder or its parent, never it.
            if e.name == b"." || e.name == b".." {
                self.fail(&path, "an entry with this name besides the folder's own link (corrupt folder): a path cannot reach it, not restored");
                continue;
            }
            self.restore(&path, &e.name, &e.meta, into, &mut used, selected, depth);
        }
        if let Some(e) = broken {
            self.fail(dir, e);
        }
    }

    /// One selected file or symlink: decide, then write (or plan) it.
    fn restore_entry(
        &mut self,
        path: &FsPath,
        safe: &[u8],
        meta: &Metadata,
        into: &Target<'_>,
        used: &mut HashSet<Vec<u8>>,
    ) {
        if meta.kind == FileKind::File {
            if let Some(r) = &meta.unreadable {
                return self.fail(path, format!("not restored: {r}"));
            }
        }
        if !self.usable(into) {
            return;
        }
        let dir = self.open(into);
        let action = match self.decide(path, meta, dir, safe, used) {
            Ok(a) => a,
            Err(e) => return self.fail(path, e),
        };
        let rel = into.rel_of(safe);
        let is_file = meta.kind == FileKind::File;
        let size = is_file.then_some(meta.size);
        match action {
            Action::Keep { why } => {
                self.sum.kept += 1;
                if is_file {
                    self.bar.bytes(meta.size);
                    self.tick();
                }
                if self.opts.dry_run {
                    self.plan("keep", path, &rel, size, why);
                } else if self.opts.checksum && is_file {
                    if let Some(Ok(sha)) = dir.map(|d| d.sha256_of(safe)) {
                        self.print_checksum(&rel, meta.size, &hex::encode(sha), "kept");
                    }
                }
            }
            Action::Conflict => {
                if self.opts.dry_run {
                    self.sum.failed += 1;
                    self.plan(
                        "conflict",
                        path,
                        &rel,
                        size,
                        "already exists in the destination",
                    );
                } else {
                    self.fail(path, WriteError::Exists { path: rel });
                }
            }
            Action::Write { name, replace } => {
                let beside = name != safe;
                let shown = into.rel_of(&name);
                if self.opts.dry_run {
                    let (action, why) = match (replace, beside) {
                        (true, _) => ("replace", String::new()),
                        (false, true) => ("write", format!("{rel} is taken")),
                        (false, false) => ("write", String::new()),
                    };
                    self.plan(
                        if is_file { action } else { "symlink" },
                        path,
                        &shown,
                        size,
                        &why,
                    );
                    self.count_written(meta, replace, beside);
                    return;
                }
                let dir = dir.expect("a folder being written into is open");
                let ow = if replace {
                    Overwrite::Replace
                } else {
                    Overwrite::Refuse
                };
                let ok = if is_file {
                    self.write_file(path, meta, dir, &name, ow)
                } else {
                    self.write_symlink(path, meta, dir, &name, ow)
                };
                if ok {
                    self.count_written(meta, replace, beside);
                    if beside {
                        let _ = writeln!(
                            self.ctx.err,
                            "flr: {}:{}: {rel} is taken in the destination; written as {shown}",
                            self.vol,
                            display_path(path)
                        );
                    }
                }
            }
        }
    }

    /// One more file done, for the bar.
    fn tick(&self) {
        if self.bar.is_live() {
            self.done.set(self.done.get() + 1);
            self.bar.set_files(self.done.get());
        }
    }

    fn count_written(&mut self, meta: &Metadata, replace: bool, beside: bool) {
        if meta.kind == FileKind::File {
            self.sum.files += 1;
            self.sum.bytes += meta.size;
        } else {
            self.sum.symlinks += 1;
        }
        self.sum.replaced += u64::from(replace);
        self.sum.written_beside += u64::from(beside);
    }

    fn print_checksum(&mut self, rel: &str, size: u64, sum: &str, kind: &str) {
        if self.json() {
            let line = serde_json::json!({
                "report_version": GET_REPORT_VERSION,
                "type": kind,
                "path": rel,
                "size": size,
                "sha256": sum,
            });
            let _ = writeln!(self.ctx.out, "{line}");
        } else {
            let _ = writeln!(self.ctx.out, "{sum}  {rel}");
        }
    }

    /// Writes the image file `path` as `name` in `dir` (temporary name, then
    /// rename; mode and mtime set): the one place a restored file's data is
    /// written. Reports a failure itself; true when the file is in place.
    /// (Bytes are counted by the caller from `meta.size`.)
    fn write_file(
        &mut self,
        path: &FsPath,
        meta: &Metadata,
        dir: &DestDir,
        name: &[u8],
        ow: Overwrite,
    ) -> bool {
        let journaling = self.journal.as_ref().is_some_and(|j| j.writing());
        let mut hasher = (self.opts.checksum || journaling).then(sha2::Sha256::new);
        let fs = self.fs;
        let ads = self.opts.ntfs_streams;
        let mut streams = crate::winmeta::StreamReport::default();
        let file_streams = self.opts.streams;
        let extra = self.extra(path, meta);
        let mut sparse = crate::sparse::SparseWriter::for_file(fs, path, meta.size);
        let bar = self.bar;
        let res = dir.write_file(name, ow, &extra, |f| {
            let n = copy_file_streams(fs, path, file_streams, |b| {
                if let Some(h) = hasher.as_mut() {
                    h.update(b);
                }
                bar.bytes(b.len() as u64);
                sparse.write(f, b)
            })?;
            sparse.finish(f).map_err(CopyError::Out)?;
            if ads == crate::NtfsStreams::Xattr {
                streams = crate::winmeta::streams_to_xattrs(fs, path, &*f);
            }
            Ok(n)
        });
        self.tick();
        if matches!(res, Ok(Ok(_))) {
            if ads == crate::NtfsStreams::Files {
                streams = crate::winmeta::streams_to_files(fs, path, name, dir, ow);
            }
            self.sum.streams += streams.restored;
            for p in streams.problems {
                self.fail(path, p);
            }
        }
        match res {
            Ok(Ok(n)) => {
                self.report_refused(path, &extra);
                let digest: Option<[u8; 32]> = hasher.map(|h| h.finalize().into());
                if let (Some(sha), Some(j)) = (digest, self.journal.as_deref_mut()) {
                    if let Some(ex) = dir.existing(name).filter(|_| journaling) {
                        j.record(
                            &ex.stat(),
                            source_id(self.location, self.vol, path, meta),
                            &sha,
                        );
                    }
                }
                if let Some(sha) = digest.filter(|_| self.opts.checksum) {
                    let rel = if dir.rel.is_empty() {
                        display_name(name)
                    } else {
                        format!("{}/{}", dir.rel, display_name(name))
                    };
                    self.print_checksum(&rel, n, &hex::encode(sha), "file");
                }
                true
            }
            Ok(Err(CopyError::Fs(e))) => {
                self.fail(path, e);
                false
            }
            Ok(Err(CopyError::Out(e))) => {
                self.fail(
                    path,
                    WriteError::Os {
                        path: display_name(name),
                        what: "write failed",
                        source: e,
                    },
                );
                false
            }
            Err(e) => {
                self.fail(path, e);
                false
            }
        }
    }

    /// Recreates the image symlink `path` as `name` in `dir` (never followed).
    fn write_symlink(
        &mut self,
        path: &FsPath,
        meta: &Metadata,
        dir: &DestDir,
        name: &[u8],
        ow: Overwrite,
    ) -> bool {
        let res = self
            .fs
            .read_link(path)
            .map_err(|e| e.to_string())
            .and_then(|target| {
                dir.write_symlink(name, &target, ow, meta.mtime)
                    .map_err(|e| e.to_string())
            });
        match res {
            Ok(()) => {
                let extra = self.extra(path, meta);
                extra.apply_symlink(dir.fd(), name);
                self.report_refused(path, &extra);
                true
            }
            Err(e) => {
                self.fail(path, e);
                false
            }
        }
    }
}

/// The sha256 of the image file (read as `get` reads it).
fn source_sha256(
    fs: &dyn Filesystem,
    streams: crate::Streams,
    path: &FsPath,
) -> Result<[u8; 32], String> {
    let mut h = sha2::Sha256::new();
    copy_file_streams(fs, path, streams, |b| {
        h.update(b);
        Ok(())
    })
    .map_err(|e| match e {
        CopyError::Fs(e) => e.to_string(),
        CopyError::Out(e) => e.to_string(),
    })?;
    Ok(h.finalize().into())
}

/// Whether the file already at `name` in `dir` is the one being restored.
#[allow(clippy::too_many_arguments)]
fn same_file(
    fs: &dyn Filesystem,
    opts: &GetOptions,
    journal: Option<(&Journal, &str, &str)>,
    path: &FsPath,
    meta: &Metadata,
    dir: &DestDir,
    name: &[u8],
    ex: Existing,
) -> Result<Same, String> {
    let same = |b: bool| if b { Same::Equal(None) } else { Same::Differs };
    if ex.kind != ExistingKind::File || ex.size != meta.size {
        return Ok(Same::Differs);
    }
    if opts.compare == Compare::SizeMtime && meta.mtime.is_some() {
        return Ok(same(same_mtime(ex, meta.mtime)));
    }
    if let Some((j, location, vol)) = journal {
        match j.verdict(&ex.stat(), &source_id(location, vol, path, meta)) {
            Verdict::Untouched => return Ok(Same::Untouched),
            // Touched since flr wrote it: its bytes against the recorded
            // hash of the image file's (the image is not read again).
            // Equal: recorded again with the file's new change time.
            Verdict::Touched(sha) => {
                return Ok(if dir.sha256_of(name).is_ok_and(|h| h == sha) {
                    Same::Equal(Some(sha))
                } else {
                    Same::Differs
                });
            }
            Verdict::Unknown => {}
        }
    }
    if opts.compare == Compare::Sha256 {
        let Ok(there) = dir.sha256_of(name) else {
            return Ok(Same::Differs);
        };
        let sha = source_sha256(fs, opts.streams, path)?;
        return Ok(if there == sha {
            Same::Equal(Some(sha))
        } else {
            Same::Differs
        });
    }
    let Ok(mut there) = dir.open_read(name) else {
        return Ok(Same::Differs);
    };
    let mut buf = Vec::new();
    // Hashed on the way only when the verdict can go into the journal.
    let mut hasher = journal
        .filter(|(j, _, _)| j.writing())
        .map(|_| sha2::Sha256::new());
    let compared = copy_file_streams(fs, path, opts.streams, |b| {
        use std::io::Read;
        if let Some(h) = hasher.as_mut() {
            h.update(b);
        }
        buf.resize(b.len(), 0);
        there.read_exact(&mut buf)?;
        if buf[..] == *b {
            Ok(())
        } else {
            Err(std::io::Error::other("the bytes differ"))
        }
    });
    match compared {
        // Equal so far: the copy in DEST must end where the image's does.
        Ok(_) if std::io::Read::read(&mut there, &mut [0u8; 1]).ok() == Some(0) => {
            Ok(Same::Equal(hasher.map(|h| h.finalize().into())))
        }
        Ok(_) => Ok(Same::Differs),
        Err(CopyError::Out(_)) => Ok(Same::Differs),
        Err(CopyError::Fs(e)) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::beside_name;

    #[test]
    fn beside_names_keep_the_extension() {
        assert_eq!(beside_name(b"notes.txt", 1), b"notes~1.txt");
        assert_eq!(beside_name(b"a.tar.gz", 2), b"a.tar~2.gz");
        assert_eq!(beside_name(b"README", 3), b"README~3");
        assert_eq!(beside_name(b".bashrc", 1), b".bashrc~1");
    }
}
