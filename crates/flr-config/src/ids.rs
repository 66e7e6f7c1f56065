//! Key Vault object identifiers: `https://{vault}/keys/{name}/{version}`
//! and `https://{vault}/secrets/{name}/{version}`.

use std::fmt;

/// Keys or secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// `/keys/…`
    Key,
    /// `/secrets/…`
    Secret,
}

/// A parsed Key Vault key or secret URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectId {
    /// `https://host[:port]`, lower-case host, no trailing slash.
    pub vault: String,
    /// Key or secret.
    pub kind: ObjectKind,
    /// Object name.
    pub name: String,
    /// Version, when the URL names one.
    pub version: Option<String>,
}

impl ObjectId {
    /// Parses a key or secret URL. Only `https://` is accepted (Key Vault
    /// refuses bearer tokens over plain HTTP).
    pub fn parse(url: &str) -> Result<ObjectId, String> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("{url:?} is not an https:// Key Vault URL"))?;
        let rest = rest.split(['?', '#']).next().unwrap_or(rest);
        let mut parts = rest.split('/').filter(|p| !p.is_empty());
        let host = parts
            .next()
            .ok_or_else(|| format!("{url:?}: no vault host"))?
            .to_ascii_lowercase();
        let kind = match parts.next() {
            Some("keys") => ObjectKind::Key,
            Some("secrets") => ObjectKind::Secret,
            _ => {
                return Err(format!(
                    "{url:?}: expected /keys/NAME/VERSION or /secrets/NAME/VERSION"
                ))
            }
        };
        let name = parts
            .next()
            .ok_or_else(|| format!("{url:?}: no object name"))?
            .to_string();
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!(
                "{url:?}: object names are letters, digits and dashes"
            ));
        }
        let version = parts.next().map(str::to_string);
        if parts.next().is_some() {
            return Err(format!("{url:?}: unexpected path after the version"));
        }
        if let Some(v) = &version {
            if !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(format!("{url:?}: malformed version {v:?}"));
            }
        }
        Ok(ObjectId {
            vault: format!("https://{host}"),
            kind,
            name,
            version,
        })
    }

    /// The object without its version (`https://v/keys/name`).
    pub fn unversioned(&self) -> String {
        format!("{}/{}/{}", self.vault, self.kind_path(), self.name)
    }

    fn kind_path(&self) -> &'static str {
        match self.kind {
            ObjectKind::Key => "keys",
            ObjectKind::Secret => "secrets",
        }
    }

    /// Same object and version (version compared case-insensitively).
    pub fn same_as(&self, other: &ObjectId) -> bool {
        self.vault == other.vault
            && self.kind == other.kind
            && self.name.eq_ignore_ascii_case(&other.name)
            && match (&self.version, &other.version) {
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.unversioned())?;
        if let Some(v) = &self.version {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versioned_urls() {
        let k = ObjectId::parse("https://MyVault.vault.azure.net/keys/kek/0a1b2c?api-version=7.5")
            .unwrap();
        assert_eq!(k.vault, "https://myvault.vault.azure.net");
        assert_eq!(k.kind, ObjectKind::Key);
        assert_eq!(k.name, "kek");
        assert_eq!(k.version.as_deref(), Some("0a1b2c"));
        assert_eq!(
            k.to_string(),
            "https://myvault.vault.azure.net/keys/kek/0a1b2c"
        );
        let s = ObjectId::parse("https://127.0.0.1:8443/secrets/ABC-1/").unwrap();
        assert_eq!(s.version, None);
        assert!(ObjectId::parse("http://v/keys/k/1").is_err());
        assert!(ObjectId::parse("https://v/certs/k/1").is_err());
        assert!(ObjectId::parse("https://v/keys/k_x/1").is_err());
        assert!(ObjectId::parse("https://v/keys/k/1/2").is_err());
    }
}
