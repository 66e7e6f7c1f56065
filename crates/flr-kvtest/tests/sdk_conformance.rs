//! Microsoft's unmodified Python SDK against the test vault
//! (`tests/kv_sdk_conformance.py`): the proof that it speaks the protocol.

use std::process::Command;

use flr_kvtest::TestVault;

#[test]
fn python_sdk_accepts_the_test_vault() {
    let probe = Command::new("python3")
        .args(["-c", "import azure.keyvault.keys, azure.keyvault.secrets"])
        .output();
    if !matches!(&probe, Ok(o) if o.status.success()) {
        flr_testdata::loud(
            "SKIPPED python_sdk_accepts_the_test_vault: needs python3 with azure-keyvault-keys \
             and azure-keyvault-secrets (pip install azure-keyvault-keys azure-keyvault-secrets)",
        );
        return;
    }
    let kv = TestVault::start();
    kv.add_client("conformance-client", "conformance-secret");
    let script = flr_testdata::repo_root().join("tests/kv_sdk_conformance.py");
    let out = Command::new("python3")
        .arg(&script)
        .env("KV_URL", kv.url())
        .env("KV_CA", kv.ca_path())
        .env("KV_TENANT", kv.tenant())
        .env("KV_CLIENT_ID", "conformance-client")
        .env("KV_CLIENT_SECRET", "conformance-secret")
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("CONFORMANCE OK"),
        "the SDK refused the test vault:\n{stdout}\n{stderr}"
    );

    // What the server saw: each client's first call was the bare challenge,
    // tokens came from its own token endpoint, and every vault call after
    // that carried one for the registered client.
    let log = kv.requests();
    assert_eq!(
        (log[0].status, log[0].authorized),
        (401, false),
        "{:?}",
        log[0]
    );
    let challenges = log.iter().filter(|r| r.status == 401).count();
    let tokens: Vec<_> = log
        .iter()
        .filter(|r| r.path.ends_with("/oauth2/v2.0/token"))
        .collect();
    // The SDK caches the challenge per package and host: keys (KeyClient and
    // CryptographyClient share it) and secrets.
    assert_eq!(challenges, 2, "one challenge per SDK package");
    assert!(tokens
        .iter()
        .all(|r| r.status == 200 && r.caller.as_deref() == Some("conformance-client")));
    assert!(log
        .iter()
        .filter(|r| r.authorized)
        .all(|r| r.caller.as_deref() == Some("conformance-client")));
    let unwraps: Vec<_> = log
        .iter()
        .filter(|r| r.path.ends_with("/unwrapkey"))
        .collect();
    assert_eq!(
        unwraps.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 200, 200, 200, 403],
        "three algorithms, the server's wrap, then the disabled key"
    );
    assert!(log
        .iter()
        .any(|r| r.path.ends_with("/wrapkey") && r.status == 200));
    assert!(log
        .iter()
        .any(|r| r.path.ends_with("/versions") && r.query.contains("skiptoken")));
}
