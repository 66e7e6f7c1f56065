//! The devices of one filesystem and reads of its logical address space:
//! each read goes to the chunk that holds it, then to a copy (mirrored
//! profiles), a stripe (RAID0/10) or a data piece (RAID5/6), rebuilt
//! from parity when its device is missing or its bytes fail their check.

use std::collections::BTreeMap;

use flr_fs::FsError;
use flr_io::{Bounce, Source};

use crate::chunk::{Chunk, Place};
use crate::sb::Superblock;
use flr_raid6 as raid6;

/// The devices present, by devid, and the chunk map.
pub(crate) struct Volume {
    pub(crate) devices: BTreeMap<u64, Source>,
    pub(crate) chunks: BTreeMap<u64, Chunk>,
}

/// Chunks one filesystem may have (a 16 TiB filesystem has about 16,000
/// data chunks of 1 GiB).
pub(crate) const MAX_CHUNKS: usize = 1 << 20;

pub(crate) fn logical_err(logical: u64, what: impl std::fmt::Display) -> FsError {
    FsError::Corrupt {
        fs: "btrfs",
        offset: None,
        what: format!("logical address {logical:#x}: {what}"),
    }
}

impl Volume {
    /// A volume that knows only the system chunks of `sb`'s array.
    pub(crate) fn bootstrap(
        sb: &Superblock,
        devices: BTreeMap<u64, Source>,
    ) -> Result<Volume, FsError> {
        let mut v = Volume {
            devices,
            chunks: BTreeMap::new(),
        };
        let a = &sb.sys_chunk_array;
        let mut pos = 0usize;
        while pos < a.len() {
            let key =
                crate::tree::Key::parse(a.get(pos..).unwrap_or_default()).ok_or_else(|| {
                    FsError::Corrupt {
                        fs: "btrfs",
                        offset: Some(sb.at + 0x32b + pos as u64),
                        what: "system chunk array: truncated key".into(),
                    }
                })?;
            pos += crate::tree::KEY_SIZE;
            let at = sb.at + 0x32b + pos as u64;
            let bad = |what: String| FsError::Corrupt {
                fs: "btrfs",
                offset: Some(at),
                what: format!("system chunk array: {what}"),
            };
            if key.ty != crate::tree::CHUNK_ITEM {
                return Err(bad(format!("item of type {} is not a chunk", key.ty)));
            }
            let (c, used) = Chunk::parse(key.offset, &a[pos..]).map_err(bad)?;
            pos += used;
            v.insert(c).map_err(bad)?;
        }
        Ok(v)
    }

    /// Adds a chunk; overlapping chunks are corrupt (an identical one, as
    /// the chunk tree repeats the system array's, replaces it).
    pub(crate) fn insert(&mut self, c: Chunk) -> Result<(), String> {
        if let Some(old) = self.chunks.get(&c.logical) {
            if old.length == c.length {
                self.chunks.insert(c.logical, c);
                return Ok(());
            }
        }
        let before = self.chunks.range(..c.logical).next_back();
        let after = self.chunks.range(c.logical..).next();
        let clash = before.is_some_and(|(_, b)| b.end() > c.logical)
            || after.is_some_and(|(&a, _)| a < c.end());
        if clash {
            return Err(format!(
                "chunk at logical {:#x} ({} bytes) overlaps another",
                c.logical, c.length
            ));
        }
        if self.chunks.len() >= MAX_CHUNKS {
            return Err(format!("more than {MAX_CHUNKS} chunks"));
        }
        self.chunks.insert(c.logical, c);
        Ok(())
    }

    pub(crate) fn chunk(&self, logical: u64) -> Result<&Chunk, FsError> {
        self.chunks
            .range(..=logical)
            .next_back()
            .map(|(_, c)| c)
            .filter(|c| logical < c.end())
            .ok_or_else(|| logical_err(logical, "no chunk maps this address"))
    }

    /// How many different ways a read at `logical` can be tried (present
    /// copies; for RAID5/6 the direct read and one or two rebuilds).
    pub(crate) fn attempts(&self, logical: u64) -> usize {
        match self.chunk(logical) {
            Ok(c) => match c.place(logical).0 {
                Place::Copies { slots, .. } => slots
                    .iter()
                    .filter(|&&s| self.devices.contains_key(&c.stripes[s].devid))
                    .count()
                    .max(1),
                Place::Parity { slots, nd, .. } => 1 + slots.len() - nd,
            },
            Err(_) => 1,
        }
    }

