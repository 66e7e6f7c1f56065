//! The FAT format descriptor for flr's scanner.

use flr_io::{ReadAt, Source};
use flr_layer::{Format, Kind, LayerError, LayerKind, OpenContext, Opened};

use crate::FatFs;

/// fat filesystems.
pub struct FatFormat;

/// The descriptor the engine lists.
pub static FORMAT: FatFormat = FatFormat;

impl Format for FatFormat {
    fn kind(&self) -> Kind {
        Kind::new("fat", "FAT", LayerKind::Filesystem)
    }

    /// A plausible FAT boot sector (a weak signature: the scanner tries it
    /// after every other filesystem).
    fn probe(&self, _head: &[u8], src: &dyn ReadAt) -> bool {
        crate::probe(src)
    }

    fn open(&self, src: Source, _ctx: &OpenContext<'_>) -> Result<Opened, LayerError> {
        let fs = FatFs::open(src).map_err(LayerError::broken)?;
        Ok(Opened::Filesystem(Box::new(fs)))
    }
}
