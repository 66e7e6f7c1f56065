//! The volume bytes that define one file or folder
//! ([`Filesystem::extents`](flr_fs::Filesystem::extents)): its file
//! record and extension records, the runs of a non-resident attribute
//! list and reparse point (metadata), and the runs of its unnamed `$DATA`
//! stream or, for a folder, of its `$I30` index allocation (data).
//!
//! **`$MFT`'s own record 0 is not attributed to every file.** A record's
//! position comes from `$MFT`'s data runs, which live in record 0; but
//! record 0 is rewritten whenever the MFT grows (a file is added), and
//! the MFT only grows at its end: records that exist keep their place.
//! Naming record 0 for every file would mark every file changed after any
//! addition. A record that did move (a defragmenter moving the MFT) is read
//! at its new place, and those bytes changed, so the object is still
//! found changed. Record 0 is attributed to `$MFT` itself only.

use flr_fs::{FileExtents, FileKind, FsError, FsPath};
use ntfs::NtfsAttributeType;

use crate::data::{Data, Run};
use crate::NtfsFs;

fn stored(runs: &[Run]) -> impl Iterator<Item = (u64, u64)> + '_ {
    runs.iter().filter_map(|r| r.phys.map(|p| (p, r.len)))
}

/// Where a stream's bytes lie: its stored runs, cut at the valid data
/// length `init` (bytes past it read as zeros).
fn layout(runs: &[Run], init: u64) -> Vec<flr_fs::FileRun> {
    runs.iter()
        .filter(|r| r.vstart < init)
        .filter_map(|r| {
            r.phys.map(|p| flr_fs::FileRun {
                file: r.vstart,
                volume: p,
                len: r.len.min(init - r.vstart),
            })
        })
        .collect()
}

impl NtfsFs {
    pub(crate) fn extents_inner(&self, path: &FsPath) -> Result<Option<FileExtents>, FsError> {
        let mut fs = self.cursor();
        let node = self.resolve(&mut fs, path)?;
        let file = self.file(&mut fs, node.rec)?;
        let rsize = u64::from(self.ntfs.file_record_size());
        let (recs, list_runs) = self.holders(&mut fs, &file)?;
        let mut x = FileExtents::default();
        for rec in recs {
            let f = if rec == node.rec {
                file.position()
            } else {
                self.file(&mut fs, rec)?.position()
            };
            let at = f.value().map(|p| p.get()).ok_or_else(|| {
                crate::corrupt(
                    0,
                    format!("file record {rec} has no position on the volume"),
                )
            })?;
            x.meta.push((at, rsize));
        }
        x.meta.extend(stored(&list_runs));
        let (ty, name) = if node.kind == FileKind::Dir {
            (NtfsAttributeType::IndexAllocation, "$I30")
        } else {
            (NtfsAttributeType::Data, "")
        };
        match self.stream_of(&mut fs, &file, ty, name) {
            Ok(Data::Resident(_)) => {}
            Ok(Data::Runs { runs, init, .. }) => {
                x.data.extend(stored(&runs));
                if node.kind == FileKind::File {
                    x.layout = Some(layout(&runs, init));
                }
            }
            Ok(Data::Compressed { runs, .. }) => {
                x.data.extend(stored(&runs));
            }
            // An encrypted stream or an unknown compression method: flr
            // does not map what it cannot read.
            Err(FsError::Unsupported { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
        if let Ok(Data::Runs { runs, .. }) =
            self.stream_of(&mut fs, &file, NtfsAttributeType::ReparsePoint, "")
        {
            x.meta.extend(stored(&runs));
        }
        Ok(Some(x))
    }
}
