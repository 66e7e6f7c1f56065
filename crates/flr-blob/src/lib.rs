//! Azure Blob storage as a [`flr_io::ReadAt`]: a disk image is read where
//! it lies, in ranges, in parallel and through a block cache, never
//! downloaded whole.
//!
//! [`BlobSource::open`] takes a [`BlobLocation`] (a SAS URL, a managed-disk
//! export URL, an Azurite URL or a connection string), reads the blob's
//! properties and pins its ETag, and for a page blob reads the page-range
//! map so never-written ranges read as zeros without a request. Reads then
//! go through an aligned block cache with a memory budget: misses are
//! coalesced into runs, fetched as parallel range requests on a tokio
//! runtime owned by the source, and sequential streams get a read-ahead
//! window that doubles while they continue. A large read that nothing
//! cached overlaps (each chunk of a file fetched as parallel streams) goes
//! straight from the responses into the caller's buffer instead, and a
//! response cut off part way is resumed from where it broke.
//!
//! # Example
//! ```no_run
//! use flr_blob::{BlobLocation, BlobOptions, BlobSource};
//! use flr_io::ReadAt;
//!
//! let loc = BlobLocation::parse("UseDevelopmentStorage=true;Container=disks;Blob=os.vhd")?;
//! let blob = BlobSource::open(loc, BlobOptions::default())?;
//! let mut footer = [0u8; 512];
//! blob.read_exact_at(blob.len() - 512, &mut footer)?;
//! eprintln!("{}", blob.stats().human());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Errors
//! [`BlobError::Location`] is the caller's (a malformed URL or connection
//! string); [`BlobError::Request`] is the service's or the network's, after
//! the retries, and names the request id; [`BlobError::Changed`] means the
//! blob was modified during the restore (its ETag no longer matches), so
//! flr stops rather than mixing old and new bytes. Reads through
//! [`ReadAt`] wrap them in an [`IoError`] of the `blob` layer.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod container;
mod http;
mod location;
mod pages;
mod parent;
pub mod upload;

pub use parent::BlobParentResolver;

pub use location::{
    account_sas, blob_service_sas, container_service_sas, is_remote, BlobLocation, SasTerms,
    API_VERSION, DEV_ACCOUNT, DEV_BLOB_ENDPOINT, DEV_KEY,
};

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flr_io::{IoError, ReadAt};
use tokio::sync::Semaphore;

use crate::http::Http;
use crate::pages::PageMap;

/// A failure to locate or read a blob.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// The location string is malformed or incomplete.
    #[error("{0}")]
    Location(String),
    /// A request failed for good (after the retries, or at once for errors
    /// that retrying cannot fix).
    #[error(
        "{location}: {what} failed after {attempts} attempt(s): {msg} (request id {request_id})"
    )]
    Request {
        /// The blob, without its SAS.
        location: String,
        /// The operation.
        what: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        msg: String,
        /// The service's `x-ms-request-id` of the last attempt (`none` when
        /// no response arrived).
        request_id: String,
        /// The HTTP status of the last refusal (none when no response
        /// arrived or the response itself was wrong).
        status: Option<u16>,
    },
    /// The blob changed since it was opened.
    #[error("{location}: the blob changed while it was being read (ETag {etag} no longer matches, request id {request_id}); nothing mixed was returned, start again")]
    Changed {
        /// The blob, without its SAS.
        location: String,
        /// The ETag pinned at open.
        etag: String,
        /// The request id of the refused request.
        request_id: String,
    },
    /// The I/O runtime could not start.
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(std::io::Error),
}

impl BlobError {
    /// The HTTP status the service refused with (404 no such blob, 403
    /// access denied…), when it refused.
    pub fn status(&self) -> Option<u16> {
        match self {
            BlobError::Request { status, .. } => *status,
            _ => None,
        }
    }
}

/// The older snapshot a page-range diff is taken against.
#[derive(Clone)]
pub enum PreviousSnapshot {
    /// A snapshot of the same blob, by its time (`prevsnapshot=`).
    Snapshot(String),
    /// Another snapshot by its URL with its own SAS
    /// (`x-ms-previous-snapshot-url`, as incremental snapshots of one
    /// managed disk are compared). Its SAS is sent in that header only.
    Url(BlobLocation),
}

