//! Finding every extent of an attribute, through `$ATTRIBUTE_LIST` when
//! there is one. The list is parsed here (the ntfs crate's parser panics on
//! truncated entries); extents are then looked up by type and instance in
//! the records the list names.

use flr_fs::{FileHandle, FsError};
use flr_io::ReaderCursor;
use ntfs::attribute_value::NtfsAttributeValue;
use ntfs::{NtfsAttribute, NtfsAttributeType, NtfsFile};

use crate::data::{name_is, Data, NtfsHandle};
use crate::{corrupt, nt, NtfsFs};

/// Cap on an attribute list's size.
const MAX_LIST: u64 = 4 << 20;

/// One entry of an attribute list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListEntry {
    pub(crate) ty: u32,
    pub(crate) lowest_vcn: u64,
    pub(crate) rec: u64,
    pub(crate) instance: u16,
    /// The name as UTF-16LE bytes.
    pub(crate) name: Vec<u8>,
}

fn le16(b: &[u8], o: usize) -> u16 {
    b.get(o..o + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

fn le32(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn le64(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8).map_or(0, |s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_le_bytes(a)
    })
}

/// Parses the value of `$ATTRIBUTE_LIST`.
pub(crate) fn parse_list(v: &[u8]) -> Result<Vec<ListEntry>, FsError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 0x1a <= v.len() {
        let e = &v[pos..];
        let ty = le32(e, 0);
        let len = usize::from(le16(e, 4));
        if ty == 0xffff_ffff || ty == 0 {
            break;
        }
        if len < 0x1a || len > e.len() {
            return Err(corrupt(
                0,
                format!("attribute list entry at {pos:#x} has a bad length"),
            ));
        }
        let name_len = usize::from(e[6]) * 2;
        let name_off = usize::from(e[7]);
        let name = e
            .get(name_off..name_off + name_len)
            .filter(|_| name_off + name_len <= len)
            .ok_or_else(|| {
                corrupt(
                    0,
                    format!("attribute list entry at {pos:#x} has a bad name"),
                )
            })?;
        out.push(ListEntry {
            ty,
            lowest_vcn: le64(e, 8),
            rec: le64(e, 0x10) & 0x0000_ffff_ffff_ffff,
            instance: le16(e, 0x18),
            name: name.to_vec(),
        });
        pos += len;
    }
    Ok(out)
}

/// What a visitor is given: the cursor, the record holding the extent, and
/// the extent. It returns whether to go on to the next extent.
pub(crate) type Visit<'v> = dyn FnMut(&mut ReaderCursor, &NtfsFile<'_>, &NtfsAttribute<'_, '_>) -> Result<bool, FsError>
    + 'v;

pub(crate) fn is_ty(a: &NtfsAttribute<'_, '_>, ty: NtfsAttributeType) -> bool {
    matches!(a.ty(), Ok(t) if t == ty)
}

