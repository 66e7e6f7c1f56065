//! Where each byte of an array lies on its members, level by level.
//!
//! Written from the kernel's documented behaviour (`md(4)`, the
//! `drivers/md` sources read as a description), in flr's own terms:
//! offsets are bytes inside each member's data area; `chunk` is the chunk
//! size in bytes; "role" is the member's position in the array.
//!
//! * **linear**: the members' data areas one after the other, in role
//!   order (each rounded down to a whole chunk when the array has one).
//! * **RAID0**: each member's data area is rounded down to whole chunks.
//!   The array is cut into zones: zone 0 stripes over every member up to
//!   the smallest member's size; each later zone stripes over the members
//!   still larger than the previous zone's end, from that end up to the
//!   next smallest size. Within a zone chunk `c` of the zone lies on the
//!   zone's member `c mod n`, at chunk `c div n` from the zone's start on
//!   that member. The *original* layout (Linux before 3.14, and 5.4 and
//!   later with layout 1) picks the member from the chunk number counted
//!   from the start of the array instead of the zone; the *alternate*
//!   layout (layout 2) counts from the zone. With one zone they agree.
//! * **RAID1**: every member holds the whole array.
//! * **RAID4/5/6**: chunk `c` is data block `k = c mod d` of stripe
//!   `s = c div d` (`d` data members); every member holds chunk `s` of
//!   each stripe at byte `s·chunk`. The layout decides which member holds
//!   P (and Q) and which holds data block `k` (see [`Parity::place`]).
//! * **RAID10**: `near` copies of each chunk on consecutive members, the
//!   whole repeated `far` times: either in `far` regions of each member
//!   (far), or in the next chunk rows (offset), each repetition shifted
//!   by `near` members (within far sets, see [`Raid10::copies`]).

use crate::{Layout, ParityLayout, Raid0Layout};

/// One stretch of a RAID0 array.
#[derive(Debug, Clone)]
pub(crate) struct Zone {
    /// Array byte where the zone starts.
    pub(crate) start: u64,
    /// Array byte where it ends.
    pub(crate) end: u64,
    /// Byte in each member's data area where the zone's part starts.
    pub(crate) dev_start: u64,
    /// The roles the zone stripes over.
    pub(crate) roles: Vec<usize>,
}

/// The mapping of an array onto its members.
#[derive(Debug, Clone)]
pub(crate) enum Geometry {
    Linear {
        /// Array byte where each role's part ends.
        ends: Vec<u64>,
    },
    Raid0 {
        chunk: u64,
        zones: Vec<Zone>,
        /// Pick the member from the zone-relative chunk (layout 2).
        alternate: bool,
    },
    Raid1 {
        disks: usize,
    },
    Parity(Parity),
    Raid10(Raid10),
}

/// A RAID4/5/6 geometry.
#[derive(Debug, Clone)]
pub(crate) struct Parity {
    /// 4, 5 or 6.
    pub(crate) level: u8,
    pub(crate) layout: ParityLayout,
    pub(crate) disks: usize,
    pub(crate) chunk: u64,
}

/// Where the blocks of one stripe lie.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StripeParity {
    pub(crate) p: usize,
    pub(crate) q: Option<usize>,
}

impl Parity {
    /// Members holding data in each stripe.
    pub(crate) fn data_disks(&self) -> usize {
        self.disks - if self.level == 6 { 2 } else { 1 }
    }

    /// The members holding P and Q in stripe `stripe`.
    pub(crate) fn parity(&self, stripe: u64) -> StripeParity {
        let n = self.disks;
        let n64 = n as u64;
        // OK to narrow: a remainder of a division by n (a usize).
        let rot = (stripe % n64) as usize;
        let d = self.data_disks();
        if self.level == 4 {
            return StripeParity { p: d, q: None };
        }
        if self.level == 5 {
            let p = match self.layout {
                ParityLayout::LeftAsymmetric | ParityLayout::LeftSymmetric => d - rot,
                ParityLayout::RightAsymmetric | ParityLayout::RightSymmetric => rot,
                ParityLayout::ParityFirst => 0,
                _ => d,
            };
            return StripeParity { p, q: None };
        }
        let rot5 = (stripe % (n64 - 1)) as usize;
        let (p, q) = match self.layout {
            ParityLayout::LeftAsymmetric => asym6(n - 1 - rot, n),
            ParityLayout::RightAsymmetric | ParityLayout::RotatingZeroRestart => asym6(rot, n),
            ParityLayout::LeftSymmetric => (n - 1 - rot, (n - rot) % n),
            ParityLayout::RightSymmetric => (rot, (rot + 1) % n),
            ParityLayout::ParityFirst => (0, 1),
            ParityLayout::ParityLast => (d, d + 1),
            ParityLayout::RotatingNRestart => {
                let r = ((stripe % n64 + 1) % n64) as usize;
                asym6(n - 1 - r, n)
            }
            ParityLayout::RotatingNContinue => {
                let p = n - 1 - rot;
                (p, (p + n - 1) % n)
            }
            ParityLayout::LeftAsymmetric6 | ParityLayout::LeftSymmetric6 => (d - rot5, n - 1),
            ParityLayout::RightAsymmetric6 | ParityLayout::RightSymmetric6 => (rot5, n - 1),
            ParityLayout::ParityFirst6 => (0, n - 1),
        };
        StripeParity { p, q: Some(q) }
    }

