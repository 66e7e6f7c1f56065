//! Thin provisioning (device-mapper `thin-pool`), read-only: the pool's
//! metadata device maps each thin device's blocks onto its data device;
//! blocks never written read as zeros.
//!
//! Source: the kernel's `Documentation/admin-guide/device-mapper/thin-provisioning.rst`
//! and `drivers/md/dm-thin-metadata.c`, `persistent-data/dm-btree*.c`, read
//! as documentation of the layout (all little-endian, 4 KiB metadata blocks):
//!
//! ```text
//! superblock (block 0)
//!   0 csum u32   4 flags u32   8 blocknr u64   16 uuid[16]   32 magic u64 = 27022010
//!  40 version u32   44 time u32   48 transaction id u64   56 metadata snapshot u64
//!  64 data space map root [128]   192 metadata space map root [128]
//! 320 data mapping root u64   328 device details root u64
//! 336 data block size u32 (sectors)   340 metadata block size u32 (sectors)
//! 344 metadata blocks u64   352 compat u32   356 compat ro u32   360 incompat u32
//!
//! B-tree node
//!   0 csum u32   4 flags u32 (1 internal, 2 leaf)   8 blocknr u64
//!  16 entries u32   20 max entries u32   24 value size u32   28 padding
//!  32 keys u64[max entries], then values [max entries × value size]
//!
//! data mapping: a two-level tree. Top: thin device id → root of that
//! device's tree. Bottom: virtual block → (data block << 24 | time).
//! device details: device id → mapped blocks u64, transaction u64,
//! creation time u32, snapshot time u32.
//! ```
//!
//! Checksums are CRC-32C of the block after its checksum field (seed
//! all ones, no final inversion), xor'd with a constant per block kind
//! (160774 for the superblock, 121107 for B-tree nodes). Space maps are not
//! needed to read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use flr_io::{check_range, Change, IoError, ReadAt, Source};

use crate::LvmError;

const BLOCK: usize = 4096;
const MAGIC: u64 = 27_022_010;
const SUPERBLOCK_XOR: u32 = 160_774;
const NODE_XOR: u32 = 121_107;
const INTERNAL: u32 = 1;
const LEAF: u32 = 2;
/// Deeper than any real tree (a 4 KiB node holds over 100 keys).
const MAX_DEPTH: usize = 16;
/// Metadata blocks kept in memory.
const CACHE_BLOCKS: usize = 1024;
/// Nodes one lookup may visit besides one per entry it returns (a hostile
/// tree can point many children at the same subtree).
const VISIT_BUDGET: usize = 4096;

/// CRC-32C (Castagnoli). The kernel's `crc32c(~0, ..)` that dm checksums
/// use starts from all ones like the standard one but skips its final
/// inversion: the standard value, inverted.
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

fn block_csum(block: &[u8], xor: u32) -> u32 {
    !CRC32C.checksum(&block[4..]) ^ xor
}

fn le32(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from(le32(b, o)) | (u64::from(le32(b, o + 4)) << 32)
}

/// A thin device the pool's metadata lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinDevice {
    /// Its id (LVM's `device_id`).
    pub id: u64,
    /// Blocks mapped (from the device details).
    pub mapped_blocks: u64,
    /// The pool transaction that last changed it.
    pub transaction: u64,
}

/// An opened thin pool: its metadata and data devices.
pub struct ThinPool {
    layer: String,
    meta: Source,
    data: Source,
    block_bytes: u64,
    mapping_root: u64,
    details_root: u64,
    transaction: u64,
    cache: Mutex<HashMap<u64, Arc<Vec<u8>>>>,
}

impl std::fmt::Debug for ThinPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThinPool")
            .field("layer", &self.layer)
            .field("block_bytes", &self.block_bytes)
            .field("transaction", &self.transaction)
            .finish_non_exhaustive()
    }
}

fn corrupt(offset: u64, detail: impl Into<String>) -> LvmError {
    LvmError::corrupt("thin pool metadata", offset, detail)
}

/// One B-tree node, checked.
struct Node {
    leaf: bool,
    keys: Vec<u64>,
    /// Raw values, `value_size` bytes each.
    values: Vec<u8>,
    value_size: usize,
}

impl Node {
    fn value(&self, i: usize) -> &[u8] {
        &self.values[i * self.value_size..(i + 1) * self.value_size]
    }
}

