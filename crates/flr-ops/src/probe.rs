//! `flr probe`: the layer tree of an image and a verdict per volume.

use flr_engine::{ContainerInfo, ContentInfo, Image, PartitionInfo, TableInfo};
use serde::Serialize;

use crate::{Context, OpsError, OutputFormat};

/// Everything `probe` reports, as serialised by `--json`.
#[derive(Debug, Serialize)]
pub struct ProbeReport<'a> {
    /// The image as given.
    pub image: &'a str,
    /// Container facts.
    pub container: &'a ContainerInfo,
    /// Partition table facts.
    pub partition_table: Option<&'a TableInfo>,
    /// One entry per volume.
    pub volumes: Vec<VolumeReport<'a>>,
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
}

/// Builds the report for an opened image.
pub fn probe_report(image: &Image) -> ProbeReport<'_> {
    ProbeReport {
        image: &image.location,
        container: &image.container,
        partition_table: image.table.as_ref(),
        volumes: image
            .volumes
            .iter()
            .map(|v| VolumeReport {
                id: &v.id,
                offset: v.offset,
                size: v.size,
                partition: v.partition.as_ref(),
                content: &v.content,
            })
            .collect(),
    }
}

/// Human-readable byte count: `12.0 MiB (12582912 bytes)`.
pub(crate) fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Prints the probe report. Returns the number of volumes that are not
/// readable, so the caller can choose an exit code.
pub fn probe(image: &Image, ctx: &mut Context<'_>) -> Result<usize, OpsError> {
    let report = probe_report(image);
    let unreadable = image
        .volumes
        .iter()
        .filter(|v| v.content.verdict != "readable")
        .count();
    if ctx.format == OutputFormat::Json {
        serde_json::to_writer_pretty(&mut *ctx.out, &report).map_err(std::io::Error::from)?;
        writeln!(ctx.out)?;
        return Ok(unreadable);
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
            writeln!(out, "        {}", ct.kind.name())?;
        }
        writeln!(out, "        verdict: {} — {}", ct.verdict, ct.detail)?;
    }
    Ok(unreadable)
}
