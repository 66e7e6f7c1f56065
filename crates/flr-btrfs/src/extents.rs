//! The device bytes that define one file or folder
//! ([`Filesystem::extents`](flr_fs::Filesystem::extents)) on a
//! single-device filesystem.
//!
//! * data: the file's regular extents, mapped through the chunk tree to
//!   device offsets (every copy a DUP chunk keeps); an uncompressed extent
//!   by the part the file references, a compressed one whole. Holes and
//!   preallocated extents read as zeros and are not named; inline data is
//!   in the leaf, so in the metadata.
//! * metadata: the leaves of the subvolume's tree that hold the inode's
//!   items (inode item, names, extended attributes, folder entries, file
//!   extent items), each at every copy.
//!
//! The tree nodes above those leaves are not named: copy-on-write rewrites
//! the path up to the root on every commit, so they would mark every
//! object changed. Leaving them out is sound because Btrfs never changes
//! an item in place: a leaf whose items change is written elsewhere, and
//! any change to an inode's items (a name, an extent, an attribute)
//! updates its inode item as well (its transid and ctime), so the leaf
//! holding the inode item is new bytes.
//!
//! `None` when the filesystem spans several devices (a range set covers
//! one device) or a block lies in a RAID5/6 chunk.

use flr_fs::{FileExtents, FsError, FsPath};

use crate::chunk::Place;
use crate::file;
use crate::items::{ExtentKind, COMPRESS_NONE};
use crate::tree::Key;
use crate::BtrfsFs;

impl BtrfsFs {
    /// Appends the device ranges holding logical `logical..+len`; `false`
    /// when a piece does not lie in copies on the one device. With
    /// `layout` (`file`: the file offset of `logical`), also appends where
    /// each piece lies at the first copy of its chunk (the one a read
    /// tries first).
    fn device_ranges(
        &self,
        logical: u64,
        len: u64,
        out: &mut Vec<(u64, u64)>,
        mut layout: Option<(u64, &mut Vec<flr_fs::FileRun>)>,
    ) -> Result<bool, FsError> {
        let vol = &self.inner.trees.vol;
        let mut done = 0u64;
        while done < len {
            let at = logical + done;
            let c = vol.chunk(at)?;
            let (place, run) = c.place(at);
            let take = run.min(len - done);
            let Place::Copies { slots, rel } = place else {
                return Ok(false);
            };
            if let (Some((file, l)), Some(&s)) = (layout.as_mut(), slots.first()) {
                l.push(flr_fs::FileRun {
                    file: *file + done,
                    volume: c.stripes[s].offset + rel,
                    len: take,
                });
            }
            for s in slots {
                let st = c.stripes[s];
                out.push((st.offset + rel, take));
            }
            done += take;
        }
        Ok(true)
    }

    pub(crate) fn extents_inner(&self, path: &FsPath) -> Result<Option<FileExtents>, FsError> {
        if self.inner.sb.num_devices != 1 || self.inner.trees.vol.devices.len() != 1 {
            return Ok(None);
        }
        let o = self.resolve(path)?;
        let mut x = FileExtents::default();
        if o.empty {
            // A snapshot's stand-in for a nested subvolume: no items of its
            // own (its name is its parent's).
            return Ok(Some(x));
        }
        let root = self.inner.fs_root(o.tree)?;
        let ns = self.inner.trees.nodesize as u64;
        let mut leaves: Vec<u64> = Vec::new();
        for it in self.inner.trees.range(
            root,
            Key::new(o.ino, 0, 0),
            Key::new(o.ino, u8::MAX, u64::MAX),
        )? {
            let leaf = it?.leaf();
            if leaves.last() != Some(&leaf) {
                leaves.push(leaf);
            }
        }
        for leaf in leaves {
            if !self.device_ranges(leaf, ns, &mut x.meta, None)? {
                return Ok(None);
            }
        }
        let extents = match file::map(&self.inner, root, o.ino) {
            Ok(e) => e,
            Err(FsError::Unsupported { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        // The layout: every piece of an uncompressed extent at the copy the
        // reader tries first; none once an extent is inline or compressed.
        let is_file = self.inode(o)?.kind() == flr_fs::FileKind::File;
        let mut layout = is_file.then(Vec::new);
        for e in extents {
            match e.kind {
                ExtentKind::Regular {
                    compression,
                    disk_bytenr,
                    disk_num_bytes,
                    offset,
                    ..
                } => {
                    let (at, len) = if compression == COMPRESS_NONE {
                        (disk_bytenr + offset, e.len)
                    } else {
                        layout = None;
                        (disk_bytenr, disk_num_bytes)
                    };
                    let l = layout.as_mut().map(|l| (e.start, l));
                    if !self.device_ranges(at, len, &mut x.data, l)? {
                        return Ok(None);
                    }
                }
                ExtentKind::Inline { .. } => layout = None,
                ExtentKind::Prealloc | ExtentKind::Hole => {}
            }
        }
        x.layout = layout;
        Ok(Some(x))
    }
}
