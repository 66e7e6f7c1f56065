//! What Azure says about a disk's encryption: the JSON of `az snapshot
//! show` / `az disk show` (ARM resource, properties flattened by the CLI or
//! nested under `properties`), and Azure Backup's restored key-and-secret
//! JSON (`KeyAndSecretDetails`).

use serde_json::Value;

use flr_config::ObjectId;

/// Server-side encryption facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sse {
    /// `EncryptionAtRestWithPlatformKey`, `…CustomerKey`, `…PlatformAndCustomerKeys`.
    pub kind: String,
    /// The Disk Encryption Set, for customer keys.
    pub des_id: Option<String>,
}

/// One ADE encryption setting: the BEK secret and, optionally, its KEK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdeSetting {
    /// The versioned secret URL recorded on the disk.
    pub secret: ObjectId,
    /// The vault resource id holding the secret.
    pub secret_vault_id: Option<String>,
    /// The KEK, when the BEK is wrapped.
    pub kek: Option<ObjectId>,
    /// The secret's value when it came with the metadata (Azure Backup's
    /// `secretData`): base64 of the BEK, or the wrapped BEK.
    pub secret_value: Option<String>,
}

/// Everything flr takes from the metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskEncryption {
    /// Resource name, when present.
    pub name: Option<String>,
    /// Server-side encryption.
    pub sse: Option<Sse>,
    /// `encryptionSettingsCollection.enabled`.
    pub ade_enabled: bool,
    /// `"1.0"` (dual pass, AAD application) or `"1.1"` (single pass).
    pub ade_settings_version: Option<String>,
    /// The ADE settings.
    pub ade: Vec<AdeSetting>,
    /// `securityProfile.securityType` (confidential VM disks).
    pub security_type: Option<String>,
    /// Azure Backup's `encryptionMechanism` (None, SinglePass, DoublePass).
    pub backup_mechanism: Option<String>,
    /// Where the facts came from.
    pub source: String,
}

impl DiskEncryption {
    /// Whether the disk is a confidential-VM disk with encryption bound to
    /// the VM's TPM (keys released only after attestation).
    pub fn confidential(&self) -> bool {
        self.security_type
            .as_deref()
            .is_some_and(|t| t.starts_with("ConfidentialVM_DiskEncrypted"))
    }
}

fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.get(name)
        .or_else(|| v.get("properties").and_then(|p| p.get(name)))
        .filter(|x| !x.is_null())
}

fn string(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_string)
}

