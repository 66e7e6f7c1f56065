//! One run of the command line: [`run`] takes what the binary parsed
//! ([`Invocation`]) and does everything else: reads key files and asks for
//! passphrases, loads the configuration once, captures the environment
//! once (the layers below read it from here), opens the image argument (a
//! path, a blob URL with or without a SAS, a connection string, a disk or
//! snapshot resource id with its access grant), runs the key chain,
//! dispatches the command, prints `--stats`, revokes the access, and maps
//! the outcome to an exit code. Per-run state lives in the [`Session`], not
//! in statics.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use flr_arm::DiskAccess;
use flr_blob::{BlobLocation, BlobOptions, BlobParentResolver, BlobSource};
use flr_config::{Config, Environment};
use flr_engine::{Image, KeyRing, Scan};

use crate::extract::Partials;
use crate::{
    access, exit, ChainOptions, ChainSummary, Context, Feasible, GetOptions, LsOptions, OpsError,
    OutputFormat, Streams, VolPath,
};

/// How `--stats` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsFormat {
    /// One line for people.
    Human,
    /// One JSON object.
    Json,
}

/// The options every command takes.
#[derive(Debug, Clone, Default)]
pub struct Globals {
    /// `--key ID=KIND:VALUE`, as given.
    pub keys: Vec<String>,
    /// `--luks-header ID=FILE`, as given.
    pub luks_headers: Vec<String>,
    /// `--metadata FILE`.
    pub metadata: Option<PathBuf>,
    /// `--secret-url URL`.
    pub secret_url: Option<String>,
    /// `--kek-url URL`.
    pub kek_url: Option<String>,
    /// `--config FILE` (else `$FLR_CONFIG`, else the user's config file).
    pub config: Option<PathBuf>,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--stats[=json]`.
    pub stats: Option<StatsFormat>,
    /// `--concurrency N`.
    pub concurrency: usize,
    /// `--with-disk PATH`.
    pub with_disks: Vec<PathBuf>,
    /// `--keep-access`.
    pub keep_access: bool,
    /// `--format`: JSON on stdout for every command.
    pub format: OutputFormat,
    /// `-q`, `-v`, `--log-format` (colour is decided by the session).
    pub log: crate::LogOptions,
}

/// A command and its own arguments.
#[derive(Debug, Clone)]
pub enum Command {
    /// `probe IMAGE [--json]`.
    Probe {
        /// The image argument.
        image: String,
        /// JSON output.
        json: bool,
    },
    /// `ls IMAGE ID:/path`.
    Ls {
        /// The image argument.
        image: String,
        /// `ID:/folder`.
        path: String,
        /// `-l`.
        long: bool,
        /// `-R`.
        recursive: bool,
        /// `--streams`: alternate data streams too.
        streams: bool,
        /// JSON Lines.
        json: bool,
    },
    /// `get IMAGE ID:/path… -o DEST`.
    Get {
        /// The image argument.
        image: String,
        /// `ID:/path` of each item.
        paths: Vec<String>,
        /// Destination folder.
        dest: PathBuf,
        /// `--overwrite` (`--force` is `Always`).
        overwrite: crate::OverwritePolicy,
        /// `--skip-existing`.
        skip_existing: bool,
        /// Not `--no-journal`.
        journal: bool,
        /// `--compare`.
        compare: crate::Compare,
        /// `--include` patterns.
        include: Vec<String>,
        /// `--exclude` patterns.
        exclude: Vec<String>,
        /// Print sha256 lines.
        checksum: bool,
        /// `--streams`: how alternate data streams are restored.
        ntfs_streams: crate::NtfsStreams,
        /// Summary as JSON.
        json: bool,
        /// `--preserve` (`xattrs,acl,owner`, `all`, `none`).
        preserve: crate::Preserve,
    },
    /// `cat IMAGE ID:/file`.
    Cat {
        /// The image argument.
        image: String,
        /// `ID:/file` or `ID:`.
        path: String,
    },
    /// `mount IMAGE MOUNTPOINT`.
    Mount {
        /// The image argument.
        image: String,
        /// Where.
        mountpoint: PathBuf,
        /// One volume only.
        volume: Option<String>,
        /// Detach.
        daemon: bool,
        /// `--allow-other`.
        allow_other: bool,
    },
    /// `manifest IMAGE`.
    Manifest {
        /// The image argument.
        image: String,
        /// Only these volumes.
        volumes: Vec<String>,
    },
    /// `verify IMAGE`.
    Verify {
        /// The image argument.
        image: String,
        /// `--manifest FILE`.
        manifest: Option<PathBuf>,
        /// `--sample N`.
        sample: Option<usize>,
        /// `--seed S`.
        seed: Option<u64>,
        /// `--max-bytes B`, as given.
        max_bytes: Option<String>,
        /// `--max-time T`, as given.
        max_time: Option<String>,
        /// Only these volumes.
        volumes: Vec<String>,
        /// `--json FILE` (`-` for stdout).
        json: Option<PathBuf>,
        /// `--junit FILE`.
        junit: Option<PathBuf>,
        /// `--prometheus FILE`.
        prometheus: Option<PathBuf>,
        /// `--since MANIFEST`: the previous snapshot's manifest.
        since: Option<PathBuf>,
        /// `--base IMAGE`: the previous snapshot (default: the manifest's image).
        base: Option<String>,
        /// `--write-manifest FILE`: the manifest for the next run.
        write_manifest: Option<PathBuf>,
    },
    /// `diff OLD NEW [ID:/path]`.
    Diff {
        /// The older image.
        old: String,
        /// The newer image.
        image: String,
        /// `ID:/folder`.
        path: Option<String>,
        /// JSON Lines.
        json: bool,
    },
    /// `fleet plan`: write a spec.
    FleetPlan(crate::fleet::PlanArgs),
    /// `fleet run SPEC`: verify one item.
    FleetRun(crate::fleet::RunArgs),
    /// `fleet report RESULTS`: gather the results.
    FleetReport(crate::fleet::ReportArgs),
}

impl Command {
    /// The image argument, as given.
    pub fn image(&self) -> &str {
        match self {
            Command::Probe { image, .. }
            | Command::Ls { image, .. }
            | Command::Get { image, .. }
            | Command::Cat { image, .. }
            | Command::Mount { image, .. }
            | Command::Manifest { image, .. }
            | Command::Verify { image, .. }
            | Command::Diff { image, .. } => image,
            Command::FleetPlan(_) | Command::FleetRun(_) | Command::FleetReport(_) => "",
        }
    }

    fn is_fleet(&self) -> bool {
        matches!(
            self,
            Command::FleetPlan(_) | Command::FleetRun(_) | Command::FleetReport(_)
        )
    }

    /// Whether the command's own `--json` asks for machine-readable output
    /// (`--stats` then prints JSON too).
    fn json(&self) -> bool {
        matches!(
            self,
            Command::Probe { json: true, .. }
                | Command::Ls { json: true, .. }
                | Command::Get { json: true, .. }
                | Command::Diff { json: true, .. }
        )
    }
}

/// What the binary parsed.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The options of every command.
    pub globals: Globals,
    /// The command.
    pub command: Command,
}

/// What a signal must undo before the process ends: unfinished output
/// files, and a read grant to revoke.
#[derive(Default)]
pub(crate) struct Cleanup {
    partials: Arc<Partials>,
    access: Mutex<Option<Arc<DiskAccess>>>,
    /// The grant for a diff's or `verify --since`'s older snapshot.
    base_access: Mutex<Option<Arc<DiskAccess>>>,
    /// A fleet task's export slot, given back after the grant.
    pub(crate) lease: Mutex<Option<flr_fleet::Lease>>,
}

impl Cleanup {
    fn interrupted(&self) {
        let mut err = access::RawStderr;
        let _ = writeln!(err, "flr: interrupted");
        self.partials.remove_all();
        if let Some(a) = self
            .access
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            access::end_access(a, &mut err);
        }
        if let Some(a) = self
            .base_access
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            access::end_access(a, &mut err);
        }
        // Only once the export is revoked may another task take the slot.
        if let Some(l) = self.lease.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = l.release();
        }
        std::process::exit(130);
    }
}

/// The state of one run: configuration, environment, keys, the image's
/// source and grant, and what reading it cost.
pub struct Session {
    pub(crate) globals: Globals,
    pub(crate) env: Arc<Environment>,
    /// Loaded on first use (a local image with no key chain never reads it).
    config: Option<Config>,
    keys: KeyRing,
    pub(crate) cleanup: Arc<Cleanup>,
    pub(crate) access: Option<Arc<DiskAccess>>,
    pub(crate) blob: Option<Arc<BlobSource>>,
    blob_parents: Option<BlobParentResolver>,
    /// The older snapshot's grant, blob and parents (diff, verify --since).
    base_access: Option<Arc<DiskAccess>>,
    base_blob: Option<(Arc<BlobSource>, BlobParentResolver)>,
    streams: Streams,
    started: Instant,
}

/// Runs one invocation to its end and returns the process exit code:
/// messages go to stderr, results to stdout.
pub fn run(inv: Invocation) -> i32 {
    // `mount --daemon`: the parent only starts the detached child (which
    // does everything, key chain included) and waits until it has mounted.
    if matches!(inv.command, Command::Mount { daemon: true, .. }) && !crate::daemon::is_child() {
        return match crate::daemon::detach() {
            Ok(crate::daemon::Detached::Mounted(pid)) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "flr: mount running in the background (pid {pid})"
                );
                exit::OK
            }
            Ok(crate::daemon::Detached::Failed(code)) => code,
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "flr: mount --daemon: {e}");
                exit::OUTPUT
            }
        };
    }
    let env = Arc::new(Environment::from_vars(std::env::vars()));
    let mut inv = inv;
    inv.globals.log = inv.globals.log.decide_color(env.get("NO_COLOR"));
    let log = inv.globals.log;
    let mut s = Session::new(inv.globals, env);
    deprecations(&s.globals, &inv.command, log);
    let stats_json = s.globals.stats == Some(StatsFormat::Json)
        || inv.command.json()
        || s.globals.format == OutputFormat::Json;
    let remote = is_remote(inv.command.image());
    let code = match s.execute(inv.command) {
        Ok(c) => c,
        // A closed pipe (`flr cat … | head`) is not an error.
        Err(OpsError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            let mut err = crate::LogWriter::new(std::io::stderr().lock(), log);
            let _ = err.message(crate::Level::Error, &format!("flr: {e}"));
            e.exit_code()
        }
    };
    if log.verbose >= 1 {
        let mut err = crate::LogWriter::new(std::io::stderr().lock(), log);
        let _ = err.message(
            crate::Level::Debug,
            &format!(
                "flr: finished in {:.3} s (exit {code})",
                s.started.elapsed().as_secs_f64()
            ),
        );
    }
    if s.globals.stats.is_some() {
        s.print_stats(stats_json, remote);
    }
    // A read SAS from beginGetAccess is given back whatever happened.
    s.end_access(&mut std::io::stderr());
    code
}

/// Old spellings keep working for one release, with a note on stderr.
fn deprecations(g: &Globals, cmd: &Command, log: crate::LogOptions) {
    let mut err = crate::LogWriter::new(std::io::stderr().lock(), log);
    let mut note = |m: &str| {
        let _ = err.message(crate::Level::Warning, &format!("flr: warning: {m}"));
    };
    if matches!(cmd, Command::Get { json: true, .. }) {
        note("`get --json` is deprecated: use `--format json` (the summary then goes to stdout)");
    }
    if let Command::Verify { json: Some(p), .. } = cmd {
        if p == Path::new("-") {
            note("`verify --json -` is deprecated: use `--format json`");
        } else {
            note("`verify --json FILE` is deprecated: use `--format json > FILE`");
        }
    }
    if g.stats == Some(StatsFormat::Json) {
        note("`--stats=json` is deprecated: use `--stats --format json`");
    }
}

fn is_remote(image: &str) -> bool {
    flr_blob::is_remote(image) || flr_arm::is_resource_id(image)
}

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

impl Session {
    /// A session for `globals`, reading variables from `env`. Nothing is
    /// opened yet.
    pub fn new(globals: Globals, env: Arc<Environment>) -> Session {
        Session {
            globals,
            env,
            config: None,
            keys: KeyRing::new(),
            cleanup: Arc::default(),
            access: None,
            blob: None,
            blob_parents: None,
            base_access: None,
            base_blob: None,
            streams: Streams::default(),
            started: Instant::now(),
        }
    }

    /// `--config`, else `$FLR_CONFIG`, else `$XDG_CONFIG_HOME/flr/config.toml`
    /// (`~/.config/flr/config.toml`) when it exists.
    fn config_path(&self) -> Option<PathBuf> {
        if let Some(p) = &self.globals.config {
            return Some(p.clone());
        }
        if let Some(p) = self.env.get("FLR_CONFIG") {
            return Some(PathBuf::from(p));
        }
        self.user_dir("XDG_CONFIG_HOME", ".config")
            .map(|d| d.join("flr/config.toml"))
            .filter(|p| p.exists())
    }

    /// The configuration, loaded once, with the captured environment.
    pub(crate) fn config(&mut self) -> Result<&Config, OpsError> {
        if self.config.is_none() {
            let mut cfg = Config::load(self.config_path().as_deref()).map_err(OpsError::Usage)?;
            cfg.azure.env = self.env.clone();
            self.config = Some(cfg);
        }
        Ok(self.config.get_or_insert_with(Config::default))
    }

    /// `$VAR` (when absolute), else `$HOME/<fallback>`.
    fn user_dir(&self, var: &str, fallback: &str) -> Option<PathBuf> {
        self.env
            .get(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| {
                self.env
                    .get("HOME")
                    .map(|h| PathBuf::from(h).join(fallback))
            })
    }

    /// Reads keys, loads the configuration, opens access and runs the key
    /// chain, then the command.
    fn execute(&mut self, cmd: Command) -> Result<i32, OpsError> {
        if cmd.is_fleet() {
            return crate::fleet::execute(self, cmd);
        }
        self.read_keys()?;
        let image = cmd.image().to_string();
        let mount = matches!(cmd, Command::Mount { .. });
        if !mount {
            // Ctrl-C removes unfinished output files and revokes a grant
            // (`mount` unmounts on a signal, then returns normally).
            self.handle_signals();
        }
        let chain = self.prepare(&image, mount)?;
        if !matches!(cmd, Command::Probe { .. }) {
            report_chain(chain.as_ref(), self.globals.log)?;
        }
        self.dispatch(cmd, chain.as_ref())
    }

    /// `--key` and `--luks-header`.
    pub(crate) fn read_keys(&mut self) -> Result<(), OpsError> {
        for k in &self.globals.keys {
            crate::add_key_arg(&mut self.keys, k).map_err(OpsError::Usage)?;
        }
        for h in &self.globals.luks_headers {
            crate::add_luks_header_arg(&mut self.keys, h).map_err(OpsError::Usage)?;
        }
        Ok(())
    }

    /// SIGINT/SIGTERM/SIGHUP: remove unfinished output, revoke the grant,
    /// give back a fleet slot, exit 130.
    pub(crate) fn handle_signals(&self) {
        let c = self.cleanup.clone();
        let _ = ctrlc::set_handler(move || c.interrupted());
    }

    /// Requests access for a resource id (recorded for the signal
    /// handler), sets up the read streams, and runs the key chain.
    pub(crate) fn prepare(
        &mut self,
        image: &str,
        mount: bool,
    ) -> Result<Option<ChainSummary>, OpsError> {
        let image = image.to_string();
        let resource = if flr_arm::is_resource_id(&image) {
            let keep = self.globals.keep_access;
            let (grant, facts) =
                access::begin_access(&image, self.config()?, keep, mount, &mut std::io::stderr())?;
            *self
                .cleanup
                .access
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(grant.clone());
            self.access = Some(grant);
            Some(facts)
        } else {
            None
        };
        if is_remote(&image) {
            // Every read is a round trip: stream large files as parallel
            // ranges (FLR_READ_STREAMS overrides, 1 for one sequential
            // stream; FLR_STREAM_CHUNK_MIB measures other chunk sizes).
            let count = self
                .env
                .number("FLR_READ_STREAMS")
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(self.globals.concurrency);
            self.streams = Streams::parallel(count);
            // Files are hashed (and their extents asked) on rayon's pool:
            // over the network each thread mostly waits for a round trip,
            // so more of them than cores keep requests in flight. Only the
            // first call in a process takes effect.
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads(self.globals.concurrency.clamp(4, 32))
                .build_global();
        }
        if let Some(m) = self
            .env
            .number("FLR_STREAM_CHUNK_MIB")
            .filter(|m| (1..=256).contains(m))
        {
            self.streams.chunk = usize::try_from(m << 20).unwrap_or(self.streams.chunk);
        }
        let chain_opts = ChainOptions {
            metadata: self.globals.metadata.clone(),
            secret_url: self.globals.secret_url.clone(),
            kek_url: self.globals.kek_url.clone(),
            dry_run: self.globals.dry_run,
            resource,
        };
        let chain = if chain_opts.wanted() {
            let state = self.user_dir("XDG_STATE_HOME", ".local/state");
            let cfg = self.config()?.clone();
            crate::run_chain(
                &chain_opts,
                &cfg,
                state.as_deref(),
                &shown_location(&image),
                &mut self.keys,
            )?
        } else {
            None
        };
        Ok(chain)
    }

    /// Opens `image` and verifies it (what `flr verify` does before it
    /// writes its reports).
    pub(crate) fn verify_report(
        &mut self,
        image: &str,
        opts: &crate::VerifyOptions,
        chain: Option<&ChainSummary>,
    ) -> Result<crate::VerifyReport, OpsError> {
        let img = self.open(image, Scan::Full)?;
        crate::verify(&img, chain, opts)
    }

    /// Bytes fetched and requests made for the image (blobs and Resource
    /// Manager).
    pub(crate) fn costs(&self) -> (u64, u64) {
        let mut bytes = 0;
        let mut requests = 0;
        if let Some(s) = self.blob_stats() {
            {
                bytes = s.bytes_fetched;
                requests = s.requests;
            }
        }
        if let Some(a) = &self.access {
            requests += a.client().requests() as u64;
        }
        if let Some(a) = &self.base_access {
            requests += a.client().requests() as u64;
        }
        (bytes, requests)
    }

    /// What the blobs read cost together: the image, its parents, and a
    /// pair's older snapshot with its parents.
    fn blob_stats(&self) -> Option<flr_blob::Stats> {
        let mut all = Vec::new();
        if let Some(b) = &self.blob {
            all.push(b.stats());
            if let Some(p) = &self.blob_parents {
                all.extend(p.opened().iter().map(|p| p.stats()));
            }
        }
        if let Some((b, p)) = &self.base_blob {
            all.push(b.stats());
            all.extend(p.opened().iter().map(|p| p.stats()));
        }
        flr_blob::Stats::combined(&all)
    }

    fn dispatch(&mut self, cmd: Command, chain: Option<&ChainSummary>) -> Result<i32, OpsError> {
        let stdout = std::io::stdout();
        let stderr = std::io::stderr();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
        // Not locked for the whole command: progress bars draw from worker
        // threads (verify, manifest hash in parallel) and from a ticker.
        let mut err = crate::LogWriter::new(stderr, self.globals.log);
        let global_json = self.globals.format == OutputFormat::Json;
        // A bar on stderr: a terminal, output for people, not quiet (each
        // command adds its own JSON switch).
        let progress = crate::progress::wanted(self.globals.format, self.globals.log);
        let fmt = |json: bool| {
            if json || global_json {
                OutputFormat::Json
            } else {
                OutputFormat::Human
            }
        };
        let code = match cmd {
            Command::Probe { image, json } => {
                let img = self.open(&image, Scan::Full)?;
                let mut ctx = Context {
                    out: &mut out,
                    err: &mut err,
                    format: fmt(json),
                };
                let verdicts = crate::probe(
                    &img,
                    chain,
                    self.globals.dry_run || chain.is_some(),
                    &mut ctx,
                )?;
                if !(self.globals.dry_run || chain.is_some()) {
                    exit::OK
                } else if verdicts.iter().any(|v| v.verdict == Feasible::Blocked) {
                    exit::NOT_READABLE
                } else if verdicts.iter().any(|v| v.verdict == Feasible::Error) {
                    exit::KEY_CHAIN
                } else {
                    exit::OK
                }
            }
            Command::Ls {
                image,
                path,
                long,
                recursive,
                streams,
                json,
            } => {
                let spec = VolPath::parse(&path).map_err(OpsError::Usage)?;
                let img = self.open(&image, Scan::Quick)?;
                let mut ctx = Context {
                    out: &mut out,
                    err: &mut err,
                    format: fmt(json),
                };
                crate::ls(
                    &img,
                    &spec,
                    LsOptions {
                        long,
                        recursive,
                        streams,
                    },
                    &mut ctx,
                )?;
                exit::OK
            }
            Command::Get {
                image,
                paths,
                dest,
                overwrite,
                skip_existing,
                journal,
                compare,
                include,
                exclude,
                checksum,
                ntfs_streams,
                json,
                preserve,
            } => {
                let selection =
                    crate::Selection::new(&include, &exclude).map_err(OpsError::Usage)?;
                let specs = paths
                    .iter()
                    .map(|s| VolPath::parse(s).map_err(OpsError::Usage))
                    .collect::<Result<Vec<_>, _>>()?;
                let img = self.open(&image, Scan::Quick)?;
                let mut ctx = Context {
                    out: &mut out,
                    err: &mut err,
                    format: fmt(json),
                };
                let summary_on_stdout = global_json;
                let opts = GetOptions {
                    summary_on_stdout,
                    dest,
                    overwrite,
                    skip_existing,
                    journal,
                    compare,
                    selection,
                    dry_run: self.globals.dry_run,
                    checksum,
                    streams: self.streams,
                    ntfs_streams,
                    partials: self.cleanup.partials.clone(),
                    preserve,
                    progress: progress && !json,
                };
                crate::get(&img, &specs, &opts, &mut ctx)?;
                exit::OK
            }
            Command::Cat { image, path } => {
                let spec = VolPath::parse(&path).map_err(OpsError::Usage)?;
                let img = self.open(&image, Scan::Quick)?;
                // File data goes to stdout unbuffered: it is written in large
                // chunks already, and a buffer would only add a copy.
                out.flush()?;
                // Into a pipe, a larger pipe buffer lets the reader keep up.
                // FLR_PIPE_BUFFER_KIB=0 leaves it as it is (a test that needs
                // flr blocked on a full 64 KiB pipe).
                let want = self
                    .env
                    .number("FLR_PIPE_BUFFER_KIB")
                    .and_then(|k| usize::try_from(k).ok())
                    .map_or(crate::pipe::WANT, |k| k << 10);
                if want > 0 {
                    crate::pipe::widen(std::io::stdout(), want);
                }
                // Into a regular file, holes are skipped (it stays sparse).
                let file = crate::sparse::regular_file(std::io::stdout());
                // To a file or a pipe only: on a terminal the bar would
                // mix with the file's bytes.
                let bar = progress && !std::io::IsTerminal::is_terminal(&std::io::stdout());
                crate::cat_to(
                    &img,
                    &spec,
                    self.streams,
                    &mut std::io::stdout().lock(),
                    file,
                    &mut err,
                    bar,
                )?;
                exit::OK
            }
            Command::Mount {
                image,
                mountpoint,
                volume,
                daemon: _,
                allow_other,
            } => {
                // The first scan (every volume of the image) can take a while
                // on a blob: a spinner until it is done.
                let scan = crate::progress::Progress::spinner(progress, "mount");
                scan.note(format!("scanning {}", shown_location(&image)));
                let img = self.open(&image, Scan::Full);
                scan.finish();
                let img = img?;
                let mut ctx = Context {
                    out: &mut out,
                    err: &mut err,
                    format: OutputFormat::Human,
                };
                let args = crate::MountArgs {
                    mountpoint,
                    volume,
                    allow_other,
                };
                crate::mount(&img, chain, &args, &mut ctx, crate::daemon::ready)?;
                exit::OK
            }
            Command::Manifest { image, volumes } => {
                let img = self.open(&image, Scan::Full)?;
                let mut ctx = Context {
                    out: &mut out,
                    err: &mut err,
                    format: OutputFormat::Json,
                };
                let opts = crate::ManifestOptions { volumes, progress };
                crate::manifest(&img, &opts, &mut ctx)?;
                exit::OK
            }
            Command::Diff {
                old,
                image,
                path,
                json,
            } => {
                let spec = path
                    .as_deref()
                    .map(VolPath::parse)
                    .transpose()
                    .map_err(OpsError::Usage)?;
                let spin = crate::progress::Progress::spinner(progress && !json, "diff");
                spin.note("comparing the disks' blocks".into());
                let pair = self.open_pair(&old, &image);
                spin.finish();
                let pair = pair?;
                let json = json || self.globals.format == OutputFormat::Json;
                let ctx = Context {
                    out: &mut out,
                    err: &mut err,
                    format: fmt(json),
                };
                if !json {
                    writeln!(
                        ctx.err,
                        "flr: diff: changed ranges by {}: {} bytes in {} ranges ({} bytes read to find them, {:.2} s){}",
                        pair.facts.method.as_str(),
                        pair.facts.changed_bytes,
                        pair.facts.ranges,
                        pair.facts.bytes_read,
                        pair.facts.seconds,
                        pair.facts.note.as_deref().map(|n| format!("; {n}")).unwrap_or_default()
                    )?;
                }
                let spin = crate::progress::Progress::spinner(progress && !json, "diff");
                spin.note("comparing the changed files".into());
                let mut lifted = spin.wrap(ctx.err);
                let mut ctx = Context {
                    out: ctx.out,
                    err: &mut lifted,
                    format: ctx.format,
                };
                let r = crate::diff(
                    &pair.old,
                    &pair.new,
                    &crate::DiffOptions { path: spec },
                    &mut ctx,
                );
                spin.finish();
                r?;
                exit::OK
            }
            Command::FleetPlan(_) | Command::FleetRun(_) | Command::FleetReport(_) => {
                unreachable!("fleet commands are run by crate::fleet")
            }
            Command::Verify {
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
            } => {
                let since = match &since {
                    Some(p) => Some(self.since(p, base.as_deref(), &image)?),
                    None => None,
                };
                let baseline = match &manifest {
                    Some(p) => {
                        let text = std::fs::read_to_string(p).map_err(|e| {
                            OpsError::Usage(format!("--manifest {}: {e}", p.display()))
                        })?;
                        Some(crate::read_manifest(&text).map_err(|e| {
                            OpsError::Usage(format!("--manifest {}: {e}", p.display()))
                        })?)
                    }
                    None => None,
                };
                let opts = crate::VerifyOptions {
                    manifest: baseline,
                    manifest_path: manifest.map(|p| p.display().to_string()),
                    sample,
                    seed,
                    max_bytes: max_bytes
                        .as_deref()
                        .map(crate::parse_bytes)
                        .transpose()
                        .map_err(|e| OpsError::Usage(format!("--max-bytes: {e}")))?,
                    max_time: max_time
                        .as_deref()
                        .map(crate::parse_duration)
                        .transpose()
                        .map_err(|e| OpsError::Usage(format!("--max-time: {e}")))?,
                    volumes,
                    progress: progress && json.is_none(),
                    write_manifest: write_manifest.is_some(),
                    since: since.as_ref().map(|s| s.0.clone()),
                };
                let report = match since {
                    Some((_, new)) => crate::verify(&new, chain, &opts)?,
                    None => self.verify_report(&image, &opts, chain)?,
                };
                if let (Some(p), Some(m)) = (&write_manifest, &report.new_manifest) {
                    crate::write_file_atomically(p, |w| crate::write_manifest(m, w))?;
                }
                if json.as_deref() == Some(Path::new("-")) || global_json {
                    crate::write_json(&report, &mut out)?;
                } else {
                    crate::write_summary(&report, &mut out)?;
                }
                if let Some(p) = json.as_deref().filter(|p| *p != Path::new("-")) {
                    crate::write_file_atomically(p, |w| crate::write_json(&report, w))?;
                }
                if let Some(p) = &junit {
                    crate::write_file_atomically(p, |w| crate::write_junit(&report, w))?;
                }
                if let Some(p) = &prometheus {
                    crate::write_file_atomically(p, |w| crate::write_prometheus(&report, w))?;
                }
                report.exit_code
            }
        };
        out.flush()?;
        Ok(code)
    }

    /// Opens the image argument: a local path (with `--with-disk`'s other
    /// disks), or a blob read in ranges (a resource id reads through the SAS
    /// its grant handed out).
    fn open(&mut self, image: &str, scan: Scan) -> Result<Image, OpsError> {
        let img = self.open_image(image, scan)?;
        if self.globals.log.verbose >= 2 {
            let mut err = crate::LogWriter::new(std::io::stderr().lock(), self.globals.log);
            for v in &img.volumes {
                let _ = err.message(
                    crate::Level::Trace,
                    &format!("flr: {}: volume of {} bytes", v.id, v.size),
                );
            }
        }
        Ok(img)
    }

    fn open_image(&mut self, image: &str, scan: Scan) -> Result<Image, OpsError> {
        let sas = self.access.as_ref().and_then(|a| access::sas_for(a, image));
        let image = sas.as_deref().unwrap_or(image);
        if !flr_blob::is_remote(image) {
            if self.globals.with_disks.is_empty() {
                return Ok(flr_engine::open_path(Path::new(image), scan, &self.keys)?);
            }
            let mut disks = Vec::new();
            for p in std::iter::once(Path::new(image))
                .chain(self.globals.with_disks.iter().map(PathBuf::as_path))
            {
                let f: flr_io::Source =
                    Arc::new(flr_io::FileSource::open(p).map_err(flr_engine::EngineError::from)?);
                disks.push((f, p.display().to_string()));
            }
            let parents = flr_io::FileParentResolver::new(Path::new(image));
            return Ok(flr_engine::open_disks(disks, &parents, scan, &self.keys)?);
        }
        let (blob, parents, shown) = self.open_blob(image)?;
        self.blob = Some(blob.clone());
        self.blob_parents = Some(parents.clone());
        Ok(flr_engine::open_source(
            blob, &shown, &parents, scan, &self.keys,
        )?)
    }

    /// Opens a blob URL (a SAS, or an Entra token as configured): the
    /// source, the resolver of a differencing disk's parents beside it,
    /// and its location without the SAS.
    fn open_blob(
        &mut self,
        image: &str,
    ) -> Result<(Arc<BlobSource>, BlobParentResolver, String), OpsError> {
        let (loc, opts) = self.blob_options(image)?;
        open_prepared(loc, opts)
    }

    /// Where blob `image` is and how to read it (credentials, CA, the
    /// global concurrency).
    fn blob_options(&mut self, image: &str) -> Result<(BlobLocation, BlobOptions), OpsError> {
        let loc = BlobLocation::parse(image).map_err(|e| OpsError::Usage(e.to_string()))?;
        let opts = BlobOptions {
            concurrency: self.globals.concurrency,
            ..BlobOptions::from_environment(&self.env)
        };
        let mut opts = if loc.has_sas() || opts.bearer.is_some() {
            opts
        } else {
            let cfg = self.config()?;
            access::storage_auth(&loc, &opts, cfg)?
        };
        // `[azure] ca_file` is trusted for SAS URLs too (test servers,
        // TLS-inspecting proxies).
        if opts.ca_file.is_none() {
            opts.ca_file = self.config()?.azure.ca_file.clone();
        }
        Ok((loc, opts))
    }
    /// OLD and NEW opened as a pair, NEW's stack answering `changed`
    /// against OLD. Local images: a differencing chain, else a block
    /// comparison. Blobs (URLs, snapshot URLs, resource ids, each granted
    /// and revoked): the Blob service's page-range diff when both are
    /// snapshots of one blob (`prevsnapshot`) or of one managed disk
    /// (`x-ms-previous-snapshot-url`), else a block comparison.
    fn open_pair(&mut self, old: &str, new: &str) -> Result<flr_engine::Pair, OpsError> {
        let opts = flr_engine::CompareOptions {
            scan: Scan::Full,
            threads: self.globals.concurrency.clamp(2, 16),
            ..Default::default()
        };
        if !is_remote(old) && !is_remote(new) {
            return Ok(flr_engine::open_pair_paths(
                Path::new(old),
                Path::new(new),
                &opts,
                &self.keys,
            )?);
        }
        // The newer image's grant was made by `prepare`; the older one's here.
        if flr_arm::is_resource_id(old)
            && self
                .access
                .as_ref()
                .and_then(|a| access::sas_for(a, old))
                .is_none()
        {
            let keep = self.globals.keep_access;
            let (grant, _) =
                access::begin_access(old, self.config()?, keep, false, &mut std::io::stderr())?;
            *self
                .cleanup
                .base_access
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(grant.clone());
            self.base_access = Some(grant);
        }
        let resolve = |s: &Session, arg: &str| -> String {
            s.access
                .as_ref()
                .and_then(|a| access::sas_for(a, arg))
                .or_else(|| s.base_access.as_ref().and_then(|a| access::sas_for(a, arg)))
                .unwrap_or_else(|| arg.to_string())
        };
        let (old_url, new_url) = (resolve(self, old), resolve(self, new));
        let both_disks = flr_arm::is_resource_id(old) && flr_arm::is_resource_id(new);

        enum Opened {
            Local(flr_io::Source, flr_io::FileParentResolver, String),
            Blob(Arc<BlobSource>, Box<BlobParentResolver>, String),
        }
        type Prepared = (Arc<BlobSource>, BlobParentResolver, String);
        // Two blobs are opened at once: each open is several round trips
        // (connection, properties, page map).
        let mut pre: (Option<Prepared>, Option<Prepared>) = (None, None);
        if flr_blob::is_remote(&old_url) && flr_blob::is_remote(&new_url) {
            let (a, b) = (self.blob_options(&old_url)?, self.blob_options(&new_url)?);
            let (ra, rb) = std::thread::scope(|sc| {
                let h = sc.spawn(|| open_prepared(a.0, a.1));
                let rb = open_prepared(b.0, b.1);
                (
                    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
                    rb,
                )
            });
            pre = (Some(ra?), Some(rb?));
        }
        let mut open_side = |s: &mut Session, url: &str, base: bool| -> Result<Opened, OpsError> {
            if flr_blob::is_remote(url) {
                let ready = if base { pre.0.take() } else { pre.1.take() };
                let (b, p, shown) = match ready {
                    Some(r) => r,
                    None => s.open_blob(url)?,
                };
                if base {
                    s.base_blob = Some((b.clone(), p.clone()));
                } else {
                    s.blob = Some(b.clone());
                    s.blob_parents = Some(p.clone());
                }
                Ok(Opened::Blob(b, Box::new(p), shown))
            } else {
                let f: flr_io::Source = Arc::new(
                    flr_io::FileSource::open(Path::new(url))
                        .map_err(flr_engine::EngineError::from)?,
                );
                Ok(Opened::Local(
                    f,
                    flr_io::FileParentResolver::new(Path::new(url)),
                    url.to_string(),
                ))
            }
        };
        let o = open_side(self, &old_url, true)?;
        let n = open_side(self, &new_url, false)?;
        let mut note = None;
        let known = match (&o, &n) {
            (Opened::Blob(ob, _, _), Opened::Blob(nb, _, _)) => {
                let (ol, nl) = (
                    BlobLocation::parse(&old_url).map_err(|e| OpsError::Usage(e.to_string()))?,
                    BlobLocation::parse(&new_url).map_err(|e| OpsError::Usage(e.to_string()))?,
                );
                let prev = if both_disks {
                    Some(flr_blob::PreviousSnapshot::Url(ol.clone()))
                } else if let (true, Some(t)) = (ol.same_blob(&nl), ol.snapshot()) {
                    Some(flr_blob::PreviousSnapshot::Snapshot(t))
                } else if ol.snapshot().is_some() && nl.snapshot().is_some() {
                    Some(flr_blob::PreviousSnapshot::Url(ol.clone()))
                } else {
                    note = Some(
                        "the older blob is not a snapshot of the newer one's blob or disk"
                            .to_string(),
                    );
                    None
                };
                match prev {
                    Some(_)
                        if flr_io::ReadAt::len(ob.as_ref()) != flr_io::ReadAt::len(nb.as_ref()) =>
                    {
                        note = Some("the snapshots differ in size".into());
                        None
                    }
                    Some(p) => match nb.changed_since(&p) {
                        Ok(d) => {
                            prefetch_changed(ob, nb, &d.ranges);
                            let ranges = flr_io::RangeSet::from_extents(
                                d.ranges.iter().map(|&(s, e)| (s, e - s)),
                            );
                            ob.read_unchanged_from(nb.clone(), ranges.clone());
                            Some(flr_engine::KnownChanges {
                                ranges,
                                bytes_read: d.bytes,
                                requests: d.requests,
                                seconds: d.seconds,
                            })
                        }
                        Err(e) => {
                            note = Some(format!("the Blob service gave no page-range diff ({e})"));
                            None
                        }
                    },
                    None => None,
                }
            }
            _ => {
                note = Some("one side is a local image".into());
                None
            }
        };
        let split = |x: Opened| -> (flr_io::Source, Box<dyn flr_io::ParentResolver>, String) {
            match x {
                Opened::Local(f, p, shown) => (f, Box::new(p), shown),
                Opened::Blob(b, p, shown) => (b, p, shown),
            }
        };
        let (os, op, oshown) = split(o);
        let (ns, np, nshown) = split(n);
        let mut pair = flr_engine::open_pair(
            flr_engine::Side {
                source: os,
                location: oshown,
                parents: op.as_ref(),
            },
            flr_engine::Side {
                source: ns,
                location: nshown,
                parents: np.as_ref(),
            },
            known,
            &opts,
            &self.keys,
        )?;
        if pair.facts.note.is_none() {
            pair.facts.note = note;
        } else if let Some(n) = note {
            pair.facts.note = pair.facts.note.take().map(|m| format!("{n}; {m}"));
        }
        Ok(pair)
    }

    /// `verify --since MANIFEST [--base OLD]`: the baseline and the pair.
    pub(crate) fn since(
        &mut self,
        manifest: &Path,
        base: Option<&str>,
        image: &str,
    ) -> Result<(crate::Since, Image), OpsError> {
        let text = std::fs::read_to_string(manifest)
            .map_err(|e| OpsError::Usage(format!("--since {}: {e}", manifest.display())))?;
        let m = crate::read_manifest(&text)
            .map_err(|e| OpsError::Usage(format!("--since {}: {e}", manifest.display())))?;
        let base = base.map(str::to_string).unwrap_or_else(|| m.image.clone());
        let pair = self.open_pair(&base, image)?;
        // Ids and messages name the baseline without its SAS.
        let base = shown_location(&base);
        let f = &pair.facts;
        let _ = writeln!(
            std::io::stderr(),
            "flr: verify --since {}: changed ranges by {}: {} bytes in {} ranges ({} bytes read to find them, {:.2} s){}",
            base,
            f.method.as_str(),
            f.changed_bytes,
            f.ranges,
            f.bytes_read,
            f.seconds,
            f.note.as_deref().map(|n| format!("; {n}")).unwrap_or_default()
        );
        let mut distrusted = Vec::new();
        for v in pair.old.volumes.iter().filter(|v| v.is_readable()) {
            if let Ok(fs) = v.open_fs() {
                if crate::diff::replayed(fs.as_ref(), "older").is_some() {
                    distrusted.push(v.id.clone());
                }
            }
        }
        let flr_engine::Pair { old, new, .. } = pair;
        let since = crate::Since {
            manifest: m,
            id: base,
            distrusted,
            old: Some(old),
        };
        Ok((since, new))
    }

    /// `--stats`: what reading the image cost, on stderr.
    fn print_stats(&self, json: bool, remote: bool) {
        let stats = self.blob_stats();
        let secs = self.started.elapsed().as_secs_f64();
        let line = match (stats, json) {
            (Some(s), true) => s.json(),
            (Some(s), false) => s.human(),
            (None, false) if remote => {
                "flr: stats: the blob could not be opened (see the error above)".into()
            }
            (None, true) => format!(
                "{{\"source\":\"{}\",\"opened\":false,\"bytes_fetched\":0,\"requests\":0,\"cache_hits\":0,\"seconds\":{secs:.6}}}",
                if remote { "blob" } else { "local" },
            ),
            (None, false) => format!("flr: stats: local image, nothing fetched, {secs:.3} s"),
        };
        let mut err = crate::LogWriter::new(std::io::stderr().lock(), self.globals.log);
        let _ = err.message(crate::Level::Info, &line);
    }

    /// Revokes the read grant, if one was made (and not kept).
    pub(crate) fn end_access(&self, err: &mut dyn Write) {
        if let Some(a) = &self.access {
            access::end_access(a, err);
        }
        if let Some(a) = &self.base_access {
            access::end_access(a, err);
        }
    }
}

/// Changed runs at most this long are taken for metadata (inode tables,
/// extent and directory blocks, bitmaps) and prefetched on both sides.
const SMALL_RUN: u64 = 256 << 10;

/// Opens the blob at `loc` (its properties, then a page blob's page map).
fn open_prepared(
    loc: BlobLocation,
    opts: BlobOptions,
) -> Result<(Arc<BlobSource>, BlobParentResolver, String), OpsError> {
    let shown = loc.shown().to_string();
    // A differencing disk's parents are blobs beside it, read with the
    // same SAS or token; the resolver keeps them for --stats.
    let parents = BlobParentResolver::new(loc.clone(), opts.clone());
    let blob = BlobSource::open(loc, opts).map_err(|e| {
        flr_engine::EngineError::from(flr_io::IoError::Os {
            layer: "blob".into(),
            offset: 0,
            source: std::io::Error::other(e.to_string()),
        })
    })?;
    Ok((Arc::new(blob), parents, shown))
}

/// Starts fetching what a diff or `verify --since` of a blob pair will read
/// from the ranges that changed, all at once rather than one round trip
/// after another as the filesystems are walked: the newer snapshot's small
/// changed runs (its changed metadata) first, then the older one's (the
/// same blocks as they were, read to compare extents), then the newer
/// one's larger runs (the rewritten files' data). The older snapshot's
/// larger runs are left to be read if needed: `verify --since` never reads
/// the old data.
fn prefetch_changed(old: &BlobSource, new: &BlobSource, ranges: &[(u64, u64)]) {
    type Runs = Vec<(u64, u64)>;
    let (small, large): (Runs, Runs) = ranges.iter().partition(|(s, e)| e - s <= SMALL_RUN);
    new.prefetch(&small);
    old.prefetch(&small);
    new.prefetch(&large);
}

/// The key chain's findings, one line each, for the commands that do not
/// print them in their report.
fn report_chain(chain: Option<&ChainSummary>, log: crate::LogOptions) -> Result<(), OpsError> {
    let mut err = crate::LogWriter::new(std::io::stderr().lock(), log);
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
    Ok(())
}
