//! What Windows keeps about a file besides its data: alternate data streams
//! ([`StreamInfo`]), the attribute bits (read-only, hidden, system…), the
//! reparse point kind and the security descriptor ([`WindowsMeta`]), with a
//! parser that turns a self-relative security descriptor into SIDs and SDDL
//! ([`SecurityDescriptor::parse`]).
//!
//! Sources: [MS-DTYP] 2.4.2 (SID), 2.4.4 (ACE), 2.4.5 (ACL), 2.4.6
//! (SECURITY_DESCRIPTOR, self-relative), 2.5.1 (SDDL); [MS-FSCC] 2.6 (file
//! attributes), 2.1.2.1 (reparse tags).

use serde::Serialize;

/// The xattr name prefix a named data stream is shown under where xattrs
/// carry them (`get --streams=xattr`, `mount`): stream `NAME` is the xattr
/// `user.ntfs.stream.NAME`.
pub const STREAM_XATTR_PREFIX: &str = "user.ntfs.stream.";

/// One named data stream of a file (an NTFS alternate data stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamInfo {
    /// The stream's name as UTF-8 (never empty: the unnamed stream is the
    /// file's data).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// FILE_ATTRIBUTE_* bits ([MS-FSCC] 2.6), with the letter `ls -l` shows for
/// each (in this order) and the name JSON uses.
pub const ATTRIBUTES: &[(u32, char, &str)] = &[
    (0x0000_0001, 'r', "readonly"),
    (0x0000_0002, 'h', "hidden"),
    (0x0000_0004, 's', "system"),
    (0x0000_0020, 'a', "archive"),
    (0x0000_0400, 'l', "reparse_point"),
    (0x0000_0800, 'c', "compressed"),
    (0x0000_4000, 'e', "encrypted"),
    (0x0000_0200, 'p', "sparse"),
    (0x0000_1000, 'o', "offline"),
    (0x0000_2000, 'n', "not_content_indexed"),
];

/// Attribute bits named in JSON but without a letter in the `ls -l` column
/// (the kind letter already shows a folder).
const OTHER_ATTRIBUTES: &[(u32, &str)] = &[
    (0x0000_0008, "volume_label"),
    (0x0000_0010, "directory"),
    (0x0000_0080, "normal"),
    (0x0000_0100, "temporary"),
    (0x0000_8000, "integrity_stream"),
    (0x0002_0000, "no_scrub_data"),
    (0x0004_0000, "recall_on_open"),
    (0x0008_0000, "pinned"),
    (0x0010_0000, "unpinned"),
    (0x0040_0000, "recall_on_data_access"),
];

/// FILE_ATTRIBUTE_DIRECTORY.
pub const ATTR_DIRECTORY: u32 = 0x10;
/// FILE_ATTRIBUTE_REPARSE_POINT.
pub const ATTR_REPARSE_POINT: u32 = 0x400;

/// What Windows records about one file besides its data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WindowsMeta {
    /// FILE_ATTRIBUTE_* bits as stored (FAT: the attribute byte; NTFS:
    /// `$STANDARD_INFORMATION`, plus the directory bit for folders).
    #[serde(serialize_with = "hex32")]
    pub attributes: u32,
    /// The reparse point, when the file is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reparse: Option<Reparse>,
    /// The owner SID (`S-1-5-…`), where the filesystem keeps one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The primary group SID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The whole security descriptor as SDDL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sddl: Option<String>,
}

fn hex32<S: serde::Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("0x{v:08x}"))
}

/// A reparse point's tag and what kind it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reparse {
    /// The tag as hex (`0xa000000c`).
    #[serde(serialize_with = "hex32")]
    pub tag: u32,
    /// `symlink`, `junction`, `wsl_symlink`, `dedup`, `wof`, `cloud`
    /// (OneDrive and other cloud-files placeholders), `hsm`,
    /// `app_exec_link`, `af_unix`, `wsl_fifo`, `wsl_chr`, `wsl_blk`,
    /// `other`.
    pub kind: &'static str,
}

