//! On-disk structures of the VHD format (Virtual Hard Disk Image Format
//! Specification v1.0): the footer, the dynamic disk header and its parent
//! locator entries. All multi-byte fields are big-endian.

pub(crate) const FOOTER_COOKIE: &[u8; 8] = b"conectix";
pub(crate) const HEADER_COOKIE: &[u8; 8] = b"cxsparse";
pub(crate) const FOOTER_SIZE: usize = 512;
pub(crate) const HEADER_SIZE: usize = 1024;

pub(crate) const TYPE_FIXED: u32 = 2;
pub(crate) const TYPE_DYNAMIC: u32 = 3;
pub(crate) const TYPE_DIFFERENCING: u32 = 4;

pub(crate) fn be_u32(b: &[u8], o: usize) -> u32 {
    match b.get(o..o + 4) {
        Some(s) => u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

pub(crate) fn be_u64(b: &[u8], o: usize) -> u64 {
    match b.get(o..o + 8) {
        Some(s) => {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_be_bytes(a)
        }
        None => 0,
    }
}

fn bytes16(b: &[u8], o: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    if let Some(s) = b.get(o..o + 16) {
        a.copy_from_slice(s);
    }
    a
}

/// The one's complement of the byte sum of `b`, skipping the 4 checksum
/// bytes at `skip`.
pub(crate) fn vhd_checksum(b: &[u8], skip: usize) -> u32 {
    let mut sum: u32 = 0;
    for (i, &x) in b.iter().enumerate() {
        if i < skip || i >= skip + 4 {
            sum = sum.wrapping_add(u32::from(x));
        }
    }
    !sum
}

/// UUID bytes as text, in stored byte order (`xxxxxxxx-xxxx-…`).
pub(crate) fn uuid_text(u: &[u8; 16]) -> String {
    let h: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

/// The hard disk footer (512 bytes, or 511 in images from old Virtual PC versions).
#[derive(Debug, Clone)]
pub(crate) struct Footer {
    pub(crate) version: u32,
    pub(crate) data_offset: u64,
    pub(crate) creator_app: [u8; 4],
    pub(crate) current_size: u64,
    pub(crate) cylinders: u16,
    pub(crate) heads: u8,
    pub(crate) sectors_per_track: u8,
    pub(crate) disk_type: u32,
    pub(crate) stored_checksum: u32,
    pub(crate) computed_checksum: u32,
    pub(crate) unique_id: [u8; 16],
    pub(crate) saved_state: bool,
}

impl Footer {
    /// Parses a footer; `None` when the cookie is not there.
    pub(crate) fn parse(b: &[u8]) -> Option<Footer> {
        if b.len() < 511 || b.get(0..8)? != FOOTER_COOKIE {
            return None;
        }
        let mut creator_app = [0u8; 4];
        creator_app.copy_from_slice(b.get(28..32)?);
        let geometry = be_u32(b, 56);
        Some(Footer {
            version: be_u32(b, 12),
            data_offset: be_u64(b, 16),
            creator_app,
            current_size: be_u64(b, 48),
            cylinders: (geometry >> 16) as u16,
            heads: (geometry >> 8) as u8,
            sectors_per_track: geometry as u8,
            disk_type: be_u32(b, 60),
            stored_checksum: be_u32(b, 64),
            computed_checksum: vhd_checksum(b, 64),
            unique_id: bytes16(b, 68),
            saved_state: b.get(84).copied().unwrap_or(0) != 0,
        })
    }

    pub(crate) fn checksum_ok(&self) -> bool {
        self.stored_checksum == self.computed_checksum
    }

    pub(crate) fn is_sparse(&self) -> bool {
        self.disk_type == TYPE_DYNAMIC || self.disk_type == TYPE_DIFFERENCING
    }
}

/// One parent locator entry of the dynamic disk header.
#[derive(Debug, Clone)]
pub(crate) struct Locator {
    pub(crate) code: [u8; 4],
    pub(crate) data_len: u32,
    pub(crate) data_offset: u64,
}

/// The dynamic disk header (1024 bytes, cookie `cxsparse`).
#[derive(Debug, Clone)]
pub(crate) struct DynHeader {
    pub(crate) table_offset: u64,
    pub(crate) version: u32,
    pub(crate) max_table_entries: u32,
    pub(crate) block_size: u32,
    pub(crate) stored_checksum: u32,
    pub(crate) computed_checksum: u32,
    pub(crate) parent_unique_id: [u8; 16],
    pub(crate) parent_name: String,
    pub(crate) locators: Vec<Locator>,
}

impl DynHeader {
    pub(crate) fn parse(b: &[u8]) -> Option<DynHeader> {
        if b.len() < HEADER_SIZE || b.get(0..8)? != HEADER_COOKIE {
            return None;
        }
        // Parent Unicode Name: 512 bytes of UTF-16, big-endian.
        let units: Vec<u16> = b
            .get(64..576)?
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let parent_name = String::from_utf16_lossy(&units);
        let mut locators = Vec::new();
        for i in 0..8 {
            let o = 576 + i * 24;
            let e = b.get(o..o + 24)?;
            let mut code = [0u8; 4];
            code.copy_from_slice(&e[0..4]);
            if code == [0; 4] {
                continue;
            }
            locators.push(Locator {
                code,
                data_len: be_u32(e, 8),
                data_offset: be_u64(e, 16),
            });
        }
        Some(DynHeader {
            table_offset: be_u64(b, 16),
            version: be_u32(b, 24),
            max_table_entries: be_u32(b, 28),
            block_size: be_u32(b, 32),
            stored_checksum: be_u32(b, 36),
            computed_checksum: vhd_checksum(&b[..HEADER_SIZE], 36),
            parent_unique_id: bytes16(b, 40),
            parent_name,
            locators,
        })
    }
}

/// Decodes the data of a parent locator into a path or URL, by platform code.
/// `None` for codes whose data is not text (a Mac OS alias blob that is not a path).
pub(crate) fn decode_locator(code: &[u8; 4], data: &[u8]) -> Option<String> {
    let text = match code {
        b"W2ru" | b"W2ku" => {
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        b"MacX" | b"Mac " | b"Wi2r" | b"Wi2k" => match std::str::from_utf8(data) {
            Ok(s) => s.to_string(),
            Err(_) if code == b"Wi2r" || code == b"Wi2k" => {
                data.iter().map(|&c| char::from(c)).collect()
            }
            Err(_) => return None,
        },
        _ => return None,
    };
    let text = text.trim_end_matches('\0').trim().to_string();
    if text.is_empty() || text.chars().any(|c| c.is_control()) {
        return None;
    }
    Some(text)
}

/// Order in which locators are tried: relative first, then absolute, then Mac.
pub(crate) fn locator_rank(code: &[u8; 4]) -> u8 {
    match code {
        b"W2ru" => 0,
        b"Wi2r" => 1,
        b"W2ku" => 2,
        b"Wi2k" => 3,
        b"MacX" => 4,
        b"Mac " => 5,
        _ => 6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_skips_its_own_field() {
        let mut b = vec![0u8; 512];
        b[0] = 1;
        b[64] = 0xff;
        assert_eq!(vhd_checksum(&b, 64), !1u32);
    }

    #[test]
    fn locators_decode() {
        let w: Vec<u8> = ".\\p.vhd"
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .chain([0, 0])
            .collect();
        assert_eq!(decode_locator(b"W2ru", &w).as_deref(), Some(".\\p.vhd"));
        assert_eq!(
            decode_locator(b"MacX", b"file://localhost/x/p.vhd").as_deref(),
            Some("file://localhost/x/p.vhd")
        );
        assert_eq!(decode_locator(b"Mac ", &[0, 1, 0xff, 3]), None);
        assert_eq!(decode_locator(b"XXXX", b"abc"), None);
    }
}
