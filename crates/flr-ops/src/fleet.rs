//! `flr fleet plan | run | report`: fleet verification on a batch engine
//! that already exists (Slurm, a Kubernetes Indexed Job, Azure Batch).
//! The types, the leases and the report writers are `flr-fleet`'s; here
//! they meet the session: the captured environment (the engine's index
//! variables), the configuration, Resource Manager, and `verify` itself,
//! called in-process for the item.
//!
//! Which item a task verifies: `--index N`, else the first of
//! `JOB_COMPLETION_INDEX` (Kubernetes Indexed Job), `SLURM_ARRAY_TASK_ID`
//! (a Slurm array), `AZ_BATCH_TASK_ID` (Azure Batch: the trailing decimal
//! digits of the task id, `flr-17` → 17).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use flr_fleet::result::{Coordination, EXAMPLES};
use flr_fleet::{
    FleetError, Header, Item, ItemResult, KeyChainStep, Lease, LocalStore, Mode, Outcome,
    SlotPolicy, Store, Versioned, VolumeSummary, RESULT_VERSION, SPEC_VERSION,
};

use crate::session::{Command, Session};
use crate::{exit, OpsError};

/// Where `fleet plan` lists images.
#[derive(Debug, Clone)]
pub enum PlanSource {
    /// Snapshots in Resource Manager.
    Arm {
        /// Subscription id.
        subscription: String,
        /// Only this resource group.
        resource_group: Option<String>,
    },
    /// Image files in a folder.
    Folder(PathBuf),
}

/// `fleet plan`.
#[derive(Debug, Clone)]
pub struct PlanArgs {
    /// What to list.
    pub source: PlanSource,
    /// Write the spec here (stdout when `None`).
    pub output: Option<PathBuf>,
    /// Only snapshots carrying every one of these tags (`K=V`, or `K` for any value).
    pub tags: Vec<String>,
    /// Only snapshots taken at or after this time (RFC 3339 or a date).
    pub since: Option<String>,
    /// Only snapshots taken before this time.
    pub until: Option<String>,
    /// Every snapshot in the window, not only the newest per disk.
    pub all: bool,
    /// The tag naming the VM (default `vm`).
    pub vm_tag: Option<String>,
    /// A folder of baseline manifests, `ID.json` per item.
    pub manifests: Option<PathBuf>,
    /// `sample N` per volume instead of every file.
    pub sample: Option<usize>,
    /// Byte budget per item (`50G`).
    pub max_bytes: Option<String>,
    /// Time budget per item (`30m`).
    pub max_time: Option<String>,
}

/// `fleet run`.
#[derive(Debug, Clone)]
pub struct RunArgs {
    /// The spec file.
    pub spec: PathBuf,
    /// The item (else from the engine's variables).
    pub index: Option<u64>,
    /// The results location: a folder, or a container URL (SAS or Entra).
    pub results: String,
    /// Run even if the item has a final result already.
    pub force: bool,
    /// How long to wait for an export slot (`6h`, default).
    pub slot_wait: Option<String>,
}

/// `fleet report`.
#[derive(Debug, Clone)]
pub struct ReportArgs {
    /// The results location.
    pub results: String,
    /// The spec, to name the items that never reported.
    pub spec: Option<PathBuf>,
    /// Where the four files go.
    pub output: PathBuf,
    /// The page's title.
    pub title: Option<String>,
}

pub(crate) fn execute(s: &mut Session, cmd: Command) -> Result<i32, OpsError> {
    match cmd {
        Command::FleetPlan(a) => plan(s, &a),
        Command::FleetRun(a) => run(s, &a),
        Command::FleetReport(a) => report(s, &a),
        _ => unreachable!("only fleet commands come here"),
    }
}

fn fleet_err(e: FleetError) -> OpsError {
    match e {
        FleetError::Spec(m) => OpsError::Usage(m),
        // The results location failed past its retries (a share or a
        // container that is away): the engine retries the task (exit 6).
        FleetError::Store { .. } => OpsError::Retryable(e.to_string()),
        FleetError::Output(e) => OpsError::Output(e),
        e => OpsError::Usage(e.to_string()),
    }
}

// ---------------------------------------------------------------- plan

