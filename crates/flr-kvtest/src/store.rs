//! The vault's contents: keys and secrets by name, each a list of versions
//! (oldest first, the last is "latest"), soft delete with recovery and purge.
//! Names are case-insensitive, as in Key Vault, and keep the case they were
//! made with.

use std::collections::BTreeMap;

use rand::RngCore;
use rsa::RsaPrivateKey;
use serde_json::{json, Value};

use crate::error::KvError;

/// Days a deleted object stays recoverable (the service's default).
pub(crate) const RECOVERABLE_DAYS: i64 = 90;
pub(crate) const RECOVERY_LEVEL: &str = "Recoverable+Purgeable";

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A new version id: 32 lowercase hex digits.
pub(crate) fn new_version() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Names: letters, digits and dashes, 1 to 127 of them.
pub(crate) fn check_name(name: &str) -> Result<(), KvError> {
    if (1..=127).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(())
    } else {
        Err(KvError::bad_parameter(format!(
            "The request URI contains an invalid name: {name}"
        )))
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Attrs {
    pub(crate) enabled: bool,
    pub(crate) nbf: Option<i64>,
    pub(crate) exp: Option<i64>,
    pub(crate) created: i64,
    pub(crate) updated: i64,
}

impl Attrs {
    pub(crate) fn new() -> Attrs {
        let t = now();
        Attrs {
            enabled: true,
            nbf: None,
            exp: None,
            created: t,
            updated: t,
        }
    }

    /// Applies `enabled`, `nbf` and `exp` from a request's `attributes`
    /// (a member absent or `null` leaves the value as it is).
    pub(crate) fn apply(&mut self, req: &Value) -> Result<(), KvError> {
        if let Some(v) = req.get("enabled").filter(|v| !v.is_null()) {
            self.enabled = v
                .as_bool()
                .ok_or_else(|| KvError::bad_parameter("attributes.enabled must be a boolean"))?;
        }
        for (member, slot) in [("nbf", &mut self.nbf), ("exp", &mut self.exp)] {
            if let Some(v) = req.get(member).filter(|v| !v.is_null()) {
                *slot = Some(v.as_i64().ok_or_else(|| {
                    KvError::bad_parameter(format!("attributes.{member} must be a Unix time"))
                })?);
            }
        }
        self.updated = now();
        Ok(())
    }

    pub(crate) fn json(&self) -> Value {
        let mut a = json!({
            "enabled": self.enabled,
            "created": self.created,
            "updated": self.updated,
            "recoveryLevel": RECOVERY_LEVEL,
            "recoverableDays": RECOVERABLE_DAYS,
        });
        if let Some(nbf) = self.nbf {
            a["nbf"] = json!(nbf);
        }
        if let Some(exp) = self.exp {
            a["exp"] = json!(exp);
        }
        a
    }
}

pub(crate) type Tags = BTreeMap<String, String>;

/// Reads a request's `tags` object (string values only).
pub(crate) fn tags_from(req: &Value) -> Result<Option<Tags>, KvError> {
    match req.get("tags") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(KvError::bad_parameter("tag values must be strings")),
            })
            .collect::<Result<Tags, _>>()
            .map(Some),
        Some(_) => Err(KvError::bad_parameter("tags must be an object")),
    }
}

/// The operations an RSA key allows when none are asked for.
pub(crate) const DEFAULT_KEY_OPS: [&str; 6] = [
    "encrypt",
    "decrypt",
    "sign",
    "verify",
    "wrapKey",
    "unwrapKey",
];

#[derive(Debug, Clone)]
pub(crate) struct KeyVersion {
    pub(crate) version: String,
    pub(crate) key: RsaPrivateKey,
    pub(crate) hsm: bool,
    pub(crate) ops: Vec<String>,
    pub(crate) attrs: Attrs,
    pub(crate) tags: Tags,
}

