//! HTTP routing: the bearer challenge, injected faults and permissions,
//! then one handler per Key Vault operation. Plain synchronous code over
//! the shared state; `server.rs` runs it off the async workers.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::crypto::{self, Alg};
use crate::error::KvError;
use crate::faults::{self, FaultOp};
use crate::store::{
    check_name, now, tags_from, Attrs, KeyVersion, SecretVersion, RECOVERABLE_DAYS,
};
use crate::token::{self, percent_decode, VAULT_RESOURCE};
use crate::{Logged, Shared};

/// One request as the router sees it.
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) host: Option<String>,
    pub(crate) authorization: Option<String>,
    /// `Metadata` (the Instance Metadata Service wants `true`).
    pub(crate) metadata: Option<String>,
    /// `X-IDENTITY-HEADER` (the App Service identity endpoint's secret).
    pub(crate) identity_header: Option<String>,
    pub(crate) body: Vec<u8>,
    /// Every header, names lower-cased, in the order received.
    pub(crate) headers: Vec<(String, String)>,
}

impl Request {
    /// The first header called `name` (lower case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One answer.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Option<Value>,
    /// A body that is not JSON, and its content type (Blob answers).
    pub(crate) raw: Option<(Vec<u8>, &'static str)>,
}

impl Reply {
    pub(crate) fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Some(body),
            raw: None,
        }
    }

    /// An answer with bytes of `content_type` (empty: no body, no type).
    pub(crate) fn raw(status: u16, body: Vec<u8>, content_type: &'static str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: None,
            raw: (!content_type.is_empty()).then_some((body, content_type)),
        }
    }

    /// Replaces the raw body, keeping its content type.
    pub(crate) fn set_body(&mut self, body: Vec<u8>) {
        if let Some((b, _)) = &mut self.raw {
            *b = body;
        }
    }

    fn error(e: &KvError) -> Reply {
        Reply::json(e.status, e.body())
    }
}

/// Everything known about the request once it is routed.
struct Ctx<'a> {
    shared: &'a Shared,
    /// `https://{Host}`: ids and links are built from it.
    base: String,
    query: HashMap<String, String>,
    body: &'a [u8],
    caller: Option<Value>,
}

impl Ctx<'_> {
    fn json_body(&self) -> Result<Value, KvError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(json!({}));
        }
        serde_json::from_slice(self.body)
            .map_err(|e| KvError::bad_parameter(format!("The request body is not valid JSON: {e}")))
    }

    /// How a 403 names the caller.
    fn caller_text(&self) -> String {
        match &self.caller {
            Some(c) => format!(
                "appid={};oid={};iss=https://sts.windows.net/{}/",
                c["appid"].as_str().unwrap_or(""),
                c["oid"].as_str().unwrap_or(""),
                c["tid"].as_str().unwrap_or(&self.shared.tenant),
            ),
            None => "appid=;oid=;iss=".to_string(),
        }
    }
}

/// Answers and logs one request.
pub(crate) fn handle(shared: &Shared, req: Request) -> Reply {
    let blob = crate::blob::is_blob_path(&req.path);
    let page_diff = if !blob || !req.query.contains("comp=pagelist") {
        None
    } else if req.query.contains("prevsnapshot=") {
        Some("prevsnapshot")
    } else if req.header("x-ms-previous-snapshot-url").is_some() {
        Some("previous-snapshot-url")
    } else {
        None
    };
    let (mut reply, authorized, caller) = if blob {
        let (r, authorized) = crate::blob::route(shared, &req);
        (r, authorized, None)
    } else {
        route(shared, &req)
    };
    if !blob {
        reply
            .headers
            .push(("x-ms-keyvault-service-version", "1.9.0.0".into()));
    }
    reply
        .headers
        .push(("x-ms-request-id", crate::store::new_version()));
    shared.lock().log.push(Logged {
        method: req.method,
        path: req.path,
        query: req.query,
        status: reply.status,
        authorized,
        caller,
        page_diff,
    });
    reply
}

