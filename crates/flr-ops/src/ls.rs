//! `flr ls`: list a folder (or describe a file) on a volume.

use std::collections::HashSet;

use flr_engine::Image;
use flr_fs::{DirEntry, DirStream, FileKind, Filesystem, FsError, FsPath, Metadata, Timestamp};
use serde::Serialize;

use crate::{fs_err, Context, OpsError, OutputFormat, VolPath};
use flr_fs::{display_component, display_name, display_path};

/// Options of `ls`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LsOptions {
    /// Long format: mode, owner, size, mtime, creation (birth) time.
    pub long: bool,
    /// Recurse into subfolders.
    pub recursive: bool,
    /// Also list each object's alternate data streams as `name:stream`.
    pub streams: bool,
}

/// Folders with at most this many entries are listed sorted by name; larger
/// ones stream in the folder's own order (bounded memory).
pub(crate) const SORT_LIMIT: usize = 10_000;

/// A folder's entries as `ls` and `get` take them: a folder of up to
/// [`SORT_LIMIT`] entries is read whole and sorted by name (so listings and
/// which of two clashing names keeps its own are stable); a larger one
/// streams on in the folder's own order, without holding its entries.
pub(crate) struct Listing<'a> {
    first: std::vec::IntoIter<DirEntry>,
    rest: Option<DirStream<'a>>,
    /// An error met while reading the first entries; the entries read
    /// before it are in the listing.
    pub(crate) error: Option<FsError>,
}

impl<'a> Listing<'a> {
    pub(crate) fn read(fs: &'a dyn Filesystem, dir: &FsPath) -> Result<Self, FsError> {
        let mut stream = fs.read_dir_stream(dir)?;
        let mut first = Vec::new();
        let mut error = None;
        let mut more = false;
        for e in stream.by_ref() {
            match e {
                Ok(e) => first.push(e),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
            if first.len() > SORT_LIMIT {
                more = true;
                break;
            }
        }
        if !more {
            first.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(Listing {
            first: first.into_iter(),
            rest: more.then_some(stream),
            error,
        })
    }

    /// Whether the whole folder was read and sorted.
    pub(crate) fn sorted(&self) -> bool {
        self.rest.is_none()
    }
}

impl Iterator for Listing<'_> {
    type Item = Result<DirEntry, FsError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.first.next() {
            Some(e) => Some(Ok(e)),
            None => self.rest.as_mut()?.next(),
        }
    }
}

/// The version of `ls`'s JSON Lines records (docs/json.md).
pub(crate) const LS_REPORT_VERSION: u32 = 1;

/// Deepest folder nesting `ls -R` and `get` follow; deeper is reported as corrupt.
pub(crate) const MAX_DEPTH: usize = 4096;

#[derive(Serialize)]
struct JsonEntry<'a> {
    /// docs/json.md.
    report_version: u32,
    path: String,
    #[serde(rename = "type")]
    kind: FileKind,
    size: u64,
    mtime: Option<String>,
    /// Last access, status change and creation (birth) times, where the
    /// filesystem has them.
    #[serde(skip_serializing_if = "Option::is_none")]
    atime: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ctime: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    btime: Option<String>,
    mode: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
    inode: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unreadable: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    windows: Option<crate::WindowsEntry>,
}

/// One alternate data stream in `ls --streams` JSON (docs/json.md).
#[derive(Serialize)]
struct JsonStream<'a> {
    report_version: u32,
    /// `/dir/file:stream`.
    path: String,
    #[serde(rename = "type")]
    kind: &'static str,
    /// The object it belongs to.
    file: &'a str,
    stream: &'a str,
    size: u64,
}

