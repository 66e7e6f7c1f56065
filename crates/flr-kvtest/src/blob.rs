//! A Blob service for page blobs, served on the vault's HTTPS port under
//! the path-style account [`ACCOUNT`] (`https://127.0.0.1:PORT/flrblobtest/C/B`),
//! over real data: what `flr diff` needs and Azurite lacks (Get Page Ranges
//! with `prevsnapshot` / `x-ms-previous-snapshot-url`, its issue #812).
//!
//! Operations (REST version 2020-12-06 and later):
//! - Create Container (`PUT ?restype=container`);
//! - Put Blob (`x-ms-blob-type: PageBlob`, `x-ms-blob-content-length`, a
//!   multiple of 512);
//! - Put Page (`comp=page`, `x-ms-page-write: update|clear`, `Range` or
//!   `x-ms-range`, 512-aligned, inside the blob);
//! - Snapshot Blob (`comp=snapshot`, answers `x-ms-snapshot`);
//! - Get Blob (whole, or `Range`/`x-ms-range`; `snapshot=`; `If-Match`) and
//!   Get Blob Properties (`HEAD`);
//! - Get Page Ranges (`comp=pagelist`; `snapshot=`; a diff with
//!   `prevsnapshot=` or the managed-disk form `x-ms-previous-snapshot-url`;
//!   `maxresults`/`marker` with `NextMarker`), answering `PageRange` and
//!   `ClearRange` elements in offset order as the service does.
//!
//! Authorisation: a service SAS (`sr=b|bs|c`) or an account SAS checked by
//! HMAC-SHA256 with the account key (signature, start/expiry, permission,
//! resource type), Shared Key as the SDKs sign it, or an Entra bearer
//! token from this server's token endpoint for `https://storage.azure.com`.
//! Errors are the service's XML `<Error><Code/><Message/></Error>` with
//! `x-ms-error-code`.
//!
//! Data is kept sparsely: 64 KiB chunks that were written, shared between a
//! blob and its snapshots until one of them changes (copy on write). Each
//! 512-byte page remembers the write sequence number that last wrote it,
//! which is how a diff against an older snapshot finds the pages written
//! since (as the service does: by writes, not by content).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::routes::{Reply, Request};
use crate::token;
use crate::Shared;

/// The storage account's name (path-style, in the first path segment).
pub const ACCOUNT: &str = "flrblobtest";
/// The audience of Storage tokens.
pub(crate) const STORAGE_RESOURCE: &str = "https://storage.azure.com";

const PAGE: u64 = 512;
const CHUNK: u64 = 64 << 10;
const PAGES_PER_CHUNK: usize = (CHUNK / PAGE) as usize;

/// 64 KiB of a blob: its bytes and, per page, the write sequence number of
/// the last write (0: not written, reads as zeros).
#[derive(Clone)]
struct Chunk {
    data: Vec<u8>,
    seq: [u64; PAGES_PER_CHUNK],
}

impl Chunk {
    fn empty() -> Chunk {
        Chunk {
            data: vec![0; CHUNK as usize],
            seq: [0; PAGES_PER_CHUNK],
        }
    }
}

type Chunks = BTreeMap<u64, Arc<Chunk>>;

/// A blob's content at one moment.
#[derive(Clone)]
struct Content {
    len: u64,
    chunks: Chunks,
    etag: String,
    modified: i64,
}

struct Blob {
    content: Content,
    /// Snapshot time → content and the sequence number when it was taken.
    snapshots: BTreeMap<String, (Content, u64)>,
}

/// The account's state.
pub(crate) struct BlobStore {
    key: Vec<u8>,
    containers: HashSet<String>,
    blobs: HashMap<(String, String), Blob>,
    seq: u64,
    /// Most ranges per Get Page Ranges answer whatever `maxresults` asks
    /// (the service pages long lists on its own).
    pub(crate) page_list_max: usize,
    last_snapshot: i64,
    /// Bytes of blob data answered so far (Get Blob bodies).
    pub(crate) bytes_served: u64,
}

impl BlobStore {
    pub(crate) fn new() -> BlobStore {
        let key: Vec<u8> = (0..64).map(|_| rand::random::<u8>()).collect();
        BlobStore {
            key,
            containers: HashSet::new(),
            blobs: HashMap::new(),
            seq: 0,
            page_list_max: 10_000,
            last_snapshot: 0,
            bytes_served: 0,
        }
    }

    /// The account key, base64.
    pub(crate) fn key_b64(&self) -> String {
        b64std(&self.key)
    }

    pub(crate) fn create_container(&mut self, name: &str) -> bool {
        self.containers.insert(name.to_string())
    }

