//! The REST calls flr makes (Get Blob Properties, Get Blob with a range,
//! Get Page Ranges), each with retries, ETag pinning and counting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::header::{HeaderMap, IF_MATCH};
use reqwest::{Method, StatusCode};

use crate::location::{BlobLocation, API_VERSION};
use crate::{BlobError, BlobOptions, Counters};

/// What Get Blob Properties said.
pub(crate) struct Properties {
    pub(crate) len: u64,
    pub(crate) etag: Option<String>,
    pub(crate) page_blob: bool,
}

/// One failed attempt, and whether another might succeed.
struct Attempt {
    retry: bool,
    msg: String,
    request_id: Option<String>,
    changed: bool,
    /// The service refused the bearer token: worth one retry with a new one.
    token_refused: bool,
    /// The HTTP status of a refusal (none when no response arrived or the
    /// response itself was wrong).
    status: Option<u16>,
}

impl Attempt {
    /// A failure with no refusal status behind it: no answer, or an answer
    /// that was wrong (cut off, another range).
    fn failed(retry: bool, msg: impl Into<String>, request_id: Option<String>) -> Self {
        Attempt {
            retry,
            msg: msg.into(),
            request_id,
            changed: false,
            token_refused: false,
            status: None,
        }
    }

    fn transient(msg: impl Into<String>) -> Self {
        Attempt::failed(true, msg, None)
    }
}

pub(crate) struct Http {
    client: reqwest::Client,
    loc: BlobLocation,
    etag: OnceLock<String>,
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    pub(crate) counters: Arc<Counters>,
    seed: AtomicU64,
    bearer: Option<Arc<flr_azauth::Bearer>>,
}

enum Op {
    Head,
    Range {
        off: u64,
        len: u64,
    },
    PageList {
        marker: Option<String>,
    },
    /// Get Page Ranges against an older snapshot.
    PageDiff {
        marker: Option<String>,
        prev: crate::PreviousSnapshot,
    },
}

enum Reply {
    Head(Properties),
    /// Ranges, continuation marker, and the blob's ETag as the answer gave it.
    Pages(Vec<(u64, u64)>, Option<String>, Option<String>),
}

impl Http {
    pub(crate) fn new(
        loc: BlobLocation,
        opts: &BlobOptions,
        counters: Arc<Counters>,
    ) -> Result<Self, BlobError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(opts.request_timeout)
            .pool_max_idle_per_host(opts.concurrency.max(1) * 2);
        if let Some(ca) = &opts.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| BlobError::Location(format!("CA file {}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| BlobError::Location(format!("CA file {}: {e}", ca.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        if opts.bearer.is_some() && loc.url().scheme() != "https" {
            return Err(BlobError::Location(format!(
                "{}: Entra ID tokens are only sent over https",
                loc.shown()
            )));
        }
        let client = builder
            .build()
            .map_err(|e| BlobError::Location(format!("HTTP client: {e}")))?;
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Ok(Http {
            client,
            loc,
            etag: OnceLock::new(),
            max_attempts: opts.max_attempts.max(1),
            base_delay: opts.base_delay,
            max_delay: opts.max_delay,
            counters,
            seed: AtomicU64::new(seed),
            bearer: opts.bearer.clone(),
        })
    }

    /// The bearer token for a request (cached; fetched on a blocking
    /// thread when it must be renewed).
    async fn token(&self) -> Result<Option<zeroize::Zeroizing<String>>, Attempt> {
        let Some(b) = self.bearer.clone() else {
            return Ok(None);
        };
        let t = tokio::task::spawn_blocking(move || b.token())
            .await
            .map_err(|e| Attempt::transient(format!("token task: {e}")))?;
        match t {
            Ok(t) if t.is_empty() => Ok(None),
            Ok(t) => Ok(Some(t)),
            Err(e) => Err(Attempt::failed(
                false,
                format!("no Storage token (Entra ID): {e}"),
                None,
            )),
        }
    }

    pub(crate) fn shown(&self) -> &str {
        self.loc.shown()
    }

    /// The ETag pinned at open.
    pub(crate) fn etag(&self) -> Option<&str> {
        self.etag.get().map(String::as_str)
    }

    /// Reads the blob's size, ETag and type, and pins the ETag for every
    /// later request.
    pub(crate) async fn properties(&self) -> Result<Properties, BlobError> {
        match self.call(Op::Head, "get properties").await? {
            Reply::Head(p) => {
                if let Some(e) = &p.etag {
                    let _ = self.etag.set(e.clone());
                }
                Ok(p)
            }
            _ => unreachable!("HEAD returns properties"),
        }
    }

