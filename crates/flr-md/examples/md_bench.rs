//! Read speed of md arrays through flr-md against a plain file holding the
//! same bytes, in one run: a RAID0 of two members, a RAID5 of three
//! (left-symmetric), and that RAID5 with one member missing (every third
//! chunk rebuilt from the other two).
//!
//! ```text
//! cargo run --release -p flr-md --example md_bench [ARRAY_MIB] [READ_KIB]
//! ```
//!
//! The members and the plain file are written to a temporary folder (page
//! cache warm: each source is read once before it is timed, then the best
//! of three passes counts). Every array's bytes are checked against the
//! plain file before timing.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use flr_io::{FileSource, ReadAt, Source};

const CHUNK: u64 = 512 << 10;
const DATA_OFFSET: u64 = 1 << 20;

/// Deterministic, incompressible-looking content for array byte range.
fn fill(buf: &mut [u8], at: u64) {
    for (i, w) in buf.chunks_mut(8).enumerate() {
        let mut x = (at / 8 + i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 29;
        let b = x.to_le_bytes();
        w.copy_from_slice(&b[..w.len()]);
    }
}

/// A 1.2 superblock (4 KiB block at byte 4096 of the member).
fn superblock(level: i32, layout: u32, disks: u32, role: u32, size: u64, data: u64) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    let p32 = |b: &mut [u8], o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_le_bytes());
    let p64 = |b: &mut [u8], o: usize, v: u64| b[o..o + 8].copy_from_slice(&v.to_le_bytes());
    p32(&mut b, 0, 0xa92b_4efc);
    p32(&mut b, 4, 1);
    b[16..32].copy_from_slice(&[level as u8 + 1; 16]);
    b[32..37].copy_from_slice(b"bench");
    p32(&mut b, 72, level as u32);
    p32(&mut b, 76, layout);
    p64(&mut b, 80, size / 512);
    p32(&mut b, 88, (CHUNK / 512) as u32);
    p32(&mut b, 92, disks);
    p64(&mut b, 128, DATA_OFFSET / 512);
    p64(&mut b, 136, data / 512);
    p64(&mut b, 144, 8);
    p32(&mut b, 160, role);
    p64(&mut b, 208, u64::MAX);
    p32(&mut b, 220, disks);
    for r in 0..disks as usize {
        b[256 + 2 * r..258 + 2 * r].copy_from_slice(&(r as u16).to_le_bytes());
    }
    let n = 256 + 2 * disks as usize;
    let mut sum: u64 = 0;
    for w in b[..n - n % 4].chunks(4) {
        sum += u64::from(u32::from_le_bytes(w.try_into().unwrap()));
    }
    if n % 4 == 2 {
        sum += u64::from(u16::from_le_bytes([b[n - 2], b[n - 1]]));
    }
    p32(&mut b, 216, ((sum & 0xffff_ffff) + (sum >> 32)) as u32);
    b
}

fn write_members(dir: &Path, name: &str, level: i32, disks: u32, per: u64) -> Vec<Source> {
    let mut files: Vec<std::fs::File> = (0..disks)
        .map(|r| {
            let mut f = std::fs::File::create(dir.join(format!("{name}-{r}.img"))).unwrap();
            let mut head = vec![0u8; DATA_OFFSET as usize];
            let layout = if level == 5 { 2 } else { 0 };
            head[4096..8192].copy_from_slice(&superblock(level, layout, disks, r, per, per));
            f.write_all(&head).unwrap();
            f
        })
        .collect();
    let mut chunk = vec![0u8; CHUNK as usize];
    let rows = per / CHUNK;
    let d = if level == 5 { disks - 1 } else { disks } as u64;
    let mut parity = vec![0u8; CHUNK as usize];
    for s in 0..rows {
        parity.fill(0);
        let p = if level == 5 {
            (d - s % u64::from(disks)) as u32
        } else {
            u32::MAX
        };
        let mut out: Vec<Vec<u8>> = vec![Vec::new(); disks as usize];
        for k in 0..d {
            fill(&mut chunk, (s * d + k) * CHUNK);
            let m = if level == 5 {
                ((u64::from(p) + 1 + k) % u64::from(disks)) as usize
            } else {
                k as usize
            };
            if level == 5 {
                for (x, y) in parity.iter_mut().zip(&chunk) {
                    *x ^= *y;
                }
            }
            out[m] = chunk.clone();
        }
        if level == 5 {
            out[p as usize] = parity.clone();
        }
        for (f, c) in files.iter_mut().zip(&out) {
            f.write_all(c).unwrap();
        }
    }
    drop(files);
    (0..disks)
        .map(|r| Arc::new(FileSource::open(dir.join(format!("{name}-{r}.img"))).unwrap()) as Source)
        .collect()
}

