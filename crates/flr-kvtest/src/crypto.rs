//! RSA operations with Key Vault's algorithm names, base64 as Key Vault
//! writes it (base64url, no padding) and reads it (either alphabet, padded
//! or not), and JWK import.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Oaep, Pkcs1v15Encrypt, RsaPrivateKey, RsaPublicKey};
use serde_json::Value;

/// The key-wrapping algorithms Key Vault offers for RSA keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alg {
    /// `RSA-OAEP`: OAEP with SHA-1 (digest and MGF1).
    Oaep,
    /// `RSA-OAEP-256`: OAEP with SHA-256 (digest and MGF1).
    Oaep256,
    /// `RSA1_5`: PKCS#1 v1.5 encryption.
    Rsa15,
}

impl Alg {
    pub(crate) fn parse(name: &str) -> Option<Alg> {
        match name {
            "RSA-OAEP" => Some(Alg::Oaep),
            "RSA-OAEP-256" => Some(Alg::Oaep256),
            "RSA1_5" => Some(Alg::Rsa15),
            _ => None,
        }
    }
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64 in either alphabet, with or without padding.
pub(crate) fn unb64(text: &str) -> Option<Vec<u8>> {
    let normal: String = text
        .trim()
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    URL_SAFE_NO_PAD.decode(normal).ok()
}

pub(crate) fn generate(bits: usize) -> RsaPrivateKey {
    RsaPrivateKey::new(&mut rand::thread_rng(), bits).expect("RSA key generation")
}

pub(crate) fn encrypt(key: &RsaPublicKey, alg: Alg, plain: &[u8]) -> Result<Vec<u8>, String> {
    let mut rng = rand::thread_rng();
    match alg {
        Alg::Oaep => key.encrypt(&mut rng, Oaep::new::<sha1::Sha1>(), plain),
        Alg::Oaep256 => key.encrypt(&mut rng, Oaep::new::<sha2::Sha256>(), plain),
        Alg::Rsa15 => key.encrypt(&mut rng, Pkcs1v15Encrypt, plain),
    }
    .map_err(|e| e.to_string())
}

pub(crate) fn decrypt(key: &RsaPrivateKey, alg: Alg, cipher: &[u8]) -> Result<Vec<u8>, String> {
    if cipher.len() != key.size() {
        return Err(format!(
            "ciphertext is {} bytes, the key's modulus {}",
            cipher.len(),
            key.size()
        ));
    }
    match alg {
        Alg::Oaep => key.decrypt(Oaep::new::<sha1::Sha1>(), cipher),
        Alg::Oaep256 => key.decrypt(Oaep::new::<sha2::Sha256>(), cipher),
        Alg::Rsa15 => key.decrypt(Pkcs1v15Encrypt, cipher),
    }
    .map_err(|e| e.to_string())
}

/// The public JWK members (`n`, `e`).
pub(crate) fn public_jwk(key: &RsaPrivateKey) -> (String, String) {
    (b64(&key.n().to_bytes_be()), b64(&key.e().to_bytes_be()))
}

/// An RSA private key from a JWK holding `n`, `e`, `d`, `p` and `q`.
pub(crate) fn from_jwk(jwk: &Value) -> Result<RsaPrivateKey, String> {
    let kty = jwk["kty"].as_str().unwrap_or("");
    if kty != "RSA" && kty != "RSA-HSM" {
        return Err(format!(
            "kty '{kty}' is not supported by this test vault (RSA only)"
        ));
    }
    let int = |member: &str| -> Result<BigUint, String> {
        let text = jwk[member]
            .as_str()
            .ok_or_else(|| format!("the JWK has no '{member}'"))?;
        let bytes = unb64(text).ok_or_else(|| format!("the JWK's '{member}' is not base64"))?;
        Ok(BigUint::from_bytes_be(&bytes))
    };
    let key =
        RsaPrivateKey::from_components(int("n")?, int("e")?, int("d")?, vec![int("p")?, int("q")?])
            .map_err(|e| format!("the JWK is not an RSA private key: {e}"))?;
    key.validate()
        .map_err(|e| format!("the JWK is not a consistent RSA private key: {e}"))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::traits::PrivateKeyParts;

    #[test]
    fn base64_in_every_spelling() {
        let bytes = [0xfbu8, 0xff, 0xfe, 0x01];
        assert_eq!(b64(&bytes), "-__-AQ");
        for text in ["-__-AQ", "+//+AQ==", "+//+AQ", "-__-AQ=="] {
            assert_eq!(unb64(text).as_deref(), Some(&bytes[..]), "{text}");
        }
        assert_eq!(unb64("not base64!"), None);
    }

    #[test]
    fn every_algorithm_round_trips_and_they_differ() {
        let key = generate(1024);
        let public = key.to_public_key();
        for alg in [Alg::Oaep, Alg::Oaep256, Alg::Rsa15] {
            let c = encrypt(&public, alg, b"a 32-byte key encryption key....").unwrap();
            assert_eq!(
                decrypt(&key, alg, &c).unwrap(),
                b"a 32-byte key encryption key...."
            );
            let other = if alg == Alg::Oaep {
                Alg::Oaep256
            } else {
                Alg::Oaep
            };
            assert!(
                decrypt(&key, other, &c).is_err(),
                "{alg:?} read as {other:?}"
            );
        }
        assert!(decrypt(&key, Alg::Oaep, &[1, 2, 3]).is_err());
    }

    #[test]
    fn jwk_import_checks_the_key() {
        let key = generate(1024);
        let (n, e) = public_jwk(&key);
        let p = &key.primes()[0];
        let q = &key.primes()[1];
        let mut jwk = serde_json::json!({
            "kty": "RSA", "n": n, "e": e,
            "d": b64(&key.d().to_bytes_be()),
            "p": b64(&p.to_bytes_be()), "q": b64(&q.to_bytes_be()),
        });
        assert_eq!(from_jwk(&jwk).unwrap(), key);
        jwk["q"] = Value::String(b64(&p.to_bytes_be()));
        assert!(from_jwk(&jwk).is_err());
        jwk["kty"] = Value::String("EC".into());
        assert!(from_jwk(&jwk).unwrap_err().contains("kty"));
    }
}
