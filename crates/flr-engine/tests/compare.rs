//! Changed ranges against independent oracles: images made and written by
//! qemu-img / qemu-io, the ground truth from a byte comparison of the raw
//! images qemu-img converts them to (never from flr).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use flr_engine::{open_pair_paths, CompareOptions, KeyRing, Method};
use flr_io::{Change, Compared, FileSource, NoParentResolver, RangeSet, ReadAt, Source};
use flr_testdata::{have_tool, loud};

const MIB: u64 = 1 << 20;
const PIECE: u64 = 4096;

fn tools(test: &str) -> bool {
    if have_tool("qemu-img") && have_tool("qemu-io") {
        return true;
    }
    loud(&format!(
        "SKIPPED {test}: qemu-img / qemu-io not installed (qemu-utils)"
    ));
    false
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run tool");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn qemu_io(img: &Path, fmt: &str, cmds: &[String]) {
    let mut c = Command::new("qemu-io");
    c.arg("-f").arg(fmt);
    for x in cmds {
        c.arg("-c").arg(x);
    }
    run(c.arg(img));
}

fn to_raw(img: &Path, fmt: &str, raw: &Path) -> Vec<u8> {
    run(Command::new("qemu-img")
        .args(["convert", "-f", fmt, "-O", "raw"])
        .arg(img)
        .arg(raw));
    std::fs::read(raw).unwrap()
}

/// The 4 KiB pieces in which two raw images differ: the ground truth.
fn truth(a: &[u8], b: &[u8]) -> RangeSet {
    assert_eq!(a.len(), b.len());
    RangeSet::from_extents(
        a.chunks(PIECE as usize)
            .zip(b.chunks(PIECE as usize))
            .enumerate()
            .filter(|(_, (x, y))| x != y)
            .map(|(i, (x, _))| (i as u64 * PIECE, x.len() as u64)),
    )
}

/// The pieces `src` answers as changed.
fn answered(src: &dyn ReadAt) -> RangeSet {
    let mut out = RangeSet::new();
    let mut at = 0;
    while at < src.len() {
        let n = PIECE.min(src.len() - at);
        let c = src.changed(at, n);
        assert_ne!(c, Change::Unknown, "{} at {at}", src.layer());
        if c == Change::Changed {
            out.insert(at, n);
        }
        at += n;
    }
    out
}

/// A differencing chain made by testdata/container/mkdiff.py (written from
/// the format specs) over the committed dynamic fixture: `open_pair_paths`
/// must find the chain, and its ranges must be the sectors the children
/// wrote — every 4 KiB piece that differs between the raw images mkdiff.py
/// writes beside them, and nothing outside the sectors written.
fn differencing_chain(ext: &str, sets: [&str; 2]) {
    if !have_tool("python3") {
        loud("SKIPPED differencing chain: python3 not installed");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join(format!("base.{ext}"));
    std::fs::copy(
        flr_testdata::fixture(&format!("container/{ext}-dynamic.{ext}.zst")),
        &base,
    )
    .unwrap();
    let base_raw = d.path().join("base.raw");
    std::fs::copy(flr_testdata::fixture("container/raw.img.zst"), &base_raw).unwrap();
    let gen = flr_testdata::testdata_dir().join("container/mkdiff.py");
    let mut parent = (base.clone(), base_raw.clone());
    let mut chain = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        let out = d.path().join(format!("c{i}.{ext}"));
        let out_raw = d.path().join(format!("c{i}.raw"));
        run(Command::new("python3")
            .arg(&gen)
            .arg(ext)
            .arg("--parent")
            .arg(&parent.0)
            .arg("--parent-raw")
            .arg(&parent.1)
            .arg("--out")
            .arg(&out)
            .arg("--out-raw")
            .arg(&out_raw)
            .arg("--writes")
            .arg(set)
            .current_dir(d.path()));
        chain.push((out.clone(), out_raw.clone()));
        parent = (out, out_raw);
    }
    let keys = KeyRing::new();
    let opts = CompareOptions::default();
    let base_bytes = std::fs::read(&base_raw).unwrap();
    for (new, new_raw) in &chain {
        let pair = open_pair_paths(&base, new, &opts, &keys).unwrap();
        assert_eq!(
            pair.facts.method,
            Method::Differencing,
            "{:?}",
            pair.facts.note
        );
        assert_eq!(pair.new.container.format, ext);
        let t = truth(&base_bytes, &std::fs::read(new_raw).unwrap());
        assert!(!t.is_empty());
        // Sound: every piece that differs is in the ranges.
        for (off, len) in t.extents() {
            assert_eq!(
                pair.new.disk().changed(off, len),
                Change::Changed,
                "{ext} {off}"
            );
            assert_eq!(pair.old.disk().changed(off, len), Change::Changed);
        }
        // Exact: the ranges are whole written sectors, each inside a piece
        // that differs (mkdiff.py tags every sector it writes, except the
        // zero sectors it writes over zeros).
        let ans = answered(pair.new.disk().as_ref());
        let mut extra = 0;
        for (off, len) in ans.extents() {
            for p in (off..off + len).step_by(PIECE as usize) {
                if !t.intersects(p, PIECE) {
                    extra += 1;
                }
            }
        }
        assert!(extra <= 2, "{ext}: {extra} pieces held but equal");
        assert!(pair
            .changes
            .extents()
            .all(|(o, l)| o % 512 == 0 && l % 512 == 0));
        // The block comparison of the same pair finds exactly the truth.
        let (r, _) = flr_engine::compare_blocks(pair.old.disk(), pair.new.disk(), MIB, 2).unwrap();
        assert_eq!(r, t);
    }
    // The child against its own parent, and a raw pair: block comparison.
    let pair = open_pair_paths(&base_raw, &chain[1].1, &opts, &keys).unwrap();
    assert_eq!(pair.facts.method, Method::BlockCompare);
    assert_eq!(
        pair.changes,
        truth(&base_bytes, &std::fs::read(&chain[1].1).unwrap())
    );
    assert_eq!(pair.facts.bytes_read, 2 * base_bytes.len() as u64);
}