fn open_array(members: &[Source], skip: Option<usize>) -> Source {
    let ms: Vec<flr_md::Member> = members
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != skip)
        .map(|(i, s)| flr_md::Member::read(s.clone(), &format!("m{i}")).unwrap())
        .collect();
    let a = flr_md::assemble(&ms).remove(0);
    a.open().unwrap()
}

fn pass(src: &dyn ReadAt, buf: &mut [u8]) -> f64 {
    let t = Instant::now();
    let mut at = 0;
    while at < src.len() {
        let n = (src.len() - at).min(buf.len() as u64) as usize;
        src.read_exact_at(at, &mut buf[..n]).unwrap();
        at += n as u64;
    }
    t.elapsed().as_secs_f64()
}

fn best(src: &dyn ReadAt, read: usize) -> f64 {
    let mut buf = vec![0u8; read];
    pass(src, &mut buf);
    (0..3).map(|_| pass(src, &mut buf)).fold(f64::MAX, f64::min)
}

fn same(a: &dyn ReadAt, b: &dyn ReadAt) -> bool {
    let mut x = vec![0u8; 4 << 20];
    let mut y = vec![0u8; 4 << 20];
    let mut at = 0;
    while at < a.len() {
        let n = (a.len() - at).min(x.len() as u64) as usize;
        a.read_exact_at(at, &mut x[..n]).unwrap();
        b.read_exact_at(at, &mut y[..n]).unwrap();
        if x[..n] != y[..n] {
            return false;
        }
        at += n as u64;
    }
    a.len() == b.len()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let read_kib: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(128);
    let size = mib << 20;
    let dir = std::env::temp_dir().join(format!("flr-md-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    {
        let mut f = std::fs::File::create(dir.join("plain.img")).unwrap();
        let mut b = vec![0u8; 4 << 20];
        let mut at = 0;
        while at < size {
            fill(&mut b, at);
            f.write_all(&b).unwrap();
            at += b.len() as u64;
        }
    }
    let plain: Source = Arc::new(FileSource::open(dir.join("plain.img")).unwrap());
    let r0 = write_members(&dir, "r0", 0, 2, size / 2);
    let r5 = write_members(&dir, "r5", 5, 3, size / 2);
    let cases: Vec<(&str, Source)> = vec![
        ("raid0 of 2", open_array(&r0, None)),
        ("raid5 of 3", open_array(&r5, None)),
        ("raid5 of 3, member 1 missing", open_array(&r5, Some(1))),
    ];
    for (name, a) in &cases {
        assert!(
            same(a.as_ref(), plain.as_ref()),
            "{name}: bytes differ from the plain file"
        );
    }
    let read = read_kib << 10;
    let base = best(plain.as_ref(), read);
    let mbps = |t: f64| size as f64 / t / 1e6;
    println!("{mib} MiB, {read_kib} KiB reads, best of 3, page cache warm");
    println!("{:<30} {:>9.0} MB/s", "plain file", mbps(base));
    for (name, a) in &cases {
        let t = best(a.as_ref(), read);
        println!("{name:<30} {:>9.0} MB/s  {:.2}x", mbps(t), base / t);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
