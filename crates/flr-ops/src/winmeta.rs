//! Windows fidelity for `ls`, `cat`, `get` and `manifest`: alternate data
//! streams (listed, read, restored as xattrs or side files) and the
//! Windows attributes, reparse kind, owner and SDDL of a file
//! ([`WindowsEntry`], the `windows` object of `ls` JSON and the manifest).

use std::os::fd::AsFd;

use flr_fs::{Filesystem, FsError, FsPath, WindowsMeta};
use serde::{Deserialize, Serialize};

use crate::extract::{DestDir, Overwrite};
use crate::names::safe_component;
use crate::{copy_file, CopyError};

/// How `get` restores a file's alternate data streams (`--streams`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NtfsStreams {
    /// Not restored.
    None,
    /// As `user.ntfs.stream.NAME` extended attributes of the restored file
    /// (the default): they travel with the file; a stream larger than an
    /// xattr holds (64 KiB) or a destination without user xattrs is
    /// reported and counted as failed.
    #[default]
    Xattr,
    /// As side files `NAME:STREAM` beside the file.
    Files,
}

impl std::str::FromStr for NtfsStreams {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(NtfsStreams::None),
            "xattr" => Ok(NtfsStreams::Xattr),
            "files" => Ok(NtfsStreams::Files),
            _ => Err(format!("--streams={s}: expected none, xattr or files")),
        }
    }
}

/// The xattr name a stream is restored as.
pub const XATTR_PREFIX: &str = flr_fs::STREAM_XATTR_PREFIX;
/// Linux's largest xattr value (XATTR_SIZE_MAX).
const XATTR_MAX: u64 = 64 << 10;
/// Linux's longest xattr name (XATTR_NAME_MAX).
const XATTR_NAME_MAX: usize = 255;

/// What restoring one file's streams did.
#[derive(Debug, Default)]
pub(crate) struct StreamReport {
    /// Streams restored.
    pub(crate) restored: u64,
    /// One line per stream not restored.
    pub(crate) problems: Vec<String>,
}

/// Reads a whole (small) stream.
fn read_stream(fs: &dyn Filesystem, path: &FsPath, name: &str) -> Result<Vec<u8>, FsError> {
    let mut h = fs.open_stream(path, name)?;
    let mut v = Vec::with_capacity(usize::try_from(h.size()).unwrap_or(0));
    match copy_file(h.as_mut(), path, |b| {
        v.extend_from_slice(b);
        Ok(())
    }) {
        Ok(_) => Ok(v),
        Err(CopyError::Fs(e)) => Err(e),
        // The sink above never fails.
        Err(CopyError::Out(e)) => Err(FsError::Corrupt {
            fs: "filesystem",
            offset: None,
            what: e.to_string(),
        }),
    }
}

/// Restores the streams of the folder `path`, restored as `sub` (named
/// `safe` in `into`): as xattrs of the folder, or as side files
/// `SAFE:STREAM` beside it.
pub(crate) fn folder_streams(
    fs: &dyn Filesystem,
    path: &FsPath,
    how: NtfsStreams,
    (into, safe, sub): (&DestDir, &[u8], &DestDir),
    ow: Overwrite,
) -> StreamReport {
    match how {
        NtfsStreams::None => StreamReport::default(),
        NtfsStreams::Xattr => streams_to_xattrs(fs, path, sub.as_fd()),
        NtfsStreams::Files => streams_to_files(fs, path, safe, into, ow),
    }
}

/// Sets each stream of `path` as a `user.ntfs.stream.NAME` xattr of `file`
/// (the temporary file, before its mode is set; or a restored folder).
pub(crate) fn streams_to_xattrs(
    fs: &dyn Filesystem,
    path: &FsPath,
    file: impl AsFd,
) -> StreamReport {
    let (mut r, streams) = listed(fs, path);
    for s in streams {
        let name = format!("{XATTR_PREFIX}{}", s.name);
        let fail =
            |why: String| format!("stream {:?} not restored as xattr {name:?}: {why}", s.name);
        if s.size > XATTR_MAX {
            r.problems.push(fail(format!(
                "{} bytes is more than an xattr holds ({XATTR_MAX}); use --streams=files",
                s.size
            )));
            continue;
        }
        if name.len() > XATTR_NAME_MAX {
            r.problems
                .push(fail("the name is longer than an xattr name can be".into()));
            continue;
        }
        let value = match read_stream(fs, path, &s.name) {
            Ok(v) => v,
            Err(e) => {
                r.problems.push(fail(e.to_string()));
                continue;
            }
        };
        match rustix::fs::fsetxattr(
            &file,
            name.as_str(),
            &value,
            rustix::fs::XattrFlags::empty(),
        ) {
            Ok(()) => r.restored += 1,
            Err(e) => {
                let why = match e {
                    rustix::io::Errno::NOTSUP => {
                        "the destination filesystem does not take user xattrs; use --streams=files"
                            .to_string()
                    }
                    rustix::io::Errno::NOSPC
                    | rustix::io::Errno::TOOBIG
                    | rustix::io::Errno::RANGE => {
                        format!("the destination refuses a value of {} bytes ({e}); use --streams=files", value.len())
                    }
                    e => std::io::Error::from(e).to_string(),
                };
                r.problems.push(fail(why));
            }
        }
    }
    r
}

