//! Lists an NTFS image recursively (kind, size, inode, path, notes):
//! `cargo run -p flr-ntfs --example ntfs_ls -- IMAGE`.

use std::sync::Arc;

use flr_fs::{FileKind, Filesystem, FsPath};
use flr_io::FileSource;
use flr_ntfs::NtfsFs;

fn main() {
    let img = std::env::args().nth(1).expect("usage: ls IMAGE");
    let fs = NtfsFs::open(Arc::new(FileSource::open(&img).expect("open"))).expect("ntfs");
    println!("{:?}", fs.info());
    let mut todo = vec![FsPath::root()];
    while let Some(d) = todo.pop() {
        match fs.read_dir(&d) {
            Ok(entries) => {
                for e in entries {
                    let p = d.join(&e.name);
                    let m = &e.meta;
                    let note = match m.kind {
                        FileKind::Symlink => format!(
                            "-> {:?}",
                            fs.read_link(&p)
                                .map(|t| String::from_utf8_lossy(&t).into_owned())
                        ),
                        _ => m.unreadable.clone().unwrap_or_default(),
                    };
                    println!("{:?}\t{}\t{:?}\t{}\t{}", m.kind, m.size, m.inode, p, note);
                    if m.kind == FileKind::Dir {
                        todo.push(p);
                    }
                }
            }
            Err(e) => println!("ERROR {d}: {e}"),
        }
    }
}
