//! Header summaries of encrypted volumes, for `probe` (no key needed).

use serde::Serialize;

/// What a LUKS header says without a key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LuksSummary {
    /// 1 or 2.
    pub version: u16,
    /// Volume UUID.
    pub uuid: String,
    /// Cipher and mode, e.g. `aes-xts-plain64` (LUKS1 header; LUKS2 first segment).
    pub cipher: Option<String>,
    /// LUKS2 label.
    pub label: Option<String>,
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Largest LUKS2 JSON area flr reads for a summary.
const MAX_LUKS2_JSON: u64 = 4 * 1024 * 1024;

/// Summarises a LUKS header from the volume's first bytes (`head`) and, for
/// LUKS2, the JSON area read through `src`.
pub(crate) fn luks_summary(head: &[u8], src: &dyn flr_io::ReadAt) -> Option<LuksSummary> {
    if head.get(0..6) != Some(b"LUKS\xba\xbe") {
        return None;
    }
    let version = u16::from_be_bytes([*head.get(6)?, *head.get(7)?]);
    let uuid = cstr(head.get(168..208)?);
    let mut s = LuksSummary {
        version,
        uuid,
        ..Default::default()
    };
    if version == 1 {
        let name = cstr(head.get(8..40)?);
        let mode = cstr(head.get(40..72)?);
        s.cipher = Some(format!("{name}-{mode}"));
    } else if version == 2 {
        let label = cstr(head.get(24..72)?);
        s.label = (!label.is_empty()).then_some(label);
        let hdr_size = u64::from_be_bytes(head.get(8..16)?.try_into().ok()?);
        let json_len = hdr_size.checked_sub(4096)?.min(MAX_LUKS2_JSON);
        let mut json = vec![0u8; usize::try_from(json_len).ok()?];
        src.read_exact_at(4096, &mut json).ok()?;
        let text = cstr(&json);
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            s.cipher = v
                .get("segments")
                .and_then(|segs| segs.as_object())
                .and_then(|o| o.values().find_map(|seg| seg.get("encryption")))
                .and_then(|e| e.as_str())
                .map(str::to_string);
        }
    }
    Some(s)
}

/// The encryption layer of a volume, as `probe` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EncryptionInfo {
    /// `bitlocker`, `bitlocker-to-go`.
    pub scheme: String,
    /// Cipher, e.g. `AES-XTS-128`.
    pub cipher: String,
    /// Protectors (BitLocker) with their ids.
    pub protectors: Vec<String>,
    /// How the volume was unlocked (`recovery password`, `clear key`…), or
    /// None while locked.
    pub unlocked_with: Option<String>,
    /// Where the LUKS header was read: `on the volume`, a file given with
    /// `--luks-header`, or a file found on another volume (ADE layout).
    pub header: Option<String>,
    /// Non-fatal findings.
    pub warnings: Vec<String>,
}

/// What lies inside an unlocked volume: found and described exactly as on a
/// plain volume. A decrypted volume that cannot be read is reported as
/// `error_kind` with the reason.
fn decrypted_content(
    inner: &crate::Source,
    scan: crate::Scan,
    error_kind: crate::ContentKind,
) -> crate::ContentInfo {
    match crate::read_head(inner.as_ref()) {
        Ok(head) => {
            let kind = crate::detect(&head, inner.as_ref());
            crate::content_info(kind, inner, scan)
        }
        Err(e) => crate::ContentInfo {
            kind: error_kind,
            fs: None,
            luks: None,
            encryption: None,
            verdict: "error",
            detail: format!("unlocked, but the decrypted volume cannot be read: {e}"),
        },
    }
}

/// Opens a BitLocker volume and, where the given key (or a clear key)
/// unlocks it, returns the content found inside and the decrypted source.
pub(crate) fn bitlocker(
    id: &str,
    source: crate::Source,
    keys: &crate::KeyRing,
    scan: crate::Scan,
) -> (crate::ContentInfo, crate::Source) {
    use crate::{ContentInfo, ContentKind};
    let locked = |kind, verdict, detail: String, enc| ContentInfo {
        kind,
        fs: None,
        luks: None,
        encryption: enc,
        verdict,
        detail,
    };
    let vol = match flr_bitlocker::BitLockerVolume::open(source.clone()) {
        Ok(v) => v,
        Err(e) => {
            return (
                locked(ContentKind::BitLocker, "error", e.to_string(), None),
                source,
            )
        }
    };
    let info = vol.info();
    let outer = if info.to_go {
        ContentKind::BitLockerToGo
    } else {
        ContentKind::BitLocker
    };
    let mut enc = EncryptionInfo {
        scheme: if info.to_go {
            "bitlocker-to-go"
        } else {
            "bitlocker"
        }
        .to_string(),
        cipher: info.encryption_method.to_string(),
        protectors: info
            .protectors
            .iter()
            .map(|p| format!("{} {{{}}}", p.kind, p.guid))
            .collect(),
        unlocked_with: None,
        header: None,
        warnings: info.warnings.clone(),
    };
    let candidates = keys.candidates(id, crate::keyring::For::BitLocker);
    // No key given: a clear key (suspended protection) may still open it.
    let attempts: Vec<(Option<flr_keys::KeyMaterial>, String)> = if candidates.is_empty() {
        vec![(None, "clear key (protection suspended)".to_string())]
    } else {
        candidates
            .into_iter()
            .map(|(k, how)| (Some(k), how))
            .collect()
    };
    let mut failures = Vec::new();
    for (key, how) in &attempts {
        match vol.unlock(key.as_ref()) {
            Ok(unlocked) => {
                enc.unlocked_with = Some(how.clone());
                let inner: crate::Source = std::sync::Arc::new(unlocked);
                let mut c = decrypted_content(&inner, scan, ContentKind::Unknown);
                c.encryption = Some(enc);
                return (c, inner);
            }
            Err(e) if key.is_none() => failures.push(format!(
                "{e}; give a key with --key {id}=recovery:DIGITS, {id}=bek:FILE or {id}=password-file:FILE"
            )),
            Err(e) if attempts.len() > 1 => failures.push(format!("{how}: {e}")),
            Err(e) => failures.push(e.to_string()),
        }
    }
    (
        locked(outer, "locked", failures.join("; "), Some(enc)),
        source,
    )
}

