//! A read-only FUSE view of flr filesystems, for `flr mount`.
//!
//! Each volume is a folder named by its id (`p1/`, `p2/`; an id with `/`,
//! such as an LVM volume's `p3/vg/lv`, nests as `p3/vg/lv/`), or a single
//! volume is the mount's root. Files are streamed: every `read` goes through
//! the [`flr_fs::FileHandle`] opened for that open file, at the offset asked,
//! so nothing is loaded whole. Every change (write, create, rename, chmod,
//! mkdir, unlink, xattrs) is refused with `EROFS`, and the kernel mount is
//! `ro,nosuid,nodev` as well.
//!
//! The kernel talks to the filesystem through `fuser` without libfuse: as
//! root it mounts with mount(2), otherwise through `fusermount3`. Requests
//! are served by several worker threads; reads of different files do not
//! wait for each other.
//!
//! [`mount`] runs in the foreground until SIGINT, SIGTERM or SIGHUP (then it
//! unmounts) or until someone unmounts it (`fusermount3 -u`, `umount`).
//! Detaching a mount into the background is the command line's (`flr-ops`):
//! [`MountOptions::daemonized`] tells this crate it runs detached.
//!
//! # Errors
//! [`MountError`]: the mount itself failed (no `/dev/fuse`, mount point not
//! a folder, no permission), or the session ended with an error.
#![deny(missing_docs)]

mod fs;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};

use flr_fs::Filesystem;
use fuser::{Config, MountOption, Session, SessionACL};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// One volume to show.
pub struct MountVolume {
    /// Its id: the folder name (`/` nests).
    pub id: String,
    /// Its filesystem.
    pub fs: Box<dyn Filesystem>,
}

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Show the one volume at the mount point itself instead of in a folder
    /// named by its id.
    pub single: bool,
    /// `allow_other`: other users may enter the mount (needs
    /// `user_allow_other` in /etc/fuse.conf for non-root users). The image's
    /// owners and modes are then enforced by the kernel
    /// (`default_permissions`).
    pub allow_other: bool,
    /// The source shown in /proc/mounts (`fsname=`).
    pub fsname: String,
    /// FUSE worker threads.
    pub threads: usize,
    /// The process runs detached from its terminal (`flr mount --daemon`):
    /// SIGHUP does not unmount.
    pub daemonized: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            single: false,
            allow_other: false,
            fsname: "flr".into(),
            threads: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .clamp(2, 8),
            daemonized: false,
        }
    }
}

/// A mount failed or ended with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// Nothing could be shown.
    #[error("nothing to mount: {0}")]
    Empty(String),
    /// The mount point is unusable.
    #[error("mount point {path}: {reason}")]
    MountPoint {
        /// The mount point.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Mounting or serving failed.
    #[error("FUSE: {0}")]
    Fuse(#[from] std::io::Error),
    /// A volume's filesystem failed while building the tree.
    #[error(transparent)]
    Fs(#[from] flr_fs::FsError),
}

/// What was mounted, given to the `ready` callback of [`mount`].
#[derive(Debug, Clone)]
pub struct Mounted {
    /// The mount point.
    pub mountpoint: PathBuf,
    /// The volume ids shown.
    pub volumes: Vec<String>,
    /// Volumes that could not be placed, with the reason.
    pub skipped: Vec<String>,
}

enum Event {
    Signal,
    Ended,
}

/// Mounts `volumes` read-only at `mountpoint` and serves them until a
/// signal (SIGINT, SIGTERM, and SIGHUP unless `daemonized`) or an external
/// unmount. `ready` is called once the mount is live. On a signal the mount
/// is unmounted; if it is busy, the next signal detaches it lazily.
pub fn mount(
    volumes: Vec<MountVolume>,
    mountpoint: &Path,
    opts: &MountOptions,
    ready: impl FnOnce(&Mounted),
) -> Result<(), MountError> {
    if volumes.is_empty() {
        return Err(MountError::Empty(
            "no volume of this image can be shown (see `flr probe`)".into(),
        ));
    }
    match std::fs::metadata(mountpoint) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(MountError::MountPoint {
                path: mountpoint.into(),
                reason: "not a folder".into(),
            })
        }
        Err(e) => {
            return Err(MountError::MountPoint {
                path: mountpoint.into(),
                reason: e.to_string(),
            })
        }
    }
    let vols: Vec<fs::Vol> = volumes
        .into_iter()
        .map(|v| fs::Vol {
            id: v.id,
            fs: Arc::from(v.fs),
        })
        .collect();
    let ids: Vec<String> = vols.iter().map(|v| v.id.clone()).collect();
    let (fuse, skipped) = fs::FlrFuse::new(vols, opts.single)?;
    let shown: Vec<String> = ids
        .into_iter()
        .filter(|id| !skipped.iter().any(|s| s.starts_with(&format!("{id}: "))))
        .collect();
    if shown.is_empty() {
        return Err(MountError::Empty(skipped.join("; ")));
    }

    // Signals first, so none is lost between mounting and waiting.
    let daemonized = opts.daemonized;
    let mut wanted = vec![SIGINT, SIGTERM];
    if daemonized {
        // A detached mount outlives the terminal that started it.
        signal_hook::flag::register(SIGHUP, Arc::new(AtomicBool::new(false)))?;
    } else {
        wanted.push(SIGHUP);
    }
    let mut signals = signal_hook::iterator::Signals::new(&wanted)?;
    let signals_handle = signals.handle();

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::FSName(opts.fsname.clone()),
        MountOption::Subtype("flr".into()),
    ];
    if opts.allow_other {
        config.acl = SessionACL::All;
        config.mount_options.push(MountOption::DefaultPermissions);
    }
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    let mut session = Session::new(fuse, mountpoint, &config)?;
    let mut unmounter = session.unmount_callable();

    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    let server = std::thread::Builder::new()
        .name("flr-fuse".into())
        .spawn(move || {
            let r = session.run();
            let _ = tx2.send(Event::Ended);
            r
        })?;
    let waiter = std::thread::Builder::new()
        .name("flr-signals".into())
        .spawn(move || {
            for _ in signals.forever() {
                if tx.send(Event::Signal).is_err() {
                    break;
                }
            }
        })?;

    ready(&Mounted {
        mountpoint: mountpoint.to_path_buf(),
        volumes: shown,
        skipped,
    });

    // Until the session ends (an external unmount, or ours after a signal).
    let mut tries = 0;
    while let Ok(Event::Signal) = rx.recv() {
        tries += 1;
        let r = if tries == 1 {
            // A file closed just now may keep the mount busy for a moment
            // (a process forking elsewhere holds a copy of its descriptor
            // until it execs): try again for a second before asking for a
            // second signal.
            let mut r = unmounter.unmount();
            for _ in 0..20 {
                match &r {
                    Err(e) if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) => {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        r = unmounter.unmount();
                    }
                    _ => break,
                }
            }
            r
        } else {
            rustix::mount::unmount(mountpoint, rustix::mount::UnmountFlags::DETACH)
                .map_err(std::io::Error::from)
        };
        if let Err(e) = r {
            let _ = writeln!(
                std::io::stderr(),
                "flr mount: cannot unmount {}: {e}; close what uses it, or signal again to detach it lazily",
                mountpoint.display()
            );
        }
    }
    signals_handle.close();
    let _ = waiter.join();
    let served = server
        .join()
        .map_err(|_| std::io::Error::other("the FUSE server thread panicked"))?;
    served?;
    Ok(())
}
