//! Btrfs through the flr binary and the scanner: every corpus filesystem (the kernel's
//! read-only mounts are the oracle), its multi-device ones assembled from images given with
//! `--with-disk` and again with each device removed where the profile survives it; an
//! openSUSE-style disk (GPT, EFI, Btrfs root with `@` subvolumes and snapper snapshots) with
//! the default subvolume as the volume and every subvolume reachable as `p2@/PATH`; the
//! RAID5, RAID6 and RAID1C4 fixtures (`testdata/btrfs/gen.sh`); and a tree log that is not
//! replayed, warned about.

use std::path::PathBuf;

use crate::mount::{fuse_available, Mount};
use crate::util::*;

/// `--with-disk` for every image after the first.
fn disks(paths: &[PathBuf]) -> Vec<String> {
    paths[1..]
        .iter()
        .flat_map(|d| ["--with-disk".to_string(), p(d).to_string()])
        .collect()
}

/// A corpus files table (`path size sha256 inode check`) as manifest entries.
fn corpus_entries(tsv: &std::path::Path) -> Vec<ManifestEntry> {
    std::fs::read_to_string(tsv)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            ManifestEntry {
                kind: 'f',
                path: c[0].to_string(),
                size: c[1].parse().unwrap(),
                sha256: c[2].to_string(),
            }
        })
        .collect()
}