    pub(crate) fn create_page_blob(
        &mut self,
        container: &str,
        name: &str,
        len: u64,
    ) -> Result<(), BlobErr> {
        if !self.containers.contains(container) {
            return Err(BlobErr::new(
                404,
                "ContainerNotFound",
                "The specified container does not exist.",
            ));
        }
        if !len.is_multiple_of(PAGE) {
            return Err(BlobErr::new(
                400,
                "InvalidHeaderValue",
                "The value for one of the HTTP headers is not in the correct format.",
            )
            .detail("x-ms-blob-content-length", &len.to_string()));
        }
        let content = Content {
            len,
            chunks: BTreeMap::new(),
            etag: new_etag(),
            modified: crate::store::now(),
        };
        // Put Blob over an existing blob replaces it; its snapshots stay.
        match self.blobs.get_mut(&(container.into(), name.into())) {
            Some(b) => b.content = content,
            None => {
                self.blobs.insert(
                    (container.into(), name.into()),
                    Blob {
                        content,
                        snapshots: BTreeMap::new(),
                    },
                );
            }
        }
        Ok(())
    }

    fn blob_mut(&mut self, container: &str, name: &str) -> Result<&mut Blob, BlobErr> {
        if !self.containers.contains(container) {
            return Err(BlobErr::new(
                404,
                "ContainerNotFound",
                "The specified container does not exist.",
            ));
        }
        self.blobs
            .get_mut(&(container.to_string(), name.to_string()))
            .ok_or_else(not_found)
    }

    fn content(
        &self,
        container: &str,
        name: &str,
        snapshot: Option<&str>,
    ) -> Result<(&Content, u64), BlobErr> {
        if !self.containers.contains(container) {
            return Err(BlobErr::new(
                404,
                "ContainerNotFound",
                "The specified container does not exist.",
            ));
        }
        let b = self
            .blobs
            .get(&(container.to_string(), name.to_string()))
            .ok_or_else(not_found)?;
        match snapshot {
            None => Ok((&b.content, u64::MAX)),
            Some(s) => b
                .snapshots
                .get(s)
                .map(|(c, seq)| (c, *seq))
                .ok_or_else(not_found),
        }
    }

    /// Writes `data` at `off` (`clear`: zeros, pages no longer written).
    pub(crate) fn write_pages(
        &mut self,
        container: &str,
        name: &str,
        off: u64,
        len: u64,
        data: Option<&[u8]>,
    ) -> Result<(), BlobErr> {
        self.seq += 1;
        let seq = self.seq;
        let b = self.blob_mut(container, name)?;
        let c = &mut b.content;
        if !off.is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) || len == 0 {
            return Err(BlobErr::new(
                400,
                "InvalidPageRange",
                "The page range specified is invalid: it must start and end on 512-byte boundaries.",
            ));
        }
        if off.checked_add(len).is_none_or(|e| e > c.len) {
            return Err(BlobErr::new(
                416,
                "InvalidPageRange",
                "The page range specified is invalid.",
            ));
        }
        if let Some(d) = data {
            if d.len() as u64 != len {
                return Err(BlobErr::new(
                    400,
                    "InvalidHeaderValue",
                    "The value for one of the HTTP headers is not in the correct format.",
                )
                .detail("Content-Length", &d.len().to_string()));
            }
        }
        let mut at = off;
        while at < off + len {
            let ci = at / CHUNK;
            let within = at % CHUNK;
            let n = (CHUNK - within).min(off + len - at);
            let (w0, w1) = (within as usize, (within + n) as usize);
            match data {
                Some(d) => {
                    let src = &d[(at - off) as usize..(at - off + n) as usize];
                    let ch = Arc::make_mut(
                        c.chunks
                            .entry(ci)
                            .or_insert_with(|| Arc::new(Chunk::empty())),
                    );
                    ch.data[w0..w1].copy_from_slice(src);
                    for p in &mut ch.seq[w0 / PAGE as usize..w1 / PAGE as usize] {
                        *p = seq;
                    }
                }
                None => {
                    if let Some(arc) = c.chunks.get_mut(&ci) {
                        let ch = Arc::make_mut(arc);
                        ch.data[w0..w1].fill(0);
                        for p in &mut ch.seq[w0 / PAGE as usize..w1 / PAGE as usize] {
                            *p = 0;
                        }
                        if ch.seq.iter().all(|&s| s == 0) {
                            c.chunks.remove(&ci);
                        }
                    }
                }
            }
            at += n;
        }
        c.etag = new_etag();
        c.modified = crate::store::now();
        Ok(())
    }

    /// Takes a snapshot and returns its time (`2026-12-03T05:50:00.1234567Z`).
    pub(crate) fn snapshot(&mut self, container: &str, name: &str) -> Result<String, BlobErr> {
        // Snapshot times are unique, in 100 ns ticks.
        let now = now_ticks().max(self.last_snapshot + 1);
        self.last_snapshot = now;
        let seq = self.seq;
        let time = ticks_iso(now);
        let b = self.blob_mut(container, name)?;
        b.snapshots.insert(time.clone(), (b.content.clone(), seq));
        Ok(time)
    }

    fn read(c: &Content, off: u64, buf: &mut [u8]) {
        let mut at = off;
        let end = off + buf.len() as u64;
        while at < end {
            let ci = at / CHUNK;
            let within = at % CHUNK;
            let n = (CHUNK - within).min(end - at);
            let dst = &mut buf[(at - off) as usize..(at - off + n) as usize];
            match c.chunks.get(&ci) {
                Some(ch) => dst.copy_from_slice(&ch.data[within as usize..(within + n) as usize]),
                None => dst.fill(0),
            }
            at += n;
        }
    }

    /// The length of a blob, if it exists.
    pub(crate) fn read_len(&self, container: &str, name: &str) -> Option<u64> {
        self.content(container, name, None).ok().map(|(c, _)| c.len)
    }

    /// Reads the current content at `off` (zeros if there is no blob).
    pub(crate) fn read_into(&self, container: &str, name: &str, off: u64, buf: &mut [u8]) {
        match self.content(container, name, None) {
            Ok((c, _)) => Self::read(c, off, buf),
            Err(_) => buf.fill(0),
        }
    }

    /// Bytes of a blob (or snapshot) for the Rust API.
    pub(crate) fn read_blob(
        &self,
        container: &str,
        name: &str,
        snapshot: Option<&str>,
    ) -> Result<Vec<u8>, BlobErr> {
        let (c, _) = self.content(container, name, snapshot)?;
        let mut v = vec![0; usize::try_from(c.len).unwrap_or(usize::MAX)];
        Self::read(c, 0, &mut v);
        Ok(v)
    }
}

