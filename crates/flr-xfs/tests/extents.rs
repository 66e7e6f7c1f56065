//! `Filesystem::extents` against xfsprogs and the kernel, which read the
//! same images on their own: for every object of the fixtures, the inode
//! lies where `xfs_db convert inode N byte` puts it, the written data
//! extents are the ones `xfs_db bmap` lists, the extent B+tree blocks are
//! the ones `xfs_db` reaches from the inode's root, and (v5, loop mount)
//! a regular file's extents are the ones the kernel's FIEMAP reports
//! through `filefrag`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use flr_fs::{FileKind, Filesystem, FsPath};
use flr_io::FileSource;
use flr_testdata::normalize_ranges;
use flr_xfs::XfsFs;

fn xfs_db(img: &Path, cmds: &[String]) -> String {
    let mut c = Command::new("xfs_db");
    c.arg("-r");
    for x in cmds {
        c.arg("-c").arg(x);
    }
    let out = c.arg(img).output().expect("run xfs_db");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} = ")))
        .unwrap_or_else(|| panic!("xfs_db printed no {name}: {text}"))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
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

struct Geometry {
    bs: u64,
    agblocks: u64,
    agblklog: u64,
}

impl Geometry {
    fn fsb(&self, fsb: u64) -> u64 {
        ((fsb >> self.agblklog) * self.agblocks + (fsb & ((1 << self.agblklog) - 1))) * self.bs
    }
}

/// What xfs_db said about one inode.
#[derive(Default)]
struct Seen {
    at: u64,
    bmap: Vec<String>,
    level: u64,
    ptrs: Vec<u64>,
}

/// One xfs_db run for every inode: its byte offset, data-fork map and
/// extent B+tree root.
fn xfs_db_inodes(img: &Path, inos: &[u64], u: &str) -> Vec<Seen> {
    let mut cmds = Vec::new();
    for ino in inos {
        cmds.push(format!("convert inode {ino} byte"));
        cmds.push(format!("inode {ino}"));
        cmds.push("bmap -d".into());
        cmds.push(format!("print {u}.bmbt.level {u}.bmbt.ptrs"));
    }
    let text = xfs_db(img, &cmds);
    let mut out: Vec<Seen> = Vec::new();
    for l in text.lines() {
        // "0xc67e00 (13008384)" starts the next inode.
        if l.starts_with("0x") && l.ends_with(')') {
            let at = l.split('(').nth(1).unwrap().trim_end_matches(')');
            out.push(Seen {
                at: at.parse().unwrap(),
                ..Seen::default()
            });
            continue;
        }
        let cur = out.last_mut().expect("convert comes first");
        if l.starts_with("data offset") {
            cur.bmap.push(l.to_string());
        } else if let Some(v) = l.strip_prefix(&format!("{u}.bmbt.level = ")) {
            cur.level = v.trim().parse().unwrap();
        } else if l.starts_with(&format!("{u}.bmbt.ptrs")) {
            cur.ptrs = l
                .split_once(" = ")
                .unwrap()
                .1
                .split_whitespace()
                .map(|w| w.rsplit(':').next().unwrap().parse().unwrap())
                .collect();
        }
    }
    assert_eq!(out.len(), inos.len(), "xfs_db answered for every inode");
    out
}

/// The extent B+tree blocks below a root at `level` with children
/// `ptrs`, walked with xfs_db (byte offsets).
fn bmbt_blocks(img: &Path, g: &Geometry, level: u64, ptrs: &[u64]) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    let mut todo: Vec<(u64, u64)> = ptrs.iter().map(|&p| (p, level.saturating_sub(1))).collect();
    while let Some((p, level)) = todo.pop() {
        out.insert(g.fsb(p));
        if level > 0 {
            let b = xfs_db(
                img,
                &[
                    format!("fsblock {p}"),
                    "type bmapbtd".into(),
                    "print ptrs".into(),
                ],
            );
            let kids = b
                .lines()
                .find(|l| l.starts_with("ptrs"))
                .map(|l| {
                    l.split_once(" = ")
                        .unwrap()
                        .1
                        .split_whitespace()
                        .map(|w| w.rsplit(':').next().unwrap().parse().unwrap())
                        .collect::<Vec<u64>>()
                })
                .unwrap_or_default();
            todo.extend(kids.into_iter().map(|c| (c, level - 1)));
        }
    }
    out
}

