//! flr's configuration: the file (TOML) with the vaults and their
//! credentials, offline key material, the policy, the audit log and
//! `[azure]` (Resource Manager, Storage), and the [`Environment`] the
//! command line captured. It sits at the bottom of the stack so that the
//! cloud clients and the key chain read the same types without depending
//! on each other. See `docs/flr.example.toml` for a commented example.
//!
//! Where the file is looked for (`--config`, `$FLR_CONFIG`, the user's
//! config folder) is the command line's choice: [`Config::load`] reads the
//! path it is given, and nothing here reads the process environment.
//!
//! # Example
//! ```
//! let c = flr_config::Config::parse("[audit]\nenabled = false\n", None).unwrap();
//! assert!(!c.audit.enabled);
//! assert_eq!(c.azure.access_seconds, 3600);
//! ```
//!
//! # Errors
//! Parsing and loading return a message naming the file and the field.
#![deny(missing_docs)]

mod env;
mod ids;

pub use env::Environment;
pub use ids::{ObjectId, ObjectKind};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

/// How flr authenticates to a vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Credential {
    /// `az account get-access-token --resource https://vault.azure.net`.
    #[default]
    AzureCli,
    /// The Azure Instance Metadata Service (a VM's managed identity).
    ManagedIdentity,
    /// A federated token file (`AZURE_FEDERATED_TOKEN_FILE`, Kubernetes
    /// workload identity) exchanged at the authority the vault names.
    WorkloadIdentity,
    /// `AZURE_CLIENT_ID` / `AZURE_CLIENT_SECRET` (tenant from the vault's
    /// challenge, or `AZURE_TENANT_ID`).
    ClientSecret,
    /// A bearer token taken as is from an environment variable.
    TokenEnv,
    /// No credential (the vault will refuse; for diagnosing).
    None,
}

/// One vault flr may talk to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// `https://name.vault.azure.net`.
    pub url: String,
    /// How to authenticate.
    #[serde(default)]
    pub credential: Credential,
    /// Variable holding the token for `credential = "token-env"`.
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// An extra CA certificate (PEM) to trust, for test vaults.
    pub ca_file: Option<PathBuf>,
}

fn default_token_env() -> String {
    "FLR_KEYVAULT_TOKEN".into()
}

/// An RSA private key standing for one KEK version.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineKey {
    /// The versioned key id it stands for.
    pub kid: String,
    /// PEM file (PKCS#8 or PKCS#1).
    pub pem: Option<PathBuf>,
    /// JWK file (with the private members d, p, q).
    pub jwk: Option<PathBuf>,
}

/// A passphrase or `.BEK` file standing for one secret version.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineSecret {
    /// The versioned secret id it stands for.
    pub id: String,
    /// The file: exact bytes of the passphrase file or the `.BEK`.
    pub file: PathBuf,
}

/// What to do with a key outside its validity dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DatePolicy {
    /// Use it and say so in the report.
    #[default]
    Warn,
    /// Refuse (the verdict is `blocked`).
    Deny,
}

/// Which vaults, keys, secrets and algorithms flr may use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Forbid every network call; offline material only.
    pub offline: bool,
    /// Vault URL patterns (`*` matches any run of characters).
    pub vaults: Vec<String>,
    /// Key id patterns.
    pub keys: Vec<String>,
    /// Secret id patterns.
    pub secrets: Vec<String>,
    /// Expired keys.
    pub expired_keys: DatePolicy,
    /// Keys whose not-before date is in the future.
    pub not_yet_valid_keys: DatePolicy,
    /// Unwrap algorithms allowed (RSA1_5 is left out by default).
    pub algorithms: Vec<String>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            offline: false,
            vaults: vec!["*".into()],
            keys: vec!["*".into()],
            secrets: vec!["*".into()],
            expired_keys: DatePolicy::Warn,
            not_yet_valid_keys: DatePolicy::Warn,
            algorithms: vec!["RSA-OAEP".into(), "RSA-OAEP-256".into()],
        }
    }
}

/// The audit log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// On by default.
    pub enabled: bool,
    /// JSONL file; default `$XDG_STATE_HOME/flr/audit.jsonl`
    /// (`~/.local/state/flr/audit.jsonl`).
    pub path: Option<PathBuf>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            path: None,
        }
    }
}

/// The `[azure]` section: Resource Manager (disk and snapshot access) and
/// Storage (blob URLs without a SAS) requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    /// The Resource Manager endpoint (sovereign clouds have their own).
    #[serde(default = "default_resource_manager")]
    pub resource_manager: String,
    /// How to authenticate to Resource Manager and Storage.
    #[serde(default)]
    pub credential: Credential,
    /// The tenant; else `AZURE_TENANT_ID`, else `organizations`.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Variable holding a Resource Manager token for `credential = "token-env"`.
    #[serde(default = "default_arm_token_env")]
    pub arm_token_env: String,
    /// Variable holding a Storage token for `credential = "token-env"`.
    #[serde(default = "default_storage_token_env")]
    pub storage_token_env: String,
    /// How long a read SAS from `beginGetAccess` is asked for, in seconds.
    #[serde(default = "default_access_seconds")]
    pub access_seconds: u64,
    /// An extra CA certificate (PEM) to trust for Resource Manager and
    /// Storage (test servers, TLS-inspecting proxies).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The environment the credentials read (`AZURE_CLIENT_ID`,
    /// `IDENTITY_ENDPOINT`, token variables…), as the command line
    /// captured it; empty unless set.
    #[serde(skip)]
    pub env: Arc<Environment>,
}

