//! flr's operations over an opened image: `probe`, `ls`, `get`, `cat`.
//!
//! Each operation takes its options and a [`Context`] holding the output
//! streams, so the binary stays thin and tests can capture output in a
//! `Vec<u8>`.
//!
//! # Errors
//! [`OpsError`] says which layer failed; [`OpsError::exit_code`] maps it to
//! the exit codes documented in `flr --help`.
#![deny(missing_docs)]

pub mod access;
pub mod daemon;
mod diff;
mod extract;
mod fidelity;
pub mod fleet;
mod get;
mod journal;
mod keychain;
mod keys;
pub mod log;
mod ls;
mod manifest;
mod mount;
mod names;
mod pipe;
mod probe;
mod progress;
mod prompt;
pub mod select;
mod session;
mod sparse;
mod spec;
mod verify;
mod winmeta;

pub use diff::{
    diff, diff_fs, write_diff, ChangeKind, DiffEntry, DiffMode, DiffOptions, DiffSummary,
    VolumeDiff, DIFF_VERSION,
};
pub use extract::Partials;
pub use fidelity::Preserve;
pub use flr_fs::{display_name, display_path};
pub use get::{get, Compare, GetOptions, GetSummary, OverwritePolicy, GET_REPORT_VERSION};
pub use keychain::{
    feasibility, feasibility_of, run_chain, ChainMode, ChainOptions, ChainOutcome, ChainResult,
    ChainSummary, Feasibility, Feasible, Reason,
};
pub use keys::{add_key_arg, add_luks_header_arg};
pub use log::{Level, LogFormat, LogOptions, LogWriter};
pub use ls::{ls, LsOptions};
pub use manifest::{
    manifest, read_manifest, write_manifest, Entry, Manifest, ManifestOptions, ManifestVolume,
};
pub use mount::{mount, MountArgs};
pub use names::safe_component;
pub use probe::{probe, probe_report, ProbeReport, REPORT_VERSION};
pub use select::Selection;
pub use session::{run, Command, Globals, Invocation, Session, StatsFormat};
pub use spec::VolPath;
pub use verify::{
    parse_bytes, parse_duration, verify, write_file_atomically, write_json, write_junit,
    write_prometheus, write_summary, Since, Status, UnreadableKind, VerifyMode, VerifyOptions,
    VerifyReport, VolumeState, VERIFY_REPORT_VERSION,
};
pub use winmeta::{NtfsStreams, WindowsEntry, XATTR_PREFIX};

use std::io::Write;

use flr_engine::{EngineError, Image};
use flr_fs::{FileKind, FsError, FsPath};

/// Human text or JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Text for people.
    #[default]
    Human,
    /// JSON for programs.
    Json,
}

/// Where an operation writes: its result (`out`) and its messages (`err`).
pub struct Context<'a> {
    /// Results.
    pub out: &'a mut dyn Write,
    /// Warnings and progress.
    pub err: &'a mut dyn Write,
    /// Output format.
    pub format: OutputFormat,
}

/// Exit codes, documented in `flr --help`.
pub mod exit {
    /// Everything asked for was done.
    pub const OK: i32 = 0;
    /// Done in part: some files were not restored (each is reported).
    pub const PARTIAL: i32 = 1;
    /// Bad arguments, a path that does not exist, a volume that is not there.
    pub const USAGE: i32 = 2;
    /// The image is corrupt or unreadable (the message names the layer and offset).
    pub const BAD_IMAGE: i32 = 3;
    /// The volume is encrypted or of a kind flr cannot open.
    pub const NOT_READABLE: i32 = 4;
    /// Writing the output failed.
    pub const OUTPUT: i32 = 5;
    /// The key chain could not find out (vault unreachable, server error),
    /// or Resource Manager throttled the grant: retry later.
    pub const KEY_CHAIN: i32 = 6;
    /// `verify`: the image differs from its manifest (missing, changed or
    /// extra files).
    pub const MISMATCH: i32 = 7;
}

