//! `flr`: file-level restore from VM disk images, read-only.
//!
//! The binary only parses arguments, calls one `flr_ops` entry
//! ([`flr_ops::run`]) and turns its result into the process's exit code;
//! everything else (keys, configuration, sources, the key chain, the
//! commands, messages) lives in `crates/`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod generate;
use flr_ops::{Command, Globals, Invocation};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  partial: some files were not restored (each one is reported)
  2  usage: bad arguments, no such volume or path
  3  bad image: corrupt or unreadable input (the message names the layer and byte offset)
  4  not readable: encrypted or unsupported volume, or a file whose data flr cannot return correctly;
     for probe --dry-run: a volume is blocked (the report says why and what to do)
  5  output could not be written
  6  the key chain could not find out (Key Vault unreachable or failing), or Resource Manager
     throttled or failed past the retries, or no export slot came free: retry later
  7  verify: the image differs from its manifest (missing, changed or extra files)

verify: 0 only when everything checked is good; 7 data mismatch, 3 unreadable files or
structural errors, 6 key chain error, 4 a volume blocked by keys (first that applies).

Volumes are addressed as ID:/path, with the ids `flr probe` shows (p1, p2, … for
partitions; disk for a filesystem without a partition table). flr never writes to
an image; restored files go only below the destination folder.";

#[derive(Parser)]
#[command(name = "flr", version, about = "File-level restore from VM disk images (raw, VHD, VHDX), read-only",
          after_help = "Volumes are ID:/path with the ids `flr probe` shows. --help gives details and exit codes.",
          after_long_help = EXIT_CODES)]
pub(crate) struct Cli {
    /// Key material for volume ID (repeatable): ID=KIND:VALUE
    ///
    /// KIND is one of passphrase-file, password-file, bek, recovery (48 digits, dashes
    /// allowed), volume-key (hex). Files are read as exact bytes. Example:
    /// --key p1=recovery:111111-222222-… ID=ask (LUKS passphrase) or ID=ask-password
    /// (BitLocker password) prompts on the terminal without echo.
    #[arg(
        long = "key",
        global = true,
        value_name = "ID=KIND:VALUE",
        help_heading = "Keys and encryption"
    )]
    keys: Vec<String>,
    /// A detached LUKS header for volume ID (repeatable)
    ///
    /// The ADE OS-disk layout (header in luks/osluksheader on the boot partition) is
    /// found without it.
    #[arg(
        long = "luks-header",
        global = true,
        value_name = "ID=FILE",
        help_heading = "Keys and encryption"
    )]
    luks_headers: Vec<String>,
    /// The disk's encryption metadata (az snapshot show / az disk show JSON)
    ///
    /// The JSON of `az snapshot show` / `az disk show`, or Azure Backup's key-and-secret
    /// JSON. The ADE key chain fetches the disk's key from it.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        help_heading = "Keys and encryption"
    )]
    metadata: Option<PathBuf>,
    /// The BEK secret (versioned URL), instead of or overriding --metadata
    #[arg(
        long = "secret-url",
        global = true,
        value_name = "URL",
        help_heading = "Keys and encryption"
    )]
    secret_url: Option<String>,
    /// The KEK (versioned URL) that wraps the secret, when its tags do not name it
    #[arg(
        long = "kek-url",
        global = true,
        value_name = "URL",
        help_heading = "Keys and encryption"
    )]
    kek_url: Option<String>,
    /// Key-chain configuration file
    ///
    /// Vaults, offline keys, policy, audit, [azure]; default $FLR_CONFIG, then
    /// ~/.config/flr/config.toml. See docs/flr.example.toml.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        help_heading = "Keys and encryption"
    )]
    config: Option<PathBuf>,
    /// Change nothing: read no secret; get prints its plan and writes nothing
    ///
    /// The key chain reads headers, metadata and key/secret attributes, never a secret's
    /// value, never unwraps (`probe --dry-run` prints a verdict per volume and exits 4 when
    /// one is blocked, 6 when the key chain could not find out); `get --dry-run` prints
    /// what it would create, write, keep or replace, and writes nothing.
    #[arg(long = "dry-run", global = true, help_heading = "Safety")]
    dry_run: bool,
    /// Report what reading the image cost (bytes, requests, cache hits, seconds)
    ///
    /// On stderr after the command; one JSON object with `--format json` (or the
    /// deprecated `--stats=json`, or `--json` on probe, ls and get).
    #[arg(long, global = true, value_name = "FORMAT", num_args = 0..=1,
          require_equals = true, default_missing_value = "human", value_enum,
          help_heading = "Output")]
    stats: Option<StatsFormat>,
    /// Range requests in flight at once when the image is a blob
    #[arg(
        long,
        global = true,
        value_name = "N",
        default_value_t = 8,
        help_heading = "Image sources"
    )]
    concurrency: usize,
    /// Another disk of the same VM, opened together with the image (repeatable)
    ///
    /// So that LVM2 volume groups and md arrays spanning the disks are assembled (local
    /// paths). Its volumes are named d2/ID, d3/ID, …:
    /// `flr ls os.vhd --with-disk data.vhd d2/p1/datavg/data:/`.
    #[arg(
        long = "with-disk",
        global = true,
        value_name = "PATH",
        help_heading = "Image sources"
    )]
    with_disks: Vec<PathBuf>,
    /// Keep the read SAS of a disk or snapshot resource id valid at the end
    ///
    /// When the image is a disk or snapshot resource id, leave the read SAS from
    /// beginGetAccess valid instead of revoking it (endGetAccess).
    #[arg(long = "keep-access", global = true, help_heading = "Image sources")]
    keep_access: bool,
    /// Machine-readable output: JSON data on stdout, messages on stderr
    ///
    /// The same on every command (see docs/json.md; each document or line has a version
    /// field).
    #[arg(long, global = true, value_enum, default_value_t = Format::Human,
          help_heading = "Output")]
    format: Format,
    /// Only errors and warnings on stderr (and no progress bar)
    #[arg(
        short,
        long,
        global = true,
        conflicts_with = "verbose",
        help_heading = "Output"
    )]
    quiet: bool,
    /// More detail on stderr (repeatable)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = "Output")]
    verbose: u8,
    /// stderr messages as text, or one JSON object each
    ///
    /// JSON: {level, layer, volume, path, message} per message.
    #[arg(long = "log-format", global = true, value_enum, default_value_t = LogFormat::Text,
          help_heading = "Output")]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

