//! The unnamed data stream of a file: resident bytes, or a run list
//! gathered from every extent of the attribute (across an attribute list),
//! read with one positioned read per contiguous run. Sparse runs and bytes
//! past the initialized size read as zeros.

use std::io::Read;

use flr_fs::{FileHandle, FsError};
use flr_io::{ReadAt, ReaderCursor, Source};
use ntfs::attribute_value::NtfsAttributeValue;
use ntfs::{NtfsAttribute, NtfsAttributeType, NtfsFile};

use crate::record::{non_resident, read_record, NonResident};
use crate::{corrupt, nt, NtfsFs};
use flr_io::Bounce;

/// A run of the stream: `len` bytes from stream offset `vstart`, stored at
/// volume offset `phys` (`None`: sparse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) vstart: u64,
    pub(crate) len: u64,
    pub(crate) phys: Option<u64>,
}

#[derive(Debug)]
pub(crate) enum Data {
    Resident(Vec<u8>),
    Runs {
        runs: Vec<Run>,
        size: u64,
        init: u64,
    },
    /// An LZNT1-compressed stream, in compression units of `unit` bytes.
    Compressed {
        runs: Vec<Run>,
        size: u64,
        init: u64,
        unit: u64,
    },
}

impl Data {
    pub(crate) fn size(&self) -> u64 {
        match self {
            Data::Resident(v) => v.len() as u64,
            Data::Runs { size, .. } | Data::Compressed { size, .. } => *size,
        }
    }
}

/// What `stream_info` reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamInfo {
    pub(crate) size: u64,
    pub(crate) flags: u16,
    pub(crate) resident: bool,
}

/// Cap on resident values and small values read whole.
const MAX_RESIDENT: u64 = 1 << 16;

impl NtfsFs {
    /// The raw non-resident header of `attr` (which lives in `file`).
    pub(crate) fn header(
        &self,
        file: &NtfsFile<'_>,
        attr: &NtfsAttribute<'_, '_>,
    ) -> Result<NonResident, FsError> {
        let fpos = file.position().value().map_or(0, |p| p.get());
        let apos = attr.position().value().map_or(0, |p| p.get());
        let off = usize::try_from(apos.wrapping_sub(fpos)).unwrap_or(usize::MAX);
        let rec = read_record(&*self.src, fpos, self.ntfs.file_record_size())?;
        non_resident(&rec, off, apos)
    }

    /// Appends the data runs of one non-resident attribute extent.
    pub(crate) fn extent_runs(
        &self,
        fs: &mut ReaderCursor,
        attr: &NtfsAttribute<'_, '_>,
        runs: &mut Vec<Run>,
        vpos: &mut u64,
        stored: &mut u64,
    ) -> Result<(), FsError> {
        let at = attr.position().value().map_or(0, |p| p.get());
        let NtfsAttributeValue::NonResident(v) = attr.value(fs).map_err(nt)? else {
            return Err(corrupt(at, "data extent is not non-resident"));
        };
        let vol = self.src.len();
        for r in v.data_runs() {
            let r = r.map_err(nt)?;
            let len = r.allocated_size();
            let phys = r.data_position().value().map(|p| p.get());
            if let Some(p) = phys {
                if p.checked_add(len).is_none_or(|e| e > vol) {
                    return Err(corrupt(
                        at,
                        format!("data run at {p:#x} (+{len:#x}) lies outside the volume"),
                    ));
                }
            }
            if len == 0 {
                continue;
            }
            if phys.is_some() {
                // Runs of a real file never add up to more than the volume;
                // overlapping (hostile) runs could, without bound.
                *stored = stored.saturating_add(len);
                if *stored > vol {
                    return Err(corrupt(at, "data runs add up to more than the volume"));
                }
            }
            match runs.last_mut() {
                Some(last) if last.phys.is_none() && phys.is_none() => last.len += len,
                Some(last) if last.phys.zip(phys).is_some_and(|(a, b)| a + last.len == b) => {
                    last.len += len
                }
                _ => runs.push(Run {
                    vstart: *vpos,
                    len,
                    phys,
                }),
            }
            *vpos = vpos
                .checked_add(len)
                .ok_or_else(|| corrupt(at, "data runs overflow"))?;
        }
        Ok(())
    }

    /// Size, attribute flags and residency of the `$DATA` stream `name`
    /// (`""`: unnamed), from its first extent (the one at VCN 0, which
    /// carries the sizes).
    pub(crate) fn stream_info(
        &self,
        fs: &mut ReaderCursor,
        file: &NtfsFile<'_>,
        name: &str,
    ) -> Result<Option<StreamInfo>, FsError> {
        let mut info = None;
        self.for_each_extent(fs, file, NtfsAttributeType::Data, name, &mut |_, xf, a| {
            info = Some(if a.is_resident() {
                StreamInfo {
                    size: a.value_length(),
                    flags: a.flags().bits(),
                    resident: true,
                }
            } else {
                let h = self.header(xf, a)?;
                StreamInfo {
                    size: h.data_size,
                    flags: a.flags().bits(),
                    resident: false,
                }
            });
            Ok(false)
        })?;
        Ok(info)
    }

