//! Running the key chain for a command, and the feasibility verdict of
//! each volume (`probe --dry-run` and every command's report).

use std::path::PathBuf;

use flr_engine::{ContentInfo, Image, KeyRing, Verdict};
use flr_keychain::{
    AdeSetting, AuditLog, Config, DiskEncryption, Finding, KeyChain, Mode, ObjectId, Outcome,
};
use serde::Serialize;

use crate::OpsError;

/// Where the key chain's inputs come from (the CLI flags).
#[derive(Debug, Clone, Default)]
pub struct ChainOptions {
    /// `--metadata FILE`: `az snapshot show` / `az disk show` JSON, or
    /// Azure Backup's key-and-secret JSON.
    pub metadata: Option<PathBuf>,
    /// `--secret-url URL` (versioned).
    pub secret_url: Option<String>,
    /// `--kek-url URL` (versioned).
    pub kek_url: Option<String>,
    /// `--dry-run`: never read a secret's value, never unwrap.
    pub dry_run: bool,
    /// The disk or snapshot resource as Resource Manager returned it (when
    /// the image is a resource id): the metadata when `--metadata` is not given.
    pub resource: Option<crate::access::ResourceFacts>,
}

impl ChainOptions {
    /// Whether anything asks for the key chain.
    pub fn wanted(&self) -> bool {
        self.metadata.is_some() || self.secret_url.is_some() || self.resource.is_some()
    }
}

/// One ADE setting's chain, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct ChainResult {
    /// The versioned secret URL the disk depends on.
    pub secret: String,
    /// The KEK version, when the BEK is wrapped.
    pub kek: Option<String>,
    /// Unwrap algorithm.
    pub algorithm: Option<String>,
    /// `BEK` / `Wrapped BEK`.
    pub content_type: Option<String>,
    /// The `.BEK` / passphrase file name from the secret's tags.
    pub file_name: Option<String>,
    /// What the chain came to.
    pub outcome: ChainOutcome,
    /// Why, when blocked or in error.
    pub finding: Option<Finding>,
    /// What was done.
    pub steps: Vec<String>,
    /// Non-fatal findings.
    pub warnings: Vec<Finding>,
    /// What a dry run did not check.
    pub not_checked: Vec<String>,
}

/// The key chain's part of a run.
#[derive(Debug, Clone, Serialize)]
pub struct ChainSummary {
    /// Unwrap, or dry run.
    pub mode: ChainMode,
    /// Where the disk facts came from.
    pub metadata: Option<String>,
    /// Server-side encryption type and Disk Encryption Set.
    pub sse: Option<String>,
    /// `securityProfile.securityType`.
    pub security_type: Option<String>,
    /// `encryptionSettingsVersion`.
    pub ade_settings_version: Option<String>,
    /// One per ADE setting.
    pub chains: Vec<ChainResult>,
    /// HTTP round trips to Key Vault (challenges and token requests
    /// included).
    pub round_trips: usize,
    /// The audit log written, and how many records.
    pub audit: Option<String>,
    /// Records appended to it.
    pub audit_records: usize,
    #[serde(skip)]
    confidential: bool,
}

