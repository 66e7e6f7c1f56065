//! The few Azure Resource Manager operations flr makes on a managed disk
//! or snapshot (DiskRP `2024-03-02`), served next to the vault on the same
//! HTTPS port so one test CA and one token endpoint cover both:
//!
//! - `GET {id}`: the resource as registered by the test;
//! - `POST {id}/beginGetAccess` with `{"access":"Read","durationInSeconds":N}`:
//!   `202 Accepted` with `Location` and `Azure-AsyncOperation` headers and
//!   `Retry-After: 0`; polling the operation answers `InProgress` once, then
//!   `Succeeded` with `properties.output.accessSAS`; polling `Location`
//!   answers `202` until then and `200 {"accessSAS": …}` after;
//! - `POST {id}/endGetAccess`: the same long-running shape, no output;
//! - `GET /subscriptions/{sub}[/resourceGroups/{rg}]/providers/Microsoft.Compute/snapshots`:
//!   the registered snapshots in pages of the vault's page size, linked
//!   by a full `nextLink` (`$skiptoken`).
//!
//! Azure's limit on exports is kept and counted: a snapshot whose
//! properties say `incremental: true` belongs to the family of its
//! `creationData.sourceResourceId`; a snapshot's export is active from its
//! `beginGetAccess` until its `endGetAccess` operation has finished; a
//! sixth concurrent export of one family is refused (`409
//! SnapshotExportLimitReached`, this server's own code) and counted, and
//! the peak per family is kept ([`crate::TestVault::family_peak`]). Grants
//! and revokes can be made slow (their operations stay `InProgress`), so
//! exports overlap in tests as they do in Azure.
//!
//! Without a bearer token ARM answers `401 AuthenticationFailed` with a
//! `WWW-Authenticate` naming the login authority; a token for another
//! audience gets `401 InvalidAuthenticationTokenAudience`. Errors use ARM's
//! `{"error":{"code","message"}}` body.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::routes::Reply;
use crate::store::new_version;
use crate::token;
use crate::Shared;

/// The audience Resource Manager tokens carry in the public cloud.
pub(crate) const ARM_RESOURCE: &str = "https://management.azure.com";

/// One disk or snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Disk {
    pub(crate) id: String,
    pub(crate) properties: Value,
    pub(crate) sas: String,
    pub(crate) active: bool,
    pub(crate) granted: usize,
    pub(crate) revoked: usize,
    /// `beginGetAccess` answers this instead: (status, code, message).
    pub(crate) refuse: Option<(u16, String, String)>,
    /// The incremental family (lower-cased source disk id).
    pub(crate) family: Option<String>,
    /// How long the next grant's operation stays in progress.
    pub(crate) next_grant_delay: Option<Duration>,
    /// How long every revoke's operation stays in progress.
    pub(crate) revoke_delay: Duration,
}

/// The family of a snapshot, from its properties.
pub(crate) fn family_of(properties: &Value) -> Option<String> {
    if properties["incremental"].as_bool() != Some(true) {
        return None;
    }
    let cd = &properties["creationData"];
    cd["sourceResourceId"]
        .as_str()
        .or(cd["sourceUniqueId"].as_str())
        .map(str::to_ascii_lowercase)
}

#[derive(Debug, Clone)]
struct Operation {
    disk: String,
    begin: bool,
    polls: usize,
    ready: Instant,
}

/// Disks and running operations.
#[derive(Debug, Default)]
pub(crate) struct ArmState {
    /// Lower-cased id → disk.
    pub(crate) disks: HashMap<String, Disk>,
    ops: HashMap<String, Operation>,
    /// The most exports active at once, per family.
    pub(crate) family_peak: HashMap<String, usize>,
    /// Grants refused because five exports of the family were active.
    pub(crate) over_limit: usize,
    /// Injected answers for the next Resource Manager requests: (status, Retry-After).
    pub(crate) failures: VecDeque<(u16, Option<u64>)>,
}

/// Exports of one incremental family Azure allows at once.
pub(crate) const FAMILY_LIMIT: usize = 5;

impl ArmState {
    fn active_in(&self, family: &str) -> usize {
        self.disks
            .values()
            .filter(|d| d.active && d.family.as_deref() == Some(family))
            .count()
    }
}

fn error(status: u16, code: &str, message: &str) -> Reply {
    let mut r = Reply::json(status, json!({"error": {"code": code, "message": message}}));
    r.headers.push(("x-ms-failure-cause", "gateway".into()));
    r
}