    /// The unnamed `$DATA` stream of `file`.
    pub(crate) fn data_of(
        &self,
        fs: &mut ReaderCursor,
        file: &NtfsFile<'_>,
    ) -> Result<Data, FsError> {
        self.stream_of(fs, file, NtfsAttributeType::Data, "")
    }

    /// The value of attribute `ty` named `name` (`""`: unnamed) of `file`,
    /// gathered from all its extents. Missing: empty.
    pub(crate) fn stream_of(
        &self,
        fs: &mut ReaderCursor,
        file: &NtfsFile<'_>,
        ty: NtfsAttributeType,
        name: &str,
    ) -> Result<Data, FsError> {
        let cluster = u64::from(self.ntfs.cluster_size());
        let mut resident = None;
        let mut runs = Vec::new();
        let mut vpos = 0u64;
        let mut stored = 0u64;
        let mut sizes = None;
        let mut extents = 0u32;
        let mut compressed = false;
        self.for_each_extent(fs, file, ty, name, &mut |fs, xf, a| {
            extents += 1;
            let at = a.position().value().map_or(0, |p| p.get());
            if a.is_resident() {
                if extents > 1 {
                    return Err(corrupt(at, "resident extent in a split stream"));
                }
                resident = Some(self.resident(fs, a)?);
                return Ok(false);
            }
            compressed |= self.check_flags(a)?;
            let h = self.header(xf, a)?;
            if h.lowest_vcn.checked_mul(cluster) != Some(vpos) {
                return Err(corrupt(at, "stream extents leave a gap or overlap"));
            }
            if h.lowest_vcn == 0 {
                sizes = Some(h);
            }
            self.extent_runs(fs, a, &mut runs, &mut vpos, &mut stored)?;
            Ok(true)
        })?;
        if let Some(r) = resident {
            return Ok(r);
        }
        match sizes {
            Some(h) if h.compression_unit != 0 && compressed => {
                let unit = cluster
                    .checked_shl(u32::from(h.compression_unit))
                    .filter(|u| *u <= crate::compressed::MAX_UNIT)
                    .ok_or_else(|| {
                        corrupt(
                            0,
                            format!("compression unit of 2^{} clusters", h.compression_unit),
                        )
                    })?;
                Ok(Data::Compressed {
                    runs,
                    size: h.data_size,
                    init: h.initialized_size.min(h.data_size),
                    unit,
                })
            }
            Some(h) => Ok(runs_data(runs, h)),
            None if extents == 0 => Ok(Data::Resident(Vec::new())),
            None => Err(corrupt(0, "no stream extent starts at VCN 0")),
        }
    }

    /// Refuses encrypted streams and unknown compression methods; returns
    /// whether the stream is LZNT1-compressed.
    fn check_flags(&self, a: &NtfsAttribute<'_, '_>) -> Result<bool, FsError> {
        let f = a.flags().bits();
        let reason = match f & 0x00ff {
            _ if f & 0x4000 != 0 => "EFS-encrypted".to_string(),
            0 => return Ok(false),
            1 => return Ok(true),
            m => format!("NTFS compression method {m} (only LZNT1 is known)"),
        };
        // Callers check metadata first; this guards the data path itself.
        Err(FsError::Unsupported {
            path: String::new(),
            reason,
        })
    }

    /// Reads a resident value whole.
    pub(crate) fn resident(
        &self,
        fs: &mut ReaderCursor,
        a: &NtfsAttribute<'_, '_>,
    ) -> Result<Data, FsError> {
        let v = a.value(fs).map_err(nt)?;
        if v.len() > MAX_RESIDENT {
            return Err(corrupt(
                a.position().value().map_or(0, |p| p.get()),
                "resident value too large",
            ));
        }
        let mut out = Vec::new();
        v.attach(fs)
            .read_to_end(&mut out)
            .map_err(|e| nt(e.into()))?;
        Ok(Data::Resident(out))
    }
}

/// Whether a UTF-16LE attribute name equals `name`.
pub(crate) fn name_is(utf16le: &[u8], name: &str) -> bool {
    let mut units = name.encode_utf16();
    let mut i = utf16le.chunks_exact(2);
    loop {
        match (i.next(), units.next()) {
            (None, None) => return utf16le.len() & 1 == 0,
            (Some(c), Some(u)) if u16::from_le_bytes([c[0], c[1]]) == u => {}
            _ => return false,
        }
    }
}

