//! Errors: hardware-only protectors, wrong keys, malformed keys, and
//! corrupted metadata (patched copies in memory) — errors, never panics.

use std::path::PathBuf;
use std::sync::Arc;

use flr_bitlocker::{parse_recovery_password, BdeError, BitLockerVolume, ProtectorKind};
use flr_io::{FileSource, MemSource, ReadAt, Source};
use flr_keys::{KeyMaterial, Secret};

fn pw(s: &str) -> KeyMaterial {
    KeyMaterial::Password(Secret::from_slice(s.as_bytes()))
}
fn rp(s: &str) -> KeyMaterial {
    KeyMaterial::RecoveryPassword(Secret::from_slice(s.as_bytes()))
}

fn image(test: &str, rel: &str) -> Option<PathBuf> {
    let (unpacked, _) = flr_testdata::corpus(test)?;
    Some(unpacked.join("bitlocker").join(rel))
}

fn mem(path: &PathBuf, len: usize) -> Vec<u8> {
    let src = FileSource::open(path).unwrap();
    let len = len.min(src.len() as usize);
    let mut v = vec![0u8; len];
    src.read_exact_at(0, &mut v).unwrap();
    v
}

fn open_mem(v: Vec<u8>) -> Result<BitLockerVolume, BdeError> {
    let src: Source = Arc::new(MemSource::new(v));
    BitLockerVolume::open(src)
}

/// An in-memory image with a few bytes patched (no copy of the whole image
/// per patch).
struct Patched {
    base: Source,
    patches: Vec<(u64, u8)>,
}

impl ReadAt for Patched {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), flr_io::IoError> {
        self.base.read_exact_at(offset, buf)?;
        for &(o, v) in &self.patches {
            if o >= offset && o < offset + buf.len() as u64 {
                buf[(o - offset) as usize] = v;
            }
        }
        Ok(())
    }
    fn len(&self) -> u64 {
        self.base.len()
    }
}

fn open_patched(base: &Source, patches: Vec<(u64, u8)>) -> Result<BitLockerVolume, BdeError> {
    BitLockerVolume::open(Arc::new(Patched {
        base: base.clone(),
        patches,
    }))
}

#[test]
fn recovery_password_blocks_are_checked() {
    let good = "284867-596541-514998-422114-660297-261613-215424-199408";
    assert!(parse_recovery_password(good.as_bytes()).is_ok());
    assert!(parse_recovery_password(good.replace('-', "").as_bytes()).is_ok());
    let e = parse_recovery_password(b"284867-596541-514999-422114-660297-261613-215424-199408")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("block 3") && e.contains("divisible by 11"),
        "{e}"
    );
    let e = parse_recovery_password(b"284867-596541-514998-422114-660297-261613-215424-720896")
        .unwrap_err()
        .to_string();
    assert!(e.contains("block 8") && e.contains("720896"), "{e}");
    assert!(parse_recovery_password(b"12345").is_err());
    assert!(parse_recovery_password("٢٨٤٨٦٧".as_bytes()).is_err());
}

#[test]
fn not_bitlocker() {
    let src: Source = Arc::new(MemSource::new(vec![0u8; 4096]));
    assert!(!flr_bitlocker::probe(&*src));
    let e = BitLockerVolume::open(src).unwrap_err();
    assert!(matches!(e, BdeError::NotBitLocker { .. }), "{e}");
    let src: Source = Arc::new(MemSource::new(vec![0u8; 100]));
    assert!(!flr_bitlocker::probe(&*src));
    assert!(BitLockerVolume::open(src).is_err());
}

