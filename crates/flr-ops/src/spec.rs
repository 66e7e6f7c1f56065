//! `ID:/path` volume paths given on the command line.

use flr_fs::FsPath;

/// A path on a volume: `p2:/etc/hosts`, `disk:/`, `p1:` (the volume itself).
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
    /// Parses `ID:/path`. The id is everything before the first colon.
    pub fn parse(s: &str) -> Result<VolPath, String> {
        let (vol, path) = s.split_once(':').ok_or_else(|| {
            format!("{s:?}: expected VOLUME:/path, e.g. p1:/etc/hosts (volume ids come from `flr probe`)")
        })?;
        if vol.is_empty() {
            return Err(format!("{s:?}: the volume id before ':' is empty"));
        }
        Ok(VolPath {
            volume: vol.to_string(),
            path: FsPath::parse(path),
            raw_path: path.to_string(),
        })
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
    }
}
