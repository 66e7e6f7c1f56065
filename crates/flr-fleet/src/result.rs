//! The document `flr fleet run` writes for its item (`results/ID.json`),
//! version [`RESULT_VERSION`]. It is small whatever the disk: counts per
//! volume and at most [`EXAMPLES`] example paths per kind of problem.

use serde::{Deserialize, Serialize};

/// The result version this flr writes and reads.
pub const RESULT_VERSION: u32 = 1;

/// Example paths kept per volume (unreadable, changed, missing, extra).
pub const EXAMPLES: usize = 20;

/// What happened to an item, as the report groups it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Everything checked is good (exit 0).
    Passed,
    /// Differs from its manifest (exit 7).
    Mismatch,
    /// Unreadable files, structural errors, a bad image (exit 3), or
    /// another final failure (exit 2, 5).
    Error,
    /// A volume blocked by keys (exit 4).
    Blocked,
    /// The key chain or Resource Manager could not answer, or no export
    /// slot came free in time (exit 6): the engine retries it.
    Retryable,
    /// No result was written (the report fills these in from the spec).
    #[default]
    NeverReported,
}

impl Outcome {
    /// The outcome of an exit code.
    pub fn of_exit_code(code: i32) -> Outcome {
        match code {
            0 => Outcome::Passed,
            7 => Outcome::Mismatch,
            4 => Outcome::Blocked,
            6 => Outcome::Retryable,
            _ => Outcome::Error,
        }
    }

    /// The name, as JSON has it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Mismatch => "mismatch",
            Outcome::Error => "error",
            Outcome::Blocked => "blocked",
            Outcome::Retryable => "retryable",
            Outcome::NeverReported => "never-reported",
        }
    }

    /// Every outcome, in report order (worst first).
    pub const ALL: [Outcome; 6] = [
        Outcome::Blocked,
        Outcome::Mismatch,
        Outcome::Error,
        Outcome::Retryable,
        Outcome::NeverReported,
        Outcome::Passed,
    ];

    /// Whether an engine's retry may change it.
    pub fn is_final(self) -> bool {
        !matches!(self, Outcome::Retryable | Outcome::NeverReported)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One volume of the item, summed up.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct VolumeSummary {
    /// Volume id (`p1`, `p3/rootvg/rootlv`).
    pub id: String,
    /// Filesystem, when opened.
    #[serde(default)]
    pub fs_type: Option<String>,
    /// `opened`, `blocked`, `error`, `skipped`, `missing`.
    pub state: String,
    /// `readable`, `unlockable`, `blocked`, …
    pub verdict: String,
    /// Reason codes (`kek-disabled`, `plain`, …).
    #[serde(default)]
    pub reasons: Vec<String>,
    /// One sentence for the operator (names the KEK version when blocked).
    #[serde(default)]
    pub sentence: String,
    /// Whether nothing checked on it is wrong.
    pub good: bool,
    /// Regular files found.
    pub files: u64,
    /// Files read.
    pub files_read: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Files not read (sample, budget).
    pub files_not_checked: u64,
    /// Files that could not be read (failures only).
    pub unreadable: u64,
    /// Structural errors.
    pub structural_errors: u64,
    /// In the manifest, not in the image.
    pub missing: u64,
    /// Different from the manifest.
    pub changed: u64,
    /// In the image, not in the manifest.
    pub extra: u64,
    /// Up to [`EXAMPLES`] per kind: `changed /etc/fstab (sha256)`.
    #[serde(default)]
    pub examples: Vec<String>,
}

/// One step of the key chain, for the report (never a key).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct KeyChainStep {
    /// The versioned BEK secret.
    pub secret: String,
    /// The KEK version, when the BEK is wrapped.
    #[serde(default)]
    pub kek: Option<String>,
    /// `unwrapped`, `blocked`, `error`, …
    pub outcome: String,
    /// The finding's code (`kek-disabled`), when blocked or in error.
    #[serde(default)]
    pub code: Option<String>,
    /// The finding's message.
    #[serde(default)]
    pub message: Option<String>,
}

/// What the coordination cost, apart from the verification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Coordination {
    /// The family slot held while the export was active.
    #[serde(default)]
    pub slot: Option<u8>,
    /// Seconds spent waiting for a free slot.
    pub slot_wait_seconds: f64,
    /// Seconds spent reading the spec, checking for an earlier result,
    /// taking and releasing the lease and writing this result.
    pub overhead_seconds: f64,
}

