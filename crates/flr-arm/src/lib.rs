//! The Azure Resource Manager calls flr makes for a managed disk or
//! snapshot named by its resource id:
//!
//! - `GET {id}` (DiskRP `2024-03-02`): the resource, whose
//!   `encryptionSettingsCollection`, `encryption` and `securityProfile`
//!   feed the key chain just as `az snapshot show` output would;
//! - `POST {id}/beginGetAccess` with `{"access":"Read","durationInSeconds":N}`:
//!   a long-running operation whose result holds `accessSAS`, a read SAS for
//!   the disk's VHD blob (host `md-….blob.storage.azure.net`);
//! - `POST {id}/endGetAccess`: revokes that SAS;
//! - `GET /subscriptions/{sub}[/resourceGroups/{rg}]/providers/Microsoft.Compute/snapshots`:
//!   the snapshots to plan a fleet run over, page by page (`nextLink`).
//!
//! [`DiskAccess`] ties the two together: it is granted once, and revoked
//! once, whether the run ends normally, with an error or by a signal
//! ([`DiskAccess::revoke`] is idempotent and safe to call from a signal
//! thread). The SAS URL is a secret: it is kept in a zeroized string and
//! never printed; messages name the resource id.
//!
//! Long-running operations are followed the way Azure's SDKs do: the
//! `Azure-AsyncOperation` status URL when the answer names one (status
//! `InProgress` → `Succeeded`, output under `properties.output`), else the
//! `Location` URL (`202` until done, then `200` with the result), waiting
//! `Retry-After` between polls.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use flr_azauth::{authority_for, Bearer};
use flr_config::AzureConfig;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use zeroize::Zeroizing;

/// The Compute (DiskRP) API version flr speaks.
pub const API_VERSION: &str = "2024-03-02";

/// Attempts per request (the first included) on 429, 5xx and network failures.
const ATTEMPTS: u32 = 4;
/// How long flr follows one long-running operation.
const LRO_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest wait between two polls or retries.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// Pages of a list followed at most.
const MAX_PAGES: usize = 10_000;

/// Whether an image argument is an Azure resource id
/// (`/subscriptions/…`), as opposed to a path or a URL.
pub fn is_resource_id(arg: &str) -> bool {
    arg.len() > 15 && arg[..15].eq_ignore_ascii_case("/subscriptions/")
}

/// Managed disk or snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskKind {
    /// `Microsoft.Compute/snapshots`.
    Snapshot,
    /// `Microsoft.Compute/disks`.
    Disk,
}

impl DiskKind {
    /// `snapshot` or `disk`.
    pub fn name(self) -> &'static str {
        match self {
            DiskKind::Snapshot => "snapshot",
            DiskKind::Disk => "disk",
        }
    }
}

/// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/{snapshots|disks}/{name}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceId {
    /// Subscription GUID.
    pub subscription: String,
    /// Resource group.
    pub resource_group: String,
    /// Disk or snapshot.
    pub kind: DiskKind,
    /// Its name.
    pub name: String,
    path: String,
}

impl ResourceId {
    /// Parses a disk or snapshot resource id (case-insensitive keywords, a
    /// trailing slash allowed).
    pub fn parse(s: &str) -> Result<ResourceId, String> {
        let t = s.trim().trim_end_matches('/');
        let segs: Vec<&str> = t.split('/').collect();
        let bad = || {
            format!(
                "{t}: not a disk or snapshot resource id; expected \
                 /subscriptions/SUB/resourceGroups/RG/providers/Microsoft.Compute/snapshots/NAME (or …/disks/NAME)"
            )
        };
        if segs.len() != 9 || !segs[0].is_empty() {
            return Err(bad());
        }
        let is = |i: usize, w: &str| segs[i].eq_ignore_ascii_case(w);
        if !(is(1, "subscriptions")
            && is(3, "resourceGroups")
            && is(5, "providers")
            && is(6, "Microsoft.Compute"))
        {
            return Err(bad());
        }
        let kind = if is(7, "snapshots") {
            DiskKind::Snapshot
        } else if is(7, "disks") {
            DiskKind::Disk
        } else {
            return Err(bad());
        };
        let ok = |v: &str| {
            !v.is_empty()
                && v.chars().any(|c| c != '.')
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.()".contains(c))
        };
        if !(ok(segs[2]) && ok(segs[4]) && ok(segs[8])) {
            return Err(bad());
        }
        Ok(ResourceId {
            subscription: segs[2].to_string(),
            resource_group: segs[4].to_string(),
            kind,
            name: segs[8].to_string(),
            path: t.to_string(),
        })
    }

