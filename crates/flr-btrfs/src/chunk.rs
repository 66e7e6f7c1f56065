//! Chunks: the map from Btrfs's logical address space to the devices.
//!
//! Source: the Btrfs on-disk format documentation (`struct btrfs_chunk`,
//! `struct btrfs_stripe`, block group type flags) and the kernel's
//! documented mapping rules for each profile. A chunk covers `length`
//! logical bytes from `logical`; its `num_stripes` stripes name a device
//! and the byte offset there where the chunk's device extent starts.
//!
//! ```text
//!  btrfs_chunk (48 bytes, then num_stripes × btrfs_stripe of 32 bytes)
//!   0 length  8 owner  16 stripe_len  24 type  32 io_align  36 io_width
//!  40 sector_size  44 num_stripes u16  46 sub_stripes u16
//!  btrfs_stripe:  0 devid  8 offset  16 dev_uuid[16]
//! ```
//!
//! * SINGLE, DUP, RAID1, RAID1C3, RAID1C4: every stripe holds the whole
//!   chunk (SINGLE has one); byte `o` of the chunk is at `offset + o`.
//! * RAID0: the chunk is cut into `stripe_len` pieces dealt round robin over
//!   the stripes.
//! * RAID10: as RAID0 over `num_stripes / sub_stripes` groups, each piece
//!   written to the `sub_stripes` stripes of its group.
//! * RAID5/RAID6: rows of `num_stripes - 1` (or `- 2`) data pieces plus P
//!   (and Q); in row `r` data piece `i` is on stripe `(r + i) % n`, P on
//!   `(r + nd) % n`, Q on `(r + nd + 1) % n`, all at `offset + r × stripe_len`.

use crate::bytes::{le16, le64};

pub(crate) const BG_DATA: u64 = 1 << 0;
pub(crate) const BG_SYSTEM: u64 = 1 << 1;
pub(crate) const BG_METADATA: u64 = 1 << 2;
const BG_RAID0: u64 = 1 << 3;
const BG_RAID1: u64 = 1 << 4;
const BG_DUP: u64 = 1 << 5;
const BG_RAID10: u64 = 1 << 6;
const BG_RAID5: u64 = 1 << 7;
const BG_RAID6: u64 = 1 << 8;
const BG_RAID1C3: u64 = 1 << 9;
const BG_RAID1C4: u64 = 1 << 10;
const BG_PROFILES: u64 =
    BG_RAID0 | BG_RAID1 | BG_DUP | BG_RAID10 | BG_RAID5 | BG_RAID6 | BG_RAID1C3 | BG_RAID1C4;

/// Stripes one chunk may have (the kernel's item size limit allows a few
/// hundred on 16 KiB nodes).
const MAX_STRIPES: usize = 1024;

/// How a chunk lays its bytes over its stripes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// One copy on one device.
    Single,
    /// Two copies on one device.
    Dup,
    /// Striped without redundancy.
    Raid0,
    /// A copy on each of 2 devices.
    Raid1,
    /// A copy on each of 3 devices.
    Raid1c3,
    /// A copy on each of 4 devices.
    Raid1c4,
    /// Striped over mirrored pairs.
    Raid10,
    /// Striped with one parity stripe (P).
    Raid5,
    /// Striped with two parity stripes (P and Q).
    Raid6,
}

impl Profile {
    /// The name `btrfs filesystem df` prints.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Single => "single",
            Profile::Dup => "DUP",
            Profile::Raid0 => "RAID0",
            Profile::Raid1 => "RAID1",
            Profile::Raid1c3 => "RAID1C3",
            Profile::Raid1c4 => "RAID1C4",
            Profile::Raid10 => "RAID10",
            Profile::Raid5 => "RAID5",
            Profile::Raid6 => "RAID6",
        }
    }

    fn from_type(ty: u64) -> Option<Profile> {
        Some(match ty & BG_PROFILES {
            0 => Profile::Single,
            BG_DUP => Profile::Dup,
            BG_RAID0 => Profile::Raid0,
            BG_RAID1 => Profile::Raid1,
            BG_RAID1C3 => Profile::Raid1c3,
            BG_RAID1C4 => Profile::Raid1c4,
            BG_RAID10 => Profile::Raid10,
            BG_RAID5 => Profile::Raid5,
            BG_RAID6 => Profile::Raid6,
            _ => return None,
        })
    }

    /// Parity stripes per row.
    fn parity(self) -> usize {
        match self {
            Profile::Raid5 => 1,
            Profile::Raid6 => 2,
            _ => 0,
        }
    }
}

