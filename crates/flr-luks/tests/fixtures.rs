//! The committed fixtures (testdata/luks/gen.sh): LUKS1 written by
//! qemu-img, LUKS2 written by cryptsetup's offline reencryption. The
//! oracles are the sha256 of the plain image before encryption and the
//! volume keys cryptsetup dumped.

use std::sync::Arc;

use flr_io::{FileSource, MemSource, ReadAt, Source};
use flr_keys::{KeyMaterial, Secret};
use flr_luks::{probe, Limits, LuksError, LuksVolume};
use sha2::Digest;

fn tsv(name: &str) -> Vec<Vec<String>> {
    let p = flr_testdata::testdata_dir().join("luks").join(name);
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

fn file(rel: &str) -> Source {
    Arc::new(FileSource::open(flr_testdata::fixture(rel)).unwrap())
}

fn mem(rel: &str) -> Vec<u8> {
    std::fs::read(flr_testdata::fixture(rel)).unwrap()
}

fn pass_file(name: &str) -> Vec<u8> {
    std::fs::read(flr_testdata::testdata_dir().join("luks").join(name)).unwrap()
}

/// (name, header source, data source, passphrase bytes)
fn fixtures() -> Vec<(String, Source, Source, Vec<u8>)> {
    let mut v: Vec<(String, Source, Source, Vec<u8>)> = vec![
        (
            "luks1-qemu-xts".into(),
            file("luks/luks1-qemu-xts.img.zst"),
            file("luks/luks1-qemu-xts.img.zst"),
            pass_file("pass-luks1.bin"),
        ),
        (
            "luks2-argon2id-4k".into(),
            file("luks/luks2-argon2id-4k.img.zst"),
            file("luks/luks2-argon2id-4k.img.zst"),
            pass_file("pass-luks2.bin"),
        ),
        (
            "luks2-detached-pbkdf2".into(),
            file("luks/luks2-detached-pbkdf2.hdr.zst"),
            file("luks/luks2-detached-pbkdf2.img.zst"),
            pass_file("pass-ade.bin"),
        ),
    ];
    // LUKS1 cipher and hash variants written by qemu-img.
    for name in [
        "luks1-qemu-cbc-essiv",
        "luks1-qemu-cbc-plain64",
        "luks1-qemu-cbc-plain",
        "luks1-qemu-xts512",
    ] {
        let f = file(&format!("luks/{name}.img.zst"));
        v.push((name.into(), f.clone(), f, pass_file("pass-luks1.bin")));
    }
    v
}

/// LUKS1 headers written by `cryptsetup luksFormat` (no data: cryptsetup
/// cannot encrypt LUKS1 data without device-mapper): the volume key each
/// yields must be the one cryptsetup dumped, and the cipher spec as named.
#[test]
fn cryptsetup_luks1_headers_yield_cryptsetups_volume_keys() {
    let keys = tsv("volume-keys.tsv");
    for (name, cipher, bits, hash) in [
        ("luks1-hdr-xts512-sha512", "aes-xts-plain64", 512, "sha512"),
        (
            "luks1-hdr-cbc-essiv-sha1",
            "aes-cbc-essiv:sha256",
            256,
            "sha1",
        ),
    ] {
        let f = file(&format!("luks/{name}.img.zst"));
        let vol = LuksVolume::open(f.clone(), f).unwrap_or_else(|e| panic!("{name}: {e}"));
        let info = vol.info();
        assert_eq!(info.version, 1, "{name}");
        assert_eq!(info.cipher, cipher, "{name}");
        assert_eq!(info.key_bits, bits, "{name}");
        assert!(
            info.keyslots
                .iter()
                .any(|k| k.active && k.kdf.contains(hash)),
            "{name}: {:?}",
            info.keyslots
        );
        let u = vol
            .unlock(&KeyMaterial::Passphrase(Secret::new(pass_file(
                "pass-luks1.bin",
            ))))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let vk = &keys.iter().find(|r| r[0] == name).unwrap()[1];
        assert!(u.volume_key_matches(vk), "{name}");
    }
}

fn expected(name: &str) -> (u64, String, String) {
    let p = tsv("payload.tsv");
    let row = p.iter().find(|r| r[0] == name).unwrap();
    let v = tsv("volume-keys.tsv");
    let vk = v.iter().find(|r| r[0] == name).unwrap();
    (row[1].parse().unwrap(), row[2].clone(), vk[1].clone())
}

fn payload_sha(u: &dyn ReadAt, len: u64) -> String {
    let mut buf = vec![0u8; len as usize];
    u.read_exact_at(0, &mut buf).unwrap();
    hex::encode(sha2::Sha256::digest(&buf))
}

#[test]
fn passphrase_files_are_exact_bytes() {
    assert_eq!(pass_file("pass-ade.bin").len(), 172);
    assert_eq!(pass_file("pass-luks2.bin").last(), Some(&b'\n'));
}

#[test]
fn fixtures_decrypt_to_the_plain_image() {
    for (name, hdr, data, pass) in fixtures() {
        assert!(probe(&*hdr), "{name}");
        let (len, sha, vk) = expected(&name);
        let vol = LuksVolume::open(hdr, data).unwrap_or_else(|e| panic!("{name}: {e}"));
        let info = vol.info();
        assert!(info.warnings.is_empty(), "{name}: {:?}", info.warnings);
        let u = vol
            .unlock(&KeyMaterial::Passphrase(Secret::new(pass.clone())))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(u.volume_key_matches(&vk), "{name}: volume key");
        assert!(u.len() >= len, "{name}");
        assert_eq!(payload_sha(&u, len), sha, "{name}: payload");
        // Unaligned reads agree with the aligned whole.
        let mut whole = vec![0u8; len as usize];
        u.read_exact_at(0, &mut whole).unwrap();
        for (off, n) in [
            (1u64, 10usize),
            (511, 2),
            (4095, 4099),
            (100, 40_000),
            (7, 1),
        ] {
            let mut b = vec![0u8; n];
            u.read_exact_at(off, &mut b).unwrap();
            assert_eq!(
                b[..],
                whole[off as usize..off as usize + n],
                "{name} {off}+{n}"
            );
        }
        assert!(u.read_exact_at(u.len() - 1, &mut [0u8; 2]).is_err());
        // The ext4 superblock magic.
        assert_eq!(&whole[1024 + 56..1024 + 58], &[0x53, 0xef], "{name}");
        // The volume key opens it too.
        let u2 = vol
            .unlock(&KeyMaterial::VolumeKey(Secret::new(
                hex::decode(&vk).unwrap(),
            )))
            .unwrap();
        assert_eq!(payload_sha(&u2, len), sha, "{name}: payload via volume key");
        // Wrong passphrases: another one, and the right one without its last byte.
        for bad in [b"wrong".to_vec(), pass[..pass.len() - 1].to_vec()] {
            assert!(
                matches!(
                    vol.unlock(&KeyMaterial::Passphrase(Secret::new(bad))),
                    Err(LuksError::WrongKey { .. })
                ),
                "{name}"
            );
        }
        let debug = format!("{u:?} {vol:?}");
        assert!(!debug.contains(&vk[..16]), "{name}: key in Debug output");
    }
}

#[test]
fn info_describes_the_headers() {
    let fx = fixtures();
    let v1 = LuksVolume::open(fx[0].1.clone(), fx[0].2.clone()).unwrap();
    let i = v1.info();
    assert_eq!(
        (i.version, i.cipher.as_str(), i.key_bits, i.sector_size),
        (1, "aes-xts-plain64", 256, 512)
    );
    assert!(i.keyslots[0].active && !i.keyslots[1].active);
    let v2 = LuksVolume::open(fx[1].1.clone(), fx[1].2.clone()).unwrap();
    let i = v2.info();
    assert_eq!(
        (i.version, i.cipher.as_str(), i.key_bits, i.sector_size),
        (2, "aes-xts-plain64", 256, 4096)
    );
    assert_eq!(i.label, "flr-fixture");
    assert_eq!(i.keyslots[0].kdf, "argon2id");
    assert_eq!(i.segments[0].size, None);
    let v3 = LuksVolume::open(fx[2].1.clone(), fx[2].2.clone()).unwrap();
    let i = v3.info();
    assert_eq!(
        (i.cipher.as_str(), i.key_bits, i.data_offset),
        ("aes-cbc-essiv:sha256", 128, 0)
    );
    assert_eq!(i.keyslots[0].kdf, "pbkdf2-sha256");
}

#[test]
fn argon2_memory_above_the_limit_is_refused() {
    let fx = fixtures();
    let limits = Limits {
        argon2_max_kib: 32,
        ..Limits::default()
    };
    let v = LuksVolume::open_with(fx[1].1.clone(), fx[1].2.clone(), limits).unwrap();
    let e = v
        .unlock(&KeyMaterial::Passphrase(Secret::new(fx[1].3.clone())))
        .unwrap_err();
    assert!(matches!(e, LuksError::Limit { .. }), "{e}");
    assert!(e.to_string().contains("64 KiB"), "{e}");
}

#[test]
fn kdf_work_above_the_limits_is_refused_before_it_starts() {
    // A hostile header can ask for 2^32 PBKDF2 iterations or Argon2 passes:
    // hours of work. Lowering the limits below the fixtures' costs shows
    // the check comes before the work (these return at once).
    let fx = fixtures();
    for (k, what) in [(0usize, "PBKDF2 iterations"), (2, "PBKDF2 iterations")] {
        let limits = Limits {
            pbkdf2_max_iterations: 10,
            ..Limits::default()
        };
        let v = LuksVolume::open_with(fx[k].1.clone(), fx[k].2.clone(), limits).unwrap();
        let e = v
            .unlock(&KeyMaterial::Passphrase(Secret::new(fx[k].3.clone())))
            .unwrap_err();
        assert!(matches!(e, LuksError::Limit { .. }), "{}: {e}", fx[k].0);
        assert!(e.to_string().contains(what), "{e}");
    }
    let limits = Limits {
        argon2_max_work: 64,
        ..Limits::default()
    };
    let v = LuksVolume::open_with(fx[1].1.clone(), fx[1].2.clone(), limits).unwrap();
    let e = v
        .unlock(&KeyMaterial::Passphrase(Secret::new(fx[1].3.clone())))
        .unwrap_err();
    assert!(e.to_string().contains("Argon2 work"), "{e}");
    // The defaults open them.
    let v = LuksVolume::open(fx[1].1.clone(), fx[1].2.clone()).unwrap();
    v.unlock(&KeyMaterial::Passphrase(Secret::new(fx[1].3.clone())))
        .unwrap();
}

fn luks2_with(bytes: Vec<u8>) -> Result<LuksVolume, LuksError> {
    let s: Source = Arc::new(MemSource::new(bytes));
    LuksVolume::open(s.clone(), s)
}

/// Rewrites the checksum of the header copy at `at` (sha256 over the
/// header with the checksum zeroed).
fn fix_csum(img: &mut [u8], at: usize) {
    let size = u64::from_be_bytes(img[at + 8..at + 16].try_into().unwrap()) as usize;
    img[at + 448..at + 512].fill(0);
    let d = sha2::Sha256::digest(&img[at..at + size]);
    img[at + 448..at + 480].copy_from_slice(&d);
}

#[test]
fn damaged_primary_header_falls_back_to_the_secondary() {
    let orig = mem("luks/luks2-argon2id-4k.img.zst");
    let mut img = orig.clone();
    img[4096 + 10] ^= 0x55; // inside the primary JSON
    let v = luks2_with(img.clone()).unwrap();
    assert!(
        v.info()
            .warnings
            .iter()
            .any(|w| w.contains("primary") && w.contains("secondary")),
        "{:?}",
        v.info().warnings
    );
    let (len, sha, _) = expected("luks2-argon2id-4k");
    let u = v
        .unlock(&KeyMaterial::Passphrase(Secret::new(pass_file(
            "pass-luks2.bin",
        ))))
        .unwrap();
    assert_eq!(payload_sha(&u, len), sha);
    // Both copies damaged: an error, naming the header.
    img[16384 + 4096 + 10] ^= 0x55;
    assert!(matches!(
        luks2_with(img).unwrap_err(),
        LuksError::Corrupt { .. }
    ));
    // The magic gone from the primary: still found through the secondary.
    let mut img = orig.clone();
    img[..6].fill(0);
    assert!(probe(&MemSource::new(img.clone())));
    assert!(!luks2_with(img).unwrap().info().warnings.is_empty());
}

#[test]
fn corrupt_json_and_absurd_sizes_are_errors() {
    let orig = mem("luks/luks2-argon2id-4k.img.zst");
    let json_end = |img: &[u8]| 4096 + img[4096..16384].iter().position(|&c| c == 0).unwrap();
    let edit = |f: &dyn Fn(&str) -> String| -> Result<LuksVolume, LuksError> {
        let mut img = orig.clone();
        let end = json_end(&img);
        let text = String::from_utf8(img[4096..end].to_vec()).unwrap();
        let new = f(&text);
        assert!(new.len() <= 12288);
        img[4096..16384].fill(0);
        img[4096..4096 + new.len()].copy_from_slice(new.as_bytes());
        fix_csum(&mut img, 0);
        // Break the secondary so the edited primary is used.
        img[16384..16390].fill(0);
        luks2_with(img)
    };
    // Unchanged, it opens.
    assert!(edit(&|t| t.to_string()).is_ok());
    type Edit = Box<dyn Fn(&str) -> String>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "truncated JSON",
            Box::new(|t: &str| t[..t.len() / 2].to_string()),
        ),
        ("not an object", Box::new(|_: &str| "[1,2]".to_string())),
        (
            "huge area",
            Box::new(|t: &str| {
                t.replacen(
                    "\"offset\":\"32768\"",
                    "\"offset\":\"18446744073709551615\"",
                    1,
                )
            }),
        ),
        (
            "huge segment offset",
            Box::new(|t: &str| {
                t.replacen(
                    "\"offset\":\"180224\"",
                    "\"offset\":\"18446744073709550592\"",
                    1,
                )
            }),
        ),
        (
            "odd sector size",
            Box::new(|t: &str| t.replace("\"sector_size\":4096", "\"sector_size\":3000")),
        ),
        (
            "unknown cipher",
            Box::new(|t: &str| t.replace("aes-xts-plain64", "serpent-xts-plain64")),
        ),
        (
            "no segments",
            Box::new(|t: &str| t.replace("\"segments\"", "\"segmentz\"")),
        ),
    ];
    for (what, f) in cases {
        let r = edit(&*f);
        let unlock = r.and_then(|v| {
            v.unlock(&KeyMaterial::Passphrase(Secret::new(pass_file(
                "pass-luks2.bin",
            ))))
            .map(|_| ())
        });
        match unlock {
            Err(LuksError::Corrupt { .. } | LuksError::Unsupported { .. }) => {}
            other => panic!("{what}: {other:?}"),
        }
    }
    // An unfinished reencryption: a second (linear) segment.
    let e = edit(&|t: &str| {
        t.replacen(
            "\"segments\":{",
            "\"segments\":{\"1\":{\"type\":\"linear\",\"offset\":\"0\",\"size\":\"dynamic\"},",
            1,
        )
    })
    .unwrap_err();
    assert!(matches!(e, LuksError::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("reencryption"), "{e}");
    // An Azure Disk Encryption token is named and flagged.
    let v = edit(&|t: &str| {
        t.replacen(
            "\"tokens\":{}",
            "\"tokens\":{\"0\":{\"type\":\"Azure_Disk_Encryption\",\"keyslots\":[\"0\"]}}",
            1,
        )
    })
    .unwrap();
    let tok = &v.info().tokens[0];
    assert_eq!(tok.type_name, "Azure_Disk_Encryption");
    assert!(tok.needs_attested_key_release);
    assert_eq!(tok.keyslots, vec![0]);
    // An absurd header size in the binary header.
    let mut img = orig.clone();
    img[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
    img[16384..16390].fill(0);
    assert!(luks2_with(img).is_err());
}

#[test]
fn random_damage_never_panics() {
    for (rel, n) in [
        ("luks/luks1-qemu-xts.img.zst", 600usize),
        ("luks/luks2-argon2id-4k.img.zst", 32768),
    ] {
        let orig = mem(rel);
        let mut seed = 0x1234_5678_u64;
        for _ in 0..300 {
            let mut img = orig[..].to_vec();
            for _ in 0..4 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let at = (seed >> 33) as usize % n;
                img[at] = (seed >> 13) as u8;
            }
            if let Ok(v) = luks2_with(img) {
                let _ = v.info();
            }
        }
    }
}