fn route(shared: &Shared, req: &Request) -> (Reply, bool, Option<String>) {
    let segs: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    let base = format!(
        "https://{}",
        req.host
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{}", shared.port))
    );

    // Resource Manager (disks and snapshots): its own authentication answers.
    if segs
        .first()
        .is_some_and(|s| s.eq_ignore_ascii_case("subscriptions"))
    {
        return crate::arm::route(
            shared,
            &req.method,
            &req.path,
            &req.query,
            &base,
            req.authorization.as_deref(),
            &req.body,
        );
    }

    // A managed identity's endpoints: the VM's Instance Metadata Service
    // and App Service's local identity endpoint.
    match (req.method.as_str(), segs.as_slice()) {
        ("GET", ["metadata", "identity", "oauth2", "token"]) => {
            return managed_identity(shared, req, req.metadata.as_deref() == Some("true"), false);
        }
        ("GET", ["msi", "token"]) => {
            let ok = req.identity_header.as_deref() == Some(crate::IDENTITY_HEADER);
            return managed_identity(shared, req, ok, true);
        }
        _ => {}
    }

    // The authority's endpoints: no bearer token needed.
    match (req.method.as_str(), segs.as_slice()) {
        ("POST", [tenant, "oauth2", "v2.0", "token"]) => {
            let form = token::parse_form(&String::from_utf8_lossy(&req.body));
            let (clients, generation, lifetime) = {
                let st = shared.lock();
                (st.clients.clone(), st.token_generation, st.token_lifetime)
            };
            return match token::issue(
                tenant,
                &shared.tenant,
                &form,
                &clients,
                generation,
                lifetime,
            ) {
                Ok(grant) => (Reply::json(200, grant.body), false, Some(grant.client_id)),
                Err((status, body)) => (Reply::json(status, body), false, None),
            };
        }
        ("GET", [tenant, "v2.0", ".well-known", "openid-configuration"]) => {
            let root = format!("{base}/{tenant}");
            let body = json!({
                "issuer": format!("{root}/v2.0"),
                "token_endpoint": format!("{root}/oauth2/v2.0/token"),
                "authorization_endpoint": format!("{root}/oauth2/v2.0/authorize"),
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                "tenant_region_scope": null,
            });
            return (Reply::json(200, body), false, None);
        }
        _ => {}
    }

    // The challenge, before anything else about the request is looked at.
    let bearer = req
        .authorization
        .as_deref()
        .and_then(|a| a.split_once(' '))
        .filter(|(scheme, t)| scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty())
        .map(|(_, t)| t.trim());
    let Some(bearer) = bearer else {
        let e = KvError::new(
            401,
            "Unauthorized",
            "AKV10000: Request is missing a Bearer or PoP token.",
        );
        return (challenge(shared, &e), false, None);
    };
    let claims = token::claims(bearer);
    let caller = claims
        .as_ref()
        .and_then(|c| c["appid"].as_str().map(str::to_string));
    if let Some(aud) = claims.as_ref().and_then(|c| c["aud"].as_str()) {
        if aud.trim_end_matches('/') != VAULT_RESOURCE {
            let e = KvError::new(
                401,
                "Unauthorized",
                format!("AKV10022: Invalid audience. Expected {VAULT_RESOURCE}, found: {aud}."),
            );
            return (challenge(shared, &e), false, caller);
        }
    }
    if let Some(c) = &claims {
        let generation = shared.lock().token_generation;
        let expired = c["exp"].as_i64().is_some_and(|exp| exp <= now())
            || c["flr_gen"].as_u64().is_some_and(|g| g < generation);
        if expired {
            let e = KvError::new(
                401,
                "Unauthorized",
                "[TokenExpired] Error validating token: 'S2S12086'.",
            );
            return (challenge(shared, &e), false, caller);
        }
    }

    let injected = shared.lock().failures.pop_front();
    if let Some((status, retry_after)) = injected {
        let mut reply = Reply::error(&faults::failure(status));
        if let Some(secs) = retry_after {
            reply.headers.push(("retry-after", secs.to_string()));
        }
        return (reply, true, caller);
    }

    let ctx = Ctx {
        shared,
        base,
        query: req
            .query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect(),
        body: &req.body,
        caller: claims,
    };
    let reply = match dispatch(&ctx, &req.method, &segs) {
        Ok(reply) => reply,
        Err(e) => Reply::error(&e),
    };
    (reply, true, caller)
}

fn challenge(shared: &Shared, e: &KvError) -> Reply {
    let mut reply = Reply::error(e);
    reply.headers.push((
        "www-authenticate",
        format!(
            "Bearer authorization=\"https://127.0.0.1:{}/{}\", resource=\"{VAULT_RESOURCE}\"",
            shared.port, shared.tenant
        ),
    ));
    reply
}

