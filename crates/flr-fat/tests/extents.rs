//! `Filesystem::extents` against mtools, which reads the images on its
//! own: for every object of the fixtures, the clusters flr names are the
//! chain `mshowfat` prints, placed with the geometry `minfo` prints; the
//! FAT bytes are those chains' entries in the first FAT; and the
//! directory entry flr names ends in the 8.3 slot that holds the chain's
//! first cluster and the size `mdir` shows, after as many long-name slots
//! as the name needs.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use flr_fat::FatFs;
use flr_fs::{FileKind, Filesystem, FsPath};
use flr_io::FileSource;
use flr_testdata::normalize_ranges;

fn tool(name: &str, args: &[&str]) -> String {
    let out = Command::new(name).args(args).output().expect("run mtools");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Geo {
    fat_type: u32,
    fat_offset: u64,
    fats_end: u64,
    data_offset: u64,
    cluster: u64,
}

fn geometry(img: &Path) -> Geo {
    let info = tool("minfo", &["-i", img.to_str().unwrap(), "::"]);
    let field = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("minfo printed no {name}"))
            .parse()
            .unwrap()
    };
    let ss = field("sector size: ");
    let reserved = field("reserved (boot) sectors: ");
    let fats = field("fats: ");
    let mut spf = field("sectors per fat: ");
    if spf == 0 {
        spf = info
            .lines()
            .find_map(|l| l.strip_prefix("Big fatlen="))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    }
    let root = field("max available root directory slots: ") * 32;
    let fat_type = info
        .lines()
        .find_map(|l| l.strip_prefix("disk type=\"FAT"))
        .map(|r| r[..2].parse().unwrap())
        .expect("minfo printed the FAT type");
    Geo {
        fat_type,
        fat_offset: reserved * ss,
        fats_end: (reserved + fats * spf) * ss,
        data_offset: (reserved + fats * spf) * ss + root.div_ceil(ss) * ss,
        cluster: field("cluster size: ") * ss,
    }
}

#[test]
fn extents_match_mtools() {
    if !flr_testdata::have_tool("mshowfat") {
        flr_testdata::loud("SKIPPED extents_match_mtools: mtools not installed");
        return;
    }
    // Not fat32-4k: mtools 4.0 cannot read the FAT of a volume with 4 KiB
    // sectors ("Cluster # at 5 too big").
    for name in ["fat12", "fat16", "fat32"] {
        let img = flr_testdata::fixture(&format!("fat/{name}.img.zst"));
        let raw = std::fs::read(&img).unwrap();
        let fs = FatFs::open(Arc::new(FileSource::open(&img).unwrap())).unwrap();
        let g = geometry(&img);
        let imgs = img.to_str().unwrap();
        let mut checked = 0;
        for (rel, (kind, size)) in common::walk(&fs) {
            let path = FsPath::parse(&format!("/{rel}"));
            let x = fs.extents(&path).unwrap().expect("fat answers");
            let shown = format!("{name}:/{rel}");
            // The chain, from mshowfat: "::/f <384-386> <390-392>".
            let chain = tool("mshowfat", &["-i", imgs, &format!("::/{rel}")]);
            let runs: Vec<(u64, u64)> = chain
                .split('<')
                .skip(1)
                .map(|r| {
                    let r = r.split('>').next().unwrap();
                    let (a, b) = r.split_once('-').unwrap_or((r, r));
                    (a.trim().parse().unwrap(), b.trim().parse().unwrap())
                })
                .collect();
            let data = normalize_ranges(
                runs.iter()
                    .map(|&(a, b)| (g.data_offset + (a - 2) * g.cluster, (b - a + 1) * g.cluster)),
            );
            assert_eq!(
                normalize_ranges(x.data.iter().copied()),
                data,
                "{shown}: clusters"
            );
            // FAT entries of the chain, in the first FAT.
            let pos = |c: u64| match g.fat_type {
                12 => c + c / 2,
                16 => c * 2,
                _ => c * 4,
            };
            let width = if g.fat_type == 32 { 4 } else { 2 };
            let fat = normalize_ranges(
                runs.iter()
                    .map(|&(a, b)| (g.fat_offset + pos(a), pos(b) + width - pos(a))),
            );
            let in_fat = |&(o, _): &(u64, u64)| o >= g.fat_offset && o < g.fats_end;
            let mine_fat: Vec<(u64, u64)> = x.meta.iter().copied().filter(in_fat).collect();
            assert_eq!(normalize_ranges(mine_fat), fat, "{shown}: FAT entries");
            // The directory entry: slots of 32 bytes, the last one the 8.3
            // entry holding the first cluster and the size.
            let slots: Vec<&[u8]> = x
                .meta
                .iter()
                .filter(|r| !in_fat(r))
                .flat_map(|&(o, l)| raw[o as usize..(o + l) as usize].chunks(32))
                .collect();
            let sfn = slots.last().unwrap_or_else(|| panic!("{shown}: no entry"));
            let le16 = |b: &[u8], o: usize| u64::from(u16::from_le_bytes([b[o], b[o + 1]]));
            let first = (if g.fat_type == 32 {
                le16(sfn, 20) << 16
            } else {
                0
            }) | le16(sfn, 26);
            assert_eq!(
                first,
                runs.first().map_or(0, |r| r.0),
                "{shown}: first cluster"
            );
            let stored = u64::from(u32::from_le_bytes(sfn[28..32].try_into().unwrap()));
            if kind == FileKind::File {
                assert_eq!(stored, size, "{shown}: size in the entry");
            } else {
                assert_ne!(sfn[11] & 0x10, 0, "{shown}: a folder's entry");
            }
            let leaf = rel.rsplit('/').next().unwrap();
            let lfn = &slots[..slots.len() - 1];
            assert!(
                lfn.iter().all(|s| s[11] == 0x0f),
                "{shown}: long-name slots"
            );
            let units = leaf.encode_utf16().count();
            if !lfn.is_empty() {
                assert_eq!(
                    lfn.len(),
                    units.div_ceil(13),
                    "{shown}: long-name slot count"
                );
            }
            checked += 1;
        }
        assert!(checked > 10, "{name}: only {checked} objects checked");
        // The root: the fixed area or the root chain.
        let root = fs.extents(&FsPath::root()).unwrap().unwrap();
        assert!(!root.data.is_empty(), "{name}: the root's data");
    }
}
