//! On-disk structures of VHDX ([MS-VHDX] v1.0): file identifier, headers,
//! region table, metadata table and items, parent locator. Little-endian;
//! GUIDs in Microsoft byte order; checksums are CRC-32C.

pub(crate) const KIB: u64 = 1024;
pub(crate) const MIB: u64 = 1024 * 1024;

pub(crate) const FILE_SIGNATURE: &[u8; 8] = b"vhdxfile";
pub(crate) const HEADER_OFFSETS: [u64; 2] = [64 * KIB, 128 * KIB];
pub(crate) const HEADER_SIZE: usize = 4096;
pub(crate) const REGION_TABLE_OFFSETS: [u64; 2] = [192 * KIB, 256 * KIB];
pub(crate) const REGION_TABLE_SIZE: usize = 64 * 1024;
pub(crate) const METADATA_TABLE_SIZE: usize = 64 * 1024;

/// A GUID as stored (Microsoft byte order).
pub(crate) type Guid = [u8; 16];

/// A GUID from its text form's fields, in stored byte order.
const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5],
        d4[6], d4[7],
    ]
}

pub(crate) const BAT_REGION: Guid = guid(
    0x2DC2_7766,
    0xF623,
    0x4200,
    [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08],
);
pub(crate) const METADATA_REGION: Guid = guid(
    0x8B7C_A206,
    0x4790,
    0x4B9A,
    [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
);
pub(crate) const FILE_PARAMETERS: Guid = guid(
    0xCAA1_6737,
    0xFA36,
    0x4D43,
    [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B],
);
pub(crate) const VIRTUAL_DISK_SIZE: Guid = guid(
    0x2FA5_4224,
    0xCD1B,
    0x4876,
    [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
);
pub(crate) const PAGE_83_DATA: Guid = guid(
    0xBECA_12AB,
    0xB2E6,
    0x4523,
    [0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46],
);
pub(crate) const LOGICAL_SECTOR_SIZE: Guid = guid(
    0x8141_BF1D,
    0xA96F,
    0x4709,
    [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F],
);
pub(crate) const PHYSICAL_SECTOR_SIZE: Guid = guid(
    0xCDA3_48C7,
    0x445D,
    0x4471,
    [0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56],
);
pub(crate) const PARENT_LOCATOR: Guid = guid(
    0xA8D3_5F2D,
    0xB30B,
    0x454D,
    [0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C],
);
pub(crate) const VHDX_PARENT_LOCATOR_TYPE: Guid = guid(
    0xB04A_EFB7,
    0xD19E,
    0x4A81,
    [0xB7, 0x89, 0x25, 0xB8, 0xE9, 0x44, 0x59, 0x13],
);

/// GUID text (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lowercase) of a
/// GUID stored in Microsoft byte order.
pub(crate) fn guid_text(g: &Guid) -> String {
    let d1 = u32::from_le_bytes([g[0], g[1], g[2], g[3]]);
    let d2 = u16::from_le_bytes([g[4], g[5]]);
    let d3 = u16::from_le_bytes([g[6], g[7]]);
    format!(
        "{d1:08x}-{d2:04x}-{d3:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]
    )
}

/// Normalises GUID text for comparison: no braces, lowercase.
pub(crate) fn guid_key(s: &str) -> String {
    s.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .to_ascii_lowercase()
}

pub(crate) fn le_u16(b: &[u8], o: usize) -> u16 {
    match b.get(o..o + 2) {
        Some(s) => u16::from_le_bytes([s[0], s[1]]),
        None => 0,
    }
}

pub(crate) fn le_u32(b: &[u8], o: usize) -> u32 {
    match b.get(o..o + 4) {
        Some(s) => u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

pub(crate) fn le_u64(b: &[u8], o: usize) -> u64 {
    match b.get(o..o + 8) {
        Some(s) => {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_le_bytes(a)
        }
        None => 0,
    }
}

pub(crate) fn guid_at(b: &[u8], o: usize) -> Guid {
    let mut g = [0u8; 16];
    if let Some(s) = b.get(o..o + 16) {
        g.copy_from_slice(s);
    }
    g
}

// ---------------------------------------------------------------------------
// CRC-32C (Castagnoli), table-driven.
// ---------------------------------------------------------------------------

const CRC32C_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC-32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC32C_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// Checks a structure whose CRC-32C is stored at bytes 4..8 and computed
/// with that field zeroed. Returns (stored, computed).
pub(crate) fn check_crc(b: &[u8]) -> (u32, u32) {
    let stored = le_u32(b, 4);
    let mut copy = b.to_vec();
    if let Some(f) = copy.get_mut(4..8) {
        f.fill(0);
    }
    (stored, crc32c(&copy))
}

// ---------------------------------------------------------------------------
// Structures
// ---------------------------------------------------------------------------

/// One of the two headers.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub(crate) sequence: u64,
    pub(crate) file_write_guid: Guid,
    pub(crate) data_write_guid: Guid,
    pub(crate) log_guid: Guid,
    pub(crate) version: u16,
    pub(crate) log_length: u32,
    pub(crate) log_offset: u64,
}

impl Header {
    /// Parses a 4 KiB header; `Err` says why it is not valid.
    pub(crate) fn parse(b: &[u8]) -> Result<Header, String> {
        if b.get(0..4) != Some(b"head") {
            return Err("no \"head\" signature".into());
        }
        let (stored, computed) = check_crc(b);
        if stored != computed {
            return Err(format!(
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ));
        }
        let h = Header {
            sequence: le_u64(b, 8),
            file_write_guid: guid_at(b, 16),
            data_write_guid: guid_at(b, 32),
            log_guid: guid_at(b, 48),
            version: le_u16(b, 66),
            log_length: le_u32(b, 68),
            log_offset: le_u64(b, 72),
        };
        if h.version != 1 {
            return Err(format!("version {} (only 1 exists)", h.version));
        }
        Ok(h)
    }
}

/// A region table entry.
#[derive(Debug, Clone)]
pub(crate) struct Region {
    pub(crate) guid: Guid,
    pub(crate) offset: u64,
    pub(crate) length: u32,
    pub(crate) required: bool,
}

/// Parses a 64 KiB region table; `Err` says why it is not valid.
pub(crate) fn parse_region_table(b: &[u8]) -> Result<Vec<Region>, String> {
    if b.get(0..4) != Some(b"regi") {
        return Err("no \"regi\" signature".into());
    }
    let (stored, computed) = check_crc(b);
    if stored != computed {
        return Err(format!(
            "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    let count = le_u32(b, 8);
    if count > 2047 {
        return Err(format!("{count} entries (at most 2047)"));
    }
    Ok((0..count as usize)
        .map(|i| {
            let o = 16 + 32 * i;
            Region {
                guid: guid_at(b, o),
                offset: le_u64(b, o + 16),
                length: le_u32(b, o + 24),
                required: le_u32(b, o + 28) & 1 != 0,
            }
        })
        .collect())
}

/// A metadata table entry.
#[derive(Debug, Clone)]
pub(crate) struct MetaEntry {
    pub(crate) id: Guid,
    pub(crate) offset: u32,
    pub(crate) length: u32,
    pub(crate) is_user: bool,
    pub(crate) required: bool,
}

/// Parses the metadata table (first 64 KiB of the metadata region).
pub(crate) fn parse_metadata_table(b: &[u8]) -> Result<Vec<MetaEntry>, String> {
    if b.get(0..8) != Some(b"metadata") {
        return Err("no \"metadata\" signature".into());
    }
    let count = le_u16(b, 10);
    if count > 2047 {
        return Err(format!("{count} entries (at most 2047)"));
    }
    Ok((0..count as usize)
        .map(|i| {
            let o = 32 + 32 * i;
            let flags = le_u32(b, o + 24);
            MetaEntry {
                id: guid_at(b, o),
                offset: le_u32(b, o + 16),
                length: le_u32(b, o + 20),
                is_user: flags & 1 != 0,
                required: flags & 4 != 0,
            }
        })
        .collect())
}

/// Parses a parent locator item into its locator type and key/value pairs.
pub(crate) fn parse_parent_locator(b: &[u8]) -> Result<(Guid, Vec<(String, String)>), String> {
    if b.len() < 20 {
        return Err(format!("{} bytes, shorter than its header", b.len()));
    }
    let kind = guid_at(b, 0);
    let count = le_u16(b, 18) as usize;
    let mut out = Vec::new();
    for i in 0..count {
        let o = 20 + 12 * i;
        if o + 12 > b.len() {
            return Err(format!("entry {i} lies past the end of the locator"));
        }
        let ko = le_u32(b, o) as usize;
        let vo = le_u32(b, o + 4) as usize;
        let kl = le_u16(b, o + 8) as usize;
        let vl = le_u16(b, o + 10) as usize;
        let key = utf16_at(b, ko, kl).ok_or_else(|| format!("entry {i}: key out of range"))?;
        let value = utf16_at(b, vo, vl).ok_or_else(|| format!("entry {i}: value out of range"))?;
        out.push((key, value));
    }
    Ok((kind, out))
}

fn utf16_at(b: &[u8], off: usize, len: usize) -> Option<String> {
    let s = b.get(off..off.checked_add(len)?)?;
    let units: Vec<u16> = s
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    Some(
        String::from_utf16_lossy(&units)
            .trim_end_matches('\0')
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn guid_text_uses_microsoft_order() {
        assert_eq!(
            guid_text(&BAT_REGION),
            "2dc27766-f623-4200-9d64-115e9bfd4a08"
        );
        assert_eq!(
            guid_key("{2DC27766-F623-4200-9D64-115E9BFD4A08}"),
            guid_text(&BAT_REGION)
        );
    }

    #[test]
    fn parent_locator_bounds_are_checked() {
        let mut b = vec![0u8; 32];
        b[18] = 1; // one entry
        b[20..24].copy_from_slice(&1000u32.to_le_bytes()); // key offset far away
        b[28] = 2;
        assert!(parse_parent_locator(&b).is_err());
        assert!(parse_parent_locator(&b[..10]).is_err());
        b[18] = 200; // entries past the end
        assert!(parse_parent_locator(&b).is_err());
    }
}