/// An operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// Opening or stacking the image's layers failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A filesystem operation failed on a volume.
    #[error("volume {volume}: {source}")]
    Fs {
        /// Volume id.
        volume: String,
        /// The error.
        #[source]
        source: FsError,
    },
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// The source could not be reached or opened (Resource Manager, network).
    #[error("{0}")]
    Source(String),
    /// Resource Manager throttled or failed past the retries, or no export
    /// slot came free: worth trying again later (exit 6).
    #[error("{0}")]
    Retryable(String),
    /// Writing output failed.
    #[error("output: {0}")]
    Output(#[from] std::io::Error),
    /// Some items failed; each was reported as it happened.
    #[error("{failed} of {total} items could not be restored (see the messages above)")]
    Partial {
        /// How many failed.
        failed: usize,
        /// How many were attempted.
        total: usize,
    },
}

impl OpsError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            OpsError::Engine(EngineError::NoSuchVolume { .. })
            | OpsError::Engine(EngineError::NotAnImage { .. })
            | OpsError::Usage(_) => exit::USAGE,
            OpsError::Engine(e) if e.is_unsupported() => exit::NOT_READABLE,
            OpsError::Engine(_) | OpsError::Source(_) => exit::BAD_IMAGE,
            OpsError::Retryable(_) => exit::KEY_CHAIN,
            OpsError::Fs { source, .. } => fs_exit_code(source),
            OpsError::Output(_) => exit::OUTPUT,
            OpsError::Partial { .. } => exit::PARTIAL,
        }
    }
}

fn fs_exit_code(e: &FsError) -> i32 {
    match e {
        FsError::NotFound { .. } | FsError::NotADirectory { .. } | FsError::NotAFile { .. } => {
            exit::USAGE
        }
        FsError::Unsupported { .. } => exit::NOT_READABLE,
        _ => exit::BAD_IMAGE,
    }
}

/// The volumes an operation covers: every volume of the image when `ids`
/// is empty, else those named, in the image's order, then the ones that lie
/// in disk images stored as files (`p2:/x.vhdx::p1`), in the order given.
/// An id that names no volume is an error.
pub(crate) fn selected_volumes(
    image: &Image,
    ids: &[String],
) -> Result<Vec<flr_engine::Volume>, OpsError> {
    let mut out: Vec<flr_engine::Volume> = image
        .volumes
        .iter()
        .filter(|v| ids.is_empty() || ids.contains(&v.id))
        .cloned()
        .collect();
    for id in ids {
        if !out.iter().any(|v| &v.id == id) {
            out.push(image.volume(id)?);
        }
    }
    Ok(out)
}

/// The warning for a filesystem that may miss its newest changes (a
/// journal not replayed after an unclean shutdown, a replay that left
/// updates unfinished, a FAT in use), or the note that a dirty one was
/// replayed: written once per volume by every command that reads it.
pub(crate) fn warn_consistency(
    err: &mut dyn Write,
    volume: &str,
    fs: &dyn flr_fs::Filesystem,
) -> std::io::Result<()> {
    let c = fs.consistency();
    if c.may_miss_changes() {
        writeln!(
            err,
            "flr: {volume}: warning: {} (files changed just before the snapshot may be missing or older)",
            c.sentence()
        )?;
    } else if c.unmount == flr_fs::Unmount::Dirty {
        // Replayed: nothing is missing, but the operator should know the
        // snapshot was taken of a running system.
        writeln!(
            err,
            "flr: {volume}: note: not cleanly unmounted (a crash-consistent snapshot); {}",
            c.sentence()
        )?;
    }
    Ok(())
}

pub(crate) fn fs_err(volume: &str) -> impl FnOnce(FsError) -> OpsError + '_ {
    move |source| OpsError::Fs {
        volume: volume.to_string(),
        source,
    }
}

/// Streams a file (or, for an empty path, the whole volume) to `out`;
/// messages go to `err`.
///
/// `progress`: draw a bar on stderr (the session decides: stderr a
/// terminal, stdout not, output for people).
pub fn cat(
    image: &Image,
    spec: &VolPath,
    streams: Streams,
    out: &mut dyn Write,
    err: &mut dyn Write,
    progress: bool,
) -> Result<(), OpsError> {
    cat_to(image, spec, streams, out, None, err, progress)
}

