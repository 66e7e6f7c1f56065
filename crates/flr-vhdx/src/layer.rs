//! The VHDX format descriptor for flr's scanner.

use std::sync::Arc;

use flr_io::{ReadAt, Source};
use flr_layer::{ContainerInfo, Format, Kind, LayerError, LayerKind, OpenContext, Opened};

use crate::VhdxDisk;

/// VHDX (fixed, dynamic, differencing): the file's virtual disk.
pub struct VhdxFormat;

/// The descriptor the engine lists.
pub static FORMAT: VhdxFormat = VhdxFormat;

impl Format for VhdxFormat {
    fn kind(&self) -> Kind {
        Kind::new("vhdx", "VHDX", LayerKind::Container)
    }

    fn probe(&self, head: &[u8], _src: &dyn ReadAt) -> bool {
        flr_layer::has_magic(head, 0, crate::format::FILE_SIGNATURE)
    }

    fn open(&self, src: Source, ctx: &OpenContext<'_>) -> Result<Opened, LayerError> {
        let file_size = src.len();
        let d = VhdxDisk::open(src, ctx.parents).map_err(LayerError::broken)?;
        let info = container_info(&d, file_size);
        Ok(Opened::Disk {
            source: Arc::new(d),
            info,
        })
    }
}

/// The container facts the scanner reports for an opened VHDX whose file
/// is `file_size` bytes.
pub fn container_info(d: &VhdxDisk, file_size: u64) -> ContainerInfo {
    let i = d.info();
    ContainerInfo {
        format: "vhdx",
        subtype: Some(i.disk_type.name().to_string()),
        virtual_size: i.virtual_size,
        file_size,
        logical_sector_size: Some(i.logical_sector_size),
        parents: i.chain.clone(),
        warnings: i.warnings.clone(),
    }
}
