//! Microsoft Entra ID access tokens for flr's Azure clients.
//!
//! One place knows how to get a bearer token for a resource (Key Vault,
//! Resource Manager, Storage) with each credential flr supports:
//!
//! - `azure-cli`: `az account get-access-token --resource R`;
//! - `managed-identity`: the Instance Metadata Service of the VM or scale
//!   set (its host from `AZURE_POD_IDENTITY_AUTHORITY_HOST` when set), or,
//!   where `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` are set (App Service,
//!   Functions, Container Apps), that local endpoint; `AZURE_CLIENT_ID`
//!   picks a user-assigned identity;
//! - `workload-identity`: the federated token file exchanged at the authority
//!   (`AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID`);
//! - `client-secret`: `AZURE_CLIENT_ID` / `AZURE_CLIENT_SECRET`;
//! - `token-env`: a token taken as is from an environment variable;
//! - `none`: no token (the service will refuse; for diagnosing).
//!
//! [`acquire`] gets one token; [`Bearer`] caches it per resource and renews
//! it before it expires. Tokens are held in [`Zeroizing`] strings and are
//! never printed; [`caller_of`] reads the identity a token speaks for (for
//! audit logs) without exposing the token.
//!
//! The variables named here are read from the [`Environment`] the caller
//! hands in (the command line captures the process's), never from the
//! process itself.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
pub use flr_config::{Credential, Environment};
use reqwest::blocking::{Client, Response};
use serde_json::Value;
use zeroize::Zeroizing;

/// The public cloud's authority host, unless `AZURE_AUTHORITY_HOST` says otherwise.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";

/// The resource Storage tokens are for.
pub const STORAGE_RESOURCE: &str = "https://storage.azure.com";

/// Attempts for one token request (the first included).
const ATTEMPTS: u32 = 3;

/// A failure to get a token: what was tried and why it failed. Never
/// contains a token or a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError(pub String);

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AuthError {}

/// What to ask for.
#[derive(Debug, Clone)]
pub struct TokenRequest<'a> {
    /// How to authenticate.
    pub credential: Credential,
    /// The variable holding the token for [`Credential::TokenEnv`].
    pub token_env: &'a str,
    /// Where the credential's variables are read.
    pub env: &'a Environment,
    /// `https://login.microsoftonline.com/<tenant>` (the tenant may be
    /// replaced by `AZURE_TENANT_ID`).
    pub authority: &'a str,
    /// The resource the token is for, e.g. `https://vault.azure.net`,
    /// `https://management.azure.com`, `https://storage.azure.com`.
    pub resource: &'a str,
}

