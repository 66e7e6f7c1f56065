//! What Key Vault's JSON answers mean, as pure functions of the parsed
//! body: the HTTP client (`flr-keyvault`) only moves bytes, and everything
//! it hands to the chain goes through here. Kept apart so the fuzz targets
//! (`flr-fuzz`, target `keyvault`) reach exactly the code a hostile or
//! broken vault would.
//!
//! Missing or mistyped fields never panic: they read as absent (`enabled`
//! defaults to true, as in the service's own model), and the chain's checks
//! then say what is missing.

use std::collections::BTreeMap;

use flr_keys::Secret;
use serde_json::Value;

use crate::chain::{Attributes, KeyBundle, SecretBundle, VaultError};
use crate::offline;

/// Pages of a version listing followed at most (25 versions each).
pub const MAX_VERSION_PAGES: usize = 100;

/// `attributes` of a key or secret version.
pub fn attributes(v: &Value) -> Attributes {
    let a = &v["attributes"];
    Attributes {
        enabled: a["enabled"].as_bool().unwrap_or(true),
        nbf: a["nbf"].as_i64(),
        exp: a["exp"].as_i64(),
    }
}

/// String-valued `tags` (other values are ignored).
pub fn tags(v: &Value) -> BTreeMap<String, String> {
    v["tags"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// An error answer (`{"error": {"code", "message", "innererror"}}`).
pub fn service_error(status: u16, body: &Value) -> VaultError {
    let e = &body["error"];
    VaultError::Service {
        status,
        code: e["code"].as_str().unwrap_or("").to_string(),
        inner: e["innererror"]["code"].as_str().map(str::to_string),
        message: e["message"].as_str().unwrap_or("").to_string(),
    }
}

/// A `GET secrets/NAME/VERSION` answer. The value is moved into a
/// [`Secret`] and the JSON copy of it is overwritten.
pub fn secret_bundle(mut v: Value) -> SecretBundle {
    let value = v["value"]
        .as_str()
        .map(|s| Secret::from_slice(s.as_bytes()));
    if let Some(Value::String(st)) = v.get_mut("value") {
        zeroize::Zeroize::zeroize(st);
    }
    SecretBundle {
        id: v["id"].as_str().unwrap_or("").to_string(),
        value,
        content_type: v["contentType"].as_str().map(str::to_string),
        tags: tags(&v),
        attributes: attributes(&v),
    }
}

/// One page of `GET secrets/NAME/versions`: the versions (without values)
/// and the `nextLink`, if any.
pub fn secret_versions_page(v: &Value) -> (Vec<SecretBundle>, Option<String>) {
    let items = v["value"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| SecretBundle {
            id: item["id"].as_str().unwrap_or("").to_string(),
            value: None,
            content_type: item["contentType"].as_str().map(str::to_string),
            tags: tags(item),
            attributes: attributes(item),
        })
        .collect();
    let next = v["nextLink"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    (items, next)
}

/// A `GET keys/NAME/VERSION` answer.
pub fn key_bundle(v: &Value) -> KeyBundle {
    KeyBundle {
        kid: v["key"]["kid"].as_str().unwrap_or("").to_string(),
        attributes: attributes(v),
    }
}

/// A `POST keys/NAME/VERSION/unwrapkey` answer: the base64url `value`,
/// decoded. The JSON copy of the value is overwritten.
pub fn unwrapped_key(mut v: Value) -> Result<Secret, VaultError> {
    let out = v["value"]
        .as_str()
        .ok_or_else(|| VaultError::Transport("unwrapkey answer without a value".into()))
        .and_then(|s| {
            offline::b64_decode(s)
                .map_err(|e| VaultError::Transport(format!("unwrapkey value: {e}")))
        });
    if let Some(Value::String(st)) = v.get_mut("value") {
        zeroize::Zeroize::zeroize(st);
    }
    out.map(Secret::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_and_versions() {
        let b = secret_bundle(json!({
            "id": "https://v.vault.azure.net/secrets/s/1",
            "value": "aGk=", "contentType": "Wrapped BEK",
            "tags": {"DiskEncryptionKeyFileName": "X.BEK", "n": 3},
            "attributes": {"enabled": false, "exp": 5}
        }));
        assert_eq!(b.value.unwrap().expose(), b"aGk=");
        assert_eq!(b.content_type.as_deref(), Some("Wrapped BEK"));
        assert_eq!(b.tags.len(), 1);
        assert!(!b.attributes.enabled);
        assert_eq!(b.attributes.exp, Some(5));
        let (items, next) = secret_versions_page(&json!({
            "value": [{"id": "a"}, {"id": "b", "attributes": {"enabled": true}}],
            "nextLink": ""
        }));
        assert_eq!(items.len(), 2);
        assert!(next.is_none());
        let (items, next) = secret_versions_page(&json!({"value": 7, "nextLink": "x"}));
        assert!(items.is_empty());
        assert_eq!(next.as_deref(), Some("x"));
    }

    #[test]
    fn keys_unwrap_and_errors() {
        let k = key_bundle(&json!({"key": {"kid": "k"}, "attributes": {"nbf": 1}}));
        assert_eq!(k.kid, "k");
        assert!(k.attributes.enabled);
        assert_eq!(
            unwrapped_key(json!({"value": "AAEC"})).unwrap().expose(),
            &[0, 1, 2]
        );
        assert!(unwrapped_key(json!({"value": 3})).is_err());
        assert!(unwrapped_key(json!({"value": "!!"})).is_err());
        match service_error(
            403,
            &json!({"error": {"code": "Forbidden", "innererror": {"code": "ForbiddenByPolicy"}}}),
        ) {
            VaultError::Service {
                status,
                code,
                inner,
                message,
            } => {
                assert_eq!(
                    (status, code.as_str(), inner.as_deref(), message.as_str()),
                    (403, "Forbidden", Some("ForbiddenByPolicy"), "")
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
