//! Key material by volume id, as the layers above hand it in: the engine
//! reads no key file and asks no terminal (`flr-ops` does, for
//! `--key ID=KIND:VALUE`), and tries keys only through
//! [`flr_layer::Locked::unlock`].

use std::collections::HashMap;
use std::sync::Arc;

use flr_io::Source;
use flr_keys::{KeyMaterial, Secret};
use flr_layer::Locked;

/// Key material by volume id, detached LUKS headers by volume id, and the
/// disk-wide keys the key chain produced. Values are secrets: never
/// printed. Cloning shares the same secrets (it copies no key bytes).
#[derive(Default, Clone)]
pub struct KeyRing {
    keys: HashMap<String, Arc<KeyMaterial>>,
    luks_headers: HashMap<String, DetachedHeader>,
    chain: Vec<Arc<ChainKey>>,
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

/// A LUKS header kept apart from the data it describes.
#[derive(Clone)]
pub struct DetachedHeader {
    /// The header's bytes.
    pub source: Source,
    /// Where it came from, for the report (`FILE (--luks-header)`).
    pub origin: String,
}

impl KeyRing {
    /// An empty ring.
    pub fn new() -> Self {
        KeyRing::default()
    }

    /// Adds the key for `volume` (its full id, as `probe` shows it),
    /// replacing an earlier one.
    pub fn insert(&mut self, volume: &str, key: KeyMaterial) {
        self.keys.insert(volume.to_string(), Arc::new(key));
    }

    /// The key given for `volume`.
    pub fn get(&self, volume: &str) -> Option<&KeyMaterial> {
        self.keys.get(volume).map(Arc::as_ref)
    }

    /// Adds key material from the key chain for every volume of the disk.
    pub fn add_chain_key(&mut self, secret: Secret, origin: String) {
        self.chain.push(Arc::new(ChainKey { secret, origin }));
    }

    /// Whether some key could be tried on `volume`.
    pub fn has_key_for(&self, volume: &str) -> bool {
        self.keys.contains_key(volume) || !self.chain.is_empty()
    }

    /// Names the detached LUKS header of `volume`: its data is LUKS
    /// ciphertext whatever its first bytes look like.
    pub fn set_luks_header(&mut self, volume: &str, header: DetachedHeader) {
        self.luks_headers.insert(volume.to_string(), header);
    }

    /// The detached LUKS header named for `volume`.
    pub fn luks_header(&self, volume: &str) -> Option<&DetachedHeader> {
        self.luks_headers.get(volume)
    }

    /// The keys to try on the locked `volume`, with how each was obtained:
    /// the one given for it, else every key-chain key in the form the
    /// volume takes a key-chain secret.
    pub(crate) fn candidates(
        &self,
        volume: &str,
        locked: &dyn Locked,
    ) -> Vec<(KeyMaterial, String)> {
        if let Some(k) = self.keys.get(volume) {
            return vec![(k.duplicate(), k.kind().to_string())];
        }
        let kind = locked.chain_key();
        self.chain
            .iter()
            .map(|c| {
                (
                    kind.with(c.secret.duplicate()),
                    format!("{} from the key chain: {}", chain_name(kind), c.origin),
                )
            })
            .collect()
    }
}

/// How the report names a key-chain secret used as `kind`.
fn chain_name(kind: flr_keys::KeyKind) -> &'static str {
    match kind {
        flr_keys::KeyKind::Passphrase => "passphrase",
        flr_keys::KeyKind::StartupKey => "startup key (.BEK)",
        other => other.name(),
    }
}
