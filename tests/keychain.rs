//! The ADE key chain end to end, with key material held offline (an RSA
//! private key standing for the KEK version, the wrapped BEK from Azure
//! Backup's key-and-secret JSON): restore, dry run, policy refusals, audit.

use std::path::{Path, PathBuf};

use base64::Engine;
use rsa::pkcs8::EncodePrivateKey;
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};

use crate::util::*;

const KID: &str =
    "https://contoso-ade.vault.azure.net/keys/ade-kek/5f1c0e7a9b3d4c2e8f6a1b0c9d8e7f60";
const SECRET: &str =
    "https://contoso-ade.vault.azure.net/secrets/6B2A3C4D-0000-4000-8000-0123456789AB/a1b2c3d4e5f60718293a4b5c6d7e8f90";

struct Setup {
    dir: tempfile::TempDir,
    key: RsaPrivateKey,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let key = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        let pem = key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        std::fs::write(dir.path().join("kek-v1.pem"), pem.as_bytes()).unwrap();
        Setup { dir, key }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Azure Backup's JSON with the ADE passphrase wrapped (RSA-OAEP, the
    /// ADE default) by `key`.
    fn backup_json(&self, key: &RsaPrivateKey) -> PathBuf {
        let pass = std::fs::read(flr_testdata::testdata_dir().join("luks/pass-ade.bin")).unwrap();
        let wrapped = RsaPublicKey::from(key)
            .encrypt(&mut rand::thread_rng(), Oaep::new::<sha1::Sha1>(), &pass)
            .unwrap();
        let data = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(wrapped);
        let j = serde_json::json!({"keyAndSecretDetails": {
            "kekDetails": {"keyUrl": KID, "keyVaultId": "/subscriptions/s/resourceGroups/g/providers/Microsoft.KeyVault/vaults/contoso-ade", "keyBackupData": "opaque"},
            "bekDetails": {"secretUrl": SECRET, "secretVaultId": "/x", "secretData": data},
            "encryptionMechanism": "SinglePass"}});
        let p = self.path("backup.json");
        std::fs::write(&p, j.to_string()).unwrap();
        p
    }

