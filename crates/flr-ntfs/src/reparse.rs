//! Reparse points: which ones are links flr can show, which make a file's
//! data unreadable.

pub(crate) const TAG_MOUNT_POINT: u32 = 0xA000_0003;
pub(crate) const TAG_SYMLINK: u32 = 0xA000_000C;
pub(crate) const TAG_LX_SYMLINK: u32 = 0xA000_001D;
const TAG_DEDUP: u32 = 0x8000_0013;
const TAG_WOF: u32 = 0x8000_0017;
const TAG_APPEXECLINK: u32 = 0x8000_001B;
const TAG_AF_UNIX: u32 = 0x8000_0023;
const TAG_LX_FIFO: u32 = 0x8000_0024;
const TAG_LX_CHR: u32 = 0x8000_0025;
const TAG_LX_BLK: u32 = 0x8000_0026;
const TAG_HSM: u32 = 0xC000_0004;
const TAG_HSM2: u32 = 0x8000_0006;

/// What a reparse point makes of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reparse {
    /// A symlink, junction or WSL symlink, with its target as UTF-8.
    Link(Vec<u8>),
    /// A socket, FIFO or device node (WSL).
    Special,
    /// Anything else: the data is not in the unnamed stream as stored.
    Opaque(String),
}

fn utf16(b: &[u8]) -> Vec<u8> {
    let units = b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
    char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect::<String>()
        .into_bytes()
}

fn le16(b: &[u8], o: usize) -> usize {
    b.get(o..o + 2)
        .map_or(0, |s| usize::from(u16::from_le_bytes([s[0], s[1]])))
}

/// Parses a reparse point (the value of `$REPARSE_POINT`).
pub(crate) fn parse(v: &[u8]) -> Reparse {
    let Some(tag) = v
        .get(0..4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    else {
        return Reparse::Opaque("reparse point too short".into());
    };
    let data = v.get(8..).unwrap_or(&[]);
    let link = |buf_start: usize| {
        let (off, len) = (le16(data, 0), le16(data, 2));
        buf_start
            .checked_add(off)
            .and_then(|s| data.get(s..s.checked_add(len)?))
            .filter(|n| !n.is_empty())
            .map(|n| Reparse::Link(utf16(n)))
            .unwrap_or_else(|| {
                Reparse::Opaque(format!("malformed link reparse point (tag {tag:#010x})"))
            })
    };
    match tag {
        TAG_SYMLINK => link(12),
        TAG_MOUNT_POINT => link(8),
        TAG_LX_SYMLINK => match data.get(4..) {
            Some(t) if data.len() > 4 => Reparse::Link(t.to_vec()),
            _ => Reparse::Opaque("malformed WSL symlink reparse point".into()),
        },
        TAG_AF_UNIX | TAG_LX_FIFO | TAG_LX_CHR | TAG_LX_BLK => Reparse::Special,
        TAG_WOF => Reparse::Opaque("WOF-compressed (Windows Overlay Filter reparse point)".into()),
        TAG_DEDUP => Reparse::Opaque("deduplicated (Data Deduplication reparse point)".into()),
        TAG_APPEXECLINK => Reparse::Opaque("app execution alias (reparse point)".into()),
        TAG_HSM | TAG_HSM2 => Reparse::Opaque("offline (HSM reparse point)".into()),
        t if t & 0xFFFF_0FFF == 0x9000_001A => {
            Reparse::Opaque("cloud files placeholder (reparse point)".into())
        }
        t => Reparse::Opaque(format!("reparse point tag {t:#010x}")),
    }
}

/// Interix (SFU / ntfs-3g) symlinks: a system file whose data is
/// `IntxLNK\1` followed by the UTF-16 target.
pub(crate) fn interix(data: &[u8]) -> Option<Vec<u8>> {
    let t = data.strip_prefix(b"IntxLNK\x01")?;
    (!t.is_empty() && t.len() % 2 == 0).then(|| utf16(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16s(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
    }

    #[test]
    fn symlinks_and_junctions() {
        let sub = u16s("..\\a\\b");
        let mut v = TAG_SYMLINK.to_le_bytes().to_vec();
        v.extend_from_slice(&[0; 4]);
        for x in [0u16, sub.len() as u16, sub.len() as u16, sub.len() as u16] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&sub);
        v.extend_from_slice(&sub);
        assert_eq!(parse(&v), Reparse::Link(b"..\\a\\b".to_vec()));
        let mut j = TAG_MOUNT_POINT.to_le_bytes().to_vec();
        j.extend_from_slice(&[0; 4]);
        let sub = u16s("\\??\\C:\\x");
        for x in [0u16, sub.len() as u16, 0, 0] {
            j.extend_from_slice(&x.to_le_bytes());
        }
        j.extend_from_slice(&sub);
        assert_eq!(parse(&j), Reparse::Link(b"\\??\\C:\\x".to_vec()));
        // Offsets pointing outside the buffer.
        j[8] = 0xff;
        assert!(matches!(parse(&j), Reparse::Opaque(_)));
        assert!(matches!(parse(&[1, 2]), Reparse::Opaque(_)));
        assert!(
            matches!(parse(&0x8000_0017u32.to_le_bytes()), Reparse::Opaque(r) if r.contains("WOF"))
        );
    }

    #[test]
    fn interix_links() {
        let mut d = b"IntxLNK\x01".to_vec();
        d.extend(u16s("d/f.txt"));
        assert_eq!(interix(&d), Some(b"d/f.txt".to_vec()));
        assert_eq!(interix(b"IntxLNK\x01"), None);
        assert_eq!(interix(b"hello"), None);
    }
}
