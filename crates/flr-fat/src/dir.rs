//! Directory entries: 8.3 names, long file names (VFAT LFN), attributes,
//! timestamps.

use std::collections::HashMap;

use flr_fs::Timestamp;

/// Attribute bits.
pub(crate) const ATTR_VOLUME: u8 = 0x08;
pub(crate) const ATTR_DIR: u8 = 0x10;
const ATTR_LFN: u8 = 0x0F;

/// One live directory entry (not `.`/`..`, not deleted, not a label).
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The long name when there is a valid one, else the short name.
    pub(crate) name: String,
    /// The 8.3 name as shown (with the NT lower-case flags applied).
    pub(crate) short: String,
    pub(crate) attr: u8,
    pub(crate) first_cluster: u32,
    pub(crate) size: u32,
    pub(crate) mtime: Option<Timestamp>,
    /// Byte offsets in the directory's data of its first slot (the first
    /// long-name slot, when it has a long name) and of its 8.3 slot.
    pub(crate) slots: (u64, u64),
    /// Creation time (with its 10 ms field), when set.
    pub(crate) ctime: Option<Timestamp>,
    /// Last access date (midnight, local time as stored).
    pub(crate) adate: Option<Timestamp>,
}

impl Entry {
    pub(crate) fn is_dir(&self) -> bool {
        self.attr & ATTR_DIR != 0
    }
}

/// What a directory's bytes hold.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub(crate) entries: Vec<Entry>,
    /// The volume label entry (root directory only), raw.
    pub(crate) label: Option<[u8; 11]>,
    /// Entry index by exact name.
    exact: HashMap<String, usize>,
    /// Entry index by upper-cased long and short names.
    folded: HashMap<String, usize>,
}

impl Listing {
    fn index(&mut self) {
        for (i, e) in self.entries.iter().enumerate() {
            self.exact.entry(e.name.clone()).or_insert(i);
        }
        // Long names take precedence over another entry's short name.
        for (i, e) in self.entries.iter().enumerate() {
            self.folded.entry(e.name.to_uppercase()).or_insert(i);
        }
        for (i, e) in self.entries.iter().enumerate() {
            self.folded.entry(e.short.to_uppercase()).or_insert(i);
        }
    }

    /// Finds `name`: an exact match first, then a case-insensitive match of
    /// a long or short name (as Windows does).
    pub(crate) fn find(&self, name: &str) -> Option<&Entry> {
        let i = self
            .exact
            .get(name)
            .or_else(|| self.folded.get(&name.to_uppercase()))?;
        self.entries.get(*i)
    }