/// The operations, by method and path.
enum Call<'a> {
    Key(FaultOp, &'a str, Option<&'a str>),
    Secret(FaultOp, &'a str, Option<&'a str>),
    ListKeys,
    ListSecrets,
}

fn dispatch(ctx: &Ctx<'_>, method: &str, segs: &[&str]) -> Result<Reply, KvError> {
    use FaultOp::*;
    let call = match (method, segs) {
        ("GET", ["keys"] | ["keys", ""]) => Call::ListKeys,
        ("GET", ["secrets"] | ["secrets", ""]) => Call::ListSecrets,
        ("POST", ["keys", n, "create"]) => Call::Key(CreateKey, n, None),
        ("PUT", ["keys", n]) => Call::Key(ImportKey, n, None),
        ("GET", ["keys", n, "versions"]) => Call::Key(ListKeyVersions, n, None),
        ("GET", ["keys", n] | ["keys", n, ""]) => Call::Key(GetKey, n, None),
        ("GET", ["keys", n, v]) => Call::Key(GetKey, n, Some(v)),
        ("PATCH", ["keys", n] | ["keys", n, ""]) => Call::Key(UpdateKey, n, None),
        ("PATCH", ["keys", n, v]) => Call::Key(UpdateKey, n, Some(v)),
        ("DELETE", ["keys", n]) => Call::Key(DeleteKey, n, None),
        ("POST", ["keys", n, v, op]) => {
            let op = match op.to_ascii_lowercase().as_str() {
                "wrapkey" => WrapKey,
                "unwrapkey" => UnwrapKey,
                "encrypt" => Encrypt,
                "decrypt" => Decrypt,
                _ => return Err(no_route(method, segs)),
            };
            Call::Key(op, n, Some(v))
        }
        ("GET", ["deletedkeys", n]) => Call::Key(GetDeletedKey, n, None),
        ("POST", ["deletedkeys", n, "recover"]) => Call::Key(RecoverKey, n, None),
        ("DELETE", ["deletedkeys", n]) => Call::Key(PurgeKey, n, None),
        ("PUT", ["secrets", n]) => Call::Secret(SetSecret, n, None),
        ("GET", ["secrets", n, "versions"]) => Call::Secret(ListSecretVersions, n, None),
        ("GET", ["secrets", n] | ["secrets", n, ""]) => Call::Secret(GetSecret, n, None),
        ("GET", ["secrets", n, v]) => Call::Secret(GetSecret, n, Some(v)),
        ("PATCH", ["secrets", n] | ["secrets", n, ""]) => Call::Secret(UpdateSecret, n, None),
        ("PATCH", ["secrets", n, v]) => Call::Secret(UpdateSecret, n, Some(v)),
        ("DELETE", ["secrets", n]) => Call::Secret(DeleteSecret, n, None),
        ("GET", ["deletedsecrets", n]) => Call::Secret(GetDeletedSecret, n, None),
        ("POST", ["deletedsecrets", n, "recover"]) => Call::Secret(RecoverSecret, n, None),
        ("DELETE", ["deletedsecrets", n]) => Call::Secret(PurgeSecret, n, None),
        _ => return Err(no_route(method, segs)),
    };
    let (op, resource) = match &call {
        Call::ListKeys => (ListKeys, "keys".to_string()),
        Call::ListSecrets => (ListSecrets, "secrets".to_string()),
        Call::Key(op, n, _) => (*op, format!("keys/{n}")),
        Call::Secret(op, n, _) => (*op, format!("secrets/{n}")),
    };
    if let Call::Key(_, n, _) | Call::Secret(_, n, _) = &call {
        check_name(n)?;
    }
    let denial = ctx.shared.lock().denials.get(&op).copied();
    if let Some(how) = denial {
        return Err(faults::denied(
            op,
            how,
            &ctx.caller_text(),
            &ctx.shared.vault_name,
            &resource,
        ));
    }
    match call {
        Call::ListKeys => list_keys(ctx),
        Call::ListSecrets => list_secrets(ctx),
        Call::Key(op, n, v) => key_call(ctx, op, n, v),
        Call::Secret(op, n, v) => secret_call(ctx, op, n, v),
    }
}

