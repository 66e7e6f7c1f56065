//! AES-XTS decryption throughput of the sector cipher, one thread, on a
//! cache-resident buffer (as `openssl speed` measures) and on a 64 MiB one.
//! Compare with `openssl speed -evp aes-256-xts -bytes 4096`.
//!
//! Run: `cargo run --release -p flr-luks --example luks_throughput`

use std::time::Instant;

type Decrypt = fn(&str, &[u8], &mut [u8], usize);

fn run(spec: &str, key: &[u8], buf: &mut [u8], ss: usize) -> f64 {
    run_with(flr_luks::bench::decrypt, spec, key, buf, ss)
}

fn run_with(f: Decrypt, spec: &str, key: &[u8], buf: &mut [u8], ss: usize) -> f64 {
    f(spec, key, &mut buf[..ss], ss);
    let total = 1usize << 30;
    let rounds = total / buf.len();
    let t = Instant::now();
    for _ in 0..rounds {
        f(spec, key, buf, ss);
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
    let mut mid = vec![0x5au8; 2 << 20];
    println!(
        "aes-256-xts, 4096-byte sectors, 2 MiB reads on all cores: {:.0} MB/s",
        run_with(
            flr_luks::bench::decrypt_parallel,
            "aes-xts-plain64",
            &key,
            &mut mid,
            4096
        )
    );
    println!(
        "aes-256-ecb, 1 thread: {:.0} MB/s (64 KiB buffer)",
        run("aes-ecb", &key[..32], &mut small, 4096)
    );
}
