//! LVM2 on top of the scanned volumes: every volume whose content is an
//! LVM2 physical volume (a partition, a whole disk, a decrypted LUKS
//! volume) is read as a PV; the PVs of all images opened together are
//! assembled into volume groups; each visible logical volume becomes one
//! more volume, after the partitions of the image that holds its VG's first
//! PV, with the id `PV-ID/VG/LV` (e.g. `p3/rootvg/rootlv`), where PV-ID is
//! the volume id of the first PV of the VG (in the VG's metadata order)
//! that is present. VG and LV names cannot contain `/` or `:`, so the id is
//! unambiguous in `ID:/path`.

use std::sync::Arc;

use flr_io::{IoError, ReadAt};
use serde::Serialize;

use crate::{
    content_info, detect, read_head, ContentInfo, ContentKind, Image, Scan, Source, Volume,
};

/// A volume group as `probe` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct VgReport {
    /// VG name.
    pub name: String,
    /// VG id.
    pub id: String,
    /// Metadata sequence number used.
    pub seqno: u64,
    /// Extent size in bytes.
    pub extent_size: u64,
    /// PVs: (UUID, where found or `missing (expected at …)`).
    pub pvs: Vec<(String, String)>,
    /// LVs: (volume id, layout, status).
    pub lvs: Vec<(String, String, String)>,
    /// Non-fatal findings.
    pub warnings: Vec<String>,
}

/// A volume that refuses every read, for LVs whose bytes flr cannot give.
struct Refused {
    layer: String,
    size: u64,
    reason: String,
}

impl ReadAt for Refused {
    fn read_exact_at(&self, offset: u64, _buf: &mut [u8]) -> Result<(), IoError> {
        Err(IoError::unsupported(
            self.layer.clone(),
            offset,
            &self.reason,
        ))
    }
    fn len(&self) -> u64 {
        self.size
    }
    fn layer(&self) -> &str {
        &self.layer
    }
}

/// Finds PVs in `images`, assembles their VGs and appends the LVs as volumes.
pub(crate) fn attach(images: &mut [Image], scan: Scan) {
    let mut pvs = Vec::new();
    // (image index, volume index) of each PV read.
    let mut at = Vec::new();
    for (ii, img) in images.iter_mut().enumerate() {
        for (vi, v) in img.volumes.iter_mut().enumerate() {
            if v.content.kind != ContentKind::Lvm2 {
                continue;
            }
            match flr_lvm::PhysicalVolume::read(v.source.clone(), &v.id) {
                Ok(pv) => {
                    pvs.push(pv);
                    at.push((ii, vi));
                }
                Err(e) => {
                    v.content.verdict = "error";
                    v.content.detail = format!("LVM2 label found, but the PV cannot be read: {e}");
                }
            }
        }
    }
    if pvs.is_empty() {
        return;
    }
    let vgs = flr_lvm::assemble(&pvs);
    for (k, pv) in pvs.iter().enumerate() {
        let (ii, vi) = at[k];
        let vg = vgs.iter().find(|g| g.pvs.iter().any(|p| p.uuid == pv.uuid));
        let v = &mut images[ii].volumes[vi].content;
        v.verdict = "container";
        v.detail = match vg {
            Some(g) => format!(
                "LVM2 physical volume {} of volume group {}: its logical volumes are the volumes {}/{}/…",
                pv.uuid,
                g.name,
                g.first_location().unwrap_or("?"),
                g.name
            ),
            None => format!(
                "LVM2 physical volume {} with no volume group metadata found on any scanned disk{}",
                pv.uuid,
                pv.warning.as_deref().map(|w| format!(" ({w})")).unwrap_or_default()
            ),
        };
    }
    for g in &vgs {
        let Some(first) = g.first_location() else {
            continue;
        };
        // The image holding the first present PV.
        let Some(k) = pvs
            .iter()
            .position(|p| p.location == first && g.pvs.iter().any(|s| s.uuid == p.uuid))
        else {
            continue;
        };
        let ii = at[k].0;
        let missing = g.missing();
        let mut report = VgReport {
            name: g.name.clone(),
            id: g.id.clone(),
            seqno: g.seqno,
            extent_size: g.extent_size,
            pvs: g
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
            lvs: Vec::new(),
            warnings: g.warnings.clone(),
        };
        for m in &missing {
            report.warnings.push(format!(
                "PV {} (expected at {}) is missing",
                m.uuid, m.expected_at
            ));
        }
        for lv in g.lvs.iter().filter(|l| l.visible) {
            let id = format!("{first}/{}/{}", g.name, lv.name);
            let (content, source) = match g.open_lv(&lv.name) {
                Ok(src) => {
                    let mut c = match read_head(src.as_ref()) {
                        Ok(head) => content_info(detect(&head, src.as_ref()), &src, scan),
                        Err(e) => ContentInfo {
                            kind: ContentKind::LvmLv,
                            fs: None,
                            luks: None,
                            encryption: None,
                            verdict: "error",
                            detail: format!("cannot read the logical volume: {e}"),
                        },
                    };
                    c.detail =
                        format!("LVM2 {} LV {}/{}; {}", lv.layout, g.name, lv.name, c.detail);
                    (c, src)
                }
                Err(e) => {
                    let (verdict, reason) = match &lv.status {
                        flr_lvm::LvStatus::Unsupported(r) => ("unsupported", r.clone()),
                        flr_lvm::LvStatus::MissingPv(r) => ("error", r.clone()),
                        flr_lvm::LvStatus::Corrupt(r) => {
                            ("error", format!("inconsistent metadata: {r}"))
                        }
                        flr_lvm::LvStatus::Readable => ("error", e.to_string()),
                    };
                    let src: Source = Arc::new(Refused {
                        layer: format!("lv {}/{}", g.name, lv.name),
                        size: lv.size,
                        reason: reason.clone(),
                    });
                    (
                        ContentInfo {
                            kind: ContentKind::LvmLv,
                            fs: None,
                            luks: None,
                            encryption: None,
                            verdict,
                            detail: format!(
                                "LVM2 {} LV {}/{}: {reason}",
                                lv.layout, g.name, lv.name
                            ),
                        },
                        src,
                    )
                }
            };
            report
                .lvs
                .push((id.clone(), lv.layout.clone(), content.verdict.to_string()));
            images[ii].volumes.push(Volume {
                id,
                offset: 0,
                size: lv.size,
                partition: None,
                content,
                source,
            });
        }
        images[ii].volume_groups.push(report);
    }
}