/// Runs the chain for `opts` with `config`; key material goes into `keys`
/// (tried on the disk's encrypted volumes when the image is opened). The
/// audit log goes where `[audit] path` says, else to `flr/audit.jsonl` in
/// `state_dir` (the user's state folder).
pub fn run_chain(
    opts: &ChainOptions,
    config: &Config,
    state_dir: Option<&std::path::Path>,
    image: &str,
    keys: &mut KeyRing,
) -> Result<Option<ChainSummary>, OpsError> {
    if !opts.wanted() {
        return Ok(None);
    }
    let mut disk = match &opts.metadata {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| OpsError::Usage(format!("--metadata {}: {e}", p.display())))?;
            flr_keychain::metadata::parse(&text, &p.display().to_string())
                .map_err(OpsError::Usage)?
        }
        None => match &opts.resource {
            Some(r) => flr_keychain::metadata::parse(&r.json, &r.label).map_err(OpsError::Usage)?,
            None => DiskEncryption::default(),
        },
    };
    let kek = opts
        .kek_url
        .as_deref()
        .map(ObjectId::parse)
        .transpose()
        .map_err(|e| OpsError::Usage(format!("--kek-url: {e}")))?;
    if let Some(url) = &opts.secret_url {
        let secret =
            ObjectId::parse(url).map_err(|e| OpsError::Usage(format!("--secret-url: {e}")))?;
        disk.ade_enabled = true;
        disk.ade = vec![AdeSetting {
            secret,
            secret_vault_id: None,
            kek,
            secret_value: None,
        }];
    } else if let Some(kek) = kek {
        for s in &mut disk.ade {
            s.kek = Some(kek.clone());
        }
    }
    let mut audit = if config.audit.enabled {
        let path = config
            .audit
            .path
            .clone()
            .or_else(|| state_dir.map(AuditLog::default_path))
            .ok_or_else(|| {
                OpsError::Usage("no place for the audit log: set [audit] path".into())
            })?;
        AuditLog::open(&path).map_err(|e| {
            OpsError::Usage(format!(
                "audit log {}: {e} (set [audit] path)",
                path.display()
            ))
        })?
    } else {
        AuditLog::disabled()
    };
    let connector = flr_keyvault::HttpConnector::new(config.azure.env.clone());
    let mode = if opts.dry_run {
        Mode::DryRun
    } else {
        Mode::Unwrap
    };
    let mut chains = Vec::new();
    let round_trips;
    {
        let mut chain = KeyChain::new(config, Some(&connector), &mut audit, image);
        // A confidential-VM disk's keys are released only to an attested
        // VM: nothing to try.
        if !disk.confidential() && disk.ade_enabled {
            for s in &disk.ade {
                let r = chain.resolve(s, mode);
                let (outcome, finding) = match r.outcome {
                    Outcome::Material(k) => {
                        keys.add_chain_key(k.secret, k.origin);
                        (ChainOutcome::Material, None)
                    }
                    Outcome::Feasible => (ChainOutcome::Feasible, None),
                    Outcome::Blocked(f) => (ChainOutcome::Blocked, Some(f)),
                    Outcome::Error(f) => (ChainOutcome::Error, Some(f)),
                };
                let mut warnings = r.warnings;
                if disk.ade_settings_version.as_deref() == Some("1.0") {
                    warnings.push(Finding {
                        code: "dual-pass",
                        message: "encryptionSettingsVersion 1.0 (dual pass): ADE reached the vault through an Azure AD application; flr uses its own credential, which needs secrets get and keys unwrapKey on that vault".into(),
                        remedy: None,
                    });
                }
                chains.push(ChainResult {
                    secret: r.secret,
                    kek: r.kek,
                    algorithm: r.algorithm,
                    content_type: r.content_type,
                    file_name: r.file_name,
                    outcome,
                    finding,
                    steps: r.steps,
                    warnings,
                    not_checked: r.not_checked,
                });
            }
        }
        round_trips = chain.round_trips();
    }
    Ok(Some(ChainSummary {
        mode: if opts.dry_run {
            ChainMode::DryRun
        } else {
            ChainMode::Unwrap
        },
        metadata: opts
            .metadata
            .as_ref()
            .map(|p| p.display().to_string())
            .or_else(|| {
                opts.resource
                    .as_ref()
                    .map(|r| format!("{} (Resource Manager)", r.label))
            }),
        sse: disk.sse.as_ref().map(|s| match &s.des_id {
            Some(d) => format!("{} (Disk Encryption Set {d})", s.kind),
            None => s.kind.clone(),
        }),
        security_type: disk.security_type.clone(),
        ade_settings_version: disk.ade_settings_version.clone(),
        chains,
        round_trips,
        audit: audit.path().map(|p| p.display().to_string()),
        audit_records: audit.written,
        confidential: disk.confidential(),
    }))
}

/// What the key chain came to for one secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChainOutcome {
    /// Key material obtained.
    Material,
    /// A dry run found nothing in the way.
    Feasible,
    /// Something stands in the way (the finding says what).
    Blocked,
    /// The chain could not find out (vault unreachable, server error).
    Error,
}

impl std::fmt::Display for ChainOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChainOutcome::Material => "material",
            ChainOutcome::Feasible => "feasible",
            ChainOutcome::Blocked => "blocked",
            ChainOutcome::Error => "error",
        })
    }
}

/// Whether the chain unwraps keys or only checks that it could.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChainMode {
    /// Secrets are read and unwrapped.
    Unwrap,
    /// Feasibility only: no secret value read, nothing unwrapped.
    DryRun,
}

impl std::fmt::Display for ChainMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChainMode::Unwrap => "unwrap",
            ChainMode::DryRun => "dry-run",
        })
    }
}

