//! Finding or starting Azurite for tests and benchmarks.
//!
//! Order: `FLR_AZURITE_ENDPOINT` (a running emulator's blob endpoint, e.g.
//! `http://127.0.0.1:10000/devstoreaccount1`, as `.ci/run` exports), then
//! an emulator already listening on 127.0.0.1:10000, then `azurite-blob`
//! (`FLR_AZURITE_BIN` or on `PATH`) started on port 10000 (data in a temporary folder), watched
//! by a shell that stops it when this process ends.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use flr_blob::{account_sas, SasTerms, DEV_ACCOUNT, DEV_BLOB_ENDPOINT, DEV_KEY};

/// A reachable Azurite blob service with the well-known dev account.
#[derive(Debug)]
pub struct Azurite {
    /// Blob endpoint: `http://HOST:PORT/devstoreaccount1`.
    pub endpoint: String,
}

impl Azurite {
    /// The port of the endpoint.
    pub fn port(&self) -> u16 {
        // `http://HOST:PORT/account`
        self.endpoint
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|host| host.rsplit_once(':'))
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or(10000)
    }

    /// An account SAS (read, write, list, create, add, delete) for test setup.
    pub fn write_sas(&self) -> String {
        account_sas(
            DEV_ACCOUNT,
            DEV_KEY,
            &SasTerms::for_next("rwdlac", Duration::from_secs(6 * 3600), "https,http"),
        )
        .expect("the dev key is valid base64")
    }

    /// `endpoint/container/blob?{write SAS}`.
    pub fn writable_url(&self, container: &str, blob: &str) -> String {
        format!("{}/{container}/{blob}?{}", self.endpoint, self.write_sas())
    }
}

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300)).is_ok()
}

/// The `azurite-blob` program: `FLR_AZURITE_BIN`, else the first on `PATH`.
pub fn azurite_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FLR_AZURITE_BIN") {
        return Some(PathBuf::from(p));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("azurite-blob"))
        .find(|p| p.is_file())
}

/// The emulator, if one is running or can be started; `None` when Azurite
/// is not installed.
pub fn azurite() -> Option<&'static Azurite> {
    static A: OnceLock<Option<Azurite>> = OnceLock::new();
    A.get_or_init(|| {
        if let Ok(e) = std::env::var("FLR_AZURITE_ENDPOINT") {
            return Some(Azurite {
                endpoint: e.trim_end_matches('/').to_string(),
            });
        }
        let default = || Azurite {
            endpoint: DEV_BLOB_ENDPOINT.to_string(),
        };
        if listening(10000) {
            return Some(default());
        }
        let bin = azurite_bin()?;
        let dir = std::env::temp_dir().join(format!("flr-azurite-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let script = format!(
            "'{}' --silent --disableTelemetry --skipApiVersionCheck \
             --blobHost 127.0.0.1 --blobPort 10000 --location '{}' >/dev/null 2>&1 & a=$!; \
             while kill -0 {} 2>/dev/null && kill -0 $a 2>/dev/null; do sleep 1; done; kill $a 2>/dev/null; sleep 1; rm -rf '{}'",
            bin.display(),
            dir.display(),
            std::process::id(),
            dir.display()
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if listening(10000) {
                return Some(default());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    })
    .as_ref()
}
