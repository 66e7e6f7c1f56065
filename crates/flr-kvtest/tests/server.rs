//! The test vault through a plain HTTPS client (reqwest + rustls, trusting
//! only the test CA): challenge, tokens, keys, secrets, paging, faults.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use flr_kvtest::{Denial, FaultOp, TestVault};
use reqwest::blocking::Client;
use reqwest::Method;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use serde_json::{json, Value};

struct Http {
    client: Client,
    base: String,
    token: Option<String>,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    json: Value,
}

impl Http {
    fn new(kv: &TestVault) -> Http {
        let ca = reqwest::Certificate::from_pem(kv.ca_pem().as_bytes()).unwrap();
        let client = Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .use_rustls_tls()
            .build()
            .unwrap();
        Http {
            client,
            base: kv.url(),
            token: Some(kv.token_for("test-app")),
        }
    }

    fn send(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = if path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}{sep}api-version=7.5", self.base)
        };
        let mut r = self.client.request(method, url);
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let res = r.send().unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        Answer {
            status,
            headers,
            json,
        }
    }

    fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None)
    }

    fn post(&self, path: &str, body: Value) -> Answer {
        self.send(Method::POST, path, Some(body))
    }
}

fn path_of(id: &str) -> String {
    id.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap()
}

fn error(a: &Answer) -> (u16, &str, &str) {
    (
        a.status,
        a.json["error"]["code"].as_str().unwrap_or(""),
        a.json["error"]["innererror"]["code"].as_str().unwrap_or(""),
    )
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn challenge_comes_first_and_names_this_server() {
    let kv = TestVault::start();
    let mut http = Http::new(&kv);
    http.token = None;
    // Not even a broken body is looked at before the challenge.
    let r = http
        .client
        .post(format!("{}/keys/kek/create?api-version=7.5", kv.url()))
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let header = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        header,
        format!(
            "Bearer authorization=\"{}/{}\", resource=\"https://vault.azure.net\"",
            kv.url(),
            kv.tenant()
        )
    );
    assert_eq!(kv.authority(), format!("{}/{}", kv.url(), kv.tenant()));
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "Unauthorized");
    // Another scheme, or an empty bearer token, is no token.
    for auth in ["Basic YTpi", "Bearer ", "Bearer"] {
        let r = http
            .client
            .get(format!("{}/secrets?api-version=7.5", kv.url()))
            .header("authorization", auth)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{auth}");
    }

    // A token for another resource is refused too, with the challenge.
    http.token = Some(format!(
        "{}.{}.",
        b64(br#"{"alg":"none"}"#),
        b64(br#"{"aud":"https://storage.azure.com","appid":"x"}"#)
    ));
    let a = http.get("/keys/kek");
    assert_eq!(a.status, 401);
    assert!(a.json["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("AKV10022"));
    assert!(a.headers.contains_key("www-authenticate"));

    // Opaque tokens are accepted (tests may use any), with no known caller.
    http.token = Some("opaque".into());
    assert_eq!(error(&http.get("/keys/kek")), (404, "KeyNotFound", ""));
    let log = kv.requests();
    assert_eq!(log.len(), 6);
    assert!(log[..5].iter().all(|r| !r.authorized && r.status == 401));
    assert!(log[5].authorized && log[5].caller.is_none());
    assert_eq!(
        (log[0].method.as_str(), log[0].path.as_str()),
        ("POST", "/keys/kek/create")
    );
    assert_eq!(log[0].query, "api-version=7.5");
    kv.reset_log();
    assert!(kv.requests().is_empty());
}

#[test]
fn token_endpoint_client_credentials_and_assertion() {
    let kv = TestVault::start();
    kv.add_client("app-1", "s3cret");
    let http = Http::new(&kv);
    let token_url = format!("{}/oauth2/v2.0/token", kv.authority());
    let ask = |form: &[(&str, &str)]| {
        let r = http.client.post(&token_url).form(form).send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    let scope = ("scope", "https://vault.azure.net/.default");
    let (status, body) = ask(&[
        ("grant_type", "client_credentials"),
        ("client_id", "app-1"),
        ("client_secret", "s3cret"),
        scope,
    ]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["token_type"].as_str(), body["expires_in"].as_i64()),
        (Some("Bearer"), Some(3599))
    );
    let token = body["access_token"].as_str().unwrap().to_string();
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["appid"], "app-1");
    assert_eq!(claims["tid"], kv.tenant().as_str());
    assert!(claims["oid"].is_string());

    let mut as_app = Http::new(&kv);
    as_app.token = Some(token);
    assert_eq!(as_app.get("/keys/none").status, 404);
    let log = kv.requests();
    assert_eq!(log.last().unwrap().caller.as_deref(), Some("app-1"));
    assert_eq!(log[0].caller.as_deref(), Some("app-1"));
    assert!(!log[0].authorized);

    let (status, body) = ask(&[
        ("grant_type", "client_credentials"),
        ("client_id", "app-1"),
        ("client_secret", "wrong"),
        scope,
    ]);
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADSTS7000215"));
    let (status, body) = ask(&[
        ("grant_type", "client_credentials"),
        ("client_id", "stranger"),
        ("client_secret", "s3cret"),
        scope,
    ]);
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );

    // Workload identity: a federated assertion instead of a secret.
    let assertion = format!(
        "{}.{}.sig",
        b64(br#"{"alg":"RS256"}"#),
        b64(br#"{"sub":"system:serviceaccount:x"}"#)
    );
    let (status, body) = ask(&[
        ("grant_type", "client_credentials"),
        ("client_id", "app-1"),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", &assertion),
        scope,
    ]);
    assert_eq!(status, 200, "{body}");

    // Expired tokens get the challenge again; new ones work.
    kv.expire_tokens();
    let a = as_app.get("/keys/none");
    assert_eq!(a.status, 401);
    assert!(a.headers.contains_key("www-authenticate"));
    assert_eq!(
        a.json["error"]["message"],
        "[TokenExpired] Error validating token: 'S2S12086'."
    );
    as_app.token = Some(kv.token_for("app-1"));
    assert_eq!(as_app.get("/keys/none").status, 404);

    let openid = http.get(&format!(
        "{}/v2.0/.well-known/openid-configuration",
        kv.authority()
    ));
    assert_eq!(openid.json["token_endpoint"], token_url.as_str());
}

#[test]
fn keys_create_get_unwrap_and_host_based_ids() {
    let kv = TestVault::start();
    let http = Http::new(&kv);
    let created = http.post(
        "/keys/kek/create",
        json!({"kty": "RSA", "key_size": 2048, "tags": {"purpose": "ade"}}),
    );
    assert_eq!(created.status, 200, "{}", created.json);
    let kid = created.json["key"]["kid"].as_str().unwrap().to_string();
    let version = kid.rsplit('/').next().unwrap();
    assert_eq!(kid, format!("{}/keys/kek/{version}", kv.url()));
    assert!(
        version.len() == 32
            && version
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    let key = &created.json["key"];
    assert_eq!(key["kty"], "RSA");
    assert!(key["key_ops"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o == "unwrapKey"));
    let attrs = &created.json["attributes"];
    assert_eq!(attrs["enabled"], true);
    assert!(attrs["created"].is_i64() && attrs["updated"].is_i64());
    assert_eq!(attrs["recoveryLevel"], "Recoverable+Purgeable");
    assert_eq!(created.json["tags"]["purpose"], "ade");
    let private = kv.rsa_private_key(&kid);
    assert_eq!(key["n"].as_str().unwrap(), b64(&private.n().to_bytes_be()));
    assert_eq!(key["e"].as_str().unwrap(), "AQAB");
    assert!(!key["n"].as_str().unwrap().contains('='));

    // ids follow the Host the client used.
    let localhost = Http {
        base: kv.url().replace("127.0.0.1", "localhost"),
        ..Http::new(&kv)
    };
    let got = localhost.get("/keys/kek/");
    assert_eq!(
        got.json["key"]["kid"],
        kid.replace("127.0.0.1", "localhost")
    );

    // A second version becomes the latest; the first stays readable.
    let kid2 = kv.create_rsa_key("kek", 1024);
    assert_eq!(http.get("/keys/kek").json["key"]["kid"], kid2.as_str());
    assert_eq!(http.get("/keys/kek/").json["key"]["kid"], kid2.as_str());
    assert_eq!(http.get(&path_of(&kid)).json["key"]["kid"], kid.as_str());

    // Unwrap what the test wrapped, for each algorithm, and the other way round.
    let cek = [7u8; 32];
    for alg in ["RSA-OAEP", "RSA-OAEP-256", "RSA1_5"] {
        let wrapped = kv.wrap(&kid, alg, &cek);
        let a = http.post(
            &format!("{}/unwrapkey", path_of(&kid)),
            json!({"alg": alg, "value": wrapped}),
        );
        assert_eq!(a.status, 200, "{alg}: {}", a.json);
        assert_eq!(a.json["kid"], kid.as_str());
        assert_eq!(a.json["value"], b64(&cek));
        let a = http.post(
            &format!("{}/wrapkey", path_of(&kid)),
            json!({"alg": alg, "value": b64(&cek)}),
        );
        assert_eq!(a.status, 200);
        let back = http.post(
            &format!("{}/unwrapkey", path_of(&kid)),
            json!({"alg": alg, "value": a.json["value"]}),
        );
        assert_eq!(back.json["value"], b64(&cek));
    }
    // Standard alphabet and padding are accepted on input.
    let std_b64 = base64::engine::general_purpose::STANDARD.encode(
        URL_SAFE_NO_PAD
            .decode(kv.wrap(&kid, "RSA-OAEP", &cek))
            .unwrap(),
    );
    let a = http.post(
        &format!("{}/unwrapkey", path_of(&kid)),
        json!({"alg": "RSA-OAEP", "value": std_b64}),
    );
    assert_eq!(a.json["value"], b64(&cek));
    // The wrong algorithm, the wrong version or a garbled value is a 400, never a wrong key.
    let wrapped = kv.wrap(&kid, "RSA-OAEP-256", &cek);
    for (path, alg, value) in [
        (path_of(&kid), "RSA-OAEP", wrapped.clone()),
        (path_of(&kid2), "RSA-OAEP-256", wrapped.clone()),
        (path_of(&kid), "RSA-OAEP-256", "!!".to_string()),
        (path_of(&kid), "A256KW", wrapped.clone()),
    ] {
        let a = http.post(
            &format!("{path}/unwrapkey"),
            json!({"alg": alg, "value": value}),
        );
        assert_eq!(error(&a), (400, "BadParameter", ""), "{alg} {}", a.json);
    }
    // Decrypt and encrypt too.
    let a = http.post(
        &format!("{}/encrypt", path_of(&kid)),
        json!({"alg": "RSA-OAEP-256", "value": b64(b"hi")}),
    );
    let a = http.post(
        &format!("{}/decrypt", path_of(&kid)),
        json!({"alg": "RSA-OAEP-256", "value": a.json["value"]}),
    );
    assert_eq!(a.json["value"], b64(b"hi"));

    // HTTP create allows only the real sizes and RSA.
    assert_eq!(
        error(&http.post("/keys/k2/create", json!({"kty": "RSA", "key_size": 1024}))).0,
        400
    );
    assert_eq!(
        error(&http.post("/keys/k2/create", json!({"kty": "EC"}))).0,
        400
    );
}

#[test]
fn key_attributes_disabled_expired_and_ops() {
    let kv = TestVault::start();
    let http = Http::new(&kv);
    let kid = kv.create_rsa_key("kek", 1024);
    let unwrap = || {
        http.post(
            &format!("{}/unwrapkey", path_of(&kid)),
            json!({"alg": "RSA-OAEP", "value": kv.wrap(&kid, "RSA-OAEP", b"k")}),
        )
    };
    assert_eq!(unwrap().status, 200);

    // Expired and not yet valid keys still unwrap, as the service does.
    kv.set_key_attributes(
        &kid,
        None,
        Some(Some(now() + 3600)),
        Some(Some(now() - 3600)),
    );
    let got = http.get(&path_of(&kid));
    assert!(got.json["attributes"]["exp"].as_i64().unwrap() < now());
    assert!(got.json["attributes"]["nbf"].is_i64());
    assert_eq!(unwrap().status, 200);
    kv.set_key_attributes(&kid, None, Some(None), Some(None));
    assert!(http.get(&path_of(&kid)).json["attributes"]
        .get("exp")
        .is_none());

    // Disabled over HTTP: reads still answer, crypto does not.
    let a = http.send(
        Method::PATCH,
        &path_of(&kid),
        Some(json!({"attributes": {"enabled": false}})),
    );
    assert_eq!(
        (a.status, a.json["attributes"]["enabled"].as_bool()),
        (200, Some(false))
    );
    assert_eq!(http.get(&path_of(&kid)).status, 200);
    let a = unwrap();
    assert_eq!(error(&a), (403, "Forbidden", "KeyDisabled"));
    assert_eq!(
        a.json["error"]["message"],
        "Operation unwrapKey is not allowed on a disabled key."
    );
    let a = http.post(
        &format!("{}/wrapkey", path_of(&kid)),
        json!({"alg": "RSA-OAEP", "value": "AA"}),
    );
    assert_eq!(
        a.json["error"]["message"],
        "Operation wrapKey is not allowed on a disabled key."
    );
    kv.set_key_attributes(&kid, Some(true), None, None);
    assert_eq!(unwrap().status, 200);

    // key_ops are enforced.
    kv.set_key_ops(&kid, &["wrapKey"]);
    assert_eq!(
        error(&unwrap()),
        (403, "Forbidden", "KeyOperationForbidden")
    );

    // Import a JWK with private parts.
    let private = kv.rsa_private_key(&kid);
    let p = &private.primes()[0];
    let q = &private.primes()[1];
    let jwk = json!({
        "kty": "RSA", "key_ops": ["unwrapKey"],
        "n": b64(&private.n().to_bytes_be()), "e": b64(&private.e().to_bytes_be()),
        "d": b64(&private.d().to_bytes_be()), "p": b64(&p.to_bytes_be()), "q": b64(&q.to_bytes_be()),
    });
    let a = http.send(
        Method::PUT,
        "/keys/imported",
        Some(json!({"key": jwk, "attributes": {"enabled": true}})),
    );
    assert_eq!(a.status, 200, "{}", a.json);
    assert!(
        a.json["key"].get("d").is_none(),
        "private parts never leave"
    );
    let imported = a.json["key"]["kid"].as_str().unwrap().to_string();
    assert_eq!(kv.rsa_private_key(&imported), private);
    let a = http.send(
        Method::PUT,
        "/keys/imported",
        Some(json!({"key": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}})),
    );
    assert_eq!(error(&a).0, 400);
    let kid3 = kv.import_rsa_key("again", &private);
    assert_eq!(kv.rsa_private_key(&kid3), private);

    // Deleted: 404 KeyNotFound with the service's wording; recoverable.
    kv.delete_key("kek");
    let a = http.get("/keys/kek");
    assert_eq!(error(&a), (404, "KeyNotFound", ""));
    assert!(a.json["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("A key with (name/id) kek was not found in this key vault."));
    assert_eq!(http.get(&path_of(&kid)).status, 404);
    let d = http.get("/deletedkeys/kek");
    assert_eq!(
        d.json["recoveryId"],
        format!("{}/deletedkeys/kek", kv.url())
    );
    assert_eq!(
        error(&http.post("/keys/kek/create", json!({"kty": "RSA"}))).0,
        409
    );
    assert_eq!(http.post("/deletedkeys/kek/recover", json!({})).status, 200);
    assert_eq!(http.get(&path_of(&kid)).status, 200);
    let a = http.send(Method::DELETE, "/keys/kek", None);
    assert_eq!(a.json["key"]["kid"], kid.as_str());
    assert_eq!(
        http.send(Method::DELETE, "/deletedkeys/kek", None).status,
        204
    );
    assert_eq!(http.get("/deletedkeys/kek").status, 404);

    // Names: letters, digits and dashes.
    assert_eq!(
        error(&http.get("/keys/bad_name")),
        (400, "BadParameter", "")
    );
    assert_eq!(
        error(&http.get("/secrets/bad.name/")),
        (400, "BadParameter", "")
    );
}

#[test]
fn paging_follows_full_next_links() {
    let kv = TestVault::start();
    let http = Http::new(&kv);
    let kids: Vec<String> = (0..5).map(|_| kv.create_rsa_key("kek", 512)).collect();
    let walk = |first: &str| {
        let mut ids = Vec::new();
        let mut pages = 0;
        let mut next = first.to_string();
        loop {
            let a = http.get(&next);
            assert_eq!(a.status, 200, "{}", a.json);
            pages += 1;
            for item in a.json["value"].as_array().unwrap() {
                assert!(item["attributes"]["enabled"].is_boolean());
                ids.push(item["kid"].as_str().unwrap().to_string());
            }
            match a.json["nextLink"].as_str() {
                Some(link) => {
                    assert!(
                        link.starts_with(&format!("{}/keys/kek/versions?", kv.url())),
                        "{link}"
                    );
                    assert!(link.contains("api-version=7.5"));
                    next = link.to_string();
                }
                None => break,
            }
        }
        (pages, ids)
    };
    assert_eq!(walk("/keys/kek/versions"), (1, kids.clone()));
    kv.set_page_size(2);
    assert_eq!(walk("/keys/kek/versions"), (3, kids.clone()));
    assert_eq!(walk("/keys/kek/versions?maxresults=1"), (5, kids.clone()));
    assert_eq!(error(&http.get("/keys/kek/versions?maxresults=26")).0, 400);
    assert_eq!(http.get("/keys").json["value"].as_array().unwrap().len(), 1);
    assert_eq!(
        error(&http.get("/keys/nokey/versions")),
        (404, "KeyNotFound", "")
    );
}

#[test]
fn secrets_versions_disabled_and_listing() {
    let kv = TestVault::start();
    let http = Http::new(&kv);
    let id1 = kv.set_secret(
        "bek",
        "c2VjcmV0",
        Some("Wrapped BEK"),
        &[("MachineName", "vm1")],
    );
    let put = http.send(
        Method::PUT,
        "/secrets/bek",
        Some(json!({"value": "two", "contentType": "text/plain", "tags": {"a": "b"}})),
    );
    assert_eq!(put.status, 200);
    let id2 = put.json["id"].as_str().unwrap().to_string();
    assert_eq!(put.json["value"], "two");
    assert_eq!(http.get("/secrets/bek/").json["id"], id2.as_str());
    let one = http.get(&path_of(&id1));
    assert_eq!(one.json["value"], "c2VjcmV0");
    assert_eq!(one.json["contentType"], "Wrapped BEK");
    assert_eq!(one.json["tags"]["MachineName"], "vm1");
    assert_eq!(one.json["id"], id1.as_str());

    // Expired secrets still read.
    kv.set_secret_attributes(&id1, None, None, Some(Some(now() - 10)));
    assert_eq!(http.get(&path_of(&id1)).status, 200);

    kv.set_secret_enabled(&id2, false);
    let a = http.get("/secrets/bek");
    assert_eq!(error(&a), (403, "Forbidden", "SecretDisabled"));
    assert_eq!(
        a.json["error"]["message"],
        "Operation get is not allowed on a disabled secret."
    );
    let list = http.get("/secrets/bek/versions");
    let items = list.json["value"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items
        .iter()
        .all(|i| i.get("value").is_none() && i["id"].is_string()));
    assert_eq!(items[0]["contentType"], "Wrapped BEK");
    assert_eq!(items[1]["attributes"]["enabled"], false);
    let patched = http.send(
        Method::PATCH,
        &path_of(&id2),
        Some(json!({"attributes": {"enabled": true}})),
    );
    assert!(patched.json.get("value").is_none());
    assert_eq!(http.get("/secrets/bek").json["value"], "two");

    let a = http.get("/secrets/missing");
    assert_eq!(error(&a), (404, "SecretNotFound", ""));
    assert!(a.json["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("A secret with (name/id) missing was not found"));
    kv.delete_secret("bek");
    assert_eq!(http.get(&path_of(&id1)).status, 404);
    assert_eq!(
        http.get("/deletedsecrets/bek").json["recoveryId"],
        format!("{}/deletedsecrets/bek", kv.url())
    );
}

#[test]
fn injected_failures_and_denials() {
    let kv = TestVault::start();
    let http = Http::new(&kv);
    let kid = kv.create_rsa_key("kek", 1024);
    let unwrap_path = format!("{}/unwrapkey", path_of(&kid));
    let body = || json!({"alg": "RSA-OAEP-256", "value": kv.wrap(&kid, "RSA-OAEP-256", b"k")});

    kv.fail_next(429, Some(3), 2);
    // The challenge is not one of the failed requests.
    let mut bare = Http::new(&kv);
    bare.token = None;
    assert_eq!(bare.get("/keys/kek").status, 401);
    for _ in 0..2 {
        let a = http.post(&unwrap_path, body());
        assert_eq!(error(&a), (429, "Throttled", ""));
        assert_eq!(a.headers["retry-after"], "3");
    }
    assert_eq!(http.post(&unwrap_path, body()).status, 200);
    kv.fail_next(503, None, 1);
    let a = http.get("/keys/kek");
    assert_eq!(a.status, 503);
    assert!(!a.headers.contains_key("retry-after"));

    kv.deny(FaultOp::UnwrapKey, Denial::Policy);
    let a = http.post(&unwrap_path, body());
    assert_eq!(error(&a), (403, "Forbidden", "ForbiddenByPolicy"));
    let msg = a.json["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("The user, group or application 'appid=test-app;oid="),
        "{msg}"
    );
    assert!(
        msg.contains("does not have keys unwrapKey permission on key vault 'flr-test-vault"),
        "{msg}"
    );
    assert_eq!(
        http.get("/keys/kek").status,
        200,
        "only unwrapKey is denied"
    );
    // Permission is checked before existence, as the service does.
    assert_eq!(
        error(&http.post("/keys/nokey/x/unwrapkey", body())).2,
        "ForbiddenByPolicy"
    );

    kv.deny(FaultOp::UnwrapKey, Denial::Rbac);
    let a = http.post(&unwrap_path, body());
    assert_eq!(error(&a), (403, "Forbidden", "ForbiddenByRbac"));
    assert!(a.json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Microsoft.KeyVault/vaults/keys/unwrap/action"));
    kv.allow(FaultOp::UnwrapKey);
    assert_eq!(http.post(&unwrap_path, body()).status, 200);

    kv.set_secret("s", "v", None, &[]);
    kv.deny(FaultOp::GetSecret, Denial::Policy);
    let a = http.get("/secrets/s");
    assert!(a.json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("does not have secrets get permission"));
    kv.deny(FaultOp::ListSecretVersions, Denial::Rbac);
    assert_eq!(error(&http.get("/secrets/s/versions")).2, "ForbiddenByRbac");

    let statuses: Vec<u16> = kv.requests().iter().map(|r| r.status).collect();
    assert_eq!(&statuses[..5], &[401, 429, 429, 200, 503]);
}

#[test]
fn connections_are_kept_alive_and_drop_stops_the_server() {
    let kv = TestVault::start();
    let http = Http::new(&kv);
    for _ in 0..20 {
        assert_eq!(http.get("/keys/none").status, 404);
    }
    assert_eq!(kv.connections(), 1, "20 requests on one connection");
    let addr = kv.url().trim_start_matches("https://").to_string();
    drop(kv);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the port is closed after drop"
    );
}