impl std::fmt::Debug for PreviousSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PreviousSnapshot::Snapshot(t) => write!(f, "prevsnapshot={t}"),
            PreviousSnapshot::Url(l) => write!(f, "x-ms-previous-snapshot-url {}", l.shown()),
        }
    }
}

/// The pages that differ between an older snapshot and a blob, as the
/// service lists them.
#[derive(Debug, Clone)]
pub struct PageDiff {
    /// Half-open `[start, end)` byte ranges, sorted and merged: pages
    /// written since (`PageRange`) and pages cleared since (`ClearRange`).
    pub ranges: Vec<(u64, u64)>,
    /// Answers (pages of the list, continuation markers followed).
    pub requests: u64,
    /// Bytes of those answers.
    pub bytes: u64,
    /// Seconds taken.
    pub seconds: f64,
}

/// Tuning for a [`BlobSource`].
#[derive(Debug, Clone)]
pub struct BlobOptions {
    /// Range requests in flight at once.
    pub concurrency: usize,
    /// Cache block size in bytes (a power of two, at least 4 KiB).
    pub block_size: u64,
    /// Memory budget of the block cache in bytes.
    pub cache_bytes: u64,
    /// Largest single range request in bytes; longer runs are split and
    /// fetched in parallel.
    pub max_request: u64,
    /// Largest sequential read-ahead window in bytes.
    pub max_readahead: u64,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, with jitter.
    pub base_delay: Duration,
    /// Cap on the retry delay.
    pub max_delay: Duration,
    /// Timeout of one request, body included.
    pub request_timeout: Duration,
    /// Entra ID tokens for Storage (`https://storage.azure.com`), sent as
    /// `Authorization: Bearer` on every request: for blob URLs without a
    /// SAS. Fetched off the I/O threads; renewed when the service refuses one.
    pub bearer: Option<Arc<flr_azauth::Bearer>>,
    /// An extra CA certificate (PEM) to trust (test servers, TLS-inspecting proxies).
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for BlobOptions {
    fn default() -> Self {
        BlobOptions {
            concurrency: 8,
            block_size: 16 << 10,
            cache_bytes: 256 << 20,
            max_request: 8 << 20,
            max_readahead: 64 << 20,
            max_attempts: 8,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            bearer: None,
            ca_file: None,
        }
    }
}

impl BlobOptions {
    /// The defaults, with the retry policy and tuning overridable from the
    /// environment the command line captured: `FLR_BLOB_ATTEMPTS`,
    /// `FLR_BLOB_RETRY_MS` (first delay), `FLR_BLOB_TIMEOUT_S` (per request),
    /// `FLR_BLOB_BLOCK_KIB` (cache block), `FLR_BLOB_REQUEST_KIB` (largest
    /// request) and `FLR_BLOB_READAHEAD_MIB` (largest read-ahead window).
    pub fn from_environment(env: &flr_config::Environment) -> Self {
        let mut o = BlobOptions::default();
        let num = |k: &str| env.number(k);
        if let Some(n) = num("FLR_BLOB_ATTEMPTS") {
            o.max_attempts = u32::try_from(n).unwrap_or(u32::MAX).max(1);
        }
        if let Some(ms) = num("FLR_BLOB_RETRY_MS") {
            o.base_delay = Duration::from_millis(ms);
        }
        if let Some(k) = num("FLR_BLOB_BLOCK_KIB") {
            o.block_size = k.saturating_mul(1024);
        }
        if let Some(k) = num("FLR_BLOB_REQUEST_KIB") {
            o.max_request = k.saturating_mul(1024);
        }
        if let Some(m) = num("FLR_BLOB_READAHEAD_MIB") {
            o.max_readahead = m.saturating_mul(1 << 20);
        }
        if let Some(s) = num("FLR_BLOB_TIMEOUT_S") {
            o.request_timeout = Duration::from_secs(s.max(1));
        }
        o
    }
}

/// Shared counters, updated by the fetch tasks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    bytes: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) retries: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    zero_blocks: AtomicU64,
}

