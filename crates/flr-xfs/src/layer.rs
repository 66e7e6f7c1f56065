//! The XFS format descriptor for flr's scanner.

use flr_io::{ReadAt, Source};
use flr_layer::{has_magic, Format, Kind, LayerError, LayerKind, OpenContext, Opened};

use crate::XfsFs;

/// XFS filesystems.
pub struct XfsFormat;

/// The descriptor the engine lists.
pub static FORMAT: XfsFormat = XfsFormat;

impl Format for XfsFormat {
    fn kind(&self) -> Kind {
        Kind::new("xfs", "XFS", LayerKind::Filesystem)
    }

    /// The superblock magic `XFSB` at byte 0.
    fn probe(&self, head: &[u8], _src: &dyn ReadAt) -> bool {
        has_magic(head, 0, b"XFSB")
    }

    fn open(&self, src: Source, _ctx: &OpenContext<'_>) -> Result<Opened, LayerError> {
        let fs = XfsFs::open(src).map_err(LayerError::broken)?;
        Ok(Opened::Filesystem(Box::new(fs)))
    }
}