    /// The id as given (without a trailing slash).
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl std::fmt::Display for ResourceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path)
    }
}

/// A Resource Manager failure, with what to do about it where known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArmError {
    /// No token.
    Auth(String),
    /// No answer (after the retries).
    Transport(String),
    /// An error answer.
    Service {
        /// HTTP status.
        status: u16,
        /// ARM's `error.code`.
        code: String,
        /// ARM's `error.message`.
        message: String,
        /// `x-ms-request-id` (or the correlation id).
        request_id: String,
    },
    /// An answer flr cannot follow.
    Protocol(String),
}

impl std::fmt::Display for ArmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArmError::Auth(m) => write!(f, "no Resource Manager token: {m}"),
            ArmError::Transport(m) => write!(f, "Resource Manager unreachable: {m}"),
            ArmError::Protocol(m) => write!(f, "unexpected Resource Manager answer: {m}"),
            ArmError::Service {
                status,
                code,
                message,
                request_id,
            } => {
                write!(
                    f,
                    "Resource Manager refused (HTTP {status} {code}, request id {request_id}): {message}"
                )?;
                if let Some(hint) = remedy(code) {
                    write!(f, " — {hint}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ArmError {}

impl ArmError {
    /// Whether trying again later may succeed: Resource Manager throttled
    /// (429) or failed (408, 5xx) past the retries, or could not be reached.
    pub fn is_retryable(&self) -> bool {
        match self {
            ArmError::Transport(_) => true,
            ArmError::Service { status, .. } => matches!(status, 408 | 429 | 500..=599),
            _ => false,
        }
    }
}

fn remedy(code: &str) -> Option<&'static str> {
    Some(match code {
        "AuthorizationFailed" => {
            "the identity needs Microsoft.Compute/snapshots (or disks)/read, …/beginGetAccess/action and …/endGetAccess/action on it, e.g. the role \"Disk Snapshot Contributor\" or \"Data Operator for Managed Disks\""
        }
        "ResourceNotFound" | "NotFound" | "ResourceGroupNotFound" | "SubscriptionNotFound" => {
            "check the id with `az snapshot show --ids ID` (or `az disk show`), and that the credential's tenant and subscription are the right ones"
        }
        "OperationNotAllowed" | "Conflict" => {
            "a disk attached to a running VM cannot be exported: snapshot it and give the snapshot's id, or deallocate the VM"
        }
        "InvalidAuthenticationTokenAudience"
        | "InvalidAuthenticationToken"
        | "ExpiredAuthenticationToken"
        | "AuthenticationFailed" => {
            "the token is not a valid Resource Manager token: check [azure] credential/tenant (and resource_manager for sovereign clouds)"
        }
        _ => return None,
    })
}

/// A Resource Manager client.
pub struct ArmClient {
    http: Client,
    endpoint: String,
    bearer: Bearer,
    requests: AtomicUsize,
}

impl std::fmt::Debug for ArmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmClient")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl ArmClient {
    /// A client for the `[azure]` configuration.
    pub fn new(cfg: &AzureConfig) -> Result<ArmClient, ArmError> {
        let http =
            flr_azauth::https_client(cfg.ca_file.as_deref()).map_err(|e| ArmError::Auth(e.0))?;
        let authority = authority_for(cfg.tenant.as_deref(), &cfg.env);
        Ok(ArmClient {
            bearer: Bearer::new(
                http.clone(),
                cfg.credential,
                &cfg.arm_token_env,
                &authority,
                &cfg.resource_manager,
                cfg.env.clone(),
            ),
            http,
            endpoint: cfg.resource_manager.trim_end_matches('/').to_string(),
            requests: AtomicUsize::new(0),
        })
    }

    /// HTTP requests sent so far (retries and polls included; token
    /// requests not).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// Sends with retries on 408/429/5xx and network failures, honouring
    /// `Retry-After`; once more with a fresh token after a 401.
    fn send(&self, method: Method, url: &str, body: Option<&Value>) -> Result<Response, ArmError> {
        let mut fresh_token = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = self.bearer.token().map_err(|e| ArmError::Auth(e.0))?;
            let build = || -> RequestBuilder {
                let mut r = self.http.request(method.clone(), url);
                if !token.is_empty() {
                    r = r.bearer_auth(token.as_str());
                }
                match body {
                    Some(b) => r.json(b),
                    None if method == Method::POST => r.header("content-length", "0"),
                    None => r,
                }
            };
            self.requests.fetch_add(1, Ordering::Relaxed);
            let res = build().send();
            match res {
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED && !fresh_token => {
                    fresh_token = true;
                    self.bearer.invalidate();
                }
                Ok(r)
                    if matches!(r.status().as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
                        && attempt < ATTEMPTS =>
                {
                    std::thread::sleep(
                        flr_azauth::retry_after(&r, MAX_WAIT).unwrap_or_else(|| backoff(attempt)),
                    );
                }
                Ok(r) => return Ok(r),
                Err(e) if (e.is_timeout() || e.is_connect()) && attempt < ATTEMPTS => {
                    std::thread::sleep(backoff(attempt));
                }
                Err(e) => return Err(ArmError::Transport(flr_azauth::error_chain(&e))),
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}?api-version={API_VERSION}", self.endpoint)
    }

    /// `GET {id}`: the disk or snapshot resource (JSON as `az snapshot show`
    /// prints it).
    pub fn get(&self, id: &ResourceId) -> Result<Value, ArmError> {
        let res = self.send(Method::GET, &self.url(id.path()), None)?;
        json_or_error(res)
    }

    /// `GET …/providers/Microsoft.Compute/snapshots`: every snapshot of the
    /// subscription, or of one resource group, following `nextLink` page
    /// by page (each page retried on 429 with its `Retry-After`, like every
    /// call). `each` gets the snapshots one at a time, as ARM lists them.
    pub fn list_snapshots(
        &self,
        subscription: &str,
        resource_group: Option<&str>,
        each: &mut dyn FnMut(Value),
    ) -> Result<usize, ArmError> {
        let ok = |v: &str| {
            !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.()".contains(c))
        };
        if !ok(subscription) || resource_group.is_some_and(|g| !ok(g)) {
            return Err(ArmError::Protocol(format!(
                "not a subscription id and resource group: {subscription:?} {resource_group:?}"
            )));
        }
        let path = match resource_group {
            Some(g) => format!(
                "/subscriptions/{subscription}/resourceGroups/{g}/providers/Microsoft.Compute/snapshots"
            ),
            None => format!("/subscriptions/{subscription}/providers/Microsoft.Compute/snapshots"),
        };
        let mut url = self.url(&path);
        let mut count = 0usize;
        for _page in 0..MAX_PAGES {
            let page = json_or_error(self.send(Method::GET, &url, None)?)?;
            let Some(items) = page["value"].as_array() else {
                return Err(ArmError::Protocol(format!(
                    "the snapshot list of {path} has no value array"
                )));
            };
            for v in items {
                count += 1;
                each(v.clone());
            }
            match page["nextLink"].as_str().filter(|l| !l.is_empty()) {
                // Links stay on the Resource Manager endpoint: a token is
                // never sent anywhere else.
                Some(next) if next.starts_with(&self.endpoint) => url = next.to_string(),
                Some(next) => {
                    return Err(ArmError::Protocol(format!(
                        "nextLink leaves the Resource Manager endpoint: {}",
                        next.split('?').next().unwrap_or("")
                    )))
                }
                None => return Ok(count),
            }
        }
        Err(ArmError::Protocol(format!(
            "the snapshot list of {path} has more than {MAX_PAGES} pages"
        )))
    }

    /// `beginGetAccess` for `seconds`: the read SAS URL of the disk's blob.
    pub fn begin_get_access(
        &self,
        id: &ResourceId,
        seconds: u64,
    ) -> Result<Zeroizing<String>, ArmError> {
        let body = json!({ "access": "Read", "durationInSeconds": seconds });
        let url = self.url(&format!("{}/beginGetAccess", id.path()));
        let res = self.send(Method::POST, &url, Some(&body))?;
        let out = self.follow(res)?;
        let sas = out["accessSAS"]
            .as_str()
            .or_else(|| out["accessSas"].as_str())
            .filter(|s| s.starts_with("https://") || s.starts_with("http://"))
            .ok_or_else(|| {
                ArmError::Protocol(format!(
                    "beginGetAccess on {id} finished without an accessSAS"
                ))
            })?;
        Ok(Zeroizing::new(sas.to_string()))
    }

    /// `endGetAccess`: revokes the read SAS.
    pub fn end_get_access(&self, id: &ResourceId) -> Result<(), ArmError> {
        let url = self.url(&format!("{}/endGetAccess", id.path()));
        let res = self.send(Method::POST, &url, None)?;
        self.follow(res).map(|_| ())
    }

    /// Follows a long-running operation to its result (`{}` when it has none).
    fn follow(&self, first: Response) -> Result<Value, ArmError> {
        let status = first.status();
        if status == StatusCode::OK {
            return json_or_error(first).or(Ok(json!({})));
        }
        if status != StatusCode::ACCEPTED && status != StatusCode::CREATED {
            return json_or_error(first);
        }
        let header = |r: &Response, h: &str| {
            r.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let asyncop = header(&first, "azure-asyncoperation");
        let location = header(&first, "location");
        let mut wait = flr_azauth::retry_after(&first, MAX_WAIT).unwrap_or(Duration::from_secs(1));
        let started = Instant::now();
        loop {
            if started.elapsed() > LRO_TIMEOUT {
                return Err(ArmError::Protocol(format!(
                    "the operation did not finish within {} s",
                    LRO_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(wait.max(Duration::from_millis(50)));
            if let Some(op) = &asyncop {
                let r = self.send(Method::GET, op, None)?;
                wait = flr_azauth::retry_after(&r, MAX_WAIT).unwrap_or(Duration::from_secs(1));
                let v = json_or_error(r)?;
                match v["status"].as_str().unwrap_or("") {
                    "Succeeded" => {
                        let out = &v["properties"]["output"];
                        if !out.is_null() {
                            return Ok(out.clone());
                        }
                        return match &location {
                            Some(loc) => {
                                let r = self.send(Method::GET, loc, None)?;
                                json_or_error(r).or(Ok(json!({})))
                            }
                            None => Ok(json!({})),
                        };
                    }
                    "Failed" | "Canceled" => {
                        let e = &v["error"];
                        return Err(ArmError::Service {
                            status: 200,
                            code: e["code"].as_str().unwrap_or("OperationFailed").to_string(),
                            message: e["message"]
                                .as_str()
                                .unwrap_or("the operation failed")
                                .to_string(),
                            request_id: String::from("-"),
                        });
                    }
                    _ => continue,
                }
            } else if let Some(loc) = &location {
                let r = self.send(Method::GET, loc, None)?;
                if r.status() == StatusCode::ACCEPTED {
                    wait = flr_azauth::retry_after(&r, MAX_WAIT).unwrap_or(Duration::from_secs(1));
                    continue;
                }
                return if r.status() == StatusCode::OK || r.status() == StatusCode::NO_CONTENT {
                    json_or_error(r).or(Ok(json!({})))
                } else {
                    json_or_error(r)
                };
            } else {
                return Err(ArmError::Protocol(
                    "202 Accepted without Location or Azure-AsyncOperation".into(),
                ));
            }
        }
    }
}

fn request_id(r: &Response) -> String {
    ["x-ms-request-id", "x-ms-correlation-request-id"]
        .iter()
        .find_map(|h| r.headers().get(*h).and_then(|v| v.to_str().ok()))
        .unwrap_or("none")
        .to_string()
}

fn json_or_error(res: Response) -> Result<Value, ArmError> {
    let status = res.status();
    let rid = request_id(&res);
    let text = res.text().unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status.is_success() {
        return if body.is_null() && !text.trim().is_empty() {
            Err(ArmError::Protocol(format!(
                "HTTP {} with a body that is not JSON",
                status.as_u16()
            )))
        } else if body.is_null() {
            Err(ArmError::Protocol("empty answer".into()))
        } else {
            Ok(body)
        };
    }
    let e = &body["error"];
    Err(ArmError::Service {
        status: status.as_u16(),
        code: e["code"].as_str().unwrap_or("").to_string(),
        message: e["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| text.chars().take(200).collect()),
        request_id: rid,
    })
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500 << attempt.min(5)).min(MAX_WAIT)
}

/// What [`DiskAccess::revoke`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// `endGetAccess` succeeded now.
    Now,
    /// Kept on purpose (`--keep-access`); valid until the time given.
    Kept(SystemTime),
    /// An earlier call already did it (or failed); nothing sent.
    Already,
    /// `endGetAccess` failed: the SAS stays valid until it expires.
    Failed(String, SystemTime),
}

/// Read access to one disk or snapshot for the length of a run.
pub struct DiskAccess {
    client: ArmClient,
    id: ResourceId,
    sas: Zeroizing<String>,
    expires: SystemTime,
    keep: bool,
    done: Mutex<bool>,
}

impl std::fmt::Debug for DiskAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the SAS.
        f.debug_struct("DiskAccess")
            .field("id", &self.id.path())
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

impl DiskAccess {
    /// Calls `beginGetAccess` for `seconds`. With `keep`, [`revoke`](Self::revoke)
    /// leaves the SAS valid.
    pub fn grant(
        client: ArmClient,
        id: ResourceId,
        seconds: u64,
        keep: bool,
    ) -> Result<DiskAccess, ArmError> {
        let started = SystemTime::now();
        let sas = client.begin_get_access(&id, seconds)?;
        Ok(DiskAccess {
            client,
            id,
            sas,
            expires: started + Duration::from_secs(seconds),
            keep,
            done: Mutex::new(false),
        })
    }

    /// The read SAS URL (a secret: never print it).
    pub fn sas_url(&self) -> &str {
        &self.sas
    }

    /// The disk or snapshot.
    pub fn id(&self) -> &ResourceId {
        &self.id
    }

    /// The client (for request counts).
    pub fn client(&self) -> &ArmClient {
        &self.client
    }

    /// When the SAS stops working on its own.
    pub fn expires(&self) -> SystemTime {
        self.expires
    }

    /// Calls `endGetAccess` unless the access is kept; does so at most once
    /// however often and from whichever thread it is called (a second
    /// caller waits for the first to finish, then gets [`Revoked::Already`]).
    pub fn revoke(&self) -> Revoked {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        if *done {
            return Revoked::Already;
        }
        *done = true;
        if self.keep {
            return Revoked::Kept(self.expires);
        }
        match self.client.end_get_access(&self.id) {
            Ok(()) => Revoked::Now,
            Err(e) => Revoked::Failed(e.to_string(), self.expires),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids() {
        let id = ResourceId::parse(
            "/subscriptions/0000-1111/resourceGroups/rg-prod/providers/Microsoft.Compute/snapshots/vm1-os-2026.11.27/",
        )
        .unwrap();
        assert_eq!(id.kind, DiskKind::Snapshot);
        assert_eq!(id.name, "vm1-os-2026.11.27");
        assert_eq!(id.resource_group, "rg-prod");
        assert!(!id.path().ends_with('/'));
        let d = ResourceId::parse(
            "/SUBSCRIPTIONS/s/resourcegroups/rg/PROVIDERS/microsoft.compute/DISKS/data0",
        )
        .unwrap();
        assert_eq!(d.kind, DiskKind::Disk);
        for bad in [
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/snapshots/x",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/snapshots",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/snapshots/a/b",
            "/subscriptions/s/resourceGroups/../providers/Microsoft.Compute/snapshots/a",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/snapshots/a?x=1",
        ] {
            assert!(ResourceId::parse(bad).is_err(), "{bad}");
        }
        assert!(is_resource_id("/subscriptions/x/y"));
        assert!(!is_resource_id("/srv/subscriptions/x"));
        assert!(!is_resource_id("https://a.blob.core.windows.net/c/b"));
    }

    #[test]
    fn refusals_name_the_remedy() {
        let e = ArmError::Service {
            status: 403,
            code: "AuthorizationFailed".into(),
            message: "The client 'x' does not have authorization".into(),
            request_id: "r-1".into(),
        };
        let s = e.to_string();
        assert!(s.contains("HTTP 403 AuthorizationFailed"), "{s}");
        assert!(s.contains("request id r-1"), "{s}");
        assert!(s.contains("beginGetAccess/action"), "{s}");
    }
}
