//! An Azure Key Vault test server for flr's tests: HTTPS on `127.0.0.1`
//! with its own test CA, the bearer challenge, a client-credentials token
//! endpoint, RSA keys (create, import, versions, wrap/unwrap) and secrets,
//! soft delete, and faults that tests inject (missing permissions, 429s).
//!
//! It speaks the protocol that Microsoft's own SDK expects
//! (`tests/kv_sdk_conformance.py` drives it with the unmodified Python SDK):
//! every request without `Authorization: Bearer …` gets
//! `401` with `WWW-Authenticate: Bearer authorization="https://127.0.0.1:PORT/<tenant>",
//! resource="https://vault.azure.net"`, so the authority is this server
//! too, and `POST /<tenant>/oauth2/v2.0/token` hands out tokens to the
//! clients registered with [`TestVault::add_client`]. Ids (`kid`, `id`,
//! `nextLink`) are built from the request's `Host`.
//!
//! # Example
//!
//! ```
//! let kv = flr_kvtest::TestVault::start();
//! let kid = kv.create_rsa_key("kek", 2048);
//! let wrapped = kv.wrap(&kid, "RSA-OAEP-256", b"a 32-byte disk encryption key...");
//! kv.set_secret("bek", &wrapped, Some("Wrapped BEK"), &[("DiskEncryptionKeyEncryptionKeyURL", &kid)]);
//! kv.add_client("app", "s3cret");
//! assert!(kid.starts_with(&format!("{}/keys/kek/", kv.url())));
//! ```
//!
//! State set through the Rust API and through HTTP is one and the same.
//! API misuse (an id that does not exist) panics: this is test support.

#![forbid(unsafe_code)]

mod arm;
pub mod azurite;
mod blob;
mod crypto;
mod error;
mod faults;
mod proxy;
mod routes;
mod server;
mod store;
mod tls;
mod token;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use rsa::RsaPrivateKey;
use tokio::sync::oneshot;

pub use blob::ACCOUNT as BLOB_ACCOUNT;
pub use faults::{Denial, FaultOp};
pub use proxy::DelayProxy;

/// The secret App Service puts in `IDENTITY_HEADER`, as this server's
/// identity endpoint expects it (see [`TestVault::enable_managed_identity`]).
pub const IDENTITY_HEADER: &str = "flr-test-identity-header-0f3c";

use store::{Attrs, KeyVersion, SecretVersion, Store};

/// One request the vault answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, without the query (`/keys/kek/0123…/unwrapkey`).
    pub path: String,
    /// The raw query string (`api-version=7.5`).
    pub query: String,
    /// The status answered.
    pub status: u16,
    /// Whether it carried a bearer token the vault accepted (false for the
    /// challenge's 401 and for the token endpoint).
    pub authorized: bool,
    /// The caller: the token's `appid` for vault calls, the client id for a
    /// granted token request; `None` when unknown.
    pub caller: Option<String>,
    /// For a Blob Get Page Ranges diff, how the older snapshot was named:
    /// `prevsnapshot` or `previous-snapshot-url` (the header).
    pub page_diff: Option<&'static str>,
}

/// Everything the handlers share.
pub(crate) struct Shared {
    pub(crate) tenant: String,
    pub(crate) port: u16,
    pub(crate) vault_name: String,
    /// TLS connections accepted so far.
    pub(crate) connections: AtomicUsize,
    state: Mutex<State>,
    /// The Blob service's account (its own lock: data reads are long).
    blobs: Mutex<blob::BlobStore>,
}

pub(crate) struct State {
    pub(crate) store: Store,
    /// client id → client secret
    pub(crate) clients: HashMap<String, String>,
    pub(crate) denials: HashMap<FaultOp, Denial>,
    /// Injected answers for the next authorized requests: (status, Retry-After).
    pub(crate) failures: VecDeque<(u16, Option<u64>)>,
    pub(crate) log: Vec<Logged>,
    pub(crate) page_size: usize,
    /// Tokens minted under an older generation are expired.
    pub(crate) token_generation: u64,
    /// Lifetime of the tokens granted from now on.
    pub(crate) token_lifetime: token::Lifetime,
    /// The client id of the machine's managed identity, once enabled.
    pub(crate) managed_identity: Option<String>,
    /// Resource Manager disks and snapshots.
    pub(crate) arm: arm::ArmState,
}

