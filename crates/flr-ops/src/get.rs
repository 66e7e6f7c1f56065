//! `flr get`: restore files and folders into a destination folder.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;

use flr_engine::Image;
use flr_fs::{FileKind, Filesystem, FsPath, Metadata};
use sha2::Digest;

use crate::extract::{DestDir, Overwrite, WriteError};
use crate::ls::{Listing, MAX_DEPTH};
use crate::names::safe_component;
use crate::{copy_file_streams, fs_err, Context, CopyError, OpsError, OutputFormat, VolPath};
use flr_fs::{display_name, display_path};

/// Options of `get`.
#[derive(Debug, Clone, Default)]
pub struct GetOptions {
    /// Destination folder (created if missing).
    pub dest: PathBuf,
    /// Overwrite existing files.
    pub force: bool,
    /// Print each restored file's sha256.
    pub checksum: bool,
    /// How large files are read.
    pub streams: crate::Streams,
    /// `--format json`: the summary is the command's data, on stdout
    /// (else, with a JSON context, on stderr: the old `get --json`).
    pub summary_on_stdout: bool,
    /// The temporary files being written (a signal handler removes them).
    pub partials: std::sync::Arc<crate::extract::Partials>,
    /// What is kept besides data, mode and times (`--preserve`).
    pub preserve: crate::Preserve,
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
    /// Objects restored without some of what `--preserve` asked for (an
    /// xattr, ACL or owner the destination refused; each reported).
    pub not_preserved: u64,
}

/// The version of `get`'s JSON summary.
pub const GET_REPORT_VERSION: u32 = 1;

struct Job<'a, 'c> {
    vol: &'a str,
    fs: &'a dyn Filesystem,
    opts: &'a GetOptions,
    ctx: &'a mut Context<'c>,
    sum: GetSummary,
    /// Inodes of the folders being restored, root first: an entry that points
    /// back at one of them (a damaged image) would otherwise recurse forever.
    ancestors: HashSet<u64>,
}