/// `--format`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// Text for people.
    Human,
    /// JSON on stdout.
    Json,
}

/// `--log-format`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// `flr: …` lines.
    Text,
    /// One JSON object per message.
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show the layers of an image: container, partition table, volumes and what is on each.
    Probe {
        /// Disk image: a local path, a blob URL, a connection string or a resource id
        ///
        /// Raw, VHD or VHDX (detected from content). A local path, a blob URL
        /// with a SAS (https://ACCOUNT.blob.core.windows.net/C/disk.vhd?sv=…, managed-disk
        /// exports, Azurite) or without one (Entra ID token, see [azure] in the config), a
        /// connection string with Container=…;Blob=… (e.g.
        /// "UseDevelopmentStorage=true;Container=disks;Blob=os.vhd"), or a disk or snapshot
        /// resource id (/subscriptions/…/providers/Microsoft.Compute/snapshots/NAME: flr asks
        /// for read access and revokes it at the end). Read in ranges, never downloaded whole.
        image: String,
        /// Machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// List a folder on a volume.
    Ls {
        /// Disk image: a local path, a blob URL with a SAS, or a connection string.
        image: String,
        /// ID:/folder (e.g. p2:/etc).
        path: String,
        /// Long listing: mode, owner, size, mtime, creation (birth) time.
        #[arg(short = 'l', long)]
        long: bool,
        /// Recurse into subfolders.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// Also list alternate data streams (NTFS), as `name:stream` entries.
        #[arg(long)]
        streams: bool,
        /// JSON Lines: one object per entry.
        #[arg(long)]
        json: bool,
    },
    /// Restore files or folders into DEST.
    Get {
        /// Disk image: a local path, a blob URL with a SAS, or a connection string.
        image: String,
        /// ID:/path of each file or folder to restore.
        #[arg(required = true)]
        paths: Vec<String>,
        /// Destination folder (created if missing).
        #[arg(short = 'o', long = "output", default_value = ".")]
        dest: PathBuf,
        /// When a name is already taken in DEST [default: error]
        ///
        /// error (the default): report it, leave it; skip: leave it; always: replace it;
        /// rename: write the new one as NAME~N.EXT beside it; if-different: replace it
        /// unless identical (see --compare).
        #[arg(
            long,
            value_enum,
            value_name = "POLICY",
            help_heading = "Selection and safety"
        )]
        overwrite: Option<OverwritePolicy>,
        /// Same as --overwrite=always.
        #[arg(
            long,
            conflicts_with = "overwrite",
            help_heading = "Selection and safety"
        )]
        force: bool,
        /// Resume: files already in DEST and identical are not rewritten
        ///
        /// Identical by the restore journal (DEST/.flr-restore.jsonl), else by --compare; the
        /// others follow --overwrite. Temporary files never count, and those an interrupted
        /// run left behind are removed.
        #[arg(long = "skip-existing", help_heading = "Selection and safety")]
        skip_existing: bool,
        /// Neither read nor write the restore journal: every file already in DEST is compared
        /// by --compare
        #[arg(long = "no-journal", help_heading = "Selection and safety")]
        no_journal: bool,
        /// How --skip-existing and if-different decide "identical"
        ///
        /// content: same size and bytes (both files are read and compared); sha256: the same,
        /// by hashing both; size-mtime: same size and mtime, nothing is read: quick, but
        /// blind to a change that kept both.
        #[arg(long, value_enum, value_name = "HOW", default_value_t = Compare::Content,
              help_heading = "Selection and safety")]
        compare: Compare,
        /// Restore only entries matching GLOB, and what matching folders hold (repeatable)
        ///
        /// A GLOB without / matches names at any depth (*.conf); with / it matches the path
        /// from the volume root (etc/**/*.conf, /home/*/.ssh). `*` stays in one component,
        /// `**` crosses them.
        #[arg(long, value_name = "GLOB", help_heading = "Selection and safety")]
        include: Vec<String>,
        /// Leave out entries matching GLOB (repeatable)
        ///
        /// An excluded folder is not entered. Wins over --include.
        #[arg(long, value_name = "GLOB", help_heading = "Selection and safety")]
        exclude: Vec<String>,
        /// Print the sha256 of each restored file (sha256sum format).
        #[arg(long)]
        checksum: bool,
        /// How NTFS alternate data streams are restored: `xattr` (user.ntfs.stream.NAME
        /// extended attributes of the file), `files` (side files NAME:STREAM) or `none`.
        #[arg(long, value_name = "HOW", default_value = "xattr")]
        streams: flr_ops::NtfsStreams,
        /// Deprecated: the summary as JSON on stderr (use --format json: on stdout).
        #[arg(long, hide = true)]
        json: bool,
        /// Also restore: xattrs, acl, owner (numeric uid/gid and setuid/setgid; root
        /// only), comma-separated, or all / none (the default: data, mode, times).
        #[arg(long, value_name = "LIST", default_value = "none", value_parser = flr_ops::Preserve::parse)]
        preserve: flr_ops::Preserve,
    },
    /// Mount the image's filesystems read-only (FUSE)
    ///
    /// Each readable volume as a folder named by its id (p1/, p2/; ids with / nest), or
    /// one volume with --volume. Runs in the foreground until Ctrl-C/SIGTERM or
    /// `fusermount3 -u MOUNTPOINT`.
    Mount {
        /// Disk image: a local path, a blob URL with a SAS, or a connection string.
        image: String,
        /// An existing empty folder.
        mountpoint: PathBuf,
        /// Mount only this volume, at MOUNTPOINT itself.
        #[arg(long, value_name = "ID")]
        volume: Option<String>,
        /// Detach into the background once mounted (messages after that are dropped).
        #[arg(long)]
        daemon: bool,
        /// Let other users enter the mount (non-root needs user_allow_other in
        /// /etc/fuse.conf); the image's owners and modes are then enforced.
        #[arg(long = "allow-other")]
        allow_other: bool,
    },
    /// Write a manifest (JSON) of every readable volume, with every file's sha256
    ///
    /// Path, type, size, mtime, mode and sha256 of every file. `flr verify --manifest`
    /// compares an image against it.
    Manifest {
        /// Disk image: a local path, a blob URL with a SAS, or a connection string.
        image: String,
        /// Only this volume (repeatable).
        #[arg(long = "volume", value_name = "ID")]
        volumes: Vec<String>,
    },
    /// Verify that the image restores: read and hash every file, compare with a manifest
    ///
    /// Unlock through the key chain, walk every filesystem, read and hash every file (or
    /// a seeded sample), compare with a manifest.
    Verify {
        /// Disk image: a local path, a blob URL with a SAS, or a connection string.
        image: String,
        /// Compare with this manifest (from `flr manifest`).
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// Read only N randomly chosen files per volume (the seed is reported).
        #[arg(long, value_name = "N", conflicts_with = "full")]
        sample: Option<usize>,
        /// Read every file (the default).
        #[arg(long)]
        full: bool,
        /// Seed of --sample, to repeat a sample.
        #[arg(long, value_name = "S", requires = "sample")]
        seed: Option<u64>,
        /// Stop reading after B bytes (e.g. 50G); files not read are reported.
        #[arg(long = "max-bytes", value_name = "B")]
        max_bytes: Option<String>,
        /// Stop reading after T (e.g. 90s, 30m, 2h).
        #[arg(long = "max-time", value_name = "T")]
        max_time: Option<String>,
        /// Only this volume (repeatable).
        #[arg(long = "volume", value_name = "ID")]
        volumes: Vec<String>,
        /// Deprecated: write the report as JSON to FILE (- for stdout); use --format json.
        #[arg(long, value_name = "FILE", hide = true)]
        json: Option<PathBuf>,
        /// Write JUnit XML to FILE (a test case per volume and per failed file).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Write Prometheus textfile metrics (flr_verify_*) to FILE.
        #[arg(long, value_name = "FILE")]
        prometheus: Option<PathBuf>,
        /// Re-read only the files whose blocks changed since the snapshot this manifest
        /// (from `flr manifest` or `--write-manifest`) was made of; carry the other hashes.
        #[arg(long, value_name = "MANIFEST")]
        since: Option<PathBuf>,
        /// The snapshot --since's manifest was made of (default: the manifest's image).
        #[arg(long, value_name = "IMAGE", requires = "since")]
        base: Option<String>,
        /// Write what was found as a manifest for the next run (carried hashes marked).
        #[arg(long = "write-manifest", value_name = "FILE")]
        write_manifest: Option<PathBuf>,
    },
    /// List what changed between two versions of a disk
    ///
    /// Two snapshots, or a differencing disk and its parent: added, removed, changed and
    /// renamed files.
    Diff {
        /// The older image.
        old: String,
        /// The newer image.
        new: String,
        /// Only this volume and folder (ID:/path).
        path: Option<String>,
        /// JSON Lines (schema version 1: one "change" object per line, then a "summary").
        #[arg(long)]
        json: bool,
    },
    /// Fleet verification on a batch engine: plan, run one item per task, report
    ///
    /// Slurm array, Kubernetes Indexed Job or Azure Batch: plan a spec, verify one item
    /// per task, gather the results. See docs/fleet-spec.md and deploy/.
    Fleet {
        #[command(subcommand)]
        cmd: FleetCmd,
    },
    /// Write one file to stdout; `ID:` with an empty path streams the whole volume.
    Cat {
        /// Disk image: a local path, a blob URL with a SAS, or a connection string.
        image: String,
        /// ID:/file, or ID: for the raw volume.
        path: String,
    },
    /// Print a shell completion script (bash, zsh, fish, powershell)
    ///
    /// bash: `source <(flr completions bash)`, or save it as
    /// /usr/share/bash-completion/completions/flr. zsh: save it as _flr on $fpath.
    /// fish: ~/.config/fish/completions/flr.fish. PowerShell: dot-source it from $PROFILE.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: generate::Shell,
    },
    /// Print the flr(1) man page, or write every page (one per command) into DIR
    ///
    /// `flr man | man -l -` reads it; `flr man --dir /usr/local/share/man/man1` installs
    /// flr.1, flr-get.1, flr-fleet-run.1, ….
    Man {
        /// Write flr.1 and one page per command into DIR (created).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum FleetCmd {
    /// Write a spec (JSON Lines, one item per snapshot) from Resource Manager (snapshots by
    /// subscription, resource group, tag and time; the newest per disk unless --all) or from
    /// the images in a folder.
    Plan {
        /// List the snapshots of this subscription (through [azure] in the config).
        #[arg(
            long,
            value_name = "SUB",
            conflicts_with = "folder",
            required_unless_present = "folder"
        )]
        subscription: Option<String>,
        /// Only this resource group.
        #[arg(
            long = "resource-group",
            short = 'g',
            value_name = "RG",
            requires = "subscription"
        )]
        resource_group: Option<String>,
        /// Only snapshots with this tag (K=V, or K for any value); repeatable, all must match.
        #[arg(long = "tag", value_name = "K=V")]
        tags: Vec<String>,
        /// Only snapshots taken at or after T (2026-11-27T00:00:00Z, or a date).
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// Only snapshots taken before T.
        #[arg(long, value_name = "T")]
        until: Option<String>,
        /// Every snapshot in the window, not only the newest per disk.
        #[arg(long)]
        all: bool,
        /// The tag that names a snapshot's VM (default vm).
        #[arg(long = "vm-tag", value_name = "TAG")]
        vm_tag: Option<String>,
        /// Image files in this folder instead (vhd, vhdx, img, raw; NAME.manifest.json beside
        /// one is its baseline).
        #[arg(long, value_name = "DIR")]
        folder: Option<PathBuf>,
        /// Baseline manifests: DIR/ID.json for item ID.
        #[arg(long, value_name = "DIR")]
        manifests: Option<PathBuf>,
        /// Read N files per volume (seeded sample) instead of every file.
        #[arg(long, value_name = "N")]
        sample: Option<usize>,
        /// Byte budget per item (e.g. 50G).
        #[arg(long = "max-bytes", value_name = "B")]
        max_bytes: Option<String>,
        /// Time budget per item (e.g. 30m).
        #[arg(long = "max-time", value_name = "T")]
        max_time: Option<String>,
        /// Write the spec to FILE (default stdout).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Verify item N of SPEC and write its result (results/ID.json) to the results
    /// location; N from --index, else JOB_COMPLETION_INDEX, SLURM_ARRAY_TASK_ID or the
    /// trailing digits of AZ_BATCH_TASK_ID. A finished item is not run again without
    /// --force. Exit codes as verify's: 6 retryable, 3, 4, 7 final.
    Run {
        /// The spec (from `flr fleet plan`, or written by hand).
        spec: PathBuf,
        /// The item (0-based).
        #[arg(long, value_name = "N")]
        index: Option<u64>,
        /// Where results (and export-slot leases) go: a folder (local or shared), or a blob
        /// container URL with a SAS (racwdl) or without (Entra ID, [azure] credential).
        #[arg(long, value_name = "LOCATION")]
        results: String,
        /// Run again even if the item has a final result.
        #[arg(long)]
        force: bool,
        /// Longest wait for a free export slot of the snapshot's family (default 6h), then exit 6.
        #[arg(long = "slot-wait", value_name = "T")]
        slot_wait: Option<String>,
    },
    /// Gather the results into DIR: summary.json, junit.xml (a suite per snapshot),
    /// metrics.prom and report.html (self-contained). Exit 0 when every item passed, 1 when
    /// not (or some never reported).
    Report {
        /// The results location given to `fleet run`.
        results: String,
        /// The spec, to name the items that never reported.
        #[arg(long, value_name = "FILE")]
        spec: Option<PathBuf>,
        /// Folder for the four files (created).
        #[arg(
            short = 'o',
            long = "output",
            value_name = "DIR",
            default_value = "fleet-report"
        )]
        output: PathBuf,
        /// The HTML page's title.
        #[arg(long)]
        title: Option<String>,
    },
}

