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
//! - `POST {id}/endGetAccess`: the same long-running shape, no output.
//!
//! Without a bearer token ARM answers `401 AuthenticationFailed` with a
//! `WWW-Authenticate` naming the login authority; a token for another
//! audience gets `401 InvalidAuthenticationTokenAudience`. Errors use ARM's
//! `{"error":{"code","message"}}` body.

use std::collections::HashMap;

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
}

#[derive(Debug, Clone)]
struct Operation {
    disk: String,
    begin: bool,
    polls: usize,
}

/// Disks and running operations.
#[derive(Debug, Default)]
pub(crate) struct ArmState {
    /// Lower-cased id → disk.
    pub(crate) disks: HashMap<String, Disk>,
    ops: HashMap<String, Operation>,
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
    (dispatch(shared, method, path, base, body), true, caller)
}

fn dispatch(shared: &Shared, method: &str, path: &str, base: &str, body: &[u8]) -> Reply {
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
        let done = op.polls > 1;
        let op = op.clone();
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
        ("GET", None) => {
            let name = disk.id.rsplit('/').next().unwrap_or("").to_string();
            let kind = if disk.id.to_ascii_lowercase().contains("/snapshots/") {
                "Microsoft.Compute/snapshots"
            } else {
                "Microsoft.Compute/disks"
            };
            let mut props = disk.properties.clone();
            props["diskState"] = json!(if disk.active {
                "ActiveSAS"
            } else {
                "Unattached"
            });
            Reply::json(
                200,
                json!({"id": disk.id, "name": name, "type": kind, "location": "westeurope", "properties": props}),
            )
        }
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
                disk.active = true;
                disk.granted += 1;
            } else {
                disk.active = false;
                disk.revoked += 1;
            }
            let opid = new_version();
            let disk_id = id.clone();
            st.arm.ops.insert(
                opid.clone(),
                Operation {
                    disk: disk_id,
                    begin,
                    polls: 0,
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
            r.headers.push(("retry-after", "0".into()));
            r
        }
        _ => error(
            405,
            "MethodNotAllowed",
            "not an operation of this test server",
        ),
    }
}