/// The streams of `path`, or a report of why they could not be listed.
fn listed(fs: &dyn Filesystem, path: &FsPath) -> (StreamReport, Vec<flr_fs::StreamInfo>) {
    let mut r = StreamReport::default();
    match fs.streams(path) {
        Ok(s) => (r, s),
        Err(e) => {
            r.problems.push(format!("cannot list its streams: {e}"));
            (r, Vec::new())
        }
    }
}

/// Writes each stream of `path` as a side file `SAFE:STREAM` beside the
/// restored file `safe` in `into` (the name made safe as any other: a
/// stream name never leads out of DEST).
pub(crate) fn streams_to_files(
    fs: &dyn Filesystem,
    path: &FsPath,
    safe: &[u8],
    into: &DestDir,
    ow: Overwrite,
) -> StreamReport {
    let (mut r, streams) = listed(fs, path);
    for s in streams {
        let mut side = safe.to_vec();
        side.push(b':');
        side.extend_from_slice(s.name.as_bytes());
        let (side, _) = safe_component(&side);
        let plain = crate::fidelity::Extra::mode_only(0o644);
        let res = into.write_file(&side, ow, &plain, |f| {
            let mut h = fs.open_stream(path, &s.name).map_err(CopyError::Fs)?;
            copy_file(h.as_mut(), path, |b| std::io::Write::write_all(f, b))
        });
        let shown = String::from_utf8_lossy(&side).into_owned();
        match res {
            Ok(Ok(_)) => r.restored += 1,
            Ok(Err(e)) => {
                let e = match e {
                    CopyError::Fs(e) => e.to_string(),
                    CopyError::Out(e) => e.to_string(),
                };
                r.problems.push(format!(
                    "stream {:?} not restored as {shown:?}: {e}",
                    s.name
                ))
            }
            Err(e) => r
                .problems
                .push(format!("stream {:?} not restored: {e}", s.name)),
        }
    }
    r
}

/// `ID:/dir/file:stream`: when `path` names nothing but its last component
/// holds a colon, the file before the first colon and the stream after it
/// (a trailing `:$DATA`, the stream type Windows shows, is dropped). A
/// name that exists as given always wins, so an ext4 file with a colon in
/// its name is still the file.
pub(crate) fn stream_spec(fs: &dyn Filesystem, path: &FsPath) -> Option<(FsPath, String)> {
    let last = path.file_name()?;
    if !last.contains(&b':') || fs.metadata(path).is_ok() {
        return None;
    }
    let last = std::str::from_utf8(last).ok()?;
    let (file, stream) = last.split_once(':')?;
    let stream = stream.strip_suffix(":$DATA").unwrap_or(stream);
    if file.is_empty() || stream.is_empty() {
        return None;
    }
    let mut p = path.clone();
    *p.0.last_mut()? = file.as_bytes().to_vec();
    Some((p, stream.to_string()))
}

/// The `windows` object of `ls` JSON and of manifest entries (docs/json.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowsEntry {
    /// FILE_ATTRIBUTE_* bits, `0x%08x`.
    pub attributes: String,
    /// Their names (`hidden`, `system`, `readonly`, `archive`, …).
    #[serde(default)]
    pub attribute_names: Vec<String>,
    /// The reparse tag, `0x%08x`, for a reparse point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reparse_tag: Option<String>,
    /// Its kind (`symlink`, `junction`, `wof`, `dedup`, `cloud`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reparse_kind: Option<String>,
    /// Owner SID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Primary group SID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The security descriptor as SDDL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sddl: Option<String>,
}

impl From<&WindowsMeta> for WindowsEntry {
    fn from(w: &WindowsMeta) -> Self {
        WindowsEntry {
            attributes: format!("0x{:08x}", w.attributes),
            attribute_names: w.attribute_names(),
            reparse_tag: w.reparse.as_ref().map(|r| format!("0x{:08x}", r.tag)),
            reparse_kind: w.reparse.as_ref().map(|r| r.kind.to_string()),
            owner: w.owner.clone(),
            group: w.group.clone(),
            sddl: w.sddl.clone(),
        }
    }
}

/// The Windows metadata of `path` for JSON; `Err` carries the message for
/// stderr when the filesystem has it but it could not be read.
pub(crate) fn entry_of(
    fs: &dyn Filesystem,
    path: &FsPath,
) -> Result<Option<WindowsEntry>, FsError> {
    Ok(fs.windows_meta(path)?.as_ref().map(WindowsEntry::from))
}