    /// The member holding data block `k` of stripe `stripe`.
    pub(crate) fn place(&self, stripe: u64, k: usize) -> usize {
        let n = self.disks;
        let sp = self.parity(stripe);
        let p = sp.p;
        if self.level == 4 {
            return k;
        }
        if self.level == 5 {
            return match self.layout {
                ParityLayout::LeftAsymmetric | ParityLayout::RightAsymmetric => {
                    if k >= p {
                        k + 1
                    } else {
                        k
                    }
                }
                ParityLayout::LeftSymmetric | ParityLayout::RightSymmetric => (p + 1 + k) % n,
                ParityLayout::ParityFirst => k + 1,
                _ => k,
            };
        }
        match self.layout {
            ParityLayout::LeftAsymmetric
            | ParityLayout::RightAsymmetric
            | ParityLayout::RotatingZeroRestart
            | ParityLayout::RotatingNRestart => {
                if p == n - 1 {
                    // Q D D … D P
                    k + 1
                } else if k >= p {
                    // D … D P Q D …
                    k + 2
                } else {
                    k
                }
            }
            ParityLayout::LeftSymmetric | ParityLayout::RightSymmetric => (p + 2 + k) % n,
            ParityLayout::ParityFirst => k + 2,
            ParityLayout::ParityLast => k,
            ParityLayout::RotatingNContinue => (p + 1 + k) % n,
            ParityLayout::LeftAsymmetric6 | ParityLayout::RightAsymmetric6 => {
                if k >= p {
                    k + 1
                } else {
                    k
                }
            }
            ParityLayout::LeftSymmetric6 | ParityLayout::RightSymmetric6 => (p + 1 + k) % (n - 1),
            ParityLayout::ParityFirst6 => k + 1,
        }
    }

    /// The exponent of g that data on member `disk` carries in Q. md's own
    /// layouts number the data blocks in member order starting just after
    /// Q (from member 0 when Q is last), skipping P and Q; the DDF layouts
    /// use the member's index itself.
    pub(crate) fn q_slot(&self, stripe: u64, disk: usize) -> usize {
        if matches!(
            self.layout,
            ParityLayout::RotatingZeroRestart
                | ParityLayout::RotatingNRestart
                | ParityLayout::RotatingNContinue
        ) {
            return disk;
        }
        let n = self.disks;
        let sp = self.parity(stripe);
        let q = sp.q.unwrap_or(n - 1);
        let d0 = if q == n - 1 { 0 } else { q + 1 };
        // Members from d0 up to `disk` (cyclically), less P and Q among them.
        let before = (disk + n - d0) % n;
        let skipped = [sp.p, q]
            .iter()
            .filter(|&&m| m != disk && (m + n - d0) % n < before)
            .count();
        before - skipped
    }
}

/// P at `p`, Q after it (or at member 0 when P is last).
fn asym6(p: usize, n: usize) -> (usize, usize) {
    if p == n - 1 {
        (p, 0)
    } else {
        (p, p + 1)
    }
}

/// A RAID10 geometry.
#[derive(Debug, Clone)]
pub(crate) struct Raid10 {
    pub(crate) disks: usize,
    pub(crate) near: usize,
    pub(crate) far: usize,
    pub(crate) offset: bool,
    pub(crate) far_set: usize,
    pub(crate) chunk: u64,
    /// Bytes between one far copy and the next on a member.
    pub(crate) stride: u64,
}