/// [`cat`], writing a file's data sparsely into `file` (a regular file at
/// the given offset, see `sparse::regular_file`) instead of `out` when
/// given: holes are skipped, not written as zeros.
pub(crate) fn cat_to(
    image: &Image,
    spec: &VolPath,
    streams: Streams,
    out: &mut dyn Write,
    file: Option<(std::fs::File, u64)>,
    err: &mut dyn Write,
    progress: bool,
) -> Result<(), OpsError> {
    let vol = image.volume(&spec.volume)?;
    if spec.raw_path.is_empty() {
        // A locked volume is never streamed: its bytes are ciphertext, not the
        // volume; nor one whose bytes cannot be given.
        let src = vol.bytes()?;
        let bar =
            progress::Progress::new(progress, &format!("cat {}:", vol.id), Some(src.len()), 0);
        let mut chunk = AlignedBuf::new(CHUNK);
        let buf = chunk.as_mut();
        let mut off = 0u64;
        while off < src.len() {
            let n = usize::try_from((src.len() - off).min(CHUNK as u64)).unwrap_or(CHUNK);
            src.read_exact_at(off, &mut buf[..n])
                .map_err(|e| OpsError::Engine(EngineError::Io(e)))?;
            out.write_all(&buf[..n])?;
            bar.bytes(n as u64);
            off += n as u64;
        }
        bar.finish();
        return Ok(());
    }
    let fs = vol.open_fs()?;
    warn_consistency(err, &vol.id, fs.as_ref())?;
    if let Some((file, stream)) = winmeta::stream_spec(fs.as_ref(), &spec.path) {
        let mut h = fs.open_stream(&file, &stream).map_err(fs_err(&vol.id))?;
        copy_file(h.as_mut(), &file, |b| out.write_all(b)).map_err(|e| match e {
            CopyError::Fs(source) => OpsError::Fs {
                volume: vol.id.clone(),
                source,
            },
            CopyError::Out(e) => OpsError::Output(e),
        })?;
        return Ok(());
    }
    let meta = fs.metadata(&spec.path).map_err(fs_err(&vol.id))?;
    let bar = progress::Progress::new(
        progress && meta.kind == FileKind::File,
        &format!("cat {}:{}", vol.id, display_path(&spec.path)),
        Some(meta.size),
        1,
    );
    if meta.kind != FileKind::File {
        return Err(OpsError::Fs {
            volume: vol.id.clone(),
            source: FsError::NotAFile {
                path: spec.path.to_string(),
            },
        });
    }
    let copied = match file {
        Some((mut f, start)) => {
            let mut w = sparse::SparseWriter::at(fs.as_ref(), &spec.path, meta.size, start);
            copy_file_streams(fs.as_ref(), &spec.path, streams, |b| {
                bar.bytes(b.len() as u64);
                w.write(&f, b)
            })
            .and_then(|_| w.finish(&mut f).map_err(CopyError::Out))
            .map(|_| ())
        }
        None => copy_file_streams(fs.as_ref(), &spec.path, streams, |b| {
            bar.bytes(b.len() as u64);
            out.write_all(b)
        })
        .map(|_| ()),
    };
    copied.map_err(|e| match e {
        CopyError::Fs(source) => OpsError::Fs {
            volume: vol.id.clone(),
            source,
        },
        CopyError::Out(e) => OpsError::Output(e),
    })?;
    bar.finish();
    Ok(())
}

/// Read size for file data: small enough to stay in the CPU cache between
/// the read and the write, as `cat` does.
pub(crate) const CHUNK: usize = 128 << 10;

const PAGE: usize = 4096;

