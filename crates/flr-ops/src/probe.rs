//! `flr probe`: the layer tree of an image and a verdict per volume.

use flr_engine::{ContainerInfo, ContentInfo, Image, PartitionInfo, TableInfo};
use serde::Serialize;

use crate::keychain::{feasibility, ChainSummary, Feasibility};
use crate::{Context, OpsError, OutputFormat};

/// The version of `probe --json`'s document: fields are only added; a
/// change of meaning raises it (`docs/probe-json.md`).
pub const REPORT_VERSION: u32 = 2;

/// Everything `probe` reports, as serialised by `--json`.
#[derive(Debug, Serialize)]
pub struct ProbeReport<'a> {
    /// The report's format version (`docs/probe-json.md`).
    pub report_version: u32,
    /// The image as given.
    pub image: &'a str,
    /// Container facts.
    pub container: &'a ContainerInfo,
    /// Partition table facts.
    pub partition_table: Option<&'a TableInfo>,
    /// One entry per volume.
    pub volumes: Vec<VolumeReport<'a>>,
    /// What the key chain did (with `--metadata` / `--secret-url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_chain: Option<&'a ChainSummary>,
    /// Per volume: can its files be restored, and if not, why.
    pub feasibility: Vec<Feasibility>,
    /// The groups assembled from members found on the disk(s), by kind:
    /// `volume_groups` (LVM2: PVs present or missing, LVs with their volume
    /// ids, layouts and status).
    #[serde(flatten)]
    pub groups: std::collections::BTreeMap<&'static str, Vec<serde_json::Value>>,
}

/// One volume in the report.
#[derive(Debug, Serialize)]
pub struct VolumeReport<'a> {
    /// Volume id for `ID:/path`.
    pub id: &'a str,
    /// Byte offset on the virtual disk.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// Partition facts.
    pub partition: Option<&'a PartitionInfo>,
    /// Content found.
    pub content: &'a ContentInfo,
    /// The volume it lies on, when it is not the disk itself (`p3` for
    /// `p3/rootvg/rootlv`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<&'a str>,
}

/// Builds the report for an opened image.
pub fn probe_report<'a>(image: &'a Image, chain: Option<&'a ChainSummary>) -> ProbeReport<'a> {
    ProbeReport {
        report_version: REPORT_VERSION,
        key_chain: chain,
        feasibility: feasibility(image, chain),
        image: &image.location,
        container: &image.container,
        partition_table: image.table.as_ref(),
        groups: {
            let mut m: std::collections::BTreeMap<&'static str, Vec<serde_json::Value>> =
                Default::default();
            for g in &image.groups {
                m.entry(g.report.section)
                    .or_default()
                    .push(g.report.json(|id| g.state(id)));
            }
            m
        },
        volumes: image
            .volumes
            .iter()
            .map(|v| VolumeReport {
                id: &v.id,
                offset: v.offset,
                size: v.size,
                partition: v.partition.as_ref(),
                content: &v.content,
                parent: v.parent.as_deref(),
            })
            .collect(),
    }
}

pub(crate) use flr_engine::human_size;