/// `(start, end_inclusive, cleared)` in offset order within `[lo, hi)`.
fn ranges(
    target: &Content,
    prev: Option<(&Content, u64)>,
    lo: u64,
    hi: u64,
) -> Vec<(u64, u64, bool)> {
    let mut out: Vec<(u64, u64, bool)> = Vec::new();
    let mut push = |s: u64, cleared: bool| {
        if s < lo || s >= hi {
            return;
        }
        match out.last_mut() {
            Some(last) if last.2 == cleared && last.1 + 1 == s => last.1 = s + PAGE - 1,
            _ => out.push((s, s + PAGE - 1, cleared)),
        }
    };
    let mut idx: Vec<u64> = target.chunks.keys().copied().collect();
    if let Some((p, _)) = prev {
        idx.extend(p.chunks.keys().copied());
        idx.sort_unstable();
        idx.dedup();
    }
    for ci in idx
        .into_iter()
        .filter(|ci| ci * CHUNK < hi && (ci + 1) * CHUNK > lo)
    {
        let t = target.chunks.get(&ci);
        let was_chunk = prev.and_then(|(p, _)| p.chunks.get(&ci));
        // A chunk still shared with the older snapshot was not written
        // since (writes copy a shared chunk first): nothing changed in it.
        if let (Some(t), Some(w)) = (t, was_chunk) {
            if Arc::ptr_eq(t, w) {
                continue;
            }
        }
        for i in 0..PAGES_PER_CHUNK {
            let s = ci * CHUNK + (i as u64) * PAGE;
            let tseq = t.map_or(0, |c| c.seq[i]);
            match prev {
                None => {
                    if tseq != 0 {
                        push(s, false);
                    }
                }
                Some((_, pseq)) => {
                    let was = was_chunk.map_or(0, |c| c.seq[i]);
                    if tseq > pseq {
                        push(s, false);
                    } else if tseq == 0 && was != 0 {
                        push(s, true);
                    }
                }
            }
        }
    }
    out
}

/// One refusal, as the Blob service sends it.
#[derive(Debug, Clone)]
pub(crate) struct BlobErr {
    pub(crate) status: u16,
    pub(crate) code: String,
    pub(crate) message: String,
    extra: Vec<(String, String)>,
}

impl BlobErr {
    pub(crate) fn new(status: u16, code: &str, message: &str) -> BlobErr {
        BlobErr {
            status,
            code: code.into(),
            message: message.into(),
            extra: Vec::new(),
        }
    }

    fn detail(mut self, name: &str, value: &str) -> BlobErr {
        self.extra.push(("HeaderName".into(), name.into()));
        self.extra.push(("HeaderValue".into(), value.into()));
        self
    }

    fn auth_detail(mut self, detail: &str) -> BlobErr {
        self.extra
            .push(("AuthenticationErrorDetail".into(), detail.into()));
        self
    }

    fn reply(&self) -> Reply {
        let rid = crate::store::new_version();
        let mut body = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{}</Code><Message>{}\nRequestId:{rid}\nTime:{}</Message>",
            self.code,
            xml_escape(&self.message),
            http_date(crate::store::now())
        );
        for (k, v) in &self.extra {
            body.push_str(&format!("<{k}>{}</{k}>", xml_escape(v)));
        }
        body.push_str("</Error>");
        let mut r = Reply::raw(self.status, body.into_bytes(), "application/xml");
        r.headers.push(("x-ms-error-code", self.code.clone()));
        r
    }
}

fn not_found() -> BlobErr {
    BlobErr::new(404, "BlobNotFound", "The specified blob does not exist.")
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn b64std(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn new_etag() -> String {
    format!(
        "\"0x8DC{}\"",
        &crate::store::new_version()[..12].to_ascii_uppercase()
    )
}

fn now_ticks() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos() / 100).unwrap_or(i64::MAX)
}

