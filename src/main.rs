//! `flr`: file-level restore from VM disk images, read-only.
//!
//! The binary only parses arguments, calls one `flr_ops` function and maps
//! its result to an exit code; everything else lives in `crates/`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use clap::{Parser, Subcommand};
use flr_blob::{BlobLocation, BlobOptions, BlobParentResolver, BlobSource};
use flr_engine::{Image, KeyRing, Scan};
use flr_ops::{
    exit, ChainOptions, Context, GetOptions, LsOptions, OpsError, OutputFormat, VolPath,
};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  partial: some files were not restored (each one is reported)
  2  usage: bad arguments, no such volume or path
  3  bad image: corrupt or unreadable input (the message names the layer and byte offset)
  4  not readable: encrypted or unsupported volume, or a file whose data flr cannot return correctly;
     for probe --dry-run: a volume is blocked (the report says why and what to do)
  5  output could not be written
  6  the key chain could not find out (Key Vault unreachable or failing)
  7  verify: the image differs from its manifest (missing, changed or extra files)

verify: 0 only when everything checked is good; 7 data mismatch, 3 unreadable files or
structural errors, 6 key chain error, 4 a volume blocked by keys (first that applies).

Volumes are addressed as ID:/path, with the ids `flr probe` shows (p1, p2, … for
partitions; disk for a filesystem without a partition table). flr never writes to
an image; restored files go only below the destination folder.";

#[derive(Parser)]
#[command(name = "flr", version, about = "File-level restore from VM disk images (raw, VHD, VHDX), read-only", after_help = EXIT_CODES)]
struct Cli {
    /// Key material for an encrypted volume, repeatable: ID=KIND:VALUE with KIND one of
    /// passphrase-file, password-file, bek, recovery (48 digits, dashes allowed), volume-key (hex).
    /// Files are read as exact bytes. Example: --key p1=recovery:111111-222222-…
    /// ID=ask (LUKS passphrase) or ID=ask-password (BitLocker password) prompts on the
    /// terminal without echo.
    #[arg(long = "key", global = true, value_name = "ID=KIND:VALUE")]
    keys: Vec<String>,
    /// A detached LUKS header for volume ID, repeatable: ID=FILE. The ADE OS-disk layout
    /// (header in luks/osluksheader on the boot partition) is found without it.
    #[arg(long = "luks-header", global = true, value_name = "ID=FILE")]
    luks_headers: Vec<String>,
    /// The disk's encryption metadata: the JSON of `az snapshot show` / `az disk show`, or
    /// Azure Backup's key-and-secret JSON. The ADE key chain fetches the disk's key from it.
    #[arg(long, global = true, value_name = "FILE")]
    metadata: Option<PathBuf>,
    /// The BEK secret (versioned URL), instead of or overriding --metadata.
    #[arg(long = "secret-url", global = true, value_name = "URL")]
    secret_url: Option<String>,
    /// The KEK (versioned URL) that wraps the secret, when its tags do not name it.
    #[arg(long = "kek-url", global = true, value_name = "URL")]
    kek_url: Option<String>,
    /// Key-chain configuration (vaults, offline keys, policy, audit); default $FLR_CONFIG,
    /// then ~/.config/flr/config.toml. See docs/flr.example.toml.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Feasibility only: read headers, metadata and key/secret attributes, never a secret's
    /// value, never unwrap. `probe --dry-run` prints a verdict per volume and exits 4 when one
    /// is blocked, 6 when the key chain could not find out.
    #[arg(long = "dry-run", global = true)]
    dry_run: bool,
    /// After the command, report on stderr what reading the image cost: bytes fetched,
    /// requests, cache hits, seconds. One JSON object with `--stats=json`, or with
    /// `--json` on probe, ls and get.
    #[arg(long, global = true, value_name = "FORMAT", num_args = 0..=1,
          require_equals = true, default_missing_value = "human", value_enum)]
    stats: Option<StatsFormat>,
    /// Range requests in flight at once when the image is a blob.
    #[arg(long, global = true, value_name = "N", default_value_t = 8)]
    concurrency: usize,
    /// Another disk of the same VM, opened together with the image so that LVM2 volume
    /// groups spanning the disks are assembled (repeatable; local paths). Its volumes are
    /// named d2/ID, d3/ID, …: `flr ls os.vhd --with-disk data.vhd d2/p1/datavg/data:/`.
    #[arg(long = "with-disk", global = true, value_name = "PATH")]
    with_disks: Vec<PathBuf>,
    /// When the image is a disk or snapshot resource id, leave the read SAS from
    /// beginGetAccess valid at the end instead of revoking it (endGetAccess).
    #[arg(long = "keep-access", global = true)]
    keep_access: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show the layers of an image: container, partition table, volumes and what is on each.
    Probe {
        /// Disk image: raw, VHD or VHDX (detected from content). A local path, a blob URL
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
        /// Long listing: mode, owner, size, mtime.
        #[arg(short = 'l', long)]
        long: bool,
        /// Recurse into subfolders.
        #[arg(short = 'R', long)]
        recursive: bool,
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
        /// Overwrite files that already exist in DEST.
        #[arg(long)]
        force: bool,
        /// Print the sha256 of each restored file (sha256sum format).
        #[arg(long)]
        checksum: bool,
        /// Summary as JSON on stderr.
        #[arg(long)]
        json: bool,
    },
    /// Mount the image's filesystems read-only (FUSE): each readable volume as a folder
    /// named by its id (p1/, p2/; ids with / nest), or one volume with --volume. Runs in
    /// the foreground until Ctrl-C/SIGTERM or `fusermount3 -u MOUNTPOINT`.
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
    /// Write a manifest (JSON) of every readable volume: path, type, size, mtime, mode,
    /// sha256 of every file. `flr verify --manifest` compares an image against it.
    Manifest {
        /// Disk image: a local path, a blob URL with a SAS, or a connection string.
        image: String,
        /// Only this volume (repeatable).
        #[arg(long = "volume", value_name = "ID")]
        volumes: Vec<String>,
    },
    /// Verify that the image restores: unlock through the key chain, walk every
    /// filesystem, read and hash every file (or a seeded sample), compare with a manifest.
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
        /// Write the report as JSON to FILE (- for stdout, instead of the summary).
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Write JUnit XML to FILE (a test case per volume and per failed file).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Write Prometheus textfile metrics (flr_verify_*) to FILE.
        #[arg(long, value_name = "FILE")]
        prometheus: Option<PathBuf>,
    },
    /// Write one file to stdout; `ID:` with an empty path streams the whole volume.
    Cat {
        /// Disk image: a local path, a blob URL with a SAS, or a connection string.
        image: String,
        /// ID:/file, or ID: for the raw volume.
        path: String,
    },
}