    /// Fills `buf` from logical address `logical`, using way `attempt` of
    /// each piece (see [`Volume::attempts`]); a piece with fewer ways uses
    /// its last one.
    pub(crate) fn read(
        &self,
        logical: u64,
        buf: &mut [u8],
        attempt: usize,
        bounce: &mut Bounce,
    ) -> Result<(), FsError> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = logical
                .checked_add(done as u64)
                .ok_or_else(|| logical_err(logical, "read past the end of the address space"))?;
            let c = self.chunk(at)?;
            let (place, run) = c.place(at);
            let take = usize::try_from(run).map_or(buf.len() - done, |r| r.min(buf.len() - done));
            let out = &mut buf[done..done + take];
            match place {
                Place::Copies { slots, rel } => {
                    let present: Vec<usize> = slots
                        .iter()
                        .copied()
                        .filter(|&s| self.devices.contains_key(&c.stripes[s].devid))
                        .collect();
                    let Some(&slot) = present.get(attempt).or(present.last()) else {
                        return Err(self.missing(c, at, &slots));
                    };
                    self.read_slot(c, slot, rel, out, bounce)?;
                }
                Place::Parity {
                    slots,
                    nd,
                    data,
                    rel,
                } => {
                    let missing: Vec<bool> = slots
                        .iter()
                        .map(|&s| !self.devices.contains_key(&c.stripes[s].devid))
                        .collect();
                    let mut done_it = false;
                    if attempt == 0 && !missing[data] {
                        self.read_slot(c, slots[data], rel, out, bounce)?;
                        done_it = true;
                    }
                    if !done_it {
                        // Attempt 1 (or a missing data device): rebuild with
                        // P when it can; attempt 2: without P (Q only).
                        let mut avoid = missing.clone();
                        avoid[data] = true;
                        if attempt >= 2 && slots.len() > nd + 1 {
                            avoid[nd] = true;
                        }
                        self.rebuild(c, &slots, nd, data, rel, &avoid, out, at)?;
                    }
                }
            }
            done += take;
        }
        Ok(())
    }

    fn read_slot(
        &self,
        c: &Chunk,
        slot: usize,
        rel: u64,
        out: &mut [u8],
        bounce: &mut Bounce,
    ) -> Result<(), FsError> {
        let s = c.stripes[slot];
        let dev = self
            .devices
            .get(&s.devid)
            .ok_or_else(|| logical_err(c.logical, format!("device {} is missing", s.devid)))?;
        let phys = s.offset.checked_add(rel).ok_or_else(|| {
            logical_err(
                c.logical,
                "stripe offset overflows the device address space",
            )
        })?;
        bounce.read(phys, out, |o, b| dev.read_exact_at(o, b))?;
        Ok(())
    }

    fn missing(&self, c: &Chunk, at: u64, slots: &[usize]) -> FsError {
        let mut ids: Vec<String> = Vec::new();
        for &s in slots {
            let id = c.stripes[s].devid.to_string();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        logical_err(
            at,
            format!(
                "every device holding this {} {} chunk is missing (devid {})",
                c.profile.name(),
                c.kind_name(),
                ids.join(", ")
            ),
        )
    }

    /// Rebuilds data piece `data` of a RAID5/6 row from the other pieces
    /// and parity, never reading the slots marked in `avoid`.
    #[allow(clippy::too_many_arguments)]
    fn rebuild(
        &self,
        c: &Chunk,
        slots: &[usize],
        nd: usize,
        data: usize,
        rel: u64,
        avoid: &[bool],
        out: &mut [u8],
        at: u64,
    ) -> Result<(), FsError> {
        let has_q = slots.len() > nd + 1;
        let lost: Vec<usize> = (0..nd).filter(|&i| i != data && avoid[i]).collect();
        let p_ok = !avoid[nd];
        let q_ok = has_q && !avoid[nd + 1];
        let mut bounce = Bounce::default();
        let mut read = |i: usize, b: &mut [u8]| self.read_slot(c, slots[i], rel, b, &mut bounce);
        let mut tmp = vec![0u8; out.len()];
        match (lost.as_slice(), p_ok, q_ok) {
            ([], true, _) => {
                read(nd, out)?;
                for i in (0..nd).filter(|&i| i != data) {
                    read(i, &mut tmp)?;
                    raid6::mul_xor_into(out, &tmp, 1);
                }
            }
            ([], false, true) => {
                // Dx = (Q + sum g^i Di) / g^x
                read(nd + 1, out)?;
                for i in (0..nd).filter(|&i| i != data) {
                    read(i, &mut tmp)?;
                    raid6::mul_xor_into(out, &tmp, raid6::pow_g(i));
                }
                raid6::scale(out, raid6::inv(raid6::pow_g(data)));
            }
            (&[y], true, true) => {
                // Pxy = P + sum Di, Qxy = Q + sum g^i Di over the others;
                // Dx = (Qxy + g^y Pxy) / (g^x + g^y).
                let mut pxy = vec![0u8; out.len()];
                read(nd, &mut pxy)?;
                read(nd + 1, out)?;
                for i in (0..nd).filter(|&i| i != data && i != y) {
                    read(i, &mut tmp)?;
                    raid6::mul_xor_into(&mut pxy, &tmp, 1);
                    raid6::mul_xor_into(out, &tmp, raid6::pow_g(i));
                }
                raid6::mul_xor_into(out, &pxy, raid6::pow_g(y));
                raid6::scale(out, raid6::inv(raid6::pow_g(data) ^ raid6::pow_g(y)));
            }
            _ => {
                let gone = avoid.iter().filter(|&&a| a).count();
                return Err(logical_err(
                    at,
                    format!(
                        "{} data cannot be rebuilt: {gone} of its {} stripes are missing or bad",
                        c.profile.name(),
                        slots.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Reads `buf` at `logical`, trying every way until `good` accepts the
    /// bytes; `what` names the structure in the error.
    pub(crate) fn read_checked(
        &self,
        logical: u64,
        buf: &mut [u8],
        what: &str,
        mut good: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), FsError> {
        let mut bounce = Bounce::default();
        let mut last = None;
        for attempt in 0..self.attempts(logical) {
            match self.read(logical, buf, attempt, &mut bounce) {
                Ok(()) => match good(buf) {
                    Ok(()) => return Ok(()),
                    Err(e) => last = Some(logical_err(logical, format!("{what}: {e}"))),
                },
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| logical_err(logical, format!("{what}: no copy to read"))))
    }
}
