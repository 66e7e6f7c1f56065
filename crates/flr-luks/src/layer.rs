//! The LUKS format descriptor for flr's scanner: a LUKS1/LUKS2 volume is
//! a locked node that takes a passphrase or a volume key; its header may
//! also come from elsewhere (ADE keeps the OS disk's header as a file).

use std::sync::Arc;

use flr_io::{ReadAt, Source};
use flr_keys::{KeyKind, KeyMaterial};
use flr_layer::{
    has_magic, EncryptionInfo, Format, Kind, LayerError, LayerKind, Locked, LuksSummary,
    OpenContext, Opened,
};

use crate::{LuksError, LuksVolume, LUKS_MAGIC};

/// LUKS1 and LUKS2.
pub struct LuksFormat;

/// The descriptor the engine lists.
pub static FORMAT: LuksFormat = LuksFormat;

const KIND: Kind = Kind::new("luks", "LUKS", LayerKind::Encryption);

impl Format for LuksFormat {
    fn kind(&self) -> Kind {
        KIND
    }

    fn probe(&self, head: &[u8], _src: &dyn ReadAt) -> bool {
        has_magic(head, 0, LUKS_MAGIC)
    }

    fn open(&self, src: Source, _ctx: &OpenContext<'_>) -> Result<Opened, LayerError> {
        open(src.clone(), src)
    }

    fn open_detached(&self, header: Source, data: Source) -> Option<Result<Opened, LayerError>> {
        Some(open(header, data))
    }
}

fn open(header: Source, data: Source) -> Result<Opened, LayerError> {
    match LuksVolume::open(header.clone(), data) {
        Ok(vol) => Ok(Opened::Locked(Box::new(LockedLuks { vol }))),
        Err(e @ (LuksError::Unsupported { .. } | LuksError::Limit { .. })) => {
            Err(LayerError::unsupported(e).with_luks(summary(header.as_ref())))
        }
        Err(e) => Err(LayerError::broken(e).with_luks(summary(header.as_ref()))),
    }
}

/// Largest LUKS2 JSON area read for a summary of a header that does not
/// open.
const MAX_SUMMARY_JSON: u64 = 4 << 20;

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// What the binary header (and, for LUKS2, the JSON area) says, read
/// directly: for a header that [`LuksVolume::open`] refuses (unsupported
/// requirements, damage), so `probe` can still name the volume.
fn summary(src: &dyn ReadAt) -> Option<LuksSummary> {
    let mut head = [0u8; 512];
    src.read_exact_at(0, &mut head).ok()?;
    if !head.starts_with(LUKS_MAGIC) {
        return None;
    }
    let version = u16::from_be_bytes([head[6], head[7]]);
    let mut s = LuksSummary {
        version,
        uuid: cstr(&head[168..208]),
        ..Default::default()
    };
    if version == 1 {
        s.cipher = Some(format!("{}-{}", cstr(&head[8..40]), cstr(&head[40..72])));
    } else if version == 2 {
        let label = cstr(&head[24..72]);
        s.label = (!label.is_empty()).then_some(label);
        let hdr_size = u64::from_be_bytes(head[8..16].try_into().ok()?);
        let json_len = hdr_size.checked_sub(4096)?.min(MAX_SUMMARY_JSON);
        let mut json = vec![0u8; usize::try_from(json_len).ok()?];
        src.read_exact_at(4096, &mut json).ok()?;
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&cstr(&json)) {
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

struct LockedLuks {
    vol: LuksVolume,
}

impl Locked for LockedLuks {
    fn kind(&self) -> Kind {
        KIND
    }

    fn info(&self) -> EncryptionInfo {
        let info = self.vol.info();
        EncryptionInfo {
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
            header: Some("on the volume".to_string()),
            warnings: info.warnings.clone(),
        }
    }

    fn luks(&self) -> Option<LuksSummary> {
        let info = self.vol.info();
        Some(LuksSummary {
            version: info.version,
            uuid: info.uuid.clone(),
            cipher: (!info.cipher.is_empty()).then(|| info.cipher.clone()),
            label: (!info.label.is_empty()).then(|| info.label.clone()),
        })
    }

    fn accepts(&self) -> &'static [KeyKind] {
        &[KeyKind::Passphrase, KeyKind::VolumeKey]
    }

    fn chain_key(&self) -> KeyKind {
        KeyKind::Passphrase
    }

    fn describe(&self) -> String {
        let info = self.vol.info();
        format!("LUKS{} volume (uuid {})", info.version, info.uuid)
    }

    fn unlock(&self, key: Option<&KeyMaterial>) -> Result<Source, LayerError> {
        let Some(key) = key else {
            return Err(LayerError::broken("LUKS needs a key"));
        };
        let u = self.vol.unlock(key).map_err(LayerError::broken)?;
        Ok(Arc::new(u))
    }
}