/// Answers a request whose path starts with `/subscriptions/`.
/// Returns the reply, whether it was authorized, and the caller's appid.
pub(crate) fn route(
    shared: &Shared,
    method: &str,
    path: &str,
    query: &str,
    base: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> (Reply, bool, Option<String>) {
    let bearer = authorization
        .and_then(|a| a.split_once(' '))
        .filter(|(s, t)| s.eq_ignore_ascii_case("bearer") && !t.trim().is_empty())
        .map(|(_, t)| t.trim());
    let Some(bearer) = bearer else {
        let mut r = error(
            401,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        );
        r.headers.push((
            "www-authenticate",
            format!(
                "Bearer authorization_uri=\"{base}/{}\", error=\"invalid_token\", error_description=\"The authentication failed because of missing 'Authorization' header.\"",
                shared.tenant
            ),
        ));
        return (r, false, None);
    };
    let claims = token::claims(bearer);
    let caller = claims
        .as_ref()
        .and_then(|c| c["appid"].as_str().map(str::to_string));
    if let Some(c) = &claims {
        let aud = c["aud"].as_str().unwrap_or("").trim_end_matches('/');
        if aud != ARM_RESOURCE && aud != base {
            return (
                error(
                    401,
                    "InvalidAuthenticationTokenAudience",
                    &format!("The access token has been obtained for wrong audience or resource '{aud}'. It should exactly match with one of the allowed audiences '{ARM_RESOURCE}/','{base}/'."),
                ),
                false,
                caller,
            );
        }
        if c["exp"].as_i64().is_some_and(|e| e <= crate::store::now()) {
            return (
                error(
                    401,
                    "ExpiredAuthenticationToken",
                    "The access token expiry UTC time is earlier than current UTC time.",
                ),
                false,
                caller,
            );
        }
    }
    (
        dispatch(shared, method, path, base, query, body),
        true,
        caller,
    )
}

/// `GET …/providers/Microsoft.Compute/snapshots`: the snapshots of the
/// subscription (and resource group), sorted by id, a page at a time.
fn list(
    st: &crate::State,
    method: &str,
    lower: &str,
    path: &str,
    base: &str,
    query: &str,
) -> Reply {
    if method != "GET" {
        return error(405, "MethodNotAllowed", "snapshots are listed with GET");
    }
    let segs: Vec<&str> = lower.trim_start_matches('/').split('/').collect();
    let sub = segs.get(1).copied().unwrap_or("");
    let rg = (segs.get(2) == Some(&"resourcegroups")).then(|| segs.get(3).copied().unwrap_or(""));
    let mut all: Vec<&Disk> = st
        .arm
        .disks
        .iter()
        .filter(|(k, _)| {
            let s: Vec<&str> = k.trim_start_matches('/').split('/').collect();
            s.get(1) == Some(&sub)
                && rg.is_none_or(|g| s.get(3) == Some(&g))
                && s.get(6) == Some(&"snapshots")
        })
        .map(|(_, d)| d)
        .collect();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let start: usize = query
        .split('&')
        .find_map(|p| {
            p.strip_prefix("$skiptoken=")
                .or(p.strip_prefix("%24skiptoken="))
        })
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let size = st.page_size.max(1);
    let end = start.saturating_add(size).min(all.len());
    let value: Vec<Value> = all
        .get(start..end)
        .unwrap_or_default()
        .iter()
        .map(|d| resource_json(d))
        .collect();
    let mut body = json!({ "value": value });
    if end < all.len() {
        body["nextLink"] = json!(format!(
            "{base}{path}?api-version=2024-03-02&$skiptoken={end}"
        ));
    }
    Reply::json(200, body)
}

/// A disk or snapshot as `GET {id}` answers it.
fn resource_json(disk: &Disk) -> Value {
    let name = disk.id.rsplit('/').next().unwrap_or("").to_string();
    let kind = if disk.id.to_ascii_lowercase().contains("/snapshots/") {
        "Microsoft.Compute/snapshots"
    } else {
        "Microsoft.Compute/disks"
    };
    let mut props = disk.properties.clone();
    let tags = props
        .as_object_mut()
        .and_then(|o| o.remove("tags"))
        .unwrap_or(json!({}));
    props["diskState"] = json!(if disk.active {
        "ActiveSAS"
    } else {
        "Unattached"
    });
    json!({"id": disk.id, "name": name, "type": kind, "location": "westeurope", "tags": tags, "properties": props})
}

fn dispatch(
    shared: &Shared,
    method: &str,
    path: &str,
    base: &str,
    query: &str,
    body: &[u8],
) -> Reply {
    let lower = path.trim_end_matches('/').to_ascii_lowercase();
    let mut st = shared.lock();
    // Operation status and result URLs.
    if let Some(rest) = lower.split("/diskoperations/").nth(1) {
        if method != "GET" {
            return error(405, "MethodNotAllowed", "operations are polled with GET");
        }
        let (opid, result) = match rest.strip_suffix("/result") {
            Some(o) => (o.to_string(), true),
            None => (rest.to_string(), false),
        };
        let Some(op) = st.arm.ops.get_mut(&opid) else {
            return error(404, "NotFound", &format!("operation {opid} not found"));
        };
        op.polls += 1;
        let done = op.polls > 1 && Instant::now() >= op.ready;
        let op = op.clone();
        if done && !op.begin {
            // The export ends when the revoke has finished.
            if let Some(d) = st.arm.disks.get_mut(&op.disk) {
                d.active = false;
            }
        }
        let disk = st.arm.disks.get(&op.disk).cloned();
        let output = || match (&disk, op.begin) {
            (Some(d), true) => json!({ "accessSAS": d.sas }),
            _ => json!({}),
        };
        return match (result, done) {
            (false, false) => Reply::json(
                200,
                json!({"name": opid, "status": "InProgress", "startTime": "2026-11-28T00:00:00Z"}),
            ),
            (false, true) => {
                let mut v = json!({"name": opid, "status": "Succeeded", "startTime": "2026-11-28T00:00:00Z", "endTime": "2026-11-28T00:00:01Z"});
                if op.begin {
                    v["properties"] = json!({ "output": output() });
                }
                Reply::json(200, v)
            }
            (true, false) => {
                let mut r = Reply::json(202, json!(null));
                r.body = None;
                r.headers.push(("retry-after", "0".into()));
                r
            }
            (true, true) => {
                if op.begin {
                    Reply::json(200, output())
                } else {
                    let mut r = Reply::json(200, json!(null));
                    r.body = None;
                    r
                }
            }
        };
    }
    if let Some((status, retry_after)) = st.arm.failures.pop_front() {
        let mut r = error(
            status,
            if status == 429 {
                "TooManyRequests"
            } else {
                "InternalServerError"
            },
            "injected by the test",
        );
        if let Some(s) = retry_after {
            r.headers.push(("retry-after", s.to_string()));
        }
        return r;
    }
    if lower.ends_with("/providers/microsoft.compute/snapshots") {
        return list(&st, method, &lower, path, base, query);
    }
    let (id, action) = match lower.rsplit_once('/') {
        Some((id, a)) if a == "begingetaccess" || a == "endgetaccess" => {
            (id.to_string(), Some(a.to_string()))
        }
        _ => (lower.clone(), None),
    };
    let Some(disk) = st.arm.disks.get_mut(&id) else {
        let kind = if id.contains("/snapshots/") {
            "Microsoft.Compute/snapshots"
        } else {
            "Microsoft.Compute/disks"
        };
        let name = id.rsplit('/').next().unwrap_or("");
        return error(
            404,
            "ResourceNotFound",
            &format!("The Resource '{kind}/{name}' under resource group was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"),
        );
    };
    match (method, action.as_deref()) {
        ("GET", None) => Reply::json(200, resource_json(disk)),
        ("POST", Some(a)) => {
            let begin = a == "begingetaccess";
            if begin {
                let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                if req["access"].as_str() != Some("Read") {
                    return error(
                        400,
                        "InvalidParameter",
                        "The value of parameter access is invalid: flr asks for Read.",
                    );
                }
                if req["durationInSeconds"].as_u64().is_none_or(|d| d == 0) {
                    return error(400, "InvalidParameter", "durationInSeconds is required.");
                }
                if let Some((status, code, message)) = disk.refuse.clone() {
                    return error(status, &code, &message);
                }
            }
            let family = disk.family.clone();
            let was_active = disk.active;
            let delay = if begin {
                disk.next_grant_delay.take().unwrap_or_default()
            } else {
                disk.revoke_delay
            };
            if begin && !was_active {
                if let Some(f) = &family {
                    if st.arm.active_in(f) >= FAMILY_LIMIT {
                        st.arm.over_limit += 1;
                        return error(
                            409,
                            "SnapshotExportLimitReached",
                            &format!("At most {FAMILY_LIMIT} snapshots of the incremental family of {f} can be exported at once."),
                        );
                    }
                }
            }
            let Some(disk) = st.arm.disks.get_mut(&id) else {
                return error(404, "ResourceNotFound", "gone");
            };
            if begin {
                disk.active = true;
                disk.granted += 1;
            } else {
                disk.revoked += 1;
            }
            if let (true, Some(f)) = (begin, &family) {
                let now = st.arm.active_in(f);
                let peak = st.arm.family_peak.entry(f.clone()).or_default();
                *peak = (*peak).max(now);
            }
            let opid = new_version();
            let disk_id = id.clone();
            st.arm.ops.insert(
                opid.clone(),
                Operation {
                    disk: disk_id,
                    begin,
                    polls: 0,
                    ready: Instant::now() + delay,
                },
            );
            let sub = id.split('/').nth(2).unwrap_or("");
            let op_url = format!(
                "{base}/subscriptions/{sub}/providers/Microsoft.Compute/locations/westeurope/DiskOperations/{opid}"
            );
            let mut r = Reply::json(202, json!(null));
            r.body = None;
            r.headers.push((
                "azure-asyncoperation",
                format!("{op_url}?p=1&api-version=2024-03-02"),
            ));
            r.headers.push((
                "location",
                format!("{op_url}/result?p=1&api-version=2024-03-02"),
            ));
            r.headers.push((
                "retry-after",
                if delay.is_zero() { "0" } else { "1" }.into(),
            ));
            r
        }
        _ => error(
            405,
            "MethodNotAllowed",
            "not an operation of this test server",
        ),
    }
}