/// A LUKS header kept apart from the data it describes.
#[derive(Clone)]
pub(crate) struct DetachedHeader {
    /// The header's bytes.
    pub(crate) src: crate::Source,
    /// Where it came from, for the report.
    pub(crate) origin: String,
}

/// The detached header named for `id` with `--luks-header`, opened; or the
/// error to report for the volume.
pub(crate) fn header_from_file(path: &std::path::Path) -> Result<DetachedHeader, flr_io::IoError> {
    let f = flr_io::FileSource::open(path)?;
    Ok(DetachedHeader {
        src: std::sync::Arc::new(f),
        origin: format!("{} (--luks-header)", path.display()),
    })
}

/// Opens a LUKS volume (header on the volume itself, or `detached`) and,
/// where the given key unlocks it, returns the content found inside and the
/// decrypted source.
pub(crate) fn luks(
    id: &str,
    head: &[u8],
    source: crate::Source,
    detached: Option<DetachedHeader>,
    keys: &crate::KeyRing,
    scan: crate::Scan,
) -> (crate::ContentInfo, crate::Source) {
    use crate::{ContentInfo, ContentKind};
    let (header_src, header_head) = match &detached {
        None => (source.clone(), head.to_vec()),
        Some(d) => (
            d.src.clone(),
            crate::read_head(d.src.as_ref()).unwrap_or_default(),
        ),
    };
    let summary = luks_summary(&header_head, header_src.as_ref());
    let locked = |verdict, detail: String, enc| ContentInfo {
        kind: ContentKind::Luks,
        fs: None,
        luks: summary.clone(),
        encryption: enc,
        verdict,
        detail,
    };
    let vol = match flr_luks::LuksVolume::open(header_src.clone(), source.clone()) {
        Ok(v) => v,
        Err(e) => {
            let verdict = match e {
                flr_luks::LuksError::Unsupported { .. } | flr_luks::LuksError::Limit { .. } => {
                    "unsupported"
                }
                _ => "error",
            };
            return (locked(verdict, e.to_string(), None), source);
        }
    };
    let info = vol.info();
    let mut enc = EncryptionInfo {
        scheme: format!("luks{}", info.version),
        cipher: format!("{} {}-bit", info.cipher, info.key_bits),
        protectors: info
            .keyslots
            .iter()
            .filter(|k| k.active)
            .map(|k| format!("keyslot {} ({})", k.index, k.kdf))
            .chain(info.tokens.iter().map(|t| {
                if t.needs_attested_key_release {
                    format!(
                        "token {} ({}: needs attested key release)",
                        t.index, t.type_name
                    )
                } else {
                    format!("token {} ({})", t.index, t.type_name)
                }
            }))
            .collect(),
        unlocked_with: None,
        header: Some(
            detached
                .as_ref()
                .map_or_else(|| "on the volume".to_string(), |d| d.origin.clone()),
        ),
        warnings: info.warnings.clone(),
    };
    let candidates = keys.candidates(id, crate::keyring::For::Luks);
    if candidates.is_empty() {
        let detail = format!(
            "LUKS{} volume (uuid {}): locked; give its key with --key {id}=passphrase-file:FILE or {id}=volume-key:HEX",
            info.version, info.uuid
        );
        return (locked("locked", detail, Some(enc)), source);
    }
    let mut failures = Vec::new();
    for (key, how) in candidates {
        match vol.unlock(&key) {
            Ok(unlocked) => {
                enc.unlocked_with = Some(how);
                let inner: crate::Source = std::sync::Arc::new(unlocked);
                let mut c = decrypted_content(&inner, scan, ContentKind::Luks);
                c.luks = summary.clone();
                c.encryption = Some(enc);
                return (c, inner);
            }
            Err(e) => failures.push(format!("{how}: {e}")),
        }
    }
    (locked("locked", failures.join("; "), Some(enc)), source)
}
