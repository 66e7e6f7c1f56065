//! The chain itself: versioned secret → (if wrapped) KEK version unwrap →
//! the passphrase file (Linux) or `.BEK` file (Windows); or, in a dry run,
//! every check that needs no key material.

use std::collections::{BTreeMap, HashMap};

use flr_keys::Secret;
use serde::Serialize;

use crate::audit::{AuditLog, Record};
use flr_config::{Config, DatePolicy, ObjectId, ObjectKind, VaultConfig};

use crate::metadata::AdeSetting;
use crate::offline;
use crate::policy::Policy;

/// Validity attributes of a key or secret version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Enabled.
    pub enabled: bool,
    /// Not before (Unix seconds).
    pub nbf: Option<i64>,
    /// Expires (Unix seconds).
    pub exp: Option<i64>,
}

/// A secret version as the vault returns it.
pub struct SecretBundle {
    /// The versioned id.
    pub id: String,
    /// The value (None when only attributes were read).
    pub value: Option<Secret>,
    /// `BEK` or `Wrapped BEK` for ADE.
    pub content_type: Option<String>,
    /// Tags (`DiskEncryptionKeyEncryptionKeyURL`, …).
    pub tags: BTreeMap<String, String>,
    /// Attributes.
    pub attributes: Attributes,
}

/// A key version's public facts.
#[derive(Debug, Clone)]
pub struct KeyBundle {
    /// The versioned key id.
    pub kid: String,
    /// Attributes.
    pub attributes: Attributes,
}

/// Why a vault call failed.
#[derive(Debug, Clone)]
pub enum VaultError {
    /// Key Vault answered with an error.
    Service {
        /// HTTP status.
        status: u16,
        /// `error.code`.
        code: String,
        /// `error.innererror.code`.
        inner: Option<String>,
        /// `error.message`.
        message: String,
    },
    /// No token could be obtained.
    Auth(String),
    /// The vault could not be reached or spoke nonsense (after retries).
    Transport(String),
}

impl std::fmt::Display for VaultError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VaultError::Service {
                status,
                code,
                inner,
                message,
            } => {
                write!(f, "HTTP {status} {code}")?;
                if let Some(i) = inner {
                    write!(f, "/{i}")?;
                }
                write!(f, ": {message}")
            }
            VaultError::Auth(m) => write!(f, "authentication failed: {m}"),
            VaultError::Transport(m) => write!(f, "vault unreachable: {m}"),
        }
    }
}

/// One vault's data plane (flr-keyvault implements it over HTTPS).
pub trait Vault {
    /// `GET {vault}/secrets/{name}/{version}`.
    fn get_secret(&self, id: &ObjectId) -> Result<SecretBundle, VaultError>;
    /// `GET {vault}/secrets/{name}/versions` (attributes, tags and content
    /// type; never values).
    fn secret_versions(&self, vault: &str, name: &str) -> Result<Vec<SecretBundle>, VaultError>;
    /// `GET {vault}/keys/{name}/{version}` (public part and attributes).
    fn get_key(&self, id: &ObjectId) -> Result<KeyBundle, VaultError>;
    /// `POST {kid}/unwrapkey`.
    fn unwrap_key(
        &self,
        id: &ObjectId,
        alg: &str,
        value_b64url: &str,
    ) -> Result<Secret, VaultError>;
    /// Who the vault sees (from the token), when known.
    fn caller(&self) -> Option<String>;
    /// HTTP round trips made so far (401 challenges and token requests
    /// included).
    fn round_trips(&self) -> usize;
}

/// Makes vault clients from their configuration.
pub trait Connector {
    /// A client for one configured vault.
    fn connect(&self, cfg: &VaultConfig) -> Result<Box<dyn Vault>, String>;
}

/// Whether to fetch key material or only check that it could be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Get the secret and unwrap it.
    Unwrap,
    /// Read only attributes: never the secret's value, never unwrap.
    DryRun,
}

/// A reason, machine-readable, with a sentence and a remedy.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    /// Stable code, e.g. `kek-disabled`.
    pub code: &'static str,
    /// What is the matter.
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
}