    /// Number of entries (for cache accounting).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Long-name pieces gathered before their short entry.
struct Lfn {
    checksum: u8,
    /// The sequence number expected next (counting down to 1).
    expect: u8,
    /// 13 UTF-16 units per piece, piece 1 first.
    units: Vec<u16>,
}

fn lfn_checksum(name: &[u8]) -> u8 {
    name.iter()
        .fold(0u8, |sum, &b| (sum >> 1 | (sum & 1) << 7).wrapping_add(b))
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Parses the bytes of a directory. `is_fat32` decides whether the high
/// 16 bits of the first cluster are used.
pub(crate) fn parse(data: &[u8], is_fat32: bool) -> Listing {
    let mut out = Listing::default();
    let mut lfn: Option<Lfn> = None;
    let mut lfn_start = 0u64;
    for (i, e) in data.chunks_exact(32).enumerate() {
        let at = i as u64 * 32;
        let first = e[0];
        if first == 0x00 {
            break;
        }
        if first == 0xE5 {
            lfn = None;
            continue;
        }
        let attr = e[11];
        if attr & 0x3F == ATTR_LFN {
            if lfn.is_none() || first & 0x40 != 0 {
                lfn_start = at;
            }
            gather_lfn(&mut lfn, e);
            continue;
        }
        let long = lfn.take();
        let raw_name: [u8; 11] = e[0..11].try_into().unwrap_or([b' '; 11]);
        if attr & ATTR_VOLUME != 0 {
            if attr & ATTR_DIR == 0 && out.label.is_none() {
                out.label = Some(raw_name);
            }
            continue;
        }
        if first == b'.' && (raw_name[1..].iter().all(|&b| b == b' ') || raw_name[1] == b'.') {
            continue; // `.` and `..`
        }
        let short = short_name(&raw_name, e[12]);
        // A long name is given as stored, even with a `/` (crafted): the
        // operations make it safe and report it (a path component is looked
        // up by its bytes). Only `.` and `..`, which no path can reach, fall
        // back to the 8.3 name.
        let first_slot = if long.is_some() { lfn_start } else { at };
        let name = long
            .filter(|l| l.expect == 0 && l.checksum == lfn_checksum(&raw_name))
            .map(|l| decode_lfn(&l.units))
            .filter(|n| !n.is_empty() && n != "." && n != "..")
            .unwrap_or_else(|| short.clone());
        let hi = if is_fat32 { u32::from(le16(e, 20)) } else { 0 };
        out.entries.push(Entry {
            name,
            short,
            attr,
            first_cluster: (hi << 16) | u32::from(le16(e, 26)),
            size: u32::from_le_bytes([e[28], e[29], e[30], e[31]]),
            mtime: fat_time(le16(e, 24), le16(e, 22)),
            slots: (first_slot, at),
            ctime: fat_time(le16(e, 16), le16(e, 14)).map(|mut t| {
                // The tenths byte holds 0..199 units of 10 ms.
                let cs = i64::from(e[13].min(199));
                t.secs += cs / 100;
                t.nanos = u32::try_from(cs % 100).unwrap_or(0) * 10_000_000;
                t
            }),
            adate: fat_time(le16(e, 18), 0),
        });
    }
    out.index();
    out
}

fn gather_lfn(lfn: &mut Option<Lfn>, e: &[u8]) {
    let seq = e[0];
    let n = seq & 0x1F;
    let checksum = e[13];
    if seq & 0x40 != 0 {
        // The last piece comes first and starts a new name.
        if n == 0 || n > 20 {
            *lfn = None;
            return;
        }
        *lfn = Some(Lfn {
            checksum,
            expect: n,
            units: vec![0xFFFF; usize::from(n) * 13],
        });
    }
    let Some(l) = lfn.as_mut() else {
        return;
    };
    if n != l.expect || n == 0 || checksum != l.checksum {
        *lfn = None;
        return;
    }
    let base = usize::from(n - 1) * 13;
    let offsets = (1..11)
        .step_by(2)
        .chain((14..26).step_by(2))
        .chain((28..32).step_by(2));
    for (i, at) in offsets.enumerate() {
        if let Some(u) = l.units.get_mut(base + i) {
            *u = le16(e, at);
        }
    }
    l.expect -= 1;
}

fn decode_lfn(units: &[u16]) -> String {
    let end = units
        .iter()
        .position(|&u| u == 0x0000 || u == 0xFFFF)
        .unwrap_or(units.len());
    String::from_utf16_lossy(&units[..end])
}

/// The 8.3 name as Windows shows it, with the NT case flags (byte 12:
/// 0x08 base lower case, 0x10 extension lower case).
fn short_name(raw: &[u8; 11], case: u8) -> String {
    let mut base: Vec<u8> = raw[0..8].to_vec();
    if base[0] == 0x05 {
        base[0] = 0xE5;
    }
    let trim = |v: &[u8]| -> Vec<u8> {
        let len = v.iter().rposition(|&b| b != b' ').map_or(0, |p| p + 1);
        v[..len].to_vec()
    };
    let mut base = trim(&base);
    let mut ext = trim(&raw[8..11]);
    if case & 0x08 != 0 {
        base.make_ascii_lowercase();
    }
    if case & 0x10 != 0 {
        ext.make_ascii_lowercase();
    }
    let mut s = decode_oem(&base);
    if !ext.is_empty() {
        s.push('.');
        s.push_str(&decode_oem(&ext));
    }
    s
}

/// Decodes OEM bytes as code page 437 (the DOS default, and Linux's).
pub(crate) fn decode_oem(b: &[u8]) -> String {
    b.iter()
        .map(|&c| {
            if c < 0x80 {
                char::from(c)
            } else {
                CP437_HIGH[usize::from(c - 0x80)]
            }
        })
        .collect()
}

/// A label (volume label entry or boot-sector label) as text: trailing
/// spaces removed; `None` when empty or `NO NAME`.
pub(crate) fn label_text(raw: &[u8; 11]) -> Option<String> {
    let mut raw = *raw;
    if raw[0] == 0x05 {
        raw[0] = 0xE5;
    }
    let s = decode_oem(&raw);
    let s = s.trim_end_matches([' ', '\0']);
    (!s.is_empty() && s != "NO NAME").then(|| s.to_string())
}

/// A FAT date and time (local time, no zone recorded) as a timestamp,
/// treating the local time as UTC. `None` for a zero or invalid date.
pub(crate) fn fat_time(date: u16, time: u16) -> Option<Timestamp> {
    let year = 1980 + i64::from(date >> 9);
    let month = u32::from((date >> 5) & 0x0F);
    let day = u32::from(date & 0x1F);
    let hour = i64::from(time >> 11);
    let min = i64::from((time >> 5) & 0x3F);
    let sec = i64::from(time & 0x1F) * 2;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || min > 59 || sec > 59 {
        return None;
    }
    let days = days_since_epoch(year, month, day);
    Some(Timestamp {
        secs: days * 86_400 + hour * 3600 + min * 60 + sec,
        nanos: 0,
    })
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days from 1970-01-01 to the given date (years 1980..=2107 here).
fn days_since_epoch(y: i64, m: u32, d: u32) -> i64 {
    let mut days = 0i64;
    for year in 1970..y {
        days += if is_leap(year) { 366 } else { 365 };
    }
    for month in 1..m {
        days += i64::from(days_in_month(y, month));
    }
    days + i64::from(d) - 1
}

/// Code page 437, bytes 0x80..=0xFF.
const CP437_HIGH: [char; 128] = [
    '\u{00C7}', '\u{00FC}', '\u{00E9}', '\u{00E2}', '\u{00E4}', '\u{00E0}', '\u{00E5}', '\u{00E7}',
    '\u{00EA}', '\u{00EB}', '\u{00E8}', '\u{00EF}', '\u{00EE}', '\u{00EC}', '\u{00C4}', '\u{00C5}',
    '\u{00C9}', '\u{00E6}', '\u{00C6}', '\u{00F4}', '\u{00F6}', '\u{00F2}', '\u{00FB}', '\u{00F9}',
    '\u{00FF}', '\u{00D6}', '\u{00DC}', '\u{00A2}', '\u{00A3}', '\u{00A5}', '\u{20A7}', '\u{0192}',
    '\u{00E1}', '\u{00ED}', '\u{00F3}', '\u{00FA}', '\u{00F1}', '\u{00D1}', '\u{00AA}', '\u{00BA}',
    '\u{00BF}', '\u{2310}', '\u{00AC}', '\u{00BD}', '\u{00BC}', '\u{00A1}', '\u{00AB}', '\u{00BB}',
    '\u{2591}', '\u{2592}', '\u{2593}', '\u{2502}', '\u{2524}', '\u{2561}', '\u{2562}', '\u{2556}',
    '\u{2555}', '\u{2563}', '\u{2551}', '\u{2557}', '\u{255D}', '\u{255C}', '\u{255B}', '\u{2510}',
    '\u{2514}', '\u{2534}', '\u{252C}', '\u{251C}', '\u{2500}', '\u{253C}', '\u{255E}', '\u{255F}',
    '\u{255A}', '\u{2554}', '\u{2569}', '\u{2566}', '\u{2560}', '\u{2550}', '\u{256C}', '\u{2567}',
    '\u{2568}', '\u{2564}', '\u{2565}', '\u{2559}', '\u{2558}', '\u{2552}', '\u{2553}', '\u{256B}',
    '\u{256A}', '\u{2518}', '\u{250C}', '\u{2588}', '\u{2584}', '\u{258C}', '\u{2590}', '\u{2580}',
    '\u{03B1}', '\u{00DF}', '\u{0393}', '\u{03C0}', '\u{03A3}', '\u{03C3}', '\u{00B5}', '\u{03C4}',
    '\u{03A6}', '\u{0398}', '\u{03A9}', '\u{03B4}', '\u{221E}', '\u{03C6}', '\u{03B5}', '\u{2229}',
    '\u{2261}', '\u{00B1}', '\u{2265}', '\u{2264}', '\u{2320}', '\u{2321}', '\u{00F7}', '\u{2248}',
    '\u{00B0}', '\u{2219}', '\u{00B7}', '\u{221A}', '\u{207F}', '\u{00B2}', '\u{25A0}', '\u{00A0}',
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        // 2024-02-29 13:45:58
        let d = ((2024 - 1980) << 9) | (2 << 5) | 29;
        let t = (13 << 11) | (45 << 5) | 29;
        assert_eq!(fat_time(d, t).unwrap().secs, 1_709_214_358);
        assert_eq!(fat_time(0, 0), None);
        // 1980-01-01 00:00:00
        assert_eq!(fat_time(0x21, 0).unwrap().secs, 315_532_800);
        // Feb 30th
        assert_eq!(fat_time((2 << 5) | 30, 0), None);
    }

    #[test]
    fn short_names() {
        assert_eq!(short_name(b"README  TXT", 0), "README.TXT");
        assert_eq!(short_name(b"README  TXT", 0x08), "readme.TXT");
        assert_eq!(short_name(b"MAKEFILE   ", 0x18), "makefile");
        assert_eq!(short_name(b"\x05BC     DAT", 0), "\u{03C3}BC.DAT");
        assert_eq!(label_text(b"NO NAME    "), None);
        assert_eq!(label_text(b"MY DISK    ").as_deref(), Some("MY DISK"));
    }

    #[test]
    fn checksum() {
        // The spec's example algorithm over "FILENAMETXT".
        let mut sum: u8 = 0;
        for &b in b"FILENAMETXT" {
            sum = (if sum & 1 != 0 { 0x80u8 } else { 0 })
                .wrapping_add(sum >> 1)
                .wrapping_add(b);
        }
        assert_eq!(lfn_checksum(b"FILENAMETXT"), sum);
    }
}