fn plan(s: &mut Session, a: &PlanArgs) -> Result<i32, OpsError> {
    let since = a
        .since
        .as_deref()
        .map(flr_fleet::time::parse)
        .transpose()
        .map_err(|e| OpsError::Usage(format!("--since {e}")))?;
    let until = a
        .until
        .as_deref()
        .map(flr_fleet::time::parse)
        .transpose()
        .map_err(|e| OpsError::Usage(format!("--until {e}")))?;
    let max_bytes = a
        .max_bytes
        .as_deref()
        .map(crate::parse_bytes)
        .transpose()
        .map_err(|e| OpsError::Usage(format!("--max-bytes: {e}")))?;
    let max_seconds = a
        .max_time
        .as_deref()
        .map(crate::parse_duration)
        .transpose()
        .map_err(|e| OpsError::Usage(format!("--max-time: {e}")))?
        .map(|d| d.as_secs_f64());
    let (mut items, source) = match &a.source {
        PlanSource::Folder(dir) => (plan_folder(dir)?, format!("folder {}", dir.display())),
        PlanSource::Arm {
            subscription,
            resource_group,
        } => {
            let tags = a
                .tags
                .iter()
                .map(|t| match t.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (t.to_string(), None),
                })
                .collect::<Vec<_>>();
            let vm_tag = a.vm_tag.clone().unwrap_or_else(|| "vm".into());
            let filter = ArmFilter {
                tags: &tags,
                since,
                until,
                all: a.all,
                vm_tag: &vm_tag,
            };
            let cfg = s.config()?.clone();
            let items = plan_arm(&cfg, subscription, resource_group.as_deref(), &filter)?;
            (
                items,
                format!(
                    "arm subscription {subscription}{}",
                    resource_group
                        .as_deref()
                        .map(|g| format!(" resource group {g}"))
                        .unwrap_or_default()
                ),
            )
        }
    };
    for i in &mut items {
        if let Some(n) = a.sample {
            i.mode = Mode::Sample;
            i.sample = Some(n);
        }
        i.max_bytes = max_bytes.or(i.max_bytes);
        i.max_seconds = max_seconds.or(i.max_seconds);
        if let Some(dir) = &a.manifests {
            let m = dir.join(format!("{}.json", flr_fleet::safe_name(&i.id)));
            if m.is_file() {
                i.manifest = Some(m.display().to_string());
            }
        }
    }
    flr_fleet::spec::assign_slots(&mut items);
    let header = Header {
        flr_fleet_spec: SPEC_VERSION,
        created: Some(flr_fleet::time::now()),
        source: Some(source),
        items: Some(items.len() as u64),
    };
    let mut buf = Vec::new();
    flr_fleet::spec::write(&mut buf, &header, &items)?;
    match &a.output {
        Some(p) => crate::write_file_atomically(p, |w| w.write_all(&buf))?,
        None => std::io::stdout().lock().write_all(&buf)?,
    }
    let families = items
        .iter()
        .filter_map(|i| i.family.as_deref())
        .collect::<std::collections::HashSet<_>>()
        .len();
    writeln!(
        std::io::stderr(),
        "flr: fleet plan: {} item(s){}{}",
        items.len(),
        if families > 0 {
            format!(", {families} incremental famil(ies) sharing 5 export slots each")
        } else {
            String::new()
        },
        a.output
            .as_ref()
            .map(|p| format!(" -> {}", p.display()))
            .unwrap_or_default()
    )?;
    Ok(exit::OK)
}

const IMAGE_EXTENSIONS: [&str; 6] = ["vhd", "vhdx", "img", "raw", "bin", "disk"];

/// Image files of `dir` (by extension, sorted by name); a manifest beside
/// one (`NAME.manifest.json`) becomes its baseline.
fn plan_folder(dir: &Path) -> Result<Vec<Item>, OpsError> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| OpsError::Usage(format!("--folder {}: {e}", dir.display())))?;
    let mut paths: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
        })
        .collect();
    paths.sort();
    let mut seen = std::collections::HashSet::new();
    Ok(paths
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut id = p
                .file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !seen.insert(flr_fleet::safe_name(&id)) {
                id = name.clone();
            }
            let manifest = p.with_file_name(format!("{name}.manifest.json"));
            Item {
                id,
                image: std::fs::canonicalize(&p)
                    .unwrap_or(p.clone())
                    .display()
                    .to_string(),
                disk: Some(name),
                manifest: manifest.is_file().then(|| manifest.display().to_string()),
                ..Item::default()
            }
        })
        .collect())
}