/// Prints the probe report (with each volume's feasibility when
/// `feasibility_lines`). Returns the feasibility verdicts, so the caller
/// can choose an exit code.
pub fn probe(
    image: &Image,
    chain: Option<&ChainSummary>,
    feasibility_lines: bool,
    ctx: &mut Context<'_>,
) -> Result<Vec<Feasibility>, OpsError> {
    let report = probe_report(image, chain);
    if ctx.format == OutputFormat::Json {
        serde_json::to_writer_pretty(&mut *ctx.out, &report).map_err(std::io::Error::from)?;
        writeln!(ctx.out)?;
        return Ok(report.feasibility);
    }
    let c = &image.container;
    let out = &mut *ctx.out;
    writeln!(
        out,
        "{}: {}{}, virtual size {} ({} bytes), file {}",
        image.location,
        c.format.to_uppercase(),
        c.subtype
            .as_deref()
            .map(|s| format!(" {s}"))
            .unwrap_or_default(),
        human_size(c.virtual_size),
        c.virtual_size,
        human_size(c.file_size),
    )?;
    for p in &c.parents {
        writeln!(out, "  parent: {p}")?;
    }
    if let Some(k) = chain {
        write_chain(out, k)?;
    }
    for w in &c.warnings {
        writeln!(out, "  warning: {w}")?;
    }
    match &image.table {
        Some(t) => {
            writeln!(
                out,
                "  partition table: {}, {}-byte sectors{}",
                t.scheme.to_uppercase(),
                t.sector_size,
                t.disk_id
                    .as_deref()
                    .map(|d| format!(", disk id {d}"))
                    .unwrap_or_default()
            )?;
            for w in &t.warnings {
                writeln!(out, "  warning: {w}")?;
            }
        }
        None => writeln!(out, "  partition table: none (volume starts at sector 0)")?,
    }
    for g in &image.groups {
        for line in g.report.lines(|id| g.state(id)) {
            writeln!(out, "{line}")?;
        }
    }
    for v in &image.volumes {
        write!(
            out,
            "  {:<5} offset {} size {} ({} bytes)",
            v.id,
            v.offset,
            human_size(v.size),
            v.size
        )?;
        if let Some(p) = &v.partition {
            write!(
                out,
                "  type {}{}",
                p.type_id,
                p.type_name
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            )?;
            if let Some(n) = &p.name {
                write!(out, "  name {n:?}")?;
            }
            if p.logical {
                write!(out, "  logical")?;
            }
            if p.bootable {
                write!(out, "  boot")?;
            }
            if let Some(g) = &p.guid {
                write!(out, "  guid {g}")?;
            }
        }
        writeln!(out)?;
        let ct = &v.content;
        if let Some(e) = &ct.encryption {
            writeln!(
                out,
                "        {} {}  protectors: {}  {}",
                e.scheme,
                e.cipher,
                if e.protectors.is_empty() {
                    "none".to_string()
                } else {
                    e.protectors.join(", ")
                },
                match &e.unlocked_with {
                    Some(k) => format!("unlocked with {k}"),
                    None => "locked".to_string(),
                }
            )?;
            if let Some(h) = &e.header {
                writeln!(out, "        LUKS header: {h}")?;
            }
            for w in &e.warnings {
                writeln!(out, "        warning: {w}")?;
            }
        }
        if let Some(fs) = &ct.fs {
            write!(out, "        {}", fs.fs_type)?;
            if let Some(l) = &fs.label {
                write!(out, "  label {l:?}")?;
            }
            if let Some(id) = &fs.id {
                let what = if fs.fs_type.starts_with("ext") {
                    "uuid"
                } else {
                    "serial"
                };
                write!(out, "  {what} {id}")?;
            }
            write!(out, "  block {}", fs.block_size)?;
            match fs.free_bytes {
                Some(free) => writeln!(
                    out,
                    "  used {} free {} of {}",
                    human_size(fs.total_bytes.saturating_sub(free)),
                    human_size(free),
                    human_size(fs.total_bytes)
                )?,
                None => writeln!(out, "  size {}", human_size(fs.total_bytes))?,
            }
            for sv in &ct.subvolumes {
                writeln!(
                    out,
                    "        subvolume {:<5} {}@/{}  generation {}{}{}{}",
                    sv.id,
                    v.id,
                    sv.path,
                    sv.generation,
                    sv.created
                        .map(|t| format!("  created {}", crate::manifest::rfc3339(t)))
                        .unwrap_or_default(),
                    if sv.read_only { "  read-only" } else { "" },
                    if sv.default {
                        "  (default: what the volume shows)"
                    } else {
                        ""
                    },
                )?;
            }
            if fs.consistency.journal != flr_fs::Journal::NotChecked {
                writeln!(
                    out,
                    "        {}{}",
                    if fs.consistency.may_miss_changes() {
                        "WARNING: "
                    } else {
                        "state: "
                    },
                    fs.consistency.sentence()
                )?;
            }
        } else if let (Some(l), None) = (&ct.luks, &ct.encryption) {
            writeln!(
                out,
                "        LUKS{} header  uuid {}  cipher {}{}",
                l.version,
                l.uuid,
                l.cipher.as_deref().unwrap_or("?"),
                l.label
                    .as_deref()
                    .map(|s| format!("  label {s:?}"))
                    .unwrap_or_default()
            )?;
        } else {
            writeln!(out, "        {}", ct.kind.display)?;
        }
        writeln!(out, "        verdict: {} — {}", ct.verdict, ct.detail)?;
        if feasibility_lines {
            if let Some(f) = report.feasibility.iter().find(|f| f.volume == v.id) {
                writeln!(
                    out,
                    "        feasibility: {} ({}) — {}",
                    f.verdict,
                    f.reasons
                        .iter()
                        .map(|r| r.code())
                        .collect::<Vec<_>>()
                        .join(", "),
                    f.sentence
                )?;
                for d in &f.depends_on {
                    writeln!(out, "          depends on {d}")?;
                }
            }
        }
    }
    Ok(report.feasibility)
}

fn write_chain(out: &mut dyn std::io::Write, k: &ChainSummary) -> std::io::Result<()> {
    writeln!(
        out,
        "  key chain ({}){}{}{}",
        k.mode,
        k.metadata
            .as_deref()
            .map(|m| format!(": metadata {m}"))
            .unwrap_or_default(),
        k.ade_settings_version
            .as_deref()
            .map(|v| format!(", ADE settings {v}"))
            .unwrap_or_default(),
        k.sse
            .as_deref()
            .map(|s| format!(", SSE {s}"))
            .unwrap_or_default(),
    )?;
    if let Some(t) = &k.security_type {
        writeln!(out, "    security type: {t}")?;
    }
    for c in &k.chains {
        writeln!(out, "    secret {} → {}", c.secret, c.outcome)?;
        if let Some(kek) = &c.kek {
            writeln!(
                out,
                "      KEK {kek} ({})",
                c.algorithm.as_deref().unwrap_or("?")
            )?;
        }
        for s in &c.steps {
            writeln!(out, "      step: {s}")?;
        }
        for w in &c.warnings {
            writeln!(out, "      warning [{}]: {}", w.code, w.message)?;
        }
        if let Some(f) = &c.finding {
            writeln!(out, "      {} [{}]: {}", c.outcome, f.code, f.message)?;
            if let Some(r) = &f.remedy {
                writeln!(out, "      remedy: {r}")?;
            }
        }
        for n in &c.not_checked {
            writeln!(out, "      not checked: {n}")?;
        }
    }
    writeln!(
        out,
        "    Key Vault round trips: {}; audit log: {}",
        k.round_trips,
        match &k.audit {
            Some(p) => format!("{p} ({} records)", k.audit_records),
            None => "off".into(),
        }
    )
}
