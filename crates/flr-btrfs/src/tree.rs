//! Tree blocks and the B-tree walk shared by every Btrfs tree (root,
//! chunk, filesystem, checksum trees).
//!
//! Source: the Btrfs on-disk format documentation (`struct btrfs_header`,
//! `btrfs_item`, `btrfs_key_ptr`). A tree block is `nodesize` bytes:
//!
//! ```text
//!  header (101 bytes): csum[32] fsid[16] bytenr flags chunk_tree_uuid[16]
//!                      generation owner nritems u32 level u8
//!  leaf:  nritems × item { key (17) offset u32 size u32 }, then item data
//!         at header end + offset, growing down from the block's end
//!  node:  nritems × key_ptr { key (17) blockptr generation }
//! ```
//!
//! Every block is checked before use: checksum, its own address, the
//! filesystem UUID, the level and generation its parent expects, item
//! bounds and key order. A walk yields keys in strictly increasing order
//! and refuses a block that would break it, so a loop between tree blocks
//! is an error, never an endless walk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use flr_fs::FsError;

use crate::bytes::{le32, le64, u8_at};
use crate::csum::CsumType;
use crate::volume::{logical_err, Volume};

pub(crate) const HEADER: usize = 101;
pub(crate) const KEY_SIZE: usize = 17;
const ITEM_SIZE: usize = 25;
const PTR_SIZE: usize = 33;
/// Levels are 0..MAX_LEVEL.
pub(crate) const MAX_LEVEL: u8 = 8;

// Item types.
pub(crate) const INODE_ITEM: u8 = 1;
pub(crate) const INODE_REF: u8 = 12;
pub(crate) const XATTR_ITEM: u8 = 24;
pub(crate) const DIR_ITEM: u8 = 84;
pub(crate) const DIR_INDEX: u8 = 96;
pub(crate) const EXTENT_DATA: u8 = 108;
pub(crate) const EXTENT_CSUM: u8 = 128;
pub(crate) const ROOT_ITEM: u8 = 132;
pub(crate) const ROOT_BACKREF: u8 = 144;
pub(crate) const ROOT_REF: u8 = 156;
pub(crate) const DEV_ITEM: u8 = 216;
pub(crate) const CHUNK_ITEM: u8 = 228;

/// A key: (objectid, type, offset), ordered in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    pub(crate) objectid: u64,
    pub(crate) ty: u8,
    pub(crate) offset: u64,
}

impl Key {
    pub(crate) const fn new(objectid: u64, ty: u8, offset: u64) -> Key {
        Key {
            objectid,
            ty,
            offset,
        }
    }

    pub(crate) fn parse(b: &[u8]) -> Option<Key> {
        if b.len() < KEY_SIZE {
            return None;
        }
        Some(Key {
            objectid: le64(b, 0),
            ty: u8_at(b, 8),
            offset: le64(b, 9),
        })
    }
}

/// Where a tree starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Root {
    pub(crate) bytenr: u64,
    pub(crate) level: u8,
    /// The generation the root block must carry, where known.
    pub(crate) generation: Option<u64>,
}

/// A checked tree block.
pub(crate) struct Node {
    pub(crate) logical: u64,
    pub(crate) level: u8,
    nritems: usize,
    data: Vec<u8>,
}

impl Node {
    pub(crate) fn len(&self) -> usize {
        self.nritems
    }

    pub(crate) fn key(&self, i: usize) -> Key {
        let sz = if self.level == 0 { ITEM_SIZE } else { PTR_SIZE };
        Key::parse(&self.data[HEADER + i * sz..]).unwrap_or(Key::new(0, 0, 0))
    }

    /// The data of leaf item `i` (bounds checked when the block was read).
    pub(crate) fn item(&self, i: usize) -> &[u8] {
        let o = HEADER + i * ITEM_SIZE + KEY_SIZE;
        // OK: u32 fits usize on every platform flr builds for.
        let off = le32(&self.data, o) as usize;
        let size = le32(&self.data, o + 4) as usize;
        &self.data[HEADER + off..HEADER + off + size]
    }

