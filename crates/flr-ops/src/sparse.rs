//! Sparse files stay sparse: the bytes of a file's holes (never allocated,
//! or allocated and never written, see [`flr_fs::FileHandle::data_ranges`])
//! are not written to a destination that is a regular file; the writer
//! skips them with positioned writes and sets the length at the end, so
//! the destination filesystem leaves them unallocated. Everything still
//! flows through the caller's sink in order (a checksum sees every byte).
//! Into a pipe or a file opened for appending, every byte is written.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use flr_fs::{Filesystem, FsPath};

/// Writes a file's bytes, in order, skipping its holes.
pub(crate) struct SparseWriter {
    /// The data ranges (`None`: all data).
    data: Option<Vec<(u64, u64)>>,
    /// Index of the first data range not wholly behind `pos`.
    idx: usize,
    /// File offset of the next byte given.
    pos: u64,
    /// Where the file starts in the destination (its offset when opened).
    start: u64,
}

impl SparseWriter {
    /// Asks the filesystem for the data ranges of `path` (of `size` bytes,
    /// written from offset 0); when it cannot say, or the file has no hole
    /// worth skipping, every byte is written.
    pub(crate) fn for_file(fs: &dyn Filesystem, path: &FsPath, size: u64) -> SparseWriter {
        SparseWriter::at(fs, path, size, 0)
    }

    /// As [`SparseWriter::for_file`], the file starting at offset `start`
    /// of the destination.
    pub(crate) fn at(fs: &dyn Filesystem, path: &FsPath, size: u64, start: u64) -> SparseWriter {
        // A file below this size rarely has a hole: not worth a second open.
        const SMALL: u64 = 64 << 10;
        let data = (size >= SMALL)
            .then(|| fs.open(path).ok())
            .flatten()
            .and_then(|mut h| {
                let size = h.size();
                h.data_ranges()
                    .ok()
                    .flatten()
                    .filter(|d| d.iter().map(|r| r.1).sum::<u64>() < size)
            });
        SparseWriter {
            data,
            idx: 0,
            pos: 0,
            start,
        }
    }

    /// Whether holes will be skipped.
    pub(crate) fn skips(&self) -> bool {
        self.data.is_some()
    }

    /// Writes `buf` (the next bytes of the file) into `f`, leaving out the
    /// parts that fall in holes.
    pub(crate) fn write(&mut self, f: &File, buf: &[u8]) -> std::io::Result<()> {
        let Some(data) = &self.data else {
            f.write_all_at(buf, self.start + self.pos)?;
            self.pos += buf.len() as u64;
            return Ok(());
        };
        let end = self.pos + buf.len() as u64;
        while let Some(&(off, len)) = data.get(self.idx) {
            let r_end = off + len;
            if off >= end {
                break;
            }
            let a = off.max(self.pos);
            let b = r_end.min(end);
            if a < b {
                // a, b lie within pos..end, so these fit in usize.
                let s = usize::try_from(a - self.pos).unwrap_or(0);
                let e = usize::try_from(b - self.pos).unwrap_or(buf.len());
                f.write_all_at(&buf[s..e], self.start + a)?;
            }
            if r_end <= end {
                self.idx += 1;
            } else {
                break;
            }
        }
        self.pos = end;
        Ok(())
    }

    /// Gives the file its full length (a trailing hole) and leaves the
    /// descriptor's offset after it.
    pub(crate) fn finish(&self, f: &mut File) -> std::io::Result<()> {
        let end = self.start + self.pos;
        if self.skips() && f.metadata()?.len() < end {
            f.set_len(end)?;
        }
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(end))?;
        f.flush()
    }
}

/// `fd` as a file `cat` may write sparsely: a regular file not opened for
/// appending (a pipe, terminal or `>>` file gets every byte), with its
/// current offset.
pub(crate) fn regular_file(fd: impl AsFd) -> Option<(File, u64)> {
    let fd = fd.as_fd();
    let st = rustix::fs::fstat(fd).ok()?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return None;
    }
    let fl = rustix::fs::fcntl_getfl(fd).ok()?;
    if fl.contains(rustix::fs::OFlags::APPEND) {
        return None;
    }
    let off = rustix::fs::seek(fd, rustix::fs::SeekFrom::Current(0)).ok()?;
    let file = File::from(fd.try_clone_to_owned().ok()?);
    Some((file, off))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn holes_are_skipped_and_bytes_kept() {
        let mut w = SparseWriter {
            data: Some(vec![(4096, 4096), (20000, 10)]),
            idx: 0,
            pos: 0,
            start: 0,
        };
        let mut f = tempfile::tempfile().unwrap();
        let mut src = vec![0u8; 32768];
        src[4096..8192].fill(7);
        src[20000..20010].fill(9);
        for c in src.chunks(3000) {
            w.write(&f, c).unwrap();
        }
        w.finish(&mut f).unwrap();
        let mut back = Vec::new();
        let mut g = f.try_clone().unwrap();
        use std::io::Seek;
        g.seek(std::io::SeekFrom::Start(0)).unwrap();
        g.read_to_end(&mut back).unwrap();
        assert_eq!(back, src);
    }
}
