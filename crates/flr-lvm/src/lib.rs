//! LVM2 for flr, read-only: finds physical volumes (PVs), reads their text
//! metadata, assembles volume groups (VGs), possibly from several disks,
//! and gives each logical volume (LV) whose bytes it can return as a
//! [`flr_io::ReadAt`].
//!
//! * A PV is recognised by its `LABELONE`/`LVM2 001` label in one of its
//!   first four sectors (checksummed). Its metadata area is a circular
//!   buffer; the area header points at the current copy, whose checksum is
//!   checked. Each PV with metadata gives a VG description with a sequence
//!   number; [`assemble`] takes, per VG, the newest description found on
//!   any of its PVs.
//! * Linear and striped segments are read; a RAID1 or mirror LV is read
//!   from its first leg whose PVs are all present. Thin LVs (thin
//!   snapshots included) are read through their pool ([`ThinPool`]): the
//!   pool's metadata LV maps each thin LV's blocks onto the pool's data
//!   LV, and blocks never written read as zeros (reported by
//!   `is_known_zero`). Old-style snapshots (origin and copy-on-write store
//!   are told apart: the origin reads, the snapshot does not), thin LVs
//!   with an external origin, cache, VDO, writecache, integrity and the
//!   other RAID levels are named with [`LvStatus::Unsupported`]: flr never
//!   returns their bytes.
//! * A PV the metadata lists but no scanned source carries is reported
//!   ([`VolumeGroup::missing`]) with its UUID and the device it was last
//!   seen as; LVs that do not touch it still open.
//!
//! # Example
//! ```no_run
//! use std::sync::Arc;
//! let disk: flr_io::Source = Arc::new(flr_io::FileSource::open("pv.img")?);
//! let pv = flr_lvm::PhysicalVolume::read(disk, "disk")?;
//! for vg in flr_lvm::assemble(&[pv]) {
//!     for lv in &vg.lvs {
//!         println!("{}/{}: {} bytes, {:?}", vg.name, lv.name, lv.size, lv.status);
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Errors
//! [`LvmError`]: the layer below failed ([`LvmError::Io`]), a structure is
//! corrupt (named with its byte offset), or the volume is not a PV.
#![deny(missing_docs)]

mod label;
mod layer;
mod text;
mod thin;

pub use thin::{ThinDevice, ThinPool};

pub use layer::{Lvm2Format, FORMAT, LV_KIND};

use std::collections::BTreeMap;
use std::sync::Arc;

use flr_io::{check_range, IoError, ReadAt, Source};

use text::{Section, Value};

/// An error from the LVM layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LvmError {
    /// The layer below failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// No LVM2 label in the first four sectors.
    #[error("not an LVM2 physical volume (no LABELONE label)")]
    NotPv,
    /// A structure is corrupt.
    #[error("{what}: corrupt at byte offset {offset:#x}: {detail}")]
    Corrupt {
        /// Which structure (`LVM label`, `LVM metadata area`, `LVM metadata`).
        what: &'static str,
        /// Byte offset in the PV.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// The LV cannot be read (unsupported type or a missing PV).
    #[error("logical volume {lv}: {reason}")]
    NotReadable {
        /// `vg/lv`.
        lv: String,
        /// Why.
        reason: String,
    },
}

impl LvmError {
    pub(crate) fn corrupt(what: &'static str, offset: u64, detail: impl Into<String>) -> Self {
        LvmError::Corrupt {
            what,
            offset,
            detail: detail.into(),
        }
    }
}

/// Whether `src` carries an LVM2 PV label (checksum included).
pub fn probe(src: &dyn ReadAt) -> bool {
    label::read_label(src).is_ok()
}

/// A physical volume found on some source (a partition, a whole disk, a
/// decrypted LUKS volume).
#[derive(Clone)]
pub struct PhysicalVolume {
    /// The PV UUID, as LVM prints it.
    pub uuid: String,
    /// Where it was found (the engine's volume id, e.g. `p3`).
    pub location: String,
    /// The device size the label records.
    pub device_size: u64,
    /// The metadata on this PV: (seqno, VG id, VG name, parsed VG section).
    meta: Option<Meta>,
    /// A metadata problem on this PV (the VG may still come from another).
    pub warning: Option<String>,
    source: Source,
}

#[derive(Clone)]
struct Meta {
    seqno: u64,
    vg_id: String,
    vg_name: String,
    vg: Section,
}

impl std::fmt::Debug for PhysicalVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhysicalVolume")
            .field("uuid", &self.uuid)
            .field("location", &self.location)
            .field("vg", &self.vg_name())
            .finish_non_exhaustive()
    }
}

