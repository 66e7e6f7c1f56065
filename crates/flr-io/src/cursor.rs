//! `std::io` adapters over [`ReadAt`] for libraries that want `Read + Seek`
//! (the `ntfs`, `gpt` and `fatfs` crates).

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use crate::ReadAt;

const BUF_SIZE: usize = 64 * 1024;

/// A `Read + Seek` cursor over a [`ReadAt`], with a read buffer so the many
/// small reads of metadata parsers stay cheap. Large reads bypass the buffer.
pub struct ReaderCursor {
    inner: Arc<dyn ReadAt>,
    pos: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl ReaderCursor {
    /// A cursor at offset 0.
    pub fn new(inner: Arc<dyn ReadAt>) -> Self {
        ReaderCursor {
            inner,
            pos: 0,
            buf: Vec::new(),
            buf_start: 0,
        }
    }

    /// The source below.
    pub fn get_ref(&self) -> &Arc<dyn ReadAt> {
        &self.inner
    }

    fn buffered(&self) -> Option<&[u8]> {
        let end = self.buf_start + self.buf.len() as u64;
        if self.pos >= self.buf_start && self.pos < end {
            let at = usize::try_from(self.pos - self.buf_start).ok()?;
            Some(&self.buf[at..])
        } else {
            None
        }
    }
}

impl Read for ReaderCursor {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let len = self.inner.len();
        if self.pos >= len || out.is_empty() {
            return Ok(0);
        }
        if let Some(b) = self.buffered() {
            let n = b.len().min(out.len());
            out[..n].copy_from_slice(&b[..n]);
            self.pos += n as u64;
            return Ok(n);
        }
        let remaining = len - self.pos;
        if out.len() >= BUF_SIZE {
            let n = usize::try_from(remaining.min(out.len() as u64)).unwrap_or(out.len());
            self.inner.read_exact_at(self.pos, &mut out[..n])?;
            self.pos += n as u64;
            return Ok(n);
        }
        let fill = usize::try_from(remaining.min(BUF_SIZE as u64)).unwrap_or(BUF_SIZE);
        self.buf.resize(fill, 0);
        self.inner.read_exact_at(self.pos, &mut self.buf)?;
        self.buf_start = self.pos;
        let n = fill.min(out.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ReaderCursor {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(o) => Some(o),
            SeekFrom::End(d) => self.inner.len().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing position",
            )),
        }
    }
}

/// A [`ReaderCursor`] that also implements `Write`, for libraries whose
/// API demands `Read + Write + Seek` (fatfs): every write fails with
/// `PermissionDenied`, so nothing can ever reach the image.
pub struct ReadOnlyCursor(pub ReaderCursor);

impl Read for ReadOnlyCursor {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.0.read(out)
    }
}

impl Seek for ReadOnlyCursor {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.0.seek(to)
    }
}

impl Write for ReadOnlyCursor {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "flr is read-only: refusing a write to the image",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemSource;

    #[test]
    fn cursor_reads_small_and_large() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let src: Arc<dyn ReadAt> = Arc::new(MemSource::new(data.clone()));
        let mut c = ReaderCursor::new(src);
        let mut small = [0u8; 10];
        c.seek(SeekFrom::Start(70_000)).unwrap();
        c.read_exact(&mut small).unwrap();
        assert_eq!(&small[..], &data[70_000..70_010]);
        let mut big = vec![0u8; 100_000];
        c.seek(SeekFrom::Start(1)).unwrap();
        c.read_exact(&mut big).unwrap();
        assert_eq!(&big[..], &data[1..100_001]);
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert_eq!(rest.len(), 200_000 - 100_001);
    }

    #[test]
    fn writes_are_refused() {
        let src: Arc<dyn ReadAt> = Arc::new(MemSource::new(vec![0; 16]));
        let mut c = ReadOnlyCursor(ReaderCursor::new(src));
        assert_eq!(
            c.write(b"x").unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
    }
}