/// One stripe of a chunk: a device and where the chunk starts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stripe {
    pub(crate) devid: u64,
    pub(crate) offset: u64,
}

/// A chunk item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub(crate) logical: u64,
    pub(crate) length: u64,
    pub(crate) stripe_len: u64,
    pub(crate) ty: u64,
    pub(crate) profile: Profile,
    pub(crate) sub_stripes: usize,
    pub(crate) stripes: Vec<Stripe>,
}

/// Where the bytes at one logical address lie, up to the next boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place {
    /// Identical copies: stripe indexes, each at `stripes[i].offset + rel`.
    Copies { slots: Vec<usize>, rel: u64 },
    /// A RAID5/6 data piece: `slots[i]` is the stripe of data piece `i`
    /// (`nd` of them), then P, then Q (RAID6); `data` is the piece asked
    /// for; every slot is at `stripes[slot].offset + rel`.
    Parity {
        slots: Vec<usize>,
        nd: usize,
        data: usize,
        rel: u64,
    },
}

impl Chunk {
    /// Parses a chunk item whose key offset (the logical start) is `logical`.
    /// Returns the chunk and the bytes it used.
    pub(crate) fn parse(logical: u64, b: &[u8]) -> Result<(Chunk, usize), String> {
        if b.len() < 48 {
            return Err(format!("chunk item of {} bytes", b.len()));
        }
        let length = le64(b, 0);
        let stripe_len = le64(b, 16);
        let ty = le64(b, 24);
        let n = usize::from(le16(b, 44));
        let sub = usize::from(le16(b, 46));
        let used = 48 + n * 32;
        if n == 0 || n > MAX_STRIPES || b.len() < used {
            return Err(format!("chunk with {n} stripes in {} bytes", b.len()));
        }
        if length == 0 || logical.checked_add(length).is_none() {
            return Err(format!("chunk of {length} bytes at logical {logical:#x}"));
        }
        let profile =
            Profile::from_type(ty).ok_or_else(|| format!("chunk type {ty:#x} has two profiles"))?;
        if !stripe_len.is_power_of_two() || !(4096..=(1 << 30)).contains(&stripe_len) {
            return Err(format!("stripe length {stripe_len}"));
        }
        let stripes: Vec<Stripe> = (0..n)
            .map(|i| Stripe {
                devid: le64(b, 48 + i * 32),
                offset: le64(b, 48 + i * 32 + 8),
            })
            .collect();
        let ok = match profile {
            Profile::Single => n == 1,
            Profile::Dup | Profile::Raid1 => n == 2,
            Profile::Raid1c3 => n == 3,
            Profile::Raid1c4 => n == 4,
            Profile::Raid0 => true,
            Profile::Raid10 => sub >= 2 && n >= sub && n % sub == 0,
            Profile::Raid5 => n >= 2,
            Profile::Raid6 => n >= 3,
        };
        if !ok {
            return Err(format!(
                "{} chunk with {n} stripes (sub_stripes {sub})",
                profile.name()
            ));
        }
        Ok((
            Chunk {
                logical,
                length,
                stripe_len,
                ty,
                profile,
                sub_stripes: sub.max(1),
                stripes,
            },
            used,
        ))
    }

    /// The end of the chunk's logical range (no overflow: checked in parse).
    pub(crate) fn end(&self) -> u64 {
        self.logical + self.length
    }

