//! Manual throughput check (not a test): builds two fresh NTFS images under
//! /tmp holding the same 256 MiB file, one contiguous (ntfscp) and one in
//! 1024 fragments written backwards through an ntfs-3g mount (with an
//! attribute list), reads the file through `NtfsFs` with 1 MiB `read_at`
//! calls and compares the time with `cat` of the same bytes (the source
//! file, from the page cache).
//!
//! Run as root: `cargo run --release -p flr-ntfs --example ntfs_throughput [-- DIR]`
//! (needs mkntfs, ntfscp, ntfs-3g; DIR defaults to /tmp/flr-ntfs-throughput).

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flr_fs::{Filesystem, FsPath};
use flr_io::FileSource;
use flr_ntfs::NtfsFs;

const SIZE: usize = 256 << 20;
const CHUNK: usize = 256 << 10;

fn run(cmd: &mut Command) {
    let st = cmd.status().expect("spawn");
    assert!(st.success(), "{cmd:?} failed");
}

fn best(n: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..n).map(|_| f()).min().expect("n > 0")
}

fn format(img: &Path) {
    let f = std::fs::File::create(img).expect("create image");
    f.set_len(400 << 20).expect("size image");
    run(Command::new("mkntfs").args(["-F", "-Q", "-q"]).arg(img));
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("/tmp/flr-ntfs-throughput"), PathBuf::from);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let big = dir.join("big.bin");
    if std::fs::metadata(&big).map(|m| m.len() as usize).ok() != Some(SIZE) {
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
    let want = std::fs::read(&big).expect("read source");
    let contiguous = dir.join("contiguous.img");
    if !contiguous.exists() {
        format(&contiguous);
        run(Command::new("ntfscp")
            .arg("-q")
            .arg(&contiguous)
            .arg(&big)
            .arg("/big.bin"));
    }
    let fragmented = dir.join("fragmented.img");
    if !fragmented.exists() {
        format(&fragmented);
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).expect("mkdir mnt");
        run(Command::new("ntfs-3g").arg(&fragmented).arg(&mnt));
        {
            let mut f = std::fs::File::create(mnt.join("big.bin")).expect("create on ntfs-3g");
            f.set_len(SIZE as u64).expect("size");
            for (i, chunk) in want.chunks(CHUNK).enumerate().rev() {
                f.seek(SeekFrom::Start((i * CHUNK) as u64)).expect("seek");
                f.write_all(chunk).expect("write");
            }
        }
        run(Command::new("umount").arg(&mnt));
    }
    run(Command::new("sh").arg("-c").arg(format!(
        "cat {} {} {} > /dev/null",
        big.display(),
        contiguous.display(),
        fragmented.display()
    )));
    let cat = best(15, || {
        let t = Instant::now();
        run(Command::new("sh")
            .arg("-c")
            .arg(format!("cat {} > /dev/null", big.display())));
        t.elapsed()
    });
    let mbps = |d: Duration| SIZE as f64 / d.as_secs_f64() / 1e6;
    println!(
        "cat                 : {:.1} ms ({:.0} MB/s)",
        cat.as_secs_f64() * 1e3,
        mbps(cat)
    );
    for (name, img) in [("contiguous", &contiguous), ("fragmented", &fragmented)] {
        let fs =
            NtfsFs::open(Arc::new(FileSource::open(img).expect("open image"))).expect("open ntfs");
        let path = FsPath::parse("/big.bin");
        // Page-aligned like cat's buffer; see flr-ext4's example for why a
        // plain Vec (16 bytes past a page boundary) is measured separately.
        let mut backing = vec![0u8; (1 << 20) + 4096];
        let skew = (4096 - backing.as_ptr() as usize % 4096) % 4096;
        let mut plain = vec![0u8; 1 << 20];
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
        let aligned = timed(&mut backing[skew..skew + (1 << 20)]);
        let vec_t = timed(&mut plain);
        let mut h = fs.open(&path).expect("open file");
        for (i, chunk) in want.chunks(1 << 20).enumerate() {
            let n = h.read_at((i << 20) as u64, &mut plain).expect("read");
            assert_eq!(&plain[..n], chunk, "{name}: content differs at MiB {i}");
        }
        println!(
            "flr-ntfs {name}: {:.1} ms ({:.0} MB/s) aligned, ratio {:.2}; {:.1} ms plain Vec, ratio {:.2}",
            aligned.as_secs_f64() * 1e3,
            mbps(aligned),
            cat.as_secs_f64() / aligned.as_secs_f64(),
            vec_t.as_secs_f64() * 1e3,
            cat.as_secs_f64() / vec_t.as_secs_f64()
        );
    }
}
