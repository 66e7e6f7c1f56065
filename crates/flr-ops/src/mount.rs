//! `flr mount`: the image's readable volumes as a read-only FUSE mount
//! (see the `flr-mount` crate). Volumes that cannot be read are left out,
//! each named on stderr with its feasibility verdict (the same sentence
//! `probe` gives).

use std::io::Write;
use std::path::PathBuf;

use flr_engine::{Image, Verdict};
use flr_mount::{MountOptions, MountVolume};

use crate::keychain::{feasibility, ChainSummary};
use crate::{Context, OpsError};

/// Options of `mount`.
#[derive(Debug, Clone, Default)]
pub struct MountArgs {
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// Only this volume, at the mount point itself.
    pub volume: Option<String>,
    /// `--allow-other`.
    pub allow_other: bool,
}

/// Mounts and serves until unmounted (SIGINT/SIGTERM, `fusermount3 -u`).
/// `ready` runs once the mount is live (the daemon's signal to its parent).
pub fn mount(
    image: &Image,
    chain: Option<&ChainSummary>,
    args: &MountArgs,
    ctx: &mut Context<'_>,
    ready: impl FnOnce(),
) -> Result<(), OpsError> {
    let verdicts = feasibility(image, chain);
    let mut volumes = Vec::new();
    if let Some(id) = &args.volume {
        // Asked for by id (also a volume of a disk image stored as a file):
        // a volume that cannot be opened is an error.
        let v = image.volume(id)?;
        let fs = v.open_fs()?;
        crate::warn_consistency(ctx.err, &v.id, fs.as_ref())?;
        volumes.push(MountVolume {
            id: v.id.clone(),
            fs,
        });
    }
    for v in image.volumes.iter().filter(|_| args.volume.is_none()) {
        let why = verdicts
            .iter()
            .find(|f| f.volume == v.id)
            .map(|f| format!("{}: {}", f.verdict, f.sentence))
            .unwrap_or_default();
        if v.content.verdict != Verdict::Readable {
            if !matches!(v.content.verdict, Verdict::Empty | Verdict::Container) {
                writeln!(ctx.err, "flr: mount: {} not shown ({why})", v.id)?;
            }
            continue;
        }
        match v.open_fs() {
            Ok(fs) => {
                crate::warn_consistency(ctx.err, &v.id, fs.as_ref())?;
                volumes.push(MountVolume {
                    id: v.id.clone(),
                    fs,
                })
            }
            Err(e) => writeln!(ctx.err, "flr: mount: {} not shown: {e}", v.id)?,
        }
    }
    let opts = MountOptions {
        single: args.volume.is_some(),
        allow_other: args.allow_other,
        fsname: format!("flr:{}", image.location.replace(',', "_")),
        daemonized: crate::daemon::is_child(),
        ..MountOptions::default()
    };
    let mut notes = Vec::new();
    let r = flr_mount::mount(volumes, &args.mountpoint, &opts, |m| {
        for s in &m.skipped {
            notes.push(format!("flr: mount: not shown: {s}"));
        }
        notes.push(format!(
            "flr: mounted {} read-only at {}{}; unmount with Ctrl-C, kill, or `fusermount3 -u {}`",
            if opts.single {
                "volume".to_string()
            } else {
                format!("volumes {}", m.volumes.join(", "))
            },
            m.mountpoint.display(),
            if opts.single {
                format!(" ({})", m.volumes.join(""))
            } else {
                String::new()
            },
            m.mountpoint.display()
        ));
        for n in &notes {
            let _ = writeln!(std::io::stderr(), "{n}");
        }
        ready();
    });
    r.map_err(|e| match e {
        flr_mount::MountError::Empty(s) => OpsError::Usage(format!("mount: nothing to mount: {s}")),
        flr_mount::MountError::MountPoint { path, reason } => {
            OpsError::Usage(format!("mount point {}: {reason}", path.display()))
        }
        flr_mount::MountError::Fs(source) => OpsError::Fs {
            volume: args.volume.clone().unwrap_or_default(),
            source,
        },
        other => OpsError::Output(std::io::Error::other(other.to_string())),
    })
}
