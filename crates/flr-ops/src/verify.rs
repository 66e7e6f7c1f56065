//! `flr verify`: proves an image restores. Every volume is unlocked where
//! the key chain allows, every filesystem walked, every file (or a seeded
//! random sample) read to its end and hashed, and, against a manifest, every
//! object compared. The report says which volumes opened or were blocked
//! (with the feasibility reasons), what was read, what could not be read
//! and why, structural errors, and the missing, changed and extra files; it
//! is written as a human summary, JSON, JUnit XML and Prometheus textfile
//! metrics.
//!
//! Files are hashed in parallel (rayon, one file per worker, 1 MiB
//! sequential reads; sha2 uses SHA-NI where the CPU has it).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flr_engine::{Image, Verdict};
use flr_fleet::report::{label, xml};
use flr_fs::{FileKind, FsError};
use rayon::prelude::*;
use serde::Serialize;

use crate::keychain::{feasibility_of, ChainSummary, Feasible, Reason};
use crate::manifest::{hash_file, now_rfc3339, walk, Entry, HashError, Manifest};
use crate::{exit, OpsError};

/// Options of `verify`.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Compare against this manifest.
    pub manifest: Option<Manifest>,
    /// Where the manifest came from (for the report).
    pub manifest_path: Option<String>,
    /// Read only this many files per volume, chosen at random (seeded).
    pub sample: Option<usize>,
    /// The sample's seed (random when not given; always reported).
    pub seed: Option<u64>,
    /// Stop reading after this many bytes.
    pub max_bytes: Option<u64>,
    /// Stop reading after this long.
    pub max_time: Option<Duration>,
    /// Only these volumes (all when empty).
    pub volumes: Vec<String>,
    /// Keep what was found as a new manifest ([`VerifyReport::new_manifest`]).
    pub write_manifest: bool,
    /// Progress bar on stderr (only shown on a terminal).
    pub progress: bool,
    /// `--since`: the previous snapshot's manifest, whose hashes are
    /// carried to files whose blocks did not change (the image's stack
    /// answers `changed` against that snapshot).
    pub since: Option<Since>,
}

/// The baseline of `verify --since`.
#[derive(Clone)]
pub struct Since {
    /// The previous snapshot's manifest (with file ids).
    pub manifest: Manifest,
    /// The id carried entries are marked with (the baseline's image).
    pub id: String,
    /// Volumes whose older filesystem's view is not its bytes (a journal
    /// replayed in memory): nothing is carried there.
    pub distrusted: Vec<String>,
    /// The older image, opened as the pair's base: a file whose metadata
    /// blocks changed (an inode-table block shared with a changed
    /// neighbour) is still carried when its older version maps the same
    /// data extents and none of them changed.
    pub old: Option<std::sync::Arc<flr_engine::Image>>,
}

impl std::fmt::Debug for Since {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Since")
            .field("id", &self.id)
            .field("distrusted", &self.distrusted)
            .field("old", &self.old.as_ref().map(|i| i.location.clone()))
            .finish_non_exhaustive()
    }
}

/// A file that could not be read.
#[derive(Debug, Clone, Serialize)]
pub struct Unreadable {
    /// Path in the volume.
    pub path: String,
    /// Whether flr cannot return this file's bytes (EFS, fscrypt…) or the
    /// read failed (damage, I/O).
    pub kind: UnreadableKind,
    /// Why.
    pub reason: String,
    /// The manifest records it as unreadable too (not counted as a failure).
    pub known: bool,
}

/// An object that differs from the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct Changed {
    /// Path in the volume.
    pub path: String,
    /// What differs: `type`, `size`, `mtime`, `mode`, `target`, `sha256`,
    /// and for NTFS and FAT `attributes`, `reparse`, `owner_sid`, `sddl`.
    pub fields: Vec<&'static str>,
    /// The manifest's entry.
    pub expected: Entry,
    /// What the image holds now.
    pub found: Entry,
}

/// Why a file could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnreadableKind {
    /// flr cannot return this file's bytes correctly (EFS, fscrypt…).
    Unsupported,
    /// The read failed (damage, I/O).
    Error,
}

/// What verify could do with a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VolumeState {
    /// Its filesystem was opened and walked.
    Opened,
    /// Blocked by keys.
    Blocked,
    /// Damaged or unreadable.
    Error,
    /// No filesystem flr reads on it.
    Skipped,
    /// In the manifest, not in the image.
    Missing,
}

/// Every file read, or a seeded sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyMode {
    /// Every file.
    Full,
    /// A seeded sample per volume.
    Sample,
}

/// The outcome of a verification (first that applies: mismatch, error,
/// key-chain error, blocked, ok).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Everything checked is good.
    Ok,
    /// Missing, changed or extra files against the manifest.
    Mismatch,
    /// Unreadable files or structural errors.
    Error,
    /// The key chain could not find out.
    KeyChainError,
    /// A volume blocked by keys.
    Blocked,
}

