//! Names from images, made safe to show on a terminal and to create on the
//! restoring machine.

/// Longest name flr creates (bytes), the Linux NAME_MAX.
const NAME_MAX: usize = 255;

const WINDOWS_RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// Turns a name read from an image into one component that is safe to
/// create inside the destination folder. Returns the safe name and, when it
/// differs, why it was changed.
///
/// Rules: `/`, `\`, NUL and other control bytes become `_`; empty, `.` and
/// `..` get a leading `_`; Windows device names (`CON`, `aux.txt`, …) get a
/// leading `_`; names over 255 bytes are cut and given a hash suffix.
pub fn safe_component(name: &[u8]) -> (Vec<u8>, Option<String>) {
    let mut reasons: Vec<&str> = Vec::new();
    let mut out: Vec<u8> = name
        .iter()
        .map(|&b| match b {
            b'/' | b'\\' => {
                reasons.push("path separator");
                b'_'
            }
            0 => {
                reasons.push("NUL byte");
                b'_'
            }
            1..=0x1f | 0x7f => {
                reasons.push("control character");
                b'_'
            }
            _ => b,
        })
        .collect();
    if out.is_empty() || out == b"." || out == b".." {
        reasons.push("relative path name");
        out.insert(0, b'_');
    }
    let stem = out.split(|&b| b == b'.').next().unwrap_or(&[]);
    let stem_upper = String::from_utf8_lossy(stem)
        .trim_end()
        .to_ascii_uppercase();
    if WINDOWS_RESERVED.contains(&stem_upper.as_str()) {
        reasons.push("Windows reserved device name");
        out.insert(0, b'_');
    }
    if out.len() > NAME_MAX {
        reasons.push("name longer than 255 bytes");
        let digest = {
            use sha2::Digest;
            hex::encode(&sha2::Sha256::digest(name)[..4])
        };
        let mut cut = NAME_MAX - 1 - digest.len();
        // Do not cut inside a UTF-8 sequence.
        while cut > 0 && (out[cut] & 0xc0) == 0x80 {
            cut -= 1;
        }
        out.truncate(cut);
        out.push(b'~');
        out.extend_from_slice(digest.as_bytes());
    }
    reasons.dedup();
    let why = (!reasons.is_empty()).then(|| reasons.join(", "));
    (out, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_become_single_safe_components() {
        for bad in [
            &b".."[..],
            b".",
            b"",
            b"../../etc/passwd",
            b"/abs",
            b"a\0b",
            b"..\\..\\win",
            b"con",
            b"Aux.txt",
            b"LPT9.log",
        ] {
            let (safe, why) = safe_component(bad);
            assert!(why.is_some(), "{bad:?}");
            assert!(!safe.is_empty());
            assert!(safe != b"." && safe != b"..");
            assert!(!safe.contains(&b'/') && !safe.contains(&0));
        }
        let (long, why) = safe_component(&[b'a'; 400]);
        assert!(long.len() <= 255 && why.is_some());
        let (ok, why) = safe_component("héllo wörld.txt".as_bytes());
        assert_eq!(ok, "héllo wörld.txt".as_bytes());
        assert!(why.is_none());
        assert_eq!(safe_component(b"CONSOLE").1, None);
    }
}
