//! The md format descriptor for flr's scanner: a member is found on any
//! node (a partition, a whole disk, a LUKS volume, an LV, on any disk
//! scanned together); the members are grouped by array UUID, and each
//! array becomes one volume with the id `FIRST/md/NAME`: FIRST is the
//! volume id of the member in the lowest role present, NAME the array's
//! name without its `host:` part (`data` for `myhost:data`), or the first
//! eight hex digits of its UUID when it has none (0.90), with `/` and `:`
//! replaced so that the id stays unambiguous in `ID:/path`.
//!
//! The scanner probes md before the filesystems: a 0.90 or 1.0 RAID1
//! member shows the array's filesystem at its byte 0 and would otherwise
//! be opened on its own.

use std::sync::Arc;

use flr_io::{ReadAt, Refused, Source};
use flr_layer::{
    human_size, Child, Format, Group, GroupReport, Kind, LayerError, LayerKind, MemberRef,
    OpenContext, Opened, Refusal,
};
use serde_json::Value;

use crate::{Array, ArrayStatus, Layout, MdError, Member, Metadata};

/// Linux software RAID members and the arrays they make.
pub struct MdFormat;

/// The descriptor the engine lists.
pub static FORMAT: MdFormat = MdFormat;

/// The kind of an array whose bytes flr cannot give (too many members
/// missing, a layout flr does not read).
pub const ARRAY_KIND: Kind = Kind::new("md-array", "md array", LayerKind::VolumeManager);

impl Format for MdFormat {
    fn kind(&self) -> Kind {
        Kind::new("md", "md RAID member", LayerKind::VolumeManager)
    }

    fn probe(&self, head: &[u8], src: &dyn ReadAt) -> bool {
        crate::probe(head, src)
    }

    fn open(&self, src: Source, ctx: &OpenContext<'_>) -> Result<Opened, LayerError> {
        let m = match Member::read(src.clone(), ctx.id) {
            Ok(m) => m,
            Err(MdError::NotMember) => return Ok(Opened::Declined),
            Err(e @ MdError::Unsupported { .. }) => return Err(LayerError::unsupported(e)),
            Err(e) => {
                return Err(LayerError::broken(format!(
                    "md superblock found, but the member cannot be read: {e}"
                )))
            }
        };
        // A superblock at the end (0.90, 1.0) inside the last partition of
        // a partitioned disk is seen from the whole disk too: the member is
        // the partition, so the disk is left to its partition table.
        let at_end = matches!(
            m.metadata,
            Metadata::V090 { .. } | Metadata::V1 { minor: 0 }
        );
        if at_end && partition_holds(&src, m.super_offset) {
            return Ok(Opened::Declined);
        }
        let summary = format!(
            "md {} member (role {}) of array {}",
            m.level,
            m.role,
            name_part(&m.name, &m.uuid.to_string())
        );
        Ok(Opened::Member(flr_layer::Member {
            payload: Box::new(m),
            summary,
        }))
    }

