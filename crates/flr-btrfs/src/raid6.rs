//! RAID6 arithmetic: the Q syndrome is a Reed–Solomon code over GF(2^8)
//! with the polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d) and generator 2,
//! `Q = D0 + g·D1 + g²·D2 + …` over the data stripes in logical order (the
//! convention of the Linux RAID6 code that Btrfs uses; H. Peter Anvin,
//! "The mathematics of RAID-6").

const fn tables() -> ([u8; 256], [u8; 256]) {
    let mut exp = [0u8; 256];
    let mut log = [0u8; 256];
    let mut x: u16 = 1;
    let mut i = 0;
    while i < 255 {
        exp[i] = x as u8;
        log[x as usize] = i as u8;
        x <<= 1;
        if x & 0x100 != 0 {
            x ^= 0x11d;
        }
        i += 1;
    }
    exp[255] = exp[0];
    (exp, log)
}

const TABLES: ([u8; 256], [u8; 256]) = tables();

/// g^n.
pub(crate) fn pow2(n: usize) -> u8 {
    TABLES.0[n % 255]
}

/// a · b in GF(2^8).
pub(crate) fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        return 0;
    }
    let s = usize::from(TABLES.1[usize::from(a)]) + usize::from(TABLES.1[usize::from(b)]);
    TABLES.0[s % 255]
}

/// 1 / a (a ≠ 0).
pub(crate) fn inv(a: u8) -> u8 {
    if a == 0 {
        return 0;
    }
    TABLES.0[(255 - usize::from(TABLES.1[usize::from(a)])) % 255]
}

/// `dst ^= c · src`, byte by byte through a 256-entry row of products.
pub(crate) fn mul_xor(dst: &mut [u8], src: &[u8], c: u8) {
    if c == 1 {
        for (d, s) in dst.iter_mut().zip(src) {
            *d ^= *s;
        }
        return;
    }
    let row: [u8; 256] = core::array::from_fn(|v| mul(c, v as u8));
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= row[usize::from(*s)];
    }
}

/// `buf = c · buf`.
pub(crate) fn scale(buf: &mut [u8], c: u8) {
    let row: [u8; 256] = core::array::from_fn(|v| mul(c, v as u8));
    for b in buf {
        *b = row[usize::from(*b)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_laws() {
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "{a}");
        }
        assert_eq!(pow2(0), 1);
        assert_eq!(pow2(8), 0x1d);
        assert_eq!(mul(0x80, 2), 0x1d);
    }

    #[test]
    fn rebuild_two_data_stripes() {
        // Three data stripes, P and Q; lose D0 and D2 and solve for them.
        let d: [Vec<u8>; 3] = [vec![1, 2, 3, 250], vec![9, 8, 7, 6], vec![0, 255, 128, 77]];
        let mut p = vec![0u8; 4];
        let mut q = vec![0u8; 4];
        for (i, s) in d.iter().enumerate() {
            mul_xor(&mut p, s, 1);
            mul_xor(&mut q, s, pow2(i));
        }
        let (x, y) = (0usize, 2usize);
        let mut pxy = p.clone();
        let mut qxy = q.clone();
        mul_xor(&mut pxy, &d[1], 1);
        mul_xor(&mut qxy, &d[1], pow2(1));
        // Dx = (Qxy + g^y Pxy) / (g^x + g^y)
        let mut dx = qxy.clone();
        mul_xor(&mut dx, &pxy, pow2(y));
        scale(&mut dx, inv(pow2(x) ^ pow2(y)));
        assert_eq!(dx, d[0]);
        let mut dy = pxy;
        mul_xor(&mut dy, &dx, 1);
        assert_eq!(dy, d[2]);
    }
}