struct ArmFilter<'a> {
    tags: &'a [(String, Option<String>)],
    since: Option<SystemTime>,
    until: Option<SystemTime>,
    all: bool,
    vm_tag: &'a str,
}

/// One listed snapshot that passed the filter.
struct Listed {
    item: Item,
    source: String,
    time: Option<SystemTime>,
}

fn plan_arm(
    cfg: &flr_config::Config,
    subscription: &str,
    resource_group: Option<&str>,
    f: &ArmFilter<'_>,
) -> Result<Vec<Item>, OpsError> {
    let client = flr_arm::ArmClient::new(&cfg.azure)
        .map_err(|e| OpsError::Usage(format!("Resource Manager: {e}")))?;
    let mut kept: Vec<Listed> = Vec::new();
    let mut bad = None;
    let listed = client
        .list_snapshots(
            subscription,
            resource_group,
            &mut |v| match listed_snapshot(&v, f) {
                Ok(Some(l)) => kept.push(l),
                Ok(None) => {}
                Err(e) => bad = Some(e),
            },
        )
        .map_err(|e| {
            let msg = format!("listing the snapshots of subscription {subscription}: {e}");
            if e.is_retryable() {
                OpsError::Retryable(msg)
            } else {
                OpsError::Source(msg)
            }
        })?;
    if let Some(e) = bad {
        return Err(OpsError::Source(e));
    }
    if !f.all {
        // The newest per disk.
        let mut newest: std::collections::HashMap<String, usize> = Default::default();
        for (i, l) in kept.iter().enumerate() {
            match newest.get(&l.source) {
                Some(&j) if kept[j].time >= l.time => {}
                _ => {
                    newest.insert(l.source.clone(), i);
                }
            }
        }
        let mut keep: Vec<usize> = newest.into_values().collect();
        keep.sort_unstable();
        let mut all: Vec<Option<Listed>> = kept.into_iter().map(Some).collect();
        kept = keep.into_iter().filter_map(|i| all[i].take()).collect();
    }
    // Stable order: VM, disk, time.
    kept.sort_by(|a, b| {
        (a.item.vm.as_deref(), a.item.disk.as_deref(), a.time).cmp(&(
            b.item.vm.as_deref(),
            b.item.disk.as_deref(),
            b.time,
        ))
    });
    let mut seen = std::collections::HashSet::new();
    let mut items: Vec<Item> = Vec::with_capacity(kept.len());
    for mut l in kept {
        if !seen.insert(flr_fleet::safe_name(&l.item.id)) {
            // Same name in two resource groups.
            let rg = flr_arm::ResourceId::parse(&l.item.image)
                .map(|r| r.resource_group)
                .unwrap_or_default();
            l.item.id = format!("{rg}.{}", l.item.id);
        }
        items.push(l.item);
    }
    let _ = writeln!(
        std::io::stderr(),
        "flr: fleet plan: {listed} snapshot(s) listed, {} kept ({} Resource Manager request(s))",
        items.len(),
        client.requests()
    );
    Ok(items)
}