#[test]
fn smart_card_cannot_unlock_offline() {
    let Some(p) = image(
        "flr-bitlocker smart card",
        "cryptsetup-bitlk/bitlk-aes-xts-128-smart-card.img",
    ) else {
        return;
    };
    let src: Source = Arc::new(FileSource::open(&p).unwrap());
    let vol = BitLockerVolume::open(src).unwrap();
    let kinds: Vec<ProtectorKind> = vol.info().protectors.iter().map(|p| p.kind).collect();
    assert!(kinds.contains(&ProtectorKind::SmartCard), "{kinds:?}");
    let e = vol.unlock(None).unwrap_err();
    let msg = e.to_string();
    match &e {
        BdeError::CannotUnlockOffline {
            protector, usable, ..
        } => {
            assert!(protector.contains("smart card"), "{msg}");
            assert_eq!(usable, &["recovery password".to_string()], "{msg}");
        }
        other => panic!("{other}"),
    }
    assert!(
        msg.contains("cannot unlock offline") && msg.contains("recovery password"),
        "{msg}"
    );
    // A password is not a protector of this volume either.
    let e = vol.unlock(Some(&pw("anaconda"))).unwrap_err();
    assert!(matches!(e, BdeError::CannotUnlockOffline { .. }), "{e}");
    // The recovery password opens it: the whole volume hashes as documented.
    let u = vol
        .unlock(Some(&rp(
            "538329-080597-399190-348700-323345-161062-279807-230978",
        )))
        .unwrap();
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut off = 0;
    while off < u.len() {
        let n = (u.len() - off).min(buf.len() as u64) as usize;
        u.read_exact_at(off, &mut buf[..n]).unwrap();
        sha2::Digest::update(&mut h, &buf[..n]);
        off += n as u64;
    }
    assert_eq!(
        hex::encode(sha2::Digest::finalize(h)),
        "007de1a342f49a15f97712f634aa1684e1d8c24e220652fc9796b22421413268"
    );
}

#[test]
fn wrong_password_and_recovery_password() {
    let Some(p) = image("flr-bitlocker wrong key", "dissect-fve/aes_128.bin") else {
        return;
    };
    let src: Source = Arc::new(FileSource::open(&p).unwrap());
    let vol = BitLockerVolume::open(src).unwrap();
    let e = vol.unlock(Some(&pw("password12!#"))).unwrap_err();
    assert!(matches!(e, BdeError::WrongKey { .. }), "{e}");
    assert!(e.to_string().contains("wrong key"), "{e}");
    let e = vol.unlock(None).unwrap_err();
    assert!(matches!(e, BdeError::NoSuchProtector { .. }), "{e}");
    assert!(e.to_string().contains("password"), "{e}");
    let e = vol
        .unlock(Some(&rp(
            "284867-596541-514998-422114-660297-261613-215424-199409",
        )))
        .unwrap_err();
    assert!(matches!(e, BdeError::InvalidKey { .. }), "{e}");
}

#[test]
fn wrong_startup_key_and_tpm() {
    let Some(p) = image(
        "flr-bitlocker startup key / tpm",
        "dissect-fve/suspended.bin",
    ) else {
        return;
    };
    let dir = p.parent().unwrap().to_path_buf();
    let data = mem(&p, usize::MAX);
    let vol = open_mem(data.clone()).unwrap();
    assert!(vol
        .info()
        .protectors
        .iter()
        .any(|p| p.kind == ProtectorKind::ClearKey));
    // A .BEK for another volume: its GUID matches no protector... unless the
    // clear key opens the volume anyway (suspended protection).
    let bek = std::fs::read(dir.join("startup_key.bek")).unwrap();
    assert!(vol
        .unlock(Some(&KeyMaterial::StartupKey(Secret::new(bek.clone()))))
        .is_ok());
    // Truncated or damaged .BEK files are errors.
    for cut in [0, 10, 47, 48, 60, 100, bek.len() - 1] {
        let src: Source = Arc::new(FileSource::open(dir.join("startup_key.bin")).unwrap());
        let v = BitLockerVolume::open(src).unwrap();
        let e = v
            .unlock(Some(&KeyMaterial::StartupKey(Secret::from_slice(
                &bek[..cut],
            ))))
            .unwrap_err();
        assert!(matches!(e, BdeError::InvalidKey { .. }), "cut {cut}: {e}");
    }
    // Turn the clear-key protector into a TPM one: now nothing opens offline.
    let guid = &vol.info().protectors[0].guid;
    let mut patched = data.clone();
    let gb = guid_bytes(guid);
    let pos = find(&patched, &gb).expect("VMK GUID in the metadata");
    patched[pos + 26..pos + 28].copy_from_slice(&0x0100u16.to_le_bytes());
    // Patch every copy.
    let mut at = pos + 1;
    while let Some(q) = find(&patched[at..], &gb) {
        patched[at + q + 26..at + q + 28].copy_from_slice(&0x0100u16.to_le_bytes());
        at += q + 1;
    }
    let vol = open_mem(patched).unwrap();
    let e = vol.unlock(None).unwrap_err();
    assert!(
        matches!(&e, BdeError::CannotUnlockOffline { protector, .. } if protector.contains("TPM")),
        "{e}"
    );
}

