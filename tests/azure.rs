//! Sources named the Azure way, end to end through the flr binary:
//!
//! - a snapshot resource id: flr GETs the resource from Resource Manager
//!   (flr-kvtest serves DiskRP's `GET`, `beginGetAccess` and `endGetAccess`
//!   next to its Key Vault), feeds its ADE settings to the key chain, reads
//!   the disk through the `accessSAS` (a blob in Azurite), and revokes the
//!   access at the end: after success, after an error, and on Ctrl-C;
//! - a blob URL without a SAS, read with an Entra ID token: Azurite over
//!   https with `--oauth basic`, its certificate signed by the test CA,
//!   and the token from the test server's token endpoint.
//!
//! Skipped loudly without Azurite (`npm install -g azurite`; `.ci/run`
//! installs it).

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use flr_blob::{blob_service_sas, SasTerms, DEV_ACCOUNT, DEV_KEY};
use flr_io::FileSource;
use flr_kvtest::azurite::{azurite, azurite_bin};
use flr_kvtest::TestVault;

use crate::util::{check_tree, checksums, fixture, manifest, sha256_hex, stderr};

const CLIENT: &str = "flr-restore-app";
const CLIENT_SECRET: &str = "correct-horse-battery-staple";
const CONTAINER: &str = "flr-azure-tests";
const SNAPSHOT: &str = "/subscriptions/5d4c3b2a-0000-4000-8000-00000000c0de/resourceGroups/rg-restore/providers/Microsoft.Compute/snapshots/ade-vm-01-data-20261127";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The test vault (Key Vault + Resource Manager + token endpoint) with the
/// ADE passphrase wrapped by a KEK, and a configuration file for it.
struct Azure {
    kv: TestVault,
    dir: tempfile::TempDir,
    cfg: PathBuf,
}

impl Azure {
    fn new(extra_config: &str) -> Azure {
        let kv = TestVault::start();
        kv.add_client(CLIENT, CLIENT_SECRET);
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("flr.toml");
        let text = format!(
            "[[vault]]\nurl = \"{url}\"\ncredential = \"client-secret\"\nca_file = \"{ca}\"\n\n\
             [policy]\nvaults = [\"https://127.0.0.1:*\"]\n\n\
             [audit]\npath = \"audit.jsonl\"\n\n\
             [azure]\nresource_manager = \"{url}\"\ncredential = \"client-secret\"\ntenant = \"{tenant}\"\nca_file = \"{ca}\"\naccess_seconds = 600\n{extra_config}",
            url = kv.url(),
            ca = kv.ca_path().display(),
            tenant = kv.tenant(),
        );
        std::fs::write(&cfg, text).unwrap();
        Azure { kv, dir, cfg }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_flr"));
        c.arg("--config")
            .arg(&self.cfg)
            .args(args)
            .env("AZURE_CLIENT_ID", CLIENT)
            .env("AZURE_CLIENT_SECRET", CLIENT_SECRET)
            .env("AZURE_AUTHORITY_HOST", self.kv.url())
            .env_remove("AZURE_TENANT_ID")
            .env_remove("FLR_CONFIG");
        c
    }

    fn flr(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().unwrap();
        assert_ne!(out.status.code(), Some(101), "panic: {}", stderr(&out));
        out
    }