    /// Child pointer `i` of a node: (block address, generation).
    fn ptr(&self, i: usize) -> (u64, u64) {
        let o = HEADER + i * PTR_SIZE + KEY_SIZE;
        (le64(&self.data, o), le64(&self.data, o + 8))
    }

    /// Checks a block read at `logical` and returns it parsed.
    fn check(
        data: Vec<u8>,
        logical: u64,
        csum: CsumType,
        fsid: &[u8; 16],
        level: Option<u8>,
        generation: Option<u64>,
    ) -> Result<Node, String> {
        if !csum.matches(&data[32..], &data[..32]) {
            return Err(format!("{} checksum mismatch", csum.name()));
        }
        if data[0x20..0x30] != fsid[..] {
            return Err("tree block of another filesystem (fsid differs)".into());
        }
        if le64(&data, 0x30) != logical {
            return Err(format!("block records address {:#x}", le64(&data, 0x30)));
        }
        let got_gen = le64(&data, 0x50);
        if let Some(g) = generation.filter(|&g| g != got_gen) {
            return Err(format!(
                "generation {got_gen}, its parent expects {g} (stale copy)"
            ));
        }
        let lvl = u8_at(&data, 0x64);
        if lvl >= MAX_LEVEL || level.is_some_and(|l| l != lvl) {
            return Err(format!("level {lvl}, expected {level:?}"));
        }
        // OK: u32 fits usize.
        let n = le32(&data, 0x60) as usize;
        let space = data.len() - HEADER;
        let node = Node {
            logical,
            level: lvl,
            nritems: n,
            data,
        };
        if lvl == 0 {
            if n.checked_mul(ITEM_SIZE).is_none_or(|b| b > space) {
                return Err(format!("{n} items do not fit in the leaf"));
            }
            for i in 0..n {
                let o = HEADER + i * ITEM_SIZE + KEY_SIZE;
                let off = le32(&node.data, o) as usize;
                let size = le32(&node.data, o + 4) as usize;
                if off < n * ITEM_SIZE || off.checked_add(size).is_none_or(|e| e > space) {
                    return Err(format!(
                        "item {i}: {size} bytes at {off} lie outside the leaf's data"
                    ));
                }
            }
        } else if n == 0 || n.checked_mul(PTR_SIZE).is_none_or(|b| b > space) {
            return Err(format!("node with {n} pointers"));
        }
        for i in 1..n {
            if node.key(i - 1) >= node.key(i) {
                return Err(format!("keys out of order at slot {i}"));
            }
        }
        Ok(node)
    }
}

/// Tree blocks kept in memory (by count: 4,096 blocks of 16 KiB is 64 MiB).
const CACHE_BYTES: usize = 64 << 20;

/// Reads and caches tree blocks of one filesystem.
pub(crate) struct Trees {
    pub(crate) vol: Volume,
    pub(crate) csum: CsumType,
    pub(crate) fsid: [u8; 16],
    pub(crate) nodesize: usize,
    cache: Mutex<HashMap<u64, Arc<Node>>>,
}

