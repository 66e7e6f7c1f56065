//! flr-md on its own fixtures (testdata/md, written by gen.py from a
//! documented geometry and checked with `mdadm --examine`, see gen.sh):
//! RAID4, RAID5 in all its layouts, RAID6, RAID10 far/offset/near, 0.90
//! big-endian, 1.0 and 1.1 superblocks, a stale member, a spare, a
//! three-zone alternate RAID0. Each array's bytes against the sha256 of the
//! pattern gen.py placed on the members; again with each member removed,
//! and for RAID6 with each pair removed (two data blocks, data + P and
//! data + Q, P + Q, across the rotation). Then hostile superblocks.

use std::sync::Arc;

use flr_io::{FileSource, MemSource, ReadAt, Source};
use flr_md::{
    assemble, probe, ArrayStatus, Layout, Level, MdError, Member, Metadata, ParityLayout,
    Raid0Layout, Role, Unsupported,
};

struct Row {
    name: String,
    members: Vec<String>,
    metadata: String,
    level: u32,
    layout: u32,
    chunk: u64,
    size: u64,
    stale: Option<usize>,
    spares: Vec<String>,
    sha256: String,
}

fn rows() -> Vec<Row> {
    let t = std::fs::read_to_string(flr_testdata::testdata_dir().join("md/arrays.tsv")).unwrap();
    t.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            let list = |s: &str| -> Vec<String> {
                if s == "-" {
                    vec![]
                } else {
                    s.split(',').map(str::to_string).collect()
                }
            };
            Row {
                name: c[0].into(),
                members: list(c[1]),
                metadata: c[2].into(),
                level: c[3].parse().unwrap(),
                layout: c[4].parse().unwrap(),
                chunk: c[5].parse().unwrap(),
                size: c[6].parse().unwrap(),
                stale: c[7].parse().ok(),
                spares: list(c[8]),
                sha256: c[9].into(),
            }
        })
        .collect()
}

fn member_source(file: &str) -> Source {
    Arc::new(FileSource::open(flr_testdata::fixture(&format!("md/{file}.zst"))).unwrap())
}

fn read_all(src: &dyn ReadAt) -> Vec<u8> {
    let mut all = vec![0u8; usize::try_from(src.len()).unwrap()];
    let step = 100_003;
    let mut at = 0;
    while at < all.len() {
        let n = step.min(all.len() - at);
        src.read_exact_at(at as u64, &mut all[at..at + n]).unwrap();
        at += n;
    }
    all
}

fn members_of(row: &Row) -> Vec<Member> {
    row.members
        .iter()
        .chain(&row.spares)
        .enumerate()
        .map(|(i, f)| {
            let s = member_source(f);
            let mut head = vec![0u8; 64 << 10];
            let n = head.len().min(s.len() as usize);
            s.read_exact_at(0, &mut head[..n]).unwrap();
            assert!(probe(&head[..n], s.as_ref()), "{f}: probe");
            Member::read(s, &format!("d{i}/p1")).unwrap()
        })
        .collect()
}

fn without(members: &[Member], gone: &[usize]) -> Vec<Member> {
    members
        .iter()
        .enumerate()
        .filter(|(i, _)| !gone.contains(i))
        .map(|(_, m)| m.clone())
        .collect()
}

