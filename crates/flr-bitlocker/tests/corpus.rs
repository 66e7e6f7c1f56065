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
