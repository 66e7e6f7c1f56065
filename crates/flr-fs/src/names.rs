//! Names and paths read from an image, rendered for messages and listings.

use crate::FsPath;

/// Renders a name for a terminal: valid UTF-8 is kept, control characters
/// and invalid bytes become `\xNN`, and a backslash becomes `\\`.
pub fn display_name(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                let mut b = [0u8; 4];
                for byte in c.encode_utf8(&mut b).bytes() {
                    out.push_str(&format!("\\x{byte:02x}"));
                }
            } else if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Renders one path component: as [`display_name`], and a `/` inside it
/// (possible in a crafted image) as `\x2f`, so it cannot read as two.
pub fn display_component(name: &[u8]) -> String {
    display_name(name).replace('/', "\\x2f")
}

/// Renders a path read from an image, each component as
/// [`display_component`] shows it, so a report names the entry
/// unambiguously.
pub fn display_path(path: &FsPath) -> String {
    if path.0.is_empty() {
        return "/".into();
    }
    let mut out = String::new();
    for c in &path.0 {
        out.push('/');
        out.push_str(&display_component(c));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_escapes() {
        assert_eq!(display_name(b"a\nb"), "a\\x0ab");
        assert_eq!(display_name(b"\xff"), "\\xff");
        assert_eq!(display_name("ü".as_bytes()), "ü");
        assert_eq!(display_component(b"a/b"), "a\\x2fb");
        let p = FsPath(vec![b"d".to_vec(), b"../x".to_vec(), b"a\0\xff".to_vec()]);
        assert_eq!(display_path(&p), "/d/..\\x2fx/a\\x00\\xff");
        assert_eq!(display_path(&FsPath::root()), "/");
    }
}