impl ThinPool {
    /// Opens a pool from its metadata and data devices (`layer` names it in
    /// errors, e.g. `thin pool vg/pool`).
    pub fn open(meta: Source, data: Source, layer: &str) -> Result<ThinPool, LvmError> {
        let mut sb = vec![0u8; BLOCK];
        if meta.len() < BLOCK as u64 {
            return Err(corrupt(0, "metadata device smaller than one block"));
        }
        meta.read_exact_at(0, &mut sb)?;
        if le64(&sb, 32) != MAGIC {
            return Err(corrupt(0, "no thin-pool superblock magic"));
        }
        let (want, got) = (le32(&sb, 0), block_csum(&sb, SUPERBLOCK_XOR));
        if want != got {
            return Err(corrupt(
                0,
                format!(
                    "superblock checksum mismatch (recorded {want:#010x}, computed {got:#010x})"
                ),
            ));
        }
        if le64(&sb, 8) != 0 {
            return Err(corrupt(0, "the superblock records another block number"));
        }
        let version = le32(&sb, 40);
        if !(1..=2).contains(&version) {
            return Err(corrupt(0, format!("metadata version {version}")));
        }
        if le32(&sb, 360) != 0 {
            return Err(LvmError::NotReadable {
                lv: layer.to_string(),
                reason: format!(
                    "thin pool metadata uses incompatible features {:#x}",
                    le32(&sb, 360)
                ),
            });
        }
        let meta_block = le32(&sb, 340);
        if meta_block != 8 {
            return Err(corrupt(
                0,
                format!("metadata block of {meta_block} sectors (not 4 KiB)"),
            ));
        }
        let data_sectors = u64::from(le32(&sb, 336));
        // dm-thin accepts 64 KiB to 1 GiB in multiples of 64 KiB.
        if !(128..=2 * 1024 * 1024).contains(&data_sectors) || !data_sectors.is_multiple_of(128) {
            return Err(corrupt(0, format!("data block of {data_sectors} sectors")));
        }
        Ok(ThinPool {
            layer: layer.to_string(),
            meta,
            data,
            block_bytes: data_sectors * 512,
            mapping_root: le64(&sb, 320),
            details_root: le64(&sb, 328),
            transaction: le64(&sb, 48),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The pool's data block size in bytes.
    pub fn block_bytes(&self) -> u64 {
        self.block_bytes
    }

    /// The pool's transaction id (LVM's pool segment records the same).
    pub fn transaction(&self) -> u64 {
        self.transaction
    }

    fn node(&self, block: u64) -> Result<Node, LvmError> {
        let at = block
            .checked_mul(BLOCK as u64)
            .filter(|a| {
                a.checked_add(BLOCK as u64)
                    .is_some_and(|e| e <= self.meta.len())
            })
            .ok_or_else(|| {
                corrupt(
                    0,
                    format!("B-tree node block {block} lies past the metadata device"),
                )
            })?;
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&block)
            .cloned();
        let b = match cached {
            Some(b) => b,
            None => {
                let mut b = vec![0u8; BLOCK];
                self.meta.read_exact_at(at, &mut b)?;
                let (want, got) = (le32(&b, 0), block_csum(&b, NODE_XOR));
                if want != got {
                    return Err(corrupt(at, "B-tree node checksum mismatch"));
                }
                if le64(&b, 8) != block {
                    return Err(corrupt(at, "B-tree node records another block number"));
                }
                let b = Arc::new(b);
                let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                if c.len() >= CACHE_BLOCKS {
                    c.clear();
                }
                c.insert(block, b.clone());
                b
            }
        };
        let flags = le32(&b, 4);
        let n = le32(&b, 16) as usize;
        let max = le32(&b, 20) as usize;
        let vs = le32(&b, 24) as usize;
        let leaf = match flags {
            INTERNAL => false,
            LEAF => true,
            f => return Err(corrupt(at, format!("B-tree node flags {f:#x}"))),
        };
        let fits = vs > 0
            && vs <= 256
            && n <= max
            && max.checked_mul(8 + vs).is_some_and(|s| s + 32 <= BLOCK);
        if !fits || (!leaf && vs != 8) {
            return Err(corrupt(
                at,
                format!("B-tree node with {n} of {max} entries of {vs}-byte values"),
            ));
        }
        let keys: Vec<u64> = (0..n).map(|i| le64(&b, 32 + 8 * i)).collect();
        if keys.windows(2).any(|w| w[0] >= w[1]) {
            return Err(corrupt(at, "B-tree node keys out of order"));
        }
        let v0 = 32 + 8 * max;
        Ok(Node {
            leaf,
            keys,
            values: b[v0..v0 + n * vs].to_vec(),
            value_size: vs,
        })
    }

    /// The leaf entries with keys in `lo..hi` of the tree at `root`, in key
    /// order; stops after `limit` entries.
    fn collect(
        &self,
        root: u64,
        lo: u64,
        hi: u64,
        limit: usize,
        value_size: usize,
        out: &mut Vec<(u64, Vec<u8>)>,
    ) -> Result<(), LvmError> {
        let mut budget = VISIT_BUDGET.saturating_add(limit.saturating_mul(2));
        self.walk(root, lo, hi, limit, value_size, 0, &mut budget, out)
    }

    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        block: u64,
        lo: u64,
        hi: u64,
        limit: usize,
        value_size: usize,
        depth: usize,
        budget: &mut usize,
        out: &mut Vec<(u64, Vec<u8>)>,
    ) -> Result<(), LvmError> {
        if depth > MAX_DEPTH {
            return Err(corrupt(
                block.saturating_mul(BLOCK as u64),
                "B-tree deeper than any real one (a loop?)",
            ));
        }
        *budget = budget.checked_sub(1).ok_or_else(|| {
            corrupt(
                block.saturating_mul(BLOCK as u64),
                "B-tree has more nodes than its entries need (shared subtrees?)",
            )
        })?;
        let node = self.node(block)?;
        if node.leaf {
            if node.value_size != value_size {
                return Err(corrupt(
                    block * BLOCK as u64,
                    format!(
                        "leaf values of {} bytes, {value_size} expected",
                        node.value_size
                    ),
                ));
            }
            for (i, &k) in node.keys.iter().enumerate() {
                if out.len() >= limit {
                    break;
                }
                if k >= lo && k < hi {
                    out.push((k, node.value(i).to_vec()));
                }
            }
            return Ok(());
        }
        for i in 0..node.keys.len() {
            // Child i holds the keys from keys[i] up to keys[i + 1].
            let start = if i == 0 { 0 } else { node.keys[i] };
            let end = node.keys.get(i + 1).copied().unwrap_or(u64::MAX);
            if end <= lo || start >= hi {
                continue;
            }
            if out.len() >= limit {
                break;
            }
            self.walk(
                le64(node.value(i), 0),
                lo,
                hi,
                limit,
                value_size,
                depth + 1,
                budget,
                out,
            )?;
        }
        Ok(())
    }

    /// Every thin device the pool lists, from its device details.
    pub fn devices(&self) -> Result<Vec<ThinDevice>, LvmError> {
        let mut out = Vec::new();
        self.collect(self.details_root, 0, u64::MAX, 1 << 16, 24, &mut out)?;
        Ok(out
            .into_iter()
            .map(|(id, v)| ThinDevice {
                id,
                mapped_blocks: le64(&v, 0),
                transaction: le64(&v, 8),
            })
            .collect())
    }

    /// The root of thin device `id`'s block tree.
    fn device_root(&self, id: u64) -> Result<u64, LvmError> {
        let mut out = Vec::new();
        self.collect(self.mapping_root, id, id.saturating_add(1), 1, 8, &mut out)?;
        match out.first() {
            Some((_, v)) => Ok(le64(v, 0)),
            None => Err(LvmError::NotReadable {
                lv: self.layer.clone(),
                reason: format!("thin device {id} is not in the pool's metadata"),
            }),
        }
    }

    /// Thin device `id` as `size` bytes (the pool's metadata records no size:
    /// LVM's metadata gives it).
    pub fn open_device(
        self: &Arc<Self>,
        id: u64,
        size: u64,
        layer: &str,
    ) -> Result<Source, LvmError> {
        let root = self.device_root(id)?;
        // Walk the device's tree once now, so that a broken root shows at open.
        let mut probe = Vec::new();
        self.collect(root, 0, 1, 1, 8, &mut probe)?;
        Ok(Arc::new(ThinVolume {
            layer: layer.to_string(),
            pool: self.clone(),
            root,
            size,
            base: OnceLock::new(),
        }))
    }

    /// The mapped (virtual block, data block) pairs in `first..end` of the
    /// device whose block tree is at `root`.
    fn mappings(&self, root: u64, first: u64, end: u64) -> Result<Vec<(u64, u64)>, LvmError> {
        let mut raw = Vec::new();
        let limit = usize::try_from(end.saturating_sub(first)).unwrap_or(usize::MAX);
        self.collect(root, first, end, limit, 8, &mut raw)?;
        Ok(raw
            .into_iter()
            .map(|(k, v)| (k, le64(&v, 0) >> 24))
            .collect())
    }
}

/// A thin device: its virtual blocks looked up in the pool's tree.
struct ThinVolume {
    layer: String,
    pool: Arc<ThinPool>,
    root: u64,
    size: u64,
    /// The same device in the older version of the pool (see
    /// [`ReadAt::set_base`]): its pool and block-tree root.
    base: OnceLock<(Arc<ThinPool>, u64)>,
}

/// Blocks whose mappings [`ThinVolume::changed`] looks up at once.
const CHANGED_WINDOW: u64 = 4096;

impl ThinVolume {
    /// The mapped (virtual block, data block) pairs in `first..end`.
    fn mappings(&self, first: u64, end: u64) -> Result<Vec<(u64, u64)>, IoError> {
        self.pool.mappings(self.root, first, end).map_err(|e| {
            IoError::corrupt(
                self.layer.clone(),
                first.saturating_mul(self.pool.block_bytes),
                e,
            )
        })
    }

