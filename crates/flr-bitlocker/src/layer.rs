//! The BitLocker format descriptor for flr's scanner: a BitLocker (or
//! BitLocker To Go) volume is a locked node that takes a recovery
//! password, a startup key (`.BEK`) or a password, and opens without any
//! key while its protection is suspended (a clear key).

use std::sync::Arc;

use flr_io::{ReadAt, Source};
use flr_keys::{KeyKind, KeyMaterial};
use flr_layer::{
    has_magic, EncryptionInfo, Format, Kind, LayerError, LayerKind, Locked, OpenContext, Opened,
};

use crate::{BitLockerVolume, TOGO_GUID};

/// BitLocker and BitLocker To Go.
pub struct BitLockerFormat;

/// The descriptor the engine lists.
pub static FORMAT: BitLockerFormat = BitLockerFormat;

const KIND: Kind = Kind::new("bitlocker", "BitLocker", LayerKind::Encryption);
const TO_GO: Kind = Kind::new("bitlocker-to-go", "BitLocker To Go", LayerKind::Encryption);

impl Format for BitLockerFormat {
    fn kind(&self) -> Kind {
        KIND
    }

    /// `-FVE-FS-` at byte 3, or a FAT boot sector carrying the BitLocker To
    /// Go GUID at byte 424 (checked before NTFS and FAT, whose boot sectors
    /// BitLocker imitates).
    fn probe(&self, head: &[u8], _src: &dyn ReadAt) -> bool {
        has_magic(head, 3, b"-FVE-FS-") || has_magic(head, 424, &TOGO_GUID)
    }

    fn open(&self, src: Source, _ctx: &OpenContext<'_>) -> Result<Opened, LayerError> {
        let vol = BitLockerVolume::open(src).map_err(LayerError::broken)?;
        Ok(Opened::Locked(Box::new(LockedBde { vol })))
    }
}

struct LockedBde {
    vol: BitLockerVolume,
}

impl Locked for LockedBde {
    fn kind(&self) -> Kind {
        if self.vol.info().to_go {
            TO_GO
        } else {
            KIND
        }
    }

    fn info(&self) -> EncryptionInfo {
        let info = self.vol.info();
        EncryptionInfo {
            scheme: self.kind().name.to_string(),
            cipher: info.encryption_method.to_string(),
            protectors: info
                .protectors
                .iter()
                .map(|p| format!("{} {{{}}}", p.kind, p.guid))
                .collect(),
            unlocked_with: None,
            header: None,
            warnings: info.warnings.clone(),
        }
    }

    fn accepts(&self) -> &'static [KeyKind] {
        &[
            KeyKind::RecoveryPassword,
            KeyKind::StartupKey,
            KeyKind::Password,
        ]
    }

    fn chain_key(&self) -> KeyKind {
        KeyKind::StartupKey
    }

    fn may_open_without_key(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!(
            "{} volume {{{}}}",
            self.kind().display,
            self.vol.info().volume_guid
        )
    }

    fn unlock(&self, key: Option<&KeyMaterial>) -> Result<Source, LayerError> {
        let u = self.vol.unlock(key).map_err(LayerError::broken)?;
        Ok(Arc::new(u))
    }
}