fn no_route(method: &str, segs: &[&str]) -> KvError {
    KvError::new(
        404,
        "NotFound",
        format!(
            "No operation {method} /{} in this vault's API.",
            segs.join("/")
        ),
    )
}

pub(crate) fn key_bundle(base: &str, name: &str, k: &KeyVersion) -> Value {
    let (n, e) = crypto::public_jwk(&k.key);
    let mut b = json!({
        "key": {
            "kid": format!("{base}/keys/{name}/{}", k.version),
            "kty": if k.hsm { "RSA-HSM" } else { "RSA" },
            "key_ops": k.ops,
            "n": n,
            "e": e,
        },
        "attributes": k.attrs.json(),
    });
    if !k.tags.is_empty() {
        b["tags"] = json!(k.tags);
    }
    b
}

fn key_item(base: &str, name: &str, k: &KeyVersion) -> Value {
    let mut b = json!({
        "kid": format!("{base}/keys/{name}/{}", k.version),
        "attributes": k.attrs.json(),
    });
    if !k.tags.is_empty() {
        b["tags"] = json!(k.tags);
    }
    b
}

pub(crate) fn secret_item(base: &str, name: &str, s: &SecretVersion) -> Value {
    let mut b = json!({
        "id": format!("{base}/secrets/{name}/{}", s.version),
        "attributes": s.attrs.json(),
    });
    if let Some(ct) = &s.content_type {
        b["contentType"] = json!(ct);
    }
    if !s.tags.is_empty() {
        b["tags"] = json!(s.tags);
    }
    b
}

fn secret_bundle(base: &str, name: &str, s: &SecretVersion) -> Value {
    let mut b = secret_item(base, name, s);
    b["value"] = json!(s.value);
    b
}

fn deleted(mut bundle: Value, base: &str, collection: &str, name: &str, when: i64) -> Value {
    bundle["recoveryId"] = json!(format!("{base}/{collection}/{name}"));
    bundle["deletedDate"] = json!(when);
    bundle["scheduledPurgeDate"] = json!(when + RECOVERABLE_DAYS * 86_400);
    bundle
}

/// One page of `items`: `$skiptoken` is the offset, the page size is
/// `maxresults` or the vault's page size; `nextLink` is a full URL.
fn page(ctx: &Ctx<'_>, path: &str, items: Vec<Value>) -> Result<Reply, KvError> {
    let asked = match ctx.query.get("maxresults") {
        None => None,
        Some(m) => match m.parse::<usize>() {
            Ok(n @ 1..=25) => Some(n),
            _ => {
                return Err(KvError::bad_parameter(format!(
                    "Invalid value for maxresults: {m} (1 to 25)."
                )))
            }
        },
    };
    let size = asked.unwrap_or_else(|| ctx.shared.lock().page_size).max(1);
    let start = match ctx.query.get("$skiptoken") {
        None => 0,
        Some(t) => crypto::unb64(t)
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| KvError::bad_parameter("Invalid $skiptoken."))?,
    };
    let end = start.saturating_add(size).min(items.len());
    let next = if end < items.len() {
        let api = ctx
            .query
            .get("api-version")
            .cloned()
            .unwrap_or_else(|| "7.5".into());
        let mut link = format!(
            "{}{path}?api-version={api}&$skiptoken={}",
            ctx.base,
            crypto::b64(end.to_string().as_bytes())
        );
        if let Some(n) = asked {
            link.push_str(&format!("&maxresults={n}"));
        }
        json!(link)
    } else {
        Value::Null
    };
    let value: Vec<Value> = items.into_iter().skip(start).take(size).collect();
    Ok(Reply::json(
        200,
        json!({ "value": value, "nextLink": next }),
    ))
}

fn list_keys(ctx: &Ctx<'_>) -> Result<Reply, KvError> {
    let items = {
        let st = ctx.shared.lock();
        st.store
            .keys
            .latest()
            .map(|(n, k)| {
                let mut item = key_item(&ctx.base, n, k);
                item["kid"] = json!(format!("{}/keys/{n}", ctx.base));
                item
            })
            .collect()
    };
    page(ctx, "/keys", items)
}

