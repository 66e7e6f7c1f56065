//! An assembled array as a [`ReadAt`]: each read is cut into pieces that
//! lie contiguously on one member (merged across chunks when the layout
//! puts consecutive chunks side by side), each read with one positioned
//! read straight into the caller's buffer. A piece whose member is missing
//! is rebuilt from the rest of its stripe.

use flr_io::{check_range, IoError, ReadAt, Source};

use crate::layout::{Geometry, Parity};
use flr_raid6 as gf;

/// A source in a struct that derives `Debug`.
#[derive(Clone)]
pub(crate) struct Src(pub(crate) Source);

impl std::fmt::Debug for Src {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.layer())
    }
}

/// A member as the array reads it.
#[derive(Debug, Clone)]
pub(crate) struct Leg {
    pub(crate) src: Src,
    /// Where the data area starts in the member.
    pub(crate) base: u64,
    /// Bytes of data area.
    pub(crate) len: u64,
    pub(crate) location: String,
}

/// Scratch used per step when rebuilding (bounds memory whatever the chunk).
const REBUILD_STEP: u64 = 1 << 20;

pub(crate) struct ArraySource {
    pub(crate) layer: String,
    pub(crate) size: u64,
    pub(crate) geometry: Geometry,
    pub(crate) legs: Vec<Option<Leg>>,
}

/// Where the next bytes of a read come from.
enum Piece {
    /// `len` bytes at `off` in member `leg`'s data area.
    Direct { leg: usize, off: u64, len: u64 },
    /// `len` bytes of data block `k` of stripe `stripe`, at `within` in the
    /// chunk, whose member is missing.
    Rebuild {
        stripe: u64,
        k: usize,
        within: u64,
        len: u64,
    },
}

impl ArraySource {
    fn present(&self, leg: usize) -> bool {
        self.legs.get(leg).is_some_and(Option::is_some)
    }

    /// The piece starting at array byte `pos`, at most `max` bytes.
    fn piece(&self, pos: u64, max: u64) -> Result<Piece, IoError> {
        let unmapped = || IoError::corrupt(self.layer.clone(), pos, "no member maps this offset");
        let p = match &self.geometry {
            Geometry::Linear { ends } => {
                let i = ends.partition_point(|&e| e <= pos);
                let end = *ends.get(i).ok_or_else(unmapped)?;
                let start = if i == 0 { 0 } else { ends[i - 1] };
                Piece::Direct {
                    leg: i,
                    off: pos - start,
                    len: end - pos,
                }
            }
            Geometry::Raid0 {
                chunk,
                zones,
                alternate,
            } => {
                let zi = zones.partition_point(|z| z.end <= pos);
                let z = zones.get(zi).ok_or_else(unmapped)?;
                let zoff = pos - z.start;
                let n = z.roles.len() as u64;
                let pick = if *alternate { zoff } else { pos };
                let within = pick % chunk;
                // OK to narrow: a remainder of a division by the zone's member count.
                let leg = z.roles[((pick / chunk) % n) as usize];
                let row = zoff / (chunk * n);
                Piece::Direct {
                    leg,
                    off: z.dev_start + row * chunk + within,
                    len: (chunk - within).min(z.end - pos),
                }
            }
            Geometry::Raid1 { disks } => {
                let leg = (0..*disks)
                    .find(|&i| self.present(i))
                    .ok_or_else(unmapped)?;
                Piece::Direct {
                    leg,
                    off: pos,
                    len: self.size - pos,
                }
            }
            Geometry::Parity(g) => {
                let chunk = g.chunk;
                let d = g.data_disks() as u64;
                let c = pos / chunk;
                let within = pos % chunk;
                let stripe = c / d;
                // OK to narrow: a remainder of a division by the data member count.
                let k = (c % d) as usize;
                let leg = g.place(stripe, k);
                let len = chunk - within;
                if self.present(leg) {
                    Piece::Direct {
                        leg,
                        off: stripe * chunk + within,
                        len,
                    }
                } else {
                    Piece::Rebuild {
                        stripe,
                        k,
                        within,
                        len,
                    }
                }
            }
            Geometry::Raid10(r) => {
                let c = pos / r.chunk;
                let within = pos % r.chunk;
                let mut copies = Vec::with_capacity(r.near * r.far);
                r.copies(c, within, &mut copies);
                let &(leg, off) =
                    copies
                        .iter()
                        .find(|(d, _)| self.present(*d))
                        .ok_or_else(|| {
                            IoError::corrupt(
                                self.layer.clone(),
                                pos,
                                "every copy of this chunk is on a missing member",
                            )
                        })?;
                Piece::Direct {
                    leg,
                    off,
                    len: r.chunk - within,
                }
            }
        };
        Ok(match p {
            Piece::Direct { leg, off, len } => Piece::Direct {
                leg,
                off,
                len: len.min(max),
            },
            Piece::Rebuild {
                stripe,
                k,
                within,
                len,
            } => Piece::Rebuild {
                stripe,
                k,
                within,
                len: len.min(max),
            },
        })
    }