fn runs_data(runs: Vec<Run>, h: NonResident) -> Data {
    Data::Runs {
        runs,
        size: h.data_size,
        init: h.initialized_size.min(h.data_size),
    }
}

/// An open file.
pub(crate) struct NtfsHandle {
    src: Source,
    data: Data,
    bounce: Bounce,
    units: crate::compressed::UnitCache,
}

impl NtfsHandle {
    pub(crate) fn new(src: Source, data: Data) -> Self {
        NtfsHandle {
            src,
            data,
            bounce: Bounce::default(),
            units: crate::compressed::UnitCache::default(),
        }
    }
}

impl FileHandle for NtfsHandle {
    fn size(&self) -> u64 {
        self.data.size()
    }

    fn data_ranges(&mut self) -> Result<Option<Vec<(u64, u64)>>, FsError> {
        // Sparse runs and bytes past the initialized size read as zeros.
        // (A compressed stream's sparse units are not told apart here.)
        Ok(match &self.data {
            Data::Runs { runs, init, .. } => Some(flr_fs::clip_ranges(
                runs.iter()
                    .filter(|r| r.phys.is_some())
                    .map(|r| (r.vstart, r.len)),
                *init,
            )),
            Data::Resident(_) | Data::Compressed { .. } => None,
        })
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        let size = self.data.size();
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let n = usize::try_from(size - offset).map_or(buf.len(), |r| r.min(buf.len()));
        let (runs, init) = match &self.data {
            Data::Resident(v) => {
                // offset < size = v.len(), so this fits.
                let o = offset as usize;
                buf[..n].copy_from_slice(&v[o..o + n]);
                return Ok(n);
            }
            Data::Runs { runs, init, .. } => (runs, *init),
            Data::Compressed {
                runs, init, unit, ..
            } => {
                crate::compressed::read(
                    &self.src,
                    runs,
                    *unit,
                    *init,
                    &mut self.units,
                    offset,
                    &mut buf[..n],
                )?;
                return Ok(n);
            }
        };
        let mut pos = offset;
        let mut done = 0usize;
        while done < n {
            let want = (n - done) as u64;
            let out = &mut buf[done..];
            let take = if pos >= init {
                // Past the valid data length: zeros, whatever is on disk.
                out[..want as usize].fill(0);
                want
            } else {
                let i = runs.partition_point(|r| r.vstart + r.len <= pos);
                let Some(r) = runs.get(i) else {
                    return Err(corrupt(
                        0,
                        format!("data runs end before offset {pos:#x} of the stream"),
                    ));
                };
                let take = want.min(r.vstart + r.len - pos).min(init - pos);
                let t = take as usize;
                match r.phys {
                    Some(p) => {
                        let src = &self.src;
                        let at = p + (pos - r.vstart);
                        self.bounce
                            .read(at, &mut out[..t], |o, b| src.read_exact_at(o, b))?
                    }
                    None => out[..t].fill(0),
                }
                take
            };
            done += take as usize;
            pos += take;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn runs_sparse_and_uninitialized_tail() {
        let disk: Vec<u8> = (0..64u8).collect();
        let src: Source = Arc::new(flr_io::MemSource::new(disk));
        let runs = vec![
            Run {
                vstart: 0,
                len: 8,
                phys: Some(16),
            },
            Run {
                vstart: 8,
                len: 8,
                phys: None,
            },
            Run {
                vstart: 16,
                len: 16,
                phys: Some(40),
            },
        ];
        let mut h = NtfsHandle::new(
            src,
            Data::Runs {
                runs,
                size: 30,
                init: 20,
            },
        );
        let mut buf = [0xffu8; 40];
        assert_eq!(h.read_at(0, &mut buf).unwrap(), 30);
        let mut want = vec![];
        want.extend(16u8..24);
        want.extend([0u8; 8]);
        want.extend(40u8..44);
        want.extend([0u8; 10]);
        assert_eq!(&buf[..30], &want[..]);
        assert_eq!(h.read_at(30, &mut buf).unwrap(), 0);
        assert_eq!(h.read_at(6, &mut buf[..4]).unwrap(), 4);
        assert_eq!(&buf[..4], &[22, 23, 0, 0]);
    }

    #[test]
    fn short_run_lists_are_errors() {
        let src: Source = Arc::new(flr_io::MemSource::new(vec![0; 64]));
        let runs = vec![Run {
            vstart: 0,
            len: 8,
            phys: Some(0),
        }];
        let mut h = NtfsHandle::new(
            src,
            Data::Runs {
                runs,
                size: 30,
                init: 30,
            },
        );
        let mut buf = [0u8; 40];
        assert!(h.read_at(0, &mut buf).is_err());
    }
}