    /// [`ReadAt::changed`] for `offset..end` (inside the device), against
    /// the older device `old` (its pool and root): a block mapped to the
    /// same data block in both answers as the pool's data device does for
    /// it; unmapped in both, unchanged; anything else (newly mapped,
    /// unmapped, remapped by a copy-on-write or a discard) changed.
    fn changed_against(&self, old: &(Arc<ThinPool>, u64), offset: u64, end: u64) -> Change {
        let (opool, oroot) = old;
        let bs = self.pool.block_bytes;
        if opool.block_bytes != bs || end <= offset {
            return Change::Unknown;
        }
        let (first, last) = (offset / bs, (end - 1) / bs + 1);
        let mut answer = Change::Unchanged;
        let mut w = first;
        while w < last {
            let we = last.min(w.saturating_add(CHANGED_WINDOW));
            let (Ok(new), Ok(old)) = (self.mappings(w, we), opool.mappings(*oroot, w, we)) else {
                return Change::Unknown;
            };
            let (mut i, mut j) = (0, 0);
            for vb in w..we {
                let find = |maps: &[(u64, u64)], k: &mut usize| {
                    while maps.get(*k).is_some_and(|&(b, _)| b < vb) {
                        *k += 1;
                    }
                    maps.get(*k).filter(|&&(b, _)| b == vb).map(|&(_, d)| d)
                };
                let (n, o) = (find(&new, &mut i), find(&old, &mut j));
                let lo = offset.max(vb * bs);
                let hi = end.min((vb + 1) * bs);
                answer = answer.and(match (n, o) {
                    (None, None) => Change::Unchanged,
                    (Some(a), Some(b)) if a == b => {
                        a.checked_mul(bs).map_or(Change::Unknown, |at| {
                            self.pool.data.changed(at + (lo - vb * bs), hi - lo)
                        })
                    }
                    _ => Change::Changed,
                });
                if answer == Change::Changed {
                    return answer;
                }
            }
            w = we;
        }
        answer
    }
}

impl ReadAt for ThinVolume {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        check_range(&self.layer, offset, buf.len(), self.size)?;
        if buf.is_empty() {
            return Ok(());
        }
        let bs = self.pool.block_bytes;
        let total = buf.len() as u64;
        let first = offset / bs;
        let end = (offset + total - 1) / bs + 1;
        let maps = self.mappings(first, end)?;
        let mut done = 0u64;
        let mut mi = 0;
        while done < total {
            let pos = offset + done;
            let vb = pos / bs;
            let within = pos % bs;
            while maps.get(mi).is_some_and(|&(k, _)| k < vb) {
                mi += 1;
            }
            let mut len = (bs - within).min(total - done);
            let a = done as usize;
            match maps.get(mi) {
                Some(&(k, db)) if k == vb => {
                    // Extend over following blocks mapped right after it.
                    let mut j = mi;
                    while done + len < total {
                        match (maps.get(j), maps.get(j + 1)) {
                            (Some(&(k1, d1)), Some(&(k2, d2))) if k2 == k1 + 1 && d2 == d1 + 1 => {
                                len += bs.min(total - done - len);
                                j += 1;
                            }
                            _ => break,
                        }
                    }
                    let at = db
                        .checked_mul(bs)
                        .and_then(|b| b.checked_add(within))
                        .filter(|b| b.checked_add(len).is_some_and(|e| e <= self.pool.data.len()))
                        .ok_or_else(|| {
                            IoError::corrupt(
                                self.layer.clone(),
                                pos,
                                format!("block {vb} maps to data block {db}, past the pool's data device"),
                            )
                        })?;
                    self.pool
                        .data
                        .read_exact_at(at, &mut buf[a..a + len as usize])?;
                }
                _ => {
                    // Unmapped: zeros, up to the next mapped block.
                    let next = maps.get(mi).map_or(u64::MAX, |&(k, _)| k);
                    let stop = next.saturating_mul(bs).min(offset + total);
                    len = stop - pos;
                    buf[a..a + len as usize].fill(0);
                }
            }
            done += len;
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        self.size
    }