impl Trees {
    pub(crate) fn new(vol: Volume, csum: CsumType, fsid: [u8; 16], nodesize: u32) -> Trees {
        Trees {
            vol,
            csum,
            fsid,
            // OK: nodesize <= 64 KiB, checked in the superblock.
            nodesize: nodesize as usize,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The tree block at `logical`, checked (from the cache when it was
    /// read before); another copy is tried when one fails its checks.
    pub(crate) fn node(
        &self,
        logical: u64,
        level: Option<u8>,
        generation: Option<u64>,
    ) -> Result<Arc<Node>, FsError> {
        let cached = {
            let c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            c.get(&logical).cloned()
        };
        if let Some(n) = cached {
            let gen_ok = generation.is_none_or(|g| le64(&n.data, 0x50) == g);
            if level.is_none_or(|l| l == n.level) && gen_ok {
                return Ok(n);
            }
        }
        let mut buf = vec![0u8; self.nodesize];
        let mut parsed = None;
        self.vol
            .read_checked(logical, &mut buf, "tree block", |b| {
                let n = Node::check(
                    b.to_vec(),
                    logical,
                    self.csum,
                    &self.fsid,
                    level,
                    generation,
                )?;
                parsed = Some(n);
                Ok(())
            })?;
        let node = Arc::new(parsed.ok_or_else(|| logical_err(logical, "tree block unread"))?);
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if (c.len() + 1) * self.nodesize > CACHE_BYTES {
            c.clear();
        }
        c.insert(logical, node.clone());
        Ok(node)
    }

    /// A cursor at the last item whose key is `<= key` (or at the first
    /// item when every key is greater).
    pub(crate) fn seek(&self, root: Root, key: Key) -> Result<Cursor<'_>, FsError> {
        let mut path = Vec::new();
        let mut node = self.node(root.bytenr, Some(root.level), root.generation)?;
        loop {
            let slot = upper_bound(&node, key).saturating_sub(1);
            if node.level == 0 {
                path.push((node, slot));
                break;
            }
            let (ptr, generation) = node.ptr(slot);
            let child = self.node(ptr, Some(node.level - 1), Some(generation))?;
            path.push((node, slot));
            node = child;
        }
        Ok(Cursor {
            t: self,
            path,
            last: None,
        })
    }

    /// The items with keys in `from..=to`, in key order.
    pub(crate) fn range(&self, root: Root, from: Key, to: Key) -> Result<Range<'_>, FsError> {
        Ok(Range {
            cur: self.seek(root, from)?,
            from,
            to,
            done: false,
        })
    }

    /// Every item of object `objectid` with type `ty`, by offset.
    pub(crate) fn items_of(&self, root: Root, objectid: u64, ty: u8) -> Result<Range<'_>, FsError> {
        self.range(
            root,
            Key::new(objectid, ty, 0),
            Key::new(objectid, ty, u64::MAX),
        )
    }

    /// The item with exactly `key`, if any.
    pub(crate) fn get(&self, root: Root, key: Key) -> Result<Option<Item>, FsError> {
        let mut c = self.seek(root, key)?;
        match c.next() {
            Some(Ok(it)) if it.key == key => Ok(Some(it)),
            Some(Err(e)) => Err(e),
            _ => Ok(None),
        }
    }
}

/// The number of slots of `node` whose key is `<= key`.
fn upper_bound(node: &Node, key: Key) -> usize {
    let (mut lo, mut hi) = (0usize, node.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if node.key(mid) <= key {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// One leaf item.
#[derive(Clone)]
pub(crate) struct Item {
    pub(crate) key: Key,
    node: Arc<Node>,
    slot: usize,
}

impl Item {
    pub(crate) fn data(&self) -> &[u8] {
        self.node.item(self.slot)
    }

    /// The address of the leaf holding the item (for messages).
    pub(crate) fn leaf(&self) -> u64 {
        self.node.logical
    }
}

/// A position in a tree, moving forward.
pub(crate) struct Cursor<'a> {
    t: &'a Trees,
    path: Vec<(Arc<Node>, usize)>,
    last: Option<Key>,
}

impl Iterator for Cursor<'_> {
    type Item = Result<Item, FsError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (leaf, slot) = self.path.last()?.clone();
            if slot < leaf.len() {
                if let Some(l) = self.path.last_mut() {
                    l.1 += 1;
                }
                let key = leaf.key(slot);
                if self.last.is_some_and(|k| k >= key) {
                    self.path.clear();
                    return Some(Err(logical_err(
                        leaf.logical,
                        "tree keys go backwards across blocks (a loop between tree blocks?)",
                    )));
                }
                self.last = Some(key);
                return Some(Ok(Item {
                    key,
                    node: leaf,
                    slot,
                }));
            }
            // Up to the first ancestor with a next child, then down its
            // leftmost edge.
            self.path.pop();
            loop {
                let (node, slot) = self.path.last_mut()?;
                *slot += 1;
                if *slot < node.len() {
                    break;
                }
                self.path.pop();
            }
            while let Some((node, slot)) = self.path.last().cloned() {
                if node.level == 0 {
                    break;
                }
                let (ptr, generation) = node.ptr(slot);
                match self.t.node(ptr, Some(node.level - 1), Some(generation)) {
                    Ok(child) => self.path.push((child, 0)),
                    Err(e) => {
                        self.path.clear();
                        return Some(Err(e));
                    }
                }
            }
        }
    }
}