fn guid_bytes(g: &str) -> Vec<u8> {
    let h: String = g.chars().filter(|c| *c != '-').collect();
    let b = hex::decode(h).unwrap();
    let mut out = vec![b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6]];
    out.extend_from_slice(&b[8..16]);
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn corrupted_metadata_is_an_error_never_a_panic() {
    let Some(p) = image(
        "flr-bitlocker corrupt metadata",
        "dissect-fve/suspended.bin",
    ) else {
        return;
    };
    let data = mem(&p, usize::MAX);
    let vol = open_mem(data.clone()).unwrap();
    let offs = vol.info().metadata_offsets.clone();
    assert_eq!(vol.info().metadata_copy, 1);

    // First copy damaged: the second is used, with a warning.
    let mut d = data.clone();
    d[offs[0] as usize] ^= 0xff;
    let v = open_mem(d.clone()).unwrap();
    assert_eq!(v.info().metadata_copy, 2);
    assert!(!v.info().warnings.is_empty());
    assert!(v.unlock(None).is_ok());
    // All three damaged: an error naming an offset.
    let mut d = data.clone();
    for &o in &offs {
        d[o as usize] ^= 0xff;
    }
    let e = open_mem(d).unwrap_err();
    assert!(e.to_string().contains("offset"), "{e}");

    // Every byte of the first copy's headers and entries, patched to a few
    // hostile values in all three copies: open + unlock + read never panic.
    let base: Source = Arc::new(MemSource::new(data.clone()));
    let mut first = [0u8; 4];
    first.copy_from_slice(&data[offs[0] as usize + 64..offs[0] as usize + 68]);
    let meta_len = (u32::from_le_bytes(first) as usize + 64).min(4096);
    let mut opened = 0;
    for i in 0..meta_len as u64 {
        for val in [0x00u8, 0xff, 0x80, 0x01] {
            let patches = offs.iter().map(|&o| (o + i, val)).collect();
            if let Ok(v) = open_patched(&base, patches) {
                if let Ok(u) = v.unlock(None) {
                    opened += 1;
                    let mut b = vec![0u8; 8192];
                    let _ = u.read_exact_at(0, &mut b);
                    let _ = u.read_exact_at(u.len().saturating_sub(4096), &mut b[..4096]);
                }
            }
        }
    }
    assert!(opened > 0);
    // The boot sector's metadata offsets pointing anywhere.
    for val in [
        0u64,
        1,
        512,
        u64::MAX,
        u64::MAX - 511,
        data.len() as u64 - 512,
    ] {
        let patches = (0..3u64)
            .flat_map(|k| (0..8u64).map(move |j| (176 + 8 * k + j, val.to_le_bytes()[j as usize])))
            .collect();
        assert!(open_patched(&base, patches).is_err(), "{val:#x}");
    }
}