/// Days since 1970-01-01 → (y, m, d), proleptic Gregorian.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (y, m, d) → days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn ticks_iso(ticks: i64) -> String {
    let secs = ticks.div_euclid(10_000_000);
    let frac = ticks.rem_euclid(10_000_000);
    let (y, m, d) = civil(secs.div_euclid(86400));
    let r = secs.rem_euclid(86400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:07}Z",
        r / 3600,
        r % 3600 / 60,
        r % 60
    )
}

/// `2026-12-03T05:50:00Z` (fractions allowed, `Z` required) → Unix seconds.
fn parse_iso(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T').unwrap_or((s, "00:00:00"));
    let mut dp = date.split('-');
    let y: i64 = dp.next()?.parse().ok()?;
    let m: u32 = dp.next()?.parse().ok()?;
    let d: u32 = dp.next()?.parse().ok()?;
    let time = time.split('.').next()?;
    let mut tp = time.split(':');
    let h: i64 = tp.next()?.parse().ok()?;
    let mi: i64 = tp.next().unwrap_or("0").parse().ok()?;
    let se: i64 = tp.next().unwrap_or("0").parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86400 + h * 3600 + mi * 60 + se)
}

/// RFC 1123, as `Last-Modified` has it.
fn http_date(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs.div_euclid(86400);
    let (y, m, d) = civil(days);
    let r = secs.rem_euclid(86400);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        r / 3600,
        r % 3600 / 60,
        r % 60
    )
}

fn hmac(key: &[u8], text: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(text.as_bytes());
    b64std(&mac.finalize().into_bytes())
}

/// Signs a service SAS for a blob (`sr=b`), one of its snapshots
/// (`sr=bs`) or a container (`sr=c`, `blob` empty), version 2020-12-06.
pub(crate) fn service_sas(
    key_b64: &str,
    container: &str,
    blob: &str,
    snapshot: Option<&str>,
    permissions: &str,
    expiry: i64,
) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(key_b64)
        .unwrap_or_default();
    let sr = match (blob.is_empty(), snapshot) {
        (true, _) => "c",
        (false, None) => "b",
        (false, Some(_)) => "bs",
    };
    let resource = if blob.is_empty() {
        format!("/blob/{ACCOUNT}/{container}")
    } else {
        format!("/blob/{ACCOUNT}/{container}/{blob}")
    };
    let (st, se) = (
        ticks_iso((crate::store::now() - 300) * 10_000_000),
        ticks_iso(expiry * 10_000_000),
    );
    let (st, se) = (format!("{}Z", &st[..19]), format!("{}Z", &se[..19]));
    let sv = "2020-12-06";
    let to_sign = format!(
        "{permissions}\n{st}\n{se}\n{resource}\n\n\nhttps\n{sv}\n{sr}\n{}\n\n\n\n\n\n",
        snapshot.unwrap_or("")
    );
    let sig = hmac(&key, &to_sign);
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let mut q = format!(
        "sv={sv}&sr={sr}&sp={}&st={}&se={}&spr=https&sig={}",
        enc(permissions),
        enc(&st),
        enc(&se),
        enc(&sig)
    );
    if let Some(s) = snapshot {
        q = format!("snapshot={}&{q}", enc(s));
    }
    q
}

/// What an operation needs of a SAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Read,
    Write,
    Create,
    CreateContainer,
}

fn query_map(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                token::percent_decode(&k.replace('+', "%2B")),
                token::percent_decode(&v.replace('+', "%2B")),
            )
        })
        .collect()
}

fn auth_failed(msg: &str) -> BlobErr {
    BlobErr::new(
        403,
        "AuthenticationFailed",
        "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
    )
    .auth_detail(msg)
}

