//! `ID:/path` volume paths given on the command line.

use flr_fs::FsPath;

/// A path on a volume: `p2:/etc/hosts`, `disk:/`, `p1:` (the volume itself).
///
/// A volume of a disk image stored as a file is named by the file's path,
/// `::`, and the volume's id in that image:
/// `p2:/Profiles/alice.vhdx::p1:/Documents/report.txt`. `::` repeats for
/// deeper nesting; the last `::` separates the innermost volume, so a file
/// whose own name contains `::` cannot be addressed directly (its folder
/// can still be restored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolPath {
    /// Volume id as shown by `probe`.
    pub volume: String,
    /// Path inside the volume's filesystem.
    pub path: FsPath,
    /// The text after the colon, as given.
    pub raw_path: String,
}

impl VolPath {
    /// Parses `ID:/path`. The id is everything before the first colon, or,
    /// for a volume inside a disk image stored as a file, everything up to
    /// the first colon after the last `::`.
    pub fn parse(s: &str) -> Result<VolPath, String> {
        let (outer, last) = match s.rfind("::") {
            Some(i) => (&s[..i + 2], &s[i + 2..]),
            None => ("", s),
        };
        let Some((vol, path)) = last.split_once(':') else {
            return Err(if outer.is_empty() {
                format!("{s:?}: expected VOLUME:/path, e.g. p1:/etc/hosts (volume ids come from `flr probe`)")
            } else {
                format!(
                    "{s:?}: expected VOLUME:/path after '::', e.g. {outer}p1:/ (`flr ls IMAGE {}` lists the volumes)",
                    &outer[..outer.len() - 2]
                )
            });
        };
        if vol.is_empty() {
            return Err(format!("{s:?}: the volume id before ':' is empty"));
        }
        Ok(VolPath {
            volume: format!("{outer}{vol}"),
            path: FsPath::parse(path),
            raw_path: path.to_string(),
        })
    }

    /// Whether the volume lies in a disk image stored as a file.
    pub fn is_nested(&self) -> bool {
        self.volume.contains("::")
    }
}

impl std::fmt::Display for VolPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.volume, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let v = VolPath::parse("p2:/etc/hosts").unwrap();
        assert_eq!(v.volume, "p2");
        assert_eq!(v.path.to_string(), "/etc/hosts");
        assert!(VolPath::parse("nocolon").is_err());
        assert!(VolPath::parse(":/x").is_err());
        assert!(VolPath::parse("disk:").unwrap().path.is_root());
        let n = VolPath::parse("p2:/a/b.vhdx::p1:/Docs/x.txt").unwrap();
        assert_eq!(n.volume, "p2:/a/b.vhdx::p1");
        assert_eq!(n.path.to_string(), "/Docs/x.txt");
        assert!(n.is_nested());
        let n = VolPath::parse("p2:/a.vhdx::p1:/b.vhd::disk:").unwrap();
        assert_eq!(n.volume, "p2:/a.vhdx::p1:/b.vhd::disk");
        assert!(n.path.is_root());
        assert!(VolPath::parse("p2:/a.vhdx::").is_err());
        let n = VolPath::parse("p3/rootvg/rootlv:/etc").unwrap();
        assert_eq!(n.volume, "p3/rootvg/rootlv");
    }
}
