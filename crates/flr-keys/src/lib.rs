//! Key material for flr.
//!
//! [`Secret`] holds passphrases, BEK files, recovery passwords and volume
//! keys as exact bytes (binary-safe: no newline stripping, no UTF-8
//! assumption). It has no `Debug` or `Display`, cannot be cloned by
//! accident, and overwrites its bytes with zeros when dropped. The key chain
//! (Key Vault, policy, audit) will live beside it in this crate and its
//! HTTP backend.
//!
//! # Example
//! ```
//! use flr_keys::Secret;
//! let s = Secret::new(b"correct horse\n".to_vec());
//! assert_eq!(s.expose().len(), 14); // the newline is kept
//! ```
#![deny(missing_docs)]

use zeroize::Zeroizing;

mod prompt;
pub use prompt::read_hidden;

/// Secret bytes, wiped on drop, never printed.
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Takes ownership of `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    /// Copies `bytes` into a new secret.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Secret::new(bytes.to_vec())
    }

    /// The bytes, for the code that derives or decrypts with them. Do not
    /// copy them into non-secret storage.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// An explicit copy (a new secret that is wiped on its own drop).
    pub fn duplicate(&self) -> Secret {
        Secret::from_slice(&self.0)
    }
}

/// What a user gave to open an encrypted volume.
#[non_exhaustive]
pub enum KeyMaterial {
    /// A LUKS passphrase (for ADE Linux: the 172-byte BEK passphrase file),
    /// exact bytes.
    Passphrase(Secret),
    /// A BitLocker user password.
    Password(Secret),
    /// A BitLocker startup key: the whole `.BEK` file.
    StartupKey(Secret),
    /// A BitLocker recovery password: 48 digits, dashes allowed.
    RecoveryPassword(Secret),
    /// A raw volume (master) key.
    VolumeKey(Secret),
}

impl KeyMaterial {
    /// An explicit copy (its secret is wiped on its own drop).
    pub fn duplicate(&self) -> KeyMaterial {
        match self {
            KeyMaterial::Passphrase(s) => KeyMaterial::Passphrase(s.duplicate()),
            KeyMaterial::Password(s) => KeyMaterial::Password(s.duplicate()),
            KeyMaterial::StartupKey(s) => KeyMaterial::StartupKey(s.duplicate()),
            KeyMaterial::RecoveryPassword(s) => KeyMaterial::RecoveryPassword(s.duplicate()),
            KeyMaterial::VolumeKey(s) => KeyMaterial::VolumeKey(s.duplicate()),
        }
    }

    /// The kind, for messages (never the value).
    pub fn kind(&self) -> &'static str {
        match self {
            KeyMaterial::Passphrase(_) => "passphrase",
            KeyMaterial::Password(_) => "password",
            KeyMaterial::StartupKey(_) => "startup key (.BEK)",
            KeyMaterial::RecoveryPassword(_) => "recovery password",
            KeyMaterial::VolumeKey(_) => "volume key",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_safe() {
        let s = Secret::new(vec![0, 10, 13, 255]);
        assert_eq!(s.expose(), &[0, 10, 13, 255]);
        assert_eq!(s.duplicate().expose(), s.expose());
    }
}