/// A buffer that starts on a page boundary: the kernel copies page-cache data
/// into such buffers several times faster than into misaligned ones, and
/// readers below can then read straight into it.
pub(crate) struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    pub(crate) fn new(len: usize) -> Self {
        let storage = vec![0u8; len + PAGE];
        let addr = storage.as_ptr() as usize;
        let start = (PAGE - addr % PAGE) % PAGE;
        AlignedBuf {
            storage,
            start,
            len,
        }
    }

    /// Reuses the buffer for `len` bytes (at most its first length), so a
    /// loop needs no fresh, page-faulting allocation per chunk.
    pub(crate) fn with_len(mut self, len: usize) -> Self {
        assert!(self.start + len <= self.storage.len());
        self.len = len;
        self
    }

    pub(crate) fn as_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

pub(crate) enum CopyError {
    Fs(FsError),
    Out(std::io::Error),
}

/// Chunk of one parallel read stream: the blob source's largest single
/// range request, so each chunk costs one round trip.
const STREAM_CHUNK: usize = 8 << 20;

/// How `get` and `cat` read a large file: one sequential stream, or
/// several handles reading interleaved chunks. Worth more than one when
/// every read is a network round trip: the session sets it to
/// `--concurrency` for blob sources, so a large file is fetched as that
/// many disjoint 8 MiB ranges in flight, never beyond the file's own data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streams {
    /// Parallel streams per file (1: one sequential stream).
    pub count: usize,
    /// Bytes per chunk of a stream.
    pub chunk: usize,
}

impl Default for Streams {
    fn default() -> Self {
        Streams {
            count: 1,
            chunk: STREAM_CHUNK,
        }
    }
}

impl Streams {
    /// `count` streams of the default chunk.
    pub fn parallel(count: usize) -> Streams {
        Streams {
            count: count.max(1),
            ..Streams::default()
        }
    }
}