fn listed_snapshot(v: &serde_json::Value, f: &ArmFilter<'_>) -> Result<Option<Listed>, String> {
    let id = v["id"]
        .as_str()
        .ok_or("a listed snapshot without an id")?
        .to_string();
    let name = v["name"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| id.rsplit('/').next().unwrap_or("").to_string());
    let tags = &v["tags"];
    for (k, want) in f.tags {
        let have = tags
            .as_object()
            .and_then(|o| o.iter().find(|(tk, _)| tk.eq_ignore_ascii_case(k)))
            .and_then(|(_, tv)| tv.as_str());
        match (have, want) {
            (None, _) => return Ok(None),
            (Some(h), Some(w)) if h != w => return Ok(None),
            _ => {}
        }
    }
    let p = &v["properties"];
    let time_text = p["timeCreated"].as_str().map(str::to_string);
    let time = time_text
        .as_deref()
        .map(flr_fleet::time::parse)
        .transpose()
        .map_err(|e| format!("snapshot {name}: timeCreated {e}"))?;
    if let (Some(s), Some(t)) = (f.since, time) {
        if t < s {
            return Ok(None);
        }
    }
    if let (Some(u), Some(t)) = (f.until, time) {
        if t >= u {
            return Ok(None);
        }
    }
    let source = p["creationData"]["sourceResourceId"]
        .as_str()
        .or(p["creationData"]["sourceUniqueId"].as_str())
        .map(str::to_ascii_lowercase);
    let incremental = p["incremental"].as_bool() == Some(true);
    let disk = source
        .as_deref()
        .and_then(|s| s.rsplit('/').next())
        .map(str::to_string);
    let vm = tags
        .as_object()
        .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(f.vm_tag)))
        .and_then(|(_, v)| v.as_str())
        .map(str::to_string);
    Ok(Some(Listed {
        item: Item {
            id: name.clone(),
            image: id.clone(),
            vm,
            disk: disk.clone().or(Some(name)),
            snapshot_time: time.map(flr_fleet::time::format).or(time_text),
            family: if incremental { source.clone() } else { None },
            ..Item::default()
        },
        source: source.unwrap_or(id.to_ascii_lowercase()),
        time,
    }))
}

// ---------------------------------------------------------------- run

/// The item index from the engine: `JOB_COMPLETION_INDEX` (Kubernetes),
/// `SLURM_ARRAY_TASK_ID` (Slurm), `AZ_BATCH_TASK_ID`'s trailing digits
/// (Azure Batch), and the task's name for the result.
fn engine_index(env: &flr_config::Environment) -> Option<(u64, String)> {
    if let Some(i) = env.number("JOB_COMPLETION_INDEX") {
        let pod = env.get("HOSTNAME").unwrap_or("pod");
        return Some((i, format!("kubernetes {pod} index {i}")));
    }
    if let Some(i) = env.number("SLURM_ARRAY_TASK_ID") {
        let job = env.get("SLURM_ARRAY_JOB_ID").unwrap_or("?");
        return Some((i, format!("slurm {job}_{i}")));
    }
    if let Some(t) = env.get("AZ_BATCH_TASK_ID") {
        let digits: String = t
            .chars()
            .rev()
            .take_while(char::is_ascii_digit)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if let Ok(i) = digits.parse() {
            let job = env.get("AZ_BATCH_JOB_ID").unwrap_or("?");
            return Some((i, format!("batch {job}/{t}")));
        }
    }
    None
}

/// The results location: a folder, or a blob container URL.
pub(crate) fn open_store(s: &mut Session, arg: &str) -> Result<Arc<dyn Store>, OpsError> {
    let l = arg.to_ascii_lowercase();
    if l.starts_with("https://") || l.starts_with("http://") {
        let has_sas = arg.contains("sig=");
        let (bearer, ca) = if has_sas {
            (None, None)
        } else {
            let cfg = s.config()?;
            let b = flr_azauth::Bearer::from_config(
                &cfg.azure,
                &cfg.azure.storage_token_env,
                flr_azauth::STORAGE_RESOURCE,
            )
            .map_err(|e| OpsError::Usage(format!("results location: {e}")))?;
            (Some(Arc::new(b)), cfg.azure.ca_file.clone())
        };
        let c = flr_blob::container::Container::open(arg, bearer, ca.as_deref())
            .map_err(|e| OpsError::Usage(format!("results location: {e}")))?;
        return Ok(Arc::new(BlobStore(c)));
    }
    Ok(Arc::new(
        LocalStore::new(Path::new(arg)).map_err(fleet_err)?,
    ))
}

/// A blob container as a results location.
struct BlobStore(flr_blob::container::Container);

impl BlobStore {
    fn err(&self, what: String, e: flr_blob::BlobError) -> FleetError {
        FleetError::Store {
            location: self.0.shown().to_string(),
            what,
            message: e.to_string(),
        }
    }
}

impl Store for BlobStore {
    fn describe(&self) -> String {
        self.0.shown().to_string()
    }

