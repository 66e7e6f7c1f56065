//! Directory blocks: a linear walk of every entry in every block. This
//! reads hashed (htree) directories too, whose index nodes hide inside
//! entries with inode 0.

use flr_fs::FsError;

use crate::bytes::{le16, le32};
use crate::corrupt;

/// One directory's entries, without `.` and `..`.
#[derive(Debug, Default)]
pub(crate) struct DirList {
    /// (name, inode number, dirent file type)
    pub(crate) entries: Vec<(Vec<u8>, u32, u8)>,
    /// Indices into `entries`, sorted by name, for lookups.
    sorted: Vec<usize>,
    /// The inode of `..`.
    pub(crate) parent: Option<u32>,
    /// Whether the `.` entry was seen.
    dot: bool,
}

impl DirList {
    /// Parses one directory block (`at` is its byte offset, for errors).
    pub(crate) fn add_block(&mut self, blk: &[u8], filetype: bool, at: u64) -> Result<(), FsError> {
        let mut pos = 0usize;
        while pos + 8 <= blk.len() {
            let ino = le32(blk, pos);
            // With 64 KiB blocks a record spanning a whole block is stored
            // as 0 or 65535 (the length does not fit in 16 bits).
            let rec_len = match usize::from(le16(blk, pos + 4)) {
                0 | 65535 if blk.len() == 65536 => 65536,
                r => r,
            };
            let (name_len, ftype) = if filetype {
                (usize::from(blk[pos + 6]), blk[pos + 7])
            } else {
                (usize::from(le16(blk, pos + 6)), 0)
            };
            if rec_len < 8
                || rec_len & 3 != 0
                || rec_len > blk.len() - pos
                || 8 + name_len > rec_len
            {
                return Err(corrupt(
                    at + pos as u64,
                    format!(
                        "bad directory entry (record length {rec_len}, name length {name_len})"
                    ),
                ));
            }
            if ino != 0 && name_len > 0 {
                let name = &blk[pos + 8..pos + 8 + name_len];
                // Only the first `.` and `..` are the folder's own links; a
                // later entry with such a name (a corrupt or crafted folder) is
                // listed, so that it is seen and reported, never taken as the parent.
                match name {
                    b"." if !self.dot => self.dot = true,
                    b".." if self.parent.is_none() => self.parent = Some(ino),
                    _ => self.entries.push((name.to_vec(), ino, ftype)),
                }
            }
            pos += rec_len;
        }
        Ok(())
    }

    /// Takes the entries parsed so far (for streaming: one block at a time,
    /// while `.`/`..` state carries over to the next block).
    pub(crate) fn take_entries(&mut self) -> Vec<(Vec<u8>, u32, u8)> {
        std::mem::take(&mut self.entries)
    }

    /// Builds the lookup index once all blocks are in.
    pub(crate) fn finish(&mut self) {
        let mut idx: Vec<usize> = (0..self.entries.len()).collect();
        idx.sort_by(|&a, &b| self.entries[a].0.cmp(&self.entries[b].0));
        self.sorted = idx;
    }

    /// The inode of entry `name` (the first one, should a corrupt directory
    /// hold two).
    pub(crate) fn lookup(&self, name: &[u8]) -> Option<u32> {
        let i = self
            .sorted
            .partition_point(|&i| self.entries[i].0.as_slice() < name);
        let &j = self.sorted.get(i)?;
        (self.entries[j].0 == name).then(|| self.entries[j].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ino: u32, name: &[u8], rec_len: u16) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&ino.to_le_bytes());
        v.extend_from_slice(&rec_len.to_le_bytes());
        v.push(name.len() as u8);
        v.push(1);
        v.extend_from_slice(name);
        v.resize(usize::from(rec_len), 0);
        v
    }

    #[test]
    fn parses_and_looks_up() {
        let mut blk = Vec::new();
        blk.extend(entry(2, b".", 12));
        blk.extend(entry(2, b"..", 12));
        blk.extend(entry(0, b"gone", 16));
        blk.extend(entry(12, b"zeta", 16));
        blk.extend(entry(13, b"alpha", 1024 - 56));
        let mut d = DirList::default();
        d.add_block(&blk, true, 0).unwrap();
        d.finish();
        assert_eq!(d.entries.len(), 2);
        assert_eq!(d.parent, Some(2));
        assert_eq!(d.lookup(b"alpha"), Some(13));
        assert_eq!(d.lookup(b"zeta"), Some(12));
        assert_eq!(d.lookup(b"gone"), None);
        assert_eq!(d.lookup(b"b"), None);
    }

    #[test]
    fn a_second_dotdot_is_listed_not_taken_as_the_parent() {
        let mut blk = Vec::new();
        blk.extend(entry(2, b".", 12));
        blk.extend(entry(7, b"..", 12));
        blk.extend(entry(19, b"..", 12));
        blk.extend(entry(20, b".", 1024 - 36));
        let mut d = DirList::default();
        d.add_block(&blk, true, 0).unwrap();
        d.finish();
        assert_eq!(d.parent, Some(7));
        let names: Vec<(&[u8], u32)> = d.entries.iter().map(|e| (e.0.as_slice(), e.1)).collect();
        assert_eq!(names, [(&b".."[..], 19), (&b"."[..], 20)]);
    }

    #[test]
    fn rejects_bad_records() {
        let mut blk = entry(5, b"x", 12);
        blk.resize(1024, 0); // next record has rec_len 0
        let mut d = DirList::default();
        assert!(d.add_block(&blk, true, 0).is_err());
        let blk = entry(5, b"name-longer-than-record", 12);
        let mut d = DirList::default();
        assert!(d.add_block(&blk, true, 0).is_err());
    }
}
