//! The Azure Disk Encryption key chain, apart from the readers.
//!
//! Given what Azure records about a disk ([`metadata`]), a configuration
//! (`flr_config::Config`: vaults, offline key material, policy, audit), and a way to
//! reach vaults (the [`chain::Vault`] trait; `flr-keyvault` implements it
//! over HTTPS), [`chain::KeyChain`] follows the chain
//! secret version → KEK version unwrap → passphrase file / `.BEK` file, or
//! in a dry run checks everything that needs no key material, and says
//! exactly why when the answer is no. Every key operation is appended to
//! the [`audit`] log; no key byte is ever printed or logged.

pub mod audit;
pub mod chain;
pub mod metadata;
pub mod offline;
pub mod policy;
pub mod response;

pub use audit::AuditLog;
pub use chain::{
    Attributes, ChainReport, Connector, DiskKey, Finding, KeyBundle, KeyChain, Mode, Outcome,
    SecretBundle, Vault, VaultError,
};
pub use flr_config::{Config, ObjectId, ObjectKind};
pub use metadata::{AdeSetting, DiskEncryption};
