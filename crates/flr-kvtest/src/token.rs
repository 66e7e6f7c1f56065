//! The token endpoint that the challenge's authority points at
//! (`POST /{tenant}/oauth2/v2.0/token`, client credentials with a secret or
//! a client assertion), and the tokens it hands out: JWT-shaped, unsigned,
//! with `aud`, `tid`, `appid` and `oid` claims that the vault reads back to
//! know its caller.

use std::collections::HashMap;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::crypto::{b64, unb64};
use crate::store::now;

/// The resource Key Vault tokens are for.
pub(crate) const VAULT_RESOURCE: &str = "https://vault.azure.net";
pub(crate) const LIFETIME_SECS: i64 = 3599;

/// How long granted tokens live: `valid` is their `exp` claim (what the
/// services check), `announced` the grant's `expires_in` (what clients
/// cache by). Equal unless a test imitates a token revoked early or a
/// client clock behind the service's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifetime {
    pub(crate) valid: i64,
    pub(crate) announced: i64,
}

impl Default for Lifetime {
    fn default() -> Self {
        Lifetime {
            valid: LIFETIME_SECS,
            announced: LIFETIME_SECS,
        }
    }
}

/// A stable object id for a client id, GUID-shaped.
pub(crate) fn oid_for(client_id: &str) -> String {
    let h = Sha256::digest(client_id.as_bytes());
    let hex: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// An unsigned JWT (`alg: none`) for `client_id` in `tenant`. `generation`
/// (claim `flr_gen`) lets the vault treat every older token as expired.
pub(crate) fn mint(
    tenant: &str,
    client_id: &str,
    audience: &str,
    generation: u64,
    valid_secs: i64,
) -> String {
    let t = now();
    let header = json!({ "typ": "JWT", "alg": "none" });
    let claims = json!({
        "aud": audience,
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "iat": t, "nbf": t, "exp": t + valid_secs,
        "appid": client_id,
        "oid": oid_for(client_id),
        "sub": oid_for(client_id),
        "tid": tenant,
        "ver": "1.0",
        "flr_gen": generation,
    });
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// The claims of a JWT-shaped token, or `None` for any other string (tests
/// may send opaque tokens; the vault accepts them without a known caller).
pub(crate) fn claims(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (_, payload) = (parts.next()?, parts.next()?);
    parts.next()?;
    serde_json::from_slice(&unb64(payload)?).ok()
}

/// Decodes an `application/x-www-form-urlencoded` body.
pub(crate) fn parse_form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())
            {
                Some(b) => {
                    out.push(b);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An AAD-style refusal: `(status, body)`.
fn aad_error(status: u16, error: &str, code: u32, text: &str) -> (u16, Value) {
    (
        status,
        json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {text}"),
            "error_codes": [code],
            "trace_id": "00000000-0000-0000-0000-000000000000",
            "correlation_id": "00000000-0000-0000-0000-000000000000",
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

/// A granted token and the client it was granted to.
pub(crate) struct Grant {
    pub(crate) client_id: String,
    pub(crate) body: Value,
}

/// Answers a token request for `path_tenant` with `form`, given this
/// server's tenant and its registered clients (id → secret).
pub(crate) fn issue(
    path_tenant: &str,
    tenant: &str,
    form: &HashMap<String, String>,
    clients: &HashMap<String, String>,
    generation: u64,
    lifetime: Lifetime,
) -> Result<Grant, (u16, Value)> {
    if !path_tenant.eq_ignore_ascii_case(tenant) {
        return Err(aad_error(
            400,
            "invalid_request",
            90002,
            &format!("Tenant '{path_tenant}' not found."),
        ));
    }
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if field("grant_type") != "client_credentials" {
        return Err(aad_error(
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        ));
    }
    let scope = field("scope");
    let Some(audience) = scope.strip_suffix("/.default").filter(|a| !a.is_empty()) else {
        return Err(aad_error(
            400,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows must \
                 have a scope value with /.default suffixed to the resource identifier."
            ),
        ));
    };
    let client_id = field("client_id");
    let Some(secret) = clients.get(client_id) else {
        return Err(aad_error(
            401,
            "invalid_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory \
                 '{tenant}'."
            ),
        ));
    };
    let assertion = field("client_assertion");
    let proven = if !assertion.is_empty() {
        field("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            && claims(assertion).is_some()
    } else {
        !field("client_secret").is_empty() && field("client_secret") == secret
    };
    if !proven {
        return Err(aad_error(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the \
             client secret value, not the client secret ID.",
        ));
    }
    Ok(Grant {
        client_id: client_id.to_string(),
        body: json!({
            "token_type": "Bearer",
            "expires_in": lifetime.announced,
            "ext_expires_in": lifetime.announced,
            "access_token": mint(tenant, client_id, audience, generation, lifetime.valid),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn forms_decode() {
        let f = parse_form("scope=https%3A%2F%2Fvault.azure.net%2F.default&a=b+c&bad=%zz%4");
        assert_eq!(f["scope"], "https://vault.azure.net/.default");
        assert_eq!(f["a"], "b c");
        assert_eq!(f["bad"], "%zz%4");
    }

    #[test]
    fn grants_and_refusals() {
        let clients = form(&[("app", "s3cret")]);
        let ok = form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "app"),
            ("client_secret", "s3cret"),
            ("scope", "https://vault.azure.net/.default"),
        ]);
        let g = issue("tid", "tid", &ok, &clients, 0, Lifetime::default())
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(g.client_id, "app");
        let c = claims(g.body["access_token"].as_str().unwrap()).unwrap();
        assert_eq!(c["aud"], VAULT_RESOURCE);
        assert_eq!(
            (c["appid"].as_str(), c["tid"].as_str()),
            (Some("app"), Some("tid"))
        );
        assert_eq!(c["oid"].as_str().unwrap().len(), 36);

        let mut wrong = ok.clone();
        wrong.insert("client_secret".into(), "nope".into());
        let (status, body) = issue("tid", "tid", &wrong, &clients, 0, Lifetime::default())
            .err()
            .unwrap();
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client"))
        );
        wrong.insert("client_id".into(), "stranger".into());
        let (status, body) = issue("tid", "tid", &wrong, &clients, 0, Lifetime::default())
            .err()
            .unwrap();
        assert_eq!(
            (status, body["error_codes"][0].as_u64()),
            (401, Some(700016))
        );
        assert_eq!(
            issue("other", "tid", &ok, &clients, 0, Lifetime::default())
                .err()
                .unwrap()
                .0,
            400
        );
        let mut scope = ok.clone();
        scope.insert("scope".into(), "https://vault.azure.net".into());
        let (_, body) = issue("tid", "tid", &scope, &clients, 0, Lifetime::default())
            .err()
            .unwrap();
        assert_eq!(body["error"], "invalid_scope");

        let mut fed = ok.clone();
        fed.remove("client_secret");
        fed.insert(
            "client_assertion_type".into(),
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
        );
        fed.insert(
            "client_assertion".into(),
            mint("tid", "app", "api://AzureADTokenExchange", 0, LIFETIME_SECS),
        );
        assert!(issue("tid", "tid", &fed, &clients, 0, Lifetime::default()).is_ok());
        fed.insert("client_assertion".into(), "not-a-jwt".into());
        assert_eq!(
            issue("tid", "tid", &fed, &clients, 0, Lifetime::default())
                .err()
                .unwrap()
                .0,
            401
        );
    }
}
