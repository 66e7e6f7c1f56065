//! Microsoft's unmodified `azure-storage-blob` SDK against the test Blob
//! service (`tests/blob_sdk_conformance.py`): page blobs, snapshots, page
//! range diffs (both forms), continuation, SAS and Shared Key, Entra tokens.

use std::path::PathBuf;
use std::process::Command;

use flr_kvtest::TestVault;

/// `python3` if it has the SDK, else the venv `.ci/run` and the helper
/// sessions make (`/tmp/venv-blob`).
fn python() -> Option<PathBuf> {
    let check = "import azure.storage.blob, azure.identity";
    [
        "python3",
        "/tmp/venv-blob/bin/python3",
        "/tmp/flr-ci-venv/bin/python3",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| {
        Command::new(p)
            .args(["-c", check])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn python_blob_sdk_accepts_the_test_blob_service() {
    let Some(py) = python() else {
        flr_testdata::loud(
            "SKIPPED python_blob_sdk_accepts_the_test_blob_service: needs python3 with \
             azure-storage-blob and azure-identity (pip install azure-storage-blob azure-identity)",
        );
        return;
    };
    let kv = TestVault::start();
    kv.add_client("blob-client", "blob-secret");
    let script = flr_testdata::repo_root().join("tests/blob_sdk_conformance.py");
    let out = Command::new(py)
        .arg(&script)
        .env("BLOB_ENDPOINT", kv.blob_endpoint())
        .env("BLOB_ACCOUNT", flr_kvtest::BLOB_ACCOUNT)
        .env("BLOB_KEY", kv.blob_key())
        .env("BLOB_CA", kv.ca_path())
        .env("BLOB_TENANT", kv.tenant())
        .env("BLOB_AUTHORITY", kv.url())
        .env("BLOB_CLIENT_ID", "blob-client")
        .env("BLOB_CLIENT_SECRET", "blob-secret")
        .env("REQUESTS_CA_BUNDLE", kv.ca_path())
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("BLOB CONFORMANCE OK"),
        "the SDK refused the test Blob service:\n{stdout}\n{stderr}"
    );
    eprintln!("{stdout}");
    // The server saw the diff in both forms and followed markers.
    let log = kv.requests();
    let pagelists: Vec<_> = log
        .iter()
        .filter(|r| r.query.contains("comp=pagelist"))
        .collect();
    assert!(pagelists.iter().any(|r| r.query.contains("prevsnapshot=")));
    assert!(pagelists.iter().any(|r| r.query.contains("marker=")));
    assert!(log
        .iter()
        .any(|r| r.path.ends_with("/oauth2/v2.0/token") && r.status == 200));
}

/// The delay proxy adds its round trip to each exchange and passes the
/// bytes through unchanged.
#[test]
fn delay_proxy_adds_the_round_trip() {
    let kv = TestVault::start();
    kv.create_container("c");
    kv.create_page_blob("c", "b", 1 << 20);
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
    kv.put_pages("c", "b", 4096, &data);
    let proxy = kv.delay_proxy(std::time::Duration::from_millis(100));
    let ca = reqwest::Certificate::from_pem(kv.ca_pem().as_bytes()).unwrap();
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let url = kv
        .blob_url("c", "b", None)
        .replace(&kv.url(), &format!("https://127.0.0.1:{}", proxy.port()));
    let get = || {
        client
            .get(&url)
            .header("x-ms-version", "2021-08-06")
            .header("x-ms-range", "bytes=4096-69631")
            .send()
            .unwrap()
    };
    let first = get(); // connection set up
    assert_eq!(first.status(), 206);
    assert_eq!(first.bytes().unwrap().to_vec(), data);
    let t = std::time::Instant::now();
    let again = get();
    let took = t.elapsed();
    assert_eq!(again.bytes().unwrap().to_vec(), data);
    assert!(
        took >= std::time::Duration::from_millis(100)
            && took < std::time::Duration::from_millis(400),
        "one request on an open connection took {took:?}"
    );
    assert_eq!(kv.blob_bytes_served(), 2 * 65536);
}