impl PhysicalVolume {
    /// Reads the label, PV header and the newest valid metadata copy.
    pub fn read(source: Source, location: &str) -> Result<PhysicalVolume, LvmError> {
        let l = label::read_label(source.as_ref())?;
        let mut best: Option<Meta> = None;
        let mut warnings = Vec::new();
        for &(start, size) in &l.mdas {
            match label::read_metadata(source.as_ref(), start, size) {
                Ok(Some(t)) => match parse_meta(&t) {
                    Ok(m) => {
                        if best.as_ref().is_none_or(|b| m.seqno > b.seqno) {
                            best = Some(m);
                        }
                    }
                    Err(e) => warnings.push(format!("metadata at {start:#x}: {e}")),
                },
                Ok(None) => {}
                Err(e) => warnings.push(e.to_string()),
            }
        }
        Ok(PhysicalVolume {
            uuid: l.uuid,
            location: location.to_string(),
            device_size: l.device_size,
            meta: best,
            warning: (!warnings.is_empty()).then(|| warnings.join("; ")),
            source,
        })
    }

    /// The name of the VG this PV's own metadata describes, if it has any.
    pub fn vg_name(&self) -> Option<&str> {
        self.meta.as_ref().map(|m| m.vg_name.as_str())
    }
}

fn parse_meta(t: &[u8]) -> Result<Meta, String> {
    let root = text::parse(t)?;
    let (name, vg) = root.sections().next().ok_or("no volume group section")?;
    Ok(Meta {
        seqno: vg.u64("seqno").ok_or("no seqno")?,
        vg_id: vg.str("id").ok_or("no VG id")?.to_string(),
        vg_name: name.to_string(),
        vg: vg.clone(),
    })
}

/// A PV as the VG metadata lists it.
#[derive(Debug, Clone)]
pub struct PvSlot {
    /// Its name in the metadata (`pv0`).
    pub name: String,
    /// Its UUID.
    pub uuid: String,
    /// The device it was last seen as (`/dev/sdb2`), from the metadata.
    pub device_hint: Option<String>,
    /// Where flr found it, or None when it is missing.
    pub location: Option<String>,
    pe_start: u64,
    pe_count: u64,
    source: Option<Src>,
}

/// A source in a struct that derives `Debug`.
#[derive(Clone)]
struct Src(Source);

impl std::fmt::Debug for Src {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.layer())
    }
}

/// A missing PV, for the report.
#[derive(Debug, Clone)]
pub struct MissingPv {
    /// Its UUID.
    pub uuid: String,
    /// Where it was expected (`/dev/sdc1`, from the metadata).
    pub expected_at: String,
}

/// Whether an LV can be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LvStatus {
    /// Its bytes can be read.
    Readable,
    /// A layout flr does not read (thin, snapshot, cache…), with the reason.
    Unsupported(String),
    /// It touches a missing PV, named in the reason.
    MissingPv(String),
    /// Its metadata is inconsistent.
    Corrupt(String),
}

/// A logical volume.
#[derive(Debug, Clone)]
pub struct LogicalVolume {
    /// Its name.
    pub name: String,
    /// Its LVM id.
    pub id: String,
    /// Size in bytes.
    pub size: u64,
    /// `linear`, `striped (2 × 64 KiB)`, `raid1`, `thin`…
    pub layout: String,
    /// Whether LVM shows it (sub-LVs of RAID, thin pools… are hidden).
    pub visible: bool,
    /// Whether it can be read.
    pub status: LvStatus,
    segments: Vec<Seg>,
}

#[derive(Debug, Clone)]
struct Seg {
    start_extent: u64,
    extent_count: u64,
    kind: SegKind,
}

#[derive(Debug, Clone)]
enum SegKind {
    /// Linear is striped with one stripe.
    Striped {
        stripe_bytes: u64,
        areas: Vec<Area>,
    },
    /// RAID1 or mirror: identical legs.
    Mirror {
        legs: Vec<Area>,
    },
    /// A thin LV: device `device_id` of thin pool LV `pool`.
    Thin {
        pool: String,
        device_id: u64,
    },
    /// A thin pool: its metadata and data sub-LVs.
    ThinPool {
        metadata: String,
        data: String,
    },
    Other(String),
}

#[derive(Debug, Clone)]
enum Area {
    Pv { pv: String, start: u64 },
    Lv { lv: String, start: u64 },
}

/// An assembled volume group.
#[derive(Debug, Clone)]
pub struct VolumeGroup {
    /// Its name.
    pub name: String,
    /// Its id.
    pub id: String,
    /// The sequence number of the metadata used.
    pub seqno: u64,
    /// Extent size in bytes.
    pub extent_size: u64,
    /// Its PVs, in metadata order.
    pub pvs: Vec<PvSlot>,
    /// Its LVs, in metadata order.
    pub lvs: Vec<LogicalVolume>,
    /// Non-fatal findings (older metadata on some PV, PV metadata errors).
    pub warnings: Vec<String>,
}

/// Groups PVs into VGs, each described by the newest metadata (highest
/// sequence number) found on any of its PVs. PVs without usable metadata
/// join the VG that lists their UUID.
pub fn assemble(pvs: &[PhysicalVolume]) -> Vec<VolumeGroup> {
    let mut newest: BTreeMap<String, &Meta> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for pv in pvs {
        if let Some(m) = &pv.meta {
            if !order.contains(&m.vg_id) {
                order.push(m.vg_id.clone());
            }
            let e = newest.entry(m.vg_id.clone()).or_insert(m);
            if m.seqno > e.seqno {
                *e = m;
            }
        }
    }
    order
        .iter()
        .filter_map(|id| newest.get(id).map(|m| build_vg(m, pvs)))
        .collect()
}