    fn layer(&self) -> &str {
        &self.layer
    }

    fn is_known_zero(&self, offset: u64, len: u64) -> bool {
        let Some(end) = offset
            .checked_add(len)
            .filter(|&e| e <= self.size && len > 0)
        else {
            return false;
        };
        let bs = self.pool.block_bytes;
        let mut raw = Vec::new();
        self.pool
            .collect(self.root, offset / bs, (end - 1) / bs + 1, 1, 8, &mut raw)
            .is_ok_and(|()| raw.is_empty())
    }

    fn changed(&self, offset: u64, len: u64) -> Change {
        match (self.base.get(), offset.checked_add(len)) {
            (Some(old), Some(end)) if end <= self.size => self.changed_against(old, offset, end),
            _ => Change::Unknown,
        }
    }

    fn set_base(&self, base: &dyn ReadAt) -> bool {
        let Some(old) = base.as_any().and_then(|a| a.downcast_ref::<ThinVolume>()) else {
            return false;
        };
        self.base.set((old.pool.clone(), old.root)).is_ok()
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(flags: u32, nr: u64, keys: &[u64], values: &[u64]) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK];
        b[4..8].copy_from_slice(&flags.to_le_bytes());
        b[8..16].copy_from_slice(&nr.to_le_bytes());
        let max = 250usize;
        b[16..20].copy_from_slice(&(keys.len() as u32).to_le_bytes());
        b[20..24].copy_from_slice(&(max as u32).to_le_bytes());
        b[24..28].copy_from_slice(&8u32.to_le_bytes());
        for (i, (k, v)) in keys.iter().zip(values).enumerate() {
            b[32 + 8 * i..40 + 8 * i].copy_from_slice(&k.to_le_bytes());
            let at = 32 + 8 * max + 8 * i;
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        let c = block_csum(&b, NODE_XOR);
        b[0..4].copy_from_slice(&c.to_le_bytes());
        b
    }

