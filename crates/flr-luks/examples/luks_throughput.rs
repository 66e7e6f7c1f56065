//! AES-XTS decryption throughput of the sector cipher, one thread, on a
//! cache-resident buffer (as `openssl speed` measures) and on a 64 MiB one.
//! Compare with `openssl speed -evp aes-256-xts -bytes 4096`.
//!
//! Run: `cargo run --release -p flr-luks --example luks_throughput`

use std::time::Instant;

fn run(spec: &str, key: &[u8], buf: &mut [u8], ss: usize) -> f64 {
    flr_luks::bench::decrypt(spec, key, &mut buf[..ss], ss);
    let total = 1usize << 30;
    let rounds = total / buf.len();
    let t = Instant::now();
    for _ in 0..rounds {
        flr_luks::bench::decrypt(spec, key, buf, ss);
    }
    (buf.len() * rounds) as f64 / t.elapsed().as_secs_f64() / 1e6
}

fn main() {
    let key: Vec<u8> = (0..64u8).collect();
    let mut big = vec![0x5au8; 64 << 20];
    let mut small = vec![0x5au8; 64 << 10];
    for ss in [512usize, 4096] {
        println!(
            "aes-256-xts (512-bit key), {ss}-byte sectors, 1 thread: {:.0} MB/s (64 KiB buffer), {:.0} MB/s (64 MiB buffer)",
            run("aes-xts-plain64", &key, &mut small, ss),
            run("aes-xts-plain64", &key, &mut big, ss)
        );
    }
    println!(
        "aes-256-ecb, 1 thread: {:.0} MB/s (64 KiB buffer)",
        run("aes-ecb", &key[..32], &mut small, 4096)
    );
}
