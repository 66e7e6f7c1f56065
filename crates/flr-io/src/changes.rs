//! Changed ranges: which bytes of a source may differ from an earlier
//! version of it (the base), so that a comparison of two snapshots reads
//! only what changed.
//!
//! The bottom of a stack learns its changed ranges from outside (the page
//! ranges that differ between two incremental snapshots, the blocks a
//! differencing VHD holds, a block-by-block comparison of two images) and is
//! wrapped in a [`Compared`] source. Every layer above answers
//! [`ReadAt::changed`](crate::ReadAt::changed) by mapping the question down
//! to the layer below, the way [`ReadAt::is_known_zero`](crate::ReadAt::is_known_zero)
//! travels; a layer that cannot map it answers [`Change::Unknown`], which
//! callers treat as changed. A filesystem then asks the question of every
//! extent a file's data and metadata occupy.

use crate::{IoError, ReadAt, Source};

/// The answer to "may these bytes differ from the base?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Proven equal to the base: every byte lies in ranges known not to
    /// have changed.
    Unchanged,
    /// At least one byte lies in a range that may have changed.
    Changed,
    /// Nobody below knows (no base was set up, or a layer cannot map the
    /// range); treat as changed.
    Unknown,
}

impl Change {
    /// Combines the answers for two parts of one range: unchanged only when
    /// both are, changed as soon as one is, otherwise unknown.
    pub fn and(self, other: Change) -> Change {
        match (self, other) {
            (Change::Changed, _) | (_, Change::Changed) => Change::Changed,
            (Change::Unchanged, Change::Unchanged) => Change::Unchanged,
            _ => Change::Unknown,
        }
    }

    /// Whether the bytes must be read again (changed or unknown).
    pub fn must_reread(self) -> bool {
        self != Change::Unchanged
    }
}

/// A set of byte ranges, kept sorted, disjoint and merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// `(start, end)` pairs, end exclusive, sorted, non-overlapping and
    /// non-adjacent.
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    /// The empty set.
    pub fn new() -> RangeSet {
        RangeSet::default()
    }

    /// A set built from `(offset, len)` pairs in any order, overlapping or not.
    pub fn from_extents(extents: impl IntoIterator<Item = (u64, u64)>) -> RangeSet {
        let mut v: Vec<(u64, u64)> = extents
            .into_iter()
            .filter(|&(_, len)| len > 0)
            .map(|(off, len)| (off, off.saturating_add(len)))
            .collect();
        v.sort_unstable();
        let mut ranges: Vec<(u64, u64)> = Vec::with_capacity(v.len());
        for (s, e) in v {
            match ranges.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => ranges.push((s, e)),
            }
        }
        RangeSet { ranges }
    }

    /// Adds `len` bytes at `offset`.
    pub fn insert(&mut self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let end = offset.saturating_add(len);
        // Ranges that end before `offset` stay; the first that may touch it
        // is found by binary search.
        let i = self.ranges.partition_point(|&(_, e)| e < offset);
        let mut j = i;
        let (mut s, mut e) = (offset, end);
        while j < self.ranges.len() && self.ranges[j].0 <= end {
            s = s.min(self.ranges[j].0);
            e = e.max(self.ranges[j].1);
            j += 1;
        }
        self.ranges.splice(i..j, std::iter::once((s, e)));
    }

    /// Whether any byte of `len` bytes at `offset` is in the set.
    pub fn intersects(&self, offset: u64, len: u64) -> bool {
        if len == 0 {
            return false;
        }
        let end = offset.saturating_add(len);
        let i = self.ranges.partition_point(|&(_, e)| e <= offset);
        self.ranges.get(i).is_some_and(|&(s, _)| s < end)
    }

    /// The ranges as `(offset, len)` pairs, in order.
    pub fn extents(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|&(s, e)| (s, e - s))
    }

    /// The number of disjoint ranges.
    pub fn count(&self) -> usize {
        self.ranges.len()
    }

    /// The number of bytes covered.
    pub fn bytes(&self) -> u64 {
        self.ranges.iter().map(|&(s, e)| e - s).sum()
    }

    /// True when the set holds nothing.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// The runs of consecutive set entries among the first `count` entries of
/// a bitmap, as `(first, len)` pairs in order; `is_set` reads one entry (a
/// VHD or VHDX sector bitmap, whose bit orders differ).
pub fn set_runs(count: u64, is_set: impl Fn(u64) -> bool) -> Vec<(u64, u64)> {
    let mut runs = Vec::new();
    let mut s = 0;
    while s < count {
        if !is_set(s) {
            s += 1;
            continue;
        }
        let first = s;
        while s < count && is_set(s) {
            s += 1;
        }
        runs.push((first, s - first));
    }
    runs
}

/// A source together with the ranges in which it may differ from its base:
/// the bottom of a compared stack.
pub struct Compared {
    inner: Source,
    changed: RangeSet,
}

impl Compared {
    /// Wraps `inner`; `changed` holds every range that may differ from the
    /// base (anything outside it is promised equal).
    pub fn new(inner: Source, changed: RangeSet) -> Compared {
        Compared { inner, changed }
    }

    /// The changed ranges.
    pub fn ranges(&self) -> &RangeSet {
        &self.changed
    }
}

impl ReadAt for Compared {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.inner.read_exact_at(offset, buf)
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn layer(&self) -> &str {
        self.inner.layer()
    }
    fn is_known_zero(&self, offset: u64, len: u64) -> bool {
        self.inner.is_known_zero(offset, len)
    }
    fn changed(&self, offset: u64, len: u64) -> Change {
        if self.changed.intersects(offset, len) {
            Change::Changed
        } else {
            Change::Unchanged
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_intersect() {
        let mut s = RangeSet::from_extents([(100, 10), (0, 10), (5, 10), (200, 0)]);
        assert_eq!(s.extents().collect::<Vec<_>>(), vec![(0, 15), (100, 10)]);
        s.insert(15, 85);
        assert_eq!(s.extents().collect::<Vec<_>>(), vec![(0, 110)]);
        s.insert(300, 1);
        assert_eq!(s.count(), 2);
        assert_eq!(s.bytes(), 111);
        assert!(s.intersects(109, 1));
        assert!(!s.intersects(110, 190));
        assert!(s.intersects(110, 191));
        assert!(!s.intersects(50, 0));
    }

    #[test]
    fn bitmap_runs() {
        let bits = [true, true, false, true, false, false, true];
        assert_eq!(
            set_runs(7, |i| bits[i as usize]),
            vec![(0, 2), (3, 1), (6, 1)]
        );
        assert_eq!(set_runs(0, |_| true), vec![]);
    }

    #[test]
    fn answers_combine() {
        use Change::*;
        assert_eq!(Unchanged.and(Unchanged), Unchanged);
        assert_eq!(Unchanged.and(Unknown), Unknown);
        assert_eq!(Unknown.and(Changed), Changed);
        assert!(Unknown.must_reread());
    }

    #[test]
    fn compared_answers_from_its_set() {
        let src: Source = std::sync::Arc::new(crate::MemSource::new(vec![0u8; 4096]));
        let c = Compared::new(src, RangeSet::from_extents([(512, 512)]));
        assert_eq!(c.changed(0, 512), Change::Unchanged);
        assert_eq!(c.changed(0, 513), Change::Changed);
        let s = crate::Slice::new(std::sync::Arc::new(c), 1024, 1024, "p").unwrap();
        assert_eq!(s.changed(0, 1024), Change::Unchanged);
        let plain = crate::MemSource::new(vec![0u8; 16]);
        assert_eq!(plain.changed(0, 16), Change::Unknown);
    }
}
