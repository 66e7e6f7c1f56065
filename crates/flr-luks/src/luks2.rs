//! LUKS2: the two binary headers with their checksums, and the JSON
//! metadata (keyslots, digests, segments, tokens).

use serde_json::{Map, Value};
use sha2::Digest;

use crate::crypto::{parse_cipher, Hash};
use crate::{
    Kdf, KeyDigest, KeyslotInfo, Limits, LuksError, LuksInfo, LuksVolume, SegmentInfo, Slot,
    TokenInfo, LUKS2_SECONDARY_MAGIC, LUKS_MAGIC, SECONDARY_OFFSETS,
};
use flr_io::{ReadAt, Source};

const BIN_SIZE: u64 = 4096;

struct Header {
    offset: u64,
    seqid: u64,
    label: String,
    subsystem: String,
    uuid: String,
    json: Value,
}

fn cstr(b: &[u8]) -> String {
    crate::cstr(b)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// Reads and checks one header copy at `off`.
fn read_header(src: &dyn ReadAt, off: u64, limits: &Limits) -> Result<Header, LuksError> {
    let mut bin = vec![0u8; BIN_SIZE as usize];
    src.read_exact_at(off, &mut bin)?;
    let magic: &[u8] = if off == 0 {
        LUKS_MAGIC
    } else {
        LUKS2_SECONDARY_MAGIC
    };
    if &bin[..6] != magic {
        return Err(LuksError::NotLuks { offset: off });
    }
    let version = u16::from_be_bytes([bin[6], bin[7]]);
    if version != 2 {
        return Err(LuksError::corrupt(
            off + 6,
            format!("header version {version}, expected 2"),
        ));
    }
    let hdr_size = be64(&bin, 8);
    if !(0x4000..=limits.max_json_bytes).contains(&hdr_size) || !hdr_size.is_multiple_of(4096) {
        return Err(LuksError::corrupt(
            off + 8,
            format!(
                "header size {hdr_size} is not a multiple of 4096 between 16 KiB and {}",
                limits.max_json_bytes
            ),
        ));
    }
    let hdr_offset = be64(&bin, 256);
    if hdr_offset != off {
        return Err(LuksError::corrupt(
            off + 256,
            format!("header says it is at {hdr_offset:#x}, found at {off:#x}"),
        ));
    }
    let alg = cstr(&bin[72..104]);
    if alg != "sha256" {
        return Err(LuksError::unsupported(
            off + 72,
            format!("header checksum algorithm {alg:?}"),
        ));
    }
    let mut json = vec![0u8; (hdr_size - BIN_SIZE) as usize];
    src.read_exact_at(off + BIN_SIZE, &mut json)?;
    let stored: Vec<u8> = bin[448..480].to_vec();
    bin[448..512].fill(0);
    let mut h = sha2::Sha256::new();
    h.update(&bin);
    h.update(&json);
    if h.finalize()[..] != stored[..] {
        return Err(LuksError::corrupt(off + 448, "header checksum mismatch"));
    }
    let end = json.iter().position(|&c| c == 0).unwrap_or(json.len());
    let value: Value = serde_json::from_slice(&json[..end]).map_err(|e| {
        LuksError::corrupt(off + BIN_SIZE, format!("JSON metadata does not parse: {e}"))
    })?;
    if !value.is_object() {
        return Err(LuksError::corrupt(
            off + BIN_SIZE,
            "JSON metadata is not an object",
        ));
    }
    Ok(Header {
        offset: off,
        seqid: be64(&bin, 16),
        label: cstr(&bin[24..72]),
        subsystem: cstr(&bin[208..256]),
        uuid: cstr(&bin[168..208]),
        json: value,
    })
}

pub(crate) fn open(
    header_src: Source,
    data_src: Source,
    limits: Limits,
) -> Result<LuksVolume, LuksError> {
    let mut warnings = Vec::new();
    let primary = read_header(&*header_src, 0, &limits);
    // The secondary sits right after the primary; if the primary is unreadable try every known offset.
    let mut secondary: Option<Result<Header, LuksError>> = None;
    let mut candidates: Vec<u64> = Vec::new();
    if let Ok(p) = &primary {
        if let Some(sz) = json_hdr_size(&p.json) {
            candidates.push(sz);
        }
    }
    let mut hdr_size_buf = [0u8; 8];
    if header_src.read_exact_at(8, &mut hdr_size_buf).is_ok() {
        candidates.push(u64::from_be_bytes(hdr_size_buf));
    }
    candidates.extend(SECONDARY_OFFSETS);
    let mut seen = Vec::new();
    for c in candidates {
        if seen.contains(&c) || !SECONDARY_OFFSETS.contains(&c) {
            continue;
        }
        seen.push(c);
        let r = read_header(&*header_src, c, &limits);
        let found = !matches!(r, Err(LuksError::NotLuks { .. }) | Err(LuksError::Io(_)));
        if found {
            secondary = Some(r);
            break;
        }
    }
    let hdr = match (primary, secondary) {
        (Ok(p), Some(Ok(s))) => {
            if s.seqid > p.seqid {
                warnings.push(format!(
                    "the secondary LUKS2 header is newer (seqid {} > {}); used it",
                    s.seqid, p.seqid
                ));
                s
            } else {
                p
            }
        }
        (Ok(p), Some(Err(e))) => {
            warnings.push(format!(
                "secondary LUKS2 header is bad ({e}); used the primary"
            ));
            p
        }
        (Ok(p), None) => {
            warnings.push("secondary LUKS2 header not found; used the primary".into());
            p
        }
        (Err(e), Some(Ok(s))) => {
            warnings.push(format!(
                "primary LUKS2 header is bad ({e}); used the secondary at {:#x}",
                s.offset
            ));
            s
        }
        (Err(e), _) => return Err(e),
    };
    build(hdr, header_src, data_src, limits, warnings)
}

fn json_hdr_size(v: &Value) -> Option<u64> {
    let js = num(v.get("config")?.get("json_size")?)?;
    js.checked_add(BIN_SIZE)
}

/// A JSON number or decimal string as u64.
fn num(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn b64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

struct Ctx {
    base: u64,
}

impl Ctx {
    fn bad(&self, what: impl std::fmt::Display) -> LuksError {
        LuksError::corrupt(self.base, what)
    }
    fn obj<'a>(&self, v: &'a Value, key: &str) -> Result<&'a Map<String, Value>, LuksError> {
        v.get(key)
            .and_then(Value::as_object)
            .ok_or_else(|| self.bad(format!("JSON: {key:?} missing or not an object")))
    }
    fn u(&self, v: &Value, key: &str, what: &str) -> Result<u64, LuksError> {
        v.get(key)
            .and_then(num)
            .ok_or_else(|| self.bad(format!("JSON: {what}: {key:?} missing or not a number")))
    }
    fn s<'a>(&self, v: &'a Value, key: &str, what: &str) -> Result<&'a str, LuksError> {
        v.get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| self.bad(format!("JSON: {what}: {key:?} missing or not a string")))
    }
    fn u32(&self, v: &Value, key: &str, what: &str) -> Result<u32, LuksError> {
        u32::try_from(self.u(v, key, what)?)
            .map_err(|_| self.bad(format!("JSON: {what}: {key:?} is too large")))
    }
    fn bytes(&self, v: &Value, key: &str, what: &str) -> Result<Vec<u8>, LuksError> {
        b64(self.s(v, key, what)?)
            .ok_or_else(|| self.bad(format!("JSON: {what}: {key:?} is not base64")))
    }
    fn hash(&self, v: &Value, key: &str, what: &str) -> Result<Hash, LuksError> {
        let h = self.s(v, key, what)?;
        Hash::parse(h).ok_or_else(|| {
            LuksError::unsupported(self.base, format!("{what}: hash {h:?} is not supported"))
        })
    }
    fn index(&self, k: &str, what: &str) -> Result<u32, LuksError> {
        k.parse()
            .map_err(|_| self.bad(format!("JSON: {what} id {k:?} is not a number")))
    }
    fn ids(&self, v: &Value, key: &str, what: &str) -> Result<Vec<u32>, LuksError> {
        match v.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    num(x).and_then(|n| u32::try_from(n).ok()).ok_or_else(|| {
                        self.bad(format!("JSON: {what}: {key:?} holds a non-number"))
                    })
                })
                .collect(),
            Some(_) => Err(self.bad(format!("JSON: {what}: {key:?} is not a list"))),
        }
    }
}