/// A token and how long it is valid.
pub struct AccessToken {
    /// The bearer token.
    pub value: Zeroizing<String>,
    /// Its lifetime from now, as the issuer stated it.
    pub lifetime: Duration,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

/// The authority for `tenant`: `AZURE_AUTHORITY_HOST` (or the public
/// cloud's) followed by the tenant, `AZURE_TENANT_ID`, or `organizations`.
pub fn authority_for(tenant: Option<&str>, env: &Environment) -> String {
    let host = env
        .get("AZURE_AUTHORITY_HOST")
        .unwrap_or(DEFAULT_AUTHORITY_HOST)
        .to_string();
    let tenant = tenant
        .map(str::to_string)
        .or_else(|| env.get("AZURE_TENANT_ID").map(str::to_string))
        .unwrap_or_else(|| "organizations".to_string());
    format!("{}/{tenant}", host.trim_end_matches('/'))
}

/// Gets a token for `req.resource`. `on_request` is called once per HTTP
/// request sent (token endpoint or metadata service), for round-trip counts.
pub fn acquire(
    http: &Client,
    req: &TokenRequest<'_>,
    on_request: &dyn Fn(),
) -> Result<AccessToken, AuthError> {
    let resource = req.resource.trim_end_matches('/');
    let scope = format!("{resource}/.default");
    let (value, lifetime) = match req.credential {
        Credential::None => (String::new(), Duration::from_secs(3600)),
        Credential::TokenEnv => (
            req.env
                .get(req.token_env)
                .map(str::to_string)
                .ok_or_else(|| {
                    AuthError(format!(
                        "credential token-env: ${} is not set",
                        req.token_env
                    ))
                })?,
            Duration::from_secs(3000),
        ),
        Credential::ClientSecret | Credential::WorkloadIdentity => {
            let client_id = req
                .env
                .get("AZURE_CLIENT_ID")
                .map(str::to_string)
                .ok_or_else(|| AuthError("AZURE_CLIENT_ID is not set".into()))?;
            let authority = match req.env.get("AZURE_TENANT_ID").map(str::to_string) {
                Some(t) => match req.authority.trim_end_matches('/').rfind('/') {
                    Some(i) => format!("{}/{t}", &req.authority[..i]),
                    None => req.authority.to_string(),
                },
                None => req.authority.to_string(),
            };
            let mut form: Vec<(&str, Zeroizing<String>)> = vec![
                ("grant_type", Zeroizing::new("client_credentials".into())),
                ("client_id", Zeroizing::new(client_id)),
                ("scope", Zeroizing::new(scope)),
            ];
            if req.credential == Credential::ClientSecret {
                let s = req
                    .env
                    .get("AZURE_CLIENT_SECRET")
                    .map(str::to_string)
                    .ok_or_else(|| AuthError("AZURE_CLIENT_SECRET is not set".into()))?;
                form.push(("client_secret", Zeroizing::new(s)));
            } else {
                let f = req
                    .env
                    .get("AZURE_FEDERATED_TOKEN_FILE")
                    .map(str::to_string)
                    .ok_or_else(|| AuthError("AZURE_FEDERATED_TOKEN_FILE is not set".into()))?;
                let a = std::fs::read_to_string(&f).map_err(|e| AuthError(format!("{f}: {e}")))?;
                form.push((
                    "client_assertion_type",
                    Zeroizing::new("urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()),
                ));
                form.push(("client_assertion", Zeroizing::new(a.trim().to_string())));
            }
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let url = format!("{}/oauth2/v2.0/token", authority.trim_end_matches('/'));
            let res = send_retrying(on_request, &|| http.post(&url).form(&pairs).send())
                .map_err(|e| AuthError(format!("token endpoint {url}: {e}")))?;
            token_response(res)?
        }
        Credential::ManagedIdentity => {
            // App Service, Functions, Container Apps: a local endpoint and a
            // secret header, both in the environment. Else a VM or scale
            // set: the Instance Metadata Service (its host overridable as the
            // Azure SDKs allow, for pod identity).
            let (endpoint, api, header) = match (
                req.env.get("IDENTITY_ENDPOINT").map(str::to_string),
                req.env.get("IDENTITY_HEADER").map(str::to_string),
            ) {
                (Some(endpoint), Some(secret)) => (
                    endpoint,
                    "2019-08-01",
                    ("X-IDENTITY-HEADER", Zeroizing::new(secret)),
                ),
                _ => {
                    let host = req
                        .env
                        .get("AZURE_POD_IDENTITY_AUTHORITY_HOST")
                        .map(str::to_string)
                        .unwrap_or_else(|| "http://169.254.169.254".into());
                    let endpoint = format!(
                        "{}/metadata/identity/oauth2/token",
                        host.trim_end_matches('/')
                    );
                    (
                        endpoint,
                        "2018-02-01",
                        ("Metadata", Zeroizing::new("true".into())),
                    )
                }
            };
            let mut url = reqwest::Url::parse(&endpoint)
                .map_err(|e| AuthError(format!("managed identity endpoint {endpoint}: {e}")))?;
            url.query_pairs_mut()
                .append_pair("api-version", api)
                .append_pair("resource", resource);
            // A user-assigned identity.
            if let Some(id) = req.env.get("AZURE_CLIENT_ID").map(str::to_string) {
                url.query_pairs_mut().append_pair("client_id", &id);
            }
            // These endpoints are plain HTTP on the machine (or link-local),
            // so not the https-only client unless the endpoint is https.
            let plain;
            let client = if url.scheme() == "https" {
                http
            } else {
                plain = Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .map_err(|e| AuthError(e.to_string()))?;
                &plain
            };
            let shown = url.origin().ascii_serialization();
            let res = send_retrying(on_request, &|| {
                client
                    .get(url.clone())
                    .header(header.0, header.1.as_str())
                    .send()
            })
            .map_err(|e| AuthError(format!("managed identity endpoint {shown}: {e}")))?;
            token_response(res)
                .map_err(|e| AuthError(format!("managed identity endpoint {shown}: {}", e.0)))?
        }
        Credential::AzureCli => {
            let tenant = req
                .authority
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string();
            let mut cmd = std::process::Command::new("az");
            cmd.args([
                "account",
                "get-access-token",
                "--resource",
                resource,
                "-o",
                "json",
            ]);
            if !tenant.is_empty() && tenant != "common" && tenant != "organizations" {
                cmd.args(["--tenant", &tenant]);
            }
            let out = cmd
                .output()
                .map_err(|e| AuthError(format!("azure-cli credential: cannot run az: {e}")))?;
            if !out.status.success() {
                return Err(AuthError(format!(
                    "az account get-access-token failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            let v: Value = serde_json::from_slice(&out.stdout)
                .map_err(|e| AuthError(format!("az output: {e}")))?;
            let t = v["accessToken"].as_str().unwrap_or("").to_string();
            if t.is_empty() {
                return Err(AuthError("az printed no accessToken".into()));
            }
            (t, Duration::from_secs(1800))
        }
    };
    Ok(AccessToken {
        value: Zeroizing::new(value),
        lifetime,
    })
}

/// Sends with retries on 408, 429 and 5xx answers and on timeouts or
/// refused connections.
fn send_retrying(
    on_request: &dyn Fn(),
    send: &dyn Fn() -> reqwest::Result<Response>,
) -> Result<Response, String> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        on_request();
        let res = send();
        let again = match &res {
            Ok(r) => matches!(r.status().as_u16(), 408 | 429 | 500 | 502 | 503 | 504),
            Err(e) => e.is_timeout() || e.is_connect(),
        };
        if !again || attempt >= ATTEMPTS {
            return res.map_err(|e| error_chain(&e));
        }
        std::thread::sleep(Duration::from_millis(300 << attempt));
    }
}

/// An https-only blocking client trusting the system's roots and `ca_file`.
pub fn https_client(ca_file: Option<&std::path::Path>) -> Result<Client, AuthError> {
    let mut b = Client::builder()
        .https_only(true)
        .timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("flr/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = ca_file {
        let pem =
            std::fs::read(ca).map_err(|e| AuthError(format!("CA file {}: {e}", ca.display())))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| AuthError(format!("CA file {}: {e}", ca.display())))?;
        b = b.add_root_certificate(cert);
    }
    b.build()
        .map_err(|e| AuthError(format!("HTTP client: {e}")))
}

/// The `Retry-After` of an answer in seconds, capped at `max`; `None`
/// when absent or not a number of seconds.
pub fn retry_after(r: &Response, max: Duration) -> Option<Duration> {
    let v = r
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    let secs: u64 = v.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(max))
}

/// An error with its causes, `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn token_response(res: Response) -> Result<(String, Duration), AuthError> {
    let status = res.status();
    let v: Value = res.json().unwrap_or(Value::Null);
    let token = v["access_token"].as_str().unwrap_or("");
    if !status.is_success() || token.is_empty() {
        return Err(AuthError(format!(
            "token request refused (HTTP {}): {} {}",
            status.as_u16(),
            v["error"].as_str().unwrap_or(""),
            v["error_description"].as_str().unwrap_or("")
        )));
    }
    // Seconds, as a number or (managed identity endpoints) a string; the
    // App Service endpoint gives only `expires_on`, a Unix time.
    let num = |k: &str| {
        v[k].as_u64()
            .or_else(|| v[k].as_str().and_then(|s| s.trim().parse().ok()))
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let secs = num("expires_in")
        .or_else(|| num("expires_on").map(|t| t.saturating_sub(now)))
        .unwrap_or(3600);
    Ok((token.to_string(), Duration::from_secs(secs)))
}

/// Who a JWT access token speaks for, read from its claims (the signature
/// is the service's business): `user …`, `app …` or `object …`.
pub fn caller_of(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    let pick = |k: &str| v[k].as_str().map(str::to_string);
    pick("upn")
        .or_else(|| pick("unique_name"))
        .map(|u| format!("user {u}"))
        .or_else(|| {
            pick("appid")
                .or_else(|| pick("azp"))
                .map(|a| format!("app {a}"))
        })
        .or_else(|| pick("oid").map(|o| format!("object {o}")))
}

/// A token for one resource, fetched on first use and renewed two minutes
/// before it expires (a token living under ten minutes: after four fifths
/// of its life), and at once after a service refused it
/// ([`Bearer::invalidate`]). Safe to share between threads.
pub struct Bearer {
    http: Client,
    credential: Credential,
    token_env: String,
    env: Arc<Environment>,
    authority: String,
    resource: String,
    cached: Mutex<Option<(Zeroizing<String>, Instant)>>,
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bearer")
            .field("credential", &self.credential)
            .field("resource", &self.resource)
            .finish_non_exhaustive()
    }
}

impl Bearer {
    /// Tokens for `resource` with `credential` at `authority` (see
    /// [`authority_for`]); `http` is used for token-endpoint requests.
    pub fn new(
        http: Client,
        credential: Credential,
        token_env: &str,
        authority: &str,
        resource: &str,
        env: Arc<Environment>,
    ) -> Bearer {
        Bearer {
            http,
            credential,
            token_env: token_env.to_string(),
            env,
            authority: authority.to_string(),
            resource: resource.to_string(),
            cached: Mutex::new(None),
        }
    }