    fn assemble(&self, members: &[MemberRef<'_>]) -> Vec<Group> {
        let found: Vec<Member> = members
            .iter()
            .filter_map(|m| m.payload.downcast_ref::<Member>().cloned())
            .collect();
        let index_of = |location: &str| members.iter().position(|m| m.location == location);
        crate::assemble(&found)
            .iter()
            .map(|a| group(a, &index_of))
            .collect()
    }
}

/// Whether a partition of a table at the start of `src` contains byte
/// `offset`.
fn partition_holds(src: &Source, offset: u64) -> bool {
    let Ok(Some(t)) = flr_part::read_table(src, None) else {
        return false;
    };
    t.partitions
        .iter()
        .any(|p| p.start <= offset && p.end().is_some_and(|e| offset < e))
}

/// The array's name for ids and messages: the part after `host:`, else
/// the first 8 hex digits of the UUID; `/` and `:` become `_`.
fn name_part(name: &str, uuid: &str) -> String {
    let n = name.rsplit(':').next().unwrap_or("");
    let n = if n.is_empty() {
        uuid.chars()
            .filter(char::is_ascii_hexdigit)
            .take(8)
            .collect()
    } else {
        n.to_string()
    };
    n.replace(['/', ':'], "_")
}

fn layout_name(a: &Array) -> String {
    match a.layout {
        Layout::None => String::new(),
        Layout::Unknown(v) => format!("layout {v:#x}"),
        Layout::Raid0(l) => l.to_string(),
        Layout::Parity(p) => p.to_string(),
        Layout::Raid10 {
            near, far, offset, ..
        } => {
            let mut parts = Vec::new();
            if near > 1 {
                parts.push(format!("near={near}"));
            }
            if far > 1 {
                parts.push(format!("{}={far}", if offset { "offset" } else { "far" }));
            }
            parts.join(",")
        }
    }
}

fn state(a: &Array) -> String {
    match &a.status {
        ArrayStatus::Clean if a.clean => "clean".into(),
        ArrayStatus::Clean => "active (not shut down cleanly: a resync was pending)".into(),
        ArrayStatus::Degraded { missing } => format!(
            "degraded (roles {} missing; read by reconstruction)",
            roles(missing)
        ),
        ArrayStatus::Failed { missing } => {
            format!("failed (roles {} missing)", roles(missing))
        }
        ArrayStatus::Unsupported(u) => format!("unsupported: {u}"),
        ArrayStatus::Corrupt(c) => format!("corrupt: {c}"),
    }
}

fn roles(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

fn group(a: &Array, index_of: &dyn Fn(&str) -> Option<usize>) -> Group {
    let first = a.first_location().unwrap_or("?").to_string();
    let name = name_part(&a.name, &a.uuid.to_string());
    let id = format!("{first}/md/{name}");
    let layout = layout_name(a);
    let what = if layout.is_empty() {
        a.level.to_string()
    } else {
        format!("{} {layout}", a.level)
    };
    let mut member_notes = Vec::new();
    for s in &a.members {
        if let Some(m) = &s.member {
            if let Some(k) = index_of(&m.location) {
                member_notes.push((
                    k,
                    format!(
                        "md member (role {}) of {what} array {name}: the array is the volume {id}",
                        s.role
                    ),
                ));
            }
        }
    }
    let mut warnings = Vec::new();
    for s in &a.stale {
        if let Some(k) = index_of(&s.location) {
            member_notes.push((
                k,
                format!(
                    "md member of array {name}, left out: {} (events {})",
                    s.reason, s.events
                ),
            ));
        }
        warnings.push(format!(
            "member {} (role {}) left out: {}",
            s.location, s.role, s.reason
        ));
    }
    for s in &a.spares {
        if let Some(k) = index_of(&s.location) {
            member_notes.push((
                k,
                format!("md {} of array {name}: holds nothing to read", s.role),
            ));
        }
    }
    for d in &a.duplicates {
        warnings.push(format!(
            "role {} claimed twice: {} used, {} ignored",
            d.role, d.kept, d.ignored
        ));
    }
    let (source, refused): (Source, Option<Refusal>) = match a.open() {
        Ok(s) => (s, None),
        Err(e) => {
            let unsupported = matches!(a.status, ArrayStatus::Unsupported(_));
            let reason = e.to_string();
            (
                Arc::new(Refused::new(
                    format!("md {name}"),
                    a.size.unwrap_or(0),
                    reason.clone(),
                )),
                Some(Refusal {
                    kind: ARRAY_KIND,
                    unsupported,
                    reason,
                }),
            )
        }
    };
    let size = source.len();
    let label = format!("md {what} array {name} ({})", state(a));
    let report = GroupReport {
        section: "md_arrays",
        heading: format!(
            "md array {name} (uuid {}, {what}{}, {} members, metadata {}, events {}): {}",
            a.uuid,
            if a.chunk > 0 {
                format!(", chunk {}", human_size(a.chunk))
            } else {
                String::new()
            },
            a.raid_disks,
            a.metadata,
            a.events,
            state(a)
        ),
        fields: vec![
            ("name", Value::from(a.name.clone())),
            ("uuid", Value::from(a.uuid.to_string())),
            ("metadata", Value::from(a.metadata.to_string())),
            ("level", Value::from(a.level.to_string())),
            ("layout", Value::from(layout)),
            ("chunk", Value::from(a.chunk)),
            ("size", a.size.map_or(Value::Null, Value::from)),
            ("events", Value::from(a.events)),
            ("state", Value::from(state(a))),
        ],
        members_key: ("members", "member"),
        members: a
            .members
            .iter()
            .map(|s| {
                (
                    format!("role {}", s.role),
                    s.member
                        .as_ref()
                        .map_or_else(|| "missing".to_string(), |m| m.location.clone()),
                )
            })
            .collect(),
        children_key: ("arrays", "array"),
        children: vec![(id.clone(), what)],
        warnings,
    };
    Group {
        key: format!("md {}", a.uuid),
        complete: a.complete(),
        member_notes,
        children: vec![Child {
            id,
            offset: 0,
            size,
            source,
            partition: None,
            label: Some(label),
            refused,
            damage: None,
        }],
        report: Some(report),
        filesystem: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_for_ids() {
        assert_eq!(name_part("myhost:data", "x"), "data");
        assert_eq!(
            name_part("", "3a7f9c1e:00112233:44556677:8899aabb"),
            "3a7f9c1e"
        );
        assert_eq!(name_part("h:a/b", "x"), "a_b");
    }
}