#[test]
fn every_fixture_array_reads_the_pattern() {
    let table = rows();
    assert_eq!(table.len(), 26);
    for row in &table {
        let members = members_of(row);
        let arrays = assemble(&members);
        assert_eq!(arrays.len(), 1, "{}", row.name);
        let a = &arrays[0];
        if row.metadata != "0.90be" {
            assert_eq!(a.name, format!("flr:{}", row.name));
        }
        let meta = match row.metadata.as_str() {
            "0.90be" => Metadata::V090 { big_endian: true },
            "1.0" => Metadata::V1 { minor: 0 },
            "1.1" => Metadata::V1 { minor: 1 },
            _ => Metadata::V1 { minor: 2 },
        };
        assert_eq!(a.metadata, meta, "{}", row.name);
        assert_eq!(members[0].layout, row.layout);
        assert_eq!(a.chunk, row.chunk);
        assert_eq!(a.size, Some(row.size), "{}", row.name);
        let level = match row.level {
            0 => Level::Raid0,
            1 => Level::Raid1,
            4 => Level::Raid4,
            5 => Level::Raid5,
            6 => Level::Raid6,
            _ => Level::Raid10,
        };
        assert_eq!(a.level, level);
        match row.stale {
            Some(r) => {
                assert_eq!(a.stale.len(), 1, "{}", row.name);
                assert_eq!(a.stale[0].location, format!("d{r}/p1"));
                assert!(a.stale[0].reason.contains("events 5 < 7"), "{:?}", a.stale);
                assert_eq!(
                    a.status,
                    ArrayStatus::Degraded {
                        missing: vec![r as u32]
                    }
                );
            }
            None => assert_eq!(a.status, ArrayStatus::Clean, "{}", row.name),
        }
        assert_eq!(a.spares.len(), row.spares.len());
        if let Some(s) = a.spares.first() {
            assert_eq!(s.role, Role::Spare);
        }
        let dev = a.open().unwrap();
        let all = read_all(dev.as_ref());
        assert_eq!(
            flr_testdata::sha256_hex(&all),
            row.sha256,
            "{}: array content",
            row.name
        );
        // Small reads across chunk boundaries agree with the big ones.
        let chunk = row.chunk.max(4096);
        for c in 1..(row.size / chunk).min(24) {
            let at = c * chunk - 3;
            let mut b = [0u8; 7];
            dev.read_exact_at(at, &mut b).unwrap();
            assert_eq!(
                &b[..],
                &all[at as usize..at as usize + 7],
                "{} at {at}",
                row.name
            );
        }
        assert!(dev.read_exact_at(row.size - 2, &mut [0u8; 3]).is_err());
    }
}

#[test]
fn degraded_arrays_rebuild_the_pattern() {
    for row in rows() {
        if row.level == 0 || row.stale.is_some() {
            continue;
        }
        let members = members_of(&row);
        let n = row.members.len();
        // Each member removed.
        for gone in 0..n {
            let a = &assemble(&without(&members, &[gone]))[0];
            assert_eq!(a.missing(), vec![gone as u32]);
            assert!(!a.complete());
            assert_eq!(
                a.status,
                ArrayStatus::Degraded {
                    missing: vec![gone as u32]
                },
                "{} without {gone}",
                row.name
            );
            let all = read_all(a.open().unwrap().as_ref());
            assert_eq!(
                flr_testdata::sha256_hex(&all),
                row.sha256,
                "{} without member {gone}",
                row.name
            );
        }
        // Each pair removed.
        let mut survived = 0;
        let mut failed = 0;
        for x in 0..n {
            for y in x + 1..n {
                let a = &assemble(&without(&members, &[x, y]))[0];
                let missing = vec![x as u32, y as u32];
                match row.level {
                    6 | 1 | 10
                        if a.status
                            == (ArrayStatus::Degraded {
                                missing: missing.clone(),
                            }) =>
                    {
                        survived += 1;
                        let all = read_all(a.open().unwrap().as_ref());
                        assert_eq!(
                            flr_testdata::sha256_hex(&all),
                            row.sha256,
                            "{} without members {x} and {y}",
                            row.name
                        );
                    }
                    _ => {
                        failed += 1;
                        assert_eq!(
                            a.status,
                            ArrayStatus::Failed { missing },
                            "{} without {x},{y}",
                            row.name
                        );
                        let e = a.open().err().expect("refused").to_string();
                        assert!(
                            e.contains(&format!("roles {x}, {y}")) && e.contains(&a.label()),
                            "{e}"
                        );
                    }
                }
            }
        }
        match row.level {
            6 => assert_eq!(failed, 0, "{}: RAID6 survives any two", row.name),
            4 | 5 => assert_eq!(survived, 0),
            // Two of three mirrors gone leaves one.
            1 => assert_eq!(failed, 0),
            // RAID10 with three or more copies survives any two; with two
            // copies it loses the pairs that held both copies of a chunk.
            _ => {
                let copies = (row.layout & 0xff) * ((row.layout >> 8) & 0xff);
                if copies >= 3 {
                    assert_eq!(failed, 0, "{}", row.name);
                } else {
                    assert!(failed > 0, "{}", row.name);
                }
            }
        }
        // RAID6 without three members: refused, naming them.
        if row.level == 6 {
            let a = &assemble(&without(&members, &[0, 1, 2]))[0];
            assert_eq!(
                a.status,
                ArrayStatus::Failed {
                    missing: vec![0, 1, 2]
                }
            );
            assert!(a.open().is_err());
        }
    }
}

