//! The file allocation table: entry lookups through a chunk cache, and
//! cluster chains resolved into extents with loop and length checks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use flr_fs::FsError;
use flr_io::Source;

use crate::bpb::{FatType, Geometry};

/// FAT bytes are cached in chunks of this size.
const CHUNK: u64 = 64 * 1024;
/// At most this many chunks (16 MiB) are kept; the cache is emptied when full.
const MAX_CHUNKS: usize = 256;

/// A run of consecutive clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) first: u32,
    pub(crate) count: u32,
}

/// What a FAT entry says.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Cluster(u32),
    End,
    Bad,
    Free,
    Invalid(u32),
}

pub(crate) struct Fat {
    src: Source,
    geo: Geometry,
    cache: Mutex<HashMap<u64, Arc<Vec<u8>>>>,
}

pub(crate) fn corrupt(offset: Option<u64>, what: impl Into<String>) -> FsError {
    FsError::Corrupt {
        fs: "fat",
        offset,
        what: what.into(),
    }
}

impl Fat {
    pub(crate) fn new(src: Source, geo: Geometry) -> Self {
        Fat {
            src,
            geo,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn chunk(&self, index: u64) -> Result<Arc<Vec<u8>>, FsError> {
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = cache.get(&index) {
                return Ok(c.clone());
            }
        }
        let start = index * CHUNK;
        let len = CHUNK.min(self.geo.fat_bytes.saturating_sub(start));
        // len <= 64 KiB.
        let mut buf = vec![0u8; len as usize];
        self.src
            .read_exact_at(self.geo.fat_offset + start, &mut buf)?;
        let buf = Arc::new(buf);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CHUNKS {
            cache.clear();
        }
        cache.insert(index, buf.clone());
        Ok(buf)
    }

    /// `N` FAT bytes at FAT byte offset `at`.
    fn bytes<const N: usize>(&self, at: u64) -> Result<[u8; N], FsError> {
        let end = at.checked_add(N as u64);
        if end.is_none_or(|e| e > self.geo.fat_bytes) {
            return Err(corrupt(
                Some(self.geo.fat_offset),
                format!("FAT entry at FAT byte {at:#x} is past the end of the FAT"),
            ));
        }
        let mut out = [0u8; N];
        let mut index = at / CHUNK;
        let mut chunk = self.chunk(index)?;
        for (i, o) in out.iter_mut().enumerate() {
            let a = at + i as u64;
            if a / CHUNK != index {
                index = a / CHUNK;
                chunk = self.chunk(index)?;
            }
            *o = *chunk
                .get((a % CHUNK) as usize)
                .ok_or_else(|| corrupt(Some(self.geo.fat_offset + a), "short FAT chunk"))?;
        }
        Ok(out)
    }

    /// The raw value of the FAT entry of `cluster`.
    pub(crate) fn entry(&self, cluster: u32) -> Result<u32, FsError> {
        let c = u64::from(cluster);
        Ok(match self.geo.fat_type {
            FatType::Fat12 => {
                let v = u16::from_le_bytes(self.bytes::<2>(c + c / 2)?);
                u32::from(if cluster & 1 == 1 { v >> 4 } else { v & 0x0FFF })
            }
            FatType::Fat16 => u32::from(u16::from_le_bytes(self.bytes::<2>(c * 2)?)),
            FatType::Fat32 => u32::from_le_bytes(self.bytes::<4>(c * 4)?) & 0x0FFF_FFFF,
        })
    }

    fn next(&self, cluster: u32) -> Result<Next, FsError> {
        let v = self.entry(cluster)?;
        let (bad, end) = match self.geo.fat_type {
            FatType::Fat12 => (0xFF7, 0xFF8),
            FatType::Fat16 => (0xFFF7, 0xFFF8),
            FatType::Fat32 => (0x0FFF_FFF7, 0x0FFF_FFF8),
        };
        Ok(if v >= end {
            Next::End
        } else if v == bad {
            Next::Bad
        } else if v == 0 {
            Next::Free
        } else if self.geo.is_data_cluster(v) {
            Next::Cluster(v)
        } else {
            Next::Invalid(v)
        })
    }

    /// Resolves the chain starting at `first` into runs of consecutive
    /// clusters. Stops after `max` clusters. With `exact`, a chain that
    /// ends before `max` clusters is an error (a file shorter on disk than
    /// its size); without, the chain's end ends the result (a directory).
    /// A chain that visits a cluster twice is an error.
    pub(crate) fn chain(
        &self,
        first: u32,
        max: u64,
        exact: bool,
        what: &str,
    ) -> Result<Vec<Run>, FsError> {
        let mut runs: Vec<Run> = Vec::new();
        if max == 0 {
            return Ok(runs);
        }
        if !self.geo.is_data_cluster(first) {
            return Err(corrupt(
                None,
                format!("{what}: first cluster {first} is not a data cluster"),
            ));
        }
        let mut cur = first;
        let mut n: u64 = 0;
        loop {
            match runs.last_mut() {
                Some(r) if r.first.checked_add(r.count) == Some(cur) && r.count < u32::MAX => {
                    r.count += 1
                }
                _ => runs.push(Run {
                    first: cur,
                    count: 1,
                }),
            }
            n += 1;
            if n >= max {
                break;
            }
            let state = match self.next(cur)? {
                Next::Cluster(c) => {
                    cur = c;
                    continue;
                }
                Next::End if !exact => break,
                Next::End => "ends".to_string(),
                Next::Bad => "runs into a bad-cluster mark".to_string(),
                Next::Free => "runs into a free cluster".to_string(),
                Next::Invalid(v) => format!("points to invalid cluster {v:#x}"),
            };
            return Err(corrupt(
                Some(self.geo.fat_offset),
                format!(
                    "{what}: cluster chain from cluster {first} {state} after {n} clusters \
                     (at cluster {cur}); {max} expected"
                ),
            ));
        }
        check_no_overlap(&runs, first, what)?;
        Ok(runs)
    }

    /// Counts the free clusters (a scan of the whole FAT).
    pub(crate) fn count_free(&self) -> Result<u64, FsError> {
        let end = u64::from(self.geo.cluster_count) + 2;
        let width = match self.geo.fat_type {
            FatType::Fat12 => {
                let mut free = 0u64;
                for c in 2..self.geo.cluster_count.saturating_add(2) {
                    if self.entry(c)? == 0 {
                        free += 1;
                    }
                }
                return Ok(free);
            }
            FatType::Fat16 => 2u64,
            FatType::Fat32 => 4u64,
        };
        // Whole chunks at a time; CHUNK is a multiple of both widths.
        let mut free = 0u64;
        let mut index = 0u64;
        while index * CHUNK < end * width {
            let chunk = self.chunk(index)?;
            let first = index * CHUNK / width;
            for (i, e) in chunk.chunks_exact(width as usize).enumerate() {
                let c = first + i as u64;
                if c < 2 {
                    continue;
                }
                if c >= end {
                    break;
                }
                let zero = if width == 2 {
                    e == [0, 0]
                } else {
                    u32::from_le_bytes([e[0], e[1], e[2], e[3]]) & 0x0FFF_FFFF == 0
                };
                free += u64::from(zero);
            }
            index += 1;
        }
        Ok(free)
    }
}

/// A cluster used twice in one chain means a loop (or a chain crossing
/// itself): the data would repeat, so it is refused.
fn check_no_overlap(runs: &[Run], first: u32, what: &str) -> Result<(), FsError> {
    let mut sorted: Vec<Run> = runs.to_vec();
    sorted.sort_by_key(|r| r.first);
    for w in sorted.windows(2) {
        if u64::from(w[0].first) + u64::from(w[0].count) > u64::from(w[1].first) {
            return Err(corrupt(
                None,
                format!(
                    "{what}: cluster chain from cluster {first} loops (cluster {} is used twice)",
                    w[1].first
                ),
            ));
        }
    }
    Ok(())
}