impl Counters {
    pub(crate) fn add_bytes(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// What a [`BlobSource`] has cost so far.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    /// The blob, without its SAS (for [`Stats::combined`], the first one:
    /// the child of a differencing chain).
    pub source: String,
    /// Blobs counted: 1, or a differencing child and its parents.
    pub blobs: usize,
    /// Size of the blob.
    pub blob_size: u64,
    /// Bytes the page-range map says were written (the blob size when
    /// there is no map).
    pub written_bytes: u64,
    /// Response body bytes received, retries included.
    pub bytes_fetched: u64,
    /// HTTP requests sent, retries included.
    pub requests: u64,
    /// Retries after transient failures.
    pub retries: u64,
    /// Cache blocks a read found present (or already on its way).
    pub cache_hits: u64,
    /// Cache blocks a read had to fetch.
    pub cache_misses: u64,
    /// Blocks served as zeros from the page-range map, without a request.
    pub unwritten_blocks: u64,
    /// Cache block size.
    pub block_size: u64,
    /// Range requests allowed in flight.
    pub concurrency: usize,
    /// Seconds since the source was opened.
    pub seconds: f64,
}

impl Stats {
    /// The costs of several blobs read together (a differencing disk and
    /// its parents) as one: sizes, bytes, requests and cache counts add up,
    /// `seconds` is the longest, the source and tuning are the first's.
    /// `None` for no blobs.
    pub fn combined(all: &[Stats]) -> Option<Stats> {
        let (first, rest) = all.split_first()?;
        let mut t = first.clone();
        for s in rest {
            t.blobs += s.blobs;
            t.blob_size += s.blob_size;
            t.written_bytes += s.written_bytes;
            t.bytes_fetched += s.bytes_fetched;
            t.requests += s.requests;
            t.retries += s.retries;
            t.cache_hits += s.cache_hits;
            t.cache_misses += s.cache_misses;
            t.unwritten_blocks += s.unwritten_blocks;
            t.seconds = t.seconds.max(s.seconds);
        }
        Some(t)
    }

    /// One line for people.
    pub fn human(&self) -> String {
        let parents = match self.blobs {
            0 | 1 => String::new(),
            2 => " and its parent blob".into(),
            n => format!(" and {} parent blobs", n - 1),
        };
        format!(
            "flr: stats: {}{parents}: fetched {} bytes ({:.1} MiB) in {} requests ({} retries), cache hits {}, misses {}, unwritten blocks {}, {:.3} s",
            self.source,
            self.bytes_fetched,
            self.bytes_fetched as f64 / 1048576.0,
            self.requests,
            self.retries,
            self.cache_hits,
            self.cache_misses,
            self.unwritten_blocks,
            self.seconds
        )
    }

    /// One JSON object.
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("stats serialize")
    }
}

enum Slot {
    Ready { data: Bytes, tick: u64 },
    Pending,
    Failed(Arc<BlobError>),
}

/// A sequential stream being followed: where its last read ended and how
/// far ahead it is read.
#[derive(Clone, Copy)]
struct Stream {
    /// Where the last read of the stream ended.
    end: u64,
    /// Current read-ahead window in bytes.
    window: u64,
    /// Tick of the last read (for replacing the stalest stream).
    used: u64,
    /// Bytes the stream has read.
    consumed: u64,
    /// Offset up to which read-ahead has been requested.
    issued: u64,
}

impl Stream {
    /// Whether a read at `offset` continues this stream: it starts where
    /// the stream's last read ended, or a little after, within a block.
    fn continued_by(&self, offset: u64, block_size: u64) -> bool {
        offset >= self.end && offset <= self.end + block_size
    }
}

const STREAMS: usize = 8;

/// Reads of at least this many bytes that nothing cached or pending
/// overlaps are fetched straight into the caller's buffer.
const DIRECT_MIN: u64 = 2 << 20;

/// A sequential stream that has read this much keeps its read-ahead even
/// when it continues with a large read.
const STREAM_MIN: u64 = 1 << 20;

/// Written runs closer than this are fetched as one request (zeros between).
const DIRECT_GAP: u64 = 256 << 10;

struct State {
    slots: HashMap<u64, Slot>,
    lru: BTreeMap<u64, u64>,
    tick: u64,
    cached: u64,
    streams: Vec<Stream>,
}

