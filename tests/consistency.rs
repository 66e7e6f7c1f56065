//! Crash-consistent snapshots through the flr binary: kernel-made dirty XFS (v4, v5, a
//! wrapped log, items older than the disk) and ext4 images (`testdata/xfs/gen-dirty*.sh`,
//! `testdata/ext4/gen-dirty.sh`: files changed, `sync`, more changes, `shutdown -f`), whose
//! oracle is what the kernel shows after mounting a second copy and replaying it. Every file
//! must match through `cat`, `get`, `mount` and `verify`; the dirty ones are reported (a note
//! after a replay), the clean ones are not, and a filesystem that may miss its newest
//! changes (a FAT left dirty) is warned about by every command and counted by `verify`.

use std::path::Path;

use crate::mount::{fuse_available, Mount};
use crate::util::*;

const DIRTY: &[(&str, &str)] = &[
    ("xfs/dirty-v5.img.zst", "xfs/dirty-v5.tsv"),
    ("xfs/dirty-v4.img.zst", "xfs/dirty-v4.tsv"),
    ("xfs/dirty-v5-wrap.img.zst", "xfs/dirty-v5-wrap.tsv"),
    ("xfs/dirty-v5-lsn.img.zst", "xfs/dirty-v5-lsn.tsv"),
    ("ext4/ext4-dirty.img.zst", "ext4/ext4-dirty.tsv"),
];

fn verify_json(img: &Path) -> serde_json::Value {
    serde_json::from_slice(&run_ok(&["verify", p(img), "--json", "-"]).stdout).unwrap()
}

#[test]
fn dirty_filesystems_match_the_kernels_replay_everywhere() {
    for (zst, tsv) in DIRTY {
        let img = fixture(zst);
        let entries = manifest(tsv);
        // get: every path as the kernel showed it after its replay.
        let dest = tempfile::tempdir().unwrap();
        let out = run_ok(&["get", p(&img), "disk:/", "-o", p(dest.path()), "--checksum"]);
        check_tree(dest.path(), &checksums(&out), &entries);
        assert!(
            stderr(&out).contains("note: not cleanly unmounted")
                && stderr(&out).contains("replayed"),
            "{zst}: {}",
            stderr(&out)
        );
        // cat of a file the replay brought back.
        let f = entries
            .iter()
            .rev()
            .find(|e| e.kind == 'f' && e.size > 0)
            .unwrap();
        let cat = run_ok(&["cat", p(&img), &format!("disk:/{}", f.path)]);
        assert_eq!(sha256_hex(&cat.stdout), f.sha256, "{zst}: {}", f.path);
        // probe and verify say what was done.
        let report = probe(&["probe", "--json", p(&img)]);
        let c = &volume(&report, "disk")["content"]["fs"]["consistency"];
        assert_eq!(c["unmount"], "dirty", "{zst}: {c}");
        assert_eq!(c["journal"]["state"], "replayed", "{zst}: {c}");
        let v = verify_json(&img);
        assert_eq!(v["status"], "ok", "{zst}: {v}");
        let files = entries.iter().filter(|e| e.kind == 'f').count();
        assert_eq!(v["volumes"][0]["files_read"], files, "{zst}");
        assert_eq!(
            v["volumes"][0]["consistency"]["journal"]["state"],
            "replayed"
        );
        assert_eq!(v["totals"]["volumes_may_miss_changes"], 0);
        if fuse_available(
            "consistency::dirty_filesystems_match_the_kernels_replay_everywhere (mount)",
        ) {
            let m = Mount::new(&img, &[]);
            check_dir(&m.dir.path().join("disk"), &entries);
            assert!(
                m.stderr.contains("note: not cleanly unmounted"),
                "{}",
                m.stderr
            );
        }
    }
}

#[test]
fn clean_filesystems_say_nothing() {
    for zst in ["xfs/v5.img.zst", "xfs/v4.img.zst", "ext4/ext4.img.zst"] {
        let img = fixture(zst);
        let out = run_ok(&["ls", p(&img), "disk:/"]);
        assert!(
            !stderr(&out).contains("warning") && !stderr(&out).contains("note"),
            "{zst}: {}",
            stderr(&out)
        );
        let report = probe(&["probe", "--json", p(&img)]);
        assert_eq!(
            volume(&report, "disk")["content"]["fs"]["consistency"]["unmount"],
            "clean",
            "{zst}"
        );
        let v = verify_json(&img);
        assert_eq!(v["totals"]["volumes_may_miss_changes"], 0, "{zst}");
    }
}

/// A FAT16 volume whose clean-shutdown bit (FAT[1] bit 15) is cleared, as Windows leaves
/// a volume it was writing when the power went: FAT has no journal, so every command
/// warns that recent changes may be missing, and verify counts it.
#[test]
fn a_dirty_fat_is_warned_about_by_every_command() {
    let clean = fixture("fat/fat16.img.zst");
    let mut bytes = std::fs::read(&clean).unwrap();
    let bps = u16::from_le_bytes([bytes[11], bytes[12]]) as usize;
    let reserved = u16::from_le_bytes([bytes[14], bytes[15]]) as usize;
    let fat = reserved * bps;
    let entry1 = u16::from_le_bytes([bytes[fat + 2], bytes[fat + 3]]);
    assert_ne!(entry1 & 0x8000, 0, "the fixture is clean to begin with");
    let dirty = (entry1 & !0x8000).to_le_bytes();
    bytes[fat + 2..fat + 4].copy_from_slice(&dirty);
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fat16-dirty.img");
    std::fs::write(&img, &bytes).unwrap();
    for args in [
        vec!["ls", p(&img), "disk:/"],
        vec!["get", p(&img), "disk:/", "-o", p(dir.path())],
    ] {
        let out = run_ok(&args);
        assert!(
            stderr(&out).contains("disk: warning:") && stderr(&out).contains("may be missing"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let s = stdout(&run_ok(&["probe", p(&img)]));
    assert!(s.contains("WARNING:"), "{s}");
    let v = verify_json(&img);
    assert_eq!(v["totals"]["volumes_may_miss_changes"], 1, "{v}");
    assert_eq!(v["volumes"][0]["consistency"]["unmount"], "dirty", "{v}");
    let prom = dir.path().join("flr.prom");
    run_ok(&["verify", p(&img), "--prometheus", p(&prom)]);
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(
        text.contains("flr_verify_volumes_may_miss_changes{") && text.contains("} 1"),
        "{text}"
    );
}
