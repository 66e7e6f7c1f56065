//! Opens an XFS image with and without log replay and prints what each
//! costs and sees: `cargo run --release -p flr-xfs --example replay_cost -- IMG [ROUNDS]`.

use std::sync::Arc;
use std::time::Instant;

use flr_fs::{FileKind, Filesystem, FsPath};
use flr_io::{FileSource, Source};
use flr_xfs::XfsFs;

fn count(fs: &dyn Filesystem) -> (usize, u64) {
    let (mut n, mut bytes) = (0, 0);
    let mut todo = vec![FsPath::root()];
    while let Some(d) = todo.pop() {
        let Ok(list) = fs.read_dir(&d) else { continue };
        for e in list {
            n += 1;
            bytes += e.meta.size;
            if e.meta.kind == FileKind::Dir {
                todo.push(d.join(&e.name));
            }
        }
    }
    (n, bytes)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: replay_cost IMG [ROUNDS]");
    let rounds: u32 = args.next().map_or(20, |r| r.parse().expect("rounds"));
    let src: Source = Arc::new(FileSource::open(&path).expect("open image"));
    for replay in [false, true] {
        let mut best = f64::MAX;
        let mut fs = None;
        for _ in 0..rounds {
            let t = Instant::now();
            let f = if replay {
                XfsFs::open(src.clone())
            } else {
                XfsFs::open_without_replay(src.clone())
            }
            .expect("open filesystem");
            best = best.min(t.elapsed().as_secs_f64());
            fs = Some(f);
        }
        let fs = fs.expect("at least one round");
        let (n, bytes) = count(&fs);
        println!(
            "{:<14} open {:>8.3} ms (best of {rounds})  {} paths, {} bytes listed  replayed {} KiB  {}",
            if replay { "with replay" } else { "without replay" },
            best * 1e3,
            n,
            bytes,
            fs.replayed_bytes() >> 10,
            fs.consistency().sentence()
        );
        if let Some(st) = fs.replay_stats() {
            println!("               {st:?}");
        }
    }
}