impl Reparse {
    /// The kind of the reparse tag `tag` ([MS-FSCC] 2.1.2.1).
    pub fn from_tag(tag: u32) -> Reparse {
        let kind = match tag {
            0xA000_000C => "symlink",
            0xA000_0003 => "junction",
            0xA000_001D => "wsl_symlink",
            0x8000_0013 => "dedup",
            0x8000_0017 => "wof",
            0x8000_001B => "app_exec_link",
            0x8000_0023 => "af_unix",
            0x8000_0024 => "wsl_fifo",
            0x8000_0025 => "wsl_chr",
            0x8000_0026 => "wsl_blk",
            0xC000_0004 | 0x8000_0006 => "hsm",
            t if t & 0xFFFF_0FFF == 0x9000_001A || t == 0xC000_0014 => "cloud",
            _ => "other",
        };
        Reparse { tag, kind }
    }
}

impl WindowsMeta {
    /// The names of the attribute bits set (`hidden`, `system`…), in
    /// [`ATTRIBUTES`] order then the others; unknown bits as hex.
    pub fn attribute_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut known = 0u32;
        for &(bit, _, name) in ATTRIBUTES {
            known |= bit;
            if self.attributes & bit != 0 {
                out.push(name.to_string());
            }
        }
        for &(bit, name) in OTHER_ATTRIBUTES {
            known |= bit;
            if self.attributes & bit != 0 {
                out.push(name.to_string());
            }
        }
        let rest = self.attributes & !known;
        if rest != 0 {
            out.push(format!("0x{rest:08x}"));
        }
        out
    }

    /// The `ls -l` column: one letter per [`ATTRIBUTES`] entry, `-` when
    /// clear (`rhsalcepon`).
    pub fn letters(&self) -> String {
        ATTRIBUTES
            .iter()
            .map(|&(bit, c, _)| if self.attributes & bit != 0 { c } else { '-' })
            .collect()
    }
}

/// A parsed security descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityDescriptor {
    /// Owner SID string.
    pub owner: Option<String>,
    /// Group SID string.
    pub group: Option<String>,
    /// The SDDL form.
    pub sddl: String,
}

/// Why a security descriptor could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("security descriptor: {what} at byte {offset:#x} of the descriptor")]
pub struct SdError {
    /// Offset in the descriptor's bytes.
    pub offset: usize,
    /// What is wrong.
    pub what: &'static str,
}

fn err(offset: usize, what: &'static str) -> SdError {
    SdError { offset, what }
}

fn le16(b: &[u8], o: usize) -> Result<u16, SdError> {
    b.get(o..o.wrapping_add(2))
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| err(o, "truncated"))
}

fn le32(b: &[u8], o: usize) -> Result<u32, SdError> {
    b.get(o..o.wrapping_add(4))
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| err(o, "truncated"))
}

/// Parses the SID at `o` of `b`: its string form and its length.
pub fn parse_sid(b: &[u8], o: usize) -> Result<(String, usize), SdError> {
    let head = b
        .get(o..o.wrapping_add(8))
        .ok_or_else(|| err(o, "truncated SID"))?;
    if head[0] != 1 {
        return Err(err(o, "SID revision is not 1"));
    }
    let n = usize::from(head[1]);
    if n > 15 {
        return Err(err(o + 1, "SID with more than 15 sub-authorities"));
    }
    let auth = head[2..8]
        .iter()
        .fold(0u64, |a, &x| (a << 8) | u64::from(x));
    let mut s = if auth >= 1 << 32 {
        format!("S-1-0x{auth:012X}")
    } else {
        format!("S-1-{auth}")
    };
    for i in 0..n {
        s.push_str(&format!("-{}", le32(b, o + 8 + 4 * i)?));
    }
    Ok((s, 8 + 4 * n))
}

