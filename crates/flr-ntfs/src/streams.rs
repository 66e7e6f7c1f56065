//! Alternate data streams: the named `$DATA` attributes of a file or
//! folder, listed from its record (or its attribute list) and read through
//! the same run-list path as the unnamed stream, so resident, non-resident,
//! sparse and LZNT1-compressed streams read alike.

use flr_fs::{FileHandle, FsError, FsPath, StreamInfo};
use flr_io::ReaderCursor;
use ntfs::{NtfsAttributeType, NtfsFile};

use crate::attrs::{is_ty, parse_list};
use crate::{nt, utf16, NtfsFs};

/// `$DATA`.
const DATA: u32 = 0x80;

impl NtfsFs {
    /// The names of the named `$DATA` attributes of `file`, in record order,
    /// each once (a stream split over several extents is listed once).
    pub(crate) fn stream_names(
        &self,
        fs: &mut ReaderCursor,
        file: &NtfsFile<'_>,
    ) -> Result<Vec<String>, FsError> {
        let mut names: Vec<String> = Vec::new();
        let mut push = |n: String| {
            if !n.is_empty() && !names.contains(&n) {
                names.push(n);
            }
        };
        let mut list = None;
        for a in file.attributes_raw() {
            let a = a.map_err(nt)?;
            if is_ty(&a, NtfsAttributeType::AttributeList) {
                list = Some(self.list_value(fs, file, &a)?);
                break;
            }
        }
        match list {
            Some(v) => {
                for e in parse_list(&v)? {
                    if e.ty == DATA {
                        push(utf16(&e.name));
                    }
                }
            }
            None => {
                for a in file.attributes_raw() {
                    let a = a.map_err(nt)?;
                    if is_ty(&a, NtfsAttributeType::Data) {
                        push(utf16(a.name().map_err(nt)?.0));
                    }
                }
            }
        }
        Ok(names)
    }

    pub(crate) fn list_streams(&self, path: &FsPath) -> Result<Vec<StreamInfo>, FsError> {
        let mut fs = self.cursor();
        let node = self.resolve(&mut fs, path)?;
        let file = self.file(&mut fs, node.rec)?;
        let mut out = Vec::new();
        for name in self.stream_names(&mut fs, &file)? {
            let size = self
                .stream_info(&mut fs, &file, &name)?
                .map_or(0, |i| i.size);
            out.push(StreamInfo { name, size });
        }
        Ok(out)
    }

    pub(crate) fn open_named_stream(
        &self,
        path: &FsPath,
        name: &str,
    ) -> Result<Box<dyn FileHandle + '_>, FsError> {
        let shown = format!("{path}:{name}");
        let mut fs = self.cursor();
        let node = self.resolve(&mut fs, path)?;
        let file = self.file(&mut fs, node.rec)?;
        let names = self.stream_names(&mut fs, &file)?;
        // Exact first; else, as Windows, a unique case-insensitive match.
        let found = names.iter().find(|n| *n == name).or_else(|| {
            let lower = name.to_lowercase();
            let mut m = names.iter().filter(|n| n.to_lowercase() == lower);
            match (m.next(), m.next()) {
                (Some(n), None) => Some(n),
                _ => None,
            }
        });
        let Some(found) = found else {
            return Err(FsError::NotFound { path: shown });
        };
        let data = self.stream_of(&mut fs, &file, NtfsAttributeType::Data, found);
        self.handle(data, &shown)
    }
}
