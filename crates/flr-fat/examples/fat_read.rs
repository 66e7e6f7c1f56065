//! Manual throughput check: `cargo run --release -p flr-fat --example
//! fat_read -- IMAGE /path/in/volume` reads the file through the
//! `Filesystem` trait with 1 MiB reads and prints its sha256 and MB/s.

use std::sync::Arc;
use std::time::Instant;

use flr_fat::FatFs;
use flr_fs::{Filesystem, FsPath};
use flr_io::FileSource;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: fat_read IMAGE /path/in/volume");
        std::process::exit(2);
    }
    let src = Arc::new(FileSource::open(&args[1]).expect("open image"));
    let t0 = Instant::now();
    let fs = FatFs::open(src).expect("open FAT volume");
    let opened = t0.elapsed();
    let mut h = fs.open(&FsPath::parse(&args[2])).expect("open file");
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    let mut sum = 0u64;
    loop {
        let n = h.read_at(off, &mut buf).expect("read");
        if n == 0 {
            break;
        }
        sum = buf[..n]
            .iter()
            .fold(sum, |s, &b| s.wrapping_add(u64::from(b)));
        off += n as u64;
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{:?}: {} bytes, byte sum {sum}, mount {:?}, {:.0} MB/s",
        fs.info().fs_type,
        off,
        opened,
        off as f64 / secs / 1e6
    );
}