/// How `--stats` prints.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StatsFormat {
    /// One line for people.
    Human,
    /// One JSON object.
    Json,
}

/// The blob a command read, kept for `--stats`.
static BLOB: OnceLock<Arc<BlobSource>> = OnceLock::new();
/// The parents of that blob (a differencing disk), kept for `--stats`.
static PARENTS: OnceLock<BlobParentResolver> = OnceLock::new();

/// The image argument as it may be printed: a blob URL loses its SAS.
fn shown_location(image: &str) -> String {
    if flr_arm::is_resource_id(image) {
        image.to_string()
    } else if flr_blob::is_remote(image) {
        BlobLocation::parse(image).map_or_else(|_| "(blob)".into(), |l| l.shown().to_string())
    } else {
        image.to_string()
    }
}

/// Opens the image argument: a local path, or a blob read in ranges.
fn open_image(
    image: &str,
    scan: Scan,
    keys: &KeyRing,
    opts: &BlobOptions,
    with_disks: &[PathBuf],
) -> Result<Image, OpsError> {
    // A disk or snapshot resource id reads through the SAS that
    // beginGetAccess handed out (see flr_ops::access).
    let sas = flr_ops::access::sas_for(image);
    let image = sas.as_deref().unwrap_or(image);
    if !flr_blob::is_remote(image) {
        if with_disks.is_empty() {
            return Ok(flr_engine::open_path(Path::new(image), scan, keys)?);
        }
        let mut disks = Vec::new();
        for p in std::iter::once(Path::new(image)).chain(with_disks.iter().map(PathBuf::as_path)) {
            let f: flr_io::Source =
                Arc::new(flr_io::FileSource::open(p).map_err(flr_engine::EngineError::from)?);
            disks.push((f, p.display().to_string()));
        }
        let parents = flr_io::FileParentResolver::new(Path::new(image));
        return Ok(flr_engine::open_disks(disks, &parents, scan, keys)?);
    }
    let loc = BlobLocation::parse(image).map_err(|e| OpsError::Usage(e.to_string()))?;
    let shown = loc.shown().to_string();
    let opts = flr_ops::access::storage_auth(&loc, opts)?;
    // A differencing disk's parents are blobs beside it, read with the same
    // SAS or token; the resolver keeps them for --stats.
    let parents = BlobParentResolver::new(loc.clone(), opts.clone());
    let blob = BlobSource::open(loc, opts).map_err(|e| {
        flr_engine::EngineError::from(flr_io::IoError::Os {
            layer: "blob".into(),
            offset: 0,
            source: std::io::Error::other(e.to_string()),
        })
    })?;
    let blob = BLOB.get_or_init(|| Arc::new(blob)).clone();
    let _ = PARENTS.set(parents.clone());
    Ok(flr_engine::open_source(blob, &shown, &parents, scan, keys)?)
}

