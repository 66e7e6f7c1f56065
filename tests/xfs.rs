//! XFS through the flr binary: the committed fixtures (testdata/xfs, made by mkfs.xfs and
//! the kernel) restored and checked against the source trees' manifests, and the corpus.

use crate::util::*;

/// What `get` restores of the v5 fixture: everything but the 4 GiB sparse big.bin
/// (checked through the library in crates/flr-xfs).
const V5_TOP: &[&str] = &[
    "etc",
    "block",
    "leaf",
    "node",
    "btree",
    "frag",
    "times",
    "links",
    "sparse.bin",
    "medium.bin",
];

#[test]
fn xfs_v5_every_directory_format_restores() {
    let img = fixture("xfs/v5.img.zst");
    let probe = stdout(&run_ok(&["probe", p(&img)]));
    assert!(
        probe.contains("xfs  label \"xfsv5\"  serial 7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"),
        "{probe}"
    );
    let dest = tempfile::tempdir().unwrap();
    let mut args = vec!["get".to_string(), p(&img).to_string()];
    args.extend(V5_TOP.iter().map(|t| format!("disk:/{t}")));
    args.extend(["-o".into(), p(dest.path()).into(), "--checksum".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_ok(&args);
    check_tree(dest.path(), &checksums(&out), &manifest("xfs/v5.tsv"));
    // mtimes survive, including one past 2038 (bigtime).
    let m = std::fs::metadata(dest.path().join("times/2100")).unwrap();
    let t = m
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(t, 4_102_444_800);
    let ls = stdout(&run_ok(&["ls", p(&img), "disk:/node"]));
    assert_eq!(ls.lines().count(), 3000);
}

#[test]
fn xfs_v4_restores() {
    let img = fixture("xfs/v4.img.zst");
    let (dest, sums) = restore_all(&img, "disk");
    check_tree(dest.path(), &sums, &manifest("xfs/v4.tsv"));
    let cat = run_ok(&["cat", p(&img), "disk:/etc/hostname"]);
    assert_eq!(cat.stdout, b"v4 host\n");
}

#[test]
fn corpus_xfs_through_the_binary() {
    let Some((unpacked, corpus)) = flr_testdata::corpus("tests/xfs corpus_xfs_through_the_binary")
    else {
        return;
    };
    for (img, tsv) in [
        ("xfs/dissect-xfs/xfs.bin", "dissect-xfs-xfs.files.tsv"),
        (
            "xfs/dissect-xfs/xfs_bigtime.bin",
            "dissect-xfs-xfs_bigtime.files.tsv",
        ),
    ] {
        let img = unpacked.join(img);
        let (_dest, sums) = restore_all(&img, "disk");
        let text = std::fs::read_to_string(corpus.join("expected").join(tsv)).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let c: Vec<&str> = line.split('\t').collect();
            assert_eq!(
                sums.get(c[0]).map(String::as_str),
                Some(c[2]),
                "{}: {}",
                img.display(),
                c[0]
            );
        }
    }
}
