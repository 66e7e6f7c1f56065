//! AES-256-XTS decryption throughput with 4 KiB sectors, 1 GiB per
//! measurement: one thread on a cache-resident 64 KiB buffer (what
//! `openssl speed -evp aes-256-xts -bytes 4096` measures), and the read
//! path's split over all cores for 1 MiB requests. Prints the best of
//! `FLR_BENCH_ROUNDS` (default 3) measurements of each, in MB/s;
//! `scripts/bench-crypto` runs it beside OpenSSL.
//!
//! `cargo run --release -p flr-cipher --example xts_throughput [KERNEL]`
//! with KERNEL one of `vaes`, `aes-ni`, `portable` (default: the fastest).

use std::time::Instant;

use flr_cipher::{par_sectors, plain64, Xts};

const TOTAL: usize = 1 << 30;
const SS: usize = 4096;

fn best(rounds: usize, mut f: impl FnMut()) -> f64 {
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            f();
            TOTAL as f64 / t.elapsed().as_secs_f64() / 1e6
        })
        .fold(0.0, f64::max)
}

fn main() {
    let want = std::env::args().nth(1);
    let rounds = std::env::var("FLR_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let key: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37)).collect();
    let Some(xts) = Xts::all_kernels(&key)
        .into_iter()
        .find(|x| want.as_deref().is_none_or(|w| w == x.kernel()))
    else {
        eprintln!("kernel {want:?} is not available on this CPU");
        std::process::exit(2);
    };
    println!("kernel {}", xts.kernel());

    let mut small = vec![0x5au8; 64 << 10];
    let one = best(rounds, || {
        let mut sector = 0u64;
        for _ in 0..TOTAL / small.len() {
            xts.decrypt_sectors(&mut small, SS, |i| plain64(sector + i));
            sector += (small.len() / SS) as u64;
        }
    });
    println!("one_thread_mb_s {one:.0}");

    let mut big = vec![0x5au8; 1 << 20];
    let all = best(rounds, || {
        let mut sector = 0u64;
        for _ in 0..TOTAL / big.len() {
            par_sectors(&mut big, SS, |piece, first| {
                xts.decrypt_sectors(piece, SS, |i| plain64(sector + first + i))
            });
            sector += (big.len() / SS) as u64;
        }
    });
    println!(
        "all_cores_mb_s {all:.0} threads {}",
        rayon::current_num_threads()
    );
}
