//! The corpus tier: the dissect.btrfs images in ../shared/corpus, checked
//! against hashes the kernel's Btrfs computed on read-only loop mounts
//! (`expected/dissect-btrfs*.tsv`). Skips loudly without the corpus.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use flr_btrfs::{assemble, BtrfsFs, Device};
use flr_fs::{FileKind, Filesystem, FsPath};

struct Fs {
    name: String,
    members: Vec<String>,
    label: String,
    fsid: String,
    profiles: String,
    default: u64,
    subvols: Vec<(u64, String)>,
    files: usize,
    symlinks: usize,
    degraded_ok: bool,
}

fn table(corpus: &Path) -> Vec<Fs> {
    let t = std::fs::read_to_string(corpus.join("expected/dissect-btrfs.tsv")).expect("table");
    t.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            Fs {
                name: c[0].into(),
                members: c[1].split(',').map(str::to_string).collect(),
                label: if c[2] == "(empty)" {
                    String::new()
                } else {
                    c[2].into()
                },
                fsid: c[3].into(),
                profiles: c[4].into(),
                default: c[5].parse().unwrap(),
                subvols: c[6]
                    .split(' ')
                    .map(|s| {
                        let (id, p) = s.split_once('=').unwrap();
                        (
                            id.parse().unwrap(),
                            if p == "<top>" {
                                String::new()
                            } else {
                                p.into()
                            },
                        )
                    })
                    .collect(),
                files: c[7].parse().unwrap(),
                symlinks: c[8].parse().unwrap(),
                degraded_ok: c[9].contains("without member 1: same files"),
            }
        })
        .collect()
}

fn devices(dir: &Path, members: &[String], skip: Option<usize>) -> Vec<Device> {
    members
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != skip)
        .map(|(i, m)| {
            let src: flr_io::Source = Arc::new(flr_io::FileSource::open(dir.join(m)).unwrap());
            Device::read(src, &format!("m{}", i + 1)).unwrap()
        })
        .collect()
}

fn sha256_file(fs: &dyn Filesystem, p: &FsPath) -> Result<(u64, String), String> {
    use sha2::Digest;
    let mut h = fs.open(p).map_err(|e| format!("{p}: {e}"))?;
    let mut sha = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let n = h
            .read_at(off, &mut buf)
            .map_err(|e| format!("{p} at {off}: {e}"))?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        off += n as u64;
    }
    Ok((off, hex::encode(sha.finalize())))
}

/// Checks every file and symlink of the table against the top level view;
/// a read error is returned, a wrong answer panics.
fn check_files(corpus: &Path, name: &str, top: &BtrfsFs) -> Result<(usize, usize), String> {
    let files =
        std::fs::read_to_string(corpus.join(format!("expected/dissect-{name}.files.tsv"))).unwrap();
    let mut nf = 0;
    for l in files.lines().filter(|l| !l.is_empty()) {
        let c: Vec<&str> = l.split('\t').collect();
        let p = FsPath::parse(c[0]);
        let m = top
            .metadata(&p)
            .map_err(|e| format!("{name}:{}: {e}", c[0]))?;
        assert_eq!(m.kind, FileKind::File, "{name}:{}", c[0]);
        assert_eq!(m.size, c[1].parse::<u64>().unwrap(), "{name}:{}", c[0]);
        let (len, sha) = sha256_file(top, &p)?;
        assert_eq!(len, m.size, "{name}:{}", c[0]);
        assert_eq!(sha, c[2], "{name}:{} content", c[0]);
        // The table gives `tree:inode`; a file outside the top level has the
        // documented id `(tree << 32) ^ inode`, unique across subvolumes.
        let (tree, ino) = c[3].split_once(':').unwrap();
        let (tree, ino): (u64, u64) = (tree.parse().unwrap(), ino.parse().unwrap());
        let id = if tree == 5 { ino } else { (tree << 32) ^ ino };
        assert_eq!(m.inode, Some(id), "{name}:{}", c[0]);
        nf += 1;
    }
    let links =
        std::fs::read_to_string(corpus.join(format!("expected/dissect-{name}.symlinks.tsv")))
            .unwrap();
    let mut nl = 0;
    for l in links.lines().filter(|l| !l.is_empty()) {
        let c: Vec<&str> = l.split('\t').collect();
        let p = FsPath::parse(c[0]);
        let m = top
            .metadata(&p)
            .map_err(|e| format!("{name}:{}: {e}", c[0]))?;
        assert_eq!(m.kind, FileKind::Symlink, "{name}:{}", c[0]);
        let t = top
            .read_link(&p)
            .map_err(|e| format!("{name}:{}: {e}", c[0]))?;
        assert_eq!(t, c[1].as_bytes(), "{name}:{}", c[0]);
        nl += 1;
    }
    Ok((nf, nl))
}

fn corpus() -> Option<(PathBuf, PathBuf)> {
    let (unpacked, corpus) = flr_testdata::corpus("flr-btrfs corpus")?;
    Some((unpacked.join("btrfs/dissect-btrfs"), corpus))
}