#[test]
fn differencing_vhd_chain() {
    differencing_chain("vhd", ["vhd1", "vhd2"]);
}

#[test]
fn differencing_vhdx_chain() {
    differencing_chain("vhdx", ["vhdx1", "vhdx2"]);
}

/// A changed range of the container file (what a blob diff gives) maps
/// through the VHD/VHDX block map to exactly the virtual pieces whose bytes
/// it holds: the file's bytes there are flipped, and qemu-img's raw
/// conversion of the flipped file is compared with the original's.
fn file_ranges_map_up(fmt: &str, ext: &str) {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join(format!("a.{ext}"));
    run(Command::new("qemu-img")
        .args(["create", "-f", fmt])
        .arg(&img)
        .arg("32M"));
    qemu_io(
        &img,
        fmt,
        &[
            "write -P 0x11 0 6M".into(),
            "write -P 0x22 9M 5M".into(),
            "write -P 0x33 30M 2M".into(),
        ],
    );
    let raw_a = to_raw(&img, fmt, &d.path().join("a.raw"));
    let len = std::fs::metadata(&img).unwrap().len();
    // Ranges in the payload part of the file (past the metadata qemu puts
    // first, before a VHD's trailing footer).
    let ranges = [
        (len / 2 + 1234, 300_000u64),
        (len - 512 - MIB - 77, 4096 * 3),
    ];
    let mut bytes = std::fs::read(&img).unwrap();
    for &(o, l) in &ranges {
        for b in &mut bytes[o as usize..(o + l) as usize] {
            *b ^= 0xFF;
        }
    }
    let flipped = d.path().join(format!("b.{ext}"));
    std::fs::write(&flipped, &bytes).unwrap();
    let raw_b = to_raw(&flipped, fmt, &d.path().join("b.raw"));
    let t = truth(&raw_a, &raw_b);
    assert!(!t.is_empty());

    let file: Source = Arc::new(FileSource::open(&img).unwrap());
    let c: Source = Arc::new(Compared::new(file, RangeSet::from_extents(ranges)));
    let disk: Box<dyn ReadAt> = if ext == "vhd" {
        Box::new(flr_vhd::VhdDisk::open(c, &NoParentResolver).unwrap())
    } else {
        Box::new(flr_vhdx::VhdxDisk::open(c, &NoParentResolver).unwrap())
    };
    assert_eq!(answered(disk.as_ref()), t, "{fmt}");
}

#[test]
fn file_ranges_map_through_vhd() {
    if tools("file_ranges_map_through_vhd") {
        file_ranges_map_up("vpc", "vhd");
    }
}

#[test]
fn file_ranges_map_through_vhdx() {
    if tools("file_ranges_map_through_vhdx") {
        file_ranges_map_up("vhdx", "vhdx");
    }
}
