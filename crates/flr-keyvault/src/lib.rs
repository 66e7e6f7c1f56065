//! A small Azure Key Vault data-plane client (api-version 7.5) for flr's
//! key chain, on reqwest with rustls (the HTTP stack of Microsoft's Rust
//! SDK). It speaks the real protocol:
//!
//! - HTTPS only; the first request to a vault goes without a token and
//!   without a body, and the `401` answer's `WWW-Authenticate: Bearer
//!   authorization="…/<tenant>", resource="…"` says where to get one;
//! - tokens from the Azure CLI, the managed-identity endpoint, a workload
//!   identity's federated token, a client secret (the last two at the
//!   authority the challenge named), or an environment variable;
//! - retries on 408, 429, 500, 502, 503 and 504, honouring `Retry-After`;
//! - Key Vault's error bodies (`error.code`, `error.innererror.code`)
//!   mapped to [`VaultError::Service`].
//!
//! It implements [`flr_keychain::Vault`]; [`HttpConnector`] makes clients
//! from the `[[vault]]` entries of the configuration.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flr_config::{Credential, Environment, VaultConfig};
use flr_keychain::response;
use flr_keychain::{Connector, KeyBundle, ObjectId, SecretBundle, Vault, VaultError};
use flr_keys::Secret;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use zeroize::Zeroizing;

/// The Key Vault REST version flr speaks.
pub const API_VERSION: &str = "7.5";

/// Attempts per request (the first one included).
const ATTEMPTS: u32 = 4;
/// The longest `Retry-After` flr waits for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Makes [`KeyVaultClient`]s from configuration entries; their
/// credentials read the variables of `env`.
#[derive(Debug, Default)]
pub struct HttpConnector {
    env: Arc<Environment>,
}

impl HttpConnector {
    /// A connector whose clients' credentials read `env`.
    pub fn new(env: Arc<Environment>) -> HttpConnector {
        HttpConnector { env }
    }
}

impl Connector for HttpConnector {
    fn connect(&self, cfg: &VaultConfig) -> Result<Box<dyn Vault>, String> {
        Ok(Box::new(KeyVaultClient::new(cfg, self.env.clone())?))
    }
}

struct Token {
    value: Zeroizing<String>,
    expires: Instant,
}

struct Challenge {
    authority: String,
    resource: String,
}

/// A client for one vault.
pub struct KeyVaultClient {
    base: String,
    http: Client,
    credential: Credential,
    token_env: String,
    env: Arc<Environment>,
    token: RefCell<Option<Token>>,
    challenge: RefCell<Option<Challenge>>,
    trips: Cell<usize>,
    caller: RefCell<Option<String>>,
}

impl KeyVaultClient {
    /// A client for the vault `cfg.url`, trusting `cfg.ca_file` in
    /// addition to the system's roots; its credential reads `env`.
    pub fn new(cfg: &VaultConfig, env: Arc<Environment>) -> Result<KeyVaultClient, String> {
        let mut b = Client::builder()
            .https_only(true)
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("flr/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("vault {}: ca_file {}: {e}", cfg.url, ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| format!("vault {}: ca_file {}: {e}", cfg.url, ca.display()))?;
            b = b.add_root_certificate(cert);
        }
        Ok(KeyVaultClient {
            base: cfg.url.trim_end_matches('/').to_string(),
            http: b.build().map_err(|e| format!("vault {}: {e}", cfg.url))?,
            credential: cfg.credential,
            token_env: cfg.token_env.clone(),
            env,
            token: RefCell::new(None),
            challenge: RefCell::new(None),
            trips: Cell::new(0),
            caller: RefCell::new(None),
        })
    }

    fn url(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{sep}api-version={API_VERSION}", self.base)
    }

