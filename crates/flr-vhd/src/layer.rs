//! The VHD format descriptor for flr's scanner.

use std::sync::Arc;

use flr_io::{ReadAt, Source};
use flr_layer::{ContainerInfo, Format, Kind, LayerError, LayerKind, OpenContext, Opened};

use crate::VhdDisk;

/// VHD (fixed, dynamic, differencing): the file's virtual disk.
pub struct VhdFormat;

/// The descriptor the engine lists.
pub static FORMAT: VhdFormat = VhdFormat;

impl Format for VhdFormat {
    fn kind(&self) -> Kind {
        Kind::new("vhd", "VHD", LayerKind::Container)
    }

    fn probe(&self, _head: &[u8], src: &dyn ReadAt) -> bool {
        crate::probe(src)
    }

    fn open(&self, src: Source, ctx: &OpenContext<'_>) -> Result<Opened, LayerError> {
        let file_size = src.len();
        let d = VhdDisk::open(src, ctx.parents).map_err(LayerError::broken)?;
        let info = container_info(&d, file_size);
        Ok(Opened::Disk {
            source: Arc::new(d),
            info,
        })
    }
}

/// The container facts the scanner reports for an opened VHD whose file
/// is `file_size` bytes.
pub fn container_info(d: &VhdDisk, file_size: u64) -> ContainerInfo {
    let i = d.info();
    ContainerInfo {
        format: "vhd",
        subtype: Some(i.disk_type.name().to_string()),
        virtual_size: i.virtual_size,
        file_size,
        logical_sector_size: None,
        parents: i.chain.clone(),
        warnings: i.warnings.clone(),
    }
}