impl Raid10 {
    /// The (member, byte in member) of every copy of array chunk `chunk_no`
    /// (at `within` bytes into the chunk), first copy first.
    pub(crate) fn copies(&self, chunk_no: u64, within: u64, out: &mut Vec<(usize, u64)>) {
        out.clear();
        let disks = self.disks as u64;
        let first = chunk_no.saturating_mul(self.near as u64);
        let mut row = first / disks;
        // OK to narrow: a remainder of a division by disks (a usize).
        let mut dev = (first % disks) as usize;
        if self.offset {
            row = row.saturating_mul(self.far as u64);
        }
        let mut base = row.saturating_mul(self.chunk).saturating_add(within);
        let fss = self.far_set;
        let last_start = (self.disks / fss - 1) * fss;
        let last_size = fss + self.disks % fss;
        for _ in 0..self.near {
            let mut d = dev;
            let mut s = base;
            out.push((d, s));
            for _ in 1..self.far {
                let set = d / fss;
                d += self.near;
                if !self.disks.is_multiple_of(fss) && d > last_start {
                    d = (d - last_start) % last_size + last_start;
                } else {
                    d = d % fss + fss * set;
                }
                s = s.saturating_add(self.stride);
                out.push((d, s));
            }
            dev += 1;
            if dev >= self.disks {
                dev = 0;
                base = base.saturating_add(self.chunk);
            }
        }
    }
}

/// Parses a RAID10 layout word: (near, far, offset, far set size).
pub(crate) fn raid10_layout(layout: u32, disks: usize) -> Option<(usize, usize, bool, usize)> {
    let near = (layout & 0xff) as usize;
    let far = ((layout >> 8) & 0xff) as usize;
    let offset = layout & (1 << 16) != 0;
    if near == 0 || far == 0 || near.checked_mul(far)? > disks {
        return None;
    }
    let far_set = match layout >> 17 {
        0 => disks,
        // Layout version 1 had a bug the kernel keeps for compatibility.
        1 => disks / far,
        2 => far * near,
        _ => return None,
    };
    if far_set == 0 || far_set > disks {
        return None;
    }
    Some((near, far, offset, far_set))
}

/// The RAID0 layout a superblock records (only meaningful with several zones).
pub(crate) fn raid0_layout(layout: u32, has_feature: bool) -> Raid0Layout {
    match (has_feature, layout) {
        (true, 1) => Raid0Layout::Original,
        (true, 2) => Raid0Layout::Alternate,
        _ => Raid0Layout::Unrecorded,
    }
}