    fn read(&self, name: &str) -> Result<Option<Versioned>, FleetError> {
        Ok(self
            .0
            .get(name)
            .map_err(|e| self.err(format!("read {name}"), e))?
            .map(|(data, tag)| Versioned { data, tag }))
    }

    fn replace(&self, name: &str, data: &[u8]) -> Result<(), FleetError> {
        // One Put Blob: the service swaps the whole blob in at once.
        self.0
            .put(name, data, false)
            .map(|_| ())
            .map_err(|e| self.err(format!("write {name}"), e))
    }

    fn create(&self, name: &str, data: &[u8]) -> Result<Option<String>, FleetError> {
        self.0
            .put(name, data, true)
            .map_err(|e| self.err(format!("create {name}"), e))
    }

    fn delete_if(&self, name: &str, tag: &str) -> Result<bool, FleetError> {
        self.0
            .delete_if(name, tag)
            .map_err(|e| self.err(format!("delete {name}"), e))
    }

    fn list(
        &self,
        prefix: &str,
        each: &mut dyn FnMut(&str) -> Result<(), FleetError>,
    ) -> Result<(), FleetError> {
        let mut inner: Option<FleetError> = None;
        let r = self.0.list(prefix, &mut |n| match each(n) {
            Ok(()) => Ok(()),
            Err(e) => {
                inner = Some(e);
                Err(flr_blob::BlobError::Location("stopped".into()))
            }
        });
        if let Some(e) = inner {
            return Err(e);
        }
        r.map_err(|e| self.err(format!("list {prefix}"), e))
    }
}

fn host(env: &flr_config::Environment) -> Option<String> {
    env.get("HOSTNAME").map(str::to_string).or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
    })
}

