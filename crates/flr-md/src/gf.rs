//! Arithmetic in GF(2^8) as RAID6 uses it: the field built on the
//! polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d), generator g = 2.
//!
//! RAID6 keeps two syndromes per stripe over the data blocks D_i:
//! P = ⊕ D_i and Q = ⊕ g^{s_i}·D_i, where s_i is the block's slot (see
//! `layout::Parity::q_slot`). Any two unknowns can be solved for:
//!
//! * one data block lost, P kept: D_x = P ⊕ (the other D_i);
//! * one data block and P lost: D_x = (Q ⊕ Σ_{i≠x} g^{s_i}·D_i) · g^{-s_x};
//! * two data blocks x, y lost: with P' = P ⊕ Σ_{i≠x,y} D_i = D_x ⊕ D_y and
//!   Q' = Q ⊕ Σ_{i≠x,y} g^{s_i}·D_i = g^{s_x}·D_x ⊕ g^{s_y}·D_y,
//!   D_x = (Q' ⊕ g^{s_y}·P') / (g^{s_x} ⊕ g^{s_y}) and D_y = P' ⊕ D_x.

/// Exponent and logarithm tables.
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
pub(crate) fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        return 0;
    }
    T.exp[usize::from(T.log[usize::from(a)]) + usize::from(T.log[usize::from(b)])]
}

/// g^e (e taken modulo 255).
pub(crate) fn pow_g(e: usize) -> u8 {
    T.exp[e % 255]
}

/// 1 / a (a ≠ 0).
pub(crate) fn inv(a: u8) -> u8 {
    debug_assert!(a != 0, "zero has no inverse");
    if a == 0 {
        return 0;
    }
    T.exp[255 - usize::from(T.log[usize::from(a)])]
}

/// The table of c · x for every x.
pub(crate) fn mul_table(c: u8) -> [u8; 256] {
    let mut t = [0u8; 256];
    for (x, v) in t.iter_mut().enumerate() {
        // OK: x < 256.
        *v = mul(c, x as u8);
    }
    t
}

/// dst ⊕= src.
pub(crate) fn xor_into(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= *s;
    }
}

/// dst ⊕= t[src] (t a [`mul_table`]).
pub(crate) fn mul_xor_into(dst: &mut [u8], src: &[u8], t: &[u8; 256]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= t[usize::from(*s)];
    }
}

/// buf = t[buf].
pub(crate) fn mul_in_place(buf: &mut [u8], t: &[u8; 256]) {
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
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1);
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
}