    fn leg(&self, i: usize, at: u64) -> Result<&Leg, IoError> {
        self.legs.get(i).and_then(Option::as_ref).ok_or_else(|| {
            IoError::corrupt(self.layer.clone(), at, format!("member {i} is missing"))
        })
    }

    /// Reads `buf.len()` bytes at `off` of member `i`'s data area.
    fn read_leg(&self, i: usize, off: u64, buf: &mut [u8], at: u64) -> Result<(), IoError> {
        let leg = self.leg(i, at)?;
        let end = off.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > leg.len) {
            return Err(IoError::corrupt(
                self.layer.clone(),
                at,
                format!(
                    "the layout puts this at byte {off:#x} of member {i} ({}), past its {:#x}-byte data area",
                    leg.location, leg.len
                ),
            ));
        }
        leg.src.0.read_exact_at(leg.base + off, buf)
    }

    /// Rebuilds `out` (data block `k` of `stripe`, from `within`) from the
    /// other members of the stripe.
    fn rebuild(
        &self,
        g: &Parity,
        stripe: u64,
        k: usize,
        within: u64,
        out: &mut [u8],
        at: u64,
    ) -> Result<(), IoError> {
        let off = stripe * g.chunk + within;
        let sp = g.parity(stripe);
        let data: Vec<usize> = (0..g.data_disks()).map(|j| g.place(stripe, j)).collect();
        let want = data[k];
        let lost: Vec<usize> = data.iter().copied().filter(|&m| !self.present(m)).collect();
        let mut scratch = vec![0u8; out.len()];
        let p_ok = self.present(sp.p);
        let q = sp.q.filter(|&q| self.present(q));
        let fail = |why: &str| IoError::corrupt(self.layer.clone(), at, why.to_string());
        if lost.len() == 1 && p_ok {
            // D = P ⊕ the other data blocks.
            self.read_leg(sp.p, off, out, at)?;
            for &m in data.iter().filter(|&&m| m != want) {
                self.read_leg(m, off, &mut scratch, at)?;
                gf::xor_into(out, &scratch);
            }
            return Ok(());
        }
        let Some(q) = q else {
            return Err(fail(
                "too many members of this stripe are missing to rebuild it",
            ));
        };
        // Q' = Q ⊕ Σ g^slot·D over the data blocks present.
        self.read_leg(q, off, out, at)?;
        for &m in data.iter().filter(|m| !lost.contains(m)) {
            self.read_leg(m, off, &mut scratch, at)?;
            gf::mul_xor_into(out, &scratch, gf::pow_g(g.q_slot(stripe, m)));
        }
        let sx = g.q_slot(stripe, want);
        match lost.as_slice() {
            [_] => {
                // Data and P lost: D = Q' / g^sx.
                gf::scale(out, gf::inv(gf::pow_g(sx)));
                Ok(())
            }
            [a, b] if p_ok => {
                let other = if *a == want { *b } else { *a };
                let sy = g.q_slot(stripe, other);
                // P' = P ⊕ the data present = D_x ⊕ D_y.
                self.read_leg(sp.p, off, &mut scratch, at)?;
                let mut tmp = vec![0u8; out.len()];
                for &m in data.iter().filter(|m| !lost.contains(m)) {
                    self.read_leg(m, off, &mut tmp, at)?;
                    gf::xor_into(&mut scratch, &tmp);
                }
                // D_x = (Q' ⊕ g^sy·P') / (g^sx ⊕ g^sy).
                let gy = gf::pow_g(sy);
                gf::mul_xor_into(out, &scratch, gy);
                let denom = gf::pow_g(sx) ^ gy;
                if denom == 0 {
                    return Err(fail("two data blocks share a Q coefficient"));
                }
                gf::scale(out, gf::inv(denom));
                Ok(())
            }
            _ => Err(fail(
                "too many members of this stripe are missing to rebuild it",
            )),
        }
    }
}