/// The items of a key range.
pub(crate) struct Range<'a> {
    cur: Cursor<'a>,
    from: Key,
    to: Key,
    done: bool,
}

impl Iterator for Range<'_> {
    type Item = Result<Item, FsError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            match self.cur.next()? {
                Ok(it) if it.key < self.from => continue,
                Ok(it) if it.key > self.to => self.done = true,
                other => return Some(other),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{Chunk, Profile, Stripe};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    const NS: usize = 4096;
    const FSID: [u8; 16] = [7; 16];

    fn header(logical: u64, level: u8, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; NS];
        b[0x20..0x30].copy_from_slice(&FSID);
        b[0x30..0x38].copy_from_slice(&logical.to_le_bytes());
        b[0x50..0x58].copy_from_slice(&9u64.to_le_bytes());
        b[0x60..0x64].copy_from_slice(&(n as u32).to_le_bytes());
        b[0x64] = level;
        b
    }

    fn key_bytes(k: Key) -> Vec<u8> {
        let mut v = k.objectid.to_le_bytes().to_vec();
        v.push(k.ty);
        v.extend_from_slice(&k.offset.to_le_bytes());
        v
    }

    fn seal(mut b: Vec<u8>) -> Vec<u8> {
        let c = CsumType::Crc32c.compute(&b[32..]);
        b[..32].copy_from_slice(&c);
        b
    }

    fn leaf(logical: u64, items: &[(Key, &[u8])]) -> Vec<u8> {
        let mut b = header(logical, 0, items.len());
        let mut end = NS - HEADER;
        for (i, (k, data)) in items.iter().enumerate() {
            end -= data.len();
            let o = HEADER + i * ITEM_SIZE;
            b[o..o + KEY_SIZE].copy_from_slice(&key_bytes(*k));
            b[o + 17..o + 21].copy_from_slice(&(end as u32).to_le_bytes());
            b[o + 21..o + 25].copy_from_slice(&(data.len() as u32).to_le_bytes());
            b[HEADER + end..HEADER + end + data.len()].copy_from_slice(data);
        }
        b
    }

    fn node(logical: u64, level: u8, ptrs: &[(Key, u64)]) -> Vec<u8> {
        let mut b = header(logical, level, ptrs.len());
        for (i, (k, p)) in ptrs.iter().enumerate() {
            let o = HEADER + i * PTR_SIZE;
            b[o..o + KEY_SIZE].copy_from_slice(&key_bytes(*k));
            b[o + 17..o + 25].copy_from_slice(&p.to_le_bytes());
            b[o + 25..o + 33].copy_from_slice(&9u64.to_le_bytes());
        }
        b
    }

    fn trees(blocks: Vec<(u64, Vec<u8>)>) -> Trees {
        let mut img = vec![0u8; 1 << 20];
        for (at, b) in blocks {
            img[at as usize..at as usize + NS].copy_from_slice(&b);
        }
        let mut devices = BTreeMap::new();
        devices.insert(
            1u64,
            Arc::new(flr_io::MemSource::new(img)) as flr_io::Source,
        );
        let mut chunks = BTreeMap::new();
        chunks.insert(
            0,
            Chunk {
                logical: 0,
                length: 1 << 20,
                stripe_len: 65536,
                ty: 4,
                profile: Profile::Single,
                sub_stripes: 1,
                stripes: vec![Stripe {
                    devid: 1,
                    offset: 0,
                }],
            },
        );
        Trees::new(
            Volume { devices, chunks },
            CsumType::Crc32c,
            FSID,
            NS as u32,
        )
    }

    fn k(o: u64) -> Key {
        Key::new(o, 1, 0)
    }

    fn walk(t: &Trees, root: u64, level: u8) -> Result<Vec<u64>, FsError> {
        let r = Root {
            bytenr: root,
            level,
            generation: None,
        };
        t.range(r, k(0), Key::new(u64::MAX, 255, u64::MAX))?
            .map(|i| i.map(|i| i.key.objectid))
            .collect()
    }

    #[test]
    fn walks_two_leaves_in_order() {
        let t = trees(vec![
            (
                0x1000,
                seal(node(0x1000, 1, &[(k(1), 0x2000), (k(5), 0x3000)])),
            ),
            (0x2000, seal(leaf(0x2000, &[(k(1), b"a"), (k(2), b"bb")]))),
            (0x3000, seal(leaf(0x3000, &[(k(5), b""), (k(9), b"c")]))),
        ]);
        assert_eq!(walk(&t, 0x1000, 1).unwrap(), vec![1, 2, 5, 9]);
        let r = Root {
            bytenr: 0x1000,
            level: 1,
            generation: None,
        };
        let it = t.get(r, k(2)).unwrap().unwrap();
        assert_eq!(it.data(), b"bb");
        assert!(t.get(r, k(3)).unwrap().is_none());
        let from4: Vec<u64> = t
            .seek(r, k(4))
            .unwrap()
            .map(|i| i.unwrap().key.objectid)
            .collect();
        assert_eq!(from4, vec![2, 5, 9], "seek lands on the last key <= 4");
    }

    #[test]
    fn a_leaf_reached_twice_is_a_loop() {
        let t = trees(vec![
            (
                0x1000,
                seal(node(0x1000, 1, &[(k(1), 0x2000), (k(5), 0x2000)])),
            ),
            (0x2000, seal(leaf(0x2000, &[(k(1), b"a"), (k(2), b"b")]))),
        ]);
        let e = walk(&t, 0x1000, 1).unwrap_err().to_string();
        assert!(e.contains("loop"), "{e}");
    }

    #[test]
    fn a_node_pointing_at_itself_is_refused() {
        let t = trees(vec![(0x1000, seal(node(0x1000, 1, &[(k(1), 0x1000)])))]);
        let e = walk(&t, 0x1000, 1).unwrap_err().to_string();
        assert!(e.contains("level"), "{e}");
    }

    #[test]
    fn hostile_leaves_are_refused() {
        let mut huge = leaf(0x2000, &[(k(1), b"a")]);
        huge[HEADER + 21..HEADER + 25].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut many = leaf(0x3000, &[(k(1), b"a")]);
        many[0x60..0x64].copy_from_slice(&u32::MAX.to_le_bytes());
        let unsorted = leaf(0x4000, &[(k(3), b"a"), (k(2), b"b")]);
        let mut badsum = seal(leaf(0x5000, &[(k(1), b"a")]));
        badsum[200] ^= 1;
        let t = trees(vec![
            (0x2000, seal(huge)),
            (0x3000, seal(many)),
            (0x4000, seal(unsorted)),
            (0x5000, badsum),
            (0x6000, seal(leaf(0x7000, &[]))),
        ]);
        for (at, want) in [
            (0x2000, "outside the leaf"),
            (0x3000, "do not fit"),
            (0x4000, "out of order"),
            (0x5000, "checksum"),
            (0x6000, "records address"),
            (0x9000, "checksum"),
            (0x20_0000, "no chunk"),
        ] {
            let e = walk(&t, at, 0).unwrap_err().to_string();
            assert!(e.contains(want), "{at:#x}: {e}");
        }
    }
}
