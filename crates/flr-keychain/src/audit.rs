//! The audit log: one JSON line per key operation (get secret, get key,
//! unwrap, offline unwrap), never key bytes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// One record.
#[derive(Debug, Clone, Serialize)]
pub struct Record<'a> {
    /// RFC 3339, UTC.
    pub time: String,
    /// `get-secret`, `list-secret-versions`, `get-key`, `unwrap-key`,
    /// `offline-unwrap`, `offline-secret`.
    pub operation: &'a str,
    /// The object id with its version.
    pub id: &'a str,
    /// Algorithm for unwraps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alg: Option<&'a str>,
    /// Who the vault saw (token claims), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<&'a str>,
    /// `ok`, `dry-run`, or the error code.
    pub result: &'a str,
    /// The image being restored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<&'a str>,
}

/// An append-only JSONL file (created 0600), or nothing when disabled.
#[derive(Debug)]
pub struct AuditLog {
    file: Option<File>,
    path: Option<PathBuf>,
    /// Records written (for tests and the report).
    pub written: usize,
}

impl AuditLog {
    /// A log that records nothing.
    pub fn disabled() -> AuditLog {
        AuditLog {
            file: None,
            path: None,
            written: 0,
        }
    }

    /// Opens (creating) the log at `path`.
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(AuditLog {
            file: Some(file),
            path: Some(path.to_path_buf()),
            written: 0,
        })
    }

    /// The default location inside the user's state folder
    /// (`$XDG_STATE_HOME`, which the command line finds): `flr/audit.jsonl`.
    pub fn default_path(state_dir: &Path) -> PathBuf {
        state_dir.join("flr/audit.jsonl")
    }

    /// Where records go.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Appends a record (time filled in). Failing to write the audit log
    /// is an error the caller must not ignore.
    pub fn record(&mut self, mut r: Record<'_>) -> std::io::Result<()> {
        let Some(f) = self.file.as_mut() else {
            return Ok(());
        };
        r.time = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let mut line = serde_json::to_vec(&r).map_err(std::io::Error::other)?;
        line.push(b'\n');
        f.write_all(&line)?;
        f.flush()?;
        self.written += 1;
        Ok(())
    }
}