#[test]
fn the_reported_layouts() {
    let by = |name: &str| {
        let row = rows().into_iter().find(|r| r.name == name).unwrap();
        assemble(&members_of(&row)).remove(0)
    };
    assert_eq!(
        by("r5-la").layout,
        Layout::Parity(ParityLayout::LeftAsymmetric)
    );
    assert_eq!(by("r5-rs").layout.to_string(), "right-symmetric");
    assert_eq!(by("r4").layout, Layout::Parity(ParityLayout::ParityLast));
    assert_eq!(by("r10-f2").layout.to_string(), "far=2");
    assert_eq!(by("r10-o2").layout.to_string(), "offset=2");
    assert_eq!(by("r10-n2").layout.to_string(), "near=2");
    assert_eq!(by("r0-alt").layout, Layout::Raid0(Raid0Layout::Alternate));
    let r1 = by("r1-10");
    assert_eq!(r1.first_location(), Some("d0/p1"));
    assert!(r1.members[2].member.is_none());
}

// ---------------------------------------------------------------- hostile

/// The 1.x checksum, written here again from md_p.h's description.
fn fix_csum(sb: &mut [u8]) {
    let max_dev = u32::from_le_bytes(sb[220..224].try_into().unwrap()) as usize;
    let n = (256 + 2 * max_dev).min(sb.len());
    sb[216..220].fill(0);
    let mut sum: u64 = 0;
    for w in sb[..n - n % 4].chunks(4) {
        sum += u64::from(u32::from_le_bytes(w.try_into().unwrap()));
    }
    if n % 4 == 2 {
        sum += u64::from(u16::from_le_bytes([sb[n - 2], sb[n - 1]]));
    }
    let c = ((sum & 0xffff_ffff) + (sum >> 32)) as u32;
    sb[216..220].copy_from_slice(&c.to_le_bytes());
}

/// Member 0 of r5-rs (1.2: superblock at 4096), with `f` applied to its
/// superblock and the checksum recomputed.
fn patched(f: impl Fn(&mut [u8])) -> Result<Member, MdError> {
    let src = member_source("r5-rs-0.img");
    let mut b = vec![0u8; src.len() as usize];
    src.read_exact_at(0, &mut b).unwrap();
    f(&mut b[4096..8192]);
    fix_csum(&mut b[4096..8192]);
    Member::read(Arc::new(MemSource::new(b)), "x")
}

fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn unsupported_states_are_named() {
    for (bit, want) in [
        (4, Unsupported::Reshape),
        (512, Unsupported::Journal),
        (1024, Unsupported::Ppl),
    ] {
        let m = patched(|sb| put32(sb, 8, bit)).unwrap();
        let a = &assemble(&[m])[0];
        assert_eq!(a.status, ArrayStatus::Unsupported(want.clone()));
        let e = a.open().err().unwrap().to_string();
        assert!(e.contains("flr:r5-rs"), "{e}");
    }
    // A multipath array.
    let m = patched(|sb| put32(sb, 72, (-4i32) as u32)).unwrap();
    assert_eq!(
        assemble(&[m])[0].status,
        ArrayStatus::Unsupported(Unsupported::Level(-4))
    );
    // RAID5 layout 9 is a RAID6-only layout.
    let m = patched(|sb| put32(sb, 76, 9)).unwrap();
    assert!(matches!(
        assemble(&[m])[0].status,
        ArrayStatus::Unsupported(Unsupported::Layout { .. })
    ));
    // A bitmap is ignored.
    let m = patched(|sb| put32(sb, 8, 1)).unwrap();
    assert_eq!(
        assemble(&[m])[0].status,
        ArrayStatus::Degraded {
            missing: vec![1, 2, 3, 4]
        }
        .clone()
        .into_failed()
    );
    // Multi-zone RAID0 without a recorded layout.
    let row = rows().into_iter().find(|r| r.name == "r0-alt").unwrap();
    let ms: Vec<Member> = row
        .members
        .iter()
        .map(|f| {
            let src = member_source(f);
            let mut b = vec![0u8; src.len() as usize];
            src.read_exact_at(0, &mut b).unwrap();
            put32(&mut b[4096..], 8, 0);
            put32(&mut b[4096..], 76, 0);
            fix_csum(&mut b[4096..8192]);
            Member::read(Arc::new(MemSource::new(b)), f).unwrap()
        })
        .collect();
    assert_eq!(
        assemble(&ms)[0].status,
        ArrayStatus::Unsupported(Unsupported::Raid0LayoutUnrecorded)
    );
    // External metadata: IMSM's signature in the second-last sector.
    let mut b = vec![0u8; 1 << 20];
    let at = b.len() - 1024;
    b[at..at + 24].copy_from_slice(b"Intel Raid ISM Cfg Sig. ");
    let s: Source = Arc::new(MemSource::new(b));
    assert!(probe(&[0u8; 8192], s.as_ref()));
    match Member::read(s, "x") {
        Err(MdError::Unsupported {
            what: Unsupported::ExternalMetadata(k),
            offset,
        }) => {
            assert_eq!(k, "Intel IMSM");
            assert_eq!(offset, (1 << 20) - 1024);
        }
        other => panic!("{other:?}"),
    }
}

trait IntoFailed {
    fn into_failed(self) -> ArrayStatus;
}
impl IntoFailed for ArrayStatus {
    fn into_failed(self) -> ArrayStatus {
        match self {
            ArrayStatus::Degraded { missing } => ArrayStatus::Failed { missing },
            s => s,
        }
    }
}

#[test]
fn absurd_values_are_refused_with_the_offset() {
    let corrupt = |f: &dyn Fn(&mut [u8]), what: &str| {
        let e = patched(f)
            .err()
            .unwrap_or_else(|| panic!("{what}: not refused"));
        let s = e.to_string();
        assert!(
            matches!(e, MdError::Corrupt { offset: 4096, .. }) && s.contains(what),
            "{s}"
        );
    };
    corrupt(&|sb| put32(sb, 88, 3), "chunk size");
    corrupt(&|sb| put32(sb, 88, 0), "chunk size");
    corrupt(&|sb| put32(sb, 88, u32::MAX), "chunk size");
    corrupt(&|sb| put32(sb, 92, 0), "raid disks");
    corrupt(&|sb| put32(sb, 92, 1_000_000), "raid disks");
    corrupt(&|sb| put32(sb, 220, 5000), "role table");
    corrupt(
        &|sb| sb[128..136].copy_from_slice(&u64::MAX.to_le_bytes()),
        "overflows",
    );
    corrupt(
        &|sb| sb[128..136].copy_from_slice(&(1u64 << 40).to_le_bytes()),
        "past the member",
    );
    corrupt(
        &|sb| sb[128..136].copy_from_slice(&1u64.to_le_bytes()),
        "overlaps",
    );
    corrupt(
        &|sb| sb[144..152].copy_from_slice(&9u64.to_le_bytes()),
        "records itself",
    );
    corrupt(
        &|sb| sb[80..88].copy_from_slice(&(1u64 << 30).to_le_bytes()),
        "uses",
    );
    // A bad checksum.
    let src = member_source("r5-rs-0.img");
    let mut b = vec![0u8; src.len() as usize];
    src.read_exact_at(0, &mut b).unwrap();
    b[4096 + 100] ^= 1;
    let e = Member::read(Arc::new(MemSource::new(b.clone())), "x").unwrap_err();
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
    assert!(!probe(&b[..8192], &MemSource::new(b.clone())));
}