#[test]
fn corpus_filesystems_match_the_kernel() {
    let Some((dir, corpus)) = corpus() else {
        return;
    };
    let table = table(&corpus);
    assert_eq!(table.len(), 11);
    for fs in &table {
        let devs = devices(&dir, &fs.members, None);
        let asm = assemble(&devs);
        assert_eq!(asm.len(), 1, "{}", fs.name);
        let a = &asm[0];
        assert!(a.complete(), "{}: {:?}", fs.name, a.missing);
        assert_eq!(a.fsid, fs.fsid, "{}", fs.name);
        assert_eq!(a.label, fs.label, "{}", fs.name);
        assert_eq!(a.members.len(), fs.members.len(), "{}", fs.name);
        let root = a.open().unwrap_or_else(|e| panic!("{}: {e}", fs.name));
        assert_eq!(root.default_subvolume(), fs.default, "{}", fs.name);
        assert_eq!(root.subvolume_id(), fs.default, "{}", fs.name);
        let profiles = root.profiles();
        let p = |k: &str| {
            profiles
                .iter()
                .filter(|(kind, _)| kind == k)
                .map(|(_, p)| p.name())
                .collect::<Vec<_>>()
        };
        let want: Vec<&str> = fs.profiles.split('/').collect();
        assert!(
            p("data").contains(&want[0]),
            "{}: data {:?}",
            fs.name,
            profiles
        );
        assert!(
            p("metadata").contains(&want[1]),
            "{}: metadata {:?}",
            fs.name,
            profiles
        );
        assert!(
            p("system").contains(&want[2]),
            "{}: system {:?}",
            fs.name,
            profiles
        );
        let subs: Vec<(u64, String)> = root
            .subvolumes()
            .unwrap()
            .into_iter()
            .map(|s| (s.id, s.path))
            .collect();
        assert_eq!(subs, fs.subvols, "{}", fs.name);
        let top = root.open_subvolume(5).unwrap();
        let (nf, nl) = check_files(&corpus, &fs.name, &top).unwrap();
        assert_eq!((nf, nl), (fs.files, fs.symlinks), "{}", fs.name);
        eprintln!("{}: {nf} files, {nl} symlinks match", fs.name);
    }
}

#[test]
fn corpus_degraded_members() {
    let Some((dir, corpus)) = corpus() else {
        return;
    };
    for fs in table(&corpus).iter().filter(|f| f.members.len() > 1) {
        for skip in 0..fs.members.len() {
            let devs = devices(&dir, &fs.members, Some(skip));
            let asm = assemble(&devs);
            assert_eq!(asm.len(), 1);
            let a = &asm[0];
            assert!(!a.complete(), "{} without member {}", fs.name, skip + 1);
            assert_eq!(a.missing.len(), 1, "{}: {:?}", fs.name, a.missing);
            let survives = match fs.name.as_str() {
                "btrfs-dup" => skip == 0,
                "btrfs-raid0" => false,
                _ => true,
            };
            let got = a
                .open()
                .map_err(|e| e.to_string())
                .and_then(|root| root.open_subvolume(5).map_err(|e| e.to_string()))
                .and_then(|top| check_files(&corpus, &fs.name, &top));
            match (survives, got) {
                (true, Ok(n)) => {
                    eprintln!("{} without member {}: {n:?} match", fs.name, skip + 1)
                }
                (true, Err(e)) => panic!("{} without member {}: {e}", fs.name, skip + 1),
                (false, Ok(_)) => {
                    panic!("{} without member {} read everything", fs.name, skip + 1)
                }
                (false, Err(e)) => {
                    assert!(e.contains("missing"), "{e}");
                    eprintln!("{} without member {}: {e}", fs.name, skip + 1)
                }
            }
        }
        assert_eq!(
            fs.degraded_ok,
            fs.name != "btrfs-dup" && fs.name != "btrfs-raid0"
        );
    }
}

/// Three single-device images share one fsid: one call gives three
/// filesystems, each its own files; a call with one gives that one.
#[test]
fn images_sharing_an_fsid_stay_apart() {
    let Some((dir, corpus)) = corpus() else {
        return;
    };
    let names = [
        "btrfs-default",
        "btrfs-subvolume",
        "btrfs-subvolume-custom-default",
    ];
    let members: Vec<String> = names.iter().map(|n| format!("{n}.bin")).collect();
    let devs = devices(&dir, &members, None);
    assert!(devs.iter().all(|d| d.fsid() == devs[0].fsid()));
    let asm = assemble(&devs);
    assert_eq!(asm.len(), 3);
    for (a, name) in asm.iter().zip(names) {
        assert!(a.complete());
        let top = a.open().unwrap().open_subvolume(5).unwrap();
        check_files(&corpus, name, &top).unwrap();
    }
    for (i, name) in names.iter().enumerate() {
        let one = assemble(&devs[i..=i]);
        let top = one[0].open().unwrap().open_subvolume(5).unwrap();
        check_files(&corpus, name, &top).unwrap();
    }
}