fn check_sas(
    key: &[u8],
    q: &HashMap<String, String>,
    container: &str,
    blob: &str,
    need: Need,
) -> Result<(), BlobErr> {
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let (sp, st, se, sv, spr, sip) = (
        get("sp"),
        get("st"),
        get("se"),
        get("sv"),
        get("spr"),
        get("sip"),
    );
    if sv < "2020-12-06" {
        return Err(auth_failed(&format!(
            "This test server checks SAS of version 2020-12-06 and later, not sv={sv}."
        )));
    }
    let account = q.contains_key("ss");
    let to_sign = if account {
        format!(
            "{ACCOUNT}\n{sp}\n{}\n{}\n{st}\n{se}\n{sip}\n{spr}\n{sv}\n{}\n",
            get("ss"),
            get("srt"),
            get("ses")
        )
    } else {
        let sr = get("sr");
        let resource = if sr == "c" {
            format!("/blob/{ACCOUNT}/{container}")
        } else {
            format!("/blob/{ACCOUNT}/{container}/{blob}")
        };
        let snap = if sr == "bs" { get("snapshot") } else { "" };
        format!(
            "{sp}\n{st}\n{se}\n{resource}\n{}\n{sip}\n{spr}\n{sv}\n{sr}\n{snap}\n{}\n{}\n{}\n{}\n{}\n{}",
            get("si"),
            get("ses"),
            get("rscc"),
            get("rscd"),
            get("rsce"),
            get("rscl"),
            get("rsct")
        )
    };
    if hmac(key, &to_sign) != get("sig") {
        return Err(auth_failed(&format!(
            "Signature did not match. String to sign used was {}",
            to_sign.replace('\n', "\\n")
        )));
    }
    let now = crate::store::now();
    let Some(expiry) = parse_iso(se) else {
        return Err(auth_failed(
            "Signed expiry time (se) is missing or malformed.",
        ));
    };
    let start = if st.is_empty() {
        Some(i64::MIN)
    } else {
        parse_iso(st)
    };
    if start.is_none_or(|s| s > now + 900) || expiry < now {
        return Err(auth_failed(&format!(
            "Signed expiry time [{se}] must be after signed start time [{st}] and the current time; the signature is not valid in the specified time frame."
        )));
    }
    if account {
        if !get("ss").contains('b') {
            return Err(BlobErr::new(
                403,
                "AuthorizationServiceMismatch",
                "This request is not authorized to perform this operation using this service.",
            ));
        }
        let srt = get("srt");
        let want = if need == Need::CreateContainer {
            'c'
        } else {
            'o'
        };
        if !srt.contains(want) {
            return Err(BlobErr::new(
                403,
                "AuthorizationResourceTypeMismatch",
                "This request is not authorized to perform this operation using this resource type.",
            ));
        }
    } else {
        let sr = get("sr");
        let ok = match sr {
            "c" => true,
            "b" => q.get("snapshot").is_none() || need == Need::Read,
            "bs" => need == Need::Read && q.get("snapshot").is_some(),
            _ => false,
        };
        if !ok || need == Need::CreateContainer {
            return Err(BlobErr::new(
                403,
                "AuthorizationResourceTypeMismatch",
                "This request is not authorized to perform this operation using this resource type.",
            ));
        }
    }
    let allowed = match need {
        Need::Read => sp.contains('r'),
        Need::Write => sp.contains('w'),
        Need::Create => sp.contains('w') || sp.contains('c'),
        Need::CreateContainer => sp.contains('c') || sp.contains('w'),
    };
    if !allowed {
        return Err(BlobErr::new(
            403,
            "AuthorizationPermissionMismatch",
            "This request is not authorized to perform this operation using this permission.",
        ));
    }
    Ok(())
}

/// Shared Key, as the SDKs sign it (version 2009-09-19 and later).
fn check_shared_key(key: &[u8], req: &Request, sig: &str) -> Result<(), BlobErr> {
    let h = |n: &str| req.header(n).unwrap_or("").to_string();
    let length = h("content-length");
    let length = if length == "0" { String::new() } else { length };
    let mut xms: Vec<(String, String)> = req
        .headers
        .iter()
        .filter(|(k, v)| k.starts_with("x-ms-") && !v.is_empty())
        .map(|(k, v)| (k.clone(), v.trim().to_string()))
        .collect();
    xms.sort();
    let canon_headers: String = xms.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in query_map(&req.query) {
        params.entry(k.to_ascii_lowercase()).or_default().push(v);
    }
    let mut canon_query = String::new();
    for (k, mut v) in params {
        v.sort();
        canon_query.push_str(&format!("\n{k}:{}", v.join(",")));
    }
    let forms = [format!("/{ACCOUNT}{}", req.path), req.path.clone()];
    for resource in &forms {
        let to_sign = format!(
            "{}\n{}\n{}\n{length}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{canon_headers}{resource}{canon_query}",
            req.method,
            h("content-encoding"),
            h("content-language"),
            h("content-md5"),
            h("content-type"),
            h("date"),
            h("if-modified-since"),
            h("if-match"),
            h("if-none-match"),
            h("if-unmodified-since"),
            h("range"),
        );
        if hmac(key, &to_sign) == sig {
            return Ok(());
        }
    }
    Err(auth_failed(
        "The MAC signature found in the HTTP request is not the same as any computed signature.",
    ))
}

fn check_bearer(token: &str) -> Result<(), BlobErr> {
    let Some(c) = token::claims(token) else {
        return Err(BlobErr::new(
            401,
            "InvalidAuthenticationInfo",
            "Authentication information is not given in the correct format.",
        ));
    };
    let aud = c["aud"].as_str().unwrap_or("").trim_end_matches('/');
    if aud != STORAGE_RESOURCE {
        return Err(BlobErr::new(
            401,
            "InvalidAuthenticationInfo",
            "Audience validation failed. Audience did not match.",
        ));
    }
    if c["exp"].as_i64().is_some_and(|e| e <= crate::store::now()) {
        return Err(auth_failed(
            "Lifetime validation failed. The token is expired.",
        ));
    }
    Ok(())
}

