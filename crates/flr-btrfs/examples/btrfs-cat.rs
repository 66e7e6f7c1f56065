//! Reads files of a Btrfs image the way `flr cat` does (128 KiB reads into
//! a page-aligned buffer, bytes discarded) and prints the time and rate of
//! each: `btrfs-cat IMAGE /path [...]`. scripts/bench-btrfs runs it beside
//! a kernel loop mount.

use std::sync::Arc;
use std::time::Instant;

use flr_fs::{Filesystem, FsPath};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((img, paths)) = args.split_first() else {
        eprintln!("usage: btrfs-cat IMAGE /path [...]");
        std::process::exit(2);
    };
    let src: flr_io::Source = Arc::new(flr_io::FileSource::open(img)?);
    let fs = flr_btrfs::BtrfsFs::open(src)?.open_subvolume(flr_btrfs::TOP_LEVEL)?;
    let mut backing = vec![0u8; (128 << 10) + 4096];
    let skew = backing.as_ptr().align_offset(4096);
    let buf = &mut backing[skew..skew + (128 << 10)];
    for p in paths {
        let t = Instant::now();
        let mut h = fs.open(&FsPath::parse(p))?;
        let size = h.size();
        let mut off = 0u64;
        while off < size {
            let n = h.read_at(off, buf)?;
            if n == 0 {
                return Err(format!("{p}: short at {off}").into());
            }
            off += n as u64;
        }
        let s = t.elapsed().as_secs_f64();
        println!("{p}\t{off}\t{s:.3}\t{:.0}", off as f64 / s / 1e6);
    }
    Ok(())
}