/// Parses either form of metadata. `source` names the file for reports.
pub fn parse(json: &str, source: &str) -> Result<DiskEncryption, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("{source}: not JSON: {e}"))?;
    let mut out = DiskEncryption {
        name: string(v.get("name")),
        source: source.to_string(),
        ..Default::default()
    };
    // Azure Backup: {"keyAndSecretDetails": {...}} or the details object itself.
    let backup = v
        .get("keyAndSecretDetails")
        .or_else(|| v.get("KeyAndSecretDetails"))
        .or_else(|| v.get("bekDetails").map(|_| &v));
    if let Some(b) = backup {
        let bek = b
            .get("bekDetails")
            .ok_or_else(|| format!("{source}: keyAndSecretDetails without bekDetails"))?;
        let secret_url = string(bek.get("secretUrl"))
            .ok_or_else(|| format!("{source}: bekDetails without secretUrl"))?;
        let kek = match b
            .get("kekDetails")
            .and_then(|k| k.get("keyUrl"))
            .and_then(Value::as_str)
        {
            Some(u) if !u.is_empty() => Some(ObjectId::parse(u)?),
            _ => None,
        };
        out.ade_enabled = true;
        out.backup_mechanism = string(b.get("encryptionMechanism"));
        out.ade.push(AdeSetting {
            secret: ObjectId::parse(&secret_url)?,
            secret_vault_id: string(bek.get("secretVaultId")),
            kek,
            secret_value: string(bek.get("secretData")),
        });
        return Ok(out);
    }
    if let Some(e) = field(&v, "encryption") {
        if let Some(kind) = string(e.get("type")) {
            out.sse = Some(Sse {
                kind,
                des_id: string(e.get("diskEncryptionSetId")),
            });
        }
    }
    if let Some(c) = field(&v, "encryptionSettingsCollection") {
        out.ade_enabled = c.get("enabled").and_then(Value::as_bool).unwrap_or(false);
        out.ade_settings_version = string(c.get("encryptionSettingsVersion"));
        for s in c
            .get("encryptionSettings")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(dek) = s.get("diskEncryptionKey") else {
                continue;
            };
            let secret_url = string(dek.get("secretUrl"))
                .ok_or_else(|| format!("{source}: diskEncryptionKey without secretUrl"))?;
            let kek = match s
                .get("keyEncryptionKey")
                .and_then(|k| k.get("keyUrl"))
                .and_then(Value::as_str)
            {
                Some(u) => Some(ObjectId::parse(u)?),
                None => None,
            };
            out.ade.push(AdeSetting {
                secret: ObjectId::parse(&secret_url)?,
                secret_vault_id: dek
                    .get("sourceVault")
                    .and_then(|sv| sv.get("id"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                kek,
                secret_value: None,
            });
        }
    }
    if let Some(sp) = field(&v, "securityProfile") {
        out.security_type = string(sp.get("securityType"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn az_snapshot_show_flattened_and_nested() {
        let flat = r#"{"name":"snap1","encryption":{"type":"EncryptionAtRestWithPlatformKey"},
          "encryptionSettingsCollection":{"enabled":true,"encryptionSettingsVersion":"1.1",
           "encryptionSettings":[{"diskEncryptionKey":{"secretUrl":"https://kv1.vault.azure.net/secrets/ABC/0123abcd","sourceVault":{"id":"/subscriptions/s/resourceGroups/g/providers/Microsoft.KeyVault/vaults/kv1"}},
             "keyEncryptionKey":{"keyUrl":"https://kv1.vault.azure.net/keys/kek/99aa","sourceVault":{"id":"/x"}}}]}}"#;
        let d = parse(flat, "snap.json").unwrap();
        assert_eq!(d.name.as_deref(), Some("snap1"));
        assert!(d.ade_enabled);
        assert_eq!(d.ade_settings_version.as_deref(), Some("1.1"));
        assert_eq!(d.ade[0].secret.version.as_deref(), Some("0123abcd"));
        assert_eq!(d.ade[0].kek.as_ref().unwrap().name, "kek");
        let nested = format!(r#"{{"name":"snap1","properties":{}}}"#, flat);
        assert_eq!(parse(&nested, "snap.json").unwrap().ade, d.ade);
        let cvm = r#"{"securityProfile":{"securityType":"ConfidentialVM_DiskEncryptedWithCustomerKey"},
          "encryption":{"type":"EncryptionAtRestWithCustomerKey","diskEncryptionSetId":"/des/1"}}"#;
        let d = parse(cvm, "x").unwrap();
        assert!(d.confidential());
        assert_eq!(d.sse.unwrap().des_id.as_deref(), Some("/des/1"));
    }

    #[test]
    fn azure_backup_key_and_secret_details() {
        let j = r#"{"keyAndSecretDetails":{"kekDetails":{"keyUrl":"https://kv/keys/kek/1","keyVaultId":"/v","keyBackupData":"opaque"},
          "bekDetails":{"secretUrl":"https://kv/secrets/S/2","secretVaultId":"/v","secretData":"d3JhcHBlZA"},
          "encryptionMechanism":"SinglePass"}}"#;
        let d = parse(j, "b.json").unwrap();
        assert_eq!(d.backup_mechanism.as_deref(), Some("SinglePass"));
        assert_eq!(d.ade[0].secret_value.as_deref(), Some("d3JhcHBlZA"));
        assert_eq!(d.ade[0].kek.as_ref().unwrap().version.as_deref(), Some("1"));
    }
}
