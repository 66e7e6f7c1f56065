//! The restore journal: what `get --skip-existing` (and
//! `--overwrite=if-different`) wrote into DEST, so that a resumed restore
//! knows a file is the one it wrote without reading the image again.
//!
//! `DEST/.flr-restore.jsonl` holds one JSON line per file written, appended
//! as each file is finished (renamed into place, times and mode set):
//!
//! ```text
//! {"v":1,"ino":1234,"size":4096,"mtime":[1733212800,0],"ctime":[1733212811,52013000],
//!  "src":"<sha256 of the image, volume, path and file identity>","sha256":"<of the bytes>"}
//! ```
//!
//! A file in DEST counts as identical when a line names its inode, the
//! file to restore has the same source identity (`src`: the image's
//! location without its query but for a snapshot id, the volume, the path,
//! and the image file's inode, size, mtime and change time), and the file
//! in DEST still has the size, mtime and change time it had when flr
//! finished it. The change time is set by the kernel on every write,
//! truncate, chmod, chown, xattr change or rename, and cannot be set back
//! by a user, so an equal change time means no one has touched the file
//! since. When only the change time differs (a chmod, a backup tool's
//! xattr), the file in DEST is hashed and compared with the recorded
//! sha256, still without reading the image. Without a line, the file is
//! compared with the image as before. A line that does not parse is
//! ignored; a later line for an inode replaces an earlier one.
//!
//! The journal never holds key material or a SAS token (the location's
//! query is dropped, and `src` is a hash).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};

use flr_fs::{FsPath, Metadata, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::extract::DestDir;

/// The journal's name in DEST's top folder (an image entry of this name
/// there is restored as `.flr-restore.jsonl~1`).
pub(crate) const NAME: &[u8] = b".flr-restore.jsonl";

/// The version written in each line.
const VERSION: u32 = 1;

/// Lines appended before the writer is flushed (an interrupted run loses at
/// most these: those files are then compared with the image).
const FLUSH_EVERY: usize = 64;

/// One file flr wrote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Record {
    v: u32,
    /// The file's inode in DEST.
    ino: u64,
    size: u64,
    /// The file's mtime and change time in DEST when flr finished it,
    /// as (seconds, nanoseconds).
    mtime: (i64, u32),
    ctime: (i64, u32),
    /// [`source_id`] of the file it was restored from.
    src: String,
    /// sha256 of the bytes written, hex.
    sha256: String,
}

/// A [`Record`] as kept in memory (the hashes as bytes: a journal of a
/// million files stays near 100 MiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Known {
    size: u64,
    mtime: (i64, u32),
    ctime: (i64, u32),
    src: [u8; 32],
    sha256: [u8; 32],
}

impl Known {
    fn of(r: &Record) -> Option<Known> {
        let mut src = [0u8; 32];
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(&r.src, &mut src).ok()?;
        hex::decode_to_slice(&r.sha256, &mut sha256).ok()?;
        Some(Known {
            size: r.size,
            mtime: r.mtime,
            ctime: r.ctime,
            src,
            sha256,
        })
    }
}

/// What a file in DEST looks like now (`fstatat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DestStat {
    pub(crate) ino: u64,
    pub(crate) size: u64,
    pub(crate) mtime: Timestamp,
    pub(crate) ctime: Timestamp,
}

/// What the journal says about a file already in DEST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Written by flr from this very source file and untouched since.
    Untouched,
    /// Written by flr from this source file, touched since: its bytes are
    /// to be compared with this sha256.
    Touched([u8; 32]),
    /// The journal knows nothing of it (or of another source).
    Unknown,
}

/// The journal of one `get`: the lines read, and the writer for new ones.
pub(crate) struct Journal {
    records: HashMap<u64, Known>,
    out: Option<BufWriter<File>>,
    pending: usize,
    /// A problem with the journal, reported once by the caller.
    pub(crate) problem: Option<String>,
}

impl Journal {
    /// Reads the journal in `root` and, unless `read_only` (`--dry-run`),
    /// opens it for appending (created, mode 0600, if missing). A journal
    /// that cannot be opened leaves the restore to compare with the image.
    pub(crate) fn open(root: &DestDir, read_only: bool) -> Journal {
        let mut j = Journal {
            records: HashMap::new(),
            out: None,
            pending: 0,
            problem: None,
        };
        let file = if read_only {
            root.open_read(NAME).map_err(|e| (e.kind(), e))
        } else {
            root.open_journal(NAME).map_err(|e| (e.kind(), e))
        };
        let mut file = match file {
            Ok(f) => f,
            Err((std::io::ErrorKind::NotFound, _)) => return j,
            Err((_, e)) => {
                j.problem = Some(format!(
                    "the restore journal {} cannot be used ({e}); files already there are compared with the image",
                    String::from_utf8_lossy(NAME)
                ));
                return j;
            }
        };
        let mut lines = BufReader::new(&mut file);
        let mut line = Vec::new();
        while matches!(lines.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            if let Ok(r) = serde_json::from_slice::<Record>(&line) {
                if let Some(k) = Known::of(&r).filter(|_| r.v == VERSION) {
                    j.records.insert(r.ino, k);
                }
            }
            line.clear();
        }
        if !read_only {
            j.out = Some(BufWriter::new(file));
        }
        j
    }

