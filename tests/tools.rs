//! Reference-tool tier: The Sleuth Kit (`fls`, `icat`) reads the same
//! committed images and must agree with flr on every regular file. Needs the
//! Debian package `sleuthkit` (installed by .ci/run); skips loudly without it.

use std::collections::BTreeMap;
use std::process::Command;

use crate::util::*;

/// (volume id, sector offset of the partition) in the demo image.
const DEMO_VOLUMES: &[(&str, u64)] = &[("p2", 6144), ("p3", 22528)];

fn tsk_files(image: &str, offset: u64) -> BTreeMap<String, String> {
    let out = Command::new("fls")
        .args([
            "-i",
            "vhd",
            "-o",
            &offset.to_string(),
            "-r",
            "-p",
            "-u",
            image,
        ])
        .output()
        .expect("run fls");
    assert!(
        out.status.success(),
        "fls: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "r/r 18:\thome/alice/notes.txt"
        let Some((head, path)) = line.split_once(":\t") else {
            continue;
        };
        let (kind, addr) = head.split_at(3);
        if kind != "r/r" || path.starts_with('$') || path.contains(':') {
            continue; // NTFS metafiles and named streams are not part of the restore
        }
        let addr = addr.trim().trim_start_matches("* ");
        let data = Command::new("icat")
            .args(["-i", "vhd", "-o", &offset.to_string(), image, addr])
            .output()
            .expect("run icat");
        files.insert(path.to_string(), sha256_hex(&data.stdout));
    }
    files
}

#[test]
fn sleuthkit_agrees_with_flr_on_the_demo_image() {
    if !flr_testdata::have_tool("fls") || !flr_testdata::have_tool("icat") {
        flr_testdata::loud("SKIPPED sleuthkit_agrees_with_flr_on_the_demo_image: fls/icat not installed (Debian sleuthkit; .ci/run installs it)");
        return;
    }
    let img = demo();
    for (vol, offset) in DEMO_VOLUMES {
        let tsk = tsk_files(p(&img), *offset);
        assert!(tsk.len() >= 3, "{vol}: fls found {tsk:?}");
        let (_dest, flr_sums) = restore_all(&img, vol);
        for (path, sha) in &tsk {
            assert_eq!(
                flr_sums.get(path),
                Some(sha),
                "{vol}:/{path}: flr and icat differ"
            );
        }
    }
}
