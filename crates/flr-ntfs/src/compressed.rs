//! Reading NTFS-compressed streams.
//!
//! A compressed stream is cut into compression units of
//! `cluster size << compression_unit` bytes (16 clusters as Windows makes
//! them). Each unit is stored in one of three ways, told apart by how many
//! of its clusters the run list allocates:
//!
//! * all of them: stored uncompressed;
//! * none (sparse): all zeros;
//! * some, the rest sparse: the allocated clusters hold LZNT1 data that
//!   decompresses to the unit (zeros past the end of the decoded data).

use flr_fs::FsError;
use flr_io::{ReadAt, Source};

use crate::corrupt;
use crate::data::Run;
use crate::lznt1;

/// Largest compression unit accepted (Windows uses 64 KiB with 4 KiB clusters).
pub(crate) const MAX_UNIT: u64 = 4 << 20;

/// The last decoded unit, kept for sequential reads.
#[derive(Debug, Default)]
pub(crate) struct UnitCache {
    index: Option<u64>,
    bytes: Vec<u8>,
}

/// Fills `out` with unit `index` of the stream described by `runs`.
fn decode_unit(
    src: &Source,
    runs: &[Run],
    unit: u64,
    index: u64,
    out: &mut Vec<u8>,
) -> Result<(), FsError> {
    let ulen = usize::try_from(unit).map_err(|_| corrupt(0, "compression unit too large"))?;
    let start = index
        .checked_mul(unit)
        .ok_or_else(|| corrupt(0, "compressed stream offset overflows"))?;
    let end = start.saturating_add(unit);
    // The allocated pieces of this unit, in stream order.
    let mut pieces: Vec<(u64, u64)> = Vec::new();
    let mut allocated = 0u64;
    let first = runs.partition_point(|r| r.vstart + r.len <= start);
    for r in runs[first..].iter().take_while(|r| r.vstart < end) {
        let s = r.vstart.max(start);
        let e = (r.vstart + r.len).min(end);
        if let Some(p) = r.phys {
            pieces.push((p + (s - r.vstart), e - s));
            allocated += e - s;
        }
    }
    out.clear();
    if allocated == 0 {
        out.resize(ulen, 0);
        return Ok(());
    }
    let mut stored = Vec::with_capacity(usize::try_from(allocated).unwrap_or(0));
    for (p, len) in &pieces {
        let at = stored.len();
        stored.resize(at + usize::try_from(*len).unwrap_or(0), 0);
        src.read_exact_at(*p, &mut stored[at..])?;
    }
    if allocated == unit {
        *out = stored;
        return Ok(());
    }
    lznt1::decompress(&stored, out, ulen).map_err(|e| {
        corrupt(
            pieces.first().map_or(0, |p| p.0),
            format!("compression unit {index} of a compressed file: {e}"),
        )
    })?;
    out.resize(ulen, 0);
    Ok(())
}

/// Reads `buf.len()` bytes at `offset` (the caller has clipped the read to
/// the stream size); bytes at or past `init` read as zeros.
pub(crate) fn read(
    src: &Source,
    runs: &[Run],
    unit: u64,
    init: u64,
    cache: &mut UnitCache,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), FsError> {
    let mut pos = offset;
    let mut done = 0usize;
    while done < buf.len() {
        let left = buf.len() - done;
        if pos >= init {
            buf[done..].fill(0);
            return Ok(());
        }
        let index = pos / unit;
        if cache.index != Some(index) {
            cache.index = None;
            decode_unit(src, runs, unit, index, &mut cache.bytes)?;
            cache.index = Some(index);
        }
        let within = usize::try_from(pos - index * unit).unwrap_or(0);
        let avail_init = usize::try_from(init - pos).unwrap_or(usize::MAX);
        let n = left.min(cache.bytes.len() - within).min(avail_init);
        buf[done..done + n].copy_from_slice(&cache.bytes[within..within + n]);
        done += n;
        pos += n as u64;
    }
    Ok(())
}
