//! The partition-table format descriptor for flr's scanner: MBR and GPT,
//! whose partitions become child volumes `p1`, `p2`, ….

use std::sync::Arc;

use flr_io::{ReadAt, Slice, Source};
use flr_layer::{
    has_magic, Child, Format, Kind, LayerError, LayerKind, OpenContext, Opened, PartitionInfo,
    TableInfo,
};

use crate::{PartKind, Partition, Scheme};

/// MBR (with logical partitions) and GPT.
pub struct PartitionTableFormat;

/// The descriptor the engine lists.
pub static FORMAT: PartitionTableFormat = PartitionTableFormat;

impl Format for PartitionTableFormat {
    fn kind(&self) -> Kind {
        Kind::new(
            "partition-table",
            "partition table",
            LayerKind::PartitionTable,
        )
    }

    /// An MBR signature `55 AA`, or a GPT header at LBA 1 of 512- or
    /// 4096-byte sectors (a GPT whose protective MBR was wiped).
    fn probe(&self, head: &[u8], src: &dyn ReadAt) -> bool {
        src.len() >= 512
            && (has_magic(head, 510, &[0x55, 0xAA])
                || has_magic(head, 512, b"EFI PART")
                || has_magic(head, 4096, b"EFI PART"))
    }

    fn open(&self, src: Source, ctx: &OpenContext<'_>) -> Result<Opened, LayerError> {
        let Some(t) = crate::read_table(&src, ctx.sector_size)
            .map_err(|e| LayerError::broken(format!("partition table: {e}")))?
        else {
            return Ok(Opened::Declined);
        };
        let disk_len = src.len();
        let mut children = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let id = format!("p{}", p.number);
            // A partition that runs past the end of the disk (a truncated
            // image) is cut at the end and flagged, so the others stay usable.
            let start = p.start.min(disk_len);
            let len = p.size.min(disk_len.saturating_sub(p.start));
            let part = Slice::new(src.clone(), start, len, format!("partition {id}"))
                .map_err(LayerError::broken)?;
            children.push(Child {
                id,
                offset: p.start,
                size: p.size,
                source: Arc::new(part),
                partition: Some(partition_info(p)),
                label: None,
                refused: None,
                damage: (len < p.size).then(|| {
                    format!(
                        "the partition table says {} bytes at offset {:#x}, but the disk ends {} bytes in (truncated image?)",
                        p.size, p.start, len
                    )
                }),
            });
        }
        Ok(Opened::Table {
            info: TableInfo {
                scheme: match t.scheme {
                    Scheme::Gpt => "gpt",
                    Scheme::Mbr => "mbr",
                },
                sector_size: t.sector_size,
                disk_id: t.disk_id.clone(),
                warnings: t.warnings.clone(),
            },
            children,
        })
    }
}

fn partition_info(p: &Partition) -> PartitionInfo {
    match &p.kind {
        PartKind::Gpt {
            type_guid,
            type_name,
            guid,
            name,
            ..
        } => PartitionInfo {
            number: p.number,
            type_id: type_guid.clone(),
            type_name: type_name.map(str::to_string),
            name: (!name.is_empty()).then(|| name.clone()),
            guid: Some(guid.clone()),
            logical: false,
            bootable: false,
        },
        PartKind::Mbr {
            type_byte,
            type_name,
            bootable,
            logical,
        } => PartitionInfo {
            number: p.number,
            type_id: format!("{type_byte:#04x}"),
            type_name: type_name.map(str::to_string),
            name: None,
            guid: None,
            logical: *logical,
            bootable: *bootable,
        },
    }
}