/// Opens `path` and copies its data to `sink` in order: one sequential
/// stream ([`copy_file`]), or, for a file of several chunks when `streams`
/// asks for more, that many handles reading interleaved chunks on scoped
/// threads. Stream `k` reads chunks `k, k + n, k + 2n, …` into page-aligned
/// buffers (so the layers below read each chunk in one piece) and hands
/// each over a rendezvous channel, and the writer takes them round robin,
/// so data reaches `sink` in file order with at most `n + 1` chunks in
/// memory.
pub(crate) fn copy_file_streams(
    fs: &dyn flr_fs::Filesystem,
    path: &FsPath,
    streams: Streams,
    sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<u64, CopyError> {
    copy_interleaved(fs, path, streams.count, streams.chunk.max(4096), sink)
}

/// [`copy_file_streams`] with the stream count and chunk size given.
fn copy_interleaved(
    fs: &dyn flr_fs::Filesystem,
    path: &FsPath,
    streams: usize,
    chunk_size: usize,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<u64, CopyError> {
    let mut first = fs.open(path).map_err(CopyError::Fs)?;
    let size = first.size();
    let chunks = size.div_ceil(chunk_size as u64);
    if streams <= 1 || chunks < 3 {
        return copy_file(first.as_mut(), path, sink);
    }
    let streams = streams.min(usize::try_from(chunks).unwrap_or(usize::MAX));
    let short = |off: u64| FsError::Corrupt {
        fs: "filesystem",
        offset: None,
        what: format!("{path}: data ends at {off} bytes, but the size is {size}"),
    };
    std::thread::scope(|scope| {
        let mut rxs = Vec::with_capacity(streams);
        let mut returns = Vec::with_capacity(streams);
        let mut first = Some(first);
        for k in 0..streams {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<AlignedBuf, FsError>>(0);
            // Written chunks' buffers go back to their stream for reuse.
            let (ret_tx, ret_rx) = std::sync::mpsc::channel::<AlignedBuf>();
            rxs.push(rx);
            returns.push(ret_tx);
            let handle = first.take();
            scope.spawn(move || {
                let mut h = match handle {
                    Some(h) => h,
                    None => match fs.open(path) {
                        Ok(h) => h,
                        Err(e) => return drop(tx.send(Err(e))),
                    },
                };
                let mut i = k as u64;
                while i < chunks {
                    let off = i * chunk_size as u64;
                    let len =
                        usize::try_from((size - off).min(chunk_size as u64)).unwrap_or(chunk_size);
                    let mut chunk = match ret_rx.try_recv() {
                        Ok(b) => b.with_len(len),
                        Err(_) => AlignedBuf::new(chunk_size).with_len(len),
                    };
                    let buf = chunk.as_mut();
                    let mut got = 0;
                    let r = loop {
                        if got == len {
                            break Ok(chunk);
                        }
                        match h.read_at(off + got as u64, &mut buf[got..]) {
                            Ok(0) => break Err(short(off + got as u64)),
                            Ok(n) => got += n,
                            Err(e) => break Err(e),
                        }
                    };
                    let failed = r.is_err();
                    // The writer hung up (an error): stop reading.
                    if tx.send(r).is_err() || failed {
                        return;
                    }
                    i += streams as u64;
                }
            });
        }
        let mut done = 0u64;
        for i in 0..chunks {
            let k = usize::try_from(i % streams as u64).unwrap_or(0);
            let mut chunk = rxs[k]
                .recv()
                .map_err(|_| CopyError::Fs(short(done)))?
                .map_err(CopyError::Fs)?;
            let data = chunk.as_mut();
            sink(data).map_err(CopyError::Out)?;
            done += data.len() as u64;
            // The stream may have ended; then the buffer is just freed.
            let _ = returns[k].send(chunk);
        }
        Ok(done)
    })
}

/// Copies a file's data to `sink` in large chunks; fails if the file ends
/// early (a short read would otherwise produce a silently truncated file).
pub(crate) fn copy_file(
    h: &mut dyn flr_fs::FileHandle,
    path: &FsPath,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<u64, CopyError> {
    let size = h.size();
    let mut chunk = AlignedBuf::new(CHUNK.min(usize::try_from(size).unwrap_or(CHUNK)).max(1));
    let buf = chunk.as_mut();
    let mut off = 0u64;
    while off < size {
        let want = usize::try_from((size - off).min(buf.len() as u64)).unwrap_or(buf.len());
        let n = h.read_at(off, &mut buf[..want]).map_err(CopyError::Fs)?;
        if n == 0 {
            return Err(CopyError::Fs(FsError::Corrupt {
                fs: "filesystem",
                offset: None,
                what: format!("{path}: data ends at {off} bytes, but the size is {size}"),
            }));
        }
        sink(&buf[..n]).map_err(CopyError::Out)?;
        off += n as u64;
    }
    Ok(off)
}

#[cfg(test)]
mod stream_tests {
    use super::*;
    use sha2::Digest;

    /// Interleaved streams give the file's exact bytes, for every stream
    /// count, with chunks that do not divide the size; checked against the
    /// generator's sha256, not against flr.
    #[test]
    fn interleaved_streams_return_the_file_in_order() {
        let demo = flr_testdata::testdata_dir().join("demo.vhd");
        let img =
            flr_engine::open_path(&demo, flr_engine::Scan::Quick, &flr_engine::KeyRing::new())
                .expect("demo.vhd opens");
        for (vol, tsv) in [("p2", "disks/demo.p2.tsv"), ("p3", "disks/demo.p3.tsv")] {
            let fs = img.volume(vol).unwrap().open_fs().unwrap();
            for e in flr_testdata::manifest(tsv)
                .into_iter()
                .filter(|e| e.kind == 'f' && e.size > 100_000)
            {
                for streams in [1, 2, 3, 8] {
                    let mut h = sha2::Sha256::new();
                    let n = copy_interleaved(
                        fs.as_ref(),
                        &FsPath::parse(&e.path),
                        streams,
                        12_288,
                        |b| {
                            h.update(b);
                            Ok(())
                        },
                    )
                    .unwrap_or_else(|_| panic!("{vol}:/{} with {streams} streams", e.path));
                    assert_eq!(n, e.size);
                    assert_eq!(
                        hex::encode(h.finalize()),
                        e.sha256,
                        "{vol}:/{} x{streams}",
                        e.path
                    );
                }
            }
        }
    }
}