fn finding(code: &'static str, message: String, remedy: Option<String>) -> Finding {
    Finding {
        code,
        message,
        remedy,
    }
}

/// The key material the chain produced for a disk.
pub struct DiskKey {
    /// The passphrase file's bytes (Linux) or the `.BEK` file (Windows).
    pub secret: Secret,
    /// The `.BEK` file name's GUID (Windows), from the secret's tags.
    pub file_name: Option<String>,
    /// The chain that produced it, for the report (no key bytes).
    pub origin: String,
}

/// How the chain ended.
pub enum Outcome {
    /// Key material, ready to try on the disk's encrypted volumes.
    Material(DiskKey),
    /// Dry run: every check that needs no key material passed.
    Feasible,
    /// A definite refusal (policy, disabled, deleted, forbidden…).
    Blocked(Finding),
    /// The answer could not be found (vault unreachable, server error).
    Error(Finding),
}

/// Everything the chain did for one ADE setting.
pub struct ChainReport {
    /// The versioned secret URL the disk depends on.
    pub secret: String,
    /// The KEK version it depends on, when wrapped.
    pub kek: Option<String>,
    /// The unwrap algorithm.
    pub algorithm: Option<String>,
    /// `BEK` or `Wrapped BEK`.
    pub content_type: Option<String>,
    /// The `DiskEncryptionKeyFileName` tag.
    pub file_name: Option<String>,
    /// What was done, in order (one line each, no key bytes).
    pub steps: Vec<String>,
    /// Non-fatal findings (expired key used, URL mismatch…).
    pub warnings: Vec<Finding>,
    /// What a dry run could not check.
    pub not_checked: Vec<String>,
    /// The result.
    pub outcome: Outcome,
}

/// The key chain for one run: config, vault clients (made on first use),
/// the audit log.
pub struct KeyChain<'a> {
    config: &'a Config,
    connector: Option<&'a dyn Connector>,
    vaults: HashMap<String, Box<dyn Vault>>,
    audit: &'a mut AuditLog,
    image: String,
    now: i64,
}

type Step<T> = Result<T, Outcome>;

/// A secret's value (None in a dry run), content type and tags.
type SecretRead = (Option<Secret>, Option<String>, BTreeMap<String, String>);