    /// The ADE data disk's snapshot: its blob in Azurite behind a read SAS,
    /// and its resource with the ADE settings (secret and KEK versions).
    fn ade_snapshot(&self, endpoint: &str, write_sas: &str) {
        let pass = std::fs::read(flr_testdata::testdata_dir().join("luks/pass-ade.bin")).unwrap();
        let kid = self.kv.create_rsa_key("ade-kek", 2048);
        let wrapped = self.kv.wrap(&kid, "RSA-OAEP", &pass);
        let secret = self.kv.set_secret(
            "7C1B0A2D-1111-4000-8000-0123456789AB",
            &wrapped,
            Some("Wrapped BEK"),
            &[
                ("DiskEncryptionKeyFileName", "LinuxPassPhraseFileName"),
                ("DiskEncryptionKeyEncryptionKeyURL", &kid),
                ("DiskEncryptionKeyEncryptionAlgorithm", "RSA-OAEP"),
            ],
        );
        // A blob of its own per test: tests run in parallel against one
        // Azurite, and re-uploading a blob another test is reading changes
        // its ETag under that read (which flr rightly refuses).
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let blob = &format!("ade-data-{}-{n}.vhd", std::process::id());
        upload(
            endpoint,
            write_sas,
            blob,
            &fixture("luks/ade-data.img.zst"),
            None,
        );
        let vault_id =
            "/subscriptions/5d4c3b2a-0000-4000-8000-00000000c0de/resourceGroups/rg-keys/providers/Microsoft.KeyVault/vaults/test";
        let props = serde_json::json!({
            "creationData": {"createOption": "Copy"},
            "diskSizeGB": 1,
            "encryption": {"type": "EncryptionAtRestWithPlatformKey"},
            "encryptionSettingsCollection": {
                "enabled": true,
                "encryptionSettingsVersion": "1.1",
                "encryptionSettings": [{
                    "diskEncryptionKey": {"secretUrl": secret, "sourceVault": {"id": vault_id}},
                    "keyEncryptionKey": {"keyUrl": kid, "sourceVault": {"id": vault_id}}
                }]
            }
        });
        self.kv
            .add_disk_resource(SNAPSHOT, props, &read_sas(endpoint, blob));
    }
}

fn upload(endpoint: &str, write_sas: &str, name: &str, path: &Path, ca: Option<&Path>) {
    flr_blob::upload::create_container_with_ca(&format!("{endpoint}/{CONTAINER}?{write_sas}"), ca)
        .expect("create container");
    let src = FileSource::open(path).expect("open fixture");
    flr_blob::upload::put_page_blob_with_ca(
        &format!("{endpoint}/{CONTAINER}/{name}?{write_sas}"),
        &src,
        ca,
    )
    .expect("upload");
}

fn read_sas(endpoint: &str, blob: &str) -> String {
    let sas = blob_service_sas(
        DEV_ACCOUNT,
        DEV_KEY,
        CONTAINER,
        blob,
        &SasTerms::for_next("r", Duration::from_secs(3600), "https,http"),
    )
    .expect("dev key");
    format!("{endpoint}/{CONTAINER}/{blob}?{sas}")
}

fn skip(test: &str, why: &str) {
    flr_testdata::loud(&format!("SKIPPED azure::{test}: {why}"));
}