impl Default for AzureConfig {
    fn default() -> Self {
        AzureConfig {
            resource_manager: default_resource_manager(),
            credential: Credential::default(),
            tenant: None,
            arm_token_env: default_arm_token_env(),
            storage_token_env: default_storage_token_env(),
            access_seconds: default_access_seconds(),
            ca_file: None,
            env: Arc::default(),
        }
    }
}

fn default_resource_manager() -> String {
    "https://management.azure.com".into()
}
fn default_arm_token_env() -> String {
    "FLR_ARM_TOKEN".into()
}
fn default_storage_token_env() -> String {
    "FLR_STORAGE_TOKEN".into()
}
fn default_access_seconds() -> u64 {
    3600
}

/// The whole file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Vaults.
    #[serde(default, rename = "vault")]
    pub vaults: Vec<VaultConfig>,
    /// Offline KEK versions.
    #[serde(default, rename = "offline_key")]
    pub offline_keys: Vec<OfflineKey>,
    /// Offline secret versions.
    #[serde(default, rename = "offline_secret")]
    pub offline_secrets: Vec<OfflineSecret>,
    /// Policy.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Audit log.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Resource Manager and Storage: how flr gets read access to a disk or
    /// snapshot named by its resource id, and tokens for blob URLs without a SAS.
    #[serde(default)]
    pub azure: AzureConfig,
    /// Where the file was read from (relative paths are relative to it).
    #[serde(skip)]
    pub origin: Option<PathBuf>,
}

impl Config {
    /// Parses TOML; relative paths inside are resolved against `base`.
    pub fn parse(text: &str, origin: Option<&Path>) -> Result<Config, String> {
        let mut c: Config = toml::from_str(text).map_err(|e| {
            format!(
                "config {}: {e}",
                origin.map_or("(inline)".into(), |p| p.display().to_string())
            )
        })?;
        let base = origin.and_then(Path::parent).map(Path::to_path_buf);
        let fix = |p: &mut PathBuf| {
            if let Some(b) = &base {
                if p.is_relative() {
                    *p = b.join(&*p);
                }
            }
        };
        for k in &mut c.offline_keys {
            if k.pem.is_none() == k.jwk.is_none() {
                return Err(format!(
                    "offline_key {}: give exactly one of pem or jwk",
                    k.kid
                ));
            }
            ObjectId::parse(&k.kid).map_err(|e| format!("offline_key: {e}"))?;
            k.pem.as_mut().map(fix);
            k.jwk.as_mut().map(fix);
        }
        for s in &mut c.offline_secrets {
            ObjectId::parse(&s.id).map_err(|e| format!("offline_secret: {e}"))?;
            fix(&mut s.file);
        }
        for v in &mut c.vaults {
            v.url = v.url.trim_end_matches('/').to_ascii_lowercase();
            if !v.url.starts_with("https://") {
                return Err(format!("vault {}: Key Vault needs https://", v.url));
            }
            v.ca_file.as_mut().map(fix);
        }
        if let Some(p) = c.audit.path.as_mut() {
            fix(p);
        }
        c.azure.resource_manager = c.azure.resource_manager.trim_end_matches('/').to_string();
        if !c.azure.resource_manager.starts_with("https://") {
            return Err(format!(
                "azure.resource_manager {}: needs https://",
                c.azure.resource_manager
            ));
        }
        if !(60..=7 * 24 * 3600).contains(&c.azure.access_seconds) {
            return Err(format!(
                "azure.access_seconds {}: between 60 and 604800",
                c.azure.access_seconds
            ));
        }
        c.azure.ca_file.as_mut().map(fix);
        c.origin = origin.map(Path::to_path_buf);
        Ok(c)
    }

    /// Reads the file at `path`, or gives the defaults for `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, String> {
        match path {
            None => Ok(Config::default()),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("config {}: {e}", p.display()))?;
                Config::parse(&text, Some(p))
            }
        }
    }

    /// The configured vault for a vault URL.
    pub fn vault(&self, url: &str) -> Option<&VaultConfig> {
        self.vaults.iter().find(|v| v.url == url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses() {
        let text = include_str!("../../../docs/flr.example.toml");
        let c = Config::parse(text, Some(Path::new("/etc/flr/config.toml"))).unwrap();
        assert_eq!(c.vaults.len(), 1);
        assert_eq!(c.vaults[0].credential, Credential::AzureCli);
        assert!(c.offline_keys[0].pem.as_ref().unwrap().is_absolute());
        assert!(!c.policy.algorithms.iter().any(|a| a == "RSA1_5"));
        assert!(!c.policy.offline);
    }

    #[test]
    fn defaults_and_mistakes() {
        let c = Config::parse("", None).unwrap();
        assert!(c.audit.enabled);
        assert_eq!(c.policy.algorithms, ["RSA-OAEP", "RSA-OAEP-256"]);
        assert!(Config::parse("[policy]\nofline = true\n", None).is_err());
        assert!(Config::parse("[[vault]]\nurl = \"http://x\"\n", None).is_err());
        assert!(Config::parse("[[offline_key]]\nkid = \"https://v/keys/k/1\"\n", None).is_err());
    }
}