    /// Where byte `logical` of this chunk lies, and how many bytes from it
    /// are laid out the same way (to the next stripe boundary or the end
    /// of the chunk). `logical` must be inside the chunk.
    pub(crate) fn place(&self, logical: u64) -> (Place, u64) {
        let off = logical - self.logical;
        let left = self.end() - logical;
        let n = self.stripes.len();
        let sl = self.stripe_len;
        let (sn, so) = (off / sl, off % sl);
        let piece = (sl - so).min(left);
        match self.profile {
            Profile::Single
            | Profile::Dup
            | Profile::Raid1
            | Profile::Raid1c3
            | Profile::Raid1c4 => (
                Place::Copies {
                    slots: (0..n).collect(),
                    rel: off,
                },
                left,
            ),
            Profile::Raid0 => {
                let n64 = n as u64;
                (
                    Place::Copies {
                        // OK: the remainder is below n.
                        slots: vec![(sn % n64) as usize],
                        rel: (sn / n64) * sl + so,
                    },
                    piece,
                )
            }
            Profile::Raid10 => {
                let groups = (n / self.sub_stripes) as u64;
                // OK: the remainder is below groups <= n.
                let first = (sn % groups) as usize * self.sub_stripes;
                (
                    Place::Copies {
                        slots: (first..first + self.sub_stripes).collect(),
                        rel: (sn / groups) * sl + so,
                    },
                    piece,
                )
            }
            Profile::Raid5 | Profile::Raid6 => {
                let nd = n - self.profile.parity();
                let nd64 = nd as u64;
                let row = sn / nd64;
                // OK: below nd.
                let data = (sn % nd64) as usize;
                // OK: (row % n) fits in usize because n does.
                let base = (row % n as u64) as usize;
                let slots = (0..n).map(|i| (base + i) % n).collect();
                (
                    Place::Parity {
                        slots,
                        nd,
                        data,
                        rel: row * sl + so,
                    },
                    piece,
                )
            }
        }
    }

    /// Whether this chunk holds data, metadata or system blocks.
    pub(crate) fn kind_name(&self) -> &'static str {
        if self.ty & BG_SYSTEM != 0 {
            "system"
        } else if self.ty & BG_METADATA != 0 {
            if self.ty & BG_DATA != 0 {
                "mixed"
            } else {
                "metadata"
            }
        } else {
            "data"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(profile: Profile, n: usize, sub: usize) -> Chunk {
        Chunk {
            logical: 1 << 20,
            length: 6 * 65536 * 4,
            stripe_len: 65536,
            ty: BG_DATA,
            profile,
            sub_stripes: sub,
            stripes: (0..n)
                .map(|i| Stripe {
                    devid: i as u64 + 1,
                    offset: 1000 * i as u64,
                })
                .collect(),
        }
    }

    #[test]
    fn raid0_and_raid10_deal_pieces_round_robin() {
        let c = chunk(Profile::Raid0, 3, 1);
        let at = |o: u64| c.place((1 << 20) + o);
        assert_eq!(
            at(10).0,
            Place::Copies {
                slots: vec![0],
                rel: 10
            }
        );
        assert_eq!(at(10).1, 65536 - 10);
        assert_eq!(
            at(65536 * 4 + 5).0,
            Place::Copies {
                slots: vec![1],
                rel: 65536 + 5
            }
        );
        let c = chunk(Profile::Raid10, 4, 2);
        let at = |o: u64| c.place((1 << 20) + o);
        assert_eq!(
            at(65536).0,
            Place::Copies {
                slots: vec![2, 3],
                rel: 0
            }
        );
        assert_eq!(
            at(65536 * 2).0,
            Place::Copies {
                slots: vec![0, 1],
                rel: 65536
            }
        );
    }

    #[test]
    fn raid5_rotates_parity() {
        let c = chunk(Profile::Raid5, 3, 1);
        // Row 0: D0 on 0, D1 on 1, P on 2. Row 1: D0 on 1, D1 on 2, P on 0.
        let (p, _) = c.place((1 << 20) + 65536);
        assert_eq!(
            p,
            Place::Parity {
                slots: vec![0, 1, 2],
                nd: 2,
                data: 1,
                rel: 0
            }
        );
        let (p, _) = c.place((1 << 20) + 2 * 65536 + 7);
        assert_eq!(
            p,
            Place::Parity {
                slots: vec![1, 2, 0],
                nd: 2,
                data: 0,
                rel: 65536 + 7
            }
        );
    }
}
