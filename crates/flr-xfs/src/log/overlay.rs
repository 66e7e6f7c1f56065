//! The replayed view: the volume with the blocks the log rewrote.

use std::collections::BTreeMap;

use flr_io::{IoError, ReadAt, Source};

use super::{Res, Stop, BB, BBU, MAX_OVERLAY_BYTES};

type Blocks = BTreeMap<u64, Box<[u8; BBU]>>;

/// Copies the blocks of `blocks` that overlap `[off, off + buf.len())` into
/// `buf`.
fn patch(blocks: &Blocks, off: u64, buf: &mut [u8]) {
    if buf.is_empty() || blocks.is_empty() {
        return;
    }
    let end = off.saturating_add(buf.len() as u64);
    for (&k, b) in blocks.range(off / BB..end.div_ceil(BB)) {
        let bstart = k * BB;
        let from = bstart.max(off);
        let to = (bstart + BB).min(end);
        if from >= to {
            continue;
        }
        // OK to cast: offsets inside one 512-byte block and inside `buf`.
        let src = &b[(from - bstart) as usize..(to - bstart) as usize];
        buf[(from - off) as usize..(to - off) as usize].copy_from_slice(src);
    }
}

/// The blocks changed so far during a replay, over the volume.
pub(crate) struct Patch<'a> {
    src: &'a dyn ReadAt,
    blocks: Blocks,
}

impl<'a> Patch<'a> {
    pub(crate) fn new(src: &'a dyn ReadAt) -> Patch<'a> {
        Patch {
            src,
            blocks: BTreeMap::new(),
        }
    }

    /// Reads through the changes.
    pub(crate) fn read(&self, off: u64, buf: &mut [u8]) -> Res<()> {
        self.src.read_exact_at(off, buf)?;
        patch(&self.blocks, off, buf);
        Ok(())
    }

    /// Writes `data` at `off` (in memory).
    pub(crate) fn write(&mut self, off: u64, data: &[u8]) -> Res<()> {
        let end = off
            .checked_add(data.len() as u64)
            .filter(|&e| e <= self.src.len())
            .ok_or_else(|| Stop::damaged(off, "a logged change lies past the end of the volume"))?;
        let mut k = off / BB;
        while k * BB < end {
            let bstart = k * BB;
            if !self.blocks.contains_key(&k) {
                if (self.blocks.len() as u64 + 1) * BB > MAX_OVERLAY_BYTES {
                    return Err(Stop::too_large(format!(
                        "the replay changes more than {} MiB of metadata",
                        MAX_OVERLAY_BYTES >> 20
                    )));
                }
                let mut b = Box::new([0u8; BBU]);
                let n = (self.src.len() - bstart).min(BB) as usize;
                self.src.read_exact_at(bstart, &mut b[..n])?;
                self.blocks.insert(k, b);
            }
            let b = self.blocks.get_mut(&k).expect("OK: inserted above");
            let from = bstart.max(off);
            let to = (bstart + BB).min(end);
            // OK to cast: offsets inside one block and inside `data`.
            b[(from - bstart) as usize..(to - bstart) as usize]
                .copy_from_slice(&data[(from - off) as usize..(to - off) as usize]);
            k += 1;
        }
        Ok(())
    }

    pub(crate) fn finish(self, inner: Source) -> Overlay {
        Overlay {
            inner,
            blocks: self.blocks,
        }
    }
}

/// The volume as the kernel would see it after log recovery: reads return
/// the replayed blocks where the log held newer metadata, the volume's
/// bytes elsewhere. Nothing is written anywhere.
pub(crate) struct Overlay {
    inner: Source,
    blocks: Blocks,
}

impl Overlay {
    /// Bytes held in memory for replayed blocks.
    pub(crate) fn bytes(&self) -> u64 {
        self.blocks.len() as u64 * BB
    }
}

impl ReadAt for Overlay {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.inner.read_exact_at(offset, buf)?;
        patch(&self.blocks, offset, buf);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn layer(&self) -> &str {
        self.inner.layer()
    }

    fn changed(&self, offset: u64, len: u64) -> flr_io::Change {
        // A replayed block comes from this volume's log, not from the
        // bytes below: whether the other side replays the same is unknown.
        let end = offset.saturating_add(len);
        if self
            .blocks
            .range(offset / BB..end.div_ceil(BB))
            .next()
            .is_some()
        {
            return self.inner.changed(offset, len).and(flr_io::Change::Unknown);
        }
        self.inner.changed(offset, len)
    }

    fn is_known_zero(&self, offset: u64, len: u64) -> bool {
        let end = offset.saturating_add(len);
        self.blocks
            .range(offset / BB..end.div_ceil(BB))
            .next()
            .is_none()
            && self.inner.is_known_zero(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flr_io::MemSource;
    use std::sync::Arc;

    #[test]
    fn writes_show_through_reads_at_any_alignment() {
        let base: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
        let src: Source = Arc::new(MemSource::new(base.clone()));
        let mut p = Patch::new(src.as_ref());
        p.write(500, &[0xaa; 30]).unwrap();
        p.write(2048, &[0xbb; 512]).unwrap();
        let o = p.finish(src.clone());
        let mut want = base.clone();
        want[500..530].fill(0xaa);
        want[2048..2560].fill(0xbb);
        for (off, len) in [
            (0u64, 4096usize),
            (499, 3),
            (529, 2),
            (2047, 514),
            (3000, 10),
        ] {
            let mut b = vec![0u8; len];
            o.read_exact_at(off, &mut b).unwrap();
            assert_eq!(b, want[off as usize..off as usize + len], "{off} {len}");
        }
        assert_eq!(o.bytes(), 3 * 512);
        let mut p = Patch::new(src.as_ref());
        assert!(p.write(4090, &[1; 10]).is_err());
    }
}