fn run(s: &mut Session, a: &RunArgs) -> Result<i32, OpsError> {
    let t0 = Instant::now();
    let started = flr_fleet::time::now();
    let env = s.env.clone();
    let (index, task) = match (a.index, engine_index(&env)) {
        (Some(i), engine) => (i, engine.map(|(_, t)| t)),
        (None, Some((i, t))) => (i, Some(t)),
        (None, None) => {
            return Err(OpsError::Usage(
                "fleet run: no --index, and none of JOB_COMPLETION_INDEX, SLURM_ARRAY_TASK_ID or AZ_BATCH_TASK_ID is set".into(),
            ))
        }
    };
    let file = std::fs::File::open(&a.spec)
        .map_err(|e| OpsError::Usage(format!("fleet run: spec {}: {e}", a.spec.display())))?;
    let item = flr_fleet::spec::item_at(std::io::BufReader::new(file), index)
        .map_err(|e| OpsError::Usage(format!("fleet run: {}: {e}", a.spec.display())))?;
    let store = open_store(s, &a.results)?;
    let name = item.result_name();
    let mut err = std::io::stderr();
    let previous = store
        .read(&name)
        .map_err(fleet_err)?
        .and_then(|v| ItemResult::parse(&v.data).ok());
    if let Some(p) = previous.as_ref().filter(|p| p.outcome.is_final()) {
        if !a.force {
            writeln!(
                err,
                "flr: fleet item {index} ({}): finished already ({}, exit {}, {}); nothing to do (--force runs it again)",
                item.id, p.outcome, p.exit_code, p.finished
            )?;
            return Ok(p.exit_code);
        }
    }
    // Retries: the engine's count, or one more than the last result's.
    let attempt = env
        .number("SLURM_RESTART_COUNT")
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX - 1) + 1)
        .unwrap_or(1)
        .max(previous.as_ref().map_or(1, |p| p.attempt.saturating_add(1)));

    let mut result = ItemResult {
        flr_fleet_result: RESULT_VERSION,
        index,
        id: item.id.clone(),
        vm: item.vm.clone(),
        disk: item.disk.clone(),
        image: flr_fleet::report::shown(&item.image),
        snapshot_id: flr_arm::is_resource_id(&item.image).then(|| item.image.clone()),
        snapshot_time: item.snapshot_time.clone(),
        family: item.family.clone(),
        attempt,
        task: task.clone(),
        host: host(&env),
        started,
        mode: match item.mode {
            Mode::Full => "full",
            Mode::Sample => "sample",
        }
        .into(),
        manifest: item.manifest.clone(),
        ..ItemResult::default()
    };

    // The export slot, for snapshots of an incremental family.
    let mut inner = Session::new(
        crate::Globals {
            metadata: item.key_chain.metadata.as_ref().map(PathBuf::from),
            secret_url: item.key_chain.secret_url.clone(),
            kek_url: item.key_chain.kek_url.clone(),
            with_disks: item.with_disks.iter().map(PathBuf::from).collect(),
            keep_access: false,
            dry_run: false,
            stats: None,
            ..s.globals.clone()
        },
        env.clone(),
    );
    inner.handle_signals();
    let mut slot_wait = 0.0;
    let mut outcome: Result<(crate::VerifyReport, Option<crate::ChainSummary>), OpsError> =
        Err(OpsError::Usage("not run".into()));
    let mut lease_ok = true;
    if let (true, Some(family)) = (flr_arm::is_resource_id(&item.image), &item.family) {
        let access_seconds = s.config()?.azure.access_seconds;
        let wait = a
            .slot_wait
            .as_deref()
            .map(crate::parse_duration)
            .transpose()
            .map_err(|e| OpsError::Usage(format!("--slot-wait: {e}")))?
            .unwrap_or(Duration::from_secs(6 * 3600));
        let policy = SlotPolicy::for_access_seconds(access_seconds, wait);
        let w = Instant::now();
        let lease = Lease::acquire(
            store.clone(),
            family,
            item.slot.unwrap_or(0),
            &item.id,
            task.clone(),
            &policy,
            &mut |m| {
                let _ = writeln!(std::io::stderr(), "flr: fleet item {index}: {m}");
            },
        )
        .map_err(fleet_err)?;
        slot_wait = w.elapsed().as_secs_f64();
        match lease {
            Some(l) => {
                result.coordination.slot = Some(l.slot);
                *inner
                    .cleanup
                    .lease
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(l);
            }
            None => {
                lease_ok = false;
                outcome = Err(OpsError::Retryable(format!(
                    "no export slot of family {family} came free within {} s",
                    wait.as_secs()
                )));
            }
        }
    }
    let v0 = Instant::now();
    if lease_ok {
        outcome = verify_item(&mut inner, &item);
    }
    // Revoke, then give the slot back.
    inner.end_access(&mut err);
    let verify_seconds = v0.elapsed().as_secs_f64();
    if let Some(l) = inner
        .cleanup
        .lease
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        if let Err(e) = l.release() {
            writeln!(err, "flr: fleet item {index}: WARNING: {e}")?;
        }
    }
    let (bytes_fetched, requests) = inner.costs();
    result.bytes_fetched = bytes_fetched;
    result.requests = requests;
    result.etag = inner.blob.as_ref().and_then(|b| b.etag());
    match &outcome {
        Ok((report, chain)) => fill(&mut result, report, chain.as_ref()),
        Err(e) => {
            result.exit_code = e.exit_code();
            result.status = "failed".into();
            result.error = Some(e.to_string());
        }
    }
    result.outcome = Outcome::of_exit_code(result.exit_code);
    result.verify_seconds = verify_seconds;
    result.finished = flr_fleet::time::now();
    result.seconds = t0.elapsed().as_secs_f64();
    result.coordination = Coordination {
        slot: result.coordination.slot,
        slot_wait_seconds: slot_wait,
        overhead_seconds: 0.0,
    };
    // The overhead is all but the verification and the waiting, up to the
    // result's own write (a document cannot hold the time of its writing;
    // it is printed below, and scripts/bench-fleet times whole processes).
    let w = Instant::now();
    let before = (t0.elapsed().as_secs_f64() - verify_seconds - slot_wait).max(0.0);
    result.coordination.overhead_seconds = before;
    store.replace(&name, &result.to_json()).map_err(fleet_err)?;
    let write = w.elapsed().as_secs_f64();
    writeln!(
        err,
        "flr: fleet item {index} ({}): {} (exit {}), {} file(s), {} byte(s) in {:.2} s; result {} in {}{}",
        item.id,
        result.outcome,
        result.exit_code,
        result.files_read,
        result.bytes_read,
        result.verify_seconds,
        name,
        store.describe(),
        if write > 0.5 {
            format!(" (written in {write:.2} s)")
        } else {
            String::new()
        }
    )?;
    if let Some(e) = &result.error {
        writeln!(err, "flr: fleet item {index}: {e}")?;
    }
    Ok(result.exit_code)
}