struct Inner {
    http: Http,
    state: Mutex<State>,
    ready: Condvar,
    sem: Arc<Semaphore>,
    pages: Option<PageMap>,
    len: u64,
    opts: BlobOptions,
}

/// A blob read in ranges through a block cache. See the crate docs.
pub struct BlobSource {
    inner: Arc<Inner>,
    rt: Option<tokio::runtime::Runtime>,
    opened: Instant,
    /// A newer snapshot of this blob and the ranges written between the
    /// two (see [`BlobSource::read_unchanged_from`]).
    newer: std::sync::OnceLock<(Arc<BlobSource>, flr_io::RangeSet)>,
}

impl BlobSource {
    /// Opens the blob: properties (size, ETag, type), then the page-range
    /// map for a page blob.
    pub fn open(loc: BlobLocation, opts: BlobOptions) -> Result<Self, BlobError> {
        let opened = Instant::now();
        let mut opts = opts;
        opts.concurrency = opts.concurrency.max(1);
        opts.block_size = opts.block_size.max(4096).next_power_of_two();
        opts.max_request = opts.max_request.max(opts.block_size);
        opts.cache_bytes = opts.cache_bytes.max(opts.block_size * 16);
        opts.max_readahead = opts.max_readahead.min(opts.cache_bytes / 4);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("flr-blob")
            .enable_all()
            .build()
            .map_err(BlobError::Runtime)?;
        let counters = Arc::new(Counters::default());
        let http = Http::new(loc, &opts, counters)?;
        let (props, pages) = rt.block_on(async {
            // Properties and the page list in one round trip: disks are page
            // blobs, so the list is asked for at once (a block blob answers it
            // with an error, which costs one request and nothing else).
            let (props, listed) = tokio::join!(http.properties(), http.page_ranges());
            let props = props?;
            let pages = if props.page_blob {
                let listed = match listed {
                    // The list describes the blob whose ETag is now pinned.
                    Ok((ranges, etag)) if etag.is_some() && etag == props.etag => Ok(ranges),
                    // Changed in between, or no ETag to compare: list again,
                    // now under If-Match.
                    Ok(_) => http.page_ranges().await.map(|(ranges, _)| ranges),
                    Err(e) => Err(e),
                };
                // A service that will not list pages (some export endpoints)
                // costs only the optimisation, not the restore.
                listed.ok().map(|ranges| PageMap::new(ranges, props.len))
            } else {
                None
            };
            Ok::<_, BlobError>((props, pages))
        })?;
        let inner = Arc::new(Inner {
            http,
            state: Mutex::new(State {
                slots: HashMap::new(),
                lru: BTreeMap::new(),
                tick: 0,
                cached: 0,
                streams: Vec::with_capacity(STREAMS),
            }),
            ready: Condvar::new(),
            sem: Arc::new(Semaphore::new(opts.concurrency)),
            pages,
            len: props.len,
            opts,
        });
        Ok(BlobSource {
            inner,
            rt: Some(rt),
            opened,
            newer: std::sync::OnceLock::new(),
        })
    }

    /// The costs so far.
    pub fn stats(&self) -> Stats {
        let i = &self.inner;
        let c = &i.http.counters;
        Stats {
            source: i.http.shown().to_string(),
            blobs: 1,
            blob_size: i.len,
            written_bytes: i.pages.as_ref().map_or(i.len, PageMap::written_bytes),
            bytes_fetched: c.bytes.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            cache_hits: c.hits.load(Ordering::Relaxed),
            cache_misses: c.misses.load(Ordering::Relaxed),
            unwritten_blocks: c.zero_blocks.load(Ordering::Relaxed),
            block_size: i.opts.block_size,
            concurrency: i.opts.concurrency,
            seconds: self.opened.elapsed().as_secs_f64(),
        }
    }

    /// The blob's ETag, pinned when it was opened (every read carried it
    /// in `If-Match`).
    pub fn etag(&self) -> Option<String> {
        self.inner.http.etag().map(str::to_string)
    }