impl NtfsFs {
    /// Calls `visit` for each extent of attribute `ty` named `name` (`""`:
    /// unnamed) of `file`, in VCN order, until it returns `false`.
    pub(crate) fn for_each_extent(
        &self,
        fs: &mut ReaderCursor,
        file: &NtfsFile<'_>,
        ty: NtfsAttributeType,
        name: &str,
        visit: &mut Visit<'_>,
    ) -> Result<(), FsError> {
        let mut list = None;
        for a in file.attributes_raw() {
            let a = a.map_err(nt)?;
            if is_ty(&a, NtfsAttributeType::AttributeList) {
                list = Some(self.list_value(fs, file, &a)?);
                break;
            }
        }
        let Some(list) = list else {
            for a in file.attributes_raw() {
                let a = a.map_err(nt)?;
                if is_ty(&a, ty) && name_is(a.name().map_err(nt)?.0, name) && !visit(fs, file, &a)?
                {
                    break;
                }
            }
            return Ok(());
        };
        let mut entries: Vec<ListEntry> = parse_list(&list)?
            .into_iter()
            .filter(|e| e.ty == ty as u32 && name_is(&e.name, name))
            .collect();
        entries.sort_by_key(|e| e.lowest_vcn);
        let base = file.file_record_number();
        for e in entries {
            let ext;
            let holder = if e.rec == base {
                file
            } else {
                ext = self.file(fs, e.rec)?;
                &ext
            };
            let mut found = false;
            for a in holder.attributes_raw() {
                let a = a.map_err(nt)?;
                if is_ty(&a, ty) && a.instance() == e.instance {
                    found = true;
                    if !visit(fs, holder, &a)? {
                        return Ok(());
                    }
                    break;
                }
            }
            if !found {
                return Err(corrupt(
                    holder.position().value().map_or(0, |p| p.get()),
                    format!(
                        "attribute list names attribute {} of record {} that is not there",
                        e.instance, e.rec
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The records that hold `file`'s attributes (its own first, then the
    /// extension records its attribute list names) and the runs of a
    /// non-resident attribute list.
    pub(crate) fn holders(
        &self,
        fs: &mut ReaderCursor,
        file: &NtfsFile<'_>,
    ) -> Result<(Vec<u64>, Vec<crate::data::Run>), FsError> {
        let mut recs = vec![file.file_record_number()];
        let mut runs = Vec::new();
        for a in file.attributes_raw() {
            let a = a.map_err(nt)?;
            if !is_ty(&a, NtfsAttributeType::AttributeList) {
                continue;
            }
            if !a.is_resident() {
                let (mut vpos, mut stored) = (0, 0);
                self.extent_runs(fs, &a, &mut runs, &mut vpos, &mut stored)?;
            }
            for e in parse_list(&self.list_value(fs, file, &a)?)? {
                if !recs.contains(&e.rec) {
                    recs.push(e.rec);
                }
            }
            break;
        }
        Ok((recs, runs))
    }

    /// The bytes of an `$ATTRIBUTE_LIST` attribute.
    pub(crate) fn list_value(
        &self,
        fs: &mut ReaderCursor,
        file: &NtfsFile<'_>,
        a: &NtfsAttribute<'_, '_>,
    ) -> Result<Vec<u8>, FsError> {
        if a.is_resident() {
            return match self.resident(fs, a)? {
                Data::Resident(v) => Ok(v),
                Data::Runs { .. } | Data::Compressed { .. } => {
                    Err(corrupt(0, "resident attribute list read as runs"))
                }
            };
        }
        let at = a.position().value().map_or(0, |p| p.get());
        let h = self.header(file, a)?;
        if h.data_size > MAX_LIST {
            return Err(corrupt(at, "attribute list is too large"));
        }
        let NtfsAttributeValue::NonResident(_) = a.value(fs).map_err(nt)? else {
            return Err(corrupt(at, "attribute list is not non-resident"));
        };
        let mut runs = Vec::new();
        let (mut vpos, mut stored) = (0, 0);
        self.extent_runs(fs, a, &mut runs, &mut vpos, &mut stored)?;
        let data = Data::Runs {
            runs,
            size: h.data_size,
            init: h.initialized_size.min(h.data_size),
        };
        let mut out = vec![0u8; h.data_size as usize];
        let mut hd = NtfsHandle::new(self.src.clone(), data);
        let n = hd.read_at(0, &mut out)?;
        out.truncate(n);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ty: u32, vcn: u64, rec: u64, inst: u16, name: &str) -> Vec<u8> {
        let units: Vec<u8> = name.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        let len = (0x1a + units.len()).div_ceil(8) * 8;
        let mut e = vec![0u8; len];
        e[0..4].copy_from_slice(&ty.to_le_bytes());
        e[4..6].copy_from_slice(&(len as u16).to_le_bytes());
        e[6] = (units.len() / 2) as u8;
        e[7] = 0x1a;
        e[8..16].copy_from_slice(&vcn.to_le_bytes());
        e[16..24].copy_from_slice(&(rec | 3 << 48).to_le_bytes());
        e[24..26].copy_from_slice(&inst.to_le_bytes());
        e[0x1a..0x1a + units.len()].copy_from_slice(&units);
        e
    }

    #[test]
    fn parses_entries_and_rejects_damage() {
        let mut v = entry(0x80, 0, 64, 2, "");
        v.extend(entry(0x80, 161, 66, 0, ""));
        v.extend(entry(0xa0, 0, 64, 5, "$I30"));
        let l = parse_list(&v).unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!((l[1].lowest_vcn, l[1].rec, l[1].instance), (161, 66, 0));
        assert!(name_is(&l[2].name, "$I30"));
        let mut bad = v.clone();
        bad[4] = 0xff; // length past the end
        assert!(parse_list(&bad).is_err());
        let mut bad = v.clone();
        bad[6] = 200; // name past the entry
        assert!(parse_list(&bad).is_err());
        // Truncated tail: ignored, like a short end marker.
        assert_eq!(parse_list(&v[..v.len() - 20]).unwrap().len(), 2);
    }
}
