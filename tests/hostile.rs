//! Path safety: an ext4 image whose names and symlinks try to reach outside
//! the destination (built by testdata/disks/gen.sh, names patched in with
//! Python after mkfs.ext4).

use std::collections::BTreeSet;
use std::path::Path;

use crate::util::*;

fn tree(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.insert(rel);
        }
    }
    out
}

#[test]
fn hostile_names_stay_inside_dest() {
    let img = fixture("disks/hostile.img.zst");
    let outer = tempfile::tempdir().unwrap();
    let dest = outer.path().join("dest");
    let out = run(&["get", p(&img), "disk:/", "-o", p(&dest)]);
    let err = stderr(&out);
    // One entry cannot be restored (a duplicate name), the rest are: a partial result.
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("second entry with this name"), "{err}");
    // Nothing outside DEST: the parent holds only DEST.
    assert_eq!(
        tree(outer.path())
            .into_iter()
            .filter(|p| !p.starts_with("dest"))
            .count(),
        0
    );
    assert!(!Path::new("/tmp/flr-escape").exists());
    let t = tree(&dest);
    // Backslashes, device names and control characters were made safe and reported.
    assert!(t.contains(".._.._evil-backslash.txt"), "{t:?}");
    assert!(t.contains("_CON") && t.contains("_aux.txt"), "{t:?}");
    assert!(t.contains("term_[2Jclear"), "{t:?}");
    assert!(err.contains("restored as"), "{err}");
    // Two entries named L (a symlink to /tmp and a folder): whichever comes first is
    // restored as what it is; nothing is ever written through the link.
    let l = std::fs::symlink_metadata(dest.join("L")).unwrap();
    if l.file_type().is_symlink() {
        assert_eq!(
            std::fs::read_link(dest.join("L")).unwrap(),
            Path::new("/tmp")
        );
    } else {
        assert!(t.contains("L/evil.txt"), "{t:?}");
    }
    assert!(!Path::new("/tmp/evil.txt").exists());
    // Links pointing outside are kept as links with their stored targets.
    assert_eq!(
        std::fs::read_link(dest.join("abs-link")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        std::fs::read_link(dest.join("up-link")).unwrap(),
        Path::new("../../../../../../tmp/flr-escape")
    );
    // The entry patched to ".." never becomes a path step.
    assert!(!t.iter().any(|p| p.split('/').any(|c| c == "..")), "{t:?}");
    assert_eq!(std::fs::read(dest.join("dir/ok.txt")).unwrap(), b"inside\n");
}

#[test]
fn symlink_already_in_dest_is_not_followed() {
    let img = fixture("disks/hostile.img.zst");
    let outer = tempfile::tempdir().unwrap();
    let dest = outer.path().join("dest");
    let elsewhere = outer.path().join("elsewhere");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dest.join("dir")).unwrap();
    let out = run(&["get", p(&img), "disk:/dir", "-o", p(&dest)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("symlink"), "{}", stderr(&out));
    assert!(
        std::fs::read_dir(&elsewhere).unwrap().next().is_none(),
        "wrote through a symlink"
    );
}
