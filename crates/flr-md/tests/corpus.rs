//! flr-md on the third-party corpus (`md/dissect-volume`, arrays made by
//! mdadm on Fedora): every array against `expected/dissect-volume-md.tsv`
//! (members in role order, metadata, level, layout, chunk, data offset,
//! size, UUID, name and the sha256 of the whole array), and again with
//! each member removed in turn for every level that survives it.
//! Skipped, loudly, when the corpus is absent (`FLR_CORPUS`).

use std::path::Path;
use std::sync::Arc;

use flr_io::{FileSource, ReadAt, Source};
use flr_md::{assemble, probe, ArrayStatus, Level, Member};

struct Row {
    array: String,
    members: Vec<String>,
    metadata: String,
    level: String,
    layout: String,
    chunk: String,
    data_offset: u64,
    size: u64,
    uuid: String,
    name: String,
    sha256: String,
}

fn rows(corpus: &Path) -> Vec<Row> {
    let t = std::fs::read_to_string(corpus.join("expected/dissect-volume-md.tsv")).unwrap();
    t.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            Row {
                array: c[0].into(),
                members: c[1].split(',').map(str::to_string).collect(),
                metadata: c[2].into(),
                level: c[3].into(),
                layout: c[4].into(),
                chunk: c[5].into(),
                data_offset: c[6].split(' ').next().unwrap().parse().unwrap(),
                size: c[7].parse().unwrap(),
                uuid: c[8].into(),
                name: c[9].into(),
                sha256: c[13].into(),
            }
        })
        .collect()
}

fn sha(src: &dyn ReadAt) -> String {
    let mut all = vec![0u8; usize::try_from(src.len()).unwrap()];
    // Odd-sized reads, so that pieces start and end inside chunks.
    let step = 300_007;
    let mut at = 0;
    while at < all.len() {
        let n = step.min(all.len() - at);
        src.read_exact_at(at as u64, &mut all[at..at + n]).unwrap();
        at += n;
    }
    flr_testdata::sha256_hex(&all)
}

#[test]
fn corpus_arrays_match_the_expected_table() {
    let Some((unpacked, corpus)) =
        flr_testdata::corpus("flr-md corpus_arrays_match_the_expected_table")
    else {
        return;
    };
    let dir = unpacked.join("md/dissect-volume");
    let table = rows(&corpus);
    assert_eq!(table.len(), 6);
    for row in &table {
        let srcs: Vec<Source> = row
            .members
            .iter()
            .map(|m| Arc::new(FileSource::open(dir.join(m)).unwrap()) as Source)
            .collect();
        // Members found in reverse order, on "different disks".
        let mut members = Vec::new();
        for (i, s) in srcs.iter().enumerate().rev() {
            let mut head = vec![0u8; 64 << 10];
            s.read_exact_at(0, &mut head).unwrap();
            assert!(probe(&head, s.as_ref()), "{}: probe", row.members[i]);
            let m = Member::read(s.clone(), &format!("d{i}/{}", row.members[i])).unwrap();
            assert_eq!(m.data_offset, row.data_offset, "{}", row.array);
            members.push(m);
        }
        let arrays = assemble(&members);
        assert_eq!(arrays.len(), 1, "{}", row.array);
        let a = &arrays[0];
        assert_eq!(a.uuid.to_string(), row.uuid, "{}", row.array);
        assert_eq!(a.metadata.to_string(), row.metadata, "{}", row.array);
        assert_eq!(a.level.to_string(), row.level, "{}", row.array);
        if row.name != "- (0.90 has none)" {
            assert_eq!(a.name, row.name);
        }
        assert_eq!(a.size, Some(row.size), "{}", row.array);
        if row.chunk == "512K" {
            assert_eq!(a.chunk, 512 << 10, "{}", row.array);
        }
        let lay = a.layout.to_string();
        match a.level {
            Level::Raid5 => assert!(row.layout.starts_with(&lay), "{lay} vs {}", row.layout),
            Level::Raid10 => assert!(row.layout.starts_with(&lay), "{lay} vs {}", row.layout),
            Level::Raid0 => assert!(row.layout.starts_with(&lay), "{lay} vs {}", row.layout),
            _ => assert_eq!(lay, "-"),
        }
        assert!(a.complete());
        assert_eq!(a.status, ArrayStatus::Clean, "{}", row.array);
        // Members in role order, each where it was found.
        for (i, slot) in a.members.iter().enumerate() {
            let loc = &slot.member.as_ref().unwrap().location;
            assert_eq!(loc, &format!("d{i}/{}", row.members[i]));
        }
        let dev = a.open().unwrap();
        assert_eq!(dev.len(), row.size);
        assert_eq!(
            sha(dev.as_ref()),
            row.sha256,
            "{}: array content",
            row.array
        );
        assert!(dev.read_exact_at(row.size - 1, &mut [0u8; 2]).is_err());

        // Each member removed in turn.
        for gone in 0..members.len() {
            let rest: Vec<Member> = members
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != gone)
                .map(|(_, m)| m.clone())
                .collect();
            let arrays = assemble(&rest);
            let a = &arrays[0];
            assert!(!a.complete());
            let role = match members[gone].role {
                flr_md::Role::Active(r) => r,
                r => panic!("{r:?}"),
            };
            assert_eq!(a.missing(), vec![role]);
            match a.level {
                Level::Linear | Level::Raid0 => {
                    assert_eq!(
                        a.status,
                        ArrayStatus::Failed {
                            missing: vec![role]
                        }
                    );
                    let e = a.open().err().unwrap().to_string();
                    assert!(
                        e.contains("missing") && e.contains(&role.to_string()),
                        "{e}"
                    );
                }
                _ => {
                    assert_eq!(
                        a.status,
                        ArrayStatus::Degraded {
                            missing: vec![role]
                        },
                        "{} without role {role}",
                        row.array
                    );
                    let dev = a.open().unwrap();
                    assert_eq!(
                        sha(dev.as_ref()),
                        row.sha256,
                        "{} without role {role}: rebuilt content",
                        row.array
                    );
                }
            }
        }
    }
}

#[test]
fn corpus_raid0_zones_and_a_stale_member() {
    let Some((unpacked, _)) = flr_testdata::corpus("flr-md corpus_raid0_zones_and_a_stale_member")
    else {
        return;
    };
    let dir = unpacked.join("md/dissect-volume");
    let open = |n: &str| -> Source { Arc::new(FileSource::open(dir.join(n)).unwrap()) };
    // The RAID1 twice over: the same member found twice is a duplicate.
    let a = Member::read(open("md-raid1-1.bin"), "p1").unwrap();
    let b = Member::read(open("md-raid1-1.bin"), "d2/p1").unwrap();
    let arrays = assemble(&[a, b]);
    assert_eq!(arrays[0].duplicates.len(), 1);
    assert_eq!(arrays[0].duplicates[0].kept, "p1");
    assert_eq!(arrays[0].missing(), vec![1]);
    // A non-member is refused.
    assert!(matches!(
        Member::read(open("md-raid0-1.bin").clone(), "x").map(|m| m.level),
        Ok(Level::Raid0)
    ));
    let lvm = unpacked.join("lvm/dissect-volume/lvm.bin");
    if lvm.exists() {
        let s: Source = Arc::new(FileSource::open(lvm).unwrap());
        assert!(matches!(
            Member::read(s, "x"),
            Err(flr_md::MdError::NotMember)
        ));
    }
}
