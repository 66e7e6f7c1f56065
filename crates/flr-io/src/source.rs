use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{check_range, IoError, ReadAt};

/// A local file opened read-only, read with `pread` (no shared cursor).
#[derive(Debug)]
pub struct FileSource {
    file: File,
    len: u64,
    path: PathBuf,
}

impl FileSource {
    /// Opens `path` for reading only. The file is never opened for writing.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, IoError> {
        let path = path.as_ref().to_path_buf();
        let os = |source| IoError::Os {
            layer: format!("file {}", path.display()),
            offset: 0,
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .open(&path)
            .map_err(os)?;
        let meta = file.metadata().map_err(os)?;
        let len = if meta.file_type().is_file() {
            meta.len()
        } else {
            // Block devices report 0 in metadata; ask by seeking to the end.
            use std::io::{Seek, SeekFrom};
            let mut f = &file;
            f.seek(SeekFrom::End(0)).map_err(os)?
        };
        Ok(FileSource { file, len, path })
    }

    /// The path this source was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl ReadAt for FileSource {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        check_range("file", offset, buf.len(), self.len)?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| IoError::Os {
                layer: "file".into(),
                offset,
                source,
            })
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn layer(&self) -> &str {
        "file"
    }
}

/// Bytes held in memory (tests, small decoded structures).
#[derive(Debug, Clone)]
pub struct MemSource {
    data: Vec<u8>,
}

impl MemSource {
    /// Wraps `data`.
    pub fn new(data: Vec<u8>) -> Self {
        MemSource { data }
    }
}

impl ReadAt for MemSource {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        check_range("memory", offset, buf.len(), self.len())?;
        // OK to convert: check_range proved offset + len <= data.len().
        let start = usize::try_from(offset).expect("offset fits: checked against a Vec length");
        buf.copy_from_slice(&self.data[start..start + buf.len()]);
        Ok(())
    }
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    fn layer(&self) -> &str {
        "memory"
    }
}

/// A source that reads as `len` zero bytes.
#[derive(Debug, Clone, Copy)]
pub struct Zeros {
    len: u64,
}

impl Zeros {
    /// `len` zero bytes.
    pub fn new(len: u64) -> Self {
        Zeros { len }
    }
}

impl ReadAt for Zeros {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        check_range("zeros", offset, buf.len(), self.len)?;
        buf.fill(0);
        Ok(())
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn layer(&self) -> &str {
        "zeros"
    }
    fn is_known_zero(&self, _offset: u64, _len: u64) -> bool {
        true
    }
}

/// A volume whose bytes flr will not give (an LV of a layout flr does not
/// read, an array missing too many members): every read fails with the
/// reason, as [`IoError::Unsupported`], so nothing can be misread.
#[derive(Debug, Clone)]
pub struct Refused {
    layer: String,
    len: u64,
    reason: String,
}

impl Refused {
    /// A source of `len` bytes named `layer` that refuses every read for
    /// `reason`.
    pub fn new(layer: impl Into<String>, len: u64, reason: impl Into<String>) -> Self {
        Refused {
            layer: layer.into(),
            len,
            reason: reason.into(),
        }
    }
}

impl ReadAt for Refused {
    fn read_exact_at(&self, offset: u64, _buf: &mut [u8]) -> Result<(), IoError> {
        Err(IoError::unsupported(
            self.layer.clone(),
            offset,
            &self.reason,
        ))
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn layer(&self) -> &str {
        &self.layer
    }
}

/// A window `[base, base + len)` of another source: a partition, a
/// filesystem inside a volume.
#[derive(Clone)]
pub struct Slice {
    inner: Arc<dyn ReadAt>,
    base: u64,
    len: u64,
    layer: String,
}

impl std::fmt::Debug for Slice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slice")
            .field("base", &self.base)
            .field("len", &self.len)
            .field("layer", &self.layer)
            .finish()
    }
}

impl Slice {
    /// A window of `inner`; fails when the window does not fit inside it.
    pub fn new(
        inner: Arc<dyn ReadAt>,
        base: u64,
        len: u64,
        layer: impl Into<String>,
    ) -> Result<Self, IoError> {
        let layer = layer.into();
        match base.checked_add(len) {
            Some(end) if end <= inner.len() => Ok(Slice {
                inner,
                base,
                len,
                layer,
            }),
            _ => Err(IoError::OutOfRange {
                layer: inner.layer().to_string(),
                offset: base,
                len,
                size: inner.len(),
            }),
        }
    }

    /// Where the window starts in the source below.
    pub fn base(&self) -> u64 {
        self.base
    }
}

impl ReadAt for Slice {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        check_range(&self.layer, offset, buf.len(), self.len)?;
        // OK: base + offset + len <= base + self.len, checked in new().
        self.inner.read_exact_at(self.base + offset, buf)
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn layer(&self) -> &str {
        &self.layer
    }
    fn is_known_zero(&self, offset: u64, len: u64) -> bool {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => self.inner.is_known_zero(self.base + offset, len),
            _ => false,
        }
    }
    fn changed(&self, offset: u64, len: u64) -> crate::Change {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => self.inner.changed(self.base + offset, len),
            _ => crate::Change::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn slice_refuses_windows_outside_the_source() {
        let m: Arc<dyn ReadAt> = Arc::new(MemSource::new(vec![1; 10]));
        assert!(Slice::new(m.clone(), 5, 6, "p").is_err());
        assert!(Slice::new(m.clone(), u64::MAX, 2, "p").is_err());
        let s = Slice::new(m, 5, 5, "p").unwrap();
        let mut b = [0u8; 2];
        assert!(s.read_exact_at(4, &mut b).is_err());
        let err = s.read_exact_at(4, &mut b).unwrap_err().to_string();
        assert!(err.contains("p:") && err.contains("0x4"), "{err}");
    }

    #[test]
    fn file_source_reads_at_positions() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"hello world").unwrap();
        let src = FileSource::open(f.path()).unwrap();
        assert_eq!(src.len(), 11);
        let mut b = [0u8; 5];
        src.read_exact_at(6, &mut b).unwrap();
        assert_eq!(&b, b"world");
        assert!(src.read_exact_at(7, &mut b).is_err());
    }
}