fn build_vg(m: &Meta, found: &[PhysicalVolume]) -> VolumeGroup {
    let vg = &m.vg;
    let sectors = |s: &Section, k: &str| s.u64(k).and_then(|v| v.checked_mul(512));
    let extent_size = sectors(vg, "extent_size").unwrap_or(0);
    let mut warnings = Vec::new();
    for pv in found {
        if let Some(w) = &pv.warning {
            warnings.push(format!("PV {} on {}: {w}", pv.uuid, pv.location));
        }
        if let Some(pm) = &pv.meta {
            if pm.vg_id == m.vg_id && pm.seqno < m.seqno {
                warnings.push(format!(
                    "PV {} on {} holds older metadata (seqno {} < {}); the newer copy is used",
                    pv.uuid, pv.location, pm.seqno, m.seqno
                ));
            }
        }
    }
    let mut pvs = Vec::new();
    if let Some(list) = vg.section("physical_volumes") {
        for (name, s) in list.sections() {
            let uuid = s.str("id").unwrap_or("").to_string();
            let hit = found.iter().find(|p| p.uuid == uuid);
            let flagged_missing = s.flags("flags").contains(&"MISSING");
            pvs.push(PvSlot {
                name: name.to_string(),
                uuid,
                device_hint: s.str("device").map(str::to_string),
                location: hit.filter(|_| !flagged_missing).map(|p| p.location.clone()),
                pe_start: sectors(s, "pe_start").unwrap_or(0),
                pe_count: s.u64("pe_count").unwrap_or(0),
                source: hit
                    .filter(|_| !flagged_missing)
                    .map(|p| Src(p.source.clone())),
            });
        }
    }
    let mut lvs: Vec<LogicalVolume> = Vec::new();
    let mut cow_of: BTreeMap<String, String> = BTreeMap::new();
    if let Some(list) = vg.section("logical_volumes") {
        for (name, s) in list.sections() {
            let (lv, cow) = parse_lv(name, s, extent_size);
            if let Some((cow, origin)) = cow {
                cow_of.insert(cow, origin);
            }
            lvs.push(lv);
        }
    }
    let mut out = VolumeGroup {
        name: m.vg_name.clone(),
        id: m.vg_id.clone(),
        seqno: m.seqno,
        extent_size,
        pvs,
        lvs,
        warnings,
    };
    // Work out each LV's status now that every LV is known.
    let statuses: Vec<LvStatus> = out
        .lvs
        .iter()
        .map(|lv| {
            if let Some(origin) = cow_of.get(&lv.name) {
                return LvStatus::Unsupported(format!(
                    "snapshot of {origin} (copy-on-write store): snapshots are not supported yet"
                ));
            }
            match out.lv_source(lv, 0) {
                Ok(_) => LvStatus::Readable,
                Err(e) => e,
            }
        })
        .collect();
    for (lv, st) in out.lvs.iter_mut().zip(statuses) {
        if lv.status == LvStatus::Readable {
            lv.status = st;
        }
    }
    out
}

fn areas(list: &[Value], lv: bool) -> Option<Vec<Area>> {
    let mut out = Vec::new();
    let mut it = list.iter();
    while let Some(v) = it.next() {
        let Value::Str(name) = v else { return None };
        let start = match it.next()? {
            Value::Int(i) => u64::try_from(*i).ok()?,
            _ => return None,
        };
        out.push(if lv {
            Area::Lv {
                lv: name.clone(),
                start,
            }
        } else {
            Area::Pv {
                pv: name.clone(),
                start,
            }
        });
    }
    Some(out)
}