    /// The pages that changed since `prev` (Get Page Ranges with
    /// `prevsnapshot` or `x-ms-previous-snapshot-url`, every page of the
    /// list). Counted in [`BlobSource::stats`].
    pub fn changed_since(&self, prev: &PreviousSnapshot) -> Result<PageDiff, BlobError> {
        let started = Instant::now();
        let Some(rt) = self.rt.as_ref() else {
            return Err(BlobError::Location("the blob is closed".into()));
        };
        let c = &self.inner.http.counters;
        let bytes0 = c.bytes.load(Ordering::Relaxed);
        let (inclusive, requests) = rt.block_on(self.inner.http.page_diff(prev))?;
        let mut ranges: Vec<(u64, u64)> = Vec::with_capacity(inclusive.len());
        let mut sorted = inclusive;
        sorted.sort_unstable();
        for (s, e) in sorted {
            let e = e.saturating_add(1).min(self.inner.len);
            if s >= e {
                continue;
            }
            match ranges.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => ranges.push((s, e)),
            }
        }
        Ok(PageDiff {
            ranges,
            requests,
            bytes: c.bytes.load(Ordering::Relaxed) - bytes0,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Whether the blob has a page-range map (a page blob that listed its
    /// pages).
    pub fn has_page_map(&self) -> bool {
        self.inner.pages.is_some()
    }

    /// Reads of this snapshot's bytes outside `changed` (the page ranges
    /// the Blob service lists as written between it and `newer`, a later
    /// snapshot of the same blob or disk) are served by `newer` from then
    /// on: those bytes are the same in both, so what one side of a diff
    /// already fetched (a folder, an inode table the other also reads) is
    /// not fetched again. Set once; `false` if it was already set or the
    /// sizes differ.
    pub fn read_unchanged_from(&self, newer: Arc<BlobSource>, changed: flr_io::RangeSet) -> bool {
        if newer.inner.len != self.inner.len {
            return false;
        }
        self.newer.set((newer, changed)).is_ok()
    }

    /// Starts fetching `ranges` (`(start, end)` byte offsets) into the block
    /// cache without waiting, so reads that follow find them cached or in
    /// flight instead of each paying a round trip in turn. The ranges are
    /// fetched in the order given, as coalesced requests kept in flight up
    /// to the concurrency; blocks already cached, pending or never written
    /// are skipped. At most half the cache budget is prefetched, so what is
    /// fetched stays cached until it is read. Returns the bytes asked for.
    pub fn prefetch(&self, ranges: &[(u64, u64)]) -> u64 {
        let inner = &*self.inner;
        let bs = inner.opts.block_size;
        let room = inner.opts.cache_bytes / 2;
        let mut want = Vec::new();
        let mut asked = 0u64;
        {
            let mut st = inner.lock();
            'ranges: for &(s, e) in ranges {
                let e = e.min(inner.len);
                if s >= e {
                    continue;
                }
                for b in s / bs..e.div_ceil(bs) {
                    if st.slots.contains_key(&b) || inner.unwritten_block(b) {
                        continue;
                    }
                    if asked + inner.block_len(b) > room {
                        break 'ranges;
                    }
                    asked += inner.block_len(b);
                    st.slots.insert(b, Slot::Pending);
                    want.push(b);
                }
            }
        }
        // Runs in the order asked (the caller puts what is needed first
        // first), each run coalesced up to the largest request.
        let per_req = inner.opts.max_request / bs;
        let mut start = 0;
        for i in 1..=want.len() {
            if i == want.len() || want[i] != want[i - 1] + 1 {
                for (first, count) in coalesce(&want[start..i], per_req) {
                    self.spawn(first, count);
                }
                start = i;
            }
        }
        asked
    }

    fn spawn(&self, first: u64, count: u64) {
        let inner = Arc::clone(&self.inner);
        if let Some(rt) = &self.rt {
            rt.spawn(async move { inner.fetch(first, count).await });
        }
    }

    /// A large read (a parallel stream's chunk of a big file) goes from the
    /// responses straight into `buf` rather than through the block cache,
    /// which would copy every byte twice more and fill the cache with data
    /// read once. Only its middle does: blocks at either end that are
    /// already cached or being fetched (metadata read just before the data
    /// shares a block with it) are read through the cache. `None`: the
    /// whole read takes the cached path (small, a known block inside, or a
    /// sequential stream of small reads continues into it and gets its
    /// read-ahead).
    fn read_direct(&self, offset: u64, buf: &mut [u8]) -> Option<Result<(), IoError>> {
        let inner = &*self.inner;
        let len = buf.len() as u64;
        let end = offset + len;
        let bs = inner.opts.block_size;
        // Reads from within a runtime must not block on one.
        if len < DIRECT_MIN || tokio::runtime::Handle::try_current().is_ok() {
            return None;
        }
        let (d0, d1) = {
            let st = inner.lock();
            let known = |b: &u64| st.slots.contains_key(b);
            let (b0, b1) = (offset / bs, end.div_ceil(bs));
            let lo = (b0..b1).find(|b| !known(b)).unwrap_or(b1);
            let hi = (lo..b1).rev().find(|b| !known(b)).map_or(lo, |b| b + 1);
            if (lo..hi).any(|b| known(&b)) {
                return None;
            }
            let (d0, d1) = (offset.max(lo * bs), end.min(hi * bs));
            let streaming = st
                .streams
                .iter()
                .any(|s| s.consumed >= STREAM_MIN && s.continued_by(d0, bs));
            if d1 < d0 + DIRECT_MIN || streaming {
                return None;
            }
            (d0, d1)
        };
        let (head, rest) = buf.split_at_mut(usize::try_from(d0 - offset).ok()?);
        let (middle, tail) = rest.split_at_mut(usize::try_from(d1 - d0).ok()?);
        Some(
            self.fetch_direct(d0, middle)
                .and_then(|()| self.read_cached(offset, head))
                .and_then(|()| self.read_cached(d1, tail)),
        )
    }

    /// Fetches `buf.len()` bytes at `offset` into `buf`, bypassing the
    /// cache: the written parts (page-map runs) as requests of at most the
    /// largest request size, in parallel; the rest is zeros.
    fn fetch_direct(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let inner = &*self.inner;
        let len = buf.len() as u64;
        let end = offset + len;
        let bs = inner.opts.block_size;
        let counters = &inner.http.counters;
        let runs = match &inner.pages {
            Some(p) => p.written_runs(offset, end, DIRECT_GAP),
            None => vec![(offset, end)],
        };
        counters
            .misses
            .fetch_add(end.div_ceil(bs) - offset / bs, Ordering::Relaxed);
        // Cut `buf` into the pieces to fetch; what lies between them is zeros.
        let mut pieces = Vec::new();
        let mut rest = buf;
        let mut at = offset;
        for (s, e) in runs {
            let (gap, tail) = rest.split_at_mut((s - at) as usize);
            gap.fill(0);
            rest = tail;
            at = s;
            while at < e {
                let n = (e - at).min(inner.opts.max_request);
                let (piece, tail) = rest.split_at_mut(n as usize);
                pieces.push((at, piece));
                rest = tail;
                at += n;
            }
        }
        rest.fill(0);
        let fetched: u64 = pieces.iter().map(|(_, p)| p.len() as u64).sum();
        counters
            .zero_blocks
            .fetch_add((len - fetched) / bs, Ordering::Relaxed);
        let Some(rt) = self.rt.as_ref() else {
            return Err(self.io_err(offset, &BlobError::Location("the blob is closed".into())));
        };
        let (http, sem) = (&inner.http, &inner.sem);
        rt.block_on(async {
            let fetches = pieces.into_iter().map(|(at, piece)| async move {
                let _permit = sem.acquire().await;
                http.range_into(at, piece).await.map_err(|e| (at, e))
            });
            futures_util::future::try_join_all(fetches).await
        })
        .map(|_| ())
        .map_err(|(at, e)| self.io_err(at, &e))
    }

    fn io_err(&self, offset: u64, e: &BlobError) -> IoError {
        IoError::Os {
            layer: "blob".into(),
            offset,
            source: std::io::Error::other(e.to_string()),
        }
    }
}

impl Drop for BlobSource {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Inner {
    fn block_len(&self, b: u64) -> u64 {
        let bs = self.opts.block_size;
        (self.len - b * bs).min(bs)
    }

    fn unwritten_block(&self, b: u64) -> bool {
        self.pages
            .as_ref()
            .is_some_and(|p| p.unwritten(b * self.opts.block_size, self.block_len(b)))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn fetch(self: Arc<Self>, first: u64, count: u64) {
        let permit = Arc::clone(&self.sem).acquire_owned().await;
        let bs = self.opts.block_size;
        let off = first * bs;
        let len = (first + count) * bs;
        let len = len.min(self.len) - off;
        let res = self.http.range(off, len).await;
        drop(permit);
        let mut st = self.lock();
        match res {
            Ok(body) => {
                for i in 0..count {
                    let s = usize::try_from(i * bs).unwrap_or(usize::MAX);
                    let e = usize::try_from(((i + 1) * bs).min(len)).unwrap_or(usize::MAX);
                    st.tick += 1;
                    let tick = st.tick;
                    st.lru.insert(tick, first + i);
                    st.cached += (e - s) as u64;
                    if let Some(Slot::Ready { tick: old, data }) = st.slots.insert(
                        first + i,
                        Slot::Ready {
                            // A slice would keep the whole response alive
                            // as long as any one of its blocks is cached,
                            // so the budget would not bound the memory held:
                            // each block gets its own copy.
                            data: if count == 1 {
                                body.clone()
                            } else {
                                Bytes::copy_from_slice(&body[s..e])
                            },
                            tick,
                        },
                    ) {
                        st.lru.remove(&old);
                        st.cached -= data.len() as u64;
                    }
                }
                // Evict the least recently used blocks over the budget.
                while st.cached > self.opts.cache_bytes {
                    let Some((_, b)) = st.lru.pop_first() else {
                        break;
                    };
                    if let Some(Slot::Ready { data, .. }) = st.slots.remove(&b) {
                        st.cached -= data.len() as u64;
                    }
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for i in 0..count {
                    st.slots.insert(first + i, Slot::Failed(Arc::clone(&e)));
                }
            }
        }
        drop(st);
        self.ready.notify_all();
    }
}

impl ReadAt for BlobSource {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let inner = &*self.inner;
        let len = buf.len() as u64;
        if offset.checked_add(len).is_none_or(|e| e > inner.len) {
            return Err(IoError::OutOfRange {
                layer: "blob".into(),
                offset,
                len,
                size: inner.len,
            });
        }
        if let Some((newer, changed)) = self.newer.get() {
            if !changed.intersects(offset, len) {
                return newer.read_exact_at(offset, buf);
            }
        }
        match self.read_direct(offset, buf) {
            Some(r) => r,
            None => self.read_cached(offset, buf),
        }
    }

    fn len(&self) -> u64 {
        self.inner.len
    }

    fn layer(&self) -> &str {
        "blob"
    }

    fn is_known_zero(&self, offset: u64, len: u64) -> bool {
        self.inner
            .pages
            .as_ref()
            .is_some_and(|p| p.unwritten(offset, len))
    }
}

impl BlobSource {
    /// A read through the block cache (bounds checked by the caller).
    fn read_cached(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        if buf.is_empty() {
            return Ok(());
        }
        let inner = &*self.inner;
        let len = buf.len() as u64;
        let end = offset + len;
        let bs = inner.opts.block_size;
        let (b0, b1) = (offset / bs, end.div_ceil(bs));
        let nblocks = inner.len.div_ceil(bs);
        let counters = &inner.http.counters;

        let mut st = inner.lock();
        // Follow sequential streams. A read that starts where a stream ended
        // (or a little after, within a block) continues it; the stream's
        // read-ahead window doubles, but never beyond what the stream has
        // read so far (so a small file overshoots by at most its own size),
        // nor 4 MiB + 5 % of that (a large file overshoots by at most that),
        // nor the configured cap. Read-ahead is issued in big steps: only
        // when less than half a window is left in flight ahead of the reader.
        st.tick += 1;
        let now = st.tick;
        let max_ra = inner.opts.max_readahead;
        let mut ahead = None;
        match st.streams.iter_mut().find(|s| s.continued_by(offset, bs)) {
            Some(s) => {
                s.consumed += len;
                // What a restore may fetch beyond the file: 4 MiB + 5 % of
                // what it has read (the byte budget flr is held to).
                let budget = (4 << 20) + s.consumed / 20;
                s.window = (s.window * 2)
                    .max(2 * len)
                    .min(s.consumed)
                    .min(budget)
                    .min(max_ra);
                s.end = end;
                s.used = now;
                let frontier = s.issued.max(end);
                if s.window > 0 && frontier < end + s.window / 2 {
                    s.issued = end + s.window;
                    ahead = Some((frontier, end + s.window));
                }
            }
            None => {
                let fresh = Stream {
                    end,
                    window: 0,
                    used: now,
                    consumed: len,
                    issued: end,
                };
                if st.streams.len() < STREAMS {
                    st.streams.push(fresh);
                } else if let Some(old) = st.streams.iter_mut().min_by_key(|s| s.used) {
                    *old = fresh;
                }
            }
        }
        let (ra_start, ra_end) = ahead.map_or((b1, b1), |(from, to)| {
            ((from / bs).max(b1), to.div_ceil(bs).min(nblocks))
        });

        // Decide what to fetch: the read's own blocks first, then read-ahead.
        let mut want = Vec::new();
        for b in (b0..b1).chain(ra_start.max(b1)..ra_end.max(b1)) {
            let own = b < b1;
            match st.slots.get(&b) {
                Some(Slot::Ready { .. }) | Some(Slot::Pending) => {
                    if own {
                        counters.hits.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(Slot::Failed(_)) if !own => {}
                _ => {
                    if inner.unwritten_block(b) {
                        continue;
                    }
                    if own {
                        counters.misses.fetch_add(1, Ordering::Relaxed);
                    }
                    st.slots.insert(b, Slot::Pending);
                    want.push(b);
                }
            }
        }
        drop(st);
        let per_req = inner.opts.max_request / bs;
        for (first, count) in coalesce(&want, per_req) {
            self.spawn(first, count);
        }

        // Copy each block out as soon as it is there.
        let mut done = vec![false; usize::try_from(b1 - b0).unwrap_or(0)];
        let mut left = done.len();
        let mut st = inner.lock();
        loop {
            for b in b0..b1 {
                let i = usize::try_from(b - b0).unwrap_or(0);
                if done[i] {
                    continue;
                }
                let bstart = b * bs;
                let s = offset.max(bstart);
                let e = end.min(bstart + inner.block_len(b));
                let dst = &mut buf[(s - offset) as usize..(e - offset) as usize];
                if inner.unwritten_block(b) {
                    dst.fill(0);
                    counters.zero_blocks.fetch_add(1, Ordering::Relaxed);
                } else {
                    match st.slots.get(&b) {
                        Some(Slot::Ready { data, tick }) => {
                            let old = *tick;
                            dst.copy_from_slice(
                                &data[(s - bstart) as usize..(e - bstart) as usize],
                            );
                            st.tick += 1;
                            let t = st.tick;
                            st.lru.remove(&old);
                            st.lru.insert(t, b);
                            if let Some(Slot::Ready { tick, .. }) = st.slots.get_mut(&b) {
                                *tick = t;
                            }
                        }
                        Some(Slot::Pending) => continue,
                        Some(Slot::Failed(e)) => {
                            let e = Arc::clone(e);
                            // Forget the failure so a later read tries again.
                            st.slots.remove(&b);
                            return Err(self.io_err(s, &e));
                        }
                        None => {
                            // Evicted before this read copied it: fetch again.
                            st.slots.insert(b, Slot::Pending);
                            drop(st);
                            self.spawn(b, 1);
                            st = inner.lock();
                            continue;
                        }
                    }
                }
                done[i] = true;
                left -= 1;
            }
            if left == 0 {
                return Ok(());
            }
            st = inner.ready.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Sorted block numbers to `(first, count)` runs of at most `max` blocks.
fn coalesce(blocks: &[u64], max: u64) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &b in blocks {
        match runs.last_mut() {
            Some((f, c)) if *f + *c == b && *c < max => *c += 1,
            _ => runs.push((b, 1)),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalescing() {
        assert_eq!(coalesce(&[], 4), vec![]);
        assert_eq!(
            coalesce(&[1, 2, 3, 5, 6, 7, 8, 9, 10], 4),
            vec![(1, 3), (5, 4), (9, 2)]
        );
    }

    #[test]
    fn read_at_is_object_safe_and_send() {
        fn takes(_: &dyn ReadAt) {}
        fn send_sync<T: Send + Sync>() {}
        send_sync::<BlobSource>();
        let _ = takes;
    }
}
