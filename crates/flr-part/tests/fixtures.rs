//! flr-part against disks made by sgdisk / sfdisk (testdata/part/gen.sh),
//! with `sfdisk --json` as the oracle, plus damaged variants.

use std::sync::Arc;

use flr_io::{FileSource, MemSource, ReadAt, Source};
use flr_part::{read_table, PartError, PartKind, PartitionTable, Scheme};
use serde_json::Value;

fn open(rel: &str) -> Source {
    Arc::new(FileSource::open(flr_testdata::fixture(rel)).unwrap())
}

fn bytes(rel: &str) -> Vec<u8> {
    std::fs::read(flr_testdata::fixture(rel)).unwrap()
}

fn mem(v: Vec<u8>) -> Source {
    Arc::new(MemSource::new(v))
}

fn oracle(rel: &str) -> Value {
    let text = std::fs::read_to_string(flr_testdata::testdata_dir().join(rel)).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["partitiontable"].clone()
}

/// The partition number at the end of an sfdisk node name (`gpt.img6`,
/// `/dev/loop0p2`).
fn node_number(node: &str) -> u32 {
    let digits: String = node
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().unwrap()
}

/// Compares flr-part's table with sfdisk's JSON: scheme, sector size, disk
/// id, and each partition's number, start, size, type, uuid and name.
fn compare(t: &PartitionTable, o: &Value) {
    let ss = o["sectorsize"].as_u64().unwrap();
    assert_eq!(u64::from(t.sector_size), ss);
    let id = o["id"].as_str().unwrap().to_lowercase();
    match o["label"].as_str().unwrap() {
        "gpt" => {
            assert_eq!(t.scheme, Scheme::Gpt);
            assert_eq!(t.disk_id.as_deref(), Some(id.as_str()));
        }
        "dos" => {
            assert_eq!(t.scheme, Scheme::Mbr);
            assert_eq!(
                t.disk_id.as_deref(),
                Some(id.trim_start_matches("0x")),
                "disk signature"
            );
        }
        other => panic!("label {other}"),
    }
    let expected: Vec<&Value> = o["partitions"]
        .as_array()
        .unwrap()
        .iter()
        // sfdisk lists extended containers; flr-part does not return them.
        .filter(|p| !matches!(p["type"].as_str(), Some("5" | "f" | "85")))
        .collect();
    assert_eq!(t.partitions.len(), expected.len(), "{t:#?}");
    for (p, e) in t.partitions.iter().zip(expected) {
        assert_eq!(p.number, node_number(e["node"].as_str().unwrap()));
        assert_eq!(
            p.start,
            e["start"].as_u64().unwrap() * ss,
            "start of {}",
            p.number
        );
        assert_eq!(
            p.size,
            e["size"].as_u64().unwrap() * ss,
            "size of {}",
            p.number
        );
        match &p.kind {
            PartKind::Gpt {
                type_guid,
                guid,
                name,
                attributes,
                ..
            } => {
                assert!(type_guid.eq_ignore_ascii_case(e["type"].as_str().unwrap()));
                assert!(guid.eq_ignore_ascii_case(e["uuid"].as_str().unwrap()));
                assert_eq!(name, e["name"].as_str().unwrap_or(""));
                let legacy = e["attrs"]
                    .as_str()
                    .is_some_and(|a| a.contains("LegacyBIOSBootable"));
                assert_eq!(attributes & 4 != 0, legacy);
            }
            PartKind::Mbr {
                type_byte,
                bootable,
                logical,
                ..
            } => {
                let ty = u8::from_str_radix(e["type"].as_str().unwrap(), 16).unwrap();
                assert_eq!(*type_byte, ty);
                assert_eq!(*bootable, e["bootable"].as_bool().unwrap_or(false));
                assert_eq!(*logical, p.number >= 5);
            }
        }
    }
}

#[test]
fn gpt_512() {
    let t = read_table(&open("part/gpt.img.zst"), None)
        .unwrap()
        .unwrap();
    compare(&t, &oracle("part/gpt.img.sfdisk.json"));
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    assert_eq!(t.partitions[0].type_name(), Some("EFI System"));
    assert_eq!(t.partitions[1].type_name(), Some("Microsoft reserved"));
    assert_eq!(t.partitions[2].type_name(), Some("Microsoft basic data"));
    assert_eq!(t.partitions[3].type_name(), Some("Linux filesystem"));
    // A wrong hint is only a hint.
    let t4 = read_table(&open("part/gpt.img.zst"), Some(4096))
        .unwrap()
        .unwrap();
    assert_eq!(t4, t);
}

#[test]
fn gpt_4096_byte_sectors() {
    let t = read_table(&open("part/gpt-4k.img.zst"), None)
        .unwrap()
        .unwrap();
    compare(&t, &oracle("part/gpt-4k.img.sfdisk.json"));
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    let t2 = read_table(&open("part/gpt-4k.img.zst"), Some(4096))
        .unwrap()
        .unwrap();
    assert_eq!(t2, t);
}

#[test]
fn gpt_backup_header_is_used_when_primary_is_zeroed() {
    let t = read_table(&open("part/gpt-noprimary.img.zst"), None)
        .unwrap()
        .unwrap();
    compare(&t, &oracle("part/gpt-noprimary.img.sfdisk.json"));
    assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
    assert!(t.warnings[0].contains("backup header at byte offset 0x7ffe00"));
    assert!(t.warnings[0].contains("primary header at byte offset 0x200"));
}