/// Parses one LV; also returns (cow store, origin) when it is a snapshot.
fn parse_lv(
    name: &str,
    s: &Section,
    extent_size: u64,
) -> (LogicalVolume, Option<(String, String)>) {
    let mut segments = Vec::new();
    let mut corrupt = None;
    let mut cow = None;
    let mut types: Vec<String> = Vec::new();
    for (_, seg) in s.sections().filter(|(k, _)| k.starts_with("segment")) {
        let ty = seg.str("type").unwrap_or("?").to_string();
        let (Some(start_extent), Some(extent_count)) =
            (seg.u64("start_extent"), seg.u64("extent_count"))
        else {
            corrupt = Some("segment without start_extent/extent_count".to_string());
            continue;
        };
        let kind = match ty.as_str() {
            "striped" => {
                let stripes = seg.u64("stripe_count").unwrap_or(1);
                let stripe_bytes = seg.u64("stripe_size").unwrap_or(0).saturating_mul(512);
                match seg.list("stripes").and_then(|l| areas(l, false)) {
                    Some(a)
                        if a.len() as u64 == stripes
                            && stripes >= 1
                            && (stripes == 1
                                || (stripe_bytes >= 512
                                    && extent_size.is_multiple_of(stripe_bytes))) =>
                    {
                        if stripes > 1 && extent_count % stripes != 0 {
                            corrupt = Some(format!(
                                "{extent_count} extents do not divide into {stripes} stripes"
                            ));
                        }
                        SegKind::Striped {
                            stripe_bytes,
                            areas: a,
                        }
                    }
                    _ => {
                        corrupt = Some("striped segment with a bad stripe list".into());
                        SegKind::Other(ty.clone())
                    }
                }
            }
            "mirror" => match seg.list("mirrors").and_then(|l| areas(l, true)) {
                Some(legs) if !legs.is_empty() => SegKind::Mirror { legs },
                _ => SegKind::Other(ty.clone()),
            },
            "raid1" => {
                // raids = [rmeta_0, rimage_0, rmeta_1, rimage_1, …]: the images hold the data.
                let legs: Vec<Area> = seg
                    .list("raids")
                    .unwrap_or(&[])
                    .iter()
                    .skip(1)
                    .step_by(2)
                    .filter_map(|v| match v {
                        Value::Str(n) => Some(Area::Lv {
                            lv: n.clone(),
                            start: start_extent,
                        }),
                        _ => None,
                    })
                    .collect();
                if legs.is_empty() {
                    SegKind::Other(ty.clone())
                } else {
                    SegKind::Mirror { legs }
                }
            }
            "thin" => match (seg.str("thin_pool"), seg.u64("device_id")) {
                (Some(pool), Some(device_id)) if seg.get("external_origin").is_none() => {
                    SegKind::Thin {
                        pool: pool.to_string(),
                        device_id,
                    }
                }
                (Some(_), Some(_)) => SegKind::Other("thin+external_origin".into()),
                _ => {
                    corrupt = Some("thin segment without thin_pool or device_id".into());
                    SegKind::Other(ty.clone())
                }
            },
            "thin-pool" => match (seg.str("metadata"), seg.str("pool")) {
                (Some(m), Some(d)) => SegKind::ThinPool {
                    metadata: m.to_string(),
                    data: d.to_string(),
                },
                _ => {
                    corrupt = Some("thin-pool segment without metadata or pool LV".into());
                    SegKind::Other(ty.clone())
                }
            },
            "snapshot" => {
                if let (Some(c), Some(o)) = (seg.str("cow_store"), seg.str("origin")) {
                    cow = Some((c.to_string(), o.to_string()));
                }
                SegKind::Other(ty.clone())
            }
            _ => SegKind::Other(ty.clone()),
        };
        if !types.contains(&ty) {
            types.push(ty);
        }
        segments.push(Seg {
            start_extent,
            extent_count,
            kind,
        });
    }
    segments.sort_by_key(|g| g.start_extent);
    let mut next = 0u64;
    for g in &segments {
        if g.start_extent != next {
            corrupt = Some(format!("segments do not cover extent {next}"));
        }
        next = g.start_extent.saturating_add(g.extent_count);
    }
    let size = next.checked_mul(extent_size).unwrap_or(0);
    let layout = match types.as_slice() {
        [t] if t == "striped" => match segments.iter().map(|g| &g.kind).find_map(|k| match k {
            SegKind::Striped {
                areas,
                stripe_bytes,
            } if areas.len() > 1 => Some((areas.len(), *stripe_bytes)),
            _ => None,
        }) {
            Some((n, b)) => format!("striped ({n} × {} KiB)", b / 1024),
            None => "linear".to_string(),
        },
        [] => "empty".into(),
        t => t.join("+"),
    };
    let status = match (
        &corrupt,
        segments.iter().find_map(|g| match &g.kind {
            SegKind::Other(t) => Some(t.clone()),
            _ => None,
        }),
    ) {
        (Some(c), _) => LvStatus::Corrupt(c.clone()),
        (None, Some(t)) => LvStatus::Unsupported(unsupported_reason(&t)),
        (None, None) => LvStatus::Readable,
    };
    let flags = s.flags("status");
    (
        LogicalVolume {
            name: name.to_string(),
            id: s.str("id").unwrap_or("").to_string(),
            size,
            layout,
            visible: flags.contains(&"VISIBLE"),
            status,
            segments,
        },
        cow,
    )
}

fn unsupported_reason(t: &str) -> String {
    let what = match t {
        "thin-pool" => "a thin pool (its thin volumes are read; the pool itself is not a volume)",
        "thin" => "a thin volume",
        "thin+external_origin" => "a thin volume with an external origin",
        "snapshot" => "a snapshot",
        "cache" | "cache-pool" => "a cached volume",
        "writecache" => "a write-cached volume",
        "vdo" | "vdo-pool" => "a VDO volume",
        "integrity" => "a dm-integrity volume",
        "raid0" | "raid0_meta" | "raid4" | "raid5" | "raid5_la" | "raid5_ls" | "raid5_ra"
        | "raid5_rs" | "raid5_n" | "raid6" | "raid6_zr" | "raid6_nr" | "raid6_nc" | "raid10" => {
            "a RAID volume of this level"
        }
        _ => "a segment type flr does not know",
    };
    format!("{what} (segment type {t:?}) is not supported yet")
}