impl KeyVersion {
    pub(crate) fn new(key: RsaPrivateKey) -> KeyVersion {
        KeyVersion {
            version: new_version(),
            key,
            hsm: false,
            ops: DEFAULT_KEY_OPS.iter().map(|s| s.to_string()).collect(),
            attrs: Attrs::new(),
            tags: Tags::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct SecretVersion {
    pub(crate) version: String,
    pub(crate) value: String,
    pub(crate) content_type: Option<String>,
    pub(crate) attrs: Attrs,
    pub(crate) tags: Tags,
}

pub(crate) trait Versioned {
    fn version(&self) -> &str;
}
impl Versioned for KeyVersion {
    fn version(&self) -> &str {
        &self.version
    }
}
impl Versioned for SecretVersion {
    fn version(&self) -> &str {
        &self.version
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Key,
    Secret,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Key => "key",
            Kind::Secret => "secret",
        }
    }

    fn not_found_code(self) -> &'static str {
        match self {
            Kind::Key => "KeyNotFound",
            Kind::Secret => "SecretNotFound",
        }
    }

    fn capitalised(self) -> &'static str {
        match self {
            Kind::Key => "Key",
            Kind::Secret => "Secret",
        }
    }
}

/// One name: its versions and, when soft-deleted, when.
#[derive(Debug)]
pub(crate) struct Entry<V> {
    pub(crate) name: String,
    pub(crate) versions: Vec<V>,
    pub(crate) deleted: Option<i64>,
}

/// All keys or all secrets.
#[derive(Debug)]
pub(crate) struct Objects<V> {
    kind: Kind,
    items: BTreeMap<String, Entry<V>>,
}

impl<V: Versioned> Objects<V> {
    pub(crate) fn new(kind: Kind) -> Objects<V> {
        Objects {
            kind,
            items: BTreeMap::new(),
        }
    }

    fn not_found(&self, name: &str, version: Option<&str>) -> KvError {
        let id = match version {
            Some(v) if !v.is_empty() => format!("{name}/{v}"),
            _ => name.to_string(),
        };
        let word = self.kind.word();
        KvError::new(
            404,
            self.kind.not_found_code(),
            format!(
                "A {word} with (name/id) {id} was not found in this key vault. If you recently \
                 deleted this {word} you may be able to recover it using the correct recovery \
                 command. For help resolving this issue, please see \
                 https://go.microsoft.com/fwlink/?linkid=2125182"
            ),
        )
    }

    fn deleted_not_found(&self, name: &str) -> KvError {
        KvError::new(
            404,
            self.kind.not_found_code(),
            format!("Deleted {} not found: {name}", self.kind.capitalised()),
        )
    }

    /// Adds a version under `name` (creating the name); refused while the
    /// name is soft-deleted.
    pub(crate) fn add(&mut self, name: &str, v: V) -> Result<(&str, &V), KvError> {
        let entry = self
            .items
            .entry(name.to_ascii_lowercase())
            .or_insert_with(|| Entry {
                name: name.to_string(),
                versions: Vec::new(),
                deleted: None,
            });
        if entry.deleted.is_some() {
            let what = self.kind.capitalised();
            return Err(KvError::new(
                409,
                "Conflict",
                format!(
                    "{what} {} is currently in a deleted but recoverable state, and its name \
                     cannot be reused; in this state, the {} can only be recovered or purged.",
                    entry.name,
                    self.kind.word()
                ),
            )
            .with_inner("ObjectIsDeletedButRecoverable"));
        }
        entry.versions.push(v);
        let added = entry.versions.last().expect("OK to unwrap: just pushed");
        Ok((entry.name.as_str(), added))
    }

    /// A live entry by name.
    pub(crate) fn entry(&self, name: &str) -> Result<&Entry<V>, KvError> {
        match self.items.get(&name.to_ascii_lowercase()) {
            Some(e) if e.deleted.is_none() => Ok(e),
            _ => Err(self.not_found(name, None)),
        }
    }

    /// One version; `None` or `""` is the latest.
    pub(crate) fn get(&self, name: &str, version: Option<&str>) -> Result<(&str, &V), KvError> {
        let entry = self.entry(name)?;
        let found = match version {
            None | Some("") => entry.versions.last(),
            Some(v) => entry
                .versions
                .iter()
                .find(|x| x.version().eq_ignore_ascii_case(v)),
        };
        found
            .map(|v| (entry.name.as_str(), v))
            .ok_or_else(|| self.not_found(name, version))
    }

    pub(crate) fn get_mut(
        &mut self,
        name: &str,
        version: Option<&str>,
    ) -> Result<(String, &mut V), KvError> {
        let missing = self.not_found(name, version);
        let entry = match self.items.get_mut(&name.to_ascii_lowercase()) {
            Some(e) if e.deleted.is_none() => e,
            _ => return Err(missing),
        };
        let found = match version {
            None | Some("") => entry.versions.last_mut(),
            Some(v) => entry
                .versions
                .iter_mut()
                .find(|x| x.version().eq_ignore_ascii_case(v)),
        };
        let name = entry.name.clone();
        found.map(|v| (name, v)).ok_or(missing)
    }

