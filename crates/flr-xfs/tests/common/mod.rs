//! Helpers the XFS test binaries share.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;

use flr_fs::{FileKind, Filesystem, FsPath};

pub fn read_all(fs: &dyn Filesystem, p: &FsPath) -> Vec<u8> {
    let mut f = fs.open(p).unwrap();
    let mut out = vec![0u8; usize::try_from(f.size()).unwrap()];
    let mut done = 0;
    while done < out.len() {
        let n = f.read_at(done as u64, &mut out[done..]).unwrap();
        assert!(n > 0, "{p}: short read");
        done += n;
    }
    out
}

/// Walks the whole tree: path -> (kind, size, sha256 of content or link target).
pub fn walk(fs: &dyn Filesystem) -> BTreeMap<String, (char, u64, String)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![FsPath::root()];
    while let Some(dir) = todo.pop() {
        for e in fs.read_dir(&dir).unwrap() {
            let p = dir.join(&e.name);
            let key = p.to_string()[1..].to_string();
            assert!(
                e.meta.unreadable.is_none(),
                "{key}: {:?}",
                e.meta.unreadable
            );
            match e.meta.kind {
                FileKind::Dir => {
                    out.insert(key, ('d', 0, String::new()));
                    todo.push(p);
                }
                FileKind::Symlink => {
                    let t = fs.read_link(&p).unwrap();
                    assert_eq!(t.len() as u64, e.meta.size);
                    out.insert(key, ('l', e.meta.size, flr_testdata::sha256_hex(&t)));
                }
                FileKind::File if e.meta.size > 1 << 30 => {
                    out.insert(key, ('f', e.meta.size, "big".into()));
                }
                FileKind::File => {
                    let data = read_all(fs, &p);
                    out.insert(key, ('f', e.meta.size, flr_testdata::sha256_hex(&data)));
                }
                FileKind::Special => panic!("{key}: unexpected special file"),
            }
        }
    }
    out
}

/// A xorshift step: the byte-flip tests' random numbers.
pub fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Walks a possibly damaged filesystem: errors are skipped, at most `max` entries, each file's
/// first 64 KiB and each link read; only a panic fails.
pub fn walk_hostile(fs: &dyn Filesystem, max: usize) {
    let _ = fs.consistency().sentence();
    let mut todo = vec![FsPath::root()];
    let mut n = 0;
    while let Some(d) = todo.pop() {
        let Ok(list) = fs.read_dir(&d) else { continue };
        for e in list {
            n += 1;
            if n > max {
                return;
            }
            let p = d.join(&e.name);
            match e.meta.kind {
                FileKind::Dir => todo.push(p),
                FileKind::Symlink => drop(fs.read_link(&p)),
                _ => {
                    if let Ok(mut f) = fs.open(&p) {
                        let mut buf = vec![0u8; 65536];
                        let _ = f.read_at(0, &mut buf);
                    }
                }
            }
        }
    }
}