fn list_secrets(ctx: &Ctx<'_>) -> Result<Reply, KvError> {
    let items = {
        let st = ctx.shared.lock();
        st.store
            .secrets
            .latest()
            .map(|(n, s)| {
                let mut item = secret_item(&ctx.base, n, s);
                item["id"] = json!(format!("{}/secrets/{n}", ctx.base));
                item
            })
            .collect()
    };
    page(ctx, "/secrets", items)
}

fn key_call(
    ctx: &Ctx<'_>,
    op: FaultOp,
    name: &str,
    version: Option<&str>,
) -> Result<Reply, KvError> {
    use FaultOp::*;
    let base = ctx.base.as_str();
    let ok = |v: Value| Ok(Reply::json(200, v));
    match op {
        CreateKey | ImportKey => {
            let body = ctx.json_body()?;
            let mut k = if op == CreateKey {
                new_rsa_key(&body)?
            } else {
                let key = crypto::from_jwk(&body["key"]).map_err(KvError::bad_parameter)?;
                let mut k = KeyVersion::new(key);
                k.hsm = body["Hsm"]
                    .as_bool()
                    .or(body["hsm"].as_bool())
                    .unwrap_or(false)
                    || body["key"]["kty"] == "RSA-HSM";
                if let Some(ops) = ops_from(&body["key"]["key_ops"])? {
                    k.ops = ops;
                }
                k
            };
            k.attrs.apply(&body["attributes"])?;
            if let Some(tags) = tags_from(&body)? {
                k.tags = tags;
            }
            let mut st = ctx.shared.lock();
            let (stored, added) = st.store.keys.add(name, k)?;
            ok(key_bundle(base, stored, added))
        }
        GetKey => {
            let st = ctx.shared.lock();
            let (n, k) = st.store.keys.get(name, version)?;
            ok(key_bundle(base, n, k))
        }
        UpdateKey => {
            let body = ctx.json_body()?;
            let mut st = ctx.shared.lock();
            let (n, k) = st.store.keys.get_mut(name, version)?;
            let mut attrs = k.attrs.clone();
            attrs.apply(&body["attributes"])?;
            let tags = tags_from(&body)?;
            let ops = ops_from(&body["key_ops"])?;
            k.attrs = attrs;
            if let Some(tags) = tags {
                k.tags = tags;
            }
            if let Some(ops) = ops {
                k.ops = ops;
            }
            ok(key_bundle(base, &n, k))
        }
        ListKeyVersions => {
            let items = {
                let st = ctx.shared.lock();
                let e = st.store.keys.entry(name)?;
                e.versions
                    .iter()
                    .map(|k| key_item(base, &e.name, k))
                    .collect()
            };
            page(ctx, &format!("/keys/{name}/versions"), items)
        }
        DeleteKey | GetDeletedKey => {
            let mut st = ctx.shared.lock();
            let e = if op == DeleteKey {
                st.store.keys.delete(name)?
            } else {
                st.store.keys.deleted(name)?
            };
            let latest = e
                .versions
                .last()
                .expect("OK to unwrap: a key has a version");
            let b = key_bundle(base, &e.name, latest);
            ok(deleted(
                b,
                base,
                "deletedkeys",
                &e.name,
                e.deleted.unwrap_or_else(now),
            ))
        }
        RecoverKey => {
            let mut st = ctx.shared.lock();
            let e = st.store.keys.recover(name)?;
            let latest = e
                .versions
                .last()
                .expect("OK to unwrap: a key has a version");
            ok(key_bundle(base, &e.name, latest))
        }
        PurgeKey => {
            ctx.shared.lock().store.keys.purge(name)?;
            Ok(Reply {
                status: 204,
                headers: Vec::new(),
                body: None,
                raw: None,
            })
        }
        WrapKey | UnwrapKey | Encrypt | Decrypt => crypto_call(ctx, op, name, version),
        _ => unreachable!("dispatch routes only its own operations here, not {op:?}"),
    }
}