/// Restores each `spec` into `opts.dest`: a file lands as `DEST/name`, a
/// folder as `DEST/name/…`, a volume root's contents directly in `DEST`.
pub fn get(
    image: &Image,
    specs: &[VolPath],
    opts: &GetOptions,
    ctx: &mut Context<'_>,
) -> Result<GetSummary, OpsError> {
    let root = DestDir::open_root(&opts.dest, opts.partials.clone())
        .map_err(|e| OpsError::Usage(e.to_string()))?;
    let mut filesystems: HashMap<String, Box<dyn Filesystem>> = HashMap::new();
    let mut total = GetSummary::default();
    let mut root_names = HashSet::new();
    for spec in specs {
        let vol = image.volume(&spec.volume)?;
        if !filesystems.contains_key(&vol.id) {
            let fs = vol.open_fs()?;
            crate::warn_consistency(ctx.err, &vol.id, fs.as_ref())?;
            filesystems.insert(vol.id.clone(), fs);
        }
        let fs = filesystems[&vol.id].as_ref();
        let meta = fs.metadata(&spec.path).map_err(fs_err(&vol.id))?;
        let mut job = Job {
            vol: &vol.id,
            fs,
            opts,
            ctx: &mut *ctx,
            sum: GetSummary::default(),
            ancestors: HashSet::new(),
        };
        if spec.path.is_root() {
            job.ancestors.extend(meta.inode);
            job.restore_dir_contents(&spec.path, &root, 0);
            if let Some(t) = meta.mtime {
                let _ = root.set_mtime(t);
            }
        } else {
            let name = spec.path.file_name().unwrap_or(b"").to_vec();
            job.restore(&spec.path, &name, &meta, &root, &mut root_names, 0);
        }
        let s = job.sum;
        total.files += s.files;
        total.dirs += s.dirs;
        total.symlinks += s.symlinks;
        total.bytes += s.bytes;
        total.renamed += s.renamed;
        total.failed += s.failed;
        total.skipped += s.skipped;
        total.not_preserved += s.not_preserved;
    }
    total.report_version = GET_REPORT_VERSION;
    total.kind = "summary";
    if ctx.format == OutputFormat::Json {
        let w: &mut dyn Write = if opts.summary_on_stdout {
            &mut *ctx.out
        } else {
            &mut *ctx.err
        };
        serde_json::to_writer(&mut *w, &total).map_err(std::io::Error::from)?;
        writeln!(w)?;
    } else {
        writeln!(
            ctx.err,
            "flr: restored {} files ({} bytes), {} folders, {} symlinks into {}{}{}{}{}",
            total.files,
            total.bytes,
            total.dirs,
            total.symlinks,
            opts.dest.display(),
            if total.renamed > 0 {
                format!("; {} names made safe", total.renamed)
            } else {
                String::new()
            },
            if total.skipped > 0 {
                format!("; {} special files skipped", total.skipped)
            } else {
                String::new()
            },
            if total.not_preserved > 0 {
                format!(
                    "; {} items without some attributes (see warnings)",
                    total.not_preserved
                )
            } else {
                String::new()
            },
            if total.failed > 0 {
                format!("; {} FAILED", total.failed)
            } else {
                String::new()
            },
        )?;
    }
    if total.failed > 0 {
        let all = total.files + total.symlinks + total.failed;
        return Err(OpsError::Partial {
            failed: usize::try_from(total.failed).unwrap_or(usize::MAX),
            total: usize::try_from(all).unwrap_or(usize::MAX),
        });
    }
    Ok(total)
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

    fn overwrite(&self) -> Overwrite {
        if self.opts.force {
            Overwrite::Replace
        } else {
            Overwrite::Refuse
        }
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

    fn restore(
        &mut self,
        path: &FsPath,
        name: &[u8],
        meta: &Metadata,
        into: &DestDir,
        used: &mut HashSet<Vec<u8>>,
        depth: usize,
    ) {
        let safe = self.dest_name(path, name, used);
        match meta.kind {
            FileKind::File => self.restore_file(path, &safe, meta, into),
            FileKind::Symlink => match self.fs.read_link(path) {
                Ok(target) => {
                    match into.write_symlink(&safe, &target, self.overwrite(), meta.mtime) {
                        Ok(()) => {
                            self.sum.symlinks += 1;
                            let extra = self.extra(path, meta);
                            extra.apply_symlink(into.fd(), &safe);
                            self.report_refused(path, &extra);
                        }
                        Err(e) => self.fail(path, e),
                    }
                }
                Err(e) => self.fail(path, e),
            },
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
                match into.subdir(&safe) {
                    Ok(sub) => {
                        self.sum.dirs += 1;
                        if let Some(ino) = meta.inode {
                            self.ancestors.insert(ino);
                        }
                        self.restore_dir_contents(path, &sub, depth + 1);
                        if let Some(ino) = meta.inode {
                            self.ancestors.remove(&ino);
                        }
                        let extra = self.extra(path, meta);
                        if let Err(e) = sub.finish(&extra) {
                            self.fail(path, e);
                        }
                        self.report_refused(path, &extra);
                    }
                    Err(e) => self.fail(path, e),
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

    fn restore_dir_contents(&mut self, dir: &FsPath, into: &DestDir, depth: usize) {
        // As `ls` (see `Listing`); an error while reading is reported after
        // what was read is restored.
        let fs = self.fs;
        let mut listing = match Listing::read(fs, dir) {
            Ok(l) => l,
            Err(e) => return self.fail(dir, e),
        };
        let mut broken = listing.error.take();
        let mut used = HashSet::new();
        let mut names = HashSet::new();
        for e in listing {
            let e = match e {
                Ok(e) => e,
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            };
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
            self.restore(&path, &e.name, &e.meta, into, &mut used, depth);
        }
        if let Some(e) = broken {
            self.fail(dir, e);
        }
    }

    fn restore_file(&mut self, path: &FsPath, safe: &[u8], meta: &Metadata, into: &DestDir) {
        if let Some(r) = &meta.unreadable {
            return self.fail(path, format!("not restored: {r}"));
        }
        let mut hasher = self.opts.checksum.then(sha2::Sha256::new);
        let fs = self.fs;
        let extra = self.extra(path, meta);
        let mut sparse = crate::sparse::SparseWriter::for_file(fs, path, meta.size);
        let res = into.write_file(safe, self.overwrite(), &extra, |f| {
            let n = copy_file_streams(fs, path, self.opts.streams, |b| {
                if let Some(h) = hasher.as_mut() {
                    h.update(b);
                }
                sparse.write(f, b)
            })?;
            sparse.finish(f).map_err(CopyError::Out)?;
            Ok(n)
        });
        match res {
            Ok(Ok(n)) => {
                self.sum.files += 1;
                self.report_refused(path, &extra);
                self.sum.bytes += n;
                if let Some(h) = hasher {
                    let rel = if into.rel.is_empty() {
                        display_name(safe)
                    } else {
                        format!("{}/{}", into.rel, display_name(safe))
                    };
                    let sum = hex::encode(h.finalize());
                    if self.opts.summary_on_stdout && self.ctx.format == OutputFormat::Json {
                        let line = serde_json::json!({
                            "report_version": GET_REPORT_VERSION,
                            "type": "file",
                            "path": rel,
                            "size": n,
                            "sha256": sum,
                        });
                        let _ = writeln!(self.ctx.out, "{line}");
                    } else {
                        let _ = writeln!(self.ctx.out, "{sum}  {rel}");
                    }
                }
            }
            Ok(Err(CopyError::Fs(e))) => self.fail(path, e),
            Ok(Err(CopyError::Out(e))) => self.fail(
                path,
                WriteError::Os {
                    path: display_name(safe),
                    what: "write failed",
                    source: e,
                },
            ),
            Err(e) => self.fail(path, e),
        }
    }
}