macro_rules! names {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            /// The name, as JSON has it.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

names!(UnreadableKind { Unsupported => "unsupported", Error => "error" });
names!(VolumeState { Opened => "opened", Blocked => "blocked", Error => "error", Skipped => "skipped", Missing => "missing" });
names!(VerifyMode { Full => "full", Sample => "sample" });
names!(Status { Ok => "ok", Mismatch => "mismatch", Error => "error", KeyChainError => "key-chain-error", Blocked => "blocked" });

/// The result for one volume.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeResult {
    /// Volume id.
    pub id: String,
    /// Filesystem type, when opened.
    pub fs_type: Option<String>,
    /// Whether the filesystem was cleanly unmounted and what flr did with
    /// its journal, when opened.
    pub consistency: Option<flr_fs::Consistency>,
    /// What verify could do with it.
    pub state: VolumeState,
    /// The feasibility verdict (as `probe --dry-run`).
    pub verdict: Feasible,
    /// Its reason codes.
    pub reasons: Vec<Reason>,
    /// One sentence for the operator.
    pub sentence: String,
    /// Objects found by the walk.
    pub objects: u64,
    /// Regular files found.
    pub files: u64,
    /// Files read to their end.
    pub files_read: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Files not read but carried from the `--since` baseline, their blocks
    /// unchanged.
    pub files_carried: u64,
    /// Bytes of the carried files.
    pub bytes_carried: u64,
    /// Why nothing could be carried on this volume, when `--since` was given.
    pub since_note: Option<String>,
    /// Files not read because of the sample or the budget.
    pub files_not_checked: u64,
    /// Files that could not be read.
    pub unreadable: Vec<Unreadable>,
    /// Structural errors (folders that cannot be listed, loops…).
    pub structural_errors: Vec<String>,
    /// In the manifest, not in the image.
    pub missing: Vec<String>,
    /// Different from the manifest.
    pub changed: Vec<Changed>,
    /// In the image, not in the manifest.
    pub extra: Vec<String>,
    /// Seconds spent.
    pub seconds: f64,
}

impl VolumeResult {
    fn new(id: &str) -> Self {
        VolumeResult {
            id: id.into(),
            fs_type: None,
            consistency: None,
            state: VolumeState::Opened,
            verdict: Feasible::Readable,
            reasons: Vec::new(),
            sentence: String::new(),
            objects: 0,
            files: 0,
            files_read: 0,
            bytes_read: 0,
            files_carried: 0,
            bytes_carried: 0,
            since_note: None,
            files_not_checked: 0,
            unreadable: Vec::new(),
            structural_errors: Vec::new(),
            missing: Vec::new(),
            changed: Vec::new(),
            extra: Vec::new(),
            seconds: 0.0,
        }
    }

    fn failed_files(&self) -> usize {
        self.unreadable.iter().filter(|u| !u.known).count()
    }

    /// True when nothing checked on this volume is wrong.
    pub fn good(&self) -> bool {
        matches!(self.state, VolumeState::Opened | VolumeState::Skipped)
            && self.failed_files() == 0
            && self.structural_errors.is_empty()
            && self.missing.is_empty()
            && self.changed.is_empty()
            && self.extra.is_empty()
    }
}

/// Sums over all volumes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Volumes whose filesystem was walked.
    pub volumes_opened: u64,
    /// Volumes blocked by keys.
    pub volumes_blocked: u64,
    /// Volumes damaged or unreadable.
    pub volumes_error: u64,
    /// Volumes with nothing flr reads (swap, unknown, empty…).
    pub volumes_skipped: u64,
    /// Volumes of the manifest missing from the image.
    pub volumes_missing: u64,
    /// Regular files found.
    pub files: u64,
    /// Files read.
    pub files_read: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Files carried from the `--since` baseline.
    pub files_carried: u64,
    /// Bytes of the carried files.
    pub bytes_carried: u64,
    /// Files not read (sample, budget).
    pub files_not_checked: u64,
    /// Files that could not be read (failures only).
    pub files_unreadable: u64,
    /// Structural errors.
    pub structural_errors: u64,
    /// Missing objects.
    pub missing: u64,
    /// Changed objects.
    pub changed: u64,
    /// Extra objects.
    pub extra: u64,
    /// Volumes opened whose newest changes may be missing (a journal not
    /// replayed after an unclean shutdown…): read, but not fully trusted.
    pub volumes_may_miss_changes: u64,
}

/// The version of `verify`'s JSON report (docs/json.md).
pub const VERIFY_REPORT_VERSION: u32 = 1;

/// Everything `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The image as given.
    pub image: String,
    /// When the run started (UTC).
    pub started: String,
    /// Seconds the run took.
    pub seconds: f64,
    /// Every file, or a sample.
    pub mode: VerifyMode,
    /// Files per volume in the sample.
    pub sample: Option<usize>,
    /// The sample's seed (give it with `--seed` to repeat the sample).
    pub seed: Option<u64>,
    /// The manifest compared against.
    pub manifest: Option<String>,
    /// The byte budget.
    pub max_bytes: Option<u64>,
    /// The time budget, seconds.
    pub max_time: Option<f64>,
    /// True when a budget stopped the reading early.
    pub budget_exhausted: bool,
    /// One per volume.
    pub volumes: Vec<VolumeResult>,
    /// Sums.
    pub totals: Totals,
    /// The outcome.
    pub status: Status,
    /// The process exit code for this result.
    pub exit_code: i32,
    /// The `--since` baseline's id.
    pub since: Option<String>,
    /// What was found, as a manifest for the next run (carried hashes
    /// marked), when asked for.
    #[serde(skip)]
    pub new_manifest: Option<Manifest>,
}

