//! Manual throughput check (not a test): builds a fresh ext4 image holding
//! one 256 MiB file under /tmp, then reads that file through `Ext4Fs` with
//! 1 MiB `read_at` calls and compares the time with `cat` of the same bytes
//! (the source file, from the page cache).
//!
//! Run: `cargo run --release -p flr-ext4 --example ext4_throughput [-- DIR]`
//! (needs mkfs.ext4; DIR defaults to /tmp/flr-ext4-throughput).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flr_ext4::Ext4Fs;
use flr_fs::{Filesystem, FsPath};
use flr_io::FileSource;

const SIZE: usize = 256 << 20;

fn run(cmd: &mut Command) {
    let st = cmd.status().expect("spawn");
    assert!(st.success(), "{cmd:?} failed");
}

fn best(n: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..n).map(|_| f()).min().expect("n > 0")
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("/tmp/flr-ext4-throughput"), PathBuf::from);
    let src = dir.join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    let big = src.join("big.bin");
    if std::fs::metadata(&big).map(|m| m.len() as usize).ok() != Some(SIZE) {
        // Pseudo-random bytes (xorshift), so nothing is accidentally sparse.
        let mut v = vec![0u8; SIZE];
        let mut s = 0x2545_f491_4f6c_dd1du64;
        for c in v.chunks_exact_mut(8) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            c.copy_from_slice(&s.to_le_bytes());
        }
        std::fs::write(&big, &v).expect("write source");
    }
    let img = dir.join("fs.img");
    if !img.exists() {
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096", "-d"])
            .arg(&src)
            .arg(&img)
            .arg("400M"));
    }
    // Warm the page cache for both.
    run(Command::new("sh").arg("-c").arg(format!(
        "cat {} {} > /dev/null",
        big.display(),
        img.display()
    )));

    let fs =
        Ext4Fs::open(Arc::new(FileSource::open(&img).expect("open image"))).expect("open ext4");
    let path = FsPath::parse("/big.bin");
    // A page-aligned 1 MiB buffer, as cat uses. A plain `vec![0; 1 << 20]`
    // sits 16 bytes past a page boundary (malloc's mmap header), and on
    // some CPUs the kernel's copy into such a buffer from page-aligned file
    // data runs several times slower (4K aliasing); that is measured too.
    let mut backing = vec![0u8; (1 << 20) + 4096];
    let skew = (4096 - backing.as_ptr() as usize % 4096) % 4096;
    let timed = |buf: &mut [u8]| {
        best(15, || {
            let t = Instant::now();
            let mut h = fs.open(&path).expect("open file");
            let mut off = 0u64;
            loop {
                let n = h.read_at(off, buf).expect("read");
                if n == 0 {
                    break;
                }
                off += n as u64;
            }
            assert_eq!(off as usize, SIZE);
            t.elapsed()
        })
    };
    let flr = timed(&mut backing[skew..skew + (1 << 20)]);
    let mut plain = vec![0u8; 1 << 20];
    let flr_vec = timed(&mut plain);
    let mut buf = plain;
    let cat = best(15, || {
        let t = Instant::now();
        run(Command::new("sh")
            .arg("-c")
            .arg(format!("cat {} > /dev/null", big.display())));
        t.elapsed()
    });
    // Correctness, untimed.
    let want = std::fs::read(&big).expect("read source");
    let mut h = fs.open(&path).expect("open file");
    for (i, chunk) in want.chunks(1 << 20).enumerate() {
        let n = h.read_at((i << 20) as u64, &mut buf).expect("read");
        assert_eq!(&buf[..n], chunk, "content differs at MiB {i}");
    }
    let mbps = |d: Duration| SIZE as f64 / d.as_secs_f64() / 1e6;
    println!(
        "flr-ext4: {:.1} ms ({:.0} MB/s), page-aligned 1 MiB buffer",
        flr.as_secs_f64() * 1e3,
        mbps(flr)
    );
    println!(
        "flr-ext4: {:.1} ms ({:.0} MB/s), plain Vec buffer (address % 4096 = {})",
        flr_vec.as_secs_f64() * 1e3,
        mbps(flr_vec),
        buf.as_ptr() as usize % 4096
    );
    println!(
        "cat     : {:.1} ms ({:.0} MB/s)",
        cat.as_secs_f64() * 1e3,
        mbps(cat)
    );
    println!(
        "ratio flr/cat speed: {:.2} (aligned), {:.2} (plain Vec)",
        cat.as_secs_f64() / flr.as_secs_f64(),
        cat.as_secs_f64() / flr_vec.as_secs_f64()
    );
}