    fn config(&self, policy: &str) -> PathBuf {
        let text = format!(
            "[[offline_key]]\nkid = \"{KID}\"\npem = \"kek-v1.pem\"\n\n[policy]\noffline = true\n{policy}\n\n[audit]\npath = \"audit.jsonl\"\n"
        );
        let p = self.path("flr.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        read_jsonl(&self.path("audit.jsonl"))
    }
}

/// `flr probe --dry-run --json` with a config and metadata: exit code and report.
fn dry_run(cfg: &Path, meta: &Path, img: &Path) -> (Option<i32>, serde_json::Value) {
    let out = run(&[
        "probe",
        "--dry-run",
        "--json",
        "--config",
        s(cfg),
        "--metadata",
        s(meta),
        s(img),
    ]);
    let r = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    (out.status.code(), r)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn offline_kek_unwraps_the_backup_secret_and_restores_the_ade_os_disk() {
    let st = Setup::new();
    let img = fixture("luks/ade-os.vhd.zst");
    let meta = st.backup_json(&st.key);
    let cfg = st.config("");
    let dest = tempfile::tempdir().unwrap();
    let out = run_ok(&[
        "get",
        "--config",
        s(&cfg),
        "--metadata",
        s(&meta),
        s(&img),
        "p1:/",
        "-o",
        s(dest.path()),
        "--checksum",
    ]);
    let want: Vec<_> = manifest("luks/ade-root.tsv")
        .into_iter()
        .filter(|e| e.kind == 'f')
        .collect();
    check_tree(dest.path(), &checksums(&out), &want);
    // The audit log names the unwrap and the key version, never key bytes.
    let log = st.audit();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["operation"], "offline-unwrap");
    assert_eq!(log[0]["id"], KID);
    assert_eq!(log[0]["alg"], "RSA-OAEP");
    assert_eq!(log[0]["result"], "ok");
    let raw = std::fs::read_to_string(st.path("audit.jsonl")).unwrap();
    let pass =
        std::fs::read_to_string(flr_testdata::testdata_dir().join("luks/pass-ade.bin")).unwrap();
    assert!(!raw.contains(&pass[..24]));
    // probe says which chain the key came from.
    let out = run_ok(&[
        "probe",
        "--config",
        s(&cfg),
        "--metadata",
        s(&meta),
        s(&img),
    ]);
    let text = stdout(&out);
    assert!(text.contains("unwrapped offline with"), "{text}");
    assert!(text.contains("feasibility: readable (unlocked)"), "{text}");
}

#[test]
fn dry_run_checks_without_unwrapping_and_policy_refusals_block() {
    let st = Setup::new();
    let img = fixture("luks/ade-os.vhd.zst");
    let meta = st.backup_json(&st.key);

    // Dry run: unlockable, exit 0, no unwrap recorded.
    let cfg = st.config("");
    let (code, r) = dry_run(&cfg, &meta, &img);
    assert_eq!(code, Some(0), "{r}");
    let f = &r["feasibility"][0];
    assert_eq!(f["volume"], "p1");
    assert_eq!(f["verdict"], "unlockable", "{f}");
    assert_eq!(f["depends_on"][0], SECRET);
    assert_eq!(f["depends_on"][1], KID);
    assert_eq!(r["feasibility"][1]["verdict"], "readable");
    assert!(st.audit().is_empty(), "a dry run never unwraps");

    // RSA-OAEP not allowed: blocked before any key is touched, exit 4.
    let cfg = st.config("algorithms = [\"RSA-OAEP-256\"]");
    let (code, r) = dry_run(&cfg, &meta, &img);
    assert_eq!(code, Some(4), "{r}");
    assert_eq!(r["feasibility"][0]["verdict"], "blocked");
    assert_eq!(r["feasibility"][0]["reasons"][0], "policy-denied-algorithm");

    // The vault is not allowed: blocked, and (offline policy) nothing was contacted.
    let cfg = st.config("secrets = [\"https://other-vault.vault.azure.net/*\"]");
    let (code, r) = dry_run(&cfg, &meta, &img);
    assert_eq!(code, Some(4), "{r}");
    assert_eq!(r["feasibility"][0]["reasons"][0], "policy-denied-secret");
    assert_eq!(r["key_chain"]["round_trips"], 0);

    // An offline key that is not the version that wrapped the secret: the
    // restore refuses clearly (exit 4) and the audit log records the failure.
    let other = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let meta2 = st.backup_json(&other);
    let cfg = st.config("");
    let out = run(&[
        "ls",
        "--config",
        s(&cfg),
        "--metadata",
        s(&meta2),
        s(&img),
        "p1:/",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("offline-unwrap-failed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(st.audit().last().unwrap()["result"], "failed");
}

/// A passphrase file standing for the secret version (offline_secret): no
/// vault, no unwrap; and the metadata-only verdicts: server-side encryption
/// reads as plain, a confidential-VM disk is blocked with the reason.
#[test]
fn offline_secret_sse_and_confidential_vm_verdicts() {
    let st = Setup::new();
    let img = fixture("luks/ade-os.vhd.zst");
    let pass = flr_testdata::testdata_dir().join("luks/pass-ade.bin");
    let cfg = st.path("secret.toml");
    std::fs::write(
        &cfg,
        format!("[[offline_secret]]\nid = \"{SECRET}\"\nfile = \"{}\"\n[policy]\noffline = true\n[audit]\npath = \"audit.jsonl\"\n", s(&pass)),
    )
    .unwrap();
    let out = run_ok(&[
        "cat",
        "--config",
        s(&cfg),
        "--secret-url",
        SECRET,
        s(&img),
        "p1:/etc/hostname",
    ]);
    assert_eq!(stdout(&out), "ade-vm-01\n");
    assert_eq!(st.audit()[0]["operation"], "offline-secret");

    // Server-side encryption with a customer key: the plain volumes are
    // readable and the report says why no key is needed.
    let sse = st.path("sse.json");
    std::fs::write(
        &sse,
        r#"{"name":"web01-os","properties":{"encryption":{"type":"EncryptionAtRestWithCustomerKey","diskEncryptionSetId":"/subscriptions/0/resourceGroups/rg/providers/Microsoft.Compute/diskEncryptionSets/des1"}}}"#,
    )
    .unwrap();
    let demo = flr_testdata::testdata_dir().join("demo.vhd");
    let (code, r) = dry_run(&cfg, &sse, &demo);
    assert_eq!(code, Some(0), "{r}");
    for f in r["feasibility"].as_array().unwrap() {
        assert_eq!(f["verdict"], "readable", "{f}");
        assert_eq!(f["reasons"][1], "server-side-encrypted", "{f}");
        assert!(f["sentence"].as_str().unwrap().contains("des1"), "{f}");
    }

    // A confidential-VM disk: blocked, whatever keys are configured.
    let cvm = st.path("cvm.json");
    std::fs::write(
        &cvm,
        format!(r#"{{"securityProfile":{{"securityType":"ConfidentialVM_DiskEncryptedWithCustomerKey"}},
            "encryptionSettingsCollection":{{"enabled":true,"encryptionSettings":[{{"diskEncryptionKey":{{"secretUrl":"{SECRET}"}}}}]}}}}"#),
    )
    .unwrap();
    let (code, r) = dry_run(&cfg, &cvm, &img);
    assert_eq!(code, Some(4), "{r}");
    assert_eq!(r["feasibility"][0]["reasons"][0], "confidential-vm", "{r}");
}
