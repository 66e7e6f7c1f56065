//! Reads of filesystem bytes, seen through the journal: a block that a
//! committed, not yet checkpointed transaction rewrote is read from its
//! copy in the journal.

use std::collections::BTreeMap;

use flr_fs::FsError;
use flr_io::Source;

use crate::corrupt;

/// Where the newest copy of a journaled block lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JTarget {
    /// Absolute filesystem block holding the copy (inside the journal).
    pub(crate) pblk: u64,
    /// The copy's first four bytes were zeroed because they looked like the
    /// journal magic; they must be restored.
    pub(crate) escaped: bool,
}

pub(crate) const JBD2_MAGIC: u32 = 0xC03B_3998;

pub(crate) struct Vol {
    pub(crate) src: Source,
    pub(crate) bs: u64,
    pub(crate) jmap: BTreeMap<u64, JTarget>,
}

impl Vol {
    /// Reads `buf.len()` filesystem bytes at byte offset `off`.
    pub(crate) fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), FsError> {
        if buf.is_empty() {
            return Ok(());
        }
        if self.jmap.is_empty() {
            return Ok(self.src.read_exact_at(off, buf)?);
        }
        let end = off
            .checked_add(buf.len() as u64)
            .ok_or_else(|| corrupt(off, "read range overflows"))?;
        let first = off / self.bs;
        let last = (end - 1) / self.bs;
        let mut pos = off;
        let mut done = 0usize;
        for (&blk, &t) in self.jmap.range(first..=last) {
            // blk <= last < end / bs, so this cannot overflow.
            let bstart = blk * self.bs;
            let seg = bstart.max(off);
            if seg > pos {
                let n = (seg - pos) as usize;
                self.src.read_exact_at(pos, &mut buf[done..done + n])?;
                done += n;
                pos = seg;
            }
            let bend = (bstart + self.bs).min(end);
            let n = (bend - pos) as usize;
            let within = pos - bstart;
            let jpos = t
                .pblk
                .checked_mul(self.bs)
                .and_then(|p| p.checked_add(within))
                .ok_or_else(|| corrupt(off, "journal block out of range"))?;
            let out = &mut buf[done..done + n];
            self.src.read_exact_at(jpos, out)?;
            if t.escaped && within < 4 {
                let magic = JBD2_MAGIC.to_be_bytes();
                for (i, b) in out.iter_mut().enumerate().take(4 - within as usize) {
                    *b = magic[within as usize + i];
                }
            }
            done += n;
            pos = bend;
        }
        if pos < end {
            self.src.read_exact_at(pos, &mut buf[done..])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn journaled_blocks_are_read_from_the_journal() {
        // 8 blocks of 16 bytes... block size must be the unit, use 1024.
        let bs = 1024u64;
        let mut data = vec![0u8; 8 * 1024];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i / 1024) as u8;
        }
        let mut jmap = BTreeMap::new();
        jmap.insert(
            2,
            JTarget {
                pblk: 6,
                escaped: false,
            },
        );
        jmap.insert(
            3,
            JTarget {
                pblk: 7,
                escaped: true,
            },
        );
        let v = Vol {
            src: Arc::new(flr_io::MemSource::new(data)),
            bs,
            jmap,
        };
        let mut buf = vec![0u8; 3 * 1024];
        v.read(1024 + 512, &mut buf).unwrap();
        assert!(buf[..512].iter().all(|&b| b == 1));
        assert!(buf[512..1536].iter().all(|&b| b == 6));
        assert_eq!(&buf[1536..1540], &JBD2_MAGIC.to_be_bytes());
        assert!(buf[1540..2560].iter().all(|&b| b == 7));
        assert!(buf[2560..].iter().all(|&b| b == 4));
        let mut two = [0u8; 2];
        v.read(3 * 1024 + 2, &mut two).unwrap();
        assert_eq!(two, [0x39, 0x98]);
    }
}