    /// Tokens for `resource` as the `[azure]` configuration says (its
    /// credential, tenant and CA file); `token_env` names the variable for
    /// `credential = "token-env"`.
    pub fn from_config(
        cfg: &flr_config::AzureConfig,
        token_env: &str,
        resource: &str,
    ) -> Result<Bearer, AuthError> {
        Ok(Bearer::new(
            https_client(cfg.ca_file.as_deref())?,
            cfg.credential,
            token_env,
            &authority_for(cfg.tenant.as_deref(), &cfg.env),
            resource,
            cfg.env.clone(),
        ))
    }

    /// The resource the tokens are for.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// A valid token (empty for [`Credential::None`]).
    pub fn token(&self) -> Result<Zeroizing<String>, AuthError> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t, until)) = cached.as_ref() {
            if Instant::now() < *until {
                return Ok(t.clone());
            }
        }
        let t = acquire(
            &self.http,
            &TokenRequest {
                credential: self.credential,
                token_env: &self.token_env,
                env: &self.env,
                authority: &self.authority,
                resource: &self.resource,
            },
            &|| {},
        )?;
        // Renew two minutes early, or after four fifths of a shorter life.
        let margin = Duration::from_secs(120).min(t.lifetime / 5);
        let until = Instant::now() + t.lifetime.saturating_sub(margin);
        *cached = Some((t.value.clone(), until));
        Ok(t.value)
    }

    /// Forgets the cached token (after the service refused it).
    pub fn invalidate(&self) {
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.", b(r#"{"alg":"none"}"#), b(claims))
    }

    #[test]
    fn caller_prefers_user_then_app_then_object() {
        assert_eq!(
            caller_of(&jwt(r#"{"upn":"ops@contoso.com","appid":"a"}"#)).as_deref(),
            Some("user ops@contoso.com")
        );
        assert_eq!(
            caller_of(&jwt(r#"{"appid":"1234","oid":"o"}"#)).as_deref(),
            Some("app 1234")
        );
        assert_eq!(
            caller_of(&jwt(r#"{"oid":"o-1"}"#)).as_deref(),
            Some("object o-1")
        );
        assert_eq!(caller_of("opaque-token"), None);
    }

    #[test]
    fn token_env_and_missing_variables() {
        let http = Client::new();
        let env = Environment::empty();
        let req = TokenRequest {
            credential: Credential::TokenEnv,
            token_env: "FLR_AZAUTH_TEST_TOKEN_UNSET",
            env: &env,
            authority: "https://login.microsoftonline.com/t",
            resource: "https://storage.azure.com",
        };
        let e = acquire(&http, &req, &|| {}).unwrap_err();
        assert!(
            e.0.contains("$FLR_AZAUTH_TEST_TOKEN_UNSET is not set"),
            "{e}"
        );
        let none = acquire(
            &http,
            &TokenRequest {
                credential: Credential::None,
                ..req
            },
            &|| panic!("no request for credential none"),
        )
        .unwrap();
        assert!(none.value.is_empty());
    }

    #[test]
    fn authority_uses_the_given_tenant() {
        let a = authority_for(
            Some("72f988bf-86f1-41af-91ab-2d7cd011db47"),
            &Environment::empty(),
        );
        assert!(a.ends_with("/72f988bf-86f1-41af-91ab-2d7cd011db47"), "{a}");
        assert!(a.starts_with("https://"), "{a}");
    }
}
