//! The ADE key chain against a Key Vault: flr-kvtest's HTTPS test server
//! (bearer challenge, token endpoint, versioned RSA keys, secrets with tags,
//! Key Vault's error bodies). The flr binary fetches the secret, unwraps it
//! with the KEK version named by its tags, and restores files whose sha256
//! come from the fixtures' source trees.

use std::path::{Path, PathBuf};
use std::process::Output;

use flr_kvtest::{Denial, FaultOp, TestVault};

use crate::util::*;

const CLIENT: &str = "flr-restore-app";
const CLIENT_SECRET: &str = "correct-horse-battery-staple";
const SECRET_NAME: &str = "6B2A3C4D-0000-4000-8000-0123456789AB";

struct Vault {
    kv: TestVault,
    dir: tempfile::TempDir,
    kid1: String,
    secret: String,
}

impl Vault {
    /// A vault with KEK version 1 and the ADE passphrase wrapped by it
    /// (RSA-OAEP-256), tagged as ADE tags it.
    fn new() -> Vault {
        let kv = TestVault::start();
        kv.add_client(CLIENT, CLIENT_SECRET);
        let kid1 = kv.create_rsa_key("ade-kek", 2048);
        let pass = std::fs::read(flr_testdata::testdata_dir().join("luks/pass-ade.bin")).unwrap();
        let wrapped = kv.wrap(&kid1, "RSA-OAEP-256", &pass);
        let secret = kv.set_secret(
            SECRET_NAME,
            &wrapped,
            Some("Wrapped BEK"),
            &[
                ("DiskEncryptionKeyFileName", "LinuxPassPhraseFileName"),
                ("DiskEncryptionKeyEncryptionKeyURL", &kid1),
                ("DiskEncryptionKeyEncryptionAlgorithm", "RSA-OAEP-256"),
                ("MachineName", "ade-vm-01"),
            ],
        );
        Vault {
            kv,
            dir: tempfile::tempdir().unwrap(),
            kid1,
            secret,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `az snapshot show` output for an ADE single-pass disk.
    fn metadata(&self, secret: &str, kek: &str) -> PathBuf {
        let j = serde_json::json!({
            "name": "ade-vm-01-osdisk-snap",
            "encryption": {"type": "EncryptionAtRestWithPlatformKey"},
            "encryptionSettingsCollection": {
                "enabled": true,
                "encryptionSettingsVersion": "1.1",
                "encryptionSettings": [{
                    "diskEncryptionKey": {"secretUrl": secret, "sourceVault": {"id": "/subscriptions/0/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/test"}},
                    "keyEncryptionKey": {"keyUrl": kek, "sourceVault": {"id": "/subscriptions/0/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/test"}}
                }]
            }
        });
        let p = self.path("snapshot.json");
        std::fs::write(&p, j.to_string()).unwrap();
        p
    }

    fn config(&self, policy: &str) -> PathBuf {
        let vaults = if policy.contains("vaults") {
            ""
        } else {
            "vaults = [\"https://127.0.0.1:*\"]\n"
        };
        let text = format!(
            "[[vault]]\nurl = \"{}\"\ncredential = \"client-secret\"\nca_file = \"{}\"\n\n[policy]\n{vaults}{policy}\n\n[audit]\npath = \"audit.jsonl\"\n",
            self.kv.url(),
            self.kv.ca_path().display()
        );
        // One file per configuration: earlier paths stay valid.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = self.path(&format!("flr-{n}.toml"));
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Runs flr with the vault's client credentials in the environment.
    fn flr(&self, args: &[&str]) -> Output {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flr"))
            .args(args)
            .env("AZURE_CLIENT_ID", CLIENT)
            .env("AZURE_CLIENT_SECRET", CLIENT_SECRET)
            .env_remove("AZURE_TENANT_ID")
            .env_remove("FLR_CONFIG")
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(101), "panic: {}", stderr(&out));
        out
    }

    fn dry_run(&self, meta: &Path, cfg: &Path, img: &Path) -> (i32, serde_json::Value) {
        let out = self.flr(&[
            "probe",
            "--dry-run",
            "--json",
            "--config",
            s(cfg),
            "--metadata",
            s(meta),
            s(img),
        ]);
        let v =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
        (out.status.code().unwrap(), v)
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        read_jsonl(&self.path("audit.jsonl"))
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn restore_root(v: &Vault, meta: &Path, cfg: &Path) -> Output {
    let img = fixture("luks/ade-os.vhd.zst");
    let dest = tempfile::tempdir().unwrap();
    let out = v.flr(&[
        "get",
        "--config",
        s(cfg),
        "--metadata",
        s(meta),
        s(&img),
        "p1:/",
        "-o",
        s(dest.path()),
        "--checksum",
    ]);
    if out.status.success() {
        let want: Vec<_> = manifest("luks/ade-root.tsv")
            .into_iter()
            .filter(|e| e.kind == 'f')
            .collect();
        check_tree(dest.path(), &checksums(&out), &want);
    }
    out
}

#[test]
fn ade_linux_disks_restore_through_key_vault() {
    let v = Vault::new();
    let meta = v.metadata(&v.secret, &v.kid1);
    let cfg = v.config("");
    let out = restore_root(&v, &meta, &cfg);
    assert!(out.status.success(), "{}", stderr(&out));

    // The data disk, same secret: in-place LUKS2 at a 16 MiB offset.
    let img = fixture("luks/ade-data.img.zst");
    let dest = tempfile::tempdir().unwrap();
    let out = v.flr(&[
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
    assert!(out.status.success(), "{}", stderr(&out));
    let want: Vec<_> = manifest("luks/ade-data.tsv")
        .into_iter()
        .filter(|e| e.kind == 'f')
        .collect();
    check_tree(dest.path(), &checksums(&out), &want);

    // Audit: get-secret and unwrap-key with versions and the caller; no key bytes.
    let log = v.audit();
    let unwraps: Vec<_> = log
        .iter()
        .filter(|r| r["operation"] == "unwrap-key")
        .collect();
    assert_eq!(unwraps.len(), 2, "{log:?}");
    assert_eq!(unwraps[0]["id"], v.kid1.as_str());
    assert_eq!(unwraps[0]["alg"], "RSA-OAEP-256");
    assert_eq!(unwraps[0]["result"], "ok");
    assert_eq!(unwraps[0]["caller"], format!("app {CLIENT}"));
    assert!(log
        .iter()
        .any(|r| r["operation"] == "get-secret" && r["id"] == v.secret.as_str()));
    let raw = std::fs::read_to_string(v.path("audit.jsonl")).unwrap();
    let pass =
        std::fs::read_to_string(flr_testdata::testdata_dir().join("luks/pass-ade.bin")).unwrap();
    assert!(!raw.contains(&pass[..24]), "key bytes in the audit log");

    // The dry run on the three-volume OS disk: unlockable, few round trips,
    // and no unwrap or secret value read.
    v.kv.reset_log();
    let (code, r) = v.dry_run(&meta, &cfg, &fixture("luks/ade-os.vhd.zst"));
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["feasibility"][0]["verdict"], "unlockable", "{r}");
    let trips = r["key_chain"]["round_trips"].as_u64().unwrap();
    eprintln!("dry run of a three-volume disk: {trips} Key Vault round trips");
    assert!(trips < 10, "{trips} round trips");
    let reqs = v.kv.requests();
    assert_eq!(reqs.len() as u64, trips, "{reqs:?}");
    assert!(
        !reqs.iter().any(|q| q.path.contains("unwrapkey")),
        "{reqs:?}"
    );
    assert!(
        !reqs.iter().any(|q| q.method == "GET"
            && q.path.starts_with(&format!("/secrets/{SECRET_NAME}/"))
            && !q.path.contains("versions")),
        "a dry run must not read the secret's value: {reqs:?}"
    );
}

#[test]
fn kek_rotation_disabling_and_policy() {
    let v = Vault::new();
    let meta = v.metadata(&v.secret, &v.kid1);
    let cfg = v.config("");
    let img = fixture("luks/ade-os.vhd.zst");

    // The KEK rotates: version 2 exists, the secret stays wrapped by version 1.
    let kid2 = v.kv.create_rsa_key("ade-kek", 2048);
    assert_ne!(kid2, v.kid1);
    let out = restore_root(&v, &meta, &cfg);
    assert!(out.status.success(), "{}", stderr(&out));

    // Version 1 disabled: blocked, naming version 1 and the remedy.
    v.kv.set_key_attributes(&v.kid1, Some(false), None, None);
    let (code, r) = v.dry_run(&meta, &cfg, &img);
    assert_eq!(code, 4, "{r}");
    let f = &r["feasibility"][0];
    assert_eq!(f["verdict"], "blocked");
    assert_eq!(f["reasons"][0], "kek-disabled");
    let v1 = v.kid1.rsplit('/').next().unwrap();
    let sentence = f["sentence"].as_str().unwrap();
    assert!(
        sentence.contains(v1) && sentence.contains("auto-rotation"),
        "{sentence}"
    );
    // And the restore itself: Key Vault's 403 KeyDisabled on unwrapKey.
    let out = restore_root(&v, &meta, &cfg);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("kek-disabled"), "{}", stderr(&out));
    v.kv.set_key_attributes(&v.kid1, Some(true), None, None);

    // The policy denies the vault: blocked, and no request reaches it.
    v.kv.reset_log();
    let cfg_deny = v.config("vaults = [\"https://*.vault.azure.net\"]");
    let (code, r) = v.dry_run(&meta, &cfg_deny, &img);
    assert_eq!(code, 4);
    assert_eq!(r["feasibility"][0]["reasons"][0], "policy-denied-vault");
    assert!(v.kv.requests().is_empty(), "{:?}", v.kv.requests());

    // Expired KEK version: Key Vault still unwraps; the default policy
    // warns, `expired_keys = "deny"` blocks.
    v.kv.set_key_attributes(&v.kid1, None, None, Some(Some(1_600_000_000)));
    let out = restore_root(&v, &meta, &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    let (code, r) = v.dry_run(&meta, &cfg, &img);
    assert_eq!(code, 0);
    assert_eq!(
        r["key_chain"]["chains"][0]["warnings"][0]["code"],
        "key-expired"
    );
    let (code, r) = v.dry_run(&meta, &v.config("expired_keys = \"deny\""), &img);
    assert_eq!(code, 4);
    assert_eq!(r["feasibility"][0]["reasons"][0], "key-expired");
    v.kv.set_key_attributes(&v.kid1, None, None, Some(None));

    // A wrong secret version: a clear error in both modes.
    let wrong = format!(
        "{}/{}",
        v.secret.rsplit_once('/').unwrap().0,
        "0123456789abcdef0123456789abcdef"
    );
    let meta_wrong = v.metadata(&wrong, &v.kid1);
    let (code, r) = v.dry_run(&meta_wrong, &cfg, &img);
    assert_eq!(code, 4);
    assert_eq!(
        r["feasibility"][0]["reasons"][0],
        "secret-version-not-found"
    );
    let out = restore_root(&v, &meta_wrong, &cfg);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains("secret-not-found"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn permissions_faults_and_retries() {
    let v = Vault::new();
    let meta = v.metadata(&v.secret, &v.kid1);
    let cfg = v.config("");

    // No unwrapKey permission in the access policy.
    v.kv.deny(FaultOp::UnwrapKey, Denial::Policy);
    let out = restore_root(&v, &meta, &cfg);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains("forbidden-by-policy"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("unwrapKey"), "{}", stderr(&out));
    let last = v
        .audit()
        .into_iter()
        .rev()
        .find(|r| r["operation"] == "unwrap-key")
        .unwrap();
    assert_eq!(last["result"], "ForbiddenByPolicy");

    // RBAC instead: the role to assign is named.
    let v = Vault::new();
    let meta = v.metadata(&v.secret, &v.kid1);
    let cfg = v.config("");
    v.kv.deny(FaultOp::GetSecret, Denial::Rbac);
    let out = restore_root(&v, &meta, &cfg);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains("Key Vault Secrets User"),
        "{}",
        stderr(&out)
    );

    // Throttling: 429 with Retry-After is waited out, then the restore works.
    let v = Vault::new();
    let meta = v.metadata(&v.secret, &v.kid1);
    let cfg = v.config("");
    v.kv.fail_next(429, Some(1), 2);
    let t = std::time::Instant::now();
    let out = restore_root(&v, &meta, &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        t.elapsed() >= std::time::Duration::from_secs(2),
        "Retry-After was not honoured"
    );
    assert!(v.kv.requests().iter().filter(|q| q.status == 429).count() == 2);
}

/// ADE on Windows: a corpus BitLocker volume whose startup key (.BEK) is
/// stored as a Wrapped BEK secret, as ADE stores it.
#[test]
fn ade_windows_bek_from_key_vault_opens_bitlocker() {
    let Some((corpus, _)) = flr_testdata::corpus("ade_windows_bek_from_key_vault_opens_bitlocker")
    else {
        return;
    };
    let dir = corpus.join("bitlocker/cryptsetup-bitlk");
    let img = dir.join("bitlk-aes-xts-128-startup-key.img");
    let bek_name = "4381F759-C4F8-4DE0-BB61-FC33A831BDA5.BEK";
    let bek = std::fs::read(dir.join(bek_name)).unwrap();
    let kv = TestVault::start();
    kv.add_client(CLIENT, CLIENT_SECRET);
    let kid = kv.create_rsa_key("win-kek", 2048);
    let wrapped = kv.wrap(&kid, "RSA-OAEP", &bek);
    let secret = kv.set_secret(
        "4381F759-C4F8-4DE0-BB61-FC33A831BDA5",
        &wrapped,
        Some("Wrapped BEK"),
        &[
            ("DiskEncryptionKeyFileName", bek_name),
            ("DiskEncryptionKeyEncryptionKeyURL", &kid),
            ("DiskEncryptionKeyEncryptionAlgorithm", "RSA-OAEP"),
            ("VolumeLetter", "C:"),
        ],
    );
    let v = Vault {
        kv,
        dir: tempfile::tempdir().unwrap(),
        kid1: kid.clone(),
        secret: secret.clone(),
    };
    let meta = v.metadata(&secret, &kid);
    let cfg = v.config("");
    let (code, r) = v.dry_run(&meta, &cfg, &img);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["feasibility"][0]["verdict"], "unlockable", "{r}");
    let out = v.flr(&[
        "cat",
        "--config",
        s(&cfg),
        "--metadata",
        s(&meta),
        s(&img),
        "disk:",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let conf = std::fs::read_to_string(dir.join("images.conf")).unwrap();
    let want = conf
        .split("[bitlk-aes-xts-128-startup-key]")
        .nth(1)
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("SHA256SUM=")))
        .unwrap();
    assert_eq!(sha256_hex(&out.stdout), want);
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// The other credentials the test vault can stand in for: a workload
/// identity's federated token (exchanged at the authority the challenge
/// names) and a ready token in an environment variable.
#[test]
fn workload_identity_and_token_env_credentials() {
    let v = Vault::new();
    let meta = v.metadata(&v.secret, &v.kid1);
    let img = fixture("luks/ade-os.vhd.zst");
    let cfg_for = |cred: &str| {
        let p = v.path(&format!("{cred}.toml"));
        std::fs::write(
            &p,
            format!(
                "[[vault]]\nurl = \"{}\"\ncredential = \"{cred}\"\nca_file = \"{}\"\n[audit]\npath = \"audit.jsonl\"\n",
                v.kv.url(),
                v.kv.ca_path().display()
            ),
        )
        .unwrap();
        p
    };
    // A JWT-shaped federated token in AZURE_FEDERATED_TOKEN_FILE.
    let fed = v.path("federated-token");
    std::fs::write(
        &fed,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2ln",
    )
    .unwrap();
    let cfg = cfg_for("workload-identity");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flr"))
        .args([
            "cat",
            "--config",
            s(&cfg),
            "--metadata",
            s(&meta),
            s(&img),
            "p1:/etc/hostname",
        ])
        .env("AZURE_CLIENT_ID", CLIENT)
        .env("AZURE_FEDERATED_TOKEN_FILE", &fed)
        .env_remove("AZURE_CLIENT_SECRET")
        .env_remove("AZURE_TENANT_ID")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "ade-vm-01\n");
    // A token handed over in FLR_KEYVAULT_TOKEN; without it, a clear error (exit 4:
    // the volume stays locked, the chain says why).
    let cfg = cfg_for("token-env");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flr"))
        .args([
            "cat",
            "--config",
            s(&cfg),
            "--metadata",
            s(&meta),
            s(&img),
            "p1:/etc/hostname",
        ])
        .env("FLR_KEYVAULT_TOKEN", v.kv.token_for(CLIENT))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flr"))
        .args([
            "probe",
            "--dry-run",
            "--config",
            s(&cfg),
            "--metadata",
            s(&meta),
            s(&img),
        ])
        .env_remove("FLR_KEYVAULT_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", stdout(&out));
    assert!(stdout(&out).contains("auth-failed"), "{}", stdout(&out));
}