/// `get --overwrite`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OverwritePolicy {
    /// Report the entry as failed.
    Error,
    /// Leave what is there.
    Skip,
    /// Replace it.
    Always,
    /// Write the new one beside it (NAME~N.EXT).
    Rename,
    /// Replace it unless identical.
    IfDifferent,
}

/// `get --compare`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Compare {
    /// Same size and bytes.
    Content,
    /// Same size and sha256.
    Sha256,
    /// Same size and mtime.
    SizeMtime,
}

/// How `--stats` prints.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StatsFormat {
    /// One line for people.
    Human,
    /// One JSON object.
    Json,
}

impl Cli {
    fn into_invocation(self) -> Invocation {
        let globals = Globals {
            keys: self.keys,
            luks_headers: self.luks_headers,
            metadata: self.metadata,
            secret_url: self.secret_url,
            kek_url: self.kek_url,
            config: self.config,
            dry_run: self.dry_run,
            stats: self.stats.map(|s| match s {
                StatsFormat::Human => flr_ops::StatsFormat::Human,
                StatsFormat::Json => flr_ops::StatsFormat::Json,
            }),
            concurrency: self.concurrency,
            with_disks: self.with_disks,
            keep_access: self.keep_access,
            format: match self.format {
                Format::Human => flr_ops::OutputFormat::Human,
                Format::Json => flr_ops::OutputFormat::Json,
            },
            log: flr_ops::LogOptions {
                quiet: self.quiet,
                verbose: self.verbose,
                format: match self.log_format {
                    LogFormat::Text => flr_ops::LogFormat::Text,
                    LogFormat::Json => flr_ops::LogFormat::Json,
                },
                color: false,
            },
        };
        let command = match self.cmd {
            Cmd::Probe { image, json } => Command::Probe { image, json },
            Cmd::Ls {
                image,
                path,
                long,
                recursive,
                streams,
                json,
            } => Command::Ls {
                image,
                path,
                long,
                recursive,
                streams,
                json,
            },
            Cmd::Get {
                image,
                paths,
                dest,
                overwrite,
                force,
                skip_existing,
                no_journal,
                compare,
                include,
                exclude,
                checksum,
                streams,
                json,
                preserve,
            } => Command::Get {
                image,
                paths,
                dest,
                overwrite: match (overwrite, force) {
                    (Some(OverwritePolicy::Error), _) | (None, false) => {
                        flr_ops::OverwritePolicy::Error
                    }
                    (Some(OverwritePolicy::Skip), _) => flr_ops::OverwritePolicy::Skip,
                    (Some(OverwritePolicy::Always), _) | (None, true) => {
                        flr_ops::OverwritePolicy::Always
                    }
                    (Some(OverwritePolicy::Rename), _) => flr_ops::OverwritePolicy::Rename,
                    (Some(OverwritePolicy::IfDifferent), _) => {
                        flr_ops::OverwritePolicy::IfDifferent
                    }
                },
                skip_existing,
                journal: !no_journal,
                compare: match compare {
                    Compare::Content => flr_ops::Compare::Content,
                    Compare::Sha256 => flr_ops::Compare::Sha256,
                    Compare::SizeMtime => flr_ops::Compare::SizeMtime,
                },
                include,
                exclude,
                checksum,
                ntfs_streams: streams,
                json,
                preserve,
            },
            Cmd::Cat { image, path } => Command::Cat { image, path },
            Cmd::Completions { .. } | Cmd::Man { .. } => {
                unreachable!("answered by the parser's own generators in main")
            }
            Cmd::Fleet { cmd } => fleet_command(cmd),
            Cmd::Mount {
                image,
                mountpoint,
                volume,
                daemon,
                allow_other,
            } => Command::Mount {
                image,
                mountpoint,
                volume,
                daemon,
                allow_other,
            },
            Cmd::Manifest { image, volumes } => Command::Manifest { image, volumes },
            Cmd::Verify {
                image,
                manifest,
                sample,
                full: _,
                seed,
                max_bytes,
                max_time,
                volumes,
                json,
                junit,
                prometheus,
                since,
                base,
                write_manifest,
            } => Command::Verify {
                image,
                manifest,
                sample,
                seed,
                max_bytes,
                max_time,
                volumes,
                json,
                junit,
                prometheus,
                since,
                base,
                write_manifest,
            },
            Cmd::Diff {
                old,
                new,
                path,
                json,
            } => Command::Diff {
                old,
                image: new,
                path,
                json,
            },
        };
        Invocation { globals, command }
    }
}