/// The SDDL abbreviations of well-known SIDs that do not depend on a
/// domain ([MS-DTYP] 2.5.1.1).
const SID_ALIASES: &[(&str, &str)] = &[
    ("S-1-1-0", "WD"),
    ("S-1-3-0", "CO"),
    ("S-1-3-1", "CG"),
    ("S-1-3-4", "OW"),
    ("S-1-5-2", "NU"),
    ("S-1-5-4", "IU"),
    ("S-1-5-6", "SU"),
    ("S-1-5-7", "AN"),
    ("S-1-5-9", "ED"),
    ("S-1-5-10", "PS"),
    ("S-1-5-11", "AU"),
    ("S-1-5-12", "RC"),
    ("S-1-5-18", "SY"),
    ("S-1-5-19", "LS"),
    ("S-1-5-20", "NS"),
    ("S-1-5-32-544", "BA"),
    ("S-1-5-32-545", "BU"),
    ("S-1-5-32-546", "BG"),
    ("S-1-5-32-547", "PU"),
    ("S-1-5-32-548", "AO"),
    ("S-1-5-32-549", "SO"),
    ("S-1-5-32-550", "PO"),
    ("S-1-5-32-551", "BO"),
    ("S-1-5-32-552", "RE"),
    ("S-1-5-32-554", "RU"),
    ("S-1-5-32-555", "RD"),
    ("S-1-5-32-556", "NO"),
    ("S-1-5-32-558", "MU"),
    ("S-1-5-32-559", "LU"),
    ("S-1-5-32-568", "IS"),
    ("S-1-5-32-569", "CY"),
    ("S-1-5-32-573", "ER"),
    ("S-1-5-32-574", "CD"),
    ("S-1-5-32-575", "RA"),
    ("S-1-5-32-576", "ES"),
    ("S-1-5-32-577", "MS"),
    ("S-1-5-32-578", "HA"),
    ("S-1-5-32-579", "AA"),
    ("S-1-5-32-580", "RM"),
    ("S-1-5-80-0", "AS"),
    ("S-1-5-84-0-0-0-0-0", "UD"),
    ("S-1-15-2-1", "AC"),
    ("S-1-16-4096", "LW"),
    ("S-1-16-8192", "ME"),
    ("S-1-16-8448", "MP"),
    ("S-1-16-12288", "HI"),
    ("S-1-16-16384", "SI"),
];

fn sddl_sid(s: &str) -> &str {
    SID_ALIASES
        .iter()
        .find(|(sid, _)| *sid == s)
        .map_or(s, |(_, a)| a)
}

/// Access masks SDDL writes as one abbreviation when they match exactly.
const MASK_WHOLE: &[(u32, &str)] = &[
    (0x001F_01FF, "FA"),
    (0x0012_0089, "FR"),
    (0x0012_0116, "FW"),
    (0x0012_00A0, "FX"),
    (0x000F_003F, "KA"),
    (0x0002_0019, "KR"),
    (0x0002_0006, "KW"),
];

/// Access bits SDDL spells out one by one ([MS-DTYP] 2.5.1.1, "ace
/// rights"), in ascending bit order, the order Windows writes them in
/// (`(A;OICIIO;SDGXGWGR;;;AU)`).
const MASK_BITS: &[(u32, &str)] = &[
    (0x0000_0001, "CC"),
    (0x0000_0002, "DC"),
    (0x0000_0004, "LC"),
    (0x0000_0008, "SW"),
    (0x0000_0010, "RP"),
    (0x0000_0020, "WP"),
    (0x0000_0040, "DT"),
    (0x0000_0080, "LO"),
    (0x0000_0100, "CR"),
    (0x0001_0000, "SD"),
    (0x0002_0000, "RC"),
    (0x0004_0000, "WD"),
    (0x0008_0000, "WO"),
    (0x1000_0000, "GA"),
    (0x2000_0000, "GX"),
    (0x4000_0000, "GW"),
    (0x8000_0000, "GR"),
];