fn authorize(
    store: &BlobStore,
    req: &Request,
    q: &HashMap<String, String>,
    container: &str,
    blob: &str,
    need: Need,
) -> Result<(), BlobErr> {
    if q.contains_key("sig") {
        return check_sas(&store.key, q, container, blob, need);
    }
    match req.authorization.as_deref().and_then(|a| a.split_once(' ')) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("SharedKey") => {
            let (acct, sig) = rest.split_once(':').unwrap_or(("", rest));
            if acct != ACCOUNT {
                return Err(auth_failed("The account named in the Authorization header is not this account."));
            }
            check_shared_key(&store.key, req, sig)
        }
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("Bearer") => check_bearer(t.trim()),
        _ => Err(BlobErr::new(
            401,
            "NoAuthenticationInformation",
            "Server failed to authenticate the request. Please refer to the information in the www-authenticate header.",
        )),
    }
}

/// `bytes=S-E` → (S, E inclusive); `bytes=S-` → (S, None).
fn parse_range(v: &str) -> Option<(u64, Option<u64>)> {
    let r = v.trim().strip_prefix("bytes=")?;
    let (s, e) = r.split_once('-')?;
    let s = s.trim().parse().ok()?;
    let e = if e.trim().is_empty() {
        None
    } else {
        Some(e.trim().parse().ok()?)
    };
    Some((s, e))
}

fn ok(status: u16) -> Reply {
    Reply::raw(status, Vec::new(), "")
}

fn props_headers(r: &mut Reply, c: &Content) {
    r.headers.push(("etag", c.etag.clone()));
    r.headers.push(("last-modified", http_date(c.modified)));
    r.headers.push(("x-ms-blob-type", "PageBlob".into()));
    r.headers.push(("x-ms-blob-sequence-number", "0".into()));
    r.headers.push(("x-ms-version", "2021-08-06".into()));
    r.headers.push(("x-ms-server-encrypted", "true".into()));
    r.headers.push(("accept-ranges", "bytes".into()));
    r.headers.push(("x-ms-lease-state", "available".into()));
    r.headers.push(("x-ms-lease-status", "unlocked".into()));
    r.headers
        .push(("x-ms-creation-time", http_date(c.modified)));
}

/// Whether the request is for the blob account (its first path segment).
pub(crate) fn is_blob_path(path: &str) -> bool {
    path.trim_start_matches('/').split('/').next() == Some(ACCOUNT)
}

/// Serves one Blob request.
pub(crate) fn route(shared: &Shared, req: &Request) -> (Reply, bool) {
    match serve(shared, req) {
        Ok(r) => (r, true),
        Err(e) => {
            let authorized = !matches!(e.status, 401 | 403);
            (e.reply(), authorized)
        }
    }
}

fn decode_path(p: &str) -> String {
    token::percent_decode(&p.replace('+', "%2B"))
}