impl<'a> KeyChain<'a> {
    /// A chain over `config`; `connector` makes vault clients (None: no
    /// network code available).
    pub fn new(
        config: &'a Config,
        connector: Option<&'a dyn Connector>,
        audit: &'a mut AuditLog,
        image: &str,
    ) -> KeyChain<'a> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        KeyChain {
            config,
            connector,
            vaults: HashMap::new(),
            audit,
            image: image.to_string(),
            now,
        }
    }

    /// HTTP round trips made through every vault client so far.
    pub fn round_trips(&self) -> usize {
        self.vaults.values().map(|v| v.round_trips()).sum()
    }

    fn audit(
        &mut self,
        operation: &str,
        id: &str,
        alg: Option<&str>,
        caller: Option<&str>,
        result: &str,
    ) -> Step<()> {
        let image = self.image.clone();
        self.audit
            .record(Record {
                time: String::new(),
                operation,
                id,
                alg,
                caller,
                result,
                image: Some(&image),
            })
            .map_err(|e| {
                Outcome::Error(finding(
                    "audit-failed",
                    format!("cannot append to the audit log: {e}"),
                    Some("fix the [audit] path in the config; flr does not use keys it cannot record".into()),
                ))
            })
    }

    /// The client for a vault URL, after the policy checks.
    fn vault(&mut self, url: &str, what: &str) -> Step<&dyn Vault> {
        let policy = &self.config.policy;
        if !policy.allows_vault(url) {
            return Err(Outcome::Blocked(finding(
                "policy-denied-vault",
                format!("the policy does not allow the vault {url} (needed for {what}); no request was made"),
                Some("add the vault to [policy] vaults if it should be used".into()),
            )));
        }
        if policy.offline {
            return Err(Outcome::Blocked(finding(
                "policy-offline",
                format!("the policy is offline and there is no offline material for {what}"),
                Some(
                    "add an [[offline_key]] / [[offline_secret]] for it, or allow network use"
                        .into(),
                ),
            )));
        }
        if !self.vaults.contains_key(url) {
            let Some(cfg) = self.config.vault(url) else {
                return Err(Outcome::Blocked(finding(
                    "vault-not-configured",
                    format!("{what} is in the vault {url}, which is not configured"),
                    Some(format!(
                        "add [[vault]] url = \"{url}\" with a credential to the config"
                    )),
                )));
            };
            let Some(conn) = self.connector else {
                return Err(Outcome::Error(finding(
                    "no-network",
                    "this build cannot reach Key Vault".into(),
                    None,
                )));
            };
            let client = conn
                .connect(cfg)
                .map_err(|e| Outcome::Error(finding("vault-client", e, None)))?;
            self.vaults.insert(url.to_string(), client);
        }
        Ok(self.vaults[url].as_ref())
    }

    /// Resolves one ADE setting.
    pub fn resolve(&mut self, setting: &AdeSetting, mode: Mode) -> ChainReport {
        let mut r = ChainReport {
            secret: setting.secret.to_string(),
            kek: setting.kek.as_ref().map(ToString::to_string),
            algorithm: None,
            content_type: None,
            file_name: None,
            steps: Vec::new(),
            warnings: Vec::new(),
            not_checked: Vec::new(),
            outcome: Outcome::Feasible,
        };
        r.outcome = match self.run(setting, mode, &mut r) {
            Ok(o) | Err(o) => o,
        };
        r
    }

    fn run(&mut self, setting: &AdeSetting, mode: Mode, r: &mut ChainReport) -> Step<Outcome> {
        let sid = &setting.secret;
        if sid.kind != ObjectKind::Secret {
            return Err(Outcome::Blocked(finding(
                "bad-secret-url",
                format!("{sid} is not a secret URL"),
                None,
            )));
        }
        if sid.version.is_none() {
            r.warnings.push(finding(
                "secret-unversioned",
                format!("{sid} names no version: the latest is used, which after a key rotation may not be the one this disk was encrypted with"),
                Some("use the versioned secretUrl recorded on the snapshot".into()),
            ));
        }
        if !self.config.policy.allows_secret(&sid.to_string()) {
            return Err(Outcome::Blocked(finding(
                "policy-denied-secret",
                format!("the policy does not allow the secret {sid}; no request was made"),
                Some("add it to [policy] secrets if it should be used".into()),
            )));
        }

        // 1. An offline file standing for this exact secret version: the
        //    passphrase/BEK itself, nothing to unwrap.
        if let Some(os) = self
            .config
            .offline_secrets
            .iter()
            .find(|o| ObjectId::parse(&o.id).is_ok_and(|id| id.same_as(sid)))
        {
            let file = os.file.clone();
            r.steps
                .push(format!("secret {sid}: offline file {}", file.display()));
            if mode == Mode::DryRun {
                r.not_checked
                    .push("the offline secret file was not read (dry run)".into());
                return Ok(Outcome::Feasible);
            }
            let bytes = std::fs::read(&file).map_err(|e| {
                Outcome::Error(finding(
                    "offline-file",
                    format!(
                        "cannot read the offline secret file {}: {e}",
                        file.display()
                    ),
                    None,
                ))
            })?;
            self.audit("offline-secret", &sid.to_string(), None, None, "ok")?;
            return Ok(Outcome::Material(DiskKey {
                secret: Secret::new(bytes),
                file_name: None,
                origin: format!("offline file for secret {sid}"),
            }));
        }

        // 2. The secret's value and tags: from the metadata (Azure Backup),
        //    or the vault.
        let (value, content_type, tags) = match &setting.secret_value {
            Some(v) => {
                r.steps.push(format!(
                    "secret {sid}: value taken from {}",
                    "the backup metadata"
                ));
                (
                    Some(Secret::from_slice(v.trim().as_bytes())),
                    None,
                    BTreeMap::new(),
                )
            }
            None => self.read_secret(sid, mode, r)?,
        };
        r.content_type = content_type.clone();
        r.file_name = tags.get("DiskEncryptionKeyFileName").cloned();

        // 3. Wrapped or not, and by which KEK version.
        let tag_kek = tags
            .get("DiskEncryptionKeyEncryptionKeyURL")
            .filter(|s| !s.is_empty());
        let kek = match (tag_kek, &setting.kek) {
            (Some(t), meta) => {
                let t = ObjectId::parse(t).map_err(|e| {
                    Outcome::Blocked(finding(
                        "bad-kek-url",
                        format!("the secret's KEK tag: {e}"),
                        None,
                    ))
                })?;
                if let Some(m) = meta.as_ref().filter(|m| !m.same_as(&t)) {
                    r.warnings.push(finding(
                        "kek-url-mismatch",
                        format!("the disk metadata names KEK {m}, the secret's tag {t}; the tag (what wrapped it) is used"),
                        None,
                    ));
                }
                Some(t)
            }
            (None, meta) => meta.clone(),
        };
        let wrapped = match content_type.as_deref() {
            Some(ct) if ct.eq_ignore_ascii_case("Wrapped BEK") => true,
            Some(ct) if ct.eq_ignore_ascii_case("BEK") => false,
            _ => kek.is_some(),
        };
        if !wrapped {
            r.steps.push(format!("secret {sid}: not wrapped (BEK)"));
            return match (mode, value) {
                (Mode::DryRun, _) | (_, None) => Ok(Outcome::Feasible),
                (Mode::Unwrap, Some(v)) => {
                    let bytes = decode_value(&v)?;
                    Ok(Outcome::Material(DiskKey {
                        secret: bytes,
                        file_name: r.file_name.clone(),
                        origin: format!("Key Vault secret {sid} (BEK)"),
                    }))
                }
            };
        }
        let Some(kid) = kek else {
            return Err(Outcome::Blocked(finding(
                "kek-unknown",
                format!("the secret {sid} is a Wrapped BEK but neither its tags nor the metadata name the KEK"),
                Some("give the KEK with --kek-url (versioned)".into()),
            )));
        };
        let alg = tags
            .get("DiskEncryptionKeyEncryptionAlgorithm")
            .cloned()
            .unwrap_or_else(|| "RSA-OAEP".into());
        r.kek = Some(kid.to_string());
        r.algorithm = Some(alg.clone());
        if kid.version.is_none() {
            return Err(Outcome::Blocked(finding(
                "kek-unversioned",
                format!("the KEK URL {kid} names no version; ADE wraps with one specific version"),
                Some("use the versioned keyUrl from the disk metadata or the secret's tags".into()),
            )));
        }
        let policy = &self.config.policy;
        if !policy.allows_key(&kid.to_string()) {
            return Err(Outcome::Blocked(finding(
                "policy-denied-key",
                format!("the policy does not allow the key {kid}; no request was made"),
                Some("add it to [policy] keys if it should be used".into()),
            )));
        }
        if !policy.allows_algorithm(&alg) {
            return Err(Outcome::Blocked(finding(
                "policy-denied-algorithm",
                format!("the secret is wrapped with {alg}, which the policy does not allow"),
                Some(format!("add \"{alg}\" to [policy] algorithms to accept it")),
            )));
        }

        // 4. Unwrap: offline key for this version, else the vault.
        if let Some(ok) = self
            .config
            .offline_keys
            .iter()
            .find(|k| ObjectId::parse(&k.kid).is_ok_and(|id| id.same_as(&kid)))
        {
            let (path, pem) = match (&ok.pem, &ok.jwk) {
                (Some(p), _) => (p.clone(), true),
                (None, Some(j)) => (j.clone(), false),
                (None, None) => unreachable!("checked when the config was read"),
            };
            r.steps.push(format!(
                "unwrap with {kid} ({alg}): offline key {}",
                path.display()
            ));
            if mode == Mode::DryRun {
                r.not_checked
                    .push("the offline key was not loaded or tried (dry run)".into());
                return Ok(Outcome::Feasible);
            }
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Outcome::Error(finding(
                    "offline-file",
                    format!("{}: {e}", path.display()),
                    None,
                ))
            })?;
            let key = if pem {
                offline::load_pem(&text)
            } else {
                offline::load_jwk(&text)
            }
            .map_err(|e| {
                Outcome::Error(finding(
                    "offline-key",
                    format!("{}: {e}", path.display()),
                    None,
                ))
            })?;
            let wrapped_bytes = wrapped_value(value.as_ref(), sid)?;
            let res = offline::rsa_unwrap(&key, &alg, &wrapped_bytes);
            self.audit(
                "offline-unwrap",
                &kid.to_string(),
                Some(&alg),
                None,
                if res.is_ok() { "ok" } else { "failed" },
            )?;
            let secret = res.map_err(|e| {
                Outcome::Blocked(finding(
                    "offline-unwrap-failed",
                    format!("{kid}: {e}"),
                    Some(
                        "the offline key must be the exact KEK version that wrapped the secret"
                            .into(),
                    ),
                ))
            })?;
            return Ok(Outcome::Material(DiskKey {
                secret,
                file_name: r.file_name.clone(),
                origin: format!(
                    "Key Vault secret {sid} (Wrapped BEK) unwrapped offline with {kid} ({alg})"
                ),
            }));
        }
        let key = {
            let vault = self.vault(&kid.vault, &format!("the KEK {kid}"))?;
            let res = vault.get_key(&kid);
            let caller = vault.caller();
            let res_s = res.as_ref().map_or_else(error_code, |_| "ok".into());
            self.audit("get-key", &kid.to_string(), None, caller.as_deref(), &res_s)?;
            res.map_err(|e| map_error(&e, &kid, "get"))?
        };
        r.steps
            .push(format!("key {kid}: enabled={}", key.attributes.enabled));
        if !key.attributes.enabled {
            return Err(Outcome::Blocked(disabled_key(
                &kid,
                "the key's attributes say enabled=false",
            )));
        }
        self.check_dates(&kid, key.attributes, r)?;
        if mode == Mode::DryRun {
            r.not_checked.push(format!(
                "unwrapKey was not called (dry run): that {kid} still unwraps the secret, and that the identity has the unwrapKey permission, were not tested"
            ));
            return Ok(Outcome::Feasible);
        }
        // Decoded and re-encoded below: Key Vault wants base64url, the
        // value may use either alphabet.
        let wrapped_bytes = wrapped_value(value.as_ref(), sid)?;
        let (res, caller) = {
            let vault = self.vault(&kid.vault, "the KEK")?;
            (
                vault.unwrap_key(&kid, &alg, &offline::b64url(&wrapped_bytes)),
                vault.caller(),
            )
        };
        let res_s = res.as_ref().map_or_else(error_code, |_| "ok".into());
        self.audit(
            "unwrap-key",
            &kid.to_string(),
            Some(&alg),
            caller.as_deref(),
            &res_s,
        )?;
        let secret = res.map_err(|e| map_error(&e, &kid, "unwrapKey"))?;
        r.steps.push(format!("unwrap with {kid} ({alg}): ok"));
        Ok(Outcome::Material(DiskKey {
            secret,
            file_name: r.file_name.clone(),
            origin: format!("Key Vault secret {sid} (Wrapped BEK) unwrapped by {kid} ({alg})"),
        }))
    }

    fn check_dates(&self, kid: &ObjectId, a: Attributes, r: &mut ChainReport) -> Step<()> {
        let p = &self.config.policy;
        let when = |t: i64| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64),
            )
            .to_string()
        };
        if let Some(exp) = a.exp.filter(|&e| e <= self.now) {
            let f = finding(
                "key-expired",
                format!("the KEK version {kid} expired on {} (Key Vault still unwraps with it)", when(exp)),
                Some("set expired_keys = \"warn\" in [policy] to accept it, or extend the key's expiry".into()),
            );
            if p.expired_keys == DatePolicy::Deny {
                return Err(Outcome::Blocked(f));
            }
            r.warnings.push(Finding { remedy: None, ..f });
        }
        if let Some(nbf) = a.nbf.filter(|&n| n > self.now) {
            let f = finding(
                "key-not-yet-valid",
                format!("the KEK version {kid} is not valid before {} (Key Vault still unwraps with it)", when(nbf)),
                Some("set not_yet_valid_keys = \"warn\" in [policy] to accept it".into()),
            );
            if p.not_yet_valid_keys == DatePolicy::Deny {
                return Err(Outcome::Blocked(f));
            }
            r.warnings.push(Finding { remedy: None, ..f });
        }
        Ok(())
    }

    /// Reads the secret: its value (unwrap mode) or only attributes and
    /// tags from the versions list (dry run).
    fn read_secret(&mut self, sid: &ObjectId, mode: Mode, r: &mut ChainReport) -> Step<SecretRead> {
        let vault = self.vault(&sid.vault, &format!("the secret {sid}"))?;
        let caller = vault.caller();
        match mode {
            Mode::Unwrap => {
                let res = vault.get_secret(sid);
                let res_s = res.as_ref().map_or_else(error_code, |_| "ok".into());
                self.audit(
                    "get-secret",
                    &sid.to_string(),
                    None,
                    caller.as_deref(),
                    &res_s,
                )?;
                let b = res.map_err(|e| map_error(&e, sid, "get"))?;
                r.steps.push(format!(
                    "secret {sid}: read ({})",
                    b.content_type.as_deref().unwrap_or("no content type")
                ));
                Ok((b.value, b.content_type, b.tags))
            }
            Mode::DryRun => {
                let res = vault.secret_versions(&sid.vault, &sid.name);
                let res_s = res.as_ref().map_or_else(error_code, |_| "dry-run".into());
                self.audit(
                    "list-secret-versions",
                    &sid.unversioned(),
                    None,
                    caller.as_deref(),
                    &res_s,
                )?;
                let items = res.map_err(|e| map_error(&e, sid, "list"))?;
                let item = items.into_iter().find(|b| {
                    ObjectId::parse(&b.id).is_ok_and(|id| match &sid.version {
                        Some(_) => id.same_as(sid),
                        None => true,
                    })
                });
                let Some(b) = item else {
                    return Err(Outcome::Blocked(finding(
                        "secret-version-not-found",
                        format!("the vault has the secret {} but not the version {}", sid.name, sid.version.as_deref().unwrap_or("?")),
                        Some("check the secretUrl: the disk metadata records the exact version it needs".into()),
                    )));
                };
                r.steps.push(format!(
                    "secret {sid}: attributes read (enabled={}, {})",
                    b.attributes.enabled,
                    b.content_type.as_deref().unwrap_or("no content type")
                ));
                if !b.attributes.enabled {
                    return Err(Outcome::Blocked(disabled_secret(sid)));
                }
                r.not_checked
                    .push("the secret's value was not read (dry run)".into());
                Ok((None, b.content_type, b.tags))
            }
        }
    }
}