/// The mask bits of a mandatory label ACE (`ML`): no write, read,
/// execute up.
const LABEL_BITS: &[(u32, &str)] = &[(0x1, "NW"), (0x2, "NR"), (0x4, "NX")];

fn sddl_mask(m: u32, label: bool) -> String {
    if label {
        if m != 0 && m & !0x7 == 0 {
            return LABEL_BITS
                .iter()
                .filter(|(v, _)| m & v != 0)
                .map(|(_, s)| *s)
                .collect();
        }
        return format!("0x{m:x}");
    }
    if let Some((_, s)) = MASK_WHOLE.iter().find(|(v, _)| *v == m) {
        return (*s).to_string();
    }
    let known = MASK_BITS.iter().fold(0, |a, (v, _)| a | v);
    if m != 0 && m & !known == 0 {
        return MASK_BITS
            .iter()
            .filter(|(v, _)| m & v != 0)
            .map(|(_, s)| *s)
            .collect();
    }
    format!("0x{m:x}")
}

const ACE_FLAGS: &[(u8, &str)] = &[
    (0x01, "OI"),
    (0x02, "CI"),
    (0x04, "NP"),
    (0x08, "IO"),
    (0x10, "ID"),
    (0x40, "SA"),
    (0x80, "FA"),
];

fn ace_type(t: u8) -> Option<&'static str> {
    Some(match t {
        0x00 => "A",
        0x01 => "D",
        0x02 => "AU",
        0x03 => "AL",
        0x05 => "OA",
        0x06 => "OD",
        0x07 => "OU",
        0x08 => "OL",
        0x09 => "XA",
        0x0A => "XD",
        0x0B => "ZA",
        0x0D => "XU",
        0x11 => "ML",
        0x12 => "RA",
        0x13 => "SP",
        0x14 => "TL",
        0x15 => "FL",
        _ => return None,
    })
}

fn guid(b: &[u8], o: usize) -> Result<String, SdError> {
    let g = b.get(o..o + 16).ok_or_else(|| err(o, "truncated GUID"))?;
    Ok(format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
        u16::from_le_bytes([g[4], g[5]]),
        u16::from_le_bytes([g[6], g[7]]),
        g[8],
        g[9],
        g[10],
        g[11],
        g[12],
        g[13],
        g[14],
        g[15]
    ))
}

/// One ACE as SDDL: `(type;flags;rights;object;inherited object;trustee)`.
/// An ACE type without an SDDL form is written with its type number in
/// hex and its bytes after the header as hex in the rights field.
fn ace_sddl(b: &[u8], o: usize, size: usize) -> Result<String, SdError> {
    let t = b[o];
    let flags = b[o + 1];
    let mut fl = String::new();
    let mut rest = flags;
    for &(bit, s) in ACE_FLAGS {
        if flags & bit != 0 {
            fl.push_str(s);
            rest &= !bit;
        }
    }
    if rest != 0 {
        fl.push_str(&format!("0x{rest:x}"));
    }
    let end = o + size;
    let Some(ty) = ace_type(t) else {
        let body: String = b[o + 4..end].iter().map(|x| format!("{x:02x}")).collect();
        return Ok(format!("(0x{t:x};{fl};0x{body};;;)"));
    };
    let mask = le32(b, o + 4)?;
    let (mut obj, mut inh) = (String::new(), String::new());
    let mut sid_at = o + 8;
    if matches!(t, 0x05..=0x08) {
        let oflags = le32(b, o + 8)?;
        sid_at = o + 12;
        if oflags & 1 != 0 {
            obj = guid(&b[..end], sid_at)?;
            sid_at += 16;
        }
        if oflags & 2 != 0 {
            inh = guid(&b[..end], sid_at)?;
            sid_at += 16;
        }
    }
    let (sid, len) = parse_sid(&b[..end], sid_at)?;
    let mut s = format!(
        "({ty};{fl};{};{obj};{inh};{}",
        sddl_mask(mask, t == 0x11),
        sddl_sid(&sid)
    );
    // Conditional (callback) ACEs and resource attributes keep their
    // application data; shown as hex since flr does not decode it.
    if sid_at + len < end && matches!(t, 0x09 | 0x0A | 0x0B | 0x0D | 0x12) {
        s.push(';');
        s.extend(b[sid_at + len..end].iter().map(|x| format!("{x:02x}")));
    }
    s.push(')');
    Ok(s)
}