/// Sub-LV nesting limit (RAID images of RAID images do not exist; 4 is plenty).
const MAX_NEST: usize = 4;

impl VolumeGroup {
    /// The PVs the metadata lists that no scanned source carries.
    pub fn missing(&self) -> Vec<MissingPv> {
        self.pvs
            .iter()
            .filter(|p| p.source.is_none())
            .map(|p| MissingPv {
                uuid: p.uuid.clone(),
                expected_at: p
                    .device_hint
                    .clone()
                    .unwrap_or_else(|| "an unknown device".into()),
            })
            .collect()
    }

    /// The location of the first PV present, in metadata order (the
    /// prefix of the LV ids the engine gives).
    pub fn first_location(&self) -> Option<&str> {
        self.pvs.iter().find_map(|p| p.location.as_deref())
    }

    /// Opens LV `name` for reading.
    pub fn open_lv(&self, name: &str) -> Result<Source, LvmError> {
        let full = format!("{}/{name}", self.name);
        let lv = self
            .lvs
            .iter()
            .find(|l| l.name == name)
            .ok_or_else(|| LvmError::NotReadable {
                lv: full.clone(),
                reason: "no such logical volume".into(),
            })?;
        match &lv.status {
            LvStatus::Readable => {}
            LvStatus::Unsupported(r) | LvStatus::MissingPv(r) | LvStatus::Corrupt(r) => {
                return Err(LvmError::NotReadable {
                    lv: full,
                    reason: r.clone(),
                })
            }
        }
        self.lv_source(lv, 0).map_err(|st| LvmError::NotReadable {
            lv: full,
            reason: format!("{st:?}"),
        })
    }

    fn lv_source(&self, lv: &LogicalVolume, depth: usize) -> Result<Source, LvStatus> {
        if depth > MAX_NEST {
            return Err(LvStatus::Corrupt("sub-volumes nested too deep".into()));
        }
        if lv.status != LvStatus::Readable {
            return Err(lv.status.clone());
        }
        let ext = self.extent_size;
        if ext == 0 {
            return Err(LvStatus::Corrupt("extent size 0".into()));
        }
        let mut pieces = Vec::new();
        for g in &lv.segments {
            let start = g
                .start_extent
                .checked_mul(ext)
                .ok_or_else(|| LvStatus::Corrupt("offset overflow".into()))?;
            let len = g
                .extent_count
                .checked_mul(ext)
                .ok_or_else(|| LvStatus::Corrupt("size overflow".into()))?;
            let piece = match &g.kind {
                SegKind::Striped {
                    stripe_bytes,
                    areas,
                } => {
                    let n = areas.len() as u64;
                    let per = g.extent_count / n;
                    let mut legs = Vec::new();
                    for a in areas {
                        legs.push(self.area(a, per, depth)?);
                    }
                    Piece {
                        start,
                        len,
                        legs,
                        chunk: if n == 1 { 0 } else { *stripe_bytes },
                    }
                }
                SegKind::Mirror { legs } => {
                    let mut last = None;
                    let mut chosen = None;
                    for a in legs {
                        match self.area(a, g.extent_count, depth) {
                            Ok(l) => {
                                chosen = Some(l);
                                break;
                            }
                            Err(e) => last = Some(e),
                        }
                    }
                    let leg = chosen
                        .ok_or_else(|| last.unwrap_or(LvStatus::Corrupt("no legs".into())))?;
                    Piece {
                        start,
                        len,
                        legs: vec![leg],
                        chunk: 0,
                    }
                }
                SegKind::Thin { pool, device_id } => {
                    if g.start_extent != 0 {
                        return Err(LvStatus::Corrupt(
                            "a thin segment that does not start the LV".into(),
                        ));
                    }
                    let dev = self.thin_device(lv, pool, *device_id, depth)?;
                    Piece {
                        start,
                        len,
                        legs: vec![(dev, start)],
                        chunk: 0,
                    }
                }
                SegKind::ThinPool { .. } => {
                    return Err(LvStatus::Unsupported(unsupported_reason("thin-pool")))
                }
                SegKind::Other(t) => return Err(LvStatus::Unsupported(unsupported_reason(t))),
            };
            pieces.push(piece);
        }
        Ok(Arc::new(LvSource {
            layer: format!("lv {}/{}", self.name, lv.name),
            size: pieces.last().map_or(0, |p| p.start + p.len),
            pieces,
            moved: std::sync::OnceLock::new(),
        }))
    }