#[test]
fn random_superblock_damage_never_panics() {
    let src = member_source("r6-ls-0.img");
    let mut base = vec![0u8; src.len() as usize];
    src.read_exact_at(0, &mut base).unwrap();
    let others: Vec<Member> = (1..5)
        .map(|i| Member::read(member_source(&format!("r6-ls-{i}.img")), "o").unwrap())
        .collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..600 {
        let mut b = base.clone();
        for _ in 0..1 + round % 4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = 4096 + (x % 272) as usize;
            b[at] = (x >> 40) as u8;
        }
        fix_csum(&mut b[4096..8192]);
        if let Ok(m) = Member::read(Arc::new(MemSource::new(b)), "x") {
            let mut all = others.clone();
            all.insert(0, m);
            for a in assemble(&all) {
                let _ = a.complete();
                if let Ok(dev) = a.open() {
                    let mut buf = vec![0u8; 70_000];
                    let len = dev.len();
                    for at in [0, len / 3, len.saturating_sub(70_000)] {
                        let n = (len - at).min(70_000) as usize;
                        let _ = dev.read_exact_at(at, &mut buf[..n]);
                    }
                }
            }
        }
    }
}

/// Counts the reads that reach a member.
struct Counting {
    inner: Source,
    reads: std::sync::Mutex<Vec<(u64, usize)>>,
}

impl ReadAt for Counting {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), flr_io::IoError> {
        self.reads.lock().unwrap().push((offset, buf.len()));
        self.inner.read_exact_at(offset, buf)
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
}

#[test]
fn reads_go_straight_to_the_data_and_never_to_parity() {
    let row = rows().into_iter().find(|r| r.name == "r5-ls").unwrap();
    let chunk = row.chunk as usize;
    // r5-ls: left-symmetric over three 1.0 members (data from byte 0): the
    // parity of stripe s is on member 2 - s mod 3. Zero every parity chunk:
    // a clean read must not notice.
    let mut imgs: Vec<Vec<u8>> = row
        .members
        .iter()
        .map(|f| {
            let s = member_source(f);
            let mut b = vec![0u8; s.len() as usize];
            s.read_exact_at(0, &mut b).unwrap();
            b
        })
        .collect();
    let stripes = row.size as usize / chunk / 2;
    for s in 0..stripes {
        let p = 2 - s % 3;
        imgs[p][s * chunk..(s + 1) * chunk].fill(0);
    }
    let counters: Vec<Arc<Counting>> = imgs
        .into_iter()
        .map(|b| {
            Arc::new(Counting {
                inner: Arc::new(MemSource::new(b)),
                reads: Default::default(),
            })
        })
        .collect();
    let members: Vec<Member> = counters
        .iter()
        .enumerate()
        .map(|(i, c)| Member::read(c.clone(), &format!("m{i}")).unwrap())
        .collect();
    for c in &counters {
        c.reads.lock().unwrap().clear();
    }
    let a = &assemble(&members)[0];
    let dev = a.open().unwrap();
    let all = read_all(dev.as_ref());
    assert_eq!(
        flr_testdata::sha256_hex(&all),
        row.sha256,
        "parity was read"
    );
    // One positioned read per chunk: two stripes (four data chunks) = four reads.
    for c in &counters {
        c.reads.lock().unwrap().clear();
    }
    let mut b = vec![0u8; 4 * chunk];
    dev.read_exact_at(0, &mut b).unwrap();
    let n: usize = counters.iter().map(|c| c.reads.lock().unwrap().len()).sum();
    assert_eq!(n, 4);
    // With member 0 missing, its chunks are rebuilt from the zeroed parity:
    // wrong bytes, which shows parity is read only then.
    let a = &assemble(&members[1..])[0];
    let all = read_all(a.open().unwrap().as_ref());
    assert_ne!(flr_testdata::sha256_hex(&all), row.sha256);

    // A RAID1 read is one read of one member, however long.
    let row = rows().into_iter().find(|r| r.name == "r1-10").unwrap();
    let c = Arc::new(Counting {
        inner: member_source(&row.members[0]),
        reads: Default::default(),
    });
    let m = Member::read(c.clone(), "m0").unwrap();
    c.reads.lock().unwrap().clear();
    let dev = assemble(&[m])[0].open().unwrap();
    let mut b = vec![0u8; 200_000];
    dev.read_exact_at(1000, &mut b).unwrap();
    assert_eq!(*c.reads.lock().unwrap(), [(1000, 200_000)]);
}