#[test]
fn snapshot_resource_id_restores_and_always_revokes() {
    let Some(a) = azurite() else {
        return skip(
            "snapshot_resource_id_restores_and_always_revokes",
            "Azurite is not installed (npm install -g azurite)",
        );
    };
    let az = Azure::new("");
    az.ade_snapshot(&a.endpoint, &a.write_sas());

    // The whole chain from one resource id: ARM metadata → Key Vault
    // secret → unwrap with the KEK → LUKS2 → ext4, over the access SAS.
    let dest = tempfile::tempdir().unwrap();
    let out = az.flr(&["get", SNAPSHOT, "p1:/", "-o", s(dest.path()), "--checksum"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let want: Vec<_> = manifest("luks/ade-data.tsv")
        .into_iter()
        .filter(|e| e.kind == 'f')
        .collect();
    check_tree(dest.path(), &checksums(&out), &want);
    assert!(
        err.contains("requesting read access for 600 s (beginGetAccess)"),
        "{err}"
    );
    assert!(err.contains("read access revoked (endGetAccess)"), "{err}");
    assert!(
        !err.contains("sig="),
        "the SAS must never be printed: {err}"
    );
    assert_eq!(az.kv.disk_access(SNAPSHOT), (1, 1, false));

    // probe names the metadata's origin and the chain's verdict.
    let out = az.flr(&["probe", SNAPSHOT]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("(Resource Manager)"), "{text}");
    assert!(!text.contains("sig="), "{text}");
    assert_eq!(az.kv.disk_access(SNAPSHOT), (2, 2, false));

    // An error after the grant (no such file) still revokes.
    let out = az.flr(&["get", SNAPSHOT, "p1:/no/such/file", "-o", s(dest.path())]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("read access revoked"),
        "{}",
        stderr(&out)
    );
    assert_eq!(az.kv.disk_access(SNAPSHOT), (3, 3, false));

    // --keep-access: granted, not revoked, and the output says how to.
    let out = az.flr(&["--keep-access", "ls", SNAPSHOT, "p1:/"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("read access KEPT (--keep-access)"), "{err}");
    assert!(err.contains("az snapshot revoke-access --ids"), "{err}");
    assert_eq!(az.kv.disk_access(SNAPSHOT), (4, 3, true));

    // Every Resource Manager call carried a token for the client.
    let arm: Vec<_> = az
        .kv
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/subscriptions/"))
        .collect();
    assert!(arm.iter().all(|r| r.authorized), "{arm:?}");
    assert!(arm
        .iter()
        .any(|r| r.method == "POST" && r.path.ends_with("/beginGetAccess")));
}

/// A child process killed if the test fails before it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn interrupt_revokes_access() {
    let Some(a) = azurite() else {
        return skip("interrupt_revokes_access", "Azurite is not installed");
    };
    let az = Azure::new("");
    az.ade_snapshot(&a.endpoint, &a.write_sas());
    // `cat` into a pipe nobody reads: flr blocks in write() after the
    // pipe's buffer (64 KiB: FLR_PIPE_BUFFER_KIB=0 keeps flr from widening
    // it) with the access granted, then gets SIGINT.
    let mut child = Reaped(
        az.command(&["cat", SNAPSHOT, "p1:/backups/db.dump"])
            .env("FLR_PIPE_BUFFER_KIB", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    let t = Instant::now();
    while az.kv.disk_access(SNAPSHOT).0 == 0 && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(az.kv.disk_access(SNAPSHOT), (1, 0, true));
    // Give it time to unlock the volume and fill the pipe.
    std::thread::sleep(Duration::from_secs(3));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(err.contains("read access revoked (endGetAccess)"), "{err}");
    assert_eq!(az.kv.disk_access(SNAPSHOT), (1, 1, false));
}

#[test]
fn refusals_name_the_cause_and_grant_nothing() {
    let Some(a) = azurite() else {
        return skip(
            "refusals_name_the_cause_and_grant_nothing",
            "Azurite is not installed",
        );
    };
    let az = Azure::new("");
    az.ade_snapshot(&a.endpoint, &a.write_sas());

    let missing = SNAPSHOT.replace("ade-vm-01-data-20261127", "no-such-snapshot");
    let out = az.flr(&["probe", &missing]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("ResourceNotFound"), "{err}");
    assert!(err.contains("az snapshot show --ids"), "{err}");

    az.kv.refuse_disk_access(
        SNAPSHOT,
        403,
        "AuthorizationFailed",
        "The client 'flr-restore-app' does not have authorization to perform action 'Microsoft.Compute/snapshots/beginGetAccess/action'",
    );
    let out = az.flr(&["probe", SNAPSHOT]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("HTTP 403 AuthorizationFailed"), "{err}");
    assert!(err.contains("Disk Snapshot Contributor"), "{err}");
    // Nothing was granted, so nothing is revoked.
    assert_eq!(az.kv.disk_access(SNAPSHOT), (0, 0, false));

    let out = az.flr(&[
        "probe",
        "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a disk or snapshot resource id"));
}

/// Azurite over https with `--oauth basic`, its certificate from the test
/// CA; stopped when dropped.
struct SecureAzurite {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for SecureAzurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn secure_azurite(kv: &TestVault) -> Option<SecureAzurite> {
    let bin = azurite_bin()?;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = kv.server_cert_and_key_pem();
    std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), key).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .args([
            "--silent",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--blobHost",
            "127.0.0.1",
        ])
        .args(["--blobPort", &port.to_string()])
        .arg("--location")
        .arg(dir.path().join("data"))
        .arg("--cert")
        .arg(dir.path().join("cert.pem"))
        .arg("--key")
        .arg(dir.path().join("key.pem"))
        .args(["--oauth", "basic"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if t.elapsed() > Duration::from_secs(30) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(SecureAzurite {
        child,
        endpoint: format!("https://127.0.0.1:{port}/{DEV_ACCOUNT}"),
        _dir: dir,
    })
}

/// Azurite over https for `az`'s tokens, holding the demo disk; and the
/// disk's URL (no SAS: it is read with a token).
fn demo_on_secure_azurite(az: &Azure) -> Option<(SecureAzurite, String)> {
    let sa = secure_azurite(&az.kv)?;
    let write = flr_kvtest::azurite::Azurite {
        endpoint: sa.endpoint.clone(),
    }
    .write_sas();
    upload(
        &sa.endpoint,
        &write,
        "demo.vhd",
        &crate::util::demo(),
        Some(az.kv.ca_path()),
    );
    let url = format!("{}/{CONTAINER}/demo.vhd", sa.endpoint);
    Some((sa, url))
}

#[test]
fn blob_url_without_sas_reads_with_an_entra_token() {
    let az = Azure::new("");
    let Some((_sa, url)) = demo_on_secure_azurite(&az) else {
        return skip(
            "blob_url_without_sas_reads_with_an_entra_token",
            "Azurite is not installed (npm install -g azurite)",
        );
    };

    let entry = manifest("disks/demo.p2.tsv")
        .into_iter()
        .find(|e| e.kind == 'f' && e.size > 0)
        .expect("a file in the ext4 manifest");
    let out = az.flr(&["cat", &url, &format!("p2:/{}", entry.path)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sha256_hex(&out.stdout), entry.sha256);
    // The token came from the token endpoint, for Storage.
    assert!(az
        .kv
        .requests()
        .iter()
        .any(|r| r.path.ends_with("/oauth2/v2.0/token") && r.status == 200));

    // Without a credential the emulator refuses, and flr says why.
    let none = az.dir.path().join("none.toml");
    std::fs::write(
        &none,
        format!(
            "[azure]\ncredential = \"none\"\nca_file = \"{}\"\n",
            az.kv.ca_path().display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flr"))
        .args([
            "--config",
            s(&none),
            "cat",
            &url,
            &format!("p2:/{}", entry.path),
        ])
        .env_remove("FLR_CONFIG")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(out.stdout.is_empty());
    assert!(
        err.contains("HTTP 401") || err.contains("HTTP 403"),
        "{err}"
    );
}

/// Entra tokens that expire while flr runs: `flr mount` of a blob read with
/// a token, every file read once the first token has expired. Twice: with
/// honest 6 s tokens (flr renews before the end of their life, from what
/// the grant announced), and with tokens that die after 3 s while the grant
/// says an hour (revoked early, or a clock behind the service's): Azurite
/// answers 401, flr drops the token, fetches a new one and retries the
/// read. Every file must still read exact, and a new token must have been
/// fetched. Needs Azurite and FUSE.
#[test]
fn tokens_expiring_mid_run_are_renewed() {
    let test = "tokens_expiring_mid_run_are_renewed";
    if !crate::mount::fuse_available(test) {
        return;
    }
    for (valid, announced, case) in [(6, 6, "short-lived"), (3, 3600, "expiring early")] {
        let az = Azure::new("");
        let Some((_sa, url)) = demo_on_secure_azurite(&az) else {
            return skip(test, "Azurite is not installed (npm install -g azurite)");
        };
        az.kv
            .set_token_lifetime(Duration::from_secs(valid), Duration::from_secs(announced));
        let tokens = || {
            az.kv
                .requests()
                .iter()
                .filter(|r| r.path.ends_with("/oauth2/v2.0/token") && r.status == 200)
                .count()
        };
        let mut m = crate::mount::Mount::with(az.command(&[]), &url, &[]);
        assert_eq!(tokens(), 1, "{case}: one token to mount");
        std::thread::sleep(Duration::from_secs(valid + 1));
        crate::mount::check_against(&m.path().join("p2"), "disks/demo.p2.tsv", &[]);
        crate::mount::check_against(&m.path().join("p3"), "disks/demo.p3.tsv", &[]);
        assert!(tokens() >= 2, "{case}: no new token was fetched");
        m.stop("-TERM");
        let err = m.stderr_since_mounted(&[]);
        assert!(!err.contains("HTTP 401"), "{case}: {err}");
    }
}

/// A managed identity, with no client secret anywhere: the VM's Instance
/// Metadata Service (its host moved with `AZURE_POD_IDENTITY_AUTHORITY_HOST`,
/// as the Azure SDKs allow) and App Service's identity endpoint
/// (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`), each serving the whole ADE
/// chain from a snapshot resource id (Resource Manager, Key Vault, the
/// unwrap) and a blob read with a Storage token. A wrong identity header
/// is refused with the endpoint named.
#[test]
fn managed_identity_serves_every_resource() {
    let test = "managed_identity_serves_every_resource";
    let Some(plain) = azurite() else {
        return skip(test, "Azurite is not installed (npm install -g azurite)");
    };
    for how in ["imds", "app-service"] {
        let az = Azure::new("");
        let text = std::fs::read_to_string(&az.cfg).unwrap().replace(
            "credential = \"client-secret\"",
            "credential = \"managed-identity\"",
        );
        std::fs::write(&az.cfg, text).unwrap();
        az.kv.enable_managed_identity(CLIENT);
        az.ade_snapshot(&plain.endpoint, &plain.write_sas());
        let Some((_sa, url)) = demo_on_secure_azurite(&az) else {
            return skip(test, "Azurite is not installed (npm install -g azurite)");
        };
        let run = |args: &[&str], header: &str| {
            let mut c = az.command(args);
            c.env_remove("AZURE_CLIENT_SECRET")
                .env_remove("IDENTITY_ENDPOINT")
                .env_remove("IDENTITY_HEADER")
                .env_remove("AZURE_POD_IDENTITY_AUTHORITY_HOST");
            match how {
                "imds" => c.env("AZURE_POD_IDENTITY_AUTHORITY_HOST", az.kv.url()),
                _ => c
                    .env("IDENTITY_ENDPOINT", format!("{}/msi/token", az.kv.url()))
                    .env("IDENTITY_HEADER", header),
            };
            let out = c.output().unwrap();
            assert_ne!(out.status.code(), Some(101), "panic: {}", stderr(&out));
            out
        };
        let header = flr_kvtest::IDENTITY_HEADER;

        let dest = tempfile::tempdir().unwrap();
        let out = run(
            &["get", SNAPSHOT, "p1:/", "-o", s(dest.path()), "--checksum"],
            header,
        );
        assert!(out.status.success(), "{how}: {}", stderr(&out));
        let want: Vec<_> = manifest("luks/ade-data.tsv")
            .into_iter()
            .filter(|e| e.kind == 'f')
            .collect();
        check_tree(dest.path(), &checksums(&out), &want);

        let entry = manifest("disks/demo.p2.tsv")
            .into_iter()
            .find(|e| e.kind == 'f' && e.size > 0)
            .expect("a file in the ext4 manifest");
        let out = run(&["cat", &url, &format!("p2:/{}", entry.path)], header);
        assert!(out.status.success(), "{how}: {}", stderr(&out));
        assert_eq!(sha256_hex(&out.stdout), entry.sha256, "{how}");

        // Tokens came from the identity endpoint only, for each resource.
        let path = if how == "imds" {
            "/metadata/identity/oauth2/token"
        } else {
            "/msi/token"
        };
        let reqs = az.kv.requests();
        assert!(
            !reqs.iter().any(|r| r.path.ends_with("/oauth2/v2.0/token")),
            "{how}: a client-credentials grant was used"
        );
        let granted: std::collections::BTreeSet<String> = reqs
            .iter()
            .filter(|r| r.path == path && r.status == 200)
            .filter_map(|r| {
                r.query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("resource="))
                    .map(String::from)
            })
            .collect();
        assert_eq!(
            granted.len(),
            3,
            "{how}: Key Vault, Resource Manager and Storage: {granted:?}"
        );

        if how == "app-service" {
            let out = run(
                &["cat", &url, &format!("p2:/{}", entry.path)],
                "not-the-secret",
            );
            let err = stderr(&out);
            assert!(!out.status.success(), "{err}");
            assert!(err.contains("managed identity endpoint"), "{err}");
            assert!(err.contains("X-IDENTITY-HEADER"), "{err}");
        }
    }
}
