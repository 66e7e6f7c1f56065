//! The ext format descriptor for flr's scanner.

use flr_io::{ReadAt, Source};
use flr_layer::{has_magic, Format, Kind, LayerError, LayerKind, OpenContext, Opened};

use crate::Ext4Fs;

/// ext2/3/4 filesystems.
pub struct ExtFormat;

/// The descriptor the engine lists.
pub static FORMAT: ExtFormat = ExtFormat;

impl Format for ExtFormat {
    fn kind(&self) -> Kind {
        Kind::new("ext", "ext", LayerKind::Filesystem)
    }

    /// The superblock magic `53 EF` at byte 1080, with a sane block-size
    /// field (so a stray `EF53` does not count).
    fn probe(&self, head: &[u8], _src: &dyn ReadAt) -> bool {
        let log = head
            .get(1048..1052)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        has_magic(head, 1080, &[0x53, 0xef]) && matches!(log, Some(0..=6))
    }

    fn open(&self, src: Source, _ctx: &OpenContext<'_>) -> Result<Opened, LayerError> {
        let fs = Ext4Fs::open(src).map_err(LayerError::broken)?;
        Ok(Opened::Filesystem(Box::new(fs)))
    }
}
