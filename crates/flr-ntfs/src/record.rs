//! Raw file-record access for the fields the ntfs crate keeps private:
//! the non-resident attribute header (initialized size, VCN range).

use flr_fs::FsError;
use flr_io::ReadAt;

use crate::corrupt;

fn le16(b: &[u8], o: usize) -> u16 {
    b.get(o..o + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

fn le64(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8).map_or(0, |s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_le_bytes(a)
    })
}

/// Reads the file record at byte `pos` and undoes its update sequence
/// (the last two bytes of each 512-byte stride).
pub(crate) fn read_record(src: &dyn ReadAt, pos: u64, size: u32) -> Result<Vec<u8>, FsError> {
    let mut rec = vec![0u8; size as usize];
    src.read_exact_at(pos, &mut rec)?;
    let usa_off = usize::from(le16(&rec, 4));
    let usa_count = usize::from(le16(&rec, 6));
    if usa_count == 0 || usa_off + usa_count * 2 > rec.len() || (usa_count - 1) * 512 > rec.len() {
        return Err(corrupt(
            pos,
            "file record has an invalid update sequence array",
        ));
    }
    let usn = [rec[usa_off], rec[usa_off + 1]];
    for i in 1..usa_count {
        let end = i * 512 - 2;
        if rec[end..end + 2] != usn {
            return Err(corrupt(
                pos + end as u64,
                "file record update sequence mismatch (torn write)",
            ));
        }
        let fix = usa_off + i * 2;
        rec[end] = rec[fix];
        rec[end + 1] = rec[fix + 1];
    }
    Ok(rec)
}

/// The size fields of a non-resident attribute header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NonResident {
    pub(crate) lowest_vcn: u64,
    pub(crate) data_size: u64,
    pub(crate) initialized_size: u64,
    /// log2 of the compression unit in clusters (0: not compressed).
    pub(crate) compression_unit: u8,
}

/// Parses the non-resident header of the attribute at `off` in `rec`.
pub(crate) fn non_resident(rec: &[u8], off: usize, at: u64) -> Result<NonResident, FsError> {
    if off.checked_add(0x40).is_none_or(|e| e > rec.len()) || rec[off + 8] == 0 {
        return Err(corrupt(at, "expected a non-resident attribute header"));
    }
    Ok(NonResident {
        lowest_vcn: le64(rec, off + 0x10),
        data_size: le64(rec, off + 0x30),
        initialized_size: le64(rec, off + 0x38),
        compression_unit: u8::try_from(le16(rec, off + 0x22)).unwrap_or(u8::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flr_io::MemSource;

    #[test]
    fn fixups_are_applied_and_checked() {
        let mut r = vec![0u8; 1024];
        r[4] = 0x30; // usa offset
        r[6] = 3; // usa count
        r[0x30] = 0xAB;
        r[0x31] = 0xCD;
        r[0x32] = 1;
        r[0x33] = 2;
        r[0x34] = 3;
        r[0x35] = 4;
        r[510] = 0xAB;
        r[511] = 0xCD;
        r[1022] = 0xAB;
        r[1023] = 0xCD;
        let src = MemSource::new(r.clone());
        let rec = read_record(&src, 0, 1024).unwrap();
        assert_eq!(&rec[510..512], &[1, 2]);
        assert_eq!(&rec[1022..1024], &[3, 4]);
        r[1023] = 0;
        assert!(read_record(&MemSource::new(r), 0, 1024).is_err());
    }
}
