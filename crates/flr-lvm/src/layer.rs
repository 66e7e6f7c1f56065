//! The LVM2 format descriptor for flr's scanner: a PV is a member; the
//! PVs found anywhere (partitions, whole disks, LUKS volumes, other LVs,
//! on every disk scanned together) are assembled into volume groups, whose
//! visible LVs become volumes `PV-ID/VG/LV`, where PV-ID is the volume id
//! of the VG's first PV (in metadata order) that is present. VG and LV
//! names cannot contain `/` or `:`, so the id is unambiguous in `ID:/path`.

use std::sync::Arc;

use flr_io::{ReadAt, Refused, Source};
use flr_layer::{
    human_size, Child, Format, Group, GroupReport, Kind, LayerError, LayerKind, MemberRef,
    OpenContext, Opened, Refusal,
};
use serde_json::Value;

use crate::{LvStatus, PhysicalVolume, VolumeGroup};

/// LVM2 physical volumes and the volume groups they make.
pub struct Lvm2Format;

/// The descriptor the engine lists.
pub static FORMAT: Lvm2Format = Lvm2Format;

/// The kind of an LV whose bytes flr cannot give.
pub const LV_KIND: Kind = Kind::new("lvm-lv", "LVM2 logical volume", LayerKind::VolumeManager);

impl Format for Lvm2Format {
    fn kind(&self) -> Kind {
        Kind::new("lvm2", "LVM2 physical volume", LayerKind::VolumeManager)
    }

    /// `LABELONE` with type `LVM2 001` in one of the first four sectors.
    fn probe(&self, head: &[u8], _src: &dyn ReadAt) -> bool {
        (0..4).any(|s| {
            let off = s * 512;
            head.get(off..off + 8) == Some(b"LABELONE")
                && head.get(off + 24..off + 32) == Some(b"LVM2 001")
        })
    }

    fn open(&self, src: Source, ctx: &OpenContext<'_>) -> Result<Opened, LayerError> {
        let pv = PhysicalVolume::read(src, ctx.id).map_err(|e| {
            LayerError::broken(format!("LVM2 label found, but the PV cannot be read: {e}"))
        })?;
        let summary = format!("LVM2 physical volume {}", pv.uuid);
        Ok(Opened::Member(flr_layer::Member {
            payload: Box::new(pv),
            summary,
        }))
    }

    fn assemble(&self, members: &[MemberRef<'_>]) -> Vec<Group> {
        let pvs: Vec<PhysicalVolume> = members
            .iter()
            .filter_map(|m| m.payload.downcast_ref::<PhysicalVolume>().cloned())
            .collect();
        let index_of = |uuid: &str| {
            members.iter().position(|m| {
                m.payload
                    .downcast_ref::<PhysicalVolume>()
                    .is_some_and(|p| p.uuid == uuid)
            })
        };
        let vgs = crate::assemble(&pvs);
        let mut groups: Vec<Group> = vgs.iter().map(|g| group(g, &index_of)).collect();
        // PVs that no VG claims.
        for (i, pv) in pvs.iter().enumerate() {
            if vgs.iter().any(|g| g.pvs.iter().any(|p| p.uuid == pv.uuid)) {
                continue;
            }
            groups.push(Group {
                key: format!("pv {}", pv.uuid),
                complete: false,
                member_notes: vec![(
                    index_of(&pv.uuid).unwrap_or(i),
                    format!(
                        "LVM2 physical volume {} with no volume group metadata found on any scanned disk{}",
                        pv.uuid,
                        pv.warning.as_deref().map(|w| format!(" ({w})")).unwrap_or_default()
                    ),
                )],
                children: Vec::new(),
                report: None,
                filesystem: None,
            });
        }
        groups
    }
}

fn group(g: &VolumeGroup, index_of: &dyn Fn(&str) -> Option<usize>) -> Group {
    let first = g.first_location().unwrap_or("?").to_string();
    let missing = g.missing();
    let member_notes = g
        .pvs
        .iter()
        .filter(|p| p.location.is_some())
        .filter_map(|p| {
            Some((
                index_of(&p.uuid)?,
                format!(
                    "LVM2 physical volume {} of volume group {}: its logical volumes are the volumes {first}/{}/…",
                    p.uuid, g.name, g.name
                ),
            ))
        })
        .collect();
    let mut warnings = g.warnings.clone();
    for m in &missing {
        warnings.push(format!(
            "PV {} (expected at {}) is missing",
            m.uuid, m.expected_at
        ));
    }
    let mut children = Vec::new();
    let mut listed = Vec::new();
    for lv in g.lvs.iter().filter(|l| l.visible) {
        let id = format!("{first}/{}/{}", g.name, lv.name);
        let label = format!("LVM2 {} LV {}/{}", lv.layout, g.name, lv.name);
        let (source, refused): (Source, _) = match g.open_lv(&lv.name) {
            Ok(src) => (src, None),
            Err(e) => {
                let (unsupported, reason) = match &lv.status {
                    LvStatus::Unsupported(r) => (true, r.clone()),
                    LvStatus::MissingPv(r) => (false, r.clone()),
                    LvStatus::Corrupt(r) => (false, format!("inconsistent metadata: {r}")),
                    LvStatus::Readable => (false, e.to_string()),
                };
                let src = Arc::new(Refused::new(
                    format!("lv {}/{}", g.name, lv.name),
                    lv.size,
                    reason.clone(),
                ));
                (
                    src,
                    Some(Refusal {
                        kind: LV_KIND,
                        unsupported,
                        reason,
                    }),
                )
            }
        };
        listed.push((id.clone(), lv.layout.clone()));
        children.push(Child {
            id,
            offset: 0,
            size: lv.size,
            source,
            partition: None,
            label: Some(label),
            refused,
            damage: None,
        });
    }
    let report = GroupReport {
        section: "volume_groups",
        heading: format!(
            "LVM2 volume group {} (id {}, metadata seqno {}, extent {})",
            g.name,
            g.id,
            g.seqno,
            human_size(g.extent_size)
        ),
        fields: vec![
            ("name", Value::from(g.name.clone())),
            ("id", Value::from(g.id.clone())),
            ("seqno", Value::from(g.seqno)),
            ("extent_size", Value::from(g.extent_size)),
        ],
        members_key: ("pvs", "PV"),
        members: g
            .pvs
            .iter()
            .map(|p| {
                (
                    p.uuid.clone(),
                    p.location.clone().unwrap_or_else(|| {
                        format!(
                            "missing (expected at {})",
                            p.device_hint.as_deref().unwrap_or("an unknown device")
                        )
                    }),
                )
            })
            .collect(),
        children_key: ("lvs", "LV"),
        children: listed,
        warnings,
    };
    Group {
        key: format!("vg {}", g.id),
        complete: missing.is_empty(),
        member_notes,
        children,
        report: Some(report),
        filesystem: None,
    }
}