impl Shared {
    pub(crate) fn blobs(&self) -> MutexGuard<'_, blob::BlobStore> {
        self.blobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not take the server down with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running test vault; dropping it stops the server.
pub struct TestVault {
    shared: Arc<Shared>,
    url: String,
    ca_pem: String,
    ca_path: PathBuf,
    server_pem: (String, String),
    _ca_dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestVault {
    /// Makes the certificates, binds `127.0.0.1:0` and serves on a thread of its own.
    pub fn start() -> TestVault {
        let tls = tls::make();
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind the test vault on 127.0.0.1");
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let port = listener
            .local_addr()
            .expect("the listener's address")
            .port();
        let v = store::new_version();
        let tenant = format!(
            "{}-{}-4{}-8{}-{}",
            &v[0..8],
            &v[8..12],
            &v[13..16],
            &v[17..20],
            &v[20..32]
        );
        let shared = Arc::new(Shared {
            tenant,
            port,
            vault_name: "flr-test-vault".into(),
            connections: AtomicUsize::new(0),
            state: Mutex::new(State {
                store: Store::new(),
                clients: HashMap::new(),
                denials: HashMap::new(),
                failures: VecDeque::new(),
                log: Vec::new(),
                page_size: 25,
                token_generation: 0,
                token_lifetime: token::Lifetime::default(),
                managed_identity: None,
                arm: arm::ArmState::default(),
            }),
            blobs: Mutex::new(blob::BlobStore::new()),
        });
        let ca_dir = tempfile::tempdir().expect("a temporary directory for the CA");
        let ca_path = ca_dir.path().join("flr-kvtest-ca.pem");
        std::fs::write(&ca_path, &tls.ca_pem).expect("write the test CA");
        let (stop, thread) = server::spawn(shared.clone(), tls.config, listener);
        TestVault {
            shared,
            url: format!("https://127.0.0.1:{port}"),
            ca_pem: tls.ca_pem,
            ca_path,
            server_pem: tls.server_pem,
            _ca_dir: ca_dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The vault's base URL, `https://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The test CA's certificate (PEM) that signed the server's.
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// The test CA written to a file (removed when the vault is dropped).
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// The server certificate (for `127.0.0.1` and `localhost`, signed by
    /// the test CA) and its private key, both PEM: lets another test server
    /// (Azurite with `--cert`/`--key`) be trusted through [`ca_path`](Self::ca_path).
    pub fn server_cert_and_key_pem(&self) -> (String, String) {
        self.server_pem.clone()
    }

    /// The tenant GUID named in the challenge.
    pub fn tenant(&self) -> String {
        self.shared.tenant.clone()
    }

    /// The authority from the challenge, `https://127.0.0.1:PORT/<tenant>`.
    pub fn authority(&self) -> String {
        format!("{}/{}", self.url, self.shared.tenant)
    }

    /// The vault's name in permission messages (`flr-test-vault`).
    pub fn vault_name(&self) -> String {
        self.shared.vault_name.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// Adds a new RSA key version under `name` and returns its `kid`.
    /// Any size the `rsa` crate makes is allowed here (1024 keeps tests
    /// quick); over HTTP only 2048, 3072 and 4096 are.
    pub fn create_rsa_key(&self, name: &str, bits: usize) -> String {
        self.add_key(name, crypto::generate(bits))
    }

    /// Adds `key` as a new version under `name` and returns its `kid`.
    pub fn import_rsa_key(&self, name: &str, key: &RsaPrivateKey) -> String {
        self.add_key(name, key.clone())
    }

    fn add_key(&self, name: &str, key: RsaPrivateKey) -> String {
        store::check_name(name).unwrap_or_else(|e| panic!("{}", e.message));
        let mut st = self.lock();
        let (name, v) = st
            .store
            .keys
            .add(name, KeyVersion::new(key))
            .unwrap_or_else(|e| panic!("{}", e.message));
        format!("{}/keys/{name}/{}", self.url, v.version)
    }

    /// The private key behind a `kid` (with or without version; any host).
    pub fn rsa_private_key(&self, kid: &str) -> RsaPrivateKey {
        let (name, version) = split_id(kid, "keys");
        let st = self.lock();
        let (_, k) = st
            .store
            .keys
            .get(name, version)
            .unwrap_or_else(|e| panic!("{}", e.message));
        k.key.clone()
    }

    /// Wraps `plaintext` with the key `kid` (`RSA-OAEP`, `RSA-OAEP-256` or
    /// `RSA1_5`) and returns it base64url-encoded, as `wrapkey` would.
    pub fn wrap(&self, kid: &str, alg: &str, plaintext: &[u8]) -> String {
        let alg = crypto::Alg::parse(alg).unwrap_or_else(|| panic!("unknown algorithm {alg}"));
        let key = self.rsa_private_key(kid).to_public_key();
        crypto::b64(&crypto::encrypt(&key, alg, plaintext).unwrap_or_else(|e| panic!("{e}")))
    }

    /// Changes a key version's attributes: `Some(None)` clears `nbf`/`exp`.
    pub fn set_key_attributes(
        &self,
        kid: &str,
        enabled: Option<bool>,
        nbf: Option<Option<i64>>,
        exp: Option<Option<i64>>,
    ) {
        let (name, version) = split_id(kid, "keys");
        let mut st = self.lock();
        let (_, k) = st
            .store
            .keys
            .get_mut(name, version)
            .unwrap_or_else(|e| panic!("{}", e.message));
        set_attrs(&mut k.attrs, enabled, nbf, exp);
    }

    /// Sets the operations a key version allows (`wrapKey`, `unwrapKey`, …).
    pub fn set_key_ops(&self, kid: &str, ops: &[&str]) {
        let (name, version) = split_id(kid, "keys");
        let mut st = self.lock();
        let (_, k) = st
            .store
            .keys
            .get_mut(name, version)
            .unwrap_or_else(|e| panic!("{}", e.message));
        k.ops = ops.iter().map(|s| s.to_string()).collect();
    }

    /// Soft-deletes a key (every version); `GET` then answers 404 `KeyNotFound`.
    pub fn delete_key(&self, name: &str) {
        self.lock()
            .store
            .keys
            .delete(name)
            .unwrap_or_else(|e| panic!("{}", e.message));
    }

    /// Adds a secret version and returns its `id`.
    pub fn set_secret(
        &self,
        name: &str,
        value: &str,
        content_type: Option<&str>,
        tags: &[(&str, &str)],
    ) -> String {
        store::check_name(name).unwrap_or_else(|e| panic!("{}", e.message));
        let s = SecretVersion {
            version: store::new_version(),
            value: value.to_string(),
            content_type: content_type.map(str::to_string),
            attrs: Attrs::new(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let mut st = self.lock();
        let (name, v) = st
            .store
            .secrets
            .add(name, s)
            .unwrap_or_else(|e| panic!("{}", e.message));
        format!("{}/secrets/{name}/{}", self.url, v.version)
    }

    /// Enables or disables a secret version (a disabled one answers 403 `SecretDisabled`).
    pub fn set_secret_enabled(&self, id: &str, enabled: bool) {
        self.set_secret_attributes(id, Some(enabled), None, None);
    }

    /// Changes a secret version's attributes: `Some(None)` clears `nbf`/`exp`.
    pub fn set_secret_attributes(
        &self,
        id: &str,
        enabled: Option<bool>,
        nbf: Option<Option<i64>>,
        exp: Option<Option<i64>>,
    ) {
        let (name, version) = split_id(id, "secrets");
        let mut st = self.lock();
        let (_, s) = st
            .store
            .secrets
            .get_mut(name, version)
            .unwrap_or_else(|e| panic!("{}", e.message));
        set_attrs(&mut s.attrs, enabled, nbf, exp);
    }

    /// Soft-deletes a secret (every version).
    pub fn delete_secret(&self, name: &str) {
        self.lock()
            .store
            .secrets
            .delete(name)
            .unwrap_or_else(|e| panic!("{}", e.message));
    }

    /// Refuses `op` from now on with a 403 (`ForbiddenByPolicy` or `ForbiddenByRbac`).
    pub fn deny(&self, op: FaultOp, how: Denial) {
        self.lock().denials.insert(op, how);
    }

    /// Allows `op` again.
    pub fn allow(&self, op: FaultOp) {
        self.lock().denials.remove(&op);
    }

    /// Answers the next `count` authorized vault requests with `status`
    /// (and `Retry-After` when given) instead of serving them. The
    /// challenge and the token endpoint are not affected.
    pub fn fail_next(&self, status: u16, retry_after_secs: Option<u64>, count: usize) {
        let mut st = self.lock();
        for _ in 0..count {
            st.failures.push_back((status, retry_after_secs));
        }
    }

    /// Registers a client for the token endpoint (client secret, or any
    /// JWT-shaped client assertion for that client id).
    pub fn add_client(&self, client_id: &str, client_secret: &str) {
        self.lock()
            .clients
            .insert(client_id.to_string(), client_secret.to_string());
    }

    /// A token as the token endpoint would grant it to `client_id`.
    pub fn token_for(&self, client_id: &str) -> String {
        let (generation, lifetime) = {
            let st = self.lock();
            (st.token_generation, st.token_lifetime)
        };
        token::mint(
            &self.shared.tenant,
            client_id,
            token::VAULT_RESOURCE,
            generation,
            lifetime.valid,
        )
    }

    /// Serves a managed identity for `client_id`, as a VM's Instance
    /// Metadata Service does (`GET /metadata/identity/oauth2/token` with
    /// `Metadata: true`; point `AZURE_POD_IDENTITY_AUTHORITY_HOST` at
    /// [`TestVault::url`]) and as App Service's identity endpoint does
    /// (`GET /msi/token` with `X-IDENTITY-HEADER:` [`IDENTITY_HEADER`]; set
    /// `IDENTITY_ENDPOINT` to `{url}/msi/token` and `IDENTITY_HEADER`).
    pub fn enable_managed_identity(&self, client_id: &str) {
        self.lock().managed_identity = Some(client_id.to_string());
    }

    /// Tokens granted from now on expire after `valid` (their `exp`
    /// claim, which this vault and Azurite check) while the grant says
    /// they live `announced` (`expires_in`, what clients cache by). With
    /// `announced` longer, a client learns of the expiry only from a 401:
    /// a token revoked early, or a client clock behind the service's.
    pub fn set_token_lifetime(&self, valid: std::time::Duration, announced: std::time::Duration) {
        let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        self.lock().token_lifetime = token::Lifetime {
            valid: secs(valid),
            announced: secs(announced),
        };
    }

    /// Makes every token handed out so far expired: the vault answers them
    /// with the challenge and `[TokenExpired]` (as it does once a token's
    /// `exp` has passed), so clients must fetch a new one.
    pub fn expire_tokens(&self) {
        self.lock().token_generation += 1;
    }

    /// Items per page of the list operations when the request has no
    /// `maxresults` (default 25).
    pub fn set_page_size(&self, items: usize) {
        self.lock().page_size = items.max(1);
    }

    /// The requests answered so far, oldest first.
    pub fn requests(&self) -> Vec<Logged> {
        self.lock().log.clone()
    }

    /// How many TLS connections clients have opened so far (keep-alive
    /// clients open one).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Forgets the requests answered so far.
    pub fn reset_log(&self) {
        self.lock().log.clear();
    }

    /// Registers a managed disk or snapshot for the Resource Manager
    /// endpoints: `GET {id}` answers `properties` (as `az snapshot show`
    /// prints them, e.g. `encryptionSettingsCollection`), and
    /// `beginGetAccess` hands out `sas_url` as its `accessSAS`. `id` is the
    /// full resource id, `/subscriptions/…/providers/Microsoft.Compute/snapshots/NAME`.
    ///
    /// A snapshot with `"incremental": true` belongs to the family of its
    /// `creationData.sourceResourceId` (see [`family_peak`](Self::family_peak));
    /// `tags` in `properties` are served as the resource's tags.
    pub fn add_disk_resource(&self, id: &str, properties: serde_json::Value, sas_url: &str) {
        self.lock().arm.disks.insert(
            id.trim_end_matches('/').to_ascii_lowercase(),
            arm::Disk {
                id: id.trim_end_matches('/').to_string(),
                family: arm::family_of(&properties),
                properties,
                sas: sas_url.to_string(),
                active: false,
                granted: 0,
                revoked: 0,
                refuse: None,
                next_grant_delay: None,
                revoke_delay: std::time::Duration::ZERO,
            },
        );
    }

    /// Makes the next `beginGetAccess` on `id` take `delay` (its operation
    /// answers `InProgress` until then; the export counts as active from
    /// the request on).
    pub fn delay_next_grant(&self, id: &str, delay: std::time::Duration) {
        let mut st = self.lock();
        let d = st
            .arm
            .disks
            .get_mut(&id.to_ascii_lowercase())
            .expect("delay_next_grant: no such disk resource");
        d.next_grant_delay = Some(delay);
    }

    /// Makes every `endGetAccess` on `id` take `delay`: the export stays
    /// active until its revoke operation has finished.
    pub fn delay_revokes(&self, id: &str, delay: std::time::Duration) {
        let mut st = self.lock();
        let d = st
            .arm
            .disks
            .get_mut(&id.to_ascii_lowercase())
            .expect("delay_revokes: no such disk resource");
        d.revoke_delay = delay;
    }

    /// The most exports of the incremental family of `source_disk_id` that
    /// were active at once so far.
    pub fn family_peak(&self, source_disk_id: &str) -> usize {
        self.lock()
            .arm
            .family_peak
            .get(&source_disk_id.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }

    /// Grants refused because five exports of their family were active.
    pub fn grants_over_limit(&self) -> usize {
        self.lock().arm.over_limit
    }

    /// Answers the next `count` Resource Manager requests with `status`
    /// (and `Retry-After` when given) instead of serving them.
    pub fn fail_next_arm(&self, status: u16, retry_after_secs: Option<u64>, count: usize) {
        let mut st = self.lock();
        for _ in 0..count {
            st.arm.failures.push_back((status, retry_after_secs));
        }
    }

    /// Makes `beginGetAccess` on `id` answer an ARM error instead, e.g.
    /// `(403, "AuthorizationFailed", "…")` or `(409, "OperationNotAllowed", "…")`.
    pub fn refuse_disk_access(&self, id: &str, status: u16, code: &str, message: &str) {
        let mut st = self.lock();
        let d = st
            .arm
            .disks
            .get_mut(&id.to_ascii_lowercase())
            .expect("refuse_disk_access: no such disk resource");
        d.refuse = Some((status, code.to_string(), message.to_string()));
    }

    /// `(granted, revoked, active)`: how often `beginGetAccess` and
    /// `endGetAccess` were called on `id`, and whether a SAS is active now.
    pub fn disk_access(&self, id: &str) -> (usize, usize, bool) {
        let st = self.lock();
        let d = st
            .arm
            .disks
            .get(&id.to_ascii_lowercase())
            .expect("disk_access: no such disk resource");
        (d.granted, d.revoked, d.active)
    }
}

/// The Blob service (see the `blob` module's documentation): a path-style
/// account [`BLOB_ACCOUNT`] on the vault's port.
impl TestVault {
    /// `https://127.0.0.1:PORT/flrblobtest`.
    pub fn blob_endpoint(&self) -> String {
        format!("{}/{}", self.url, blob::ACCOUNT)
    }

    /// The account key (base64), for Shared Key and SAS signing.
    pub fn blob_key(&self) -> String {
        self.shared.blobs().key_b64()
    }

    /// A connection string for the SDKs (`BlobEndpoint` and the key).
    pub fn blob_connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=https;AccountName={};AccountKey={};BlobEndpoint={}",
            blob::ACCOUNT,
            self.blob_key(),
            self.blob_endpoint()
        )
    }

    /// Creates a container (no error if it exists).
    pub fn create_container(&self, name: &str) {
        self.shared.blobs().create_container(name);
    }

    /// Creates (or replaces) an empty page blob of `len` bytes (a multiple of 512).
    pub fn create_page_blob(&self, container: &str, name: &str, len: u64) {
        self.shared
            .blobs()
            .create_page_blob(container, name, len)
            .unwrap_or_else(|e| panic!("create_page_blob: {}", e.message));
    }

    /// Writes pages (`offset` and `data.len()` multiples of 512).
    pub fn put_pages(&self, container: &str, name: &str, offset: u64, data: &[u8]) {
        self.shared
            .blobs()
            .write_pages(container, name, offset, data.len() as u64, Some(data))
            .unwrap_or_else(|e| panic!("put_pages: {}", e.message));
    }

    /// Makes the page blob hold the file at `path` by writing the 4 KiB
    /// pieces that differ from what it holds (a new blob, sized to the
    /// file rounded up to 512, holds zeros: only data is written). Returns
    /// the bytes written.
    pub fn sync_page_blob(&self, container: &str, name: &str, path: &Path) -> u64 {
        use std::io::Read;
        let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let len = f.metadata().expect("the file's size").len().div_ceil(512) * 512;
        {
            let mut st = self.shared.blobs();
            st.create_container(container);
            let exists = st.read_len(container, name);
            if exists != Some(len) {
                st.create_page_blob(container, name, len)
                    .unwrap_or_else(|e| panic!("sync_page_blob: {}", e.message));
            }
        }
        let mut buf = vec![0u8; 1 << 20];
        let mut have = vec![0u8; 1 << 20];
        let mut off = 0u64;
        let mut written = 0;
        while off < len {
            let n = usize::try_from((len - off).min(1 << 20)).unwrap_or(1 << 20);
            let mut got = 0;
            while got < n {
                match f.read(&mut buf[got..n]) {
                    Ok(0) => break,
                    Ok(k) => got += k,
                    Err(e) => panic!("{}: {e}", path.display()),
                }
            }
            buf[got..n].fill(0);
            let mut st = self.shared.blobs();
            st.read_into(container, name, off, &mut have[..n]);
            for (i, (want, old)) in buf[..n]
                .chunks(4096)
                .zip(have[..n].chunks(4096))
                .enumerate()
            {
                if want != old {
                    let at = off + (i as u64) * 4096;
                    st.write_pages(container, name, at, want.len() as u64, Some(want))
                        .unwrap_or_else(|e| panic!("sync_page_blob: {}", e.message));
                    written += want.len() as u64;
                }
            }
            off += n as u64;
        }
        written
    }

    /// Takes a snapshot; returns its time, the `snapshot=` value.
    pub fn snapshot_blob(&self, container: &str, name: &str) -> String {
        self.shared
            .blobs()
            .snapshot(container, name)
            .unwrap_or_else(|e| panic!("snapshot_blob: {}", e.message))
    }

    /// The bytes of a blob or one of its snapshots.
    pub fn blob_bytes(&self, container: &str, name: &str, snapshot: Option<&str>) -> Vec<u8> {
        self.shared
            .blobs()
            .read_blob(container, name, snapshot)
            .unwrap_or_else(|e| panic!("blob_bytes: {}", e.message))
    }

    /// A service SAS query string (`sr=b`, or `sr=bs` with a snapshot,
    /// or `sr=c` for an empty `name`) valid for `lifetime_secs` (negative:
    /// already expired).
    pub fn blob_sas(
        &self,
        container: &str,
        name: &str,
        snapshot: Option<&str>,
        permissions: &str,
        lifetime_secs: i64,
    ) -> String {
        blob::service_sas(
            &self.blob_key(),
            container,
            name,
            snapshot,
            permissions,
            store::now() + lifetime_secs,
        )
    }

    /// `endpoint/container/name?[snapshot=…&]{read SAS for an hour}`.
    pub fn blob_url(&self, container: &str, name: &str, snapshot: Option<&str>) -> String {
        format!(
            "{}/{container}/{name}?{}",
            self.blob_endpoint(),
            self.blob_sas(container, name, snapshot, "r", 3600)
        )
    }

    /// At most `n` ranges per Get Page Ranges answer (default 10 000), so
    /// that continuation markers are exercised.
    pub fn set_page_list_max(&self, n: usize) {
        self.shared.blobs().page_list_max = n.max(1);
    }

    /// Bytes of blob data the service answered (Get Blob bodies) so far.
    pub fn blob_bytes_served(&self) -> u64 {
        self.shared.blobs().bytes_served
    }

    /// A delay proxy in front of this server adding `rtt` per round trip:
    /// connect to `https://127.0.0.1:{proxy.port()}` instead.
    pub fn delay_proxy(&self, rtt: std::time::Duration) -> DelayProxy {
        DelayProxy::start(self.shared.port, rtt)
    }
}

impl Drop for TestVault {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn set_attrs(
    a: &mut Attrs,
    enabled: Option<bool>,
    nbf: Option<Option<i64>>,
    exp: Option<Option<i64>>,
) {
    if let Some(e) = enabled {
        a.enabled = e;
    }
    if let Some(n) = nbf {
        a.nbf = n;
    }
    if let Some(x) = exp {
        a.exp = x;
    }
    a.updated = store::now();
}

/// `(name, version)` from `https://host/keys/name/version`, `…/keys/name`
/// or a bare name.
fn split_id<'a>(id: &'a str, collection: &str) -> (&'a str, Option<&'a str>) {
    let marker = format!("/{collection}/");
    let rest = match id.find(&marker) {
        Some(i) => &id[i + marker.len()..],
        None => id,
    };
    let mut parts = rest.trim_end_matches('/').splitn(2, '/');
    let name = parts.next().unwrap_or("");
    (name, parts.next().filter(|v| !v.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::split_id;

    #[test]
    fn ids_split() {
        assert_eq!(
            split_id("https://h:1/keys/kek/abc", "keys"),
            ("kek", Some("abc"))
        );
        assert_eq!(split_id("https://h:1/keys/kek/", "keys"), ("kek", None));
        assert_eq!(split_id("kek", "keys"), ("kek", None));
        assert_eq!(
            split_id("https://h/secrets/s/v1", "secrets"),
            ("s", Some("v1"))
        );
    }
}
