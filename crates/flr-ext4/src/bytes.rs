//! Little- and big-endian field readers over byte slices. Out-of-range
//! fields read as zero; callers size-check the buffers they parse first.

pub(crate) fn le16(b: &[u8], o: usize) -> u16 {
    o.checked_add(2)
        .and_then(|e| b.get(o..e))
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

pub(crate) fn le32(b: &[u8], o: usize) -> u32 {
    o.checked_add(4)
        .and_then(|e| b.get(o..e))
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

pub(crate) fn be16(b: &[u8], o: usize) -> u16 {
    o.checked_add(2)
        .and_then(|e| b.get(o..e))
        .map_or(0, |s| u16::from_be_bytes([s[0], s[1]]))
}

pub(crate) fn be32(b: &[u8], o: usize) -> u32 {
    o.checked_add(4)
        .and_then(|e| b.get(o..e))
        .map_or(0, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_reads_zero() {
        let b = [1u8, 2, 3];
        assert_eq!(le16(&b, 1), 0x0302);
        assert_eq!(le16(&b, 2), 0);
        assert_eq!(le32(&b, usize::MAX), 0);
        assert_eq!(be16(&b, 0), 0x0102);
        assert_eq!(be32(&b, 0), 0);
    }
}
