//! Helpers shared by the flr-fat integration tests.

#![allow(dead_code)]

use std::collections::BTreeMap;

use flr_fs::{FileKind, Filesystem, FsPath};

/// Every object under `/`, by path without a leading slash: (kind, size).
pub(crate) fn walk(fs: &dyn Filesystem) -> BTreeMap<String, (FileKind, u64)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![FsPath::root()];
    while let Some(dir) = todo.pop() {
        for e in fs.read_dir(&dir).unwrap() {
            let p = dir.join(&e.name);
            let key = p.to_string().trim_start_matches('/').to_string();
            assert!(
                out.insert(key.clone(), (e.meta.kind, e.meta.size))
                    .is_none(),
                "{key} listed twice"
            );
            if e.meta.kind == FileKind::Dir {
                todo.push(p);
            }
        }
    }
    out
}

/// Reads a whole file through the trait with a buffer of `chunk` bytes,
/// checking that every read returns something until the end.
pub(crate) fn read_all(fs: &dyn Filesystem, path: &str, chunk: usize) -> Vec<u8> {
    let mut h = fs.open(&FsPath::parse(path)).unwrap();
    let size = h.size();
    let mut out = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        let n = h.read_at(out.len() as u64, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(out.len() as u64, size, "{path}");
    out
}

/// `<kind>\t<path>\t<size>\t<sha256>` lines of an `expected/*.files.tsv`
/// (columns path, size, sha256, inode, cross-check) as (path, size, sha).
pub(crate) fn corpus_tsv(text: &str) -> Vec<(String, u64, String)> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            (c[0].to_string(), c[1].parse().unwrap(), c[2].to_string())
        })
        .collect()
}
