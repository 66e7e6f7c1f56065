//! Little-endian field readers over byte slices (Btrfs is little-endian on
//! disk). A field past the end reads as zero: callers check the length of
//! what they parse first, and these never panic on a short slice.

pub(crate) fn u8_at(b: &[u8], o: usize) -> u8 {
    b.get(o).copied().unwrap_or(0)
}

pub(crate) fn le16(b: &[u8], o: usize) -> u16 {
    field::<2>(b, o).map_or(0, u16::from_le_bytes)
}

pub(crate) fn le32(b: &[u8], o: usize) -> u32 {
    field::<4>(b, o).map_or(0, u32::from_le_bytes)
}

pub(crate) fn le64(b: &[u8], o: usize) -> u64 {
    field::<8>(b, o).map_or(0, u64::from_le_bytes)
}

/// `N` bytes at `o`, or None when they do not fit.
pub(crate) fn field<const N: usize>(b: &[u8], o: usize) -> Option<[u8; N]> {
    let s = b.get(o..o.checked_add(N)?)?;
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    Some(a)
}

/// `len` bytes at `o`, or None.
pub(crate) fn slice(b: &[u8], o: usize, len: usize) -> Option<&[u8]> {
    b.get(o..o.checked_add(len)?)
}

/// A UUID as the Btrfs tools print it (`8-4-4-4-12` lowercase hex).
pub(crate) fn uuid_str(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_fields_read_as_zero() {
        let b = [1u8, 2, 3];
        assert_eq!(le16(&b, 0), 0x0201);
        assert_eq!(le16(&b, 2), 0);
        assert_eq!(le64(&b, usize::MAX), 0);
        assert_eq!(slice(&b, 1, 2), Some(&b[1..3]));
        assert_eq!(slice(&b, usize::MAX, 2), None);
        let u: [u8; 16] = core::array::from_fn(|i| i as u8);
        assert_eq!(uuid_str(&u), "00010203-0405-0607-0809-0a0b0c0d0e0f");
    }
}
