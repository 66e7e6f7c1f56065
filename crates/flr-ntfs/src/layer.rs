//! The NTFS format descriptor for flr's scanner.

use flr_io::{ReadAt, Source};
use flr_layer::{has_magic, Format, Kind, LayerError, LayerKind, OpenContext, Opened};

use crate::NtfsFs;

/// NTFS filesystems.
pub struct NtfsFormat;

/// The descriptor the engine lists.
pub static FORMAT: NtfsFormat = NtfsFormat;

impl Format for NtfsFormat {
    fn kind(&self) -> Kind {
        Kind::new("ntfs", "NTFS", LayerKind::Filesystem)
    }

    /// The OEM id `NTFS    ` at byte 3.
    fn probe(&self, head: &[u8], _src: &dyn ReadAt) -> bool {
        has_magic(head, 3, b"NTFS    ")
    }

    fn open(&self, src: Source, _ctx: &OpenContext<'_>) -> Result<Opened, LayerError> {
        let fs = NtfsFs::open(src).map_err(LayerError::broken)?;
        Ok(Opened::Filesystem(Box::new(fs)))
    }
}
