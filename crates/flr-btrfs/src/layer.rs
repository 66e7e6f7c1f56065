//! The Btrfs format descriptor for flr's scanner: every device is a member
//! found on any node (a partition, an LV, an unlocked LUKS volume, on any
//! disk scanned together); the devices of one filesystem (by fsid) are
//! assembled, and the volume of the device with the lowest devid present
//! shows the filesystem (a single-device Btrfs keeps its volume's id: `p2`).
//! The other devices' volumes say whose device they are. Subvolumes and
//! snapshots are reachable as `ID@/PATH` (see flr-engine's volume ids).

use std::sync::Arc;

use flr_fs::Filesystem;
use flr_io::{ReadAt, Source};
use flr_layer::{
    Format, Group, GroupFs, GroupReport, Kind, LayerError, LayerKind, MemberRef, OpenContext,
    Opened,
};
use serde_json::Value;

use crate::{Assembled, Device};

/// Btrfs, one or several devices.
pub struct BtrfsFormat;

/// The descriptor the engine lists.
pub static FORMAT: BtrfsFormat = BtrfsFormat;

const KIND: Kind = Kind::new("btrfs", "Btrfs", LayerKind::Filesystem);

impl Format for BtrfsFormat {
    fn kind(&self) -> Kind {
        KIND
    }

    /// A device is a member: the filesystem opens once its devices are
    /// assembled, never from one node's bytes.
    fn opens_lazily(&self) -> bool {
        false
    }

    /// The superblock magic `_BHRfS_M` at 64 KiB + 64.
    fn probe(&self, head: &[u8], src: &dyn ReadAt) -> bool {
        crate::probe(head, src)
    }

    fn open(&self, src: Source, ctx: &OpenContext<'_>) -> Result<Opened, LayerError> {
        let d = Device::read(src, ctx.id).map_err(|e| match e {
            flr_fs::FsError::Unsupported { .. } => LayerError::unsupported(e),
            other => LayerError::broken(other),
        })?;
        let summary = format!(
            "Btrfs device {} of filesystem {} ({} device(s))",
            d.devid(),
            d.fsid(),
            d.num_devices()
        );
        Ok(Opened::Member(flr_layer::Member {
            payload: Box::new(d),
            summary,
        }))
    }

    fn assemble(&self, members: &[MemberRef<'_>]) -> Vec<Group> {
        let devices: Vec<Device> = members
            .iter()
            .filter_map(|m| m.payload.downcast_ref::<Device>().cloned())
            .collect();
        let index_of = |location: &str| members.iter().position(|m| m.location == location);
        crate::assemble(&devices)
            .into_iter()
            .filter_map(|a| group(a, &index_of))
            .collect()
    }
}

fn group(a: Assembled, index_of: &dyn Fn(&str) -> Option<usize>) -> Option<Group> {
    let host = a.members.iter().min_by_key(|m| m.devid)?;
    let host_id = host.location.clone();
    let host_index = index_of(&host.location)?;
    let name = if a.label.is_empty() {
        a.fsid.clone()
    } else {
        format!("{} ({})", a.label, a.fsid)
    };
    let member_notes = a
        .members
        .iter()
        .filter(|m| m.location != host_id)
        .filter_map(|m| {
            Some((
                index_of(&m.location)?,
                format!(
                    "Btrfs device {} of filesystem {name}: the filesystem is the volume {host_id}",
                    m.devid
                ),
            ))
        })
        .collect();
    let mut warnings = a.warnings.clone();
    for m in &a.missing {
        warnings.push(format!(
            "device {} ({}) is missing",
            m.devid.map_or_else(|| "?".to_string(), |d| d.to_string()),
            m.uuid.as_deref().unwrap_or("uuid unknown")
        ));
    }
    let report = GroupReport {
        section: "btrfs_filesystems",
        heading: format!(
            "Btrfs filesystem {name}: {} of {} device(s), generation {}{}",
            a.members.len(),
            a.num_devices,
            a.generation,
            if a.complete() {
                String::new()
            } else {
                " (degraded: read where the profiles survive it)".to_string()
            }
        ),
        fields: vec![
            ("fsid", Value::from(a.fsid.clone())),
            ("label", Value::from(a.label.clone())),
            ("num_devices", Value::from(a.num_devices)),
            ("generation", Value::from(a.generation)),
            ("complete", Value::from(a.complete())),
        ],
        members_key: ("devices", "device"),
        members: a
            .members
            .iter()
            .map(|m| (format!("devid {}", m.devid), m.location.clone()))
            .chain(a.missing.iter().map(|m| {
                (
                    format!(
                        "devid {}",
                        m.devid.map_or_else(|| "?".to_string(), |d| d.to_string())
                    ),
                    "missing".to_string(),
                )
            }))
            .collect(),
        children_key: ("volumes", "volume"),
        children: vec![(host_id, "btrfs".to_string())],
        warnings,
    };
    let complete = a.complete();
    let key = format!("btrfs {}", a.fsid);
    let open: flr_layer::FsOpener =
        Arc::new(move || a.open().map(|fs| Box::new(fs) as Box<dyn Filesystem>));
    Some(Group {
        key,
        complete,
        member_notes,
        children: Vec::new(),
        report: Some(report),
        filesystem: Some(GroupFs {
            member: host_index,
            kind: KIND,
            open,
        }),
    })
}
