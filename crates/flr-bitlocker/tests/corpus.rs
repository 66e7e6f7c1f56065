//! Corpus tier: BitLocker volumes made by Windows (cryptsetup's bitlk test
//! images and dissect.fve's test images), checked against the sha256 sums
//! documented beside them.

use std::path::Path;
use std::sync::Arc;

use flr_bitlocker::{BitLockerVolume, UnlockedBde};
use flr_io::{FileSource, ReadAt, Source};
use flr_keys::{KeyMaterial, Secret};
use sha2::{Digest, Sha256};

fn open(path: &Path) -> BitLockerVolume {
    let src: Source = Arc::new(FileSource::open(path).unwrap());
    assert!(flr_bitlocker::probe(&*src), "{}", path.display());
    BitLockerVolume::open(src).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sha_prefix(v: &UnlockedBde, len: u64) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        v.read_exact_at(off, &mut buf[..n]).unwrap();
        h.update(&buf[..n]);
        off += n as u64;
    }
    hex::encode(h.finalize())
}

fn tsv(corpus: &Path, name: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(corpus.join("expected").join(name))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

fn pw(s: &str) -> KeyMaterial {
    KeyMaterial::Password(Secret::from_slice(s.as_bytes()))
}
fn rp(s: &str) -> KeyMaterial {
    KeyMaterial::RecoveryPassword(Secret::from_slice(s.as_bytes()))
}
fn bek(p: &Path) -> KeyMaterial {
    KeyMaterial::StartupKey(Secret::new(std::fs::read(p).unwrap()))
}

#[test]
fn dissect_fve_first_32k() {
    let Some((unpacked, corpus)) = flr_testdata::corpus("flr-bitlocker dissect_fve_first_32k")
    else {
        return;
    };
    let dir = unpacked.join("bitlocker/dissect-fve");
    let mut failures = Vec::new();
    for row in tsv(&corpus, "dissect-fve-bde.first32k-sha256.tsv") {
        let (image, cred) = (&row[0], &row[1]);
        // The documented sha256: libbde's, or dislocker's where libbde failed.
        let want = if row[2] == "FAIL" { &row[3] } else { &row[2] };
        let vol = open(&dir.join(format!("{image}.bin")));
        let key = if let Some(p) = cred.strip_prefix("password=") {
            Some(pw(p))
        } else if let Some(p) = cred.strip_prefix("recovery=") {
            Some(rp(p))
        } else {
            cred.strip_prefix("BEK=").map(|p| bek(&dir.join(p)))
        };
        match vol.unlock(key.as_ref()) {
            Ok(u) => {
                let got = sha_prefix(&u, 32 * 1024);
                let mut head = [0u8; 16];
                u.read_exact_at(0, &mut head).unwrap();
                eprintln!(
                    "{image}: {} {:?} {}",
                    vol.info().encryption_method,
                    &head[3..11],
                    got == *want
                );
                if got != *want {
                    failures.push(format!("{image}: got {got}, want {want}"));
                }
            }
            Err(e) => failures.push(format!("{image}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// One cryptsetup bitlk image: every credential images.conf lists must open
/// it, and the whole decrypted volume must hash to the documented sha256.
fn bitlk(image: &str) {
    let Some((unpacked, corpus)) = flr_testdata::corpus(&format!("flr-bitlocker bitlk {image}"))
    else {
        return;
    };
    let dir = unpacked.join("bitlocker/cryptsetup-bitlk");
    let row = tsv(&corpus, "cryptsetup-bitlk.decrypted-sha256.tsv")
        .into_iter()
        .find(|r| r[0] == image)
        .unwrap();
    let (password, recovery, startup, want) = (&row[2], &row[3], &row[4], &row[5]);
    let vol = open(&dir.join(format!("{image}.img")));
    let info = vol.info();
    eprintln!("{image}: {info:?}");
    let mut keys: Vec<(String, Option<KeyMaterial>)> = Vec::new();
    if !password.is_empty() {
        keys.push(("password".into(), Some(pw(password))));
    }
    if !recovery.is_empty() {
        keys.push(("recovery password".into(), Some(rp(recovery))));
    }
    if !startup.is_empty() {
        keys.push(("startup key".into(), Some(bek(&dir.join(startup)))));
    }
    if keys.is_empty() {
        keys.push(("clear key".into(), None));
    }
    let mut first: Option<String> = None;
    for (what, key) in &keys {
        let u = vol
            .unlock(key.as_ref())
            .unwrap_or_else(|e| panic!("{image} with {what}: {e}"));
        // The whole volume once; the other credentials must give the same
        // FVEK, so the same first MiB.
        let got = match &first {
            None => {
                let h = sha_prefix(&u, u.len());
                if want != "-" {
                    assert_eq!(&h, want, "{image} with {what}: whole-volume sha256");
                }
                first = Some(sha_prefix(&u, 1 << 20));
                h
            }
            Some(f) => {
                let h = sha_prefix(&u, 1 << 20);
                assert_eq!(&h, f, "{image} with {what}: first MiB differs");
                h
            }
        };
        eprintln!("{image} with {what}: {got}");
    }
}

macro_rules! bitlk_tests {
    ($($name:ident => $image:literal),* $(,)?) => {
        $(#[test] fn $name() { bitlk($image); })*
    };
}

bitlk_tests! {
    bitlk_aes_cbc_128 => "bitlk-aes-cbc-128",
    bitlk_aes_cbc_256 => "bitlk-aes-cbc-256",
    bitlk_aes_cbc_elephant_128 => "bitlk-aes-cbc-elephant-128",
    bitlk_aes_xts_128_4k => "bitlk-aes-xts-128-4k",
    bitlk_aes_xts_128_clearkey_only => "bitlk-aes-xts-128-clearkey-only",
    bitlk_aes_xts_128_crc => "bitlk-aes-xts-128-crc",
    bitlk_aes_xts_128_eow => "bitlk-aes-xts-128-eow",
    bitlk_aes_xts_128_first_recovery => "bitlk-aes-xts-128-first-recovery",
    bitlk_aes_xts_128_new_entry => "bitlk-aes-xts-128-new-entry",
    bitlk_aes_xts_128_startup_key => "bitlk-aes-xts-128-startup-key",
    bitlk_aes_xts_128 => "bitlk-aes-xts-128",
    bitlk_partially_encrypted_aes_cbc_128 => "bitlk-partially-encrypted-aes-cbc-128",
    bitlk_togo_aes_cbc_128 => "bitlk-togo-aes-cbc-128",
}