#[test]
fn gpt_backup_entries_are_used_when_primary_entries_are_damaged() {
    let mut d = bytes("part/gpt.img.zst");
    d[1024 + 40] ^= 0xff; // first entry's first LBA, primary array
    let t = read_table(&mem(d), None).unwrap().unwrap();
    compare(&t, &oracle("part/gpt.img.sfdisk.json"));
    assert!(t.warnings[0].contains("CRC"), "{:?}", t.warnings);
}

#[test]
fn mbr_with_logical_partitions() {
    let t = read_table(&open("part/mbr.img.zst"), None)
        .unwrap()
        .unwrap();
    compare(&t, &oracle("part/mbr.img.sfdisk.json"));
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    let numbers: Vec<u32> = t.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, vec![1, 2, 5, 6, 7]);
    assert_eq!(t.partitions[0].type_name(), Some("W95 FAT32 (LBA)"));
}

#[test]
fn partition_open_gives_a_slice() {
    let disk = open("part/mbr.img.zst");
    let t = read_table(&disk, None).unwrap().unwrap();
    let p = t.partitions[2].open(&disk).unwrap();
    assert_eq!(p.len(), 1024 * 512);
    assert_eq!(p.layer(), "partition 5");
}

// ---- damaged inputs: errors or warnings, never panics ----

#[test]
fn truncated_gpt_disk_warns_about_the_backup_and_the_last_partition() {
    let mut d = bytes("part/gpt.img.zst");
    d.truncate(11 * 512 * 1024); // cuts partition 6 and the backup
    let t = read_table(&mem(d), None).unwrap().unwrap();
    assert_eq!(t.partitions.len(), 4);
    let all = t.warnings.join("\n");
    assert!(all.contains("backup header"), "{all}");
    assert!(all.contains("partition 6"), "{all}");
    // Cut inside the primary entry array: no usable GPT at all.
    let mut d = bytes("part/gpt.img.zst");
    d.truncate(4096);
    let e = read_table(&mem(d), None).unwrap_err();
    assert!(matches!(e, PartError::Corrupt { layer: "gpt", .. }), "{e}");
}

#[test]
fn gpt_with_both_headers_zeroed_is_an_error_naming_the_offset() {
    let mut d = bytes("part/gpt.img.zst");
    let n = d.len();
    d[512..1024].fill(0);
    d[n - 512..].fill(0);
    let e = read_table(&mem(d), None).unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("gpt:") && msg.contains("0x1be"), "{msg}");
}

#[test]
fn gpt_header_with_absurd_entry_count_is_rejected_without_panic() {
    // A header that claims 2^32-1 entries of 4096 bytes, with a correct CRC.
    let mut d = bytes("part/gpt.img.zst");
    let h = 512;
    d[h + 80..h + 84].copy_from_slice(&u32::MAX.to_le_bytes());
    d[h + 84..h + 88].copy_from_slice(&4096u32.to_le_bytes());
    d[h + 16..h + 20].fill(0);
    let crc = crc32(&d[h..h + 92]);
    d[h + 16..h + 20].copy_from_slice(&crc.to_le_bytes());
    let t = read_table(&mem(d), None).unwrap().unwrap();
    // The backup is used.
    assert!(
        t.warnings[0].contains("entry size 4096"),
        "{:?}",
        t.warnings
    );
    assert_eq!(t.partitions.len(), 4);
}

#[test]
fn mbr_entries_past_the_end_are_warnings_naming_the_entry() {
    let mut d = bytes("part/mbr.img.zst");
    // Partition 2: size 0xffffffff sectors.
    d[0x1ce + 12..0x1ce + 16].copy_from_slice(&u32::MAX.to_le_bytes());
    let t = read_table(&mem(d), None).unwrap().unwrap();
    assert_eq!(t.partitions.len(), 5);
    assert!(t.warnings[0].contains("partition 2") && t.warnings[0].contains("0x1ce"));
}

#[test]
fn mbr_ebr_loop_stops_with_a_warning() {
    let mut d = bytes("part/mbr.img.zst");
    // The second EBR (before logical 6, at sector 12288) links back to the first (8192).
    let ebr2 = 12288 * 512 + 0x1ce;
    d[ebr2 + 8..ebr2 + 12].copy_from_slice(&0u32.to_le_bytes());
    let t = read_table(&mem(d), None).unwrap().unwrap();
    let numbers: Vec<u32> = t.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, vec![1, 2, 5, 6]);
    assert!(t.warnings[0].contains("loops back") && t.warnings[0].contains("0x400000"));
}

#[test]
fn mbr_ebr_past_the_end_of_the_disk() {
    let mut d = bytes("part/mbr.img.zst");
    d.truncate(9000 * 512);
    let t = read_table(&mem(d), None).unwrap().unwrap();
    let all = t.warnings.join("\n");
    // Logical 5 (sector 10240) is cut off; the second EBR (sector 12288) is gone.
    assert!(all.contains("partition 5"), "{all}");
    assert!(all.contains("EBR at byte offset 0x600000"), "{all}");
    assert_eq!(t.partitions.len(), 3);
}

#[test]
fn random_and_hostile_sectors_do_not_panic() {
    // A pseudo-random walk over sector-0 / header / EBR bytes.
    let base = bytes("part/mbr.img.zst");
    let gpt = bytes("part/gpt.img.zst");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for round in 0..300 {
        let mut d = if round % 2 == 0 {
            base.clone()
        } else {
            gpt.clone()
        };
        for _ in 0..8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = match x % 3 {
                0 => 0x1be + (x >> 8) as usize % 66,
                1 => 512 + (x >> 8) as usize % 512,
                _ => 8192 * 512 + 0x1be + (x >> 8) as usize % 66,
            };
            d[at] = (x >> 40) as u8;
        }
        let _ = read_table(&mem(d), None);
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}