/// Verifies one item in-process, as `flr verify` would (with `since`, as
/// `flr verify --since MANIFEST [--base IMAGE] [--write-manifest PATH]`).
fn verify_item(
    s: &mut Session,
    item: &Item,
) -> Result<(crate::VerifyReport, Option<crate::ChainSummary>), OpsError> {
    s.read_keys()?;
    let manifest = match &item.manifest {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| OpsError::Usage(format!("manifest {p}: {e}")))?;
            Some(
                crate::read_manifest(&text)
                    .map_err(|e| OpsError::Usage(format!("manifest {p}: {e}")))?,
            )
        }
        None => None,
    };
    if item.since.is_none() && item.base.is_some() {
        return Err(OpsError::Usage(format!(
            "item {}: `base` needs `since` (the manifest made of it)",
            item.id
        )));
    }
    let chain = s.prepare(&item.image, false)?;
    let since = match &item.since {
        Some(m) => Some(s.since(Path::new(m), item.base.as_deref(), &item.image)?),
        None => None,
    };
    let opts = crate::VerifyOptions {
        manifest,
        manifest_path: item.manifest.clone(),
        sample: match item.mode {
            Mode::Full => None,
            Mode::Sample => Some(item.sample.unwrap_or(100)),
        },
        seed: item.seed,
        max_bytes: item.max_bytes,
        max_time: item
            .max_seconds
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64),
        volumes: Vec::new(),
        progress: false,
        since: since.as_ref().map(|s| s.0.clone()),
        write_manifest: item.write_manifest.is_some(),
    };
    let report = match since {
        Some((_, new)) => crate::verify(&new, chain.as_ref(), &opts)?,
        None => s.verify_report(&item.image, &opts, chain.as_ref())?,
    };
    if let (Some(p), Some(m)) = (&item.write_manifest, &report.new_manifest) {
        crate::write_file_atomically(Path::new(p), |w| crate::write_manifest(m, w))?;
    }
    Ok((report, chain))
}

fn fill(r: &mut ItemResult, v: &crate::VerifyReport, chain: Option<&crate::ChainSummary>) {
    r.exit_code = v.exit_code;
    r.status = v.status.as_str().into();
    r.seed = v.seed;
    r.budget_exhausted = v.budget_exhausted;
    r.files_read = v.totals.files_read;
    r.bytes_read = v.totals.bytes_read;
    r.volumes = v
        .volumes
        .iter()
        .map(|vol| {
            let mut examples = Vec::new();
            let mut add = |what: &str, list: &mut dyn Iterator<Item = String>| {
                examples.extend(list.take(EXAMPLES).map(|p| format!("{what} {p}")));
            };
            add(
                "changed",
                &mut vol
                    .changed
                    .iter()
                    .map(|c| format!("{} ({})", c.path, c.fields.join(", "))),
            );
            add("missing", &mut vol.missing.iter().cloned());
            add("extra", &mut vol.extra.iter().cloned());
            add(
                "unreadable",
                &mut vol
                    .unreadable
                    .iter()
                    .filter(|u| !u.known)
                    .map(|u| format!("{}: {}", u.path, u.reason)),
            );
            add("structural", &mut vol.structural_errors.iter().cloned());
            VolumeSummary {
                id: vol.id.clone(),
                fs_type: vol.fs_type.clone(),
                state: vol.state.as_str().into(),
                verdict: vol.verdict.to_string(),
                reasons: vol.reasons.iter().map(|x| x.code().to_string()).collect(),
                sentence: vol.sentence.clone(),
                good: vol.good(),
                files: vol.files,
                files_read: vol.files_read,
                bytes_read: vol.bytes_read,
                files_not_checked: vol.files_not_checked,
                unreadable: vol.unreadable.iter().filter(|u| !u.known).count() as u64,
                structural_errors: vol.structural_errors.len() as u64,
                missing: vol.missing.len() as u64,
                changed: vol.changed.len() as u64,
                extra: vol.extra.len() as u64,
                examples,
            }
        })
        .collect();
    if let Some(c) = chain {
        r.key_chain = c
            .chains
            .iter()
            .map(|k| KeyChainStep {
                secret: k.secret.clone(),
                kek: k.kek.clone(),
                outcome: k.outcome.to_string(),
                code: k.finding.as_ref().map(|f| f.code.to_string()),
                message: k.finding.as_ref().map(|f| f.message.clone()),
            })
            .collect();
        r.not_checked
            .extend(c.chains.iter().flat_map(|k| k.not_checked.clone()));
    }
    if v.totals.files_not_checked > 0 {
        r.not_checked.push(format!(
            "{} file(s) not read ({})",
            v.totals.files_not_checked,
            if v.budget_exhausted {
                "budget reached"
            } else {
                "not in the sample"
            }
        ));
    }
    if v.manifest.is_none() {
        r.not_checked
            .push("no baseline manifest: contents were read and hashed, not compared".into());
    }
}

