//! `Filesystem::extents` against btrfs-progs and the kernel, which read
//! the image on their own: for every object of the top-level subvolume of
//! the features fixture, the leaves flr names are the ones
//! `btrfs inspect-internal dump-tree -t 5` shows holding the inode's items
//! (the inode number from the kernel's `stat` of a loop mount), the data
//! ranges are the extents the kernel's FIEMAP reports (through `filefrag`;
//! inline and preallocated ones left out), and every logical address is
//! placed on the device where `btrfs-map-logical` puts it (every mirror).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::Arc;

use flr_btrfs::BtrfsFs;
use flr_fs::{FileKind, Filesystem, FsPath};
use flr_io::FileSource;
use flr_testdata::normalize_ranges;

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .expect("run btrfs-progs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every physical offset of logical `l` (`btrfs-map-logical`), cached.
struct Mapper<'a> {
    img: &'a str,
    cache: HashMap<u64, Vec<u64>>,
}

impl Mapper<'_> {
    fn map(&mut self, l: u64, len: u64) -> Vec<(u64, u64)> {
        let img = self.img;
        let phys = self.cache.entry(l).or_insert_with(|| {
            // "mirror 1 logical 32276480 physical 40665088 device bt.img"
            run(
                "btrfs-map-logical",
                &["-l", &l.to_string(), "-b", "4096", img],
            )
            .lines()
            .filter_map(|line| {
                let w: Vec<&str> = line.split_whitespace().collect();
                (w.first() == Some(&"mirror") && w.get(4) == Some(&"physical"))
                    .then(|| w[5].parse().unwrap())
            })
            .collect()
        });
        assert!(!phys.is_empty(), "btrfs-map-logical knows no {l:#x}");
        phys.iter().map(|&p| (p, len)).collect()
    }
}

/// Leaves of tree 5 by the objectids of the items they hold.
fn leaves_by_object(img: &str) -> BTreeMap<u64, BTreeSet<u64>> {
    let dump = run("btrfs", &["inspect-internal", "dump-tree", "-t", "5", img]);
    let mut out: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut leaf = None;
    for l in dump.lines() {
        if let Some(r) = l.strip_prefix("leaf ") {
            if r.contains(" items ") {
                leaf = r
                    .split_whitespace()
                    .next()
                    .map(|n| n.parse::<u64>().unwrap());
            }
        } else if l.starts_with("node ") {
            leaf = None;
        } else if let Some(k) = l
            .trim()
            .strip_prefix("item ")
            .and_then(|r| r.split(" key (").nth(1))
        {
            if let (Some(leaf), Ok(obj)) = (leaf, k.split_whitespace().next().unwrap().parse()) {
                out.entry(obj).or_default().insert(leaf);
            }
        }
    }
    out
}

#[test]
fn extents_match_btrfs_progs_and_fiemap() {
    if !flr_testdata::have_tool("btrfs-map-logical") || !flr_testdata::have_tool("filefrag") {
        flr_testdata::loud(
            "SKIPPED extents_match_btrfs_progs_and_fiemap: btrfs-progs or filefrag not installed",
        );
        return;
    }
    let img = flr_testdata::fixture("btrfs/features.img.zst");
    let Some(mount) = flr_testdata::LoopMount::new(
        &img,
        "btrfs",
        "subvolid=5",
        "extents_match_btrfs_progs_and_fiemap",
    ) else {
        return;
    };
    let imgs = img.to_str().unwrap();
    let fs = BtrfsFs::open(Arc::new(FileSource::open(&img).unwrap()))
        .unwrap()
        .open_subvolume(5)
        .unwrap();
    let leaves = leaves_by_object(imgs);
    let mut mapper = Mapper {
        img: imgs,
        cache: HashMap::new(),
    };
    let nodesize: u64 = run("btrfs", &["inspect-internal", "dump-super", imgs])
        .lines()
        .find_map(|l| l.strip_prefix("nodesize"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let top_dev = std::fs::metadata(mount.path()).unwrap().dev();
    let mut checked = 0;
    let mut encoded = 0;
    let mut stack = vec![FsPath::root()];
    while let Some(dir) = stack.pop() {
        let mut todo = vec![(dir.clone(), FileKind::Dir)];
        for e in fs.read_dir(&dir).unwrap() {
            todo.push((dir.join(&e.name), e.meta.kind));
        }
        for (i, (path, kind)) in todo.into_iter().enumerate() {
            let rel = path.to_string();
            let on = mount.path().join(rel.trim_start_matches('/'));
            let st = std::fs::symlink_metadata(&on).unwrap();
            if st.dev() != top_dev {
                continue; // another subvolume
            }
            if i > 0 && kind == FileKind::Dir {
                stack.push(path.clone());
                continue; // checked as its own listing's first entry
            }
            let x = fs.extents(&path).unwrap().expect("single device");
            let shown = format!("btrfs:{rel}");
            // Leaves.
            let theirs = normalize_ranges(
                leaves[&st.ino()]
                    .iter()
                    .flat_map(|&l| mapper.map(l, nodesize)),
            );
            assert_eq!(
                normalize_ranges(x.meta.iter().copied()),
                theirs,
                "{shown}: leaves"
            );
            // Data, as FIEMAP sees it.
            if kind == FileKind::File {
                let fm = flr_testdata::filefrag(&on).expect("filefrag runs");
                let mut plain = Vec::new();
                let mut starts = BTreeSet::new();
                for e in &fm {
                    let has = |f: &str| e.flags.iter().any(|g| g == f);
                    if has("inline") || has("unwritten") {
                        continue;
                    }
                    if has("encoded") {
                        encoded += 1;
                        starts.extend(mapper.map(e.physical, 0).into_iter().map(|r| r.0));
                    } else {
                        plain.extend(mapper.map(e.physical, e.len));
                    }
                }
                let mine = normalize_ranges(x.data.iter().copied());
                let plain = normalize_ranges(plain);
                // Compressed extents: flr names the whole stored extent
                // from the address FIEMAP gives.
                let mine_plain: Vec<(u64, u64)> = mine
                    .iter()
                    .copied()
                    .filter(|r| !starts.contains(&r.0))
                    .collect();
                assert_eq!(mine_plain, plain, "{shown}: data extents");
                let mine_starts: BTreeSet<u64> = x
                    .data
                    .iter()
                    .map(|r| r.0)
                    .filter(|s| starts.contains(s))
                    .collect();
                assert_eq!(mine_starts, starts, "{shown}: compressed extents");
            }
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} objects checked");
    assert!(encoded > 0, "no compressed extent was checked");
}