    /// Thin device `device_id` of pool LV `pool`, as big as `lv`.
    fn thin_device(
        &self,
        lv: &LogicalVolume,
        pool: &str,
        device_id: u64,
        depth: usize,
    ) -> Result<Source, LvStatus> {
        let corrupt = |why: String| LvStatus::Corrupt(why);
        let p = self
            .lvs
            .iter()
            .find(|l| l.name == pool)
            .ok_or_else(|| corrupt(format!("names unknown thin pool {pool}")))?;
        let Some(SegKind::ThinPool { metadata, data }) = p.segments.first().map(|g| &g.kind) else {
            return Err(corrupt(format!("{pool} is not a thin pool")));
        };
        let sub = |name: &str| -> Result<Source, LvStatus> {
            let l = self
                .lvs
                .iter()
                .find(|l| l.name == name)
                .ok_or_else(|| corrupt(format!("thin pool {pool} names unknown LV {name}")))?;
            self.lv_source(l, depth + 1)
        };
        let (meta, data) = (sub(metadata)?, sub(data)?);
        let layer = format!("thin pool {}/{pool}", self.name);
        let tp = Arc::new(ThinPool::open(meta, data, &layer).map_err(|e| match e {
            LvmError::NotReadable { reason, .. } => LvStatus::Unsupported(reason),
            e => corrupt(e.to_string()),
        })?);
        tp.open_device(
            device_id,
            lv.size,
            &format!("thin {}/{}", self.name, lv.name),
        )
        .map_err(|e| corrupt(e.to_string()))
    }

    /// The source and byte offset of `extents` extents of an area.
    fn area(&self, a: &Area, extents: u64, depth: usize) -> Result<(Source, u64), LvStatus> {
        let ext = self.extent_size;
        let bytes = extents
            .checked_mul(ext)
            .ok_or_else(|| LvStatus::Corrupt("size overflow".into()))?;
        match a {
            Area::Pv { pv, start } => {
                let slot =
                    self.pvs.iter().find(|p| &p.name == pv).ok_or_else(|| {
                        LvStatus::Corrupt(format!("segment names unknown PV {pv}"))
                    })?;
                let Some(Src(src)) = &slot.source else {
                    return Err(LvStatus::MissingPv(format!(
                        "PV {} (expected at {}) is missing",
                        slot.uuid,
                        slot.device_hint.as_deref().unwrap_or("an unknown device")
                    )));
                };
                if start.checked_add(extents).is_none_or(|e| e > slot.pe_count) {
                    return Err(LvStatus::Corrupt(format!(
                        "extents {start}+{extents} past the end of {pv}"
                    )));
                }
                let off = start
                    .checked_mul(ext)
                    .and_then(|o| o.checked_add(slot.pe_start))
                    .filter(|o| o.checked_add(bytes).is_some_and(|e| e <= src.len()))
                    .ok_or_else(|| {
                        LvStatus::Corrupt(format!(
                            "extents {start}+{extents} of {pv} lie past the end of its device ({} bytes, truncated?)",
                            src.len()
                        ))
                    })?;
                Ok((src.clone(), off))
            }
            Area::Lv { lv, start } => {
                let sub =
                    self.lvs.iter().find(|l| &l.name == lv).ok_or_else(|| {
                        LvStatus::Corrupt(format!("segment names unknown LV {lv}"))
                    })?;
                let src = self.lv_source(sub, depth + 1)?;
                let off = start
                    .checked_mul(ext)
                    .filter(|o| o.checked_add(bytes).is_some_and(|e| e <= src.len()))
                    .ok_or_else(|| LvStatus::Corrupt(format!("extents past the end of {lv}")))?;
                Ok((src, off))
            }
        }
    }
}

/// One segment of an LV: `legs` are (source, byte offset) of each stripe;
/// `chunk` the stripe size (0 for one leg).
struct Piece {
    start: u64,
    len: u64,
    legs: Vec<(Source, u64)>,
    chunk: u64,
}

/// An LV's bytes, read through its segments.
struct LvSource {
    layer: String,
    size: u64,
    pieces: Vec<Piece>,
    /// Set by [`ReadAt::set_base`]: for each piece, whether the older LV
    /// had a different piece there (moved, resized or restriped), whose
    /// bytes then cannot be compared place for place.
    moved: std::sync::OnceLock<Vec<bool>>,
}

impl Piece {
    /// Whether `other` maps the same LV bytes to the same places.
    fn same_place(&self, other: &Piece) -> bool {
        self.start == other.start
            && self.len == other.len
            && self.chunk == other.chunk
            && self.legs.len() == other.legs.len()
            && self
                .legs
                .iter()
                .zip(&other.legs)
                .all(|((a, x), (b, y))| x == y && a.layer() == b.layer())
    }
}

impl LvSource {
    /// Where the LV's byte `pos` lies: the piece's index, the leg's source,
    /// the offset in it, and how many bytes from there stay on that leg (to
    /// the end of the stripe chunk or of the segment). `None` past every
    /// segment.
    fn locate(&self, pos: u64) -> Option<(usize, &Source, u64, u64)> {
        let i = self.pieces.partition_point(|p| p.start + p.len <= pos);
        let p = self.pieces.get(i)?;
        let rel = pos - p.start;
        let room = p.start + p.len - pos;
        let (leg, at, take) = match rel.checked_div(p.chunk) {
            None => (0, rel, room),
            Some(c) => {
                let n = p.legs.len() as u64;
                let within = rel % p.chunk;
                (
                    (c % n) as usize,
                    (c / n) * p.chunk + within,
                    (p.chunk - within).min(room),
                )
            }
        };
        let (src, base) = &p.legs[leg];
        Some((i, src, base + at, take))
    }
}