    /// Sends `build()` with retries; counts every round trip.
    fn send_retrying(&self, build: &dyn Fn() -> RequestBuilder) -> Result<Response, VaultError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.trips.set(self.trips.get() + 1);
            let res = build().send();
            let retry_after = match &res {
                Ok(r) if matches!(r.status().as_u16(), 408 | 429 | 500 | 502 | 503 | 504) => Some(
                    flr_azauth::retry_after(r, MAX_RETRY_AFTER).unwrap_or_else(|| backoff(attempt)),
                ),
                Ok(_) => None,
                Err(e) if e.is_timeout() || e.is_connect() => Some(backoff(attempt)),
                Err(_) => None,
            };
            match (retry_after, attempt < ATTEMPTS) {
                (Some(wait), true) => std::thread::sleep(wait),
                _ => return res.map_err(|e| VaultError::Transport(flr_azauth::error_chain(&e))),
            }
        }
    }

    /// One authenticated request: challenge and token first when needed,
    /// and once more if the token is refused.
    fn request(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value, VaultError> {
        for round in 0..2 {
            if self
                .token
                .borrow()
                .as_ref()
                .is_none_or(|t| t.expires <= Instant::now())
            {
                if self.challenge.borrow().is_none() || round > 0 {
                    self.challenge()?;
                }
                self.acquire_token()?;
            }
            let token = self
                .token
                .borrow()
                .as_ref()
                .map(|t| t.value.clone())
                .unwrap_or_default();
            let res = self.send_retrying(&|| {
                let mut r = self.http.request(method.clone(), url);
                if !token.is_empty() {
                    r = r.bearer_auth(token.as_str());
                }
                match body {
                    Some(b) => r.json(b),
                    None => r,
                }
            })?;
            if res.status() == StatusCode::UNAUTHORIZED
                && round == 0
                && self.credential != Credential::None
            {
                // A stale or refused token: challenge again, once.
                *self.token.borrow_mut() = None;
                continue;
            }
            return parse_response(res);
        }
        Err(VaultError::Auth("the vault refused the token twice".into()))
    }

    /// The unauthenticated first request: no token, no body; the 401's
    /// `WWW-Authenticate` names the authority and resource.
    fn challenge(&self) -> Result<(), VaultError> {
        let url = self.url("/secrets");
        let res = self.send_retrying(&|| self.http.get(&url))?;
        if res.status() != StatusCode::UNAUTHORIZED {
            return Err(VaultError::Auth(format!(
                "expected a 401 bearer challenge from {}, got HTTP {}",
                self.base,
                res.status().as_u16()
            )));
        }
        let header = res
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_string();
        let param = |name: &str| -> Option<String> {
            let i = header.find(&format!("{name}=\""))? + name.len() + 2;
            let end = header[i..].find('"')? + i;
            Some(header[i..end].to_string())
        };
        let authority = param("authorization").or_else(|| param("authorization_uri"));
        let resource = param("resource")
            .or_else(|| param("scope").map(|s| s.trim_end_matches("/.default").to_string()));
        match (authority, resource) {
            (Some(authority), Some(resource)) if header.trim_start().starts_with("Bearer") => {
                *self.challenge.borrow_mut() = Some(Challenge {
                    authority,
                    resource,
                });
                Ok(())
            }
            _ => Err(VaultError::Auth(format!(
                "{} answered 401 without a usable Bearer challenge ({header:?})",
                self.base
            ))),
        }
    }

    fn acquire_token(&self) -> Result<(), VaultError> {
        let (authority, resource) = {
            let c = self.challenge.borrow();
            let c = c
                .as_ref()
                .ok_or_else(|| VaultError::Auth("no challenge".into()))?;
            (c.authority.clone(), c.resource.clone())
        };
        let t = flr_azauth::acquire(
            &self.http,
            &flr_azauth::TokenRequest {
                credential: self.credential,
                token_env: &self.token_env,
                env: &self.env,
                authority: &authority,
                resource: &resource,
            },
            &|| self.trips.set(self.trips.get() + 1),
        )
        .map_err(|e| VaultError::Auth(e.0))?;
        let (value, lifetime) = (t.value, t.lifetime);
        *self.caller.borrow_mut() = flr_azauth::caller_of(&value);
        *self.token.borrow_mut() = Some(Token {
            value,
            // Renew a little early.
            expires: Instant::now() + lifetime.saturating_sub(Duration::from_secs(120)),
        });
        Ok(())
    }

    fn object_url(&self, id: &ObjectId, suffix: &str) -> Result<String, VaultError> {
        if id.vault != self.base {
            return Err(VaultError::Transport(format!(
                "{id} is not in the vault {}",
                self.base
            )));
        }
        let v = id.version.as_deref().unwrap_or("");
        let kind = match id.kind {
            flr_keychain::ObjectKind::Key => "keys",
            flr_keychain::ObjectKind::Secret => "secrets",
        };
        Ok(self.url(&format!("/{kind}/{}/{v}{suffix}", id.name)))
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(400 << attempt.min(5))
}

fn parse_response(res: Response) -> Result<Value, VaultError> {
    let status = res.status();
    let body: Value = res.json().unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    Err(response::service_error(status.as_u16(), &body))
}

impl Vault for KeyVaultClient {
    fn get_secret(&self, id: &ObjectId) -> Result<SecretBundle, VaultError> {
        let url = self.object_url(id, "")?;
        Ok(response::secret_bundle(self.request(
            Method::GET,
            &url,
            None,
        )?))
    }

    fn secret_versions(&self, vault: &str, name: &str) -> Result<Vec<SecretBundle>, VaultError> {
        if vault != self.base {
            return Err(VaultError::Transport(format!(
                "{vault} is not {}",
                self.base
            )));
        }
        let mut url = self.url(&format!("/secrets/{name}/versions"));
        let mut out = Vec::new();
        for _ in 0..response::MAX_VERSION_PAGES {
            let (items, next) =
                response::secret_versions_page(&self.request(Method::GET, &url, None)?);
            out.extend(items);
            match next {
                Some(next) => {
                    if !next.starts_with(&self.base) {
                        return Err(VaultError::Transport(format!(
                            "nextLink {next:?} leaves the vault {}",
                            self.base
                        )));
                    }
                    url = next;
                }
                None => break,
            }
        }
        Ok(out)
    }

    fn get_key(&self, id: &ObjectId) -> Result<KeyBundle, VaultError> {
        let url = self.object_url(id, "")?;
        Ok(response::key_bundle(&self.request(
            Method::GET,
            &url,
            None,
        )?))
    }

    fn unwrap_key(
        &self,
        id: &ObjectId,
        alg: &str,
        value_b64url: &str,
    ) -> Result<Secret, VaultError> {
        let url = self.object_url(id, "/unwrapkey")?;
        let body = serde_json::json!({"alg": alg, "value": value_b64url});
        response::unwrapped_key(self.request(Method::POST, &url, Some(&body))?)
    }

    fn caller(&self) -> Option<String> {
        self.caller.borrow().clone()
    }

    fn round_trips(&self) -> usize {
        self.trips.get()
    }
}