fn build(
    hdr: Header,
    header_src: Source,
    data_src: Source,
    limits: Limits,
    warnings: Vec<String>,
) -> Result<LuksVolume, LuksError> {
    let c = Ctx {
        base: hdr.offset + BIN_SIZE,
    };
    let j = &hdr.json;
    let header_len = header_src.len();

    // Requirements (online reencryption and others).
    if let Some(cfg) = j.get("config") {
        if let Some(req) = cfg.get("requirements").and_then(|r| r.get("mandatory")) {
            let names: Vec<String> = match req {
                Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().unwrap_or("?").to_string())
                    .collect(),
                _ => Vec::new(),
            };
            if !names.is_empty() {
                return Err(LuksError::unsupported(
                    c.base,
                    format!(
                        "the header has mandatory requirements {names:?}: {}",
                        if names.iter().any(|n| n.contains("reencrypt")) {
                            "an online reencryption was not finished (part of the data is encrypted with the old key or not at all); finish it with `cryptsetup reencrypt --resume-only` on a copy"
                        } else {
                            "flr does not know them"
                        }
                    ),
                ));
            }
        }
    }

    // Keyslots.
    let mut slots = Vec::new();
    let mut ks_info = Vec::new();
    let mut reencrypt_slot = false;
    for (k, v) in c.obj(j, "keyslots")? {
        let index = c.index(k, "keyslot")?;
        let what = format!("keyslot {index}");
        let kind = c.s(v, "type", &what)?.to_string();
        let priority = match v.get("priority") {
            None => 1,
            Some(p) => num(p)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| c.bad(format!("JSON: {what}: bad priority")))?,
        };
        let kdf_v = v.get("kdf");
        let kdf_name = kdf_v
            .and_then(|k| k.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("none")
            .to_string();
        let kdf_label = if kdf_name == "pbkdf2" {
            format!(
                "pbkdf2-{}",
                kdf_v
                    .and_then(|k| k.get("hash"))
                    .and_then(Value::as_str)
                    .unwrap_or("?")
            )
        } else {
            kdf_name.clone()
        };
        ks_info.push(KeyslotInfo {
            index,
            kdf: kdf_label,
            active: true,
            priority: Some(priority),
            kind: kind.clone(),
        });
        if kind == "reencrypt" {
            reencrypt_slot = true;
            continue;
        }
        if kind != "luks2" {
            continue;
        }
        let kdf_v = kdf_v.ok_or_else(|| c.bad(format!("JSON: {what}: no kdf")))?;
        let kdf = match kdf_name.as_str() {
            "pbkdf2" => Kdf::Pbkdf2 {
                hash: c.hash(kdf_v, "hash", &what)?,
                iterations: c.u32(kdf_v, "iterations", &what)?,
                salt: c.bytes(kdf_v, "salt", &what)?,
            },
            "argon2i" | "argon2id" => Kdf::Argon2 {
                id: kdf_name == "argon2id",
                time: c.u32(kdf_v, "time", &what)?,
                memory_kib: c.u32(kdf_v, "memory", &what)?,
                cpus: c.u32(kdf_v, "cpus", &what)?,
                salt: c.bytes(kdf_v, "salt", &what)?,
            },
            other => {
                return Err(LuksError::unsupported(
                    c.base,
                    format!("{what}: KDF {other:?} is not supported"),
                ))
            }
        };
        let af = v
            .get("af")
            .ok_or_else(|| c.bad(format!("JSON: {what}: no af")))?;
        let af_type = c.s(af, "type", &what)?;
        if af_type != "luks1" {
            return Err(LuksError::unsupported(
                c.base,
                format!("{what}: anti-forensic type {af_type:?}"),
            ));
        }
        let area = v
            .get("area")
            .ok_or_else(|| c.bad(format!("JSON: {what}: no area")))?;
        let area_type = c.s(area, "type", &what)?;
        if area_type != "raw" {
            return Err(LuksError::unsupported(
                c.base,
                format!("{what}: area type {area_type:?}"),
            ));
        }
        let key_len = c.u(v, "key_size", &what)?;
        let area_key_len = c.u(area, "key_size", &what)?;
        if key_len == 0 || key_len > 128 || area_key_len == 0 || area_key_len > 128 {
            return Err(c.bad(format!("JSON: {what}: key size out of range")));
        }
        let area_offset = c.u(area, "offset", &what)?;
        let area_size = c.u(area, "size", &what)?;
        if area_offset
            .checked_add(area_size)
            .is_none_or(|e| e > header_len)
        {
            return Err(c.bad(format!(
                "JSON: {what}: area {area_offset:#x}+{area_size:#x} goes past the end of the header device ({header_len} bytes)"
            )));
        }
        slots.push(Slot {
            index,
            priority,
            kdf,
            area_offset,
            area_size,
            area_cipher: c.s(area, "encryption", &what)?.to_string(),
            area_key_len: area_key_len as usize,
            af_hash: c.hash(af, "hash", &what)?,
            stripes: c.u32(af, "stripes", &what)?,
            key_len: key_len as usize,
        });
    }
    ks_info.sort_by_key(|k| k.index);

    // Segments.
    let mut segments = Vec::new();
    for (k, v) in c.obj(j, "segments")? {
        let index = c.index(k, "segment")?;
        let what = format!("segment {index}");
        let kind = c.s(v, "type", &what)?.to_string();
        let size = match v.get("size") {
            Some(Value::String(s)) if s == "dynamic" => None,
            Some(_) => Some(c.u(v, "size", &what)?),
            None => return Err(c.bad(format!("JSON: {what}: no size"))),
        };
        let sector_size = if kind == "crypt" {
            c.u32(v, "sector_size", &what)?
        } else {
            512
        };
        segments.push(SegmentInfo {
            index,
            kind,
            offset: c.u(v, "offset", &what)?,
            size,
            encryption: v
                .get("encryption")
                .and_then(Value::as_str)
                .map(str::to_string),
            sector_size,
            iv_tweak: match v.get("iv_tweak") {
                Some(_) => c.u(v, "iv_tweak", &what)?,
                None => 0,
            },
        });
    }
    segments.sort_by_key(|s| s.index);

    // Digests.
    let mut digests = Vec::new();
    for (k, v) in c.obj(j, "digests")? {
        let index = c.index(k, "digest")?;
        let what = format!("digest {index}");
        let t = c.s(v, "type", &what)?;
        if t != "pbkdf2" {
            return Err(LuksError::unsupported(
                c.base,
                format!("{what}: type {t:?}"),
            ));
        }
        let digest = c.bytes(v, "digest", &what)?;
        if digest.is_empty() || digest.len() > 64 {
            return Err(c.bad(format!("JSON: {what}: digest of {} bytes", digest.len())));
        }
        let segs = c.ids(v, "segments", &what)?;
        if !segs.is_empty() && !segs.contains(&segments.first().map_or(0, |s| s.index)) {
            continue;
        }
        digests.push(KeyDigest {
            hash: c.hash(v, "hash", &what)?,
            iterations: c.u32(v, "iterations", &what)?,
            salt: c.bytes(v, "salt", &what)?,
            digest,
            keyslots: c.ids(v, "keyslots", &what)?,
        });
    }

    // Tokens.
    let mut tokens = Vec::new();
    if let Some(t) = j.get("tokens").and_then(Value::as_object) {
        for (k, v) in t {
            let index = c.index(k, "token")?;
            let type_name = v
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            tokens.push(TokenInfo {
                index,
                needs_attested_key_release: type_name.contains("Azure_Disk_Encryption"),
                keyslots: c.ids(v, "keyslots", &format!("token {index}"))?,
                type_name,
            });
        }
    }
    tokens.sort_by_key(|t| t.index);

    let seg = segments
        .first()
        .cloned()
        .ok_or_else(|| c.bad("JSON: no segments"))?;
    if reencrypt_slot || segments.len() > 1 || seg.kind != "crypt" {
        let kinds: Vec<String> = segments
            .iter()
            .map(|s| format!("{} {}", s.index, s.kind))
            .collect();
        return Err(LuksError::unsupported(
            c.base,
            format!(
                "an online reencryption is in progress or was interrupted (segments: {}{}): part of the volume is under a different key or in clear; finish it with `cryptsetup reencrypt --resume-only` (on a copy) first",
                kinds.join(", "),
                if reencrypt_slot { "; a reencrypt keyslot is present" } else { "" }
            ),
        ));
    }
    let cipher = seg
        .encryption
        .clone()
        .ok_or_else(|| c.bad("JSON: segment 0: no encryption"))?;
    if !matches!(seg.sector_size, 512 | 1024 | 2048 | 4096) {
        return Err(c.bad(format!(
            "JSON: segment 0: sector size {} is not 512, 1024, 2048 or 4096",
            seg.sector_size
        )));
    }
    if seg.offset % 512 != 0
        || seg
            .size
            .is_some_and(|s| s % u64::from(seg.sector_size) != 0)
    {
        return Err(c.bad("JSON: segment 0: offset or size not sector aligned"));
    }
    // The volume key size: from a keyslot of this segment's digest, else from the cipher name.
    let key_len = slots
        .iter()
        .find(|s| {
            digests
                .iter()
                .any(|d| d.keyslots.is_empty() || d.keyslots.contains(&s.index))
        })
        .map(|s| s.key_len)
        .unwrap_or(if cipher.contains("xts") { 64 } else { 32 });
    parse_cipher(&cipher, &vec![0u8; key_len]).map_err(|e| LuksError::unsupported(c.base, e))?;
    if digests.is_empty() {
        return Err(c.bad("JSON: no digest for segment 0"));
    }
    let info = LuksInfo {
        version: 2,
        uuid: hdr.uuid,
        label: hdr.label,
        subsystem: hdr.subsystem,
        cipher,
        key_bits: (key_len * 8) as u32,
        sector_size: seg.sector_size,
        data_offset: seg.offset,
        keyslots: ks_info,
        tokens,
        segments: segments.clone(),
        warnings,
    };
    Ok(LuksVolume {
        info,
        header_src,
        data_src,
        slots,
        digests,
        key_len,
        iv_tweak: seg.iv_tweak,
        data_size: seg.size,
        limits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes() {
        assert_eq!(b64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(b64("aGVsbG8hIQ==").unwrap(), b"hello!!");
        assert!(b64("a*b").is_none());
    }
}