    /// The written ranges of a page blob, following continuation markers,
    /// and the ETag of the blob the first answer described (it may be sent
    /// before the ETag is pinned, alongside [`Http::properties`]).
    pub(crate) async fn page_ranges(&self) -> Result<(Vec<(u64, u64)>, Option<String>), BlobError> {
        let mut ranges = Vec::new();
        let mut marker = None;
        let mut first_etag = None;
        loop {
            match self
                .call(Op::PageList { marker }, "get page ranges")
                .await?
            {
                Reply::Pages(mut r, next, etag) => {
                    if first_etag.is_none() {
                        first_etag = etag;
                    }
                    ranges.append(&mut r);
                    match next {
                        Some(m) if !m.is_empty() => marker = Some(m),
                        _ => break,
                    }
                }
                _ => unreachable!("pagelist returns ranges"),
            }
        }
        Ok((ranges, first_etag))
    }

    /// The pages written or cleared since `prev` (inclusive ranges in offset
    /// order), following continuation markers; and the answers' count.
    pub(crate) async fn page_diff(
        &self,
        prev: &crate::PreviousSnapshot,
    ) -> Result<(Vec<(u64, u64)>, u64), BlobError> {
        let mut ranges = Vec::new();
        let mut marker = None;
        let mut answers = 0;
        loop {
            let op = Op::PageDiff {
                marker,
                prev: prev.clone(),
            };
            match self.call(op, "get page ranges diff").await? {
                Reply::Pages(mut r, next, _) => {
                    answers += 1;
                    ranges.append(&mut r);
                    match next {
                        Some(m) if !m.is_empty() => marker = Some(m),
                        _ => break,
                    }
                }
                _ => unreachable!("pagelist returns ranges"),
            }
        }
        Ok((ranges, answers))
    }

    /// `len` bytes at `off`, exactly.
    pub(crate) async fn range(&self, off: u64, len: u64) -> Result<Bytes, BlobError> {
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
        self.range_into(off, &mut buf).await?;
        Ok(Bytes::from(buf))
    }

    /// `buf.len()` bytes at `off`, read from the response straight into
    /// `buf` (no copy in between). A retry after a body cut off part way
    /// asks only for the bytes still missing.
    pub(crate) async fn range_into(&self, off: u64, buf: &mut [u8]) -> Result<(), BlobError> {
        let len = buf.len();
        let mut done = 0usize;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.fill(off, buf, &mut done).await {
                Ok(()) => return Ok(()),
                Err(a) => {
                    let what = format!("read of {len} bytes at {off:#x}");
                    if let Some(e) = self.give_up(a, &what, attempt) {
                        return Err(e);
                    }
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
            }
        }
    }

    /// One attempt of [`Http::range_into`]: asks for `buf[*done..]` and
    /// copies each piece of the body as it arrives, advancing `done`.
    async fn fill(&self, off: u64, buf: &mut [u8], done: &mut usize) -> Result<(), Attempt> {
        let at = off + *done as u64;
        let want = (buf.len() - *done) as u64;
        let (mut resp, request_id) = self.send(&Op::Range { off: at, len: want }).await?;
        let fail = |retry: bool, msg: String| Attempt::failed(retry, msg, request_id.clone());
        let status = resp.status();
        if status != StatusCode::PARTIAL_CONTENT && !(at == 0 && status.is_success()) {
            return Err(fail(
                false,
                format!("expected 206 for a range read, got {}", status.as_u16()),
            ));
        }
        if let Some(msg) = wrong_range(resp.headers(), at, want) {
            return Err(fail(true, msg));
        }
        loop {
            match resp.chunk().await {
                Ok(Some(piece)) => {
                    self.counters.add_bytes(piece.len());
                    let Some(dst) = buf.get_mut(*done..*done + piece.len()) else {
                        return Err(fail(
                            true,
                            format!("long body: more than the {want} bytes asked for"),
                        ));
                    };
                    dst.copy_from_slice(&piece);
                    *done += piece.len();
                }
                Ok(None) if *done == buf.len() => return Ok(()),
                Ok(None) => {
                    return Err(fail(
                        true,
                        format!(
                            "short body: {} of {want} bytes",
                            *done as u64 + want - buf.len() as u64
                        ),
                    ))
                }
                Err(e) => return Err(fail(true, format!("body cut off: {}", describe(&e)))),
            }
        }
    }