impl ReadAt for LvSource {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        check_range(&self.layer, offset, buf.len(), self.size)?;
        let mut pos = offset;
        let mut done = 0usize;
        while done < buf.len() {
            let (_, src, at, take) = self.locate(pos).ok_or_else(|| {
                IoError::corrupt(self.layer.clone(), pos, "no segment maps this offset")
            })?;
            let take = take.min((buf.len() - done) as u64) as usize;
            src.read_exact_at(at, &mut buf[done..done + take])?;
            done += take;
            pos += take as u64;
        }
        Ok(())
    }
    fn len(&self) -> u64 {
        self.size
    }
    fn layer(&self) -> &str {
        &self.layer
    }
    fn changed(&self, offset: u64, len: u64) -> flr_io::Change {
        use flr_io::Change;
        // The same walk as a read: segment, then stripe leg.
        let Some(end) = offset.checked_add(len).filter(|&e| e <= self.size) else {
            return Change::Unknown;
        };
        let mut pos = offset;
        let mut answer = Change::Unchanged;
        let moved = self.moved.get();
        while pos < end {
            let Some((piece, src, at, take)) = self.locate(pos) else {
                return Change::Unknown;
            };
            if moved.is_some_and(|m| m.get(piece).copied().unwrap_or(true)) {
                return Change::Unknown;
            }
            let take = take.min(end - pos);
            answer = answer.and(src.changed(at, take));
            if answer == Change::Changed {
                break;
            }
            pos += take;
        }
        answer
    }
    /// The older LV's pieces: those in the same place pass the base on to
    /// their legs (a thin LV's one leg is its thin device); the others
    /// answer `Unknown` from now on.
    fn set_base(&self, base: &dyn ReadAt) -> bool {
        let Some(old) = base.as_any().and_then(|a| a.downcast_ref::<LvSource>()) else {
            return false;
        };
        let moved: Vec<bool> = self
            .pieces
            .iter()
            .map(|p| {
                let i = old.pieces.partition_point(|q| q.start + q.len <= p.start);
                match old.pieces.get(i).filter(|q| p.same_place(q)) {
                    Some(q) => {
                        for ((leg, _), (old_leg, _)) in p.legs.iter().zip(&q.legs) {
                            leg.set_base(old_leg.as_ref());
                        }
                        false
                    }
                    None => true,
                }
            })
            .collect();
        self.moved.set(moved).is_ok()
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn is_known_zero(&self, offset: u64, len: u64) -> bool {
        // Only within one unstriped piece (thin LVs are one such piece).
        let Some(end) = offset.checked_add(len).filter(|&e| e <= self.size) else {
            return false;
        };
        let i = self.pieces.partition_point(|p| p.start + p.len <= offset);
        match self.pieces.get(i) {
            Some(p) if p.chunk == 0 && end <= p.start + p.len => {
                let (src, base) = &p.legs[0];
                src.is_known_zero(base + (offset - p.start), len)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flr_io::MemSource;

    /// Metadata text in LVM's own layout (as `vgcfgbackup` writes it) for the
    /// segment types device-mapper-less lvcreate cannot make here.
    const META: &str = r#"
vg1 {
    id = "VGID"
    seqno = 5
    extent_size = 8
    physical_volumes {
        pv0 { id = "PVA" device = "/dev/sda2" pe_start = 8 pe_count = 16 }
        pv1 { id = "PVB" device = "/dev/sdb" pe_start = 8 pe_count = 16 }
    }
    logical_volumes {
        m { id = "M" status = ["READ", "WRITE", "VISIBLE"]
            segment1 { start_extent = 0 extent_count = 2 type = "raid1" device_count = 2
                       raids = ["m_rmeta_0", "m_rimage_0", "m_rmeta_1", "m_rimage_1"] } }
        m_rmeta_0 { id = "a" status = ["READ"] segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 0] } }
        m_rimage_0 { id = "b" status = ["READ"] segment1 { start_extent = 0 extent_count = 2 type = "striped" stripe_count = 1 stripes = ["pv0", 1] } }
        m_rmeta_1 { id = "c" status = ["READ"] segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv1", 0] } }
        m_rimage_1 { id = "d" status = ["READ"] segment1 { start_extent = 0 extent_count = 2 type = "striped" stripe_count = 1 stripes = ["pv1", 1] } }
        origin { id = "o" status = ["READ", "WRITE", "VISIBLE"]
            segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 4] } }
        snap { id = "s" status = ["READ", "VISIBLE"]
            segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 5] } }
        snapshot0 { id = "s0" status = ["READ"]
            segment1 { start_extent = 0 extent_count = 1 type = "snapshot" chunk_size = 8 origin = "origin" cow_store = "snap" } }
        pool { id = "p" status = ["READ", "WRITE", "VISIBLE"]
            segment1 { start_extent = 0 extent_count = 1 type = "thin-pool" metadata = "pool_tmeta" pool = "pool_tdata" } }
        thin1 { id = "t" status = ["READ", "WRITE", "VISIBLE"]
            segment1 { start_extent = 0 extent_count = 1 type = "thin" thin_pool = "pool" device_id = 1 } }
    }
}
"#;

    fn pv(uuid: &str, fill: u8) -> PhysicalVolume {
        let mut data = vec![0u8; 512 * 8 + 16 * 4096];
        for (i, b) in data.iter_mut().enumerate().skip(4096) {
            *b = fill.wrapping_add((i / 4096) as u8);
        }
        PhysicalVolume {
            uuid: uuid.into(),
            location: format!("at-{uuid}"),
            device_size: 0,
            meta: Some(parse_meta(META.as_bytes()).unwrap()),
            warning: None,
            source: Arc::new(MemSource::new(data)),
        }
    }

    #[test]
    fn raid1_reads_a_healthy_leg_and_the_rest_is_named() {
        let vgs = assemble(&[pv("PVA", 0x10), pv("PVB", 0x80)]);
        let vg = &vgs[0];
        let st = |n: &str| vg.lvs.iter().find(|l| l.name == n).unwrap().status.clone();
        assert_eq!(st("m"), LvStatus::Readable);
        assert_eq!(st("origin"), LvStatus::Readable);
        assert!(matches!(st("snap"), LvStatus::Unsupported(r) if r.contains("snapshot of origin")));
        assert!(matches!(st("pool"), LvStatus::Unsupported(r) if r.contains("thin pool")));
        assert!(
            matches!(st("thin1"), LvStatus::Corrupt(r) if r.contains("names unknown LV pool_tmeta")),
            "{:?}",
            st("thin1")
        );
        // Leg 0 (pv0 extents 1..3) is read.
        let m = vg.open_lv("m").unwrap();
        let mut b = [0u8; 1];
        m.read_exact_at(4096, &mut b).unwrap();
        assert_eq!(b[0], 0x10 + 1 + 2);
        // Without pv0, leg 1 on pv1.
        let vgs = assemble(&[pv("PVB", 0x80)]);
        let m = vgs[0].open_lv("m").unwrap();
        m.read_exact_at(4096, &mut b).unwrap();
        assert_eq!(b[0], 0x80 + 1 + 2);
        assert!(
            matches!(&vgs[0].lvs.iter().find(|l| l.name == "origin").unwrap().status, LvStatus::MissingPv(r) if r.contains("PVA") && r.contains("/dev/sda2"))
        );
    }

    #[test]
    fn an_lv_compared_with_its_older_self_distrusts_moved_segments() {
        use flr_io::{Change, Compared, RangeSet};
        // pv0's bytes are unchanged but for its extent 6 (pe_start is 8
        // sectors, extents 4 KiB).
        let vg_of = |meta: &str| {
            let mut p = pv("PVA", 0);
            p.meta = Some(parse_meta(meta.as_bytes()).unwrap());
            let changes = RangeSet::from_extents([(4096 + 6 * 4096, 4096)]);
            p.source = Arc::new(Compared::new(p.source.clone(), changes));
            assemble(&[p, pv("PVB", 0)]).remove(0)
        };
        let old = vg_of(META);
        let same = vg_of(META);
        let moved = vg_of(&META.replace(r#"stripes = ["pv0", 4]"#, r#"stripes = ["pv0", 6]"#));
        let o = old.open_lv("origin").unwrap();
        let (s, m) = (
            same.open_lv("origin").unwrap(),
            moved.open_lv("origin").unwrap(),
        );
        // Before a base is set, the PV's answer for the current place.
        assert_eq!(m.changed(0, 4096), Change::Changed);
        assert!(s.set_base(o.as_ref()) && m.set_base(o.as_ref()));
        assert_eq!(s.changed(0, 4096), Change::Unchanged);
        assert_eq!(m.changed(0, 4096), Change::Unknown, "the segment moved");
        // Not an LV: ignored.
        let plain: Source = Arc::new(MemSource::new(vec![0; 4096]));
        assert!(!same.open_lv("m").unwrap().set_base(plain.as_ref()));
    }

    #[test]
    fn the_newest_metadata_wins() {
        let mut old = pv("PVA", 0);
        old.meta.as_mut().unwrap().seqno = 4;
        old.meta
            .as_mut()
            .unwrap()
            .vg
            .0
            .retain(|(k, _)| k != "logical_volumes");
        let vgs = assemble(&[old, pv("PVB", 0)]);
        assert_eq!(vgs[0].seqno, 5);
        assert!(!vgs[0].lvs.is_empty());
        assert!(vgs[0].warnings.iter().any(|w| w.contains("older metadata")));
    }
}