fn check(name: &str) -> usize {
    let img = flr_testdata::fixture(&format!("xfs/{name}.img.zst"));
    let fs = XfsFs::open(Arc::new(FileSource::open(&img).unwrap())).unwrap();
    let sb = xfs_db(
        &img,
        &[
            "sb 0".into(),
            "print blocksize agblocks agblklog inodesize versionnum".into(),
        ],
    );
    let g = Geometry {
        bs: field(&sb, "blocksize"),
        agblocks: field(&sb, "agblocks"),
        agblklog: field(&sb, "agblklog"),
    };
    let isize = field(&sb, "inodesize");
    let v5 = name.starts_with("v5");
    let mount = if v5 {
        flr_testdata::LoopMount::new(
            &img,
            "xfs",
            "norecovery",
            "xfs extents_match_xfsprogs (FIEMAP part)",
        )
    } else {
        None
    };
    let objs = paths(&fs);
    let inos: Vec<u64> = objs
        .iter()
        .map(|(p, _)| fs.metadata(p).unwrap().inode.unwrap())
        .collect();
    let seen = xfs_db_inodes(&img, &inos, if v5 { "u3" } else { "u" });
    let mut checked = 0;
    for ((path, kind), db) in objs.iter().zip(&seen) {
        let x = fs.extents(path).unwrap().expect("xfs answers");
        let shown = format!("{name}:{path}");
        assert_eq!(x.meta[0], (db.at, isize), "{shown}: inode");
        // Data extents: xfs_db's bmap of the data fork, unwritten ones
        // (flag 1) left out as they read as zeros.
        let theirs = normalize_ranges(db.bmap.iter().filter_map(|l| {
            // "data offset 0 startblock 4689 (0/4689) count 769 flag 0"
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.get(9) == Some(&"0")).then(|| {
                let (ag, agb) = w[5]
                    .trim_matches(|c| c == '(' || c == ')')
                    .split_once('/')
                    .unwrap();
                let ag: u64 = ag.parse().unwrap();
                let agb: u64 = agb.parse().unwrap();
                let count: u64 = w[7].parse().unwrap();
                ((ag * g.agblocks + agb) * g.bs, count * g.bs)
            })
        }));
        assert_eq!(
            normalize_ranges(x.data.iter().copied()),
            theirs,
            "{shown}: data extents"
        );
        // Extent B+tree blocks.
        let nodes: BTreeSet<u64> = x.meta[1..]
            .iter()
            .map(|&(o, l)| {
                assert_eq!(l, g.bs, "{shown}: a B+tree block is one block");
                o
            })
            .collect();
        assert_eq!(
            nodes,
            bmbt_blocks(&img, &g, db.level, &db.ptrs),
            "{shown}: B+tree blocks"
        );
        // The kernel's view of a regular file.
        if let (Some(m), FileKind::File) = (&mount, *kind) {
            let rel = path.to_string();
            let f = m.path().join(rel.trim_start_matches('/'));
            let fm = flr_testdata::filefrag(&f).expect("filefrag runs");
            let kernel = normalize_ranges(
                fm.iter()
                    .filter(|e| !e.flags.iter().any(|f| f == "unwritten"))
                    .map(|e| (e.physical, e.len)),
            );
            assert_eq!(
                normalize_ranges(x.data.iter().copied()),
                kernel,
                "{shown}: FIEMAP"
            );
        }
        checked += 1;
    }
    checked
}

#[test]
fn extents_match_xfsprogs() {
    if !flr_testdata::have_tool("xfs_db") {
        flr_testdata::loud("SKIPPED extents_match_xfsprogs: xfs_db (xfsprogs) not installed");
        return;
    }
    for name in ["v5", "v5-1k", "v5-dir16k", "v4"] {
        let n = check(name);
        assert!(n > 20, "{name}: only {n} objects checked");
    }
}
