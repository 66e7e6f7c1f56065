//! `Filesystem::extents` against debugfs (e2fsprogs), which reads the
//! same images on its own: for every object of the fixtures, the blocks
//! flr names (data, extent-tree or indirect blocks) are exactly the ones
//! `debugfs -R "blocks PATH"` lists, and the inode lies where
//! `debugfs -R "imap PATH"` puts it.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use flr_fs::{FileKind, Filesystem, FsPath};

fn debugfs(img: &std::path::Path, req: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(req)
        .arg(img)
        .output()
        .expect("run debugfs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every path of the filesystem (the root included).
fn paths(fs: &dyn Filesystem) -> Vec<(FsPath, FileKind)> {
    let mut out = vec![(FsPath::root(), FileKind::Dir)];
    let mut stack = vec![FsPath::root()];
    while let Some(d) = stack.pop() {
        for e in fs.read_dir(&d).unwrap() {
            let p = d.join(&e.name);
            if e.meta.kind == FileKind::Dir {
                stack.push(p.clone());
            }
            out.push((p, e.meta.kind));
        }
    }
    out
}

#[test]
fn extents_match_debugfs() {
    if !flr_testdata::have_tool("debugfs") {
        flr_testdata::loud("SKIPPED extents_match_debugfs: debugfs (e2fsprogs) not installed");
        return;
    }
    for name in ["ext4", "ext3", "ext2"] {
        let img = flr_testdata::fixture(&format!("ext4/{name}.img.zst"));
        let fs = common::open_path(&img);
        let bs = u64::from(fs.info().block_size);
        let mut checked = 0;
        for (path, kind) in paths(&fs) {
            // debugfs takes names as given; skip the ones a shell argument
            // would mangle (spaces, quotes, control bytes).
            let shown = path.to_string();
            if path
                .0
                .iter()
                .flatten()
                .any(|&b| b <= b' ' || b == b'"' || b >= 0x80)
            {
                continue;
            }
            let x = fs.extents(&path).unwrap().expect("ext4 answers");
            // The inode.
            let imap = debugfs(&img, &format!("imap \"{shown}\""));
            let (blk, off) = imap
                .split_once("located at block ")
                .and_then(|(_, r)| r.split_once(", offset 0x"))
                .unwrap_or_else(|| panic!("{name}:{shown}: imap said {imap:?}"));
            let blk: u64 = blk.trim().parse().unwrap();
            let off = u64::from_str_radix(off.trim(), 16).unwrap();
            assert_eq!(x.meta[0].0, blk * bs + off, "{name}:{shown}: inode offset");
            // Every block but the inode's and the xattr block.
            let mut mine = BTreeSet::new();
            for &(o, l) in x.data.iter().chain(&x.meta[1..]) {
                for b in o / bs..(o + l) / bs {
                    mine.insert(b);
                }
            }
            let acl = debugfs(&img, &format!("stat \"{shown}\""));
            if let Some(f) = acl.split("File ACL: ").nth(1) {
                let f: u64 = f.split_whitespace().next().unwrap().parse().unwrap();
                mine.remove(&f);
            }
            // debugfs reads a fast symlink's target as block numbers.
            let ex = debugfs(&img, &format!("ex \"{shown}\""));
            let theirs: BTreeSet<u64> =
                if kind == FileKind::Special || acl.contains("Fast link dest:") {
                    BTreeSet::new()
                } else if ex.contains("Level Entries") {
                    // Extent tree: index nodes, and initialised leaf extents
                    // within the file's size (unwritten ones read as zeros).
                    let nblocks = fs.metadata(&path).unwrap().size.div_ceil(bs);
                    let mut set = BTreeSet::new();
                    for l in ex.lines().skip(1) {
                        let t: Vec<&str> = l
                            .split(|c: char| c == '/' || c.is_whitespace())
                            .filter(|w| !w.is_empty())
                            .collect();
                        let n = |i: usize| t[i].parse::<u64>().unwrap();
                        if n(0) < n(1) {
                            set.insert(n(7));
                        } else if !l.contains("Uninit") {
                            let (ls, le, ps) = (n(4), n(6), n(7));
                            for k in 0..=(le - ls) {
                                if ls + k < nblocks {
                                    set.insert(ps + k);
                                }
                            }
                        }
                    }
                    set
                } else {
                    debugfs(&img, &format!("blocks \"{shown}\""))
                        .split_whitespace()
                        .map(|w| w.parse().unwrap())
                        .collect()
                };
            assert_eq!(mine, theirs, "{name}:{shown}: blocks");
            checked += 1;
        }
        assert!(checked > 20, "{name}: only {checked} objects checked");
    }
}