impl ReadAt for ArraySource {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        check_range(&self.layer, offset, buf.len(), self.size)?;
        let total = buf.len() as u64;
        let mut done = 0u64;
        while done < total {
            let pos = offset + done;
            match self.piece(pos, total - done)? {
                Piece::Direct { leg, off, mut len } => {
                    // Extend the run while the next pieces continue it on the same member.
                    while done + len < total {
                        match self.piece(pos + len, total - done - len)? {
                            Piece::Direct {
                                leg: l2,
                                off: o2,
                                len: n2,
                            } if l2 == leg && o2 == off + len => len += n2,
                            _ => break,
                        }
                    }
                    // OK to narrow: len <= total = buf.len().
                    let (a, b) = (done as usize, (done + len) as usize);
                    self.read_leg(leg, off, &mut buf[a..b], pos)?;
                    done += len;
                }
                Piece::Rebuild {
                    stripe,
                    k,
                    within,
                    len,
                } => {
                    let Geometry::Parity(g) = &self.geometry else {
                        return Err(IoError::corrupt(
                            self.layer.clone(),
                            pos,
                            "rebuild without parity",
                        ));
                    };
                    let len = len.min(REBUILD_STEP);
                    let (a, b) = (done as usize, (done + len) as usize);
                    self.rebuild(g, stripe, k, within, &mut buf[a..b], pos)?;
                    done += len;
                }
            }
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        self.size
    }

    fn layer(&self) -> &str {
        &self.layer
    }

    fn changed(&self, offset: u64, len: u64) -> flr_io::Change {
        use flr_io::Change;
        if offset.checked_add(len).is_none_or(|e| e > self.size) {
            return Change::Unknown;
        }
        // Chunk by chunk, to the member each lies on; a stripe rebuilt from
        // parity (a degraded array) is unknown.
        let mut done = 0u64;
        let mut budget = 1u32 << 16;
        let mut answer = Change::Unchanged;
        while done < len {
            budget -= 1;
            if budget == 0 {
                return answer.and(Change::Unknown);
            }
            let part = match self.piece(offset + done, len - done) {
                Ok(Piece::Direct { leg, off, len: n }) => {
                    done += n;
                    match self.legs.get(leg).and_then(Option::as_ref) {
                        Some(l) => l.src.0.changed(l.base + off, n),
                        None => Change::Unknown,
                    }
                }
                _ => return answer.and(Change::Unknown),
            };
            answer = answer.and(part);
            if answer == Change::Changed {
                break;
            }
        }
        answer
    }

    fn is_known_zero(&self, offset: u64, len: u64) -> bool {
        if offset.checked_add(len).is_none_or(|e| e > self.size) {
            return false;
        }
        let mut done = 0u64;
        // Bound the work: a huge range of tiny chunks is simply "unknown".
        let mut budget = 4096;
        while done < len {
            budget -= 1;
            if budget == 0 {
                return false;
            }
            match self.piece(offset + done, len - done) {
                Ok(Piece::Direct { leg, off, len: n }) => {
                    let Some(l) = self.legs.get(leg).and_then(Option::as_ref) else {
                        return false;
                    };
                    if !l.src.0.is_known_zero(l.base + off, n) {
                        return false;
                    }
                    done += n;
                }
                _ => return false,
            }
        }
        true
    }
}