    /// Live names with their latest versions.
    pub(crate) fn latest(&self) -> impl Iterator<Item = (&str, &V)> {
        self.items
            .values()
            .filter(|e| e.deleted.is_none())
            .filter_map(|e| e.versions.last().map(|v| (e.name.as_str(), v)))
    }

    /// Soft-deletes a name (every version).
    pub(crate) fn delete(&mut self, name: &str) -> Result<&Entry<V>, KvError> {
        let missing = self.not_found(name, None);
        match self.items.get_mut(&name.to_ascii_lowercase()) {
            Some(e) if e.deleted.is_none() => {
                e.deleted = Some(now());
                Ok(e)
            }
            _ => Err(missing),
        }
    }

    pub(crate) fn deleted(&self, name: &str) -> Result<&Entry<V>, KvError> {
        match self.items.get(&name.to_ascii_lowercase()) {
            Some(e) if e.deleted.is_some() => Ok(e),
            _ => Err(self.deleted_not_found(name)),
        }
    }

    pub(crate) fn recover(&mut self, name: &str) -> Result<&Entry<V>, KvError> {
        let missing = self.deleted_not_found(name);
        match self.items.get_mut(&name.to_ascii_lowercase()) {
            Some(e) if e.deleted.is_some() => {
                e.deleted = None;
                Ok(e)
            }
            _ => Err(missing),
        }
    }

    pub(crate) fn purge(&mut self, name: &str) -> Result<(), KvError> {
        self.deleted(name)?;
        self.items.remove(&name.to_ascii_lowercase());
        Ok(())
    }
}

pub(crate) struct Store {
    pub(crate) keys: Objects<KeyVersion>,
    pub(crate) secrets: Objects<SecretVersion>,
}

impl Store {
    pub(crate) fn new() -> Store {
        Store {
            keys: Objects::new(Kind::Key),
            secrets: Objects::new(Kind::Secret),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(value: &str) -> SecretVersion {
        SecretVersion {
            version: new_version(),
            value: value.into(),
            content_type: None,
            attrs: Attrs::new(),
            tags: Tags::new(),
        }
    }

    #[test]
    fn versions_latest_and_case_insensitive_names() {
        let mut s = Objects::new(Kind::Secret);
        let v1 = s.add("Bek-1", secret("one")).unwrap().1.version.clone();
        assert_eq!(v1.len(), 32);
        assert!(v1
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        s.add("bek-1", secret("two")).unwrap();
        let (name, latest) = s.get("BEK-1", None).unwrap();
        assert_eq!((name, latest.value.as_str()), ("Bek-1", "two"));
        assert_eq!(s.get("bek-1", Some(&v1)).unwrap().1.value, "one");
        assert_eq!(
            s.get("bek-1", Some(&v1.to_uppercase())).unwrap().1.value,
            "one"
        );
        let e = s.get("bek-1", Some("0123")).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (404, "SecretNotFound"));
        assert!(e
            .message
            .starts_with("A secret with (name/id) bek-1/0123 was not found"));
    }

    #[test]
    fn soft_delete_recover_purge() {
        let mut s = Objects::new(Kind::Secret);
        s.add("a", secret("x")).unwrap();
        s.delete("a").unwrap();
        assert_eq!(s.get("a", None).unwrap_err().status, 404);
        assert_eq!(s.add("a", secret("y")).unwrap_err().status, 409);
        assert_eq!(s.delete("a").unwrap_err().status, 404);
        s.recover("a").unwrap();
        assert_eq!(s.get("a", None).unwrap().1.value, "x");
        assert_eq!(s.deleted("a").unwrap_err().status, 404);
        s.delete("a").unwrap();
        s.purge("a").unwrap();
        assert_eq!(s.deleted("a").unwrap_err().status, 404);
        s.add("a", secret("z")).unwrap();
        assert_eq!(s.latest().count(), 1);
    }

    #[test]
    fn names() {
        assert!(check_name("kek-2024-A").is_ok());
        for bad in ["", "a_b", "a.b", "ä", &"x".repeat(128)] {
            let e = check_name(bad).unwrap_err();
            assert_eq!((e.status, e.code.as_str()), (400, "BadParameter"), "{bad}");
        }
    }
}