fn error_code(e: &VaultError) -> String {
    match e {
        VaultError::Service { inner: Some(i), .. } => i.clone(),
        VaultError::Service { code, status, .. } => format!("{status} {code}"),
        VaultError::Auth(_) => "auth-failed".into(),
        VaultError::Transport(_) => "unreachable".into(),
    }
}

/// The wrapped BEK's bytes from the secret's value (base64 or base64url).
fn wrapped_value(value: Option<&Secret>, sid: &ObjectId) -> Step<Vec<u8>> {
    let value =
        value.ok_or_else(|| Outcome::Error(finding("no-value", "no secret value".into(), None)))?;
    offline::b64_decode(&String::from_utf8_lossy(value.expose())).map_err(|e| {
        Outcome::Blocked(finding(
            "bad-secret-value",
            format!("secret {sid}: {e}"),
            None,
        ))
    })
}

fn decode_value(v: &Secret) -> Step<Secret> {
    let text = String::from_utf8_lossy(v.expose());
    offline::b64_decode(&text).map(Secret::new).map_err(|e| {
        Outcome::Blocked(finding(
            "bad-secret-value",
            format!("the BEK secret's value is not base64: {e}"),
            None,
        ))
    })
}

fn disabled_key(kid: &ObjectId, how: &str) -> Finding {
    let v = kid.version.as_deref().unwrap_or("?");
    finding(
        "kek-disabled",
        format!("the KEK version {v} of key {} in {} is disabled ({how})", kid.name, kid.vault),
        Some(format!(
            "re-enable exactly this version (az keyvault key set-attributes --vault-name <vault> --name {} --version {v} --enabled true); ADE does not follow key auto-rotation, so this disk needs version {v} even after the key has rotated",
            kid.name
        )),
    )
}