// ---------------------------------------------------------------- report

fn report(s: &mut Session, a: &ReportArgs) -> Result<i32, OpsError> {
    let store = open_store(s, &a.results)?;
    let mut spec_reader = match &a.spec {
        Some(p) => Some(std::io::BufReader::new(std::fs::File::open(p).map_err(
            |e| OpsError::Usage(format!("fleet report: spec {}: {e}", p.display())),
        )?)),
        None => None,
    };
    let g = flr_fleet::gather(
        store.as_ref(),
        spec_reader.as_mut().map(|r| r as &mut dyn BufRead),
    )
    .map_err(fleet_err)?;
    let opts = flr_fleet::ReportOptions {
        title: a
            .title
            .clone()
            .unwrap_or_else(|| "flr fleet verification".into()),
        generated: flr_fleet::time::now(),
    };
    std::fs::create_dir_all(&a.output)
        .map_err(|e| OpsError::Usage(format!("--output {}: {e}", a.output.display())))?;
    let o = &a.output;
    crate::write_file_atomically(&o.join("summary.json"), |w| g.write_json(&opts, w))?;
    crate::write_file_atomically(&o.join("junit.xml"), |w| g.write_junit(w))?;
    crate::write_file_atomically(&o.join("metrics.prom"), |w| g.write_prometheus(w))?;
    crate::write_file_atomically(&o.join("report.html"), |w| g.write_html(&opts, w))?;
    let mut out = std::io::stdout().lock();
    let counts = g.counts();
    writeln!(
        out,
        "fleet: {} item(s){}: {}",
        g.rows.len(),
        g.expected
            .map(|n| format!(" of {n} in the spec"))
            .unwrap_or_default(),
        counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(o, n)| format!("{n} {o}"))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    for r in g.rows.iter().filter(|r| r.outcome != Outcome::Passed) {
        writeln!(
            out,
            "  {} {}: {}{}",
            r.outcome,
            r.label(),
            r.reasons.join("; "),
            if r.attempt > 1 {
                format!(" (attempt {})", r.attempt)
            } else {
                String::new()
            }
        )?;
    }
    for i in &g.invalid {
        writeln!(out, "  invalid result {i}")?;
    }
    writeln!(
        out,
        "  reports: {}/summary.json, junit.xml, metrics.prom, report.html",
        o.display()
    )?;
    Ok(if g.all_passed() {
        exit::OK
    } else {
        exit::PARTIAL
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_indices_come_from_the_captured_environment() {
        let e = |vars: &[(&str, &str)]| {
            flr_config::Environment::from_vars(
                vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            )
        };
        assert_eq!(
            engine_index(&e(&[("JOB_COMPLETION_INDEX", "7")]))
                .unwrap()
                .0,
            7
        );
        let (i, t) = engine_index(&e(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_JOB_ID", "42"),
        ]))
        .unwrap();
        assert_eq!((i, t.as_str()), (3, "slurm 42_3"));
        assert_eq!(
            engine_index(&e(&[("AZ_BATCH_TASK_ID", "flr-0017")]))
                .unwrap()
                .0,
            17
        );
        assert!(engine_index(&e(&[("AZ_BATCH_TASK_ID", "setup")])).is_none());
        assert!(engine_index(&e(&[])).is_none());
    }
}
