//! Shared test helpers: open images and walk them through the
//! `Filesystem` trait.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use flr_fs::{FileKind, Filesystem, FsPath, Metadata};
use flr_io::FileSource;
use flr_ntfs::NtfsFs;

pub fn open_path(p: &Path) -> NtfsFs {
    NtfsFs::open(Arc::new(FileSource::open(p).expect("open image"))).expect("open ntfs")
}

pub fn open_fixture() -> NtfsFs {
    open_path(&flr_testdata::fixture("ntfs/ntfs.img.zst"))
}

#[derive(Debug, Clone)]
pub struct Found {
    pub kind: char,
    pub size: u64,
    pub sha256: String,
    pub meta: Metadata,
}

pub fn read_all(fs: &dyn Filesystem, path: &FsPath) -> Vec<u8> {
    let mut h = fs.open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    let size = h.size();
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = h
            .read_at(out.len() as u64, &mut buf)
            .unwrap_or_else(|e| panic!("read {path}: {e}"));
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(out.len() as u64, size, "{path}: short read");
    out
}

pub fn walk(fs: &dyn Filesystem) -> BTreeMap<String, Found> {
    let mut out = BTreeMap::new();
    let mut todo = vec![FsPath::root()];
    while let Some(dir) = todo.pop() {
        for e in fs
            .read_dir(&dir)
            .unwrap_or_else(|e| panic!("read_dir {dir}: {e}"))
        {
            let p = dir.join(&e.name);
            let key = p.to_string()[1..].to_string();
            let (kind, sha256) = match e.meta.kind {
                FileKind::Dir => {
                    todo.push(p.clone());
                    ('d', String::new())
                }
                FileKind::File if e.meta.unreadable.is_none() => {
                    ('f', flr_testdata::sha256_hex(&read_all(fs, &p)))
                }
                FileKind::File => ('f', String::new()),
                FileKind::Symlink => (
                    'l',
                    flr_testdata::sha256_hex(&fs.read_link(&p).expect("read_link")),
                ),
                FileKind::Special => ('p', String::new()),
            };
            assert!(
                out.insert(
                    key.clone(),
                    Found {
                        kind,
                        size: e.meta.size,
                        sha256,
                        meta: e.meta
                    }
                )
                .is_none(),
                "{key} listed twice"
            );
        }
    }
    out
}