fn fleet_command(cmd: FleetCmd) -> Command {
    use flr_ops::fleet::{PlanArgs, PlanSource, ReportArgs, RunArgs};
    match cmd {
        FleetCmd::Plan {
            subscription,
            resource_group,
            tags,
            since,
            until,
            all,
            vm_tag,
            folder,
            manifests,
            sample,
            max_bytes,
            max_time,
            output,
        } => Command::FleetPlan(PlanArgs {
            source: match (folder, subscription) {
                (Some(dir), _) => PlanSource::Folder(dir),
                (None, sub) => PlanSource::Arm {
                    subscription: sub.unwrap_or_default(),
                    resource_group,
                },
            },
            output,
            tags,
            since,
            until,
            all,
            vm_tag,
            manifests,
            sample,
            max_bytes,
            max_time,
        }),
        FleetCmd::Run {
            spec,
            index,
            results,
            force,
            slot_wait,
        } => Command::FleetRun(RunArgs {
            spec,
            index,
            results,
            force,
            slot_wait,
        }),
        FleetCmd::Report {
            results,
            spec,
            output,
            title,
        } => Command::FleetReport(ReportArgs {
            results,
            spec,
            output,
            title,
        }),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match &cli.cmd {
        // About the command line itself: generated from these definitions.
        Cmd::Completions { shell } => generate::completions(*shell),
        Cmd::Man { dir } => generate::man(dir.as_deref()),
        _ => flr_ops::run(cli.into_invocation()),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