/// Lists `spec` on its volume. With `--json`, writes one JSON object per
/// line (JSON Lines), so huge folders stream.
pub fn ls(
    image: &Image,
    spec: &VolPath,
    opts: LsOptions,
    ctx: &mut Context<'_>,
) -> Result<(), OpsError> {
    let vol = image.volume(&spec.volume)?;
    let fs = vol.open_fs()?;
    crate::warn_consistency(ctx.err, &vol.id, fs.as_ref())?;
    let meta = fs.metadata(&spec.path).map_err(fs_err(&vol.id))?;
    if meta.kind == FileKind::File && meta.unreadable.is_none() {
        // A disk image stored as a file shows the volumes inside it.
        if let Ok(inner) = image.nested_image(&vol, &spec.raw_path) {
            if inner.recognised() {
                return list_image(&inner, ctx, opts);
            }
        }
    }
    if meta.kind != FileKind::Dir {
        let name = spec.path.file_name().unwrap_or(b"/").to_vec();
        return print_entry(
            fs.as_ref(),
            ctx,
            &spec.path,
            &display_name(&name),
            &meta,
            opts,
        )
        .map_err(OpsError::from);
    }
    let mut seen = HashSet::new();
    list_dir(fs.as_ref(), &vol.id, &spec.path, opts, ctx, &mut seen, 0)
}

/// The volumes of a disk image found in a file: a line on what the image
/// is, then one per volume with the id to use (`FILE::p1`), its size, kind
/// and verdict. JSON Lines: one object per volume.
fn list_image(inner: &Image, ctx: &mut Context<'_>, opts: LsOptions) -> Result<(), OpsError> {
    #[derive(Serialize)]
    struct Vol<'a> {
        volume: &'a str,
        size: u64,
        kind: &'a str,
        verdict: &'a str,
        detail: &'a str,
        fs_type: Option<&'a str>,
    }
    if ctx.format == OutputFormat::Json {
        for v in &inner.volumes {
            serde_json::to_writer(
                &mut *ctx.out,
                &Vol {
                    volume: &v.id,
                    size: v.size,
                    kind: v.content.kind.name,
                    verdict: v.content.verdict.as_str(),
                    detail: &v.content.detail,
                    fs_type: v.content.fs.as_ref().map(|f| f.fs_type.as_str()),
                },
            )
            .map_err(std::io::Error::from)?;
            writeln!(ctx.out)?;
        }
        return Ok(());
    }
    let c = &inner.container;
    writeln!(
        ctx.out,
        "disk image: {}{}, virtual size {}{}; its volumes:",
        c.format.to_uppercase(),
        c.subtype
            .as_deref()
            .map(|s| format!(" {s}"))
            .unwrap_or_default(),
        crate::probe::human_size(c.virtual_size),
        inner
            .table
            .as_ref()
            .map(|t| format!(", {} partition table", t.scheme.to_uppercase()))
            .unwrap_or_default()
    )?;
    for v in &inner.volumes {
        let what = v
            .content
            .fs
            .as_ref()
            .map_or(v.content.kind.display, |f| f.fs_type.as_str());
        write!(
            ctx.out,
            "{}  {}  {what}  {}",
            v.id,
            crate::probe::human_size(v.size),
            v.content.verdict
        )?;
        if opts.long || v.content.verdict != flr_engine::Verdict::Readable {
            write!(ctx.out, "  {}", v.content.detail)?;
        }
        writeln!(ctx.out)?;
    }
    Ok(())
}