/// A small seeded generator (splitmix64) for the sample: the same seed
/// picks the same files.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0), by rejection.
    fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next();
            if v < zone {
                return v % n;
            }
        }
    }
}

/// Indices of `k` of `n` items, chosen uniformly (partial Fisher-Yates),
/// in ascending order.
fn sample_indices(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix(seed);
    let k = k.min(n);
    for i in 0..k {
        let j = i + rng.below((n - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

struct Budget {
    max_bytes: Option<u64>,
    deadline: Option<Instant>,
    bytes: AtomicU64,
    exhausted: AtomicBool,
}

impl Budget {
    /// Claims a file of `size` bytes before reading it.
    fn claim(&self, size: u64) -> bool {
        if self.exhausted.load(Ordering::Relaxed) || self.late() {
            self.exhausted.store(true, Ordering::Relaxed);
            return false;
        }
        let before = self.bytes.fetch_add(size, Ordering::Relaxed);
        if self
            .max_bytes
            .is_some_and(|m| before.saturating_add(size) > m)
        {
            self.bytes.fetch_sub(size, Ordering::Relaxed);
            self.exhausted.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn late(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

enum FileOutcome {
    Read {
        sha: String,
        bytes: u64,
    },
    Failed {
        kind: UnreadableKind,
        reason: String,
    },
    Carried {
        sha: String,
        from: String,
        bytes: u64,
    },
    NotChecked,
}

/// Runs the verification and returns the report (not yet written).
pub fn verify(
    image: &Image,
    chain: Option<&ChainSummary>,
    opts: &VerifyOptions,
) -> Result<VerifyReport, OpsError> {
    let mut volumes = crate::selected_volumes(image, &opts.volumes)?;
    // Volumes of disk images stored as files that the manifest covers.
    if opts.volumes.is_empty() {
        for mv in opts.manifest.iter().flat_map(|m| &m.volumes) {
            if mv.id.contains("::") && !volumes.iter().any(|v| v.id == mv.id) {
                if let Ok(v) = image.volume(&mv.id) {
                    volumes.push(v);
                }
            }
        }
    }
    let started_at = Instant::now();
    let started = now_rfc3339();
    let seed = opts.sample.map(|_| {
        opts.seed.unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            (t.as_nanos() as u64) ^ u64::from(std::process::id()).rotate_left(32)
        })
    });
    let budget = Budget {
        max_bytes: opts.max_bytes,
        deadline: opts.max_time.map(|d| started_at + d),
        bytes: AtomicU64::new(0),
        exhausted: AtomicBool::new(false),
    };
    let verdicts = feasibility_of(&volumes, chain);
    let wanted = |id: &str| opts.volumes.is_empty() || opts.volumes.iter().any(|v| v == id);
    let mut results = Vec::new();
    let mut new_manifest = Vec::new();
    for v in &volumes {
        let t0 = Instant::now();
        let mut r = VolumeResult::new(&v.id);
        if let Some(f) = verdicts.iter().find(|f| f.volume == v.id) {
            r.verdict = f.verdict;
            r.reasons = f.reasons.clone();
            r.sentence = f.sentence.clone();
        }
        let expected = opts
            .manifest
            .as_ref()
            .and_then(|m| m.volumes.iter().find(|mv| mv.id == v.id));
        if v.content.verdict != Verdict::Readable {
            r.state = match (v.content.verdict, r.verdict) {
                (Verdict::Locked, _) | (_, Feasible::Blocked) => VolumeState::Blocked,
                (_, Feasible::Error) => VolumeState::Error,
                // A volume the manifest has files for but flr cannot read now.
                _ if expected.is_some_and(|m| !m.entries.is_empty()) => VolumeState::Error,
                _ => VolumeState::Skipped,
            };
            if r.sentence.is_empty() {
                r.sentence = v.content.detail.clone();
            }
            results.push(r);
            continue;
        }
        let fs = match v.open_fs() {
            Ok(fs) => fs,
            Err(e) => {
                r.state = VolumeState::Error;
                r.structural_errors.push(e.to_string());
                results.push(r);
                continue;
            }
        };
        r.fs_type = Some(fs.info().fs_type);
        r.consistency = Some(fs.consistency());
        // The same volume of the older image (`--since`), for its files'
        // extents: opened while this one is walked, as over a network each
        // of its probes is a round trip of its own.
        let open_old = || -> Option<Box<dyn flr_fs::Filesystem>> {
            let old = opts.since.as_ref()?.old.as_ref()?;
            old.volume(&v.id).ok()?.open_fs().ok()
        };
        let (found, old_fs) = rayon::join(
            || {
                let mut errors = Vec::new();
                (walk(fs.as_ref(), &mut errors), errors)
            },
            open_old,
        );
        let (found, errors) = found;
        r.structural_errors.extend(errors);
        r.objects = found.len() as u64;
        let files: Vec<usize> = found
            .iter()
            .enumerate()
            .filter(|(_, f)| f.meta.kind == FileKind::File)
            .map(|(i, _)| i)
            .collect();
        r.files = files.len() as u64;
        let chosen: Vec<usize> = match (opts.sample, seed) {
            (Some(k), Some(s)) => {
                // One seed per volume, derived from the run's seed and the id.
                let vs = v.id.bytes().fold(s, |a, b| a.rotate_left(5) ^ u64::from(b));
                sample_indices(files.len(), k, vs)
                    .into_iter()
                    .map(|i| files[i])
                    .collect()
            }
            _ => files.clone(),
        };
        // `--since`: the baseline's entries by path, when this volume's
        // blocks can be trusted to say what changed.
        let baseline: Option<HashMap<Vec<u8>, &Entry>> = opts.since.as_ref().and_then(|s| {
            let note = if s.distrusted.contains(&v.id) {
                Some("the older filesystem's journal was replayed in memory".to_string())
            } else {
                crate::diff::distrust_new(fs.as_ref(), v.source().as_ref())
            };
            let mv = s.manifest.volumes.iter().find(|mv| mv.id == v.id);
            let note = note.or_else(|| {
                mv.is_none()
                    .then(|| "the baseline manifest has no such volume".to_string())
            });
            if let Some(n) = note {
                r.since_note = Some(n);
                return None;
            }
            mv.map(|mv| mv.entries.iter().map(|e| (e.key(), e)).collect())
        });
        let old_fs = old_fs.filter(|_| baseline.is_some());
        let carry = |f: &crate::manifest::Found| -> Option<FileOutcome> {
            let s = opts.since.as_ref()?;
            let b = baseline.as_ref()?;
            let e = b.get(&crate::manifest::path_bytes(&f.path))?;
            let sha = e.sha256.as_ref()?;
            let same = e.kind == "file"
                && e.size == f.meta.size
                && e.inode.is_some()
                && e.inode == f.meta.inode
                && e.unreadable.is_none();
            if !same {
                return None;
            }
            let x = fs.extents(&f.path).ok()??;
            if x.changed(v.source().as_ref()) != flr_io::Change::Unchanged {
                // Its metadata blocks changed, perhaps only for a neighbour:
                // the same layout as before, on unchanged data ranges, and
                // the same size (checked above) hold the same bytes.
                let ofs = old_fs.as_ref()?;
                let a = ofs.extents(&f.path).ok()??;
                if !x.same_data(&a, v.source().as_ref()) {
                    return None;
                }
            }
            Some(FileOutcome::Carried {
                sha: sha.clone(),
                from: e.carried.clone().unwrap_or_else(|| s.id.clone()),
                bytes: f.meta.size,
            })
        };
        let total_bytes: u64 = chosen.iter().map(|i| found[*i].meta.size).sum();
        let bar = crate::progress::Progress::new(
            opts.progress && total_bytes > 0,
            &format!("verify {}", v.id),
            Some(total_bytes),
            chosen.len() as u64,
        );
        let files_done = std::sync::atomic::AtomicU64::new(0);
        let outcomes: Vec<(usize, FileOutcome)> = chosen
            .par_iter()
            .map(|&i| {
                let f = &found[i];
                if let Some(reason) = &f.meta.unreadable {
                    return (
                        i,
                        FileOutcome::Failed {
                            kind: UnreadableKind::Unsupported,
                            reason: reason.clone(),
                        },
                    );
                }
                if let Some(c) = carry(f) {
                    return (i, c);
                }
                if !budget.claim(f.meta.size) {
                    return (i, FileOutcome::NotChecked);
                }
                let res = hash_file(fs.as_ref(), &f.path, |n| {
                    bar.bytes(n);
                    !budget.late()
                });
                bar.set_files(files_done.fetch_add(1, Ordering::Relaxed) + 1);
                let o = match res {
                    Ok((sha, bytes)) => FileOutcome::Read { sha, bytes },
                    Err(HashError::Stopped) => {
                        budget.exhausted.store(true, Ordering::Relaxed);
                        FileOutcome::NotChecked
                    }
                    Err(HashError::Fs(e)) => FileOutcome::Failed {
                        kind: if matches!(e, FsError::Unsupported { .. }) {
                            UnreadableKind::Unsupported
                        } else {
                            UnreadableKind::Error
                        },
                        reason: e.to_string(),
                    },
                };
                (i, o)
            })
            .collect();
        bar.finish();
        r.files_not_checked = (files.len() - chosen.len()) as u64;
        let mut shas: HashMap<usize, String> = HashMap::new();
        let mut carried: HashMap<usize, String> = HashMap::new();
        let known_unreadable = |path: &[u8]| {
            expected.is_some_and(|m| {
                m.entries
                    .iter()
                    .any(|e| e.unreadable.is_some() && e.key() == path)
            })
        };
        for (i, o) in outcomes {
            match o {
                FileOutcome::Read { sha, bytes } => {
                    r.files_read += 1;
                    r.bytes_read += bytes;
                    shas.insert(i, sha);
                }
                FileOutcome::Failed { kind, reason } => {
                    let key = crate::manifest::path_bytes(&found[i].path);
                    r.unreadable.push(Unreadable {
                        path: found[i].path.to_string(),
                        kind,
                        reason,
                        known: kind == UnreadableKind::Unsupported && known_unreadable(&key),
                    });
                }
                FileOutcome::Carried { sha, from, bytes } => {
                    r.files_carried += 1;
                    r.bytes_carried += bytes;
                    shas.insert(i, sha);
                    carried.insert(i, from);
                }
                FileOutcome::NotChecked => r.files_not_checked += 1,
            }
        }
        // Windows metadata (NTFS, FAT) for the manifest written, and for
        // the comparison when the manifest has it.
        let wants_windows = expected.is_some_and(|m| m.entries.iter().any(|e| e.windows.is_some()));
        let windows: HashMap<usize, crate::WindowsEntry> = if opts.write_manifest || wants_windows {
            found
                .par_iter()
                .enumerate()
                .filter_map(|(i, f)| {
                    crate::winmeta::entry_of(fs.as_ref(), &f.path)
                        .ok()
                        .flatten()
                        .map(|w| (i, w))
                })
                .collect()
        } else {
            HashMap::new()
        };
        if opts.write_manifest {
            let info = v.content.fs.clone().unwrap_or_else(|| fs.info());
            new_manifest.push(crate::manifest::ManifestVolume {
                id: v.id.clone(),
                fs_type: Some(info.fs_type),
                label: info.label,
                fs_id: info.id,
                entries: found
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        let mut e = f.entry();
                        e.sha256 = shas.get(&i).cloned();
                        e.carried = carried.get(&i).cloned();
                        e.windows = windows.get(&i).cloned();
                        if let Some(u) = r.unreadable.iter().find(|u| u.path == f.path.to_string())
                        {
                            e.unreadable = Some(u.reason.clone());
                        }
                        e
                    })
                    .collect(),
            });
        }
        if let Some(m) = expected {
            let mut mine: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
            for (i, f) in found.iter().enumerate() {
                let mut e = f.entry();
                e.sha256 = shas.get(&i).cloned();
                e.windows = windows.get(&i).cloned();
                mine.insert(e.key(), e);
            }
            let theirs: BTreeMap<Vec<u8>, &Entry> =
                m.entries.iter().map(|e| (e.key(), e)).collect();
            for (k, want) in &theirs {
                match mine.get(k) {
                    None => r.missing.push(want.path.clone()),
                    Some(got) => {
                        let fields = differences(want, got);
                        if !fields.is_empty() {
                            r.changed.push(Changed {
                                path: got.path.clone(),
                                fields,
                                expected: (*want).clone(),
                                found: got.clone(),
                            });
                        }
                    }
                }
            }
            for (k, got) in &mine {
                if !theirs.contains_key(k) {
                    r.extra.push(got.path.clone());
                }
            }
        }
        r.seconds = t0.elapsed().as_secs_f64();
        results.push(r);
    }
    // Volumes the manifest has that the image does not.
    if let Some(m) = &opts.manifest {
        for mv in &m.volumes {
            if wanted(&mv.id) && !volumes.iter().any(|v| v.id == mv.id) {
                let mut r = VolumeResult::new(&mv.id);
                r.state = VolumeState::Missing;
                r.verdict = Feasible::Missing;
                r.sentence = "in the manifest, but the image has no such volume".into();
                r.missing = mv.entries.iter().map(|e| e.path.clone()).collect();
                results.push(r);
            }
        }
    }
    let mut t = Totals::default();
    for r in &results {
        match r.state {
            VolumeState::Opened => t.volumes_opened += 1,
            VolumeState::Blocked => t.volumes_blocked += 1,
            VolumeState::Error => t.volumes_error += 1,
            VolumeState::Missing => t.volumes_missing += 1,
            VolumeState::Skipped => t.volumes_skipped += 1,
        }
        t.files += r.files;
        t.files_read += r.files_read;
        t.bytes_read += r.bytes_read;
        t.files_carried += r.files_carried;
        t.bytes_carried += r.bytes_carried;
        t.files_not_checked += r.files_not_checked;
        t.files_unreadable += r.failed_files() as u64;
        t.structural_errors += r.structural_errors.len() as u64;
        t.missing += r.missing.len() as u64;
        t.changed += r.changed.len() as u64;
        t.extra += r.extra.len() as u64;
        if r.consistency.as_ref().is_some_and(|c| c.may_miss_changes()) {
            t.volumes_may_miss_changes += 1;
        }
    }
    let mismatch = t.missing + t.changed + t.extra + t.volumes_missing > 0;
    let error = t.files_unreadable + t.structural_errors + t.volumes_error > 0;
    let chain_error = results
        .iter()
        .any(|r| r.state == VolumeState::Blocked && r.verdict == Feasible::Error);
    let (status, exit_code) = if mismatch {
        (Status::Mismatch, exit::MISMATCH)
    } else if error {
        (Status::Error, exit::BAD_IMAGE)
    } else if chain_error {
        (Status::KeyChainError, exit::KEY_CHAIN)
    } else if t.volumes_blocked > 0 {
        (Status::Blocked, exit::NOT_READABLE)
    } else {
        (Status::Ok, exit::OK)
    };
    Ok(VerifyReport {
        image: image.location.clone(),
        started: started.clone(),
        seconds: started_at.elapsed().as_secs_f64(),
        mode: if opts.sample.is_some() {
            VerifyMode::Sample
        } else {
            VerifyMode::Full
        },
        sample: opts.sample,
        seed,
        manifest: opts.manifest_path.clone(),
        max_bytes: opts.max_bytes,
        max_time: opts.max_time.map(|d| d.as_secs_f64()),
        budget_exhausted: budget.exhausted.load(Ordering::Relaxed),
        since: opts.since.as_ref().map(|s| s.id.clone()),
        new_manifest: opts.write_manifest.then(|| Manifest {
            format: "flr-manifest".into(),
            version: 1,
            image: image.location.clone(),
            created: started.clone(),
            volumes: new_manifest,
        }),
        volumes: results,
        totals: t,
        status,
        exit_code,
    })
}

/// Which fields of an entry differ from the manifest's.
fn differences(want: &Entry, got: &Entry) -> Vec<&'static str> {
    let mut f = Vec::new();
    if want.kind != got.kind {
        f.push("type");
        return f;
    }
    if want.size != got.size {
        f.push("size");
    }
    if want.mtime != got.mtime {
        f.push("mtime");
    }
    if want.mode != got.mode {
        f.push("mode");
    }
    if want.target != got.target {
        f.push("target");
    }
    if let (Some(a), Some(b)) = (&want.sha256, &got.sha256) {
        if a != b {
            f.push("sha256");
        }
    }
    // Windows metadata, where the manifest has it (NTFS, FAT; manifests
    // written before it was recorded have none).
    if let Some(a) = &want.windows {
        let b = got.windows.as_ref();
        if b.map(|b| &b.attributes) != Some(&a.attributes) {
            f.push("attributes");
        }
        if b.and_then(|b| b.reparse_tag.as_ref()) != a.reparse_tag.as_ref() {
            f.push("reparse");
        }
        if b.and_then(|b| b.owner.as_ref()) != a.owner.as_ref()
            || b.and_then(|b| b.group.as_ref()) != a.group.as_ref()
        {
            f.push("owner_sid");
        }
        if b.and_then(|b| b.sddl.as_ref()) != a.sddl.as_ref() {
            f.push("sddl");
        }
    }
    f
}

/// Writes the report as pretty JSON.
pub fn write_json(r: &VerifyReport, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    /// The report with its schema version first (docs/json.md).
    #[derive(Serialize)]
    struct Versioned<'a> {
        report_version: u32,
        #[serde(flatten)]
        report: &'a VerifyReport,
    }
    let doc = Versioned {
        report_version: VERIFY_REPORT_VERSION,
        report: r,
    };
    serde_json::to_writer_pretty(&mut *out, &doc).map_err(std::io::Error::from)?;
    writeln!(out)
}

/// Writes the human summary.
pub fn write_summary(r: &VerifyReport, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    writeln!(
        out,
        "flr verify {}: {} ({} mode{}{})",
        r.image,
        r.status.as_str().to_uppercase(),
        r.mode,
        r.seed
            .map(|s| format!(", {} files per volume, seed {s}", r.sample.unwrap_or(0)))
            .unwrap_or_default(),
        r.manifest
            .as_deref()
            .map(|m| format!(", against {m}"))
            .unwrap_or_default()
    )?;
    for v in &r.volumes {
        match v.state {
            VolumeState::Opened => writeln!(
                out,
                "  {}: {} {}: {} objects, {} files, {} read ({} bytes){}",
                v.id,
                if v.good() { "ok" } else { "FAILED" },
                v.fs_type.as_deref().unwrap_or("?"),
                v.objects,
                v.files,
                v.files_read,
                v.bytes_read,
                if v.files_not_checked > 0 {
                    format!(", {} not checked", v.files_not_checked)
                } else {
                    String::new()
                }
            )
            .and_then(|()| match (&r.since, &v.since_note) {
                (Some(_), Some(n)) => writeln!(out, "    nothing carried: {n}"),
                (Some(id), None) => writeln!(
                    out,
                    "    {} files ({} bytes) carried from {id}, their blocks unchanged",
                    v.files_carried, v.bytes_carried
                ),
                _ => Ok(()),
            })?,
            state => writeln!(
                out,
                "  {}: {} ({}{}): {}",
                v.id,
                state.as_str().to_uppercase(),
                v.verdict,
                if v.reasons.is_empty() {
                    String::new()
                } else {
                    format!(
                        ": {}",
                        v.reasons
                            .iter()
                            .map(|r| r.code())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
                v.sentence
            )?,
        }
        if let Some(c) = v.consistency.as_ref().filter(|c| c.may_miss_changes()) {
            writeln!(
                out,
                "    warning: {}: files changed just before the snapshot may be missing or older",
                c.sentence()
            )?;
        }
        for u in &v.unreadable {
            writeln!(
                out,
                "    unreadable{}: {}: {}",
                if u.known { " (as in the manifest)" } else { "" },
                u.path,
                u.reason
            )?;
        }
        for e in &v.structural_errors {
            writeln!(out, "    structural error: {e}")?;
        }
        for m in &v.missing {
            writeln!(out, "    missing: {m}")?;
        }
        for c in &v.changed {
            writeln!(out, "    changed ({}): {}", c.fields.join(", "), c.path)?;
        }
        for e in &v.extra {
            writeln!(out, "    extra: {e}")?;
        }
    }
    let t = &r.totals;
    writeln!(
        out,
        "  total: {} volume(s) opened, {} blocked, {} error, {} skipped; {} files read, {} bytes, {} unreadable, {} structural error(s); {} missing, {} changed, {} extra; {:.2} s ({:.0} MiB/s)",
        t.volumes_opened,
        t.volumes_blocked,
        t.volumes_error,
        t.volumes_skipped,
        t.files_read,
        t.bytes_read,
        t.files_unreadable,
        t.structural_errors,
        t.missing,
        t.changed,
        t.extra,
        r.seconds,
        t.bytes_read as f64 / 1048576.0 / r.seconds.max(1e-9)
    )?;
    if r.budget_exhausted {
        writeln!(
            out,
            "  budget reached: {} file(s) not checked",
            t.files_not_checked
        )?;
    }
    Ok(())
}

/// Writes JUnit XML: one test case per volume and one per failed file.
pub fn write_junit(r: &VerifyReport, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    struct Case {
        class: String,
        name: String,
        time: f64,
        failure: Option<(String, String)>,
        skipped: Option<String>,
    }
    let mut cases = Vec::new();
    for v in &r.volumes {
        let class = format!("flr.verify.{}", v.id);
        let failure = if v.good() {
            None
        } else {
            let msg = match v.state {
                VolumeState::Opened => format!(
                    "{} unreadable, {} structural error(s), {} missing, {} changed, {} extra",
                    v.failed_files(),
                    v.structural_errors.len(),
                    v.missing.len(),
                    v.changed.len(),
                    v.extra.len()
                ),
                s => format!("{}: {}", s.as_str(), v.sentence),
            };
            Some((v.state.as_str().to_string(), msg))
        };
        cases.push(Case {
            class: class.clone(),
            name: format!(
                "volume {}{}",
                v.id,
                v.fs_type
                    .as_deref()
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default()
            ),
            time: v.seconds,
            skipped: (v.state == VolumeState::Skipped).then(|| v.sentence.clone()),
            failure,
        });
        let mut file = |path: &str, kind: &str, msg: String| {
            cases.push(Case {
                class: class.clone(),
                name: format!("{}:{path}", v.id),
                time: 0.0,
                failure: Some((kind.to_string(), msg)),
                skipped: None,
            })
        };
        for u in v.unreadable.iter().filter(|u| !u.known) {
            file(
                &u.path,
                "unreadable",
                format!("{}: {}", u.kind.as_str(), u.reason),
            );
        }
        for m in &v.missing {
            file(m, "missing", "in the manifest, not in the image".into());
        }
        for c in &v.changed {
            file(
                &c.path,
                "changed",
                format!("differs in {}", c.fields.join(", ")),
            );
        }
        for e in &v.extra {
            file(e, "extra", "in the image, not in the manifest".into());
        }
    }
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let skipped = cases.iter().filter(|c| c.skipped.is_some()).count();
    writeln!(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>")?;
    writeln!(
        out,
        "<testsuites name=\"flr verify\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{:.3}\">",
        cases.len(),
        r.seconds
    )?;
    writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{:.3}\" timestamp=\"{}\">",
        xml(&r.image),
        cases.len(),
        r.seconds,
        xml(r.started.trim_end_matches('Z'))
    )?;
    writeln!(out, "    <properties>")?;
    for (k, v) in [
        ("mode", r.mode.as_str().to_string()),
        ("status", r.status.as_str().to_string()),
        ("seed", r.seed.map(|s| s.to_string()).unwrap_or_default()),
        ("manifest", r.manifest.clone().unwrap_or_default()),
    ] {
        writeln!(out, "      <property name=\"{k}\" value=\"{}\"/>", xml(&v))?;
    }
    writeln!(out, "    </properties>")?;
    for c in &cases {
        write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            xml(&c.class),
            xml(&c.name),
            c.time
        )?;
        match (&c.failure, &c.skipped) {
            (Some((kind, msg)), _) => writeln!(
                out,
                ">\n      <failure type=\"{}\" message=\"{}\">{}</failure>\n    </testcase>",
                xml(kind),
                xml(msg),
                xml(msg)
            )?,
            (None, Some(why)) => writeln!(
                out,
                ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                xml(why)
            )?,
            (None, None) => writeln!(out, "/>")?,
        }
    }
    writeln!(out, "  </testsuite>\n</testsuites>")?;
    Ok(())
}

/// Writes Prometheus text-format metrics (`flr_verify_*`) for
/// node_exporter's textfile collector.
pub fn write_prometheus(r: &VerifyReport, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let img = label(&r.image);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut gauge = |name: &str, help: &str, rows: Vec<(String, f64)>| -> std::io::Result<()> {
        writeln!(out, "# HELP flr_verify_{name} {help}")?;
        writeln!(out, "# TYPE flr_verify_{name} gauge")?;
        for (labels, v) in rows {
            writeln!(out, "flr_verify_{name}{{image=\"{img}\"{labels}}} {v}")?;
        }
        Ok(())
    };
    let t = &r.totals;
    let one = |v: u64| vec![(String::new(), v as f64)];
    gauge(
        "success",
        "1 when everything the last verification checked was good.",
        one(u64::from(r.status == Status::Ok)),
    )?;
    gauge(
        "exit_code",
        "Exit code of the last verification.",
        vec![(String::new(), f64::from(r.exit_code))],
    )?;
    gauge(
        "last_run_timestamp_seconds",
        "When the last verification ended (Unix time).",
        one(now),
    )?;
    gauge(
        "duration_seconds",
        "How long the last verification took.",
        vec![(String::new(), r.seconds)],
    )?;
    gauge(
        "volumes",
        "Volumes by state: opened, blocked, error, skipped, missing.",
        [
            ("opened", t.volumes_opened),
            ("blocked", t.volumes_blocked),
            ("error", t.volumes_error),
            ("skipped", t.volumes_skipped),
            ("missing", t.volumes_missing),
        ]
        .iter()
        .map(|(s, v)| (format!(",state=\"{s}\""), *v as f64))
        .collect(),
    )?;
    gauge(
        "volumes_may_miss_changes",
        "Volumes read whose newest changes may be missing (a journal not replayed after an unclean shutdown).",
        one(t.volumes_may_miss_changes),
    )?;
    gauge(
        "volume_ok",
        "Per volume: 1 when its check passed.",
        r.volumes
            .iter()
            .map(|v| {
                (
                    format!(
                        ",volume=\"{}\",state=\"{}\"",
                        label(&v.id),
                        v.state.as_str()
                    ),
                    f64::from(u8::from(v.good())),
                )
            })
            .collect(),
    )?;
    gauge("files", "Regular files found.", one(t.files))?;
    gauge("files_read", "Files read to their end.", one(t.files_read))?;
    gauge("bytes_read", "Bytes of file data read.", one(t.bytes_read))?;
    gauge(
        "files_not_checked",
        "Files not read (sample or budget).",
        one(t.files_not_checked),
    )?;
    gauge(
        "files_unreadable",
        "Files that could not be read.",
        one(t.files_unreadable),
    )?;
    gauge(
        "structural_errors",
        "Structural errors (folders that cannot be listed, loops).",
        one(t.structural_errors),
    )?;
    gauge(
        "files_missing",
        "Objects in the manifest but not in the image.",
        one(t.missing),
    )?;
    gauge(
        "files_changed",
        "Objects that differ from the manifest.",
        one(t.changed),
    )?;
    gauge(
        "files_extra",
        "Objects in the image but not in the manifest.",
        one(t.extra),
    )?;
    Ok(())
}

/// Writes `write` into `path` through a temporary file renamed into place
/// (textfile collectors must never see a half-written file).
pub fn write_file_atomically(
    path: &std::path::Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let res = (|| {
        let f = std::fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::new(f);
        write(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Parses `10G`, `512M`, `64K`, `1T` or plain bytes (binary units).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..].to_ascii_uppercase();
            let m: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => return Err(format!("{s:?}: unknown unit (use K, M, G, T)")),
            };
            (&t[..i], m)
        }
        None => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: not a size (e.g. 500M, 10G)"))?;
    if n.is_nan() || n < 0.0 || !n.is_finite() {
        return Err(format!("{s:?}: not a size"));
    }
    Ok((n * mul as f64) as u64)
}

/// Parses `90`, `90s`, `15m`, `2h`, `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, mul) = match t.chars().last() {
        Some('s') => (&t[..t.len() - 1], 1.0),
        Some('m') => (&t[..t.len() - 1], 60.0),
        Some('h') => (&t[..t.len() - 1], 3600.0),
        Some('d') => (&t[..t.len() - 1], 86400.0),
        _ => (t, 1.0),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: not a duration (e.g. 90s, 15m, 2h)"))?;
    if n.is_nan() || n < 0.0 || !n.is_finite() {
        return Err(format!("{s:?}: not a duration"));
    }
    Ok(Duration::from_secs_f64(n * mul))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_seeded_and_uniformly_spread() {
        let a = sample_indices(1000, 10, 42);
        assert_eq!(a, sample_indices(1000, 10, 42));
        assert_ne!(a, sample_indices(1000, 10, 43));
        assert_eq!(a.len(), 10);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(sample_indices(5, 10, 1), vec![0, 1, 2, 3, 4]);
        // Each of 10 items is picked about k/n of the time.
        let mut hits = [0u32; 10];
        for s in 0..10_000 {
            for i in sample_indices(10, 3, s) {
                hits[i] += 1;
            }
        }
        assert!(hits.iter().all(|h| (2700..3300).contains(h)), "{hits:?}");
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_bytes("10G").unwrap(), 10 << 30);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("3X").is_err());
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn xml_text_is_escaped() {
        assert_eq!(xml("a<b>&\"'\u{1}"), "a&lt;b&gt;&amp;&quot;&apos;\u{fffd}");
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