/// Cuts a RAID0 array of members of `sizes` bytes (already whole chunks,
/// in role order) into zones.
pub(crate) fn raid0_zones(sizes: &[u64]) -> Vec<Zone> {
    let mut ends: Vec<u64> = sizes.iter().copied().filter(|&s| s > 0).collect();
    ends.sort_unstable();
    ends.dedup();
    let mut zones = Vec::new();
    let mut prev = 0u64;
    let mut at = 0u64;
    for end in ends {
        let roles: Vec<usize> = (0..sizes.len()).filter(|&i| sizes[i] > prev).collect();
        let width = (end - prev).saturating_mul(roles.len() as u64);
        let zend = at.saturating_add(width);
        zones.push(Zone {
            start: at,
            end: zend,
            dev_start: prev,
            roles,
        });
        at = zend;
        prev = end;
    }
    zones
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Layout::None => write!(f, "-"),
            Layout::Raid0(l) => write!(f, "{l}"),
            Layout::Parity(l) => write!(f, "{l}"),
            Layout::Raid10 {
                near,
                far,
                offset,
                far_sets,
            } => {
                let mut parts = Vec::new();
                if *near > 1 {
                    parts.push(format!("near={near}"));
                }
                if *far > 1 {
                    parts.push(format!("{}={far}", if *offset { "offset" } else { "far" }));
                }
                if parts.is_empty() {
                    parts.push("near=1".into());
                }
                write!(f, "{}", parts.join(", "))?;
                if *far_sets != 0 {
                    write!(f, " (far set layout {far_sets})")?;
                }
                Ok(())
            }
            Layout::Unknown(v) => write!(f, "unknown layout {v:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(level: u8, layout: ParityLayout, disks: usize) -> Parity {
        Parity {
            level,
            layout,
            disks,
            chunk: 4096,
        }
    }

    /// md(4)'s pictures of the four RAID5 layouts over four members:
    /// which member holds P, and the data members in order, per stripe.
    #[test]
    fn raid5_layouts_match_the_documented_pictures() {
        let row = |g: &Parity, s: u64| -> (usize, Vec<usize>) {
            (
                g.parity(s).p,
                (0..g.data_disks()).map(|k| g.place(s, k)).collect(),
            )
        };
        let ls = p(5, ParityLayout::LeftSymmetric, 4);
        assert_eq!(row(&ls, 0), (3, vec![0, 1, 2]));
        assert_eq!(row(&ls, 1), (2, vec![3, 0, 1]));
        assert_eq!(row(&ls, 3), (0, vec![1, 2, 3]));
        let la = p(5, ParityLayout::LeftAsymmetric, 4);
        assert_eq!(row(&la, 1), (2, vec![0, 1, 3]));
        let rs = p(5, ParityLayout::RightSymmetric, 4);
        assert_eq!(row(&rs, 0), (0, vec![1, 2, 3]));
        assert_eq!(row(&rs, 1), (1, vec![2, 3, 0]));
        let ra = p(5, ParityLayout::RightAsymmetric, 4);
        assert_eq!(row(&ra, 1), (1, vec![0, 2, 3]));
        let r4 = p(4, ParityLayout::LeftAsymmetric, 4);
        assert_eq!(row(&r4, 2), (3, vec![0, 1, 2]));
    }

    #[test]
    fn raid6_every_stripe_uses_every_member_once() {
        for layout in [
            ParityLayout::LeftAsymmetric,
            ParityLayout::RightAsymmetric,
            ParityLayout::LeftSymmetric,
            ParityLayout::RightSymmetric,
            ParityLayout::ParityFirst,
            ParityLayout::ParityLast,
            ParityLayout::RotatingZeroRestart,
            ParityLayout::RotatingNRestart,
            ParityLayout::RotatingNContinue,
            ParityLayout::LeftAsymmetric6,
            ParityLayout::RightAsymmetric6,
            ParityLayout::LeftSymmetric6,
            ParityLayout::RightSymmetric6,
            ParityLayout::ParityFirst6,
        ] {
            for n in 4..8 {
                let g = p(6, layout, n);
                for s in 0..(3 * n as u64) {
                    let sp = g.parity(s);
                    let mut used = vec![sp.p, sp.q.unwrap()];
                    used.extend((0..g.data_disks()).map(|k| g.place(s, k)));
                    used.sort_unstable();
                    assert_eq!(used, (0..n).collect::<Vec<_>>(), "{layout:?} n={n} s={s}");
                    let mut slots: Vec<usize> = (0..g.data_disks())
                        .map(|k| g.q_slot(s, g.place(s, k)))
                        .collect();
                    slots.sort_unstable();
                    slots.dedup();
                    assert_eq!(slots.len(), g.data_disks());
                }
            }
        }
    }

    #[test]
    fn raid10_near_far_offset() {
        let g = |near, far, offset, disks, stride| Raid10 {
            disks,
            near,
            far,
            offset,
            far_set: disks,
            chunk: 10,
            stride,
        };
        let mut v = Vec::new();
        // near=2 over 3 members: chunk 1 is on members 2 and 0 (next row).
        g(2, 1, false, 3, 0).copies(1, 0, &mut v);
        assert_eq!(v, [(2, 0), (0, 10)]);
        // far=2 over 2 members, stride 100: chunk 1 on member 1 row 0, copy on member 0 at 100.
        g(1, 2, false, 2, 100).copies(1, 3, &mut v);
        assert_eq!(v, [(1, 3), (0, 103)]);
        // offset=2 over 3 members: chunk 4 is row 1 → byte row 2, copy one chunk further, shifted.
        g(1, 2, true, 3, 10).copies(4, 0, &mut v);
        assert_eq!(v, [(1, 20), (2, 30)]);
    }

    #[test]
    fn raid0_zones_of_unequal_members() {
        let z = raid0_zones(&[2 << 20, 2 << 20, 1 << 20]);
        assert_eq!(z.len(), 2);
        assert_eq!(
            (z[0].start, z[0].end, z[0].roles.clone()),
            (0, 3 << 20, vec![0, 1, 2])
        );
        assert_eq!(
            (z[1].start, z[1].end, z[1].dev_start, z[1].roles.clone()),
            (3 << 20, 5 << 20, 1 << 20, vec![0, 1])
        );
    }
}