fn list_dir(
    fs: &dyn Filesystem,
    vol: &str,
    dir: &FsPath,
    opts: LsOptions,
    ctx: &mut Context<'_>,
    ancestors: &mut HashSet<u64>,
    depth: usize,
) -> Result<(), OpsError> {
    if depth > MAX_DEPTH {
        return Err(fs_err(vol)(flr_fs::FsError::Corrupt {
            fs: "filesystem",
            offset: None,
            what: format!("{dir}: folders nested deeper than {MAX_DEPTH} levels (a loop?)"),
        }));
    }
    // Memory stays bounded whatever the folder's size: a large one is listed
    // in its own order as it is read (one line on stderr says so).
    let mut listing = Listing::read(fs, dir).map_err(fs_err(vol))?;
    if let Some(e) = listing.error.take() {
        return Err(fs_err(vol)(e));
    }
    if !listing.sorted() {
        writeln!(
            ctx.err,
            "flr: {vol}:{}: more than {SORT_LIMIT} entries: listed in the folder's order, not sorted",
            display_path(dir)
        )?;
    }
    for e in listing {
        let e = e.map_err(fs_err(vol))?;
        let path = dir.join(&e.name);
        // With -R the whole path, each name escaped ("/" inside a name as \x2f).
        let shown = if opts.recursive {
            display_path(&path)
        } else {
            display_component(&e.name)
        };
        print_entry(fs, ctx, &path, &shown, &e.meta, opts)?;
        if !opts.recursive || e.meta.kind != FileKind::Dir {
            continue;
        }
        if let Some(ino) = e.meta.inode {
            if !ancestors.insert(ino) {
                writeln!(
                    ctx.err,
                    "flr: {vol}:{}: folder loop (inode {ino} is its own ancestor); not descending",
                    display_path(&path)
                )?;
                continue;
            }
        }
        let r = list_dir(fs, vol, &path, opts, ctx, ancestors, depth + 1);
        if let Some(ino) = e.meta.inode {
            ancestors.remove(&ino);
        }
        r?;
    }
    Ok(())
}

fn print_entry(
    fs: &dyn Filesystem,
    ctx: &mut Context<'_>,
    path: &FsPath,
    shown: &str,
    m: &Metadata,
    opts: LsOptions,
) -> std::io::Result<()> {
    let target = (m.kind == FileKind::Symlink)
        .then(|| fs.read_link(path).ok())
        .flatten();
    // Windows attributes, owner and SDDL where the filesystem keeps them
    // (JSON, and the `ls -l` column where there is no unix mode).
    let windows = if ctx.format == OutputFormat::Json || (opts.long && m.mode.is_none()) {
        match fs.windows_meta(path) {
            Ok(w) => w,
            Err(e) => {
                writeln!(
                    ctx.err,
                    "flr: {}: Windows metadata not read: {e}",
                    display_path(path)
                )?;
                None
            }
        }
    } else {
        None
    };
    print_line(ctx, path, shown, m, opts, target, windows.as_ref())?;
    if opts.streams {
        print_streams(fs, ctx, path, shown, m, opts)?;
    }
    Ok(())
}

/// The `name:stream` lines (or JSON records) of `path`'s alternate data
/// streams.
fn print_streams(
    fs: &dyn Filesystem,
    ctx: &mut Context<'_>,
    path: &FsPath,
    shown: &str,
    m: &Metadata,
    opts: LsOptions,
) -> std::io::Result<()> {
    let streams = match fs.streams(path) {
        Ok(s) => s,
        Err(e) => {
            return writeln!(
                ctx.err,
                "flr: {}: streams not listed: {e}",
                display_path(path)
            );
        }
    };
    let file = display_path(path);
    for s in streams {
        let name = display_component(s.name.as_bytes());
        if ctx.format == OutputFormat::Json {
            let j = JsonStream {
                report_version: LS_REPORT_VERSION,
                path: format!("{file}:{name}"),
                kind: "stream",
                file: &file,
                stream: &s.name,
                size: s.size,
            };
            serde_json::to_writer(&mut *ctx.out, &j)?;
            writeln!(ctx.out)?;
        } else if opts.long {
            let time = m.mtime.map(format_time).unwrap_or_else(|| "-".repeat(19));
            writeln!(
                ctx.out,
                "{:<11} {:>5} {:>5} {:>12} {time} {shown}:{name}",
                "stream", "-", "-", s.size
            )?;
        } else {
            writeln!(ctx.out, "{shown}:{name}")?;
        }
    }
    Ok(())
}

