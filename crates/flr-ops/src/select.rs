//! `get --include/--exclude`: which entries of the image a restore takes.
//!
//! Patterns are globs (`globset`) matched on the image path, relative to
//! the volume's root whatever folder was asked for:
//!
//! * a pattern without `/` matches an entry's name at any depth
//!   (`*.conf`, `core.[0-9]*`);
//! * a pattern with `/` matches the whole path from the root; a leading
//!   `/` is optional (`etc/*.conf`, `/home/*/.ssh/**`, `var/**/*.log`);
//! * `*` and `?` stay within one path component, `**` crosses them,
//!   `[...]`, `{a,b}` and `\` escapes work as in `globset`; case matters.
//!
//! An excluded entry is left out, and an excluded folder is not entered.
//! With at least one `--include`, a file or symlink is taken only when it,
//! or a folder above it, matches an include; folders are entered to look
//! for matches and created in DEST only when something inside is restored
//! (or they match an include themselves). Exclusion wins over inclusion.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use flr_fs::FsPath;
use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};

/// The patterns of one kind (include or exclude), split by what they match.
#[derive(Debug, Clone)]
struct Patterns {
    /// Patterns without `/`: matched on the entry's name.
    names: GlobSet,
    /// Patterns with `/`: matched on the path from the volume root.
    paths: GlobSet,
}

impl Patterns {
    fn new(flag: &str, patterns: &[String]) -> Result<Option<Patterns>, String> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for p in patterns {
            let anchored = p.strip_prefix('/').unwrap_or(p);
            let anchored = anchored.strip_suffix('/').unwrap_or(anchored);
            if anchored.is_empty() {
                return Err(format!("{flag} {p:?}: an empty pattern"));
            }
            let glob = GlobBuilder::new(anchored)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| format!("{flag} {p:?}: {e}"))?;
            if p.contains('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| format!("{flag}: {e}"));
        Ok(Some(Patterns {
            names: build(names)?,
            paths: build(paths)?,
        }))
    }

    fn matches(&self, path: &FsPath) -> bool {
        let name = path.file_name().unwrap_or(b"");
        if !self.names.is_empty() && self.names.is_match(Path::new(OsStr::from_bytes(name))) {
            return true;
        }
        if self.paths.is_empty() {
            return false;
        }
        let joined = path.0.join(&b'/');
        self.paths
            .is_match_candidate(&Candidate::new(Path::new(OsStr::from_bytes(&joined))))
    }
}

/// What `--include` and `--exclude` select; the default takes everything.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    include: Option<Patterns>,
    exclude: Option<Patterns>,
}

impl Selection {
    /// Compiles the patterns; a bad glob is a usage error naming it.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Selection, String> {
        Ok(Selection {
            include: Patterns::new("--include", include)?,
            exclude: Patterns::new("--exclude", exclude)?,
        })
    }

    /// Whether every entry is taken (no pattern given).
    pub fn is_everything(&self) -> bool {
        self.include.is_none() && self.exclude.is_none()
    }

    /// Whether some `--include` was given.
    pub fn has_includes(&self) -> bool {
        self.include.is_some()
    }

    /// Whether `path` is left out by an `--exclude` (a folder: with all it holds).
    pub fn excluded(&self, path: &FsPath) -> bool {
        self.exclude.as_ref().is_some_and(|p| p.matches(path))
    }

    /// Whether `path` matches an `--include` (true when none was given).
    pub fn included(&self, path: &FsPath) -> bool {
        self.include.as_ref().is_none_or(|p| p.matches(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(inc: &[&str], exc: &[&str]) -> Selection {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Selection::new(&v(inc), &v(exc)).expect("patterns compile")
    }

    #[test]
    fn names_match_at_any_depth_paths_from_the_root() {
        let s = sel(&["*.txt", "etc/*"], &[]);
        assert!(s.included(&FsPath::parse("/home/alice/notes.txt")));
        assert!(s.included(&FsPath::parse("/notes.txt")));
        assert!(s.included(&FsPath::parse("/etc/hosts")));
        // `*` does not cross `/`.
        assert!(!s.included(&FsPath::parse("/etc/ssh/sshd_config")));
        assert!(!s.included(&FsPath::parse("/home/alice/notes.md")));
        let s = sel(&["/var/**/*.log"], &[]);
        assert!(s.included(&FsPath::parse("/var/log/a.log")));
        assert!(s.included(&FsPath::parse("/var/a.log")));
        assert!(!s.included(&FsPath::parse("/srv/var/a.log")));
    }

    #[test]
    fn exclusion_and_defaults() {
        let s = sel(&[], &["*.tmp", "/proc"]);
        assert!(s.included(&FsPath::parse("/a.tmp")));
        assert!(s.excluded(&FsPath::parse("/x/a.tmp")));
        assert!(s.excluded(&FsPath::parse("/proc")));
        assert!(!s.excluded(&FsPath::parse("/x/proc")));
        assert!(!s.excluded(&FsPath::parse("/x/a.tmpl")));
        assert!(Selection::default().is_everything());
    }

    #[test]
    fn bad_patterns_are_named() {
        let e = Selection::new(&["a[".into()], &[]).unwrap_err();
        assert!(e.contains("--include \"a[\""), "{e}");
        assert!(Selection::new(&[], &["/".into()]).is_err());
    }
}