    #[test]
    fn shared_subtrees_exhaust_the_budget_quickly() {
        // Fifteen internal levels, each node's 200 children all the next
        // level's node: 200^15 paths to one empty leaf.
        let mut meta = vec![0u8; BLOCK];
        meta[32..40].copy_from_slice(&MAGIC.to_le_bytes());
        meta[40..44].copy_from_slice(&2u32.to_le_bytes());
        meta[320..328].copy_from_slice(&1u64.to_le_bytes());
        meta[328..336].copy_from_slice(&1u64.to_le_bytes());
        meta[336..340].copy_from_slice(&128u32.to_le_bytes());
        meta[340..344].copy_from_slice(&8u32.to_le_bytes());
        let c = block_csum(&meta, SUPERBLOCK_XOR);
        meta[0..4].copy_from_slice(&c.to_le_bytes());
        let keys: Vec<u64> = (0..200).map(|k| k * 10).collect();
        for level in 1..=15u64 {
            meta.extend(block(INTERNAL, level, &keys, &[level + 1; 200]));
        }
        let mut leaf = block(LEAF, 16, &[], &[]);
        leaf[20..24].copy_from_slice(&100u32.to_le_bytes());
        leaf[24..28].copy_from_slice(&24u32.to_le_bytes());
        let c = block_csum(&leaf, NODE_XOR);
        leaf[0..4].copy_from_slice(&c.to_le_bytes());
        meta.extend(leaf);
        let src: Source = Arc::new(flr_io::MemSource::new(meta));
        let data: Source = Arc::new(flr_io::Zeros::new(1 << 20));
        let pool = ThinPool::open(src, data, "t").unwrap();
        let t = std::time::Instant::now();
        let e = pool.devices().unwrap_err().to_string();
        assert!(e.contains("more nodes than"), "{e}");
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn crc32c_check_value() {
        assert_eq!(CRC32C.checksum(b"123456789"), 0xe306_9283);
    }
}