fn ops_from(v: &Value) -> Result<Option<Vec<String>>, KvError> {
    match v {
        Value::Null => Ok(None),
        Value::Array(a) => a
            .iter()
            .map(|o| {
                o.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| KvError::bad_parameter("key_ops must be strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        _ => Err(KvError::bad_parameter("key_ops must be an array")),
    }
}

/// `POST /keys/{n}/create`: RSA keys of 2048, 3072 or 4096 bits, exponent 65537.
fn new_rsa_key(body: &Value) -> Result<KeyVersion, KvError> {
    let kty = body["kty"].as_str().unwrap_or("");
    if kty != "RSA" && kty != "RSA-HSM" {
        return Err(KvError::bad_parameter(format!(
            "Key type '{kty}' is not supported by this test vault (RSA and RSA-HSM only)."
        )));
    }
    let bits = body["key_size"].as_u64().unwrap_or(2048);
    if ![2048, 3072, 4096].contains(&bits) {
        return Err(KvError::bad_parameter(format!(
            "The key size {bits} is not supported for RSA keys (2048, 3072 or 4096)."
        )));
    }
    if !matches!(body["public_exponent"].as_u64(), None | Some(65537)) {
        return Err(KvError::bad_parameter(
            "Only the public exponent 65537 is supported.",
        ));
    }
    let mut k = KeyVersion::new(crypto::generate(usize::try_from(bits).unwrap_or(2048)));
    k.hsm = kty == "RSA-HSM";
    if let Some(ops) = ops_from(&body["key_ops"])? {
        k.ops = ops;
    }
    Ok(k)
}

/// wrapkey / unwrapkey / encrypt / decrypt. Expiry and not-before are not
/// checked: the service unwraps with an expired key too.
fn crypto_call(
    ctx: &Ctx<'_>,
    op: FaultOp,
    name: &str,
    version: Option<&str>,
) -> Result<Reply, KvError> {
    let op_name = match op {
        FaultOp::WrapKey => "wrapKey",
        FaultOp::UnwrapKey => "unwrapKey",
        FaultOp::Encrypt => "encrypt",
        _ => "decrypt",
    };
    let body = ctx.json_body()?;
    let (kid, key, enabled, allowed) = {
        let st = ctx.shared.lock();
        let (n, k) = st.store.keys.get(name, version)?;
        (
            format!("{}/keys/{n}/{}", ctx.base, k.version),
            k.key.clone(),
            k.attrs.enabled,
            k.ops.iter().any(|o| o == op_name),
        )
    };
    if !enabled {
        return Err(KvError::new(
            403,
            "Forbidden",
            format!("Operation {op_name} is not allowed on a disabled key."),
        )
        .with_inner("KeyDisabled"));
    }
    if !allowed {
        return Err(KvError::new(
            403,
            "Forbidden",
            format!("Operation {op_name} is not permitted on this key."),
        )
        .with_inner("KeyOperationForbidden"));
    }
    let alg_name = body["alg"].as_str().unwrap_or("");
    let alg = Alg::parse(alg_name).ok_or_else(|| {
        KvError::bad_parameter(format!(
            "Invalid algorithm '{alg_name}' for an RSA key (RSA-OAEP, RSA-OAEP-256 or RSA1_5)."
        ))
    })?;
    let value = body["value"]
        .as_str()
        .and_then(crypto::unb64)
        .ok_or_else(|| KvError::bad_parameter("The 'value' member must be base64url."))?;
    let out = match op {
        FaultOp::WrapKey | FaultOp::Encrypt => crypto::encrypt(&key.to_public_key(), alg, &value),
        _ => crypto::decrypt(&key, alg, &value),
    }
    .map_err(|e| KvError::bad_parameter(format!("The {op_name} operation failed: {e}.")))?;
    Ok(Reply::json(
        200,
        json!({ "kid": kid, "value": crypto::b64(&out) }),
    ))
}

fn secret_call(
    ctx: &Ctx<'_>,
    op: FaultOp,
    name: &str,
    version: Option<&str>,
) -> Result<Reply, KvError> {
    use FaultOp::*;
    let base = ctx.base.as_str();
    let ok = |v: Value| Ok(Reply::json(200, v));
    match op {
        SetSecret => {
            let body = ctx.json_body()?;
            let value = body["value"]
                .as_str()
                .ok_or_else(|| KvError::bad_parameter("The secret's 'value' is required."))?;
            let mut attrs = Attrs::new();
            attrs.apply(&body["attributes"])?;
            let s = SecretVersion {
                version: crate::store::new_version(),
                value: value.to_string(),
                content_type: body["contentType"].as_str().map(str::to_string),
                attrs,
                tags: tags_from(&body)?.unwrap_or_default(),
            };
            let mut st = ctx.shared.lock();
            let (stored, added) = st.store.secrets.add(name, s)?;
            ok(secret_bundle(base, stored, added))
        }
        GetSecret => {
            let st = ctx.shared.lock();
            let (n, s) = st.store.secrets.get(name, version)?;
            if !s.attrs.enabled {
                return Err(KvError::new(
                    403,
                    "Forbidden",
                    "Operation get is not allowed on a disabled secret.",
                )
                .with_inner("SecretDisabled"));
            }
            ok(secret_bundle(base, n, s))
        }
        UpdateSecret => {
            let body = ctx.json_body()?;
            let mut st = ctx.shared.lock();
            let (n, s) = st.store.secrets.get_mut(name, version)?;
            let mut attrs = s.attrs.clone();
            attrs.apply(&body["attributes"])?;
            let tags = tags_from(&body)?;
            s.attrs = attrs;
            if let Some(tags) = tags {
                s.tags = tags;
            }
            if let Some(ct) = body["contentType"].as_str() {
                s.content_type = Some(ct.to_string());
            }
            ok(secret_item(base, &n, s))
        }
        ListSecretVersions => {
            let items = {
                let st = ctx.shared.lock();
                let e = st.store.secrets.entry(name)?;
                e.versions
                    .iter()
                    .map(|s| secret_item(base, &e.name, s))
                    .collect()
            };
            page(ctx, &format!("/secrets/{name}/versions"), items)
        }
        DeleteSecret | GetDeletedSecret => {
            let mut st = ctx.shared.lock();
            let e = if op == DeleteSecret {
                st.store.secrets.delete(name)?
            } else {
                st.store.secrets.deleted(name)?
            };
            let latest = e
                .versions
                .last()
                .expect("OK to unwrap: a secret has a version");
            let b = secret_item(base, &e.name, latest);
            ok(deleted(
                b,
                base,
                "deletedsecrets",
                &e.name,
                e.deleted.unwrap_or_else(now),
            ))
        }
        RecoverSecret => {
            let mut st = ctx.shared.lock();
            let e = st.store.secrets.recover(name)?;
            let latest = e
                .versions
                .last()
                .expect("OK to unwrap: a secret has a version");
            ok(secret_item(base, &e.name, latest))
        }
        PurgeSecret => {
            ctx.shared.lock().store.secrets.purge(name)?;
            Ok(Reply {
                status: 204,
                headers: Vec::new(),
                body: None,
                raw: None,
            })
        }
        _ => unreachable!("dispatch routes only its own operations here, not {op:?}"),
    }
}

/// A token for the machine's managed identity, as IMDS (`expires_in` as a
/// string) or App Service (`expires_on` only, a Unix time) answer it;
/// `proven`: the caller sent the header that endpoint demands.
fn managed_identity(
    shared: &Shared,
    req: &Request,
    proven: bool,
    app_service: bool,
) -> (Reply, bool, Option<String>) {
    let q = token::parse_form(&req.query);
    let (identity, generation, lifetime) = {
        let st = shared.lock();
        (
            st.managed_identity.clone(),
            st.token_generation,
            st.token_lifetime,
        )
    };
    let bad = |status: u16, error: &str, text: &str| {
        (
            Reply::json(status, json!({ "error": error, "error_description": text })),
            false,
            None,
        )
    };
    if !proven {
        return bad(
            400,
            "invalid_request",
            if app_service {
                "The X-IDENTITY-HEADER header is missing or wrong."
            } else {
                "Required metadata header not specified"
            },
        );
    }
    let Some(client_id) = identity else {
        return bad(400, "invalid_request", "Identity not found");
    };
    if q.get("client_id").is_some_and(|c| *c != client_id) {
        return bad(400, "invalid_request", "Identity not found");
    }
    let resource = q.get("resource").map(String::as_str).unwrap_or("");
    if resource.is_empty() {
        return bad(
            400,
            "invalid_resource",
            "Required query variable 'resource' is missing",
        );
    }
    let audience = resource.trim_end_matches('/');
    let access = token::mint(
        &shared.tenant,
        &client_id,
        audience,
        generation,
        lifetime.valid,
    );
    let expires_on = crate::store::now() + lifetime.announced;
    let mut body = json!({
        "access_token": access,
        "expires_on": expires_on.to_string(),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": client_id,
    });
    if !app_service {
        body["expires_in"] = json!(lifetime.announced.to_string());
    }
    (Reply::json(200, body), false, Some(client_id))
}