#[test]
fn corpus_filesystems_through_the_binary() {
    let Some((unpacked, corpus)) =
        flr_testdata::corpus("btrfs::corpus_filesystems_through_the_binary")
    else {
        return;
    };
    let table = std::fs::read_to_string(corpus.join("expected/dissect-btrfs.tsv")).unwrap();
    let dir = unpacked.join("btrfs/dissect-btrfs");
    let mut checked = 0;
    for l in table.lines().skip(1) {
        let c: Vec<&str> = l.split('\t').collect();
        let (name, profiles) = (c[0], c[4]);
        let members: Vec<PathBuf> = c[1].split(',').map(|m| dir.join(m)).collect();
        let mut entries =
            corpus_entries(&corpus.join(format!("expected/dissect-{name}.files.tsv")));
        // Symlinks (path, target) and the subvolumes' folders (id=path).
        let links =
            std::fs::read_to_string(corpus.join(format!("expected/dissect-{name}.symlinks.tsv")))
                .unwrap_or_default();
        for l in links.lines().filter(|l| !l.is_empty()) {
            let c: Vec<&str> = l.split('\t').collect();
            entries.push(ManifestEntry {
                kind: 'l',
                path: c[0].to_string(),
                size: c[1].len() as u64,
                sha256: sha256_hex(c[1].as_bytes()),
            });
        }
        for sv in c[6]
            .split(' ')
            .filter_map(|s| s.split_once('='))
            .map(|(_, p)| p)
        {
            if sv != "<top>" {
                entries.push(ManifestEntry {
                    kind: 'd',
                    path: sv.to_string(),
                    size: 0,
                    sha256: String::new(),
                });
            }
        }
        // The top level (subvolid 5), where the table's paths start.
        let spec = "disk@/:/";
        let check = |imgs: &[PathBuf], what: &str| {
            let dest = tempfile::tempdir().unwrap();
            let args = disks(imgs);
            let out = run(&with(
                &args,
                &["get", p(&imgs[0]), spec, "-o", p(dest.path()), "--checksum"],
            ));
            assert!(
                out.status.code() == Some(0),
                "{name} {what}: {}",
                stderr(&out)
            );
            check_tree(dest.path(), &checksums(&out), &entries);
        };
        check(&members, "all devices");
        let report = probe(&with(
            &disks(&members),
            &["probe", "--json", p(&members[0])],
        ));
        let fsys = &report["btrfs_filesystems"][0];
        assert_eq!(fsys["fsid"], c[3], "{name}: {fsys}");
        assert_eq!(fsys["complete"], true, "{name}");
        // Each device removed where the profile keeps a copy of everything.
        let survives = ["raid1/", "raid10/", "raid1c3/"]
            .iter()
            .any(|r| profiles.starts_with(r));
        if survives && members.len() > 1 {
            for gone in 0..members.len() {
                let rest: Vec<PathBuf> = (0..members.len())
                    .filter(|&i| i != gone)
                    .map(|i| members[i].clone())
                    .collect();
                check(&rest, &format!("without device {}", gone + 1));
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 11);
}

#[test]
fn a_suse_disk_shows_its_default_subvolume_and_every_snapshot() {
    let img = fixture("btrfs/suse.vhd.zst");
    let entries = manifest("btrfs/suse.tsv");
    let report = probe(&["probe", "--json", p(&img)]);
    let v = volume(&report, "p2");
    assert_eq!(v["content"]["kind"], "btrfs", "{v}");
    assert_eq!(v["content"]["verdict"], "readable");
    let subs = v["content"]["subvolumes"].as_array().unwrap();
    let default = subs.iter().find(|s| s["default"] == true).unwrap();
    let default_path = default["path"].as_str().unwrap().to_string();
    let want: String =
        std::fs::read_to_string(flr_testdata::testdata_dir().join("btrfs/suse.default"))
            .unwrap()
            .trim()
            .to_string();
    assert_eq!(default["id"].to_string(), want, "{default}");
    // The top level, with every subvolume and snapshot as a folder.
    let dest = tempfile::tempdir().unwrap();
    let out = run_ok(&["get", p(&img), "p2@/:/", "-o", p(dest.path()), "--checksum"]);
    check_tree(dest.path(), &checksums(&out), &entries);
    // The volume itself is the default subvolume.
    let prefix = format!("{default_path}/");
    let inside: Vec<ManifestEntry> = entries
        .iter()
        .filter_map(|e| {
            e.path.strip_prefix(&prefix).map(|rest| ManifestEntry {
                kind: e.kind,
                path: rest.to_string(),
                size: e.size,
                sha256: e.sha256.clone(),
            })
        })
        .collect();
    assert!(!inside.is_empty());
    let dest = tempfile::tempdir().unwrap();
    let out = run_ok(&["get", p(&img), "p2:/", "-o", p(dest.path()), "--checksum"]);
    check_tree(dest.path(), &checksums(&out), &inside);
    // A file from an older, read-only snapper snapshot, by its id.
    let f = entries
        .iter()
        .find(|e| e.kind == 'f' && e.path.starts_with("@/.snapshots/2/snapshot/"))
        .unwrap();
    let rest = f.path.strip_prefix("@/.snapshots/2/snapshot").unwrap();
    let out = run_ok(&[
        "cat",
        p(&img),
        &format!("p2@/@/.snapshots/2/snapshot:{rest}"),
    ]);
    assert_eq!(sha256_hex(&out.stdout), f.sha256, "{}", f.path);
    let out = run(&["ls", p(&img), "p2@/@/no/such/subvolume:/"]);
    assert_ne!(out.status.code(), Some(0));
    if fuse_available("btrfs::a_suse_disk_shows_its_default_subvolume_and_every_snapshot (mount)") {
        let m = Mount::new(&img, &["--volume", "p2@/"]);
        check_dir(m.dir.path(), &entries);
    }
}

#[test]
fn raid5_raid6_raid1c4_with_every_survivable_set_of_devices() {
    let t = std::fs::read_to_string(flr_testdata::testdata_dir().join("btrfs/raid.tsv")).unwrap();
    let entries = manifest("btrfs/raid.tsv");
    assert!(!t.is_empty());
    for (name, n, survives) in [("raid5", 3, 1), ("raid6", 4, 2), ("raid1c4", 4, 3)] {
        let all: Vec<PathBuf> = (1..=n)
            .map(|k| fixture(&format!("btrfs/{name}-{k}.img.zst")))
            .collect();
        // Every device, then every set of `survives` devices left out.
        let mut sets: Vec<Vec<usize>> = vec![Vec::new()];
        for gone in 0..n {
            sets.push(vec![gone]);
            if survives >= 2 {
                for other in gone + 1..n {
                    sets.push(vec![gone, other]);
                }
            }
        }
        for gone in sets {
            let rest: Vec<PathBuf> = (0..n)
                .filter(|i| !gone.contains(i))
                .map(|i| all[i].clone())
                .collect();
            let dest = tempfile::tempdir().unwrap();
            let args = disks(&rest);
            let out = run(&with(
                &args,
                &[
                    "get",
                    p(&rest[0]),
                    "disk:/",
                    "-o",
                    p(dest.path()),
                    "--checksum",
                ],
            ));
            assert_eq!(
                out.status.code(),
                Some(0),
                "{name} without {gone:?}: {}",
                stderr(&out)
            );
            check_tree(dest.path(), &checksums(&out), &entries);
        }
    }
}

#[test]
fn features_and_an_unreplayed_tree_log() {
    let img = fixture("btrfs/features.img.zst");
    restore_and_verify(&img, &[], "disk@/", "btrfs/features.tsv");
    let log = fixture("btrfs/log.img.zst");
    let out = run_ok(&["ls", p(&log), "disk:/"]);
    assert!(
        stderr(&out).contains("warning") && stderr(&out).contains("tree log"),
        "{}",
        stderr(&out)
    );
    let report = probe(&["probe", "--json", p(&log)]);
    let c = &volume(&report, "disk")["content"]["fs"]["consistency"];
    assert_eq!(c["journal"]["state"], "not_replayed", "{c}");
    let dest = tempfile::tempdir().unwrap();
    let out = run_ok(&["get", p(&log), "disk:/", "-o", p(dest.path()), "--checksum"]);
    check_tree(dest.path(), &checksums(&out), &manifest("btrfs/log.tsv"));
}