fn acl_sddl(b: &[u8], o: usize) -> Result<String, SdError> {
    let size = usize::from(le16(b, o + 2)?);
    let count = usize::from(le16(b, o + 4)?);
    if size < 8 || o + size > b.len() {
        return Err(err(o + 2, "ACL size past the descriptor"));
    }
    let mut out = String::new();
    let mut at = o + 8;
    for _ in 0..count {
        let ace_size = usize::from(le16(b, at + 2)?);
        if ace_size < 8 || at + ace_size > o + size {
            return Err(err(at + 2, "ACE size past its ACL"));
        }
        out.push_str(&ace_sddl(b, at, ace_size)?);
        at += ace_size;
    }
    Ok(out)
}

impl SecurityDescriptor {
    /// Parses a self-relative SECURITY_DESCRIPTOR ([MS-DTYP] 2.4.6) into
    /// owner, group and SDDL (`O:…G:…D:…S:…`). The DACL's flags are `P`
    /// (protected), `AI` (auto-inherited), `AR` (inherit required); a DACL
    /// present but absent from the bytes is `D:NO_ACCESS_CONTROL`.
    pub fn parse(b: &[u8]) -> Result<SecurityDescriptor, SdError> {
        if b.len() < 20 {
            return Err(err(0, "shorter than its header"));
        }
        if b[0] != 1 {
            return Err(err(0, "revision is not 1"));
        }
        let control = le16(b, 2)?;
        if control & 0x8000 == 0 {
            return Err(err(2, "not self-relative"));
        }
        let at = |o: usize| -> Result<Option<usize>, SdError> {
            let v = le32(b, o)?;
            let v = usize::try_from(v).map_err(|_| err(o, "offset too large"))?;
            if v != 0 && v >= b.len() {
                return Err(err(o, "offset past the descriptor"));
            }
            Ok((v != 0).then_some(v))
        };
        let owner = at(4)?.map(|o| parse_sid(b, o).map(|s| s.0)).transpose()?;
        let group = at(8)?.map(|o| parse_sid(b, o).map(|s| s.0)).transpose()?;
        let sacl = at(12)?;
        let dacl = at(16)?;
        let mut sddl = String::new();
        if let Some(o) = &owner {
            sddl.push_str("O:");
            sddl.push_str(sddl_sid(o));
        }
        if let Some(g) = &group {
            sddl.push_str("G:");
            sddl.push_str(sddl_sid(g));
        }
        let acl_flags = |protected: u16, auto_req: u16, auto: u16| {
            let mut f = String::new();
            if control & protected != 0 {
                f.push('P');
            }
            if control & auto_req != 0 {
                f.push_str("AR");
            }
            if control & auto != 0 {
                f.push_str("AI");
            }
            f
        };
        if control & 0x0004 != 0 {
            sddl.push_str("D:");
            sddl.push_str(&acl_flags(0x1000, 0x0100, 0x0400));
            match dacl {
                Some(o) => sddl.push_str(&acl_sddl(b, o)?),
                None => sddl.push_str("NO_ACCESS_CONTROL"),
            }
        }
        if control & 0x0010 != 0 {
            sddl.push_str("S:");
            sddl.push_str(&acl_flags(0x2000, 0x0200, 0x0800));
            match sacl {
                Some(o) => sddl.push_str(&acl_sddl(b, o)?),
                None => sddl.push_str("NO_ACCESS_CONTROL"),
            }
        }
        Ok(SecurityDescriptor { owner, group, sddl })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(auth: u8, subs: &[u32]) -> Vec<u8> {
        let mut v = vec![1, subs.len() as u8, 0, 0, 0, 0, 0, auth];
        for s in subs {
            v.extend(s.to_le_bytes());
        }
        v
    }

    fn ace(t: u8, f: u8, mask: u32, s: &[u8]) -> Vec<u8> {
        let mut v = vec![t, f];
        v.extend(((8 + s.len()) as u16).to_le_bytes());
        v.extend(mask.to_le_bytes());
        v.extend(s);
        v
    }

    /// The descriptor `icacls` shows for a typical file, built from its
    /// parts as [MS-DTYP] lays them out.
    #[test]
    fn sddl_of_a_typical_descriptor() {
        let owner = sid(5, &[32, 544]);
        let group = sid(5, &[18]);
        let aces = [
            ace(0, 0x10, 0x001F_01FF, &sid(5, &[18])),
            ace(0, 0x13, 0x0012_00A9, &sid(5, &[32, 545])),
            ace(1, 0, 0x0004_0000 | 0x0008_0000, &sid(1, &[0])),
            ace(0, 0, 0x0000_0003, &sid(5, &[21, 1, 2, 3, 1001])),
            // The default ACE of C:\ for Authenticated Users, as Windows
            // prints it (`icacls C:\ /save`, Get-Acl's Sddl).
            ace(0, 0x0B, 0xE001_0000, &sid(5, &[11])),
        ]
        .concat();
        let mut acl = vec![2, 0];
        acl.extend(((8 + aces.len()) as u16).to_le_bytes());
        acl.extend(5u16.to_le_bytes());
        acl.extend([0, 0]);
        acl.extend(aces);
        let mut sd = vec![1, 0];
        sd.extend((0x8000u16 | 0x0400 | 0x0004).to_le_bytes());
        let o_owner = 20u32;
        let o_group = o_owner + owner.len() as u32;
        let o_dacl = o_group + group.len() as u32;
        for v in [o_owner, o_group, 0, o_dacl] {
            sd.extend(v.to_le_bytes());
        }
        sd.extend(owner);
        sd.extend(group);
        sd.extend(acl);
        let p = SecurityDescriptor::parse(&sd).unwrap();
        assert_eq!(p.owner.as_deref(), Some("S-1-5-32-544"));
        assert_eq!(p.group.as_deref(), Some("S-1-5-18"));
        assert_eq!(
            p.sddl,
            "O:BAG:SYD:AI(A;ID;FA;;;SY)(A;OICIID;0x1200a9;;;BU)(D;;WDWO;;;WD)(A;;CCDC;;;S-1-5-21-1-2-3-1001)(A;OICIIO;SDGXGWGR;;;AU)"
        );
        // Damage: offsets and sizes past the end are errors, not panics.
        for cut in 0..sd.len() {
            let _ = SecurityDescriptor::parse(&sd[..cut]);
        }
        let mut bad = sd.clone();
        bad[16] = 0xff;
        assert!(SecurityDescriptor::parse(&bad).is_err());
    }

    #[test]
    fn letters_and_names() {
        let w = WindowsMeta {
            attributes: 0x26 | 0x400 | 0x10,
            ..WindowsMeta::default()
        };
        assert_eq!(w.letters(), "-hsal-----");
        assert_eq!(
            w.attribute_names(),
            ["hidden", "system", "archive", "reparse_point", "directory"]
        );
        assert_eq!(Reparse::from_tag(0x9000_601A).kind, "cloud");
        assert_eq!(Reparse::from_tag(0xA000_0003).kind, "junction");
    }
}
