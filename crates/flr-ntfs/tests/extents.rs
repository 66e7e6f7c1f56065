//! `Filesystem::extents` against ntfsinfo (ntfs-3g's tools), which reads
//! the image on its own: for every object of the fixture, the file records
//! flr names are the ones `ntfsinfo -F PATH -v` dumps attributes from
//! (placed through `$MFT`'s run list as `ntfsinfo -i 0 -v` prints it), its
//! data ranges are the stored runs of the unnamed `$DATA` (a folder: of
//! `$INDEX_ALLOCATION $I30`), and its other ranges are the runs of a
//! non-resident `$ATTRIBUTE_LIST` or `$REPARSE_POINT`.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use flr_fs::{FileKind, Filesystem, FsPath};
use flr_testdata::normalize_ranges;

fn ntfsinfo(img: &Path, args: &[&str]) -> String {
    let out = Command::new("ntfsinfo")
        .args(args)
        .arg(img)
        .output()
        .expect("run ntfsinfo");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn num(s: &str) -> u64 {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).unwrap(),
        None => s.parse().unwrap_or_else(|_| panic!("not a number: {s:?}")),
    }
}

/// One dumped attribute: type name, holding record, name length, runs
/// as (vcn, lcn or None for a hole, length) in clusters.
struct Attr {
    ty: String,
    rec: u64,
    named: bool,
    runs: Vec<(u64, Option<u64>, u64)>,
}

fn attrs(dump: &str) -> Vec<Attr> {
    let mut out: Vec<Attr> = Vec::new();
    let mut in_runs = false;
    for l in dump.lines() {
        if let Some(r) = l.strip_prefix("Dumping attribute ") {
            // "$DATA (0x80) from mft record 381 (0x17d)"
            let ty = r.split_whitespace().next().unwrap().to_string();
            let rec = r
                .split("from mft record ")
                .nth(1)
                .and_then(|x| x.split_whitespace().next())
                .map(num)
                .unwrap();
            out.push(Attr {
                ty,
                rec,
                named: false,
                runs: Vec::new(),
            });
            in_runs = false;
            continue;
        }
        let Some(a) = out.last_mut() else { continue };
        let t = l.trim();
        if let Some(n) = t.strip_prefix("Name length:") {
            a.named = num(n.split_whitespace().next().unwrap()) != 0;
        } else if t.starts_with("Runlist:") {
            in_runs = true;
        } else if in_runs {
            let w: Vec<&str> = t.split_whitespace().collect();
            if w.len() == 3 && w[0].starts_with("0x") {
                // `<HOLE>`: sparse; `<RL_NOT_MAPPED>`: VCNs another extent maps.
                let lcn = (!w[1].starts_with('<')).then(|| num(w[1]));
                a.runs.push((num(w[0]), lcn, num(w[2])));
            } else {
                in_runs = false;
            }
        }
    }
    out
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
fn extents_match_ntfsinfo() {
    if !flr_testdata::have_tool("ntfsinfo") {
        flr_testdata::loud("SKIPPED extents_match_ntfsinfo: ntfsinfo (ntfs-3g) not installed");
        return;
    }
    let img = flr_testdata::fixture("ntfs/ntfs.img.zst");
    let fs = common::open_path(&img);
    let vol = ntfsinfo(&img, &["-m"]);
    let field = |name: &str| {
        vol.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(num)
            .unwrap_or_else(|| panic!("ntfsinfo -m printed no {name}"))
    };
    let cluster = field("Cluster Size:");
    let rsize = field("MFT Record Size:");
    // $MFT's runs: where record N lies.
    let mft = attrs(&ntfsinfo(&img, &["-i", "0", "-v"]));
    let mft_runs = &mft
        .iter()
        .find(|a| a.ty == "$DATA" && !a.named)
        .expect("$MFT has $DATA")
        .runs;
    let record_at = |rec: u64| {
        let vcn = rec * rsize / cluster;
        let (v0, lcn, _) = mft_runs
            .iter()
            .find(|&&(v, _, n)| v <= vcn && vcn < v + n)
            .unwrap_or_else(|| panic!("record {rec} is past $MFT's runs"));
        (lcn.unwrap() + (vcn - v0)) * cluster + rec * rsize % cluster
    };
    let unreadable = flr_testdata::testdata_dir().join("ntfs/ntfs.unreadable.tsv");
    let unreadable = std::fs::read_to_string(unreadable).unwrap();
    let mut checked = 0;
    for (path, kind) in paths(&fs) {
        let shown = path.to_string();
        let Some(x) = fs.extents(&path).unwrap() else {
            // Only a stream flr cannot read goes unmapped.
            let m = fs.metadata(&path).unwrap();
            assert!(
                m.unreadable.is_some() && unreadable.contains(&shown[1..]),
                "{shown}: no extents"
            );
            continue;
        };
        let dump = attrs(&ntfsinfo(&img, &["-F", &shown, "-v"]));
        assert!(!dump.is_empty(), "{shown}: ntfsinfo dumped nothing");
        let recs: BTreeSet<u64> = dump.iter().map(|a| record_at(a.rec)).collect();
        let runs = |pick: &dyn Fn(&Attr) -> bool| {
            normalize_ranges(dump.iter().filter(|a| pick(a)).flat_map(|a| {
                a.runs
                    .iter()
                    .filter_map(|&(_, lcn, n)| lcn.map(|l| (l * cluster, n * cluster)))
            }))
        };
        let data = if kind == FileKind::Dir {
            runs(&|a| a.ty == "$INDEX_ALLOCATION")
        } else {
            runs(&|a| a.ty == "$DATA" && !a.named)
        };
        assert_eq!(
            normalize_ranges(x.data.iter().copied()),
            data,
            "{shown}: data runs"
        );
        let mine_recs: BTreeSet<u64> = x
            .meta
            .iter()
            .filter(|&&(_, l)| l == rsize)
            .map(|&(o, _)| o)
            .filter(|o| recs.contains(o))
            .collect();
        assert_eq!(mine_recs, recs, "{shown}: file records");
        let other = runs(&|a| a.ty == "$ATTRIBUTE_LIST" || a.ty == "$REPARSE_POINT");
        let mine_other = normalize_ranges(
            x.meta
                .iter()
                .filter(|&&(o, l)| !(l == rsize && recs.contains(&o)))
                .copied(),
        );
        assert_eq!(
            mine_other, other,
            "{shown}: attribute list and reparse runs"
        );
        checked += 1;
    }
    assert!(checked > 20, "only {checked} objects checked");
}
