//! The on-disk parts of a physical volume: the label in one of the first
//! four sectors, the PV header after it, and the metadata area header with
//! its pointer into the circular metadata buffer.
//!
//! Source: LVM2 `lib/label/label.h`, `lib/format_text/layout.h` (read as
//! documentation of the layout):
//!
//! ```text
//! sector 0..3:  "LABELONE" | sector u64 | crc u32 | header offset u32 | "LVM2 001"
//! PV header:    uuid [32] | device size u64 | data areas (offset, size)... 0,0 | metadata areas ... 0,0
//! mda header:   crc u32 | " LVM2 x[5A%r0N*>" | version u32 | start u64 | size u64 | raw_locn (offset u64, size u64, crc u32, flags u32)...
//! ```
//! All fields little-endian.

use flr_io::ReadAt;

use crate::LvmError;

const LABEL_ID: &[u8; 8] = b"LABELONE";
const LVM2_TYPE: &[u8; 8] = b"LVM2 001";
const MDA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
const MDA_HEADER_SIZE: u64 = 512;
/// The largest metadata text flr reads (LVM's own default area is 1 MiB).
const MAX_TEXT: u64 = 64 << 20;
const RAW_LOCN_IGNORED: u32 = 1;

fn le32(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
fn le64(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8).map_or(0, |s| {
        u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]])
    })
}

/// LVM's CRC: the reflected CRC-32 polynomial, started at 0xf597a6cf,
/// without the final inversion.
pub(crate) fn lvm_crc(data: &[u8]) -> u32 {
    let mut crc: u32 = 0xf597_a6cf;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// What the label and PV header say.
#[derive(Debug, Clone)]
pub(crate) struct Label {
    /// The PV UUID as LVM prints it (`xxxxxx-xxxx-…`).
    pub(crate) uuid: String,
    pub(crate) device_size: u64,
    /// Metadata areas: (absolute offset, size).
    pub(crate) mdas: Vec<(u64, u64)>,
}

/// Formats a 32-character LVM id with dashes (6-4-4-4-4-4-6).
pub(crate) fn format_uuid(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let mut out = String::new();
    let mut at = 0;
    for (i, n) in [6, 4, 4, 4, 4, 4, 6].iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        out.push_str(s.get(at..at + n).unwrap_or(""));
        at += n;
    }
    out
}

/// Reads the label (first four sectors) and PV header.
pub(crate) fn read_label(src: &dyn ReadAt) -> Result<Label, LvmError> {
    let mut head = vec![0u8; 2048];
    let n = usize::try_from(src.len().min(2048)).unwrap_or(0);
    src.read_exact_at(0, &mut head[..n])?;
    for sector in 0..4u64 {
        let s = &head[(sector * 512) as usize..(sector * 512 + 512) as usize];
        if &s[0..8] != LABEL_ID || &s[24..32] != LVM2_TYPE {
            continue;
        }
        let at = sector * 512;
        if le64(s, 8) != sector {
            return Err(LvmError::corrupt(
                "LVM label",
                at,
                "the label records another sector",
            ));
        }
        if lvm_crc(&s[20..]) != le32(s, 16) {
            return Err(LvmError::corrupt(
                "LVM label",
                at,
                "label checksum mismatch",
            ));
        }
        let off = usize::try_from(le32(s, 20)).unwrap_or(usize::MAX);
        if !(32..=512 - 40).contains(&off) {
            return Err(LvmError::corrupt(
                "LVM label",
                at,
                "PV header offset out of range",
            ));
        }
        let h = &s[off..];
        let uuid = format_uuid(&h[..32]);
        let device_size = le64(h, 32);
        // Two zero-terminated lists of (offset, size): data areas, then metadata areas.
        let mut o = 40;
        let mut lists: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
        for list in &mut lists {
            loop {
                if o + 16 > h.len() {
                    return Err(LvmError::corrupt(
                        "LVM PV header",
                        at + off as u64,
                        "area list runs past the label sector",
                    ));
                }
                let (a, b) = (le64(h, o), le64(h, o + 8));
                o += 16;
                if a == 0 && b == 0 {
                    break;
                }
                list.push((a, b));
            }
        }
        return Ok(Label {
            uuid,
            device_size,
            mdas: lists[1].clone(),
        });
    }
    Err(LvmError::NotPv)
}

/// Reads the newest valid metadata text from one metadata area: the
/// pointer in its header names where the current copy starts in the
/// circular buffer; the text's own checksum is checked. `Ok(None)` when the
/// area holds no metadata (a PV not in any VG, or an ignored area).
pub(crate) fn read_metadata(
    src: &dyn ReadAt,
    start: u64,
    size: u64,
) -> Result<Option<Vec<u8>>, LvmError> {
    let layer = "LVM metadata area";
    if size < MDA_HEADER_SIZE * 2 || start.checked_add(size).is_none_or(|e| e > src.len()) {
        return Err(LvmError::corrupt(
            layer,
            start,
            format!("area of {size} bytes does not fit the device"),
        ));
    }
    let mut h = vec![0u8; MDA_HEADER_SIZE as usize];
    src.read_exact_at(start, &mut h)?;
    if &h[4..20] != MDA_MAGIC {
        return Err(LvmError::corrupt(layer, start, "no metadata area magic"));
    }
    if lvm_crc(&h[4..]) != le32(&h, 0) {
        return Err(LvmError::corrupt(
            layer,
            start,
            "metadata area header checksum mismatch",
        ));
    }
    if le64(&h, 24) != start {
        return Err(LvmError::corrupt(
            layer,
            start,
            "metadata area header records another offset",
        ));
    }
    let (off, len, crc, flags) = (le64(&h, 40), le64(&h, 48), le32(&h, 56), le32(&h, 60));
    if len == 0 || flags & RAW_LOCN_IGNORED != 0 {
        return Ok(None);
    }
    let ring = size - MDA_HEADER_SIZE;
    if off < MDA_HEADER_SIZE || off >= size || len > ring || len > MAX_TEXT {
        return Err(LvmError::corrupt(
            layer,
            start,
            format!("metadata pointer (offset {off}, {len} bytes) outside the area"),
        ));
    }
    let mut text = vec![
        0u8;
        usize::try_from(len).map_err(|_| LvmError::corrupt(
            layer,
            start,
            "metadata too large"
        ))?
    ];
    // The copy may wrap from the end of the area to just after its header.
    let first = len.min(size - off);
    src.read_exact_at(start + off, &mut text[..first as usize])?;
    if first < len {
        src.read_exact_at(start + MDA_HEADER_SIZE, &mut text[first as usize..])?;
    }
    if lvm_crc(&text) != crc {
        return Err(LvmError::corrupt(
            layer,
            start + off,
            "metadata text checksum mismatch",
        ));
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_format() {
        assert_eq!(
            format_uuid(b"88ug7TK05j4i6aU0XbdzqkpNQ2XOECaL"),
            "88ug7T-K05j-4i6a-U0Xb-dzqk-pNQ2-XOECaL"
        );
    }
}
