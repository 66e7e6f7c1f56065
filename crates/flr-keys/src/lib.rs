//! Key material for flr.
//!
//! [`Secret`] holds passphrases, BEK files, recovery passwords and volume
//! keys as exact bytes (binary-safe: no newline stripping, no UTF-8
//! assumption). It has no `Debug` or `Display`, cannot be cloned by
//! accident, and overwrites its bytes with zeros when dropped. [`KeyKind`]
//! names the kinds without the material (what a format accepts). Reading
//! keys from files or the terminal is the command line's job (`flr-ops`),
//! never a reader's.
//!
//! # Example
//! ```
//! use flr_keys::Secret;
//! let s = Secret::new(b"correct horse\n".to_vec());
//! assert_eq!(s.expose().len(), 14); // the newline is kept
//! ```
#![deny(missing_docs)]

use zeroize::Zeroizing;

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

/// The kinds of key material, without the material: what an encrypted
/// format accepts, and what `--key ID=KIND:VALUE` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyKind {
    /// A LUKS passphrase (exact bytes).
    Passphrase,
    /// A BitLocker user password.
    Password,
    /// A BitLocker startup key (`.BEK` file).
    StartupKey,
    /// A BitLocker recovery password (48 digits).
    RecoveryPassword,
    /// A raw volume (master) key.
    VolumeKey,
}

impl KeyKind {
    /// The kind, for messages.
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Passphrase => "passphrase",
            KeyKind::Password => "password",
            KeyKind::StartupKey => "startup key (.BEK)",
            KeyKind::RecoveryPassword => "recovery password",
            KeyKind::VolumeKey => "volume key",
        }
    }

    /// How `--key ID=KIND:VALUE` spells a key of this kind, for the
    /// "give its key with …" hints: `passphrase-file:FILE`, `bek:FILE`….
    pub fn cli_form(self) -> &'static str {
        match self {
            KeyKind::Passphrase => "passphrase-file:FILE",
            KeyKind::Password => "password-file:FILE",
            KeyKind::StartupKey => "bek:FILE",
            KeyKind::RecoveryPassword => "recovery:DIGITS",
            KeyKind::VolumeKey => "volume-key:HEX",
        }
    }

    /// Wraps `secret` as key material of this kind.
    pub fn with(self, secret: Secret) -> KeyMaterial {
        match self {
            KeyKind::Passphrase => KeyMaterial::Passphrase(secret),
            KeyKind::Password => KeyMaterial::Password(secret),
            KeyKind::StartupKey => KeyMaterial::StartupKey(secret),
            KeyKind::RecoveryPassword => KeyMaterial::RecoveryPassword(secret),
            KeyKind::VolumeKey => KeyMaterial::VolumeKey(secret),
        }
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
        self.key_kind().name()
    }

    /// The kind of this material.
    pub fn key_kind(&self) -> KeyKind {
        match self {
            KeyMaterial::Passphrase(_) => KeyKind::Passphrase,
            KeyMaterial::Password(_) => KeyKind::Password,
            KeyMaterial::StartupKey(_) => KeyKind::StartupKey,
            KeyMaterial::RecoveryPassword(_) => KeyKind::RecoveryPassword,
            KeyMaterial::VolumeKey(_) => KeyKind::VolumeKey,
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
