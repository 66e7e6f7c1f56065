//! A blob container as a place to keep small documents: the fleet's
//! results and slot leases (`flr fleet run --results URL`). This is the
//! one place flr writes to storage, and only there: never to a disk or
//! snapshot. Four calls, each a single REST request with retries:
//!
//! - Put Blob (a block blob), optionally with `If-None-Match: *` (create
//!   only if absent: exactly one of several concurrent creators wins);
//! - Get Blob, returning the ETag;
//! - Delete Blob with `If-Match` (only the version read);
//! - List Blobs by prefix, following `NextMarker`.
//!
//! Authorised by the container URL's SAS (`sp` with read, add, create,
//! write, delete, list) or an Entra ID bearer token (role "Storage Blob
//! Data Contributor"), sent over https only.

use std::sync::Arc;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::{StatusCode, Url};

use crate::location::API_VERSION;
use crate::BlobError;

/// Attempts per request on 408, 429, 5xx and network failures.
const ATTEMPTS: u32 = 5;

/// A container, with an optional name prefix for everything in it.
pub struct Container {
    /// The container's URL with its query (the SAS), path without prefix.
    url: Url,
    prefix: String,
    shown: String,
    client: Client,
    bearer: Option<Arc<flr_azauth::Bearer>>,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

fn path_style(url: &Url) -> bool {
    match url.host_str() {
        Some(h) => h.parse::<std::net::IpAddr>().is_ok() || h == "localhost" || !h.contains('.'),
        None => false,
    }
}

impl Container {
    /// `https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX][?SAS]`
    /// (Azurite: `http://127.0.0.1:10000/ACCOUNT/CONTAINER[/PREFIX]?SAS`).
    /// Without a SAS, `bearer` authorises (https only).
    pub fn open(
        arg: &str,
        bearer: Option<Arc<flr_azauth::Bearer>>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Container, BlobError> {
        let url = Url::parse(arg)
            .map_err(|e| BlobError::Location(format!("not a container URL: {e}")))?;
        let mut shown_url = url.clone();
        shown_url.set_query(None);
        let shown = shown_url.to_string();
        let segs: Vec<String> = url
            .path_segments()
            .map(|s| {
                s.filter(|p| !p.is_empty())
                    .map(|p| percent_decode_str(p).decode_utf8_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let keep = if path_style(&url) { 2 } else { 1 };
        if segs.len() < keep {
            return Err(BlobError::Location(format!(
                "{shown}: a container URL needs the container in its path"
            )));
        }
        let has_sas = url.query_pairs().any(|(k, _)| k == "sig");
        if !has_sas && bearer.is_none() {
            return Err(BlobError::Location(format!(
                "{shown}: no SAS in the URL and no Entra ID credential"
            )));
        }
        if !has_sas && url.scheme() != "https" {
            return Err(BlobError::Location(format!(
                "{shown}: Entra ID tokens are only sent over https"
            )));
        }
        let mut base = url.clone();
        {
            let mut p = base
                .path_segments_mut()
                .map_err(|()| BlobError::Location(format!("{shown}: not a container URL")))?;
            p.clear();
            for s in &segs[..keep] {
                p.push(s);
            }
        }
        let prefix = segs[keep..].join("/");
        let mut b = Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60));
        if let Some(ca) = ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| BlobError::Location(format!("CA file {}: {e}", ca.display())))?;
            b = b.add_root_certificate(
                reqwest::Certificate::from_pem(&pem)
                    .map_err(|e| BlobError::Location(format!("CA file {}: {e}", ca.display())))?,
            );
        }
        let client = b
            .build()
            .map_err(|e| BlobError::Location(format!("HTTP client: {e}")))?;
        Ok(Container {
            url: base,
            prefix,
            shown,
            client,
            bearer: if has_sas { None } else { bearer },
        })
    }

    /// The container URL without its SAS.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn blob_url(&self, name: &str) -> Url {
        let mut u = self.url.clone();
        if let Ok(mut p) = u.path_segments_mut() {
            for s in self.prefix.split('/').chain(name.split('/')) {
                if !s.is_empty() {
                    p.push(s);
                }
            }
        }
        u
    }

    fn failed(
        &self,
        what: &str,
        name: &str,
        attempts: u32,
        msg: String,
        r: Option<&Response>,
    ) -> BlobError {
        BlobError::Request {
            location: format!("{}/{name}", self.shown.trim_end_matches('/')),
            what: what.to_string(),
            attempts,
            msg,
            request_id: r
                .and_then(|r| r.headers().get("x-ms-request-id"))
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_string(),
            status: r.map(|r| r.status().as_u16()),
        }
    }