fn serve(shared: &Shared, req: &Request) -> Result<Reply, BlobErr> {
    let path = req.path.trim_start_matches('/');
    let mut segs = path.splitn(3, '/');
    let _account = segs.next();
    let container = decode_path(segs.next().unwrap_or(""));
    let blob = decode_path(segs.next().unwrap_or("").trim_end_matches('/'));
    let q: HashMap<String, String> = query_map(&req.query).into_iter().collect();
    let comp = q.get("comp").map(String::as_str).unwrap_or("");
    let snapshot = q.get("snapshot").map(String::as_str);
    let method = req.method.as_str();
    let mut store = shared.blobs();
    let need = match (method, comp) {
        ("GET" | "HEAD", _) => Need::Read,
        ("PUT", "") if blob.is_empty() => Need::CreateContainer,
        ("PUT", "") => Need::Create,
        _ => Need::Write,
    };
    if container.is_empty() {
        return Err(BlobErr::new(
            400,
            "InvalidUri",
            "The requested URI does not represent any resource on the server.",
        ));
    }
    authorize(&store, req, &q, &container, &blob, need)?;
    if blob.is_empty() {
        if method == "PUT" && q.get("restype").map(String::as_str) == Some("container") {
            if !store.create_container(&container) {
                return Err(BlobErr::new(
                    409,
                    "ContainerAlreadyExists",
                    "The specified container already exists.",
                ));
            }
            let mut r = ok(201);
            r.headers.push(("etag", new_etag()));
            r.headers
                .push(("last-modified", http_date(crate::store::now())));
            return Ok(r);
        }
        return Err(BlobErr::new(400, "UnsupportedHttpVerb", "The resource doesn't support the specified HTTP verb or operation on a container in this test server."));
    }
    match (method, comp) {
        ("PUT", "") => {
            let kind = req.header("x-ms-blob-type").unwrap_or("");
            if !kind.eq_ignore_ascii_case("PageBlob") {
                return Err(BlobErr::new(400, "InvalidHeaderValue", "This test server stores page blobs only (x-ms-blob-type: PageBlob).")
                    .detail("x-ms-blob-type", kind));
            }
            let len = req.header("x-ms-blob-content-length").and_then(|v| v.trim().parse::<u64>().ok());
            let Some(len) = len else {
                return Err(BlobErr::new(400, "MissingRequiredHeader", "An HTTP header that's mandatory for this request is not specified.")
                    .detail("x-ms-blob-content-length", ""));
            };
            store.create_page_blob(&container, &blob, len)?;
            let (c, _) = store.content(&container, &blob, None)?;
            let mut r = ok(201);
            r.headers.push(("etag", c.etag.clone()));
            r.headers.push(("last-modified", http_date(c.modified)));
            r.headers.push(("x-ms-request-server-encrypted", "true".into()));
            Ok(r)
        }
        ("PUT", "page") => {
            let range = req.header("x-ms-range").or_else(|| req.header("range")).unwrap_or("");
            let Some((s, Some(e))) = parse_range(range) else {
                return Err(BlobErr::new(400, "InvalidHeaderValue", "The value for one of the HTTP headers is not in the correct format.")
                    .detail("Range", range));
            };
            if (e + 1) % PAGE != 0 || s % PAGE != 0 || e < s {
                return Err(BlobErr::new(416, "InvalidPageRange", "The page range specified is invalid."));
            }
            let write = req.header("x-ms-page-write").unwrap_or("").to_ascii_lowercase();
            let data = match write.as_str() {
                "update" => Some(req.body.as_slice()),
                "clear" => None,
                other => {
                    return Err(BlobErr::new(400, "InvalidHeaderValue", "The value for one of the HTTP headers is not in the correct format.")
                        .detail("x-ms-page-write", other))
                }
            };
            if let Some(m) = req.header("if-match").filter(|m| *m != "*") {
                let (c, _) = store.content(&container, &blob, None)?;
                if c.etag != m {
                    return Err(BlobErr::new(412, "ConditionNotMet", "The condition specified using HTTP conditional header(s) is not met."));
                }
            }
            store.write_pages(&container, &blob, s, e - s + 1, data)?;
            let (c, _) = store.content(&container, &blob, None)?;
            let mut r = ok(201);
            r.headers.push(("etag", c.etag.clone()));
            r.headers.push(("last-modified", http_date(c.modified)));
            r.headers.push(("x-ms-blob-sequence-number", "0".into()));
            r.headers.push(("x-ms-request-server-encrypted", "true".into()));
            Ok(r)
        }
        ("PUT", "snapshot") => {
            let time = store.snapshot(&container, &blob)?;
            let (c, _) = store.content(&container, &blob, None)?;
            let mut r = ok(201);
            r.headers.push(("x-ms-snapshot", time));
            r.headers.push(("etag", c.etag.clone()));
            r.headers.push(("last-modified", http_date(c.modified)));
            Ok(r)
        }
        ("HEAD", "") => {
            let (c, _) = store.content(&container, &blob, snapshot)?;
            let mut r = ok(200);
            props_headers(&mut r, c);
            r.headers.push(("content-length", c.len.to_string()));
            r.headers.push(("content-type", "application/octet-stream".into()));
            Ok(r)
        }
        ("GET", "") => {
            let (c, _) = store.content(&container, &blob, snapshot)?;
            if let Some(m) = req.header("if-match").filter(|m| *m != "*") {
                if c.etag != m {
                    return Err(BlobErr::new(412, "ConditionNotMet", "The condition specified using HTTP conditional header(s) is not met."));
                }
            }
            let range = req.header("x-ms-range").or_else(|| req.header("range"));
            let (start, end, partial) = match range.map(parse_range) {
                None => (0, c.len, false),
                Some(None) => (0, c.len, false),
                Some(Some((s, e))) => {
                    if s >= c.len {
                        let mut r = BlobErr::new(416, "InvalidRange", "The range specified is invalid for the current size of the resource.").reply();
                        r.headers.push(("content-range", format!("bytes */{}", c.len)));
                        return Ok(r);
                    }
                    let e = e.map_or(c.len, |e| (e + 1).min(c.len));
                    (s, e, true)
                }
            };
            if end - start > (256 << 20) {
                return Err(BlobErr::new(400, "InvalidRange", "This test server answers at most 256 MiB per Get Blob; ask for a range."));
            }
            let mut body = vec![0u8; (end - start) as usize];
            BlobStore::read(c, start, &mut body);
            let mut r = Reply::raw(if partial { 206 } else { 200 }, Vec::new(), "application/octet-stream");
            props_headers(&mut r, c);
            if partial {
                r.headers.push(("content-range", format!("bytes {start}-{}/{}", end - 1, c.len)));
            }
            store.bytes_served += body.len() as u64;
            r.set_body(body);
            Ok(r)
        }
        ("GET", "pagelist") => page_list(&store, req, &q, &container, &blob, snapshot),
        _ => Err(BlobErr::new(400, "UnsupportedHttpVerb", "The resource doesn't support the specified HTTP verb or operation in this test server.")),
    }
}

