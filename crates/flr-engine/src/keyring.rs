//! Key material given per volume (`--key ID=KIND:VALUE`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use flr_keys::{KeyMaterial, Secret};

/// Key material by volume id. Values are [`Secret`]s: never printed.
#[derive(Default)]
pub struct KeyRing {
    keys: HashMap<String, KeyMaterial>,
    luks_headers: HashMap<String, PathBuf>,
    chain: Vec<ChainKey>,
}

/// Key material the key chain produced for the whole disk (ADE keeps one
/// BEK per disk): tried on every encrypted volume that has no key of its
/// own, as the LUKS passphrase or the BitLocker startup key.
pub struct ChainKey {
    /// The passphrase file's bytes or the `.BEK` file.
    pub secret: Secret,
    /// How it was obtained, for the report (no key bytes).
    pub origin: String,
}

/// Which kind of volume a key is wanted for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum For {
    Luks,
    BitLocker,
}

impl KeyRing {
    /// An empty ring.
    pub fn new() -> Self {
        KeyRing::default()
    }

    /// Adds the key for `volume`, replacing an earlier one.
    pub fn insert(&mut self, volume: &str, key: KeyMaterial) {
        self.keys.insert(volume.to_string(), key);
    }

    /// The key given for `volume`.
    pub fn get(&self, volume: &str) -> Option<&KeyMaterial> {
        self.keys.get(volume)
    }

    /// Adds key material from the key chain for every volume of the disk.
    pub fn add_chain_key(&mut self, secret: Secret, origin: String) {
        self.chain.push(ChainKey { secret, origin });
    }

    /// Whether some key could be tried on `volume`.
    pub fn has_key_for(&self, volume: &str) -> bool {
        self.keys.contains_key(volume) || !self.chain.is_empty()
    }

    /// The keys to try on `volume`, with how each was obtained: the one
    /// given for it, else every key-chain key in the form `kind` takes.
    pub(crate) fn candidates(&self, volume: &str, kind: For) -> Vec<(KeyMaterial, String)> {
        if let Some(k) = self.keys.get(volume) {
            return vec![(k.duplicate(), k.kind().to_string())];
        }
        self.chain
            .iter()
            .map(|c| match kind {
                For::Luks => (
                    KeyMaterial::Passphrase(c.secret.duplicate()),
                    format!("passphrase from the key chain: {}", c.origin),
                ),
                For::BitLocker => (
                    KeyMaterial::StartupKey(c.secret.duplicate()),
                    format!("startup key (.BEK) from the key chain: {}", c.origin),
                ),
            })
            .collect()
    }

    /// The detached LUKS header file given for `volume`.
    pub fn luks_header(&self, volume: &str) -> Option<&Path> {
        self.luks_headers.get(volume).map(PathBuf::as_path)
    }

    /// Parses one `--luks-header ID=FILE` argument.
    pub fn parse_luks_header_arg(&mut self, arg: &str) -> Result<(), String> {
        let (id, file) = arg
            .split_once('=')
            .filter(|(id, file)| !id.is_empty() && !file.is_empty())
            .ok_or_else(|| {
                format!("--luks-header {arg:?}: expected ID=FILE, e.g. p2=/path/osluksheader")
            })?;
        self.luks_headers
            .insert(id.to_string(), PathBuf::from(file));
        Ok(())
    }

    /// Parses one `ID=KIND:VALUE` argument. Kinds: `passphrase-file:PATH`,
    /// `password-file:PATH`, `bek:PATH`, `recovery:DIGITS`, `volume-key:HEX`.
    /// Files are read as exact bytes (no newline is stripped). `ID=ask`
    /// (LUKS passphrase) and `ID=ask-password` (BitLocker password) read
    /// the secret from the terminal without echo.
    pub fn parse_arg(&mut self, arg: &str) -> Result<(), String> {
        let (id, rest) = arg.split_once('=').ok_or_else(|| {
            format!("--key {arg:?}: expected ID=KIND:VALUE, e.g. p3=passphrase-file:/path")
        })?;
        if id.is_empty() {
            return Err(format!("--key {arg:?}: the volume id before '=' is empty"));
        }
        if let Some(password) = match rest {
            "ask" => Some(false),
            "ask-password" => Some(true),
            _ => None,
        } {
            let what = if password {
                "BitLocker password"
            } else {
                "passphrase"
            };
            let secret = flr_keys::read_hidden(&format!("flr: {what} for {id}: "))
                .map_err(|e| format!("--key {id}={rest}: cannot read from the terminal: {e}"))?;
            let key = if password {
                KeyMaterial::Password(secret)
            } else {
                KeyMaterial::Passphrase(secret)
            };
            self.insert(id, key);
            return Ok(());
        }
        let (kind, value) = rest
            .split_once(':')
            .ok_or_else(|| format!("--key for {id}: expected KIND:VALUE after '='"))?;
        let read = |what: &str| {
            std::fs::read(value)
                .map(Secret::new)
                .map_err(|e| format!("--key for {id}: cannot read the {what} file {value:?}: {e}"))
        };
        let key = match kind {
            "passphrase-file" => KeyMaterial::Passphrase(read("passphrase")?),
            "password-file" => KeyMaterial::Password(read("password")?),
            "bek" => KeyMaterial::StartupKey(read(".BEK")?),
            "recovery" => KeyMaterial::RecoveryPassword(Secret::from_slice(value.as_bytes())),
            "volume-key" => {
                let hex = value.trim();
                if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!("--key for {id}: volume-key must be hex digits"));
                }
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or(0))
                    .collect();
                KeyMaterial::VolumeKey(Secret::new(bytes))
            }
            other => {
                return Err(format!(
                    "--key for {id}: unknown kind {other:?} (passphrase-file, password-file, bek, recovery, volume-key; or {id}=ask to type a passphrase)"
                ))
            }
        };
        self.insert(id, key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kinds() {
        let mut k = KeyRing::new();
        k.parse_arg("p1=recovery:111111-222222").unwrap();
        k.parse_arg("disk=volume-key:00ff").unwrap();
        assert!(matches!(
            k.get("p1"),
            Some(KeyMaterial::RecoveryPassword(_))
        ));
        match k.get("disk") {
            Some(KeyMaterial::VolumeKey(s)) => assert_eq!(s.expose(), &[0, 255]),
            _ => panic!("volume key"),
        }
        assert!(k.parse_arg("p1").is_err());
        assert!(k.parse_arg("p1=what:x").is_err());
        assert!(k.parse_arg("p1=volume-key:xyz").is_err());
        assert!(k.parse_arg("p1=bek:/no/such/file").is_err());
    }
}