    /// Sends `build()` until it gets an answer that is not transient.
    fn send(
        &self,
        what: &str,
        name: &str,
        build: &dyn Fn() -> RequestBuilder,
    ) -> Result<Response, BlobError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = build().header("x-ms-version", API_VERSION);
            if let Some(b) = &self.bearer {
                let t = b.token().map_err(|e| {
                    self.failed(what, name, attempt, format!("no Storage token: {e}"), None)
                })?;
                req = req.bearer_auth(t.as_str());
            }
            let wait = Duration::from_millis(200u64 << attempt.min(6));
            match req.send() {
                Ok(r)
                    if matches!(r.status().as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
                        && attempt < ATTEMPTS =>
                {
                    std::thread::sleep(
                        flr_azauth::retry_after(&r, Duration::from_secs(30)).unwrap_or(wait),
                    );
                }
                Ok(r) => return Ok(r),
                Err(e) if attempt < ATTEMPTS && (e.is_timeout() || e.is_connect()) => {
                    std::thread::sleep(wait)
                }
                Err(e) => {
                    return Err(self.failed(what, name, attempt, flr_azauth::error_chain(&e), None))
                }
            }
        }
    }

    fn refused(&self, what: &str, name: &str, r: Response) -> BlobError {
        let code = r
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let status = r.status();
        let err = self.failed(what, name, 1, String::new(), Some(&r));
        let body = r.text().unwrap_or_default();
        let hint = if status == StatusCode::FORBIDDEN || status == StatusCode::UNAUTHORIZED {
            " (a container SAS with racwdl, or the role Storage Blob Data Contributor, is needed)"
        } else {
            ""
        };
        match err {
            BlobError::Request {
                location,
                what,
                attempts,
                request_id,
                status,
                ..
            } => BlobError::Request {
                location,
                what,
                attempts,
                msg: format!(
                    "HTTP {} {code}{hint}: {}",
                    status.unwrap_or(0),
                    body.chars().take(200).collect::<String>()
                ),
                request_id,
                status,
            },
            e => e,
        }
    }

    /// Reads `name`: its bytes and ETag, `None` when absent.
    pub fn get(&self, name: &str) -> Result<Option<(Vec<u8>, String)>, BlobError> {
        let url = self.blob_url(name);
        let r = self.send("get", name, &|| self.client.get(url.clone()))?;
        match r.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let etag = etag(&r);
                let body = r
                    .bytes()
                    .map_err(|e| self.failed("get", name, 1, e.to_string(), None))?;
                Ok(Some((body.to_vec(), etag)))
            }
            _ => Err(self.refused("get", name, r)),
        }
    }

    /// Writes `name` (a block blob). With `only_if_absent`, `None` when
    /// it exists already; else the new ETag.
    pub fn put(
        &self,
        name: &str,
        data: &[u8],
        only_if_absent: bool,
    ) -> Result<Option<String>, BlobError> {
        let url = self.blob_url(name);
        let r = self.send("put", name, &|| {
            let mut b = self
                .client
                .put(url.clone())
                .header("x-ms-blob-type", "BlockBlob")
                .header("content-type", "application/json")
                .body(data.to_vec());
            if only_if_absent {
                b = b.header("if-none-match", "*");
            }
            b
        })?;
        match r.status() {
            StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED if only_if_absent => Ok(None),
            s if s.is_success() => Ok(Some(etag(&r))),
            _ => Err(self.refused("put", name, r)),
        }
    }

    /// Deletes `name` if its ETag is still `etag`: `false` when it changed
    /// or is gone.
    pub fn delete_if(&self, name: &str, etag: &str) -> Result<bool, BlobError> {
        let url = self.blob_url(name);
        let r = self.send("delete", name, &|| {
            self.client.delete(url.clone()).header("if-match", etag)
        })?;
        match r.status() {
            StatusCode::NOT_FOUND | StatusCode::PRECONDITION_FAILED => Ok(false),
            s if s.is_success() => Ok(true),
            _ => Err(self.refused("delete", name, r)),
        }
    }

    /// Calls `each` with every blob name under `prefix` (relative to the
    /// container's own prefix), a page of up to 5,000 at a time.
    pub fn list(
        &self,
        prefix: &str,
        each: &mut dyn FnMut(&str) -> Result<(), BlobError>,
    ) -> Result<(), BlobError> {
        let own = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let full = format!("{own}{prefix}");
        let mut marker: Option<String> = None;
        loop {
            let mut url = self.url.clone();
            url.query_pairs_mut()
                .append_pair("restype", "container")
                .append_pair("comp", "list")
                .append_pair("prefix", &full);
            if let Some(m) = &marker {
                url.query_pairs_mut().append_pair("marker", m);
            }
            let r = self.send("list", prefix, &|| self.client.get(url.clone()))?;
            if !r.status().is_success() {
                return Err(self.refused("list", prefix, r));
            }
            let text = r
                .text()
                .map_err(|e| self.failed("list", prefix, 1, e.to_string(), None))?;
            for name in tags(&text, "Name") {
                if let Some(rel) = name.strip_prefix(&own) {
                    each(rel)?;
                }
            }
            marker = tags(&text, "NextMarker")
                .into_iter()
                .next()
                .filter(|m| !m.is_empty());
            if marker.is_none() {
                return Ok(());
            }
        }
    }
}

fn etag(r: &Response) -> String {
    r.headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The text of every `<tag>…</tag>` (no attributes, XML entities decoded).
fn tags(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(
            after[..j]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        );
        rest = &after[j + close.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_pages_parse() {
        let x = "<?xml version=\"1.0\"?><EnumerationResults><Blobs><Blob><Name>results/a&amp;b.json</Name></Blob><Blob><Name>results/c.json</Name></Blob></Blobs><NextMarker>m2</NextMarker></EnumerationResults>";
        assert_eq!(tags(x, "Name"), ["results/a&b.json", "results/c.json"]);
        assert_eq!(tags(x, "NextMarker"), ["m2"]);
        assert!(tags("<NextMarker />", "NextMarker").is_empty());
    }

    #[test]
    fn urls_keep_their_prefix_and_hide_the_sas() {
        let c = Container::open(
            "http://127.0.0.1:10000/devstoreaccount1/fleet/night-1?sv=1&sig=SECRET",
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            c.shown(),
            "http://127.0.0.1:10000/devstoreaccount1/fleet/night-1"
        );
        let u = c.blob_url("results/a.json");
        assert_eq!(u.path(), "/devstoreaccount1/fleet/night-1/results/a.json");
        assert!(u.query().unwrap().contains("sig=SECRET"));
        assert!(!format!("{c:?}").contains("SECRET"));
        assert!(Container::open("https://a.blob.core.windows.net/c", None, None).is_err());
    }
}