fn page_list(
    store: &BlobStore,
    req: &Request,
    q: &HashMap<String, String>,
    container: &str,
    blob: &str,
    snapshot: Option<&str>,
) -> Result<Reply, BlobErr> {
    let (target, _) = store.content(container, blob, snapshot)?;
    // The older snapshot: of this blob (`prevsnapshot`), or any snapshot
    // URL of it (`x-ms-previous-snapshot-url`, as managed disks use).
    let prev = if let Some(p) = q.get("prevsnapshot") {
        Some(store.content(container, blob, Some(p)).map_err(|_| {
            BlobErr::new(
                409,
                "PreviousSnapshotNotFound",
                "The previous snapshot is not found.",
            )
        })?)
    } else if let Some(url) = req.header("x-ms-previous-snapshot-url") {
        let (path, query) = url
            .split_once("://")
            .and_then(|(_, r)| r.split_once('/'))
            .map(|(_, p)| p.split_once('?').unwrap_or((p, "")))
            .unwrap_or(("", ""));
        let pq: HashMap<String, String> = query_map(query).into_iter().collect();
        let mut ps = path.splitn(3, '/');
        let (_, pc, pb) = (
            ps.next(),
            decode_path(ps.next().unwrap_or("")),
            decode_path(ps.next().unwrap_or("")),
        );
        let Some(ptime) = pq.get("snapshot") else {
            return Err(BlobErr::new(
                400,
                "InvalidHeaderValue",
                "x-ms-previous-snapshot-url must name a snapshot.",
            )
            .detail(
                "x-ms-previous-snapshot-url",
                url.split('?').next().unwrap_or(""),
            ));
        };
        if pq.contains_key("sig") {
            check_sas(&store.key, &pq, &pc, &pb, Need::Read)?;
        }
        if pc != container || pb != blob {
            return Err(BlobErr::new(
                409,
                "PreviousSnapshotOperationNotSupported",
                "The previous snapshot is not of the same blob or disk family.",
            ));
        }
        Some(store.content(&pc, &pb, Some(ptime)).map_err(|_| {
            BlobErr::new(
                409,
                "PreviousSnapshotNotFound",
                "The previous snapshot is not found.",
            )
        })?)
    } else {
        None
    };
    let (lo, hi) = match req
        .header("x-ms-range")
        .or_else(|| req.header("range"))
        .and_then(parse_range)
    {
        Some((s, e)) => (s, e.map_or(target.len, |e| e + 1)),
        None => (0, target.len),
    };
    let marker: u64 = q
        .get("marker")
        .and_then(|m| m.strip_prefix("2!"))
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    let max = q
        .get("maxresults")
        .and_then(|m| m.parse::<usize>().ok())
        .filter(|&m| m > 0)
        .unwrap_or(usize::MAX)
        .min(store.page_list_max);
    let all = ranges(target, prev, lo.max(marker), hi.min(target.len));
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><PageList>");
    for (s, e, cleared) in all.iter().take(max) {
        let tag = if *cleared { "ClearRange" } else { "PageRange" };
        xml.push_str(&format!("<{tag}><Start>{s}</Start><End>{e}</End></{tag}>"));
    }
    match all.get(max) {
        Some((next, _, _)) => xml.push_str(&format!("<NextMarker>2!{next}</NextMarker>")),
        None => xml.push_str("<NextMarker />"),
    }
    xml.push_str("</PageList>");
    let mut r = Reply::raw(200, xml.into_bytes(), "application/xml");
    r.headers.push(("etag", target.etag.clone()));
    r.headers
        .push(("last-modified", http_date(target.modified)));
    r.headers
        .push(("x-ms-blob-content-length", target.len.to_string()));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        let t = parse_iso("2026-12-03T05:50:07Z").unwrap();
        assert_eq!(ticks_iso(t * 10_000_000), "2026-12-03T05:50:07.0000000Z");
        assert_eq!(parse_iso("2026-12-03T05:50:07.1234567Z"), Some(t));
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(parse_iso("1970-01-02T00:00:00Z"), Some(86400));
        assert!(parse_iso("2026-13-03T05:50:07Z").is_none());
    }

    #[test]
    fn diff_by_writes_and_clears() {
        let mut s = BlobStore::new();
        s.create_container("c");
        s.create_page_blob("c", "b", 1 << 20).unwrap();
        s.write_pages("c", "b", 0, 2048, Some(&[1; 2048])).unwrap();
        s.write_pages("c", "b", 70 << 10, 512, Some(&[2; 512]))
            .unwrap();
        let old = s.snapshot("c", "b").unwrap();
        s.write_pages("c", "b", 512, 512, Some(&[1; 512])).unwrap(); // same bytes: still a write
        s.write_pages("c", "b", 70 << 10, 512, None).unwrap();
        let new = s.snapshot("c", "b").unwrap();
        let (t, _) = s.content("c", "b", Some(&new)).unwrap();
        let p = s.content("c", "b", Some(&old)).unwrap();
        assert_eq!(
            ranges(t, Some(p), 0, 1 << 20),
            vec![(512, 1023, false), (70 << 10, (70 << 10) + 511, true)]
        );
        assert_eq!(ranges(t, None, 0, 1 << 20), vec![(0, 2047, false)]);
        assert!(s.write_pages("c", "b", 100, 512, None).is_err());
        assert_eq!(
            s.write_pages("c", "b", 1 << 20, 512, None)
                .unwrap_err()
                .status,
            416
        );
    }
}