#[test]
fn not_luks() {
    assert!(!probe(&MemSource::new(vec![0; 8192])));
    assert!(matches!(
        luks2_with(vec![0; 8192]).unwrap_err(),
        LuksError::NotLuks { .. }
    ));
}

/// The ADE data-disk layout (testdata/luks/gen-ade.sh): LUKS2 in place at
/// the first GPT partition (1 MiB in), data offset 16 MiB; the volume key
/// must be the one cryptsetup dumped, and the payload exactly the 256 KiB
/// filesystem.
#[test]
fn ade_data_disk_volume_key_and_offset() {
    let disk = file("luks/ade-data.img.zst");
    let part: Source =
        Arc::new(flr_io::Slice::new(disk, 1 << 20, (16 << 20) + (256 << 10), "p1").unwrap());
    let vol = LuksVolume::open(part.clone(), part).unwrap();
    assert_eq!(vol.info().version, 2);
    let key = KeyMaterial::Passphrase(Secret::from_slice(&pass_file("pass-ade.bin")));
    let u = vol.unlock(&key).unwrap();
    let keys = tsv("ade-volume-keys.tsv");
    let vk = &keys.iter().find(|r| r[0] == "ade-data").unwrap()[1];
    assert!(u.volume_key_matches(vk));
    assert_eq!(u.len(), 256 << 10);
    assert_eq!(u.key_bits(), 512);
}