    /// What the journal says of the file `now` in DEST, to be restored
    /// from the source file whose identity is `src`.
    pub(crate) fn verdict(&self, now: &DestStat, src: &[u8; 32]) -> Verdict {
        let Some(r) = self.records.get(&now.ino) else {
            return Verdict::Unknown;
        };
        if r.src != *src || r.size != now.size {
            return Verdict::Unknown;
        }
        // A change time in whole seconds (a destination that keeps no
        // finer one) could hide a change made within that second after flr
        // finished the file: those files are always hashed.
        if r.mtime == pair(now.mtime) && r.ctime == pair(now.ctime) && r.ctime.1 != 0 {
            Verdict::Untouched
        } else {
            Verdict::Touched(r.sha256)
        }
    }

    /// Appends the line for a file just finished.
    pub(crate) fn record(&mut self, now: &DestStat, src: [u8; 32], sha256: &[u8; 32]) {
        let k = Known {
            size: now.size,
            mtime: pair(now.mtime),
            ctime: pair(now.ctime),
            src,
            sha256: *sha256,
        };
        let r = Record {
            v: VERSION,
            ino: now.ino,
            size: k.size,
            mtime: k.mtime,
            ctime: k.ctime,
            src: hex::encode(src),
            sha256: hex::encode(sha256),
        };
        if let Some(out) = self.out.as_mut() {
            let mut line = serde_json::to_vec(&r).unwrap_or_default();
            line.push(b'\n');
            if out.write_all(&line).is_err() {
                self.problem = Some("the restore journal could not be written".into());
                self.out = None;
                return;
            }
            self.pending += 1;
            if self.pending >= FLUSH_EVERY {
                self.flush();
            }
        }
        self.records.insert(now.ino, k);
    }

    /// Writes out what is buffered.
    pub(crate) fn flush(&mut self) {
        self.pending = 0;
        if let Some(out) = self.out.as_mut() {
            if out.flush().is_err() {
                self.problem = Some("the restore journal could not be written".into());
                self.out = None;
            }
        }
    }

    /// Whether the journal is being written.
    pub(crate) fn writing(&self) -> bool {
        self.out.is_some()
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.flush();
    }
}

fn pair(t: Timestamp) -> (i64, u32) {
    (t.secs, t.nanos)
}

/// The identity of a source file: a hash of the image's location (its
/// query dropped, but for a snapshot or version id, so no SAS token is
/// kept), the volume, the path and the file's inode, size, mtime and
/// change time in the image.
pub(crate) fn source_id(location: &str, vol: &str, path: &FsPath, meta: &Metadata) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    let (base, query) = location.split_once('?').unwrap_or((location, ""));
    h.update(base.as_bytes());
    for kv in query.split('&') {
        if kv.starts_with("snapshot=") || kv.starts_with("versionid=") {
            h.update(b"?");
            h.update(kv.as_bytes());
        }
    }
    h.update([0]);
    h.update(vol.as_bytes());
    h.update([0]);
    for c in &path.0 {
        h.update((c.len() as u64).to_le_bytes());
        h.update(c);
    }
    let t = |t: Option<Timestamp>| t.map_or((i64::MIN, 0), pair);
    let (m, c) = (t(meta.mtime), t(meta.ctime));
    for n in [
        meta.inode.unwrap_or(u64::MAX),
        meta.size,
        m.0 as u64,
        u64::from(m.1),
        c.0 as u64,
        u64::from(c.1),
    ] {
        h.update(n.to_le_bytes());
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64, nanos: u32) -> Timestamp {
        Timestamp { secs, nanos }
    }

    #[test]
    fn the_query_but_a_snapshot_id_is_left_out() {
        let p = FsPath(vec![b"a".to_vec()]);
        let m = Metadata::default();
        let a = source_id("https://x/c/b?snapshot=1&sig=AAA", "disk", &p, &m);
        let b = source_id("https://x/c/b?sig=BBB&snapshot=1", "disk", &p, &m);
        let c = source_id("https://x/c/b?snapshot=2&sig=AAA", "disk", &p, &m);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, source_id("https://x/c/b?snapshot=1", "p2", &p, &m));
        let mut m2 = m.clone();
        m2.size = 1;
        assert_ne!(a, source_id("https://x/c/b?snapshot=1", "disk", &p, &m2));
    }

    #[test]
    fn verdicts() {
        let j = Journal {
            records: HashMap::from([(
                7,
                Known {
                    size: 3,
                    mtime: (10, 1),
                    ctime: (20, 2),
                    src: [1; 32],
                    sha256: [9; 32],
                },
            )]),
            out: None,
            pending: 0,
            problem: None,
        };
        let now = DestStat {
            ino: 7,
            size: 3,
            mtime: ts(10, 1),
            ctime: ts(20, 2),
        };
        assert_eq!(j.verdict(&now, &[1; 32]), Verdict::Untouched);
        assert_eq!(j.verdict(&now, &[2; 32]), Verdict::Unknown);
        let chmod = DestStat {
            ctime: ts(21, 0),
            ..now
        };
        assert_eq!(j.verdict(&chmod, &[1; 32]), Verdict::Touched([9; 32]));
        let grown = DestStat { size: 4, ..now };
        assert_eq!(j.verdict(&grown, &[1; 32]), Verdict::Unknown);
        let other = DestStat { ino: 8, ..now };
        assert_eq!(j.verdict(&other, &[1; 32]), Verdict::Unknown);
    }
}