/// The result of one item.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ItemResult {
    /// [`RESULT_VERSION`].
    pub flr_fleet_result: u32,
    /// The item's index in the spec.
    pub index: u64,
    /// The item's id.
    pub id: String,
    /// The VM.
    #[serde(default)]
    pub vm: Option<String>,
    /// The disk.
    #[serde(default)]
    pub disk: Option<String>,
    /// The image as it may be printed (a blob URL without its SAS).
    pub image: String,
    /// The snapshot's resource id, when the image is one.
    #[serde(default)]
    pub snapshot_id: Option<String>,
    /// When the snapshot was taken.
    #[serde(default)]
    pub snapshot_time: Option<String>,
    /// The ETag of the blob read (pinned for the whole run).
    #[serde(default)]
    pub etag: Option<String>,
    /// The incremental-snapshot family.
    #[serde(default)]
    pub family: Option<String>,
    /// Which attempt this was (1 for the first; the engine's retry count + 1).
    pub attempt: u32,
    /// The engine and its task (`slurm 4242_7`, `kubernetes flr-fleet-7`).
    #[serde(default)]
    pub task: Option<String>,
    /// The machine.
    #[serde(default)]
    pub host: Option<String>,
    /// When the task started (RFC 3339).
    pub started: String,
    /// When it finished.
    pub finished: String,
    /// Seconds from start to finish.
    pub seconds: f64,
    /// Seconds of the verification itself (open, key chain, walk, read).
    pub verify_seconds: f64,
    /// The exit code the task ended with.
    pub exit_code: i32,
    /// What it comes to.
    pub outcome: Outcome,
    /// `flr verify`'s status (`ok`, `mismatch`, `error`,
    /// `key-chain-error`, `blocked`), or `failed` when verify could not run.
    pub status: String,
    /// The error that ended the task early, if one did.
    #[serde(default)]
    pub error: Option<String>,
    /// `full` or `sample`.
    pub mode: String,
    /// The sample's seed.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Whether a time or byte budget stopped the reading.
    #[serde(default)]
    pub budget_exhausted: bool,
    /// The manifest compared with.
    #[serde(default)]
    pub manifest: Option<String>,
    /// One per volume.
    #[serde(default)]
    pub volumes: Vec<VolumeSummary>,
    /// The key chain, one per ADE setting.
    #[serde(default)]
    pub key_chain: Vec<KeyChainStep>,
    /// Files read, all volumes.
    pub files_read: u64,
    /// Bytes read, all volumes.
    pub bytes_read: u64,
    /// Bytes fetched from storage (blobs), retries included.
    pub bytes_fetched: u64,
    /// Storage requests (blobs) and Resource Manager requests.
    pub requests: u64,
    /// What was not checked, in words.
    #[serde(default)]
    pub not_checked: Vec<String>,
    /// What the fleet coordination cost.
    #[serde(default)]
    pub coordination: Coordination,
}

impl ItemResult {
    /// Parses a result, refusing an unknown version.
    pub fn parse(bytes: &[u8]) -> Result<ItemResult, String> {
        let r: ItemResult = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if r.flr_fleet_result == 0 || r.flr_fleet_result > RESULT_VERSION {
            return Err(format!(
                "result version {} (this flr reads version {RESULT_VERSION})",
                r.flr_fleet_result
            ));
        }
        Ok(r)
    }

    /// The JSON document.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a result serialises");
        v.push(b'\n');
        v
    }

    /// The blocked reasons with the versions they depend on:
    /// `kek-disabled (KEK …/keys/kek/0123)`.
    pub fn blocked_reasons(&self) -> Vec<String> {
        let mut out = Vec::new();
        for k in &self.key_chain {
            if let Some(code) = &k.code {
                let what = match &k.kek {
                    Some(kek) if code.starts_with("kek") || code.starts_with("key") => {
                        format!("{code} (KEK {kek})")
                    }
                    _ => format!("{code} (secret {})", k.secret),
                };
                if !out.contains(&what) {
                    out.push(what);
                }
            }
        }
        for v in self.volumes.iter().filter(|v| v.state == "blocked") {
            for r in &v.reasons {
                if !out.iter().any(|o| o.starts_with(r.as_str())) {
                    out.push(format!("{r} ({})", v.id));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_round_trip_and_versions_are_checked() {
        let r = ItemResult {
            flr_fleet_result: RESULT_VERSION,
            id: "a".into(),
            outcome: Outcome::Blocked,
            key_chain: vec![KeyChainStep {
                secret: "https://v/secrets/s/1".into(),
                kek: Some("https://v/keys/k/77".into()),
                outcome: "blocked".into(),
                code: Some("kek-disabled".into()),
                message: None,
            }],
            ..ItemResult::default()
        };
        let back = ItemResult::parse(&r.to_json()).unwrap();
        assert_eq!(back, r);
        assert_eq!(
            back.blocked_reasons(),
            vec!["kek-disabled (KEK https://v/keys/k/77)".to_string()]
        );
        let mut newer = serde_json::to_value(&r).unwrap();
        newer["flr_fleet_result"] = 9.into();
        let e = ItemResult::parse(newer.to_string().as_bytes()).unwrap_err();
        assert!(e.contains("result version 9"), "{e}");
        assert_eq!(Outcome::of_exit_code(6), Outcome::Retryable);
        assert!(!Outcome::Retryable.is_final());
    }
}