fn disabled_secret(sid: &ObjectId) -> Finding {
    let v = sid.version.as_deref().unwrap_or("?");
    finding(
        "secret-disabled",
        format!("the secret version {v} of {} in {} is disabled", sid.name, sid.vault),
        Some(format!(
            "re-enable it (az keyvault secret set-attributes --vault-name <vault> --name {} --version {v} --enabled true)",
            sid.name
        )),
    )
}

/// Maps a vault error to the verdict: definite refusals are `Blocked`,
/// failures to find out are `Error`.
fn map_error(e: &VaultError, id: &ObjectId, op: &str) -> Outcome {
    let what = match id.kind {
        ObjectKind::Key => "key",
        ObjectKind::Secret => "secret",
    };
    match e {
        VaultError::Service { status: 403, inner, message, .. } => match inner.as_deref() {
            Some("KeyDisabled") => Outcome::Blocked(disabled_key(id, &format!("Key Vault: {message}"))),
            Some("SecretDisabled") => Outcome::Blocked(disabled_secret(id)),
            Some("ForbiddenByRbac") => Outcome::Blocked(finding(
                "forbidden-by-rbac",
                format!("Key Vault refused {op} on {id}: the identity has no role allowing it ({message})"),
                Some(match id.kind {
                    ObjectKind::Key => "assign the role \"Key Vault Crypto User\" (keys get, unwrapKey) on the vault or key".into(),
                    ObjectKind::Secret => "assign the role \"Key Vault Secrets User\" (secrets get) on the vault or secret".into(),
                }),
            )),
            Some("ForbiddenByPolicy") => Outcome::Blocked(finding(
                "forbidden-by-policy",
                format!("Key Vault refused {op} on {id}: the vault's access policy does not grant it ({message})"),
                Some(match id.kind {
                    ObjectKind::Key => "grant key permissions get and unwrapKey (az keyvault set-policy --key-permissions get unwrapKey)".into(),
                    ObjectKind::Secret => "grant the secret permission get (az keyvault set-policy --secret-permissions get list)".into(),
                }),
            )),
            _ => Outcome::Blocked(finding(
                "forbidden",
                format!("Key Vault refused {op} on {id}: {e}"),
                None,
            )),
        },
        VaultError::Service { status: 404, message, .. } => Outcome::Blocked(finding(
            if id.kind == ObjectKind::Key { "key-not-found" } else { "secret-not-found" },
            format!("the {what} {id} does not exist in the vault (deleted, or a wrong version): {message}"),
            Some(format!(
                "if the vault keeps deleted objects (soft delete), recover it: az keyvault {what} recover --vault-name <vault> --name {}; a purged {what} cannot be brought back",
                id.name
            )),
        )),
        VaultError::Service { status: 401, .. } | VaultError::Auth(_) => Outcome::Error(finding(
            "auth-failed",
            format!("could not authenticate to {}: {e}", id.vault),
            Some("check the credential configured for this vault".into()),
        )),
        VaultError::Transport(_) => Outcome::Error(finding(
            "vault-unreachable",
            format!("{op} on {id}: {e}"),
            Some("check the network path to the vault (DNS, firewall, private endpoint)".into()),
        )),
        VaultError::Service { .. } => Outcome::Error(finding("vault-error", format!("{op} on {id}: {e}"), None)),
    }
}