#[test]
fn layout_names_agree_with_mdadm() {
    // examine.txt: `mdadm --examine` of every fixture member (gen.sh).
    let text =
        std::fs::read_to_string(flr_testdata::testdata_dir().join("md/examine.txt")).unwrap();
    let mut mdadm: std::collections::BTreeMap<String, String> = Default::default();
    let mut current = String::new();
    for l in text.lines() {
        if let Some(f) = l.strip_suffix(".img:") {
            current = f.rsplit_once('-').map_or(f, |(a, _)| a).to_string();
        } else if let Some(v) = l.trim().strip_prefix("Layout : ") {
            mdadm.insert(current.clone(), v.to_string());
        }
    }
    let mut checked = 0;
    for row in rows() {
        let a = assemble(&members_of(&row)).remove(0);
        if let Some(name) = mdadm.get(&row.name) {
            assert_eq!(&a.layout.to_string(), name, "{}", row.name);
            checked += 1;
        }
    }
    assert!(checked >= 22, "{checked}");
}

/// Says that everything from `from` on reads as zeros (like an unallocated
/// VHD block below).
struct ZeroFrom {
    inner: Source,
    from: u64,
}

impl ReadAt for ZeroFrom {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), flr_io::IoError> {
        self.inner.read_exact_at(offset, buf)
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn is_known_zero(&self, offset: u64, _len: u64) -> bool {
        offset >= self.from
    }
}

#[test]
fn known_zero_ranges_pass_through_the_array() {
    // r0-alt's members (1.2, data at 64 KiB) said to be zero past 128 KiB of data.
    let row = rows().into_iter().find(|r| r.name == "r0-alt").unwrap();
    let members: Vec<Member> = row
        .members
        .iter()
        .map(|f| {
            let z: Source = Arc::new(ZeroFrom {
                inner: member_source(f),
                from: (64 << 10) + (128 << 10),
            });
            Member::read(z, f).unwrap()
        })
        .collect();
    let dev = assemble(&members)[0].open().unwrap();
    // Zone 0 stripes 128 KiB of each of the three members: array bytes 0..384 KiB.
    assert!(!dev.is_known_zero(0, 4096));
    assert!(!dev.is_known_zero((384 << 10) - 1, 1));
    assert!(dev.is_known_zero(384 << 10, dev.len() - (384 << 10)));
    assert!(!dev.is_known_zero(dev.len(), 1));
}
