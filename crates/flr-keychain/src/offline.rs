//! RSA unwrap with a KEK version held offline (PEM or JWK private key), and
//! the base64 flavours Key Vault values come in.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use flr_keys::Secret;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::{BigUint, Oaep, Pkcs1v15Encrypt, RsaPrivateKey};
use zeroize::Zeroizing;

/// Decodes base64 in either alphabet, padded or not (Key Vault and ADE use
/// all four). Whitespace is ignored.
pub fn b64_decode(text: &str) -> Result<Vec<u8>, String> {
    // The text may be a BEK's base64: keep the cleaned copy wiped too.
    let t: Zeroizing<String> =
        Zeroizing::new(text.chars().filter(|c| !c.is_whitespace()).collect());
    for e in [&URL_SAFE_NO_PAD, &URL_SAFE, &STANDARD, &STANDARD_NO_PAD] {
        if let Ok(v) = e.decode(t.as_bytes()) {
            return Ok(v);
        }
    }
    Err("not base64 or base64url".into())
}

/// base64url without padding, as Key Vault requests carry it.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Loads an RSA private key from PEM (PKCS#8 or PKCS#1).
pub fn load_pem(text: &str) -> Result<RsaPrivateKey, String> {
    RsaPrivateKey::from_pkcs8_pem(text)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(text))
        .map_err(|e| format!("not an RSA private key in PEM (PKCS#8 or PKCS#1): {e}"))
}

/// Loads an RSA private key from a JWK (`kty` RSA with n, e, d, p, q).
pub fn load_jwk(text: &str) -> Result<RsaPrivateKey, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("JWK: {e}"))?;
    let v = v.get("key").unwrap_or(&v);
    let kty = v.get("kty").and_then(|k| k.as_str()).unwrap_or("");
    if !kty.starts_with("RSA") {
        return Err(format!("JWK: kty {kty:?} is not RSA"));
    }
    let int = |name: &str| -> Result<BigUint, String> {
        let s = v
            .get(name)
            .and_then(|x| x.as_str())
            .ok_or_else(|| format!("JWK: no {name:?} member (a private key is needed)"))?;
        let b = Zeroizing::new(b64_decode(s).map_err(|e| format!("JWK {name}: {e}"))?);
        Ok(BigUint::from_bytes_be(&b))
    };
    let key =
        RsaPrivateKey::from_components(int("n")?, int("e")?, int("d")?, vec![int("p")?, int("q")?])
            .map_err(|e| format!("JWK: inconsistent RSA key: {e}"))?;
    key.validate()
        .map_err(|e| format!("JWK: invalid RSA key: {e}"))?;
    Ok(key)
}

/// RSA unwrap as Key Vault does it: `RSA-OAEP` (SHA-1), `RSA-OAEP-256`,
/// `RSA1_5`.
pub fn rsa_unwrap(key: &RsaPrivateKey, alg: &str, wrapped: &[u8]) -> Result<Secret, String> {
    let out = match alg.to_ascii_uppercase().as_str() {
        "RSA-OAEP" => key.decrypt(Oaep::new::<sha1::Sha1>(), wrapped),
        "RSA-OAEP-256" => key.decrypt(Oaep::new::<sha2::Sha256>(), wrapped),
        "RSA1_5" => key.decrypt(Pkcs1v15Encrypt, wrapped),
        other => return Err(format!("unwrap algorithm {other:?} is not supported")),
    }
    .map_err(|_| format!("{alg} unwrap failed: this key version did not wrap the value"))?;
    Ok(Secret::new(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::EncodePrivateKey;
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    use rsa::RsaPublicKey;

    #[test]
    fn base64_flavours() {
        for s in ["aGk_Pw", "aGk_Pw==", "aGk/Pw==", "aGk/Pw"] {
            assert_eq!(b64_decode(s).unwrap(), b"hi?\x3f"[..4].to_vec(), "{s}");
        }
        assert!(b64_decode("***").is_err());
    }

    #[test]
    fn unwrap_round_trips_for_every_algorithm_and_both_key_formats() {
        let mut rng = rand::thread_rng();
        let key = RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let pem = key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        let from_pem = load_pem(&pem).unwrap();
        let b = |x: &BigUint| b64url(&x.to_bytes_be());
        let jwk = serde_json::json!({"kty":"RSA","n":b(key.n()),"e":b(key.e()),"d":b(key.d()),
            "p":b(&key.primes()[0]),"q":b(&key.primes()[1])});
        let from_jwk = load_jwk(&jwk.to_string()).unwrap();
        let public = RsaPublicKey::from(&key);
        let bek = b"172-char-passphrase-stand-in".to_vec();
        for alg in ["RSA-OAEP", "RSA-OAEP-256", "RSA1_5"] {
            let wrapped = match alg {
                "RSA-OAEP" => public.encrypt(&mut rng, Oaep::new::<sha1::Sha1>(), &bek),
                "RSA-OAEP-256" => public.encrypt(&mut rng, Oaep::new::<sha2::Sha256>(), &bek),
                _ => public.encrypt(&mut rng, Pkcs1v15Encrypt, &bek),
            }
            .unwrap();
            for k in [&from_pem, &from_jwk] {
                assert_eq!(
                    rsa_unwrap(k, alg, &wrapped).unwrap().expose(),
                    &bek[..],
                    "{alg}"
                );
            }
            // The other OAEP hash does not unwrap it.
            if alg == "RSA-OAEP" {
                assert!(rsa_unwrap(&from_pem, "RSA-OAEP-256", &wrapped).is_err());
            }
        }
        assert!(load_jwk(r#"{"kty":"RSA","n":"AQ","e":"AQAB"}"#).is_err());
    }
}

/// OpenSSL as the independent oracle: values wrapped by `openssl pkeyutl`
/// with each padding unwrap to the plaintext.
#[cfg(test)]
mod openssl_oracle {
    use super::*;
    use std::process::Command;

    #[test]
    fn values_wrapped_by_openssl_unwrap() {
        if Command::new("openssl").arg("version").output().is_err() {
            eprintln!("SKIPPED OpenSSL wrap oracle: the openssl command is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pem");
        let st = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048")
            .output()
            .unwrap();
        assert!(st.status.success());
        let pem = load_pem(&std::fs::read_to_string(&key).unwrap()).unwrap();
        let plain = dir.path().join("p");
        std::fs::write(&plain, b"the 172-byte ADE passphrase stands here").unwrap();
        for (alg, opts) in [
            ("RSA-OAEP", &["rsa_padding_mode:oaep"][..]),
            (
                "RSA-OAEP-256",
                &[
                    "rsa_padding_mode:oaep",
                    "rsa_oaep_md:sha256",
                    "rsa_mgf1_md:sha256",
                ][..],
            ),
            ("RSA1_5", &["rsa_padding_mode:pkcs1"][..]),
        ] {
            let mut c = Command::new("openssl");
            c.args(["pkeyutl", "-encrypt", "-inkey"])
                .arg(&key)
                .arg("-in")
                .arg(&plain);
            for o in opts {
                c.args(["-pkeyopt", o]);
            }
            let out = c.output().unwrap();
            assert!(
                out.status.success(),
                "{alg}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let got = rsa_unwrap(&pem, alg, &out.stdout).unwrap();
            assert_eq!(got.expose(), std::fs::read(&plain).unwrap(), "{alg}");
        }
    }
}
