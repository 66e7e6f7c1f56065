//! RAID-6 arithmetic, shared by Linux md (`flr-md`) and Btrfs
//! (`flr-btrfs`): the field GF(2^8) built on x^8 + x^4 + x^3 + x^2 + 1
//! (0x11d) with generator g = 2, the field of the kernel's RAID-6 code
//! (H. Peter Anvin, "The mathematics of RAID-6").
//!
//! A stripe keeps two syndromes over its data blocks D_i:
//! P = ⊕ D_i and Q = ⊕ g^{s_i}·D_i, where s_i is the block's slot (its
//! position in the stripe for Btrfs; md's layouts rotate it). Any two
//! unknowns can be solved for:
//!
//! * one data block lost, P kept: D_x = P ⊕ (the other D_i);
//! * one data block and P lost: D_x = (Q ⊕ Σ_{i≠x} g^{s_i}·D_i) · g^{-s_x};
//! * two data blocks x, y lost: with P' = P ⊕ Σ_{i≠x,y} D_i = D_x ⊕ D_y and
//!   Q' = Q ⊕ Σ_{i≠x,y} g^{s_i}·D_i = g^{s_x}·D_x ⊕ g^{s_y}·D_y,
//!   D_x = (Q' ⊕ g^{s_y}·P') / (g^{s_x} ⊕ g^{s_y}) and D_y = P' ⊕ D_x.
//!
//! The buffer steps ([`xor_into`], [`mul_xor_into`], [`scale`]) work a
//! byte at a time through a 256-entry row of products, built once per call.

#![forbid(unsafe_code)]

/// Exponent (doubled, so a sum of two logarithms needs no reduction) and
/// logarithm tables.
struct Tables {
    exp: [u8; 512],
    log: [u8; 256],
}

const fn tables() -> Tables {
    let mut exp = [0u8; 512];
    let mut log = [0u8; 256];
    let mut x: u16 = 1;
    let mut i = 0;
    while i < 255 {
        exp[i] = x as u8;
        exp[i + 255] = x as u8;
        log[x as usize] = i as u8;
        x <<= 1;
        if x & 0x100 != 0 {
            x ^= 0x11d;
        }
        i += 1;
    }
    exp[510] = exp[0];
    exp[511] = exp[1];
    Tables { exp, log }
}

static T: Tables = tables();

/// a · b.
pub fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        return 0;
    }
    T.exp[usize::from(T.log[usize::from(a)]) + usize::from(T.log[usize::from(b)])]
}

/// g^e (e taken modulo 255).
pub fn pow_g(e: usize) -> u8 {
    T.exp[e % 255]
}

/// 1 / a; 0 for a = 0, which has no inverse (callers divide only by
/// g^{s_x} or g^{s_x} ⊕ g^{s_y} with s_x ≠ s_y, never 0).
pub fn inv(a: u8) -> u8 {
    if a == 0 {
        return 0;
    }
    T.exp[255 - usize::from(T.log[usize::from(a)])]
}

/// The row of products c · x for every x.
fn row(c: u8) -> [u8; 256] {
    // OK: x < 256.
    core::array::from_fn(|x| mul(c, x as u8))
}

/// dst ⊕= src.
pub fn xor_into(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= *s;
    }
}

/// dst ⊕= c · src.
pub fn mul_xor_into(dst: &mut [u8], src: &[u8], c: u8) {
    if c == 1 {
        return xor_into(dst, src);
    }
    let t = row(c);
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= t[usize::from(*s)];
    }
}

/// buf = c · buf.
pub fn scale(buf: &mut [u8], c: u8) {
    let t = row(c);
    for b in buf {
        *b = t[usize::from(*b)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_laws() {
        // g generates all 255 non-zero elements.
        let mut seen = [false; 256];
        for e in 0..255 {
            seen[usize::from(pow_g(e))] = true;
        }
        assert!(!seen[0] && seen[1..].iter().all(|&s| s));
        assert_eq!(pow_g(0), 1);
        assert_eq!(pow_g(8), 0x1d);
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "{a}");
            // Multiplication by 2 is a shift with the polynomial folded in.
            let twice = if a & 0x80 != 0 {
                (a << 1) ^ 0x1d
            } else {
                a << 1
            };
            assert_eq!(mul(a, 2), twice);
        }
        assert_eq!(mul(0x53, 0xca), mul(0xca, 0x53));
    }

    #[test]
    fn rebuild_two_data_blocks() {
        // Three data blocks, P and Q; lose D0 and D2 and solve for them.
        let d: [Vec<u8>; 3] = [vec![1, 2, 3, 250], vec![9, 8, 7, 6], vec![0, 255, 128, 77]];
        let mut p = vec![0u8; 4];
        let mut q = vec![0u8; 4];
        for (i, s) in d.iter().enumerate() {
            xor_into(&mut p, s);
            mul_xor_into(&mut q, s, pow_g(i));
        }
        let (x, y) = (0usize, 2usize);
        let mut pxy = p.clone();
        let mut qxy = q.clone();
        xor_into(&mut pxy, &d[1]);
        mul_xor_into(&mut qxy, &d[1], pow_g(1));
        let mut dx = qxy;
        mul_xor_into(&mut dx, &pxy, pow_g(y));
        scale(&mut dx, inv(pow_g(x) ^ pow_g(y)));
        assert_eq!(dx, d[0]);
        let mut dy = pxy;
        xor_into(&mut dy, &dx);
        assert_eq!(dy, d[2]);
    }
}