fn print_line(
    ctx: &mut Context<'_>,
    path: &FsPath,
    shown: &str,
    m: &Metadata,
    opts: LsOptions,
    target: Option<Vec<u8>>,
    windows: Option<&flr_fs::WindowsMeta>,
) -> std::io::Result<()> {
    if ctx.format == OutputFormat::Json {
        let j = JsonEntry {
            report_version: LS_REPORT_VERSION,
            path: display_path(path),
            kind: m.kind,
            size: m.size,
            mtime: m.mtime.map(format_time),
            atime: m.atime.map(format_time),
            ctime: m.ctime.map(format_time),
            btime: m.btime.map(format_time),
            mode: m.mode.map(|x| format!("{x:04o}")),
            uid: m.uid,
            gid: m.gid,
            inode: m.inode,
            target: target.as_deref().map(display_name),
            unreadable: m.unreadable.as_deref(),
            windows: windows.map(crate::WindowsEntry::from),
        };
        serde_json::to_writer(&mut *ctx.out, &j)?;
        return writeln!(ctx.out);
    }
    let name = shown;
    if !opts.long {
        let suffix = if m.kind == FileKind::Dir { "/" } else { "" };
        return writeln!(ctx.out, "{name}{suffix}");
    }
    let owner = match (m.uid, m.gid) {
        (Some(u), Some(g)) => format!("{u:>5} {g:>5}"),
        _ => format!("{:>5} {:>5}", "-", "-"),
    };
    let time = m.mtime.map(format_time).unwrap_or_else(|| "-".repeat(19));
    // The creation (birth) time, as `stat` shows it: `-` where unknown.
    let born = m.btime.map(format_time).unwrap_or_else(|| "-".repeat(19));
    write!(
        ctx.out,
        "{} {owner} {:>12} {time} {born} {name}",
        mode_string(m, windows),
        m.size
    )?;
    if let Some(t) = target {
        write!(ctx.out, " -> {}", display_name(&t))?;
    }
    if let Some(r) = &m.unreadable {
        write!(ctx.out, "  [cannot restore: {r}]")?;
    }
    writeln!(ctx.out)
}

/// `drwxr-xr-x`; where the filesystem keeps Windows attributes instead of
/// a unix mode (NTFS, FAT), the kind and one letter per attribute,
/// `rhsalcepon` (read-only, hidden, system, archive, reparse point ("link"),
/// compressed, encrypted, sparse, offline, not content-indexed), `-` when
/// clear: `d---a------`; where it keeps neither, `d?????????`.
fn mode_string(m: &Metadata, windows: Option<&flr_fs::WindowsMeta>) -> String {
    let k = match m.kind {
        FileKind::File => '-',
        FileKind::Dir => 'd',
        FileKind::Symlink => 'l',
        FileKind::Special => 's',
    };
    let mut s = String::from(k);
    match m.mode {
        None if windows.is_some() => {
            s.push_str(&windows.map(|w| w.letters()).unwrap_or_default());
        }
        None => s.push_str("?????????"),
        Some(mode) => {
            for (i, c) in "rwxrwxrwx".chars().enumerate() {
                let bit = 0o400 >> i;
                s.push(if mode & bit != 0 { c } else { '-' });
            }
        }
    }
    s
}

/// `YYYY-MM-DD HH:MM:SS` UTC.
pub(crate) fn format_time(t: Timestamp) -> String {
    let days = t.secs.div_euclid(86_400);
    let rem = t.secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), by
/// counting 400-year eras of 146097 days from 0000-03-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..365, from March 1
    let mp = (5 * doy + 2) / 153; // month from March, 0..11
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(
            format_time(Timestamp { secs: 0, nanos: 0 }),
            "1970-01-01 00:00:00"
        );
        assert_eq!(
            format_time(Timestamp {
                secs: 951_782_400,
                nanos: 0
            }),
            "2000-02-29 00:00:00"
        );
        assert_eq!(
            format_time(Timestamp {
                secs: 1_700_000_000,
                nanos: 0
            }),
            "2023-11-14 22:13:20"
        );
        assert_eq!(
            format_time(Timestamp { secs: -1, nanos: 0 }),
            "1969-12-31 23:59:59"
        );
    }
}
