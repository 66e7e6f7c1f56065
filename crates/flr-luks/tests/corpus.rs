//! The third-party corpus: dissect.fve's LUKS1/LUKS2 images and
//! cryptsetup's compatimage, with volume keys and payload digests recorded
//! by cryptsetup (see the corpus README).

use std::sync::Arc;

use flr_io::{FileSource, ReadAt, Source};
use flr_keys::{KeyMaterial, Secret};
use flr_luks::{LuksError, LuksVolume};

fn open(path: &std::path::Path) -> LuksVolume {
    let s: Source = Arc::new(FileSource::open(path).unwrap());
    LuksVolume::open(s.clone(), s).unwrap()
}

fn pass(p: &str) -> KeyMaterial {
    KeyMaterial::Passphrase(Secret::from_slice(p.as_bytes()))
}

#[test]
fn dissect_fve_luks_images_unlock_and_decrypt() {
    let Some((unpacked, corpus)) = flr_testdata::corpus("dissect_fve_luks") else {
        return;
    };
    let tsv = std::fs::read_to_string(corpus.join("expected/dissect-fve-luks.tsv")).unwrap();
    let mut n = 0;
    for line in tsv.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let c: Vec<&str> = line.split('\t').collect();
        let rel = c[0].replace("/unpacked/", "/");
        let path = unpacked.join("luks/dissect-fve").join(&rel);
        let vol = open(&path);
        let info = vol.info();
        assert_eq!(info.cipher, c[2], "{rel}");
        assert_eq!(info.key_bits.to_string(), c[3], "{rel}");
        assert_eq!(info.data_offset.to_string(), c[4], "{rel}");
        // The volume key: digest check and decryption.
        let vk = KeyMaterial::VolumeKey(Secret::new(hex::decode(c[5]).unwrap()));
        let u = vol.unlock(&vk).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let mut buf = vec![0u8; 2048];
        u.read_exact_at(0, &mut buf).unwrap();
        assert_eq!(flr_testdata::sha256_hex(&buf), c[6], "{rel}: payload");
        let mut wrong = hex::decode(c[5]).unwrap();
        wrong[0] ^= 1;
        assert!(matches!(
            vol.unlock(&KeyMaterial::VolumeKey(Secret::new(wrong))),
            Err(LuksError::WrongKey { .. })
        ));
        n += 1;
        let argon2 = info.keyslots.iter().any(|k| k.kdf.starts_with("argon2"));
        if argon2 && !heavy_kdf() {
            continue;
        }
        // The passphrase (millions of PBKDF2 rounds; 1 GiB Argon2id only in
        // release builds).
        let u = vol
            .unlock(&pass(c[1]))
            .unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(u.volume_key_matches(c[5]), "{rel}: volume key");
        let mut buf2 = vec![0u8; 2048];
        u.read_exact_at(0, &mut buf2).unwrap();
        assert_eq!(buf, buf2, "{rel}");
        assert!(
            matches!(
                vol.unlock(&pass("passwort")),
                Err(LuksError::WrongKey { .. })
            ),
            "{rel}"
        );
    }
    assert_eq!(n, 9);
}

/// The 1 GiB Argon2id keyslots take minutes in a debug build; they run in
/// `cargo test --release` or with FLR_HEAVY_KDF=1.
fn heavy_kdf() -> bool {
    let on = !cfg!(debug_assertions) || std::env::var_os("FLR_HEAVY_KDF").is_some();
    if !on {
        flr_testdata::loud(
            "SKIPPED passphrase unlock of a dissect.fve image with 1 GiB Argon2id keyslots: debug build; run with --release or FLR_HEAVY_KDF=1 (volume-key unlock was checked)",
        );
    }
    on
}

#[test]
fn cryptsetup_compatimage() {
    let Some((unpacked, _)) = flr_testdata::corpus("cryptsetup_compatimage") else {
        return;
    };
    let vol = open(&unpacked.join("luks/cryptsetup/compatimage.img"));
    assert_eq!(vol.info().version, 1);
    assert_eq!(vol.info().cipher, "aes-cbc-essiv:sha256");
    assert_eq!(vol.info().key_bits, 128);
    let u = vol.unlock(&pass("compatkey")).unwrap();
    assert!(u.volume_key_matches("e1a851c034ed7993b276608a45842b7b"));
    // The payload area of this image holds zero bytes on disk (never
    // written through dm-crypt), so only its readability is checked.
    let mut buf = vec![0u8; u.len() as usize];
    u.read_exact_at(0, &mut buf).unwrap();
    assert!(matches!(
        vol.unlock(&pass("compatkey\n")),
        Err(LuksError::WrongKey { .. })
    ));
}