/// Can a volume's files be restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Feasible {
    /// Yes.
    Readable,
    /// Yes, once the key chain supplies the key (a dry run said so).
    Unlockable,
    /// No: keys (missing, disabled, refused, bound to hardware).
    Blocked,
    /// No: a format flr does not read.
    Unsupported,
    /// No: damaged, or the key chain could not find out.
    Error,
    /// There is no filesystem on it.
    NoFilesystem,
    /// In a manifest, but the image has no such volume (`verify`).
    Missing,
}

impl Feasible {
    /// The name, as JSON has it.
    pub fn as_str(self) -> &'static str {
        match self {
            Feasible::Readable => "readable",
            Feasible::Unlockable => "unlockable",
            Feasible::Blocked => "blocked",
            Feasible::Unsupported => "unsupported",
            Feasible::Error => "error",
            Feasible::NoFilesystem => "no-filesystem",
            Feasible::Missing => "missing",
        }
    }
}

impl std::fmt::Display for Feasible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a volume has its feasibility verdict (its JSON names are the
/// reason codes `probe --dry-run` and `verify` print).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Unlocked with the key given or fetched.
    Unlocked,
    /// Not encrypted.
    Plain,
    /// Server-side encrypted: arrives decrypted through the export.
    ServerSideEncrypted,
    /// A format flr does not read.
    Format,
    /// Damaged or unreadable.
    Damaged,
    /// A confidential-VM disk: keys released only after attestation.
    ConfidentialVm,
    /// Protected only by hardware-bound protectors.
    TpmOnly,
    /// No key given and no key chain configured.
    NoKey,
    /// BitLocker without a startup-key protector for the ADE `.BEK`.
    NoStartupKeyProtector,
    /// The secret's `.BEK` matches none of the volume's protectors.
    BekProtectorMismatch,
    /// The key chain can supply the key.
    KeyChain,
    /// The key obtained does not open the volume.
    WrongKey,
    /// A key-chain finding (`kek-disabled`, `secret-not-found`…).
    Chain(&'static str),
}

impl Reason {
    /// The reason code.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Unlocked => "unlocked",
            Reason::Plain => "plain",
            Reason::ServerSideEncrypted => "server-side-encrypted",
            Reason::Format => "format",
            Reason::Damaged => "damaged",
            Reason::ConfidentialVm => "confidential-vm",
            Reason::TpmOnly => "tpm-only",
            Reason::NoKey => "no-key",
            Reason::NoStartupKeyProtector => "no-startup-key-protector",
            Reason::BekProtectorMismatch => "bek-protector-mismatch",
            Reason::KeyChain => "key-chain",
            Reason::WrongKey => "wrong-key",
            Reason::Chain(code) => code,
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// The feasibility verdict of one volume.
#[derive(Debug, Clone, Serialize)]
pub struct Feasibility {
    /// Volume id.
    pub volume: String,
    /// Can its files be restored.
    pub verdict: Feasible,
    /// Reason codes.
    pub reasons: Vec<Reason>,
    /// One sentence for the operator, with the remedy.
    pub sentence: String,
    /// The secret and KEK versions the volume depends on.
    pub depends_on: Vec<String>,
}

/// Computes each volume's feasibility from what the scan found and what
/// the key chain did.
pub fn feasibility(image: &Image, chain: Option<&ChainSummary>) -> Vec<Feasibility> {
    feasibility_of(&image.volumes, chain)
}

/// [`feasibility`] of the given volumes (those of an image, or volumes of
/// disk images found inside it).
pub fn feasibility_of(
    volumes: &[flr_engine::Volume],
    chain: Option<&ChainSummary>,
) -> Vec<Feasibility> {
    let deps: Vec<String> = chain
        .map(|c| {
            c.chains
                .iter()
                .flat_map(|r| std::iter::once(r.secret.clone()).chain(r.kek.clone()))
                .collect()
        })
        .unwrap_or_default();
    volumes
        .iter()
        .map(|v| {
            let c = &v.content;
            let encrypted = c.is_encrypted();
            let mut f = Feasibility {
                volume: v.id.clone(),
                verdict: Feasible::Readable,
                reasons: Vec::new(),
                sentence: String::new(),
                depends_on: Vec::new(),
            };
            if encrypted {
                f.depends_on = deps.clone();
            }
            match c.verdict {
                Verdict::Readable if encrypted => {
                    let how = c
                        .encryption
                        .as_ref()
                        .and_then(|e| e.unlocked_with.clone())
                        .unwrap_or_default();
                    f.reasons.push(Reason::Unlocked);
                    f.sentence = format!("unlocked with {how}");
                }
                Verdict::Readable => {
                    f.reasons.push(Reason::Plain);
                    f.sentence = match chain.and_then(|c| c.sse.as_deref()) {
                        Some(sse) => {
                            f.reasons.push(Reason::ServerSideEncrypted);
                            format!("server-side encrypted ({sse}): the data arrives decrypted through the snapshot export")
                        }
                        None => "not encrypted".into(),
                    };
                }
                Verdict::Locked => locked_verdict(&mut f, c, chain),
                Verdict::Unsupported => {
                    f.verdict = Feasible::Unsupported;
                    f.reasons.push(Reason::Format);
                    f.sentence = c.detail.clone();
                }
                Verdict::Error => {
                    f.verdict = Feasible::Error;
                    f.reasons.push(Reason::Damaged);
                    f.sentence = c.detail.clone();
                }
                Verdict::Empty | Verdict::Unknown | Verdict::Container => {
                    f.verdict = Feasible::NoFilesystem;
                    f.sentence = c.detail.clone();
                }
            }
            f
        })
        .collect()
}

fn locked_verdict(f: &mut Feasibility, c: &ContentInfo, chain: Option<&ChainSummary>) {
    f.verdict = Feasible::Blocked;
    if chain.is_some_and(|c| c.confidential) {
        f.reasons.push(Reason::ConfidentialVm);
        f.sentence = "a confidential-VM disk: its keys are bound to the VM's TPM and released only after attestation, so no offline restore is possible".into();
        return;
    }
    let enc = c.encryption.as_ref();
    let protectors = enc.map(|e| e.protectors.join(", ")).unwrap_or_default();
    if protectors.contains("needs attested key release") {
        f.reasons.push(Reason::ConfidentialVm);
        f.sentence = format!(
            "the LUKS token ({protectors}) is released only to an attested confidential VM"
        );
        return;
    }
    let is_bitlocker = enc.is_some_and(|e| e.scheme.starts_with("bitlocker"));
    let list: Vec<String> = enc.map(|e| e.protectors.clone()).unwrap_or_default();
    let has = |kind: &str| list.iter().any(|p| p.starts_with(&format!("{kind} {{")));
    let Some(chain) = chain.filter(|c| !c.chains.is_empty()) else {
        if is_bitlocker
            && !has("startup key")
            && !has("password")
            && !has("recovery password")
            && !has("clear key")
        {
            f.reasons.push(Reason::TpmOnly);
            f.sentence = format!("protected only by {protectors}: cannot be unlocked offline");
            return;
        }
        f.reasons.push(Reason::NoKey);
        f.sentence = format!(
            "{}; give the disk's metadata (--metadata) or secret URL (--secret-url) so the key chain can fetch its key, or a key with --key",
            c.detail
        );
        return;
    };
    for r in &chain.chains {
        match (r.outcome, &r.finding) {
            (_, Some(fd)) => {
                if r.outcome == ChainOutcome::Error {
                    f.verdict = Feasible::Error;
                }
                f.reasons.push(Reason::Chain(fd.code));
                f.sentence = match &fd.remedy {
                    Some(rem) => format!("{} — {rem}", fd.message),
                    None => fd.message.clone(),
                };
                return;
            }
            (ChainOutcome::Feasible, None) => {
                if is_bitlocker {
                    if !has("startup key") {
                        f.reasons.push(Reason::NoStartupKeyProtector);
                        f.sentence = format!("the volume has no startup-key protector for the ADE .BEK (protectors: {protectors})");
                        return;
                    }
                    if let Some(guid) = r
                        .file_name
                        .as_deref()
                        .and_then(|n| n.strip_suffix(".BEK").or(n.strip_suffix(".bek")))
                    {
                        let want = format!("startup key {{{}}}", guid.to_ascii_lowercase());
                        if !list.iter().any(|p| p.to_ascii_lowercase() == want) {
                            f.reasons.push(Reason::BekProtectorMismatch);
                            f.sentence = format!("the secret's .BEK ({guid}) matches none of the volume's protectors ({protectors})");
                            return;
                        }
                    }
                }
                f.verdict = Feasible::Unlockable;
                f.reasons.push(Reason::KeyChain);
                f.sentence = format!(
                    "the key chain can supply the key: {}; not checked: {}",
                    r.steps.join("; "),
                    if r.not_checked.is_empty() {
                        "nothing".into()
                    } else {
                        r.not_checked.join("; ")
                    }
                );
                return;
            }
            _ => {}
        }
    }
    // Material was obtained but did not open the volume.
    f.reasons.push(Reason::WrongKey);
    f.sentence = format!("the key from the key chain does not open it: {}", c.detail);
}