/// `--stats`: what reading the image cost, on stderr.
fn print_stats(json: bool, remote: bool, started: Instant) {
    let stats = BLOB.get().and_then(|b| {
        let mut all = vec![b.stats()];
        if let Some(p) = PARENTS.get() {
            all.extend(p.opened().iter().map(|p| p.stats()));
        }
        flr_blob::Stats::combined(&all)
    });
    let line = match (stats, json) {
        (Some(s), true) => s.json(),
        (Some(s), false) => s.human(),
        (None, false) if remote => {
            "flr: stats: the blob could not be opened (see the error above)".into()
        }
        (None, true) => format!(
            "{{\"source\":\"{}\",\"opened\":false,\"bytes_fetched\":0,\"requests\":0,\"cache_hits\":0,\"seconds\":{:.6}}}",
            if remote { "blob" } else { "local" },
            started.elapsed().as_secs_f64()
        ),
        (None, false) => format!(
            "flr: stats: local image, nothing fetched, {:.3} s",
            started.elapsed().as_secs_f64()
        ),
    };
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn parse_specs(v: &[String]) -> Result<Vec<VolPath>, OpsError> {
    v.iter()
        .map(|s| VolPath::parse(s).map_err(OpsError::Usage))
        .collect()
}

fn run(cli: Cli) -> Result<i32, OpsError> {
    let mut keys = KeyRing::new();
    for k in &cli.keys {
        flr_ops::add_key_arg(&mut keys, k).map_err(OpsError::Usage)?;
    }
    for h in &cli.luks_headers {
        flr_ops::add_luks_header_arg(&mut keys, h).map_err(OpsError::Usage)?;
    }
    flr_ops::access::set_config_path(cli.config.as_deref());
    let raw_image = match &cli.cmd {
        Cmd::Probe { image, .. }
        | Cmd::Ls { image, .. }
        | Cmd::Get { image, .. }
        | Cmd::Cat { image, .. }
        | Cmd::Mount { image, .. }
        | Cmd::Manifest { image, .. }
        | Cmd::Verify { image, .. } => image.clone(),
    };
    let resource = if flr_arm::is_resource_id(&raw_image) {
        Some(flr_ops::access::begin_access(
            &raw_image,
            cli.config.as_deref(),
            cli.keep_access,
            // `mount` unmounts on a signal and then returns: it revokes at the end.
            !matches!(cli.cmd, Cmd::Mount { .. }),
            &mut std::io::stderr(),
        )?)
    } else {
        None
    };
    let chain_opts = ChainOptions {
        config: cli.config.clone(),
        metadata: cli.metadata.clone(),
        secret_url: cli.secret_url.clone(),
        kek_url: cli.kek_url.clone(),
        dry_run: cli.dry_run,
        resource,
    };
    let image_arg = match &cli.cmd {
        Cmd::Probe { image, .. }
        | Cmd::Ls { image, .. }
        | Cmd::Get { image, .. }
        | Cmd::Mount { image, .. }
        | Cmd::Manifest { image, .. }
        | Cmd::Verify { image, .. }
        | Cmd::Cat { image, .. } => shown_location(image),
    };
    let blob_opts = BlobOptions {
        concurrency: cli.concurrency,
        ..BlobOptions::from_env()
    };
    if flr_blob::is_remote(&raw_image) || flr_arm::is_resource_id(&raw_image) {
        // Every read is a round trip: stream large files as parallel ranges
        // (FLR_READ_STREAMS overrides, 1 for one sequential stream).
        let streams = std::env::var("FLR_READ_STREAMS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cli.concurrency);
        flr_ops::set_read_streams(streams);
    }
    let chain = flr_ops::run_chain(&chain_opts, &image_arg, &mut keys)?;
    let open =
        |image: &str, scan: Scan| open_image(image, scan, &keys, &blob_opts, &cli.with_disks);
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut err = stderr.lock();
    let fmt = |json: bool| {
        if json {
            OutputFormat::Json
        } else {
            OutputFormat::Human
        }
    };
    if !matches!(cli.cmd, Cmd::Probe { .. }) {
        for c in chain.iter().flat_map(|c| &c.chains) {
            if let Some(f) = &c.finding {
                writeln!(
                    err,
                    "flr: key chain {} for {}: [{}] {}{}",
                    c.outcome,
                    c.secret,
                    f.code,
                    f.message,
                    f.remedy
                        .as_deref()
                        .map(|r| format!(" — {r}"))
                        .unwrap_or_default()
                )?;
            }
        }
    }
    let code = match cli.cmd {
        Cmd::Probe { image, json } => {
            let img = open(&image, Scan::Full)?;
            let mut ctx = Context {
                out: &mut out,
                err: &mut err,
                format: fmt(json),
            };
            let verdicts = flr_ops::probe(
                &img,
                chain.as_ref(),
                cli.dry_run || chain.is_some(),
                &mut ctx,
            )?;
            if cli.dry_run || chain.is_some() {
                if verdicts
                    .iter()
                    .any(|v| v.verdict == flr_ops::Feasible::Blocked)
                {
                    exit::NOT_READABLE
                } else if verdicts
                    .iter()
                    .any(|v| v.verdict == flr_ops::Feasible::Error)
                {
                    exit::KEY_CHAIN
                } else {
                    exit::OK
                }
            } else {
                exit::OK
            }
        }
        Cmd::Ls {
            image,
            path,
            long,
            recursive,
            json,
        } => {
            let spec = VolPath::parse(&path).map_err(OpsError::Usage)?;
            let img = open(&image, Scan::Quick)?;
            let mut ctx = Context {
                out: &mut out,
                err: &mut err,
                format: fmt(json),
            };
            flr_ops::ls(&img, &spec, LsOptions { long, recursive }, &mut ctx)?;
            exit::OK
        }
        Cmd::Get {
            image,
            paths,
            dest,
            force,
            checksum,
            json,
        } => {
            let specs = parse_specs(&paths)?;
            let img = open(&image, Scan::Quick)?;
            let mut ctx = Context {
                out: &mut out,
                err: &mut err,
                format: fmt(json),
            };
            flr_ops::get(
                &img,
                &specs,
                &GetOptions {
                    dest,
                    force,
                    checksum,
                },
                &mut ctx,
            )?;
            exit::OK
        }
        Cmd::Cat { image, path } => {
            let spec = VolPath::parse(&path).map_err(OpsError::Usage)?;
            let img = open(&image, Scan::Quick)?;
            // File data goes to stdout unbuffered: it is written in large chunks
            // already, and a buffer would only add a copy.
            out.flush()?;
            flr_ops::cat(&img, &spec, &mut std::io::stdout().lock())?;
            exit::OK
        }
        Cmd::Mount {
            image,
            mountpoint,
            volume,
            daemon: _,
            allow_other,
        } => {
            let img = open(&image, Scan::Full)?;
            let mut ctx = Context {
                out: &mut out,
                err: &mut err,
                format: OutputFormat::Human,
            };
            let args = flr_ops::MountArgs {
                mountpoint,
                volume,
                allow_other,
            };
            flr_ops::mount(
                &img,
                chain.as_ref(),
                &args,
                &mut ctx,
                flr_ops::daemon::ready,
            )?;
            exit::OK
        }
        Cmd::Manifest { image, volumes } => {
            let img = open(&image, Scan::Full)?;
            let mut ctx = Context {
                out: &mut out,
                err: &mut err,
                format: OutputFormat::Json,
            };
            flr_ops::manifest(&img, &flr_ops::ManifestOptions { volumes }, &mut ctx)?;
            exit::OK
        }
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
        } => {
            let baseline = match &manifest {
                Some(p) => {
                    let text = std::fs::read_to_string(p)
                        .map_err(|e| OpsError::Usage(format!("--manifest {}: {e}", p.display())))?;
                    Some(
                        flr_ops::read_manifest(&text).map_err(|e| {
                            OpsError::Usage(format!("--manifest {}: {e}", p.display()))
                        })?,
                    )
                }
                None => None,
            };
            let opts = flr_ops::VerifyOptions {
                manifest: baseline,
                manifest_path: manifest.map(|p| p.display().to_string()),
                sample,
                seed,
                max_bytes: max_bytes
                    .as_deref()
                    .map(flr_ops::parse_bytes)
                    .transpose()
                    .map_err(|e| OpsError::Usage(format!("--max-bytes: {e}")))?,
                max_time: max_time
                    .as_deref()
                    .map(flr_ops::parse_duration)
                    .transpose()
                    .map_err(|e| OpsError::Usage(format!("--max-time: {e}")))?,
                volumes,
                progress: json.is_none(),
            };
            let img = open(&image, Scan::Full)?;
            let report = flr_ops::verify(&img, chain.as_ref(), &opts)?;
            let to_stdout = json.as_deref() == Some(Path::new("-"));
            if to_stdout {
                flr_ops::write_json(&report, &mut out)?;
            } else {
                flr_ops::write_summary(&report, &mut out)?;
            }
            if let Some(p) = json.as_deref().filter(|p| *p != Path::new("-")) {
                flr_ops::write_file_atomically(p, |w| flr_ops::write_json(&report, w))?;
            }
            if let Some(p) = &junit {
                flr_ops::write_file_atomically(p, |w| flr_ops::write_junit(&report, w))?;
            }
            if let Some(p) = &prometheus {
                flr_ops::write_file_atomically(p, |w| flr_ops::write_prometheus(&report, w))?;
            }
            report.exit_code
        }
    };
    out.flush()?;
    Ok(code)
}

fn main() -> ExitCode {
    let started = Instant::now();
    let cli = Cli::parse();
    // `mount --daemon`: the parent only starts the detached child (which does
    // everything, key chain included) and waits until it has mounted.
    if matches!(cli.cmd, Cmd::Mount { daemon: true, .. }) && !flr_ops::daemon::is_child() {
        return match flr_ops::daemon::detach() {
            Ok(flr_ops::daemon::Detached::Mounted(pid)) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "flr: mount running in the background (pid {pid})"
                );
                ExitCode::SUCCESS
            }
            Ok(flr_ops::daemon::Detached::Failed(code)) => {
                ExitCode::from(u8::try_from(code).unwrap_or(1))
            }
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "flr: mount --daemon: {e}");
                ExitCode::from(u8::try_from(exit::OUTPUT).unwrap_or(1))
            }
        };
    }
    let stats = cli.stats.map(|format| {
        let json = format == StatsFormat::Json
            || matches!(
                cli.cmd,
                Cmd::Probe { json: true, .. }
                    | Cmd::Ls { json: true, .. }
                    | Cmd::Get { json: true, .. }
            );
        let (Cmd::Probe { image, .. }
        | Cmd::Ls { image, .. }
        | Cmd::Get { image, .. }
        | Cmd::Mount { image, .. }
        | Cmd::Manifest { image, .. }
        | Cmd::Verify { image, .. }
        | Cmd::Cat { image, .. }) = &cli.cmd;
        (
            json,
            flr_blob::is_remote(image) || flr_arm::is_resource_id(image),
        )
    });
    let code = match run(cli) {
        Ok(c) => c,
        // A closed pipe (`flr cat … | head`) is not an error.
        Err(OpsError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "flr: {e}");
            e.exit_code()
        }
    };
    if let Some((json, remote)) = stats {
        print_stats(json, remote, started);
    }
    // A read SAS from beginGetAccess is given back whatever happened.
    flr_ops::access::end_access(&mut std::io::stderr());
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