    /// The error to end with after `a` failed attempt number `attempt`, or
    /// `None` when another attempt may succeed.
    fn give_up(&self, a: Attempt, what: &str, attempt: u32) -> Option<BlobError> {
        if a.changed {
            return Some(BlobError::Changed {
                location: self.loc.shown().to_string(),
                etag: self.etag.get().cloned().unwrap_or_default(),
                request_id: a.request_id.unwrap_or_else(|| "none".into()),
            });
        }
        // A new token that is refused too will not do better later.
        if !a.retry || attempt >= self.max_attempts || (a.token_refused && attempt >= 2) {
            return Some(BlobError::Request {
                location: self.loc.shown().to_string(),
                what: what.to_string(),
                attempts: attempt,
                msg: a.msg,
                request_id: a.request_id.unwrap_or_else(|| "none".into()),
                status: a.status,
            });
        }
        None
    }

    async fn call(&self, op: Op, what: &str) -> Result<Reply, BlobError> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.once(&op).await {
                Ok(r) => return Ok(r),
                Err(a) => {
                    if let Some(e) = self.give_up(a, what, attempt) {
                        return Err(e);
                    }
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
            }
        }
    }

    /// Exponential backoff with jitter: a uniform pick in [d/2, d] where d
    /// doubles from the base delay up to the cap.
    fn backoff(&self, attempt: u32) -> Duration {
        let d = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        // xorshift64: jitter needs no cryptographic quality.
        let mut x = self.seed.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.store(x, Ordering::Relaxed);
        let frac = (x % 1000) as f64 / 1000.0;
        d.mul_f64(0.5 + frac / 2.0)
    }

    /// Sends one request for `op`; a refusal (any status but success) is
    /// the failed attempt, with its request id and whether to retry.
    async fn send(&self, op: &Op) -> Result<(reqwest::Response, Option<String>), Attempt> {
        let mut url = self.loc.url().clone();
        let method = match op {
            Op::Head => Method::HEAD,
            _ => Method::GET,
        };
        let mut prev_url = None;
        match op {
            Op::PageList { marker } => {
                let mut q = url.query_pairs_mut();
                q.append_pair("comp", "pagelist");
                if let Some(m) = marker {
                    q.append_pair("marker", m);
                }
            }
            Op::PageDiff { marker, prev } => {
                let mut q = url.query_pairs_mut();
                q.append_pair("comp", "pagelist");
                match prev {
                    crate::PreviousSnapshot::Snapshot(t) => {
                        q.append_pair("prevsnapshot", t);
                    }
                    crate::PreviousSnapshot::Url(loc) => prev_url = Some(loc.url().to_string()),
                }
                if let Some(m) = marker {
                    q.append_pair("marker", m);
                }
            }
            _ => {}
        }
        let mut req = self
            .client
            .request(method, url)
            .header("x-ms-version", API_VERSION);
        if let Some(p) = prev_url {
            req = req.header("x-ms-previous-snapshot-url", p);
        }
        if let Op::Range { off, len } = op {
            let end = off + len - 1;
            req = req.header("x-ms-range", format!("bytes={off}-{end}"));
        }
        if let (Some(etag), false) = (self.etag.get(), matches!(op, Op::Head)) {
            req = req.header(IF_MATCH, etag.as_str());
        }
        let authenticated = match self.token().await? {
            Some(t) => {
                req = req.bearer_auth(t.as_str());
                true
            }
            None => false,
        };
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let resp = req
            .send()
            .await
            .map_err(|e| Attempt::transient(describe(&e)))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let request_id = header(&headers, "x-ms-request-id");
        if !status.is_success() {
            let code = header(&headers, "x-ms-error-code");
            let body = resp.bytes().await.unwrap_or_default();
            self.counters.add_bytes(body.len());
            let code = code.or_else(|| xml_tag(&body, "Code"));
            // Why authentication failed ("Lifetime validation failed. The
            // token is expired."), where the service says.
            let detail = xml_tag(&body, "AuthenticationErrorDetail")
                .or_else(|| {
                    (code.as_deref() == Some("AuthenticationFailed"))
                        .then(|| xml_tag(&body, "Message"))
                        .flatten()
                })
                .map(|d| format!(": {}", d.lines().next().unwrap_or("").trim()))
                .unwrap_or_default();
            let msg = format!(
                "HTTP {}{}{detail}{}",
                status.as_u16(),
                code.as_deref().map(|c| format!(" {c}")).unwrap_or_default(),
                hint(status)
            );
            // A refused token (expired, revoked): fetch a new one and retry,
            // once. Storage answers an expired token with 403
            // AuthenticationFailed, not 401.
            let stale_token = authenticated
                && (status == StatusCode::UNAUTHORIZED
                    || (status == StatusCode::FORBIDDEN
                        && code.as_deref() == Some("AuthenticationFailed")));
            if stale_token {
                if let Some(b) = &self.bearer {
                    b.invalidate();
                }
            }
            return Err(Attempt {
                retry: status.is_server_error()
                    || stale_token
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::REQUEST_TIMEOUT,
                changed: status == StatusCode::PRECONDITION_FAILED,
                token_refused: stale_token,
                status: Some(status.as_u16()),
                msg,
                request_id,
            });
        }
        Ok((resp, request_id))
    }

    /// One attempt of a call with a small answer (properties, page list);
    /// range reads go through [`Http::range_into`].
    async fn once(&self, op: &Op) -> Result<Reply, Attempt> {
        let (resp, request_id) = self.send(op).await?;
        let headers = resp.headers().clone();
        let fail = |msg: String| Attempt::failed(true, msg, request_id.clone());
        match op {
            Op::Head => {
                let len = header(&headers, "content-length")
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| fail("no Content-Length in the blob's properties".into()))?;
                Ok(Reply::Head(Properties {
                    len,
                    etag: header(&headers, "etag"),
                    page_blob: header(&headers, "x-ms-blob-type")
                        .is_some_and(|t| t.eq_ignore_ascii_case("PageBlob")),
                }))
            }
            Op::Range { .. } => unreachable!("range reads go through range_into"),
            Op::PageList { .. } | Op::PageDiff { .. } => {
                let body = resp
                    .bytes()
                    .await
                    .map_err(|e| fail(format!("body cut off: {}", describe(&e))))?;
                self.counters.add_bytes(body.len());
                let diff = matches!(op, Op::PageDiff { .. });
                let (ranges, next) = crate::pages::parse_page_list(&body, diff)
                    .ok_or_else(|| fail("unreadable page list".into()))?;
                Ok(Reply::Pages(ranges, next, header(&headers, "etag")))
            }
        }
    }
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.to_string())
}

