//! Decryption throughput of `UnlockedBde` for AES-XTS-256 with 4 KiB
//! sectors, from an in-memory volume (no disk I/O): dissect.fve's
//! `aes-xts_256.bin` with its bytes-per-sector field set to 4096, read in
//! 4 MiB requests. Compare with `openssl speed -evp aes-256-xts -bytes 4096`.
//!
//! `cargo run --release -p flr-bitlocker --example bitlocker_throughput`

use std::sync::Arc;
use std::time::Instant;

use flr_bitlocker::{BitLockerVolume, EncryptionMethod};
use flr_io::{FileSource, MemSource, ReadAt, Source};
use flr_keys::{KeyMaterial, Secret};

fn main() {
    let Some((unpacked, _)) = flr_testdata::corpus("bitlocker_throughput") else {
        return;
    };
    let path = unpacked.join("bitlocker/dissect-fve/aes-xts_256.bin");
    let file = FileSource::open(&path).unwrap();
    let mut data = vec![0u8; file.len() as usize];
    file.read_exact_at(0, &mut data).unwrap();
    data[11..13].copy_from_slice(&4096u16.to_le_bytes());
    let src: Source = Arc::new(MemSource::new(data));
    let vol = BitLockerVolume::open(src).unwrap();
    assert_eq!(vol.info().encryption_method, EncryptionMethod::AesXts256);
    assert_eq!(vol.info().sector_size, 4096);
    let key = KeyMaterial::Password(Secret::from_slice(b"password12!@"));
    let u = vol.unlock(Some(&key)).unwrap();
    let span = 32u64 << 20; // encrypted data only (the metadata starts at 34 MiB)
    let mut buf = vec![0u8; 4 << 20];
    let rounds = 128;
    let t = Instant::now();
    for _ in 0..rounds {
        let mut off = 0;
        while off < span {
            u.read_exact_at(off, &mut buf).unwrap();
            off += buf.len() as u64;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let mb = (span * rounds) as f64 / 1e6;
    println!(
        "flr-bitlocker AES-XTS-256, 4 KiB sectors, 4 MiB reads from memory: {:.0} MB/s ({mb:.0} MB in {secs:.2} s)",
        mb / secs
    );
}