/// Why a 206 answer is not the `len` bytes at `off` that were asked for,
/// by its `Content-Range` (`bytes FIRST-LAST/TOTAL`): a proxy or cache in
/// between that answers another range would otherwise put other bytes of
/// the disk in their place. `None`: it is (or the header is absent, as in
/// a 200 for a whole blob; the length is checked as the body arrives).
fn wrong_range(h: &HeaderMap, off: u64, len: u64) -> Option<String> {
    let v = h.get("content-range")?.to_str().unwrap_or("");
    let span = v
        .trim()
        .strip_prefix("bytes ")
        .and_then(|r| r.split('/').next())
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?)));
    match span {
        Some((first, last)) if first == off && last.checked_add(1) == off.checked_add(len) => None,
        _ => Some(format!(
            "the answer is for Content-Range {v:?}, not the bytes {off}-{} asked for",
            off + len - 1
        )),
    }
}

fn xml_tag(body: &[u8], tag: &str) -> Option<String> {
    let s = std::str::from_utf8(body).ok()?;
    let open = format!("<{tag}>");
    let start = s.find(&open)? + open.len();
    let end = s[start..].find('<')? + start;
    Some(s[start..end].to_string())
}

fn hint(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => " (authentication failed: no SAS in the URL and no accepted Entra ID token; see [azure] credential)",
        403 => " (access denied: is the SAS expired or without read permission, or does the identity lack the \"Storage Blob Data Reader\" role?)",
        404 => " (no such blob or container)",
        _ => "",
    }
}

/// reqwest's error with its causes (connection reset, timed out…).
fn describe(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "transfer failed".to_string()
    };
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_range(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("content-range", v.parse().unwrap());
        h
    }

    #[test]
    fn content_range_must_be_the_range_asked_for() {
        assert_eq!(wrong_range(&HeaderMap::new(), 0, 10), None);
        assert_eq!(
            wrong_range(&with_range("bytes 4096-8191/1048576"), 4096, 4096),
            None
        );
        assert_eq!(
            wrong_range(&with_range("bytes 4096-8191/*"), 4096, 4096),
            None
        );
        for bad in [
            "bytes 8192-12287/1048576",
            "bytes 4096-8190/1048576",
            "bytes */1048576",
            "items 4096-8191/1048576",
            "bytes x-y/z",
        ] {
            let msg = wrong_range(&with_range(bad), 4096, 4096);
            assert!(
                msg.as_deref().is_some_and(|m| m.contains("4096-8191")),
                "{bad}: {msg:?}"
            );
        }
    }
}
