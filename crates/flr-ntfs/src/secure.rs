//! Windows metadata of a file: attribute bits from `$STANDARD_INFORMATION`,
//! the reparse tag, and the security descriptor, found through the
//! `security_id` of `$STANDARD_INFORMATION` in `$Secure:$SDS` (NTFS 3.x)
//! or in a legacy `$SECURITY_DESCRIPTOR` attribute of the file (NTFS 1.x,
//! and preferred when present).
//!
//! Source for `$SDS`: the layout ntfs-3g's `layout.h` and the NTFS
//! documentation (Richard Russon et al., "NTFS Documentation", $Secure)
//! describe: 256 KiB blocks, each followed by a mirror copy of itself;
//! entries 16-byte aligned, never crossing a block, each
//!
//! ```text
//! 0x00 u32 hash   0x04 u32 security_id   0x08 u64 offset of this entry
//! 0x10 u32 length (header included)      0x14 self-relative descriptor
//! ```

use std::collections::HashMap;
use std::sync::Mutex;

use flr_fs::windows::{ATTR_DIRECTORY, ATTR_REPARSE_POINT};
use flr_fs::{FileHandle, FsError, FsPath, Reparse, SecurityDescriptor, WindowsMeta};
use flr_io::ReaderCursor;
use ntfs::NtfsAttributeType;

use crate::data::NtfsHandle;
use crate::{corrupt, nt, NtfsFs};

const SECURE: u64 = 9;
const BLOCK: u64 = 256 << 10;
const HEADER: u64 = 20;
/// Largest `$SDS` indexed (a volume with millions of distinct ACLs).
const MAX_SDS: u64 = 1 << 30;
/// Largest descriptor read.
const MAX_SD: u64 = 64 << 10;
/// Parsed descriptors kept (files share few).
const SD_CACHE: usize = 1 << 16;

/// `$Secure:$SDS`, indexed by security id.
pub(crate) struct Secure {
    /// security id → (offset of the descriptor in `$SDS`, its length).
    index: HashMap<u32, (u64, u64)>,
    sds: Mutex<NtfsHandle>,
    parsed: Mutex<HashMap<u32, SecurityDescriptor>>,
}

impl NtfsFs {
    fn secure(&self) -> Option<&Secure> {
        self.secure
            .get_or_init(|| crate::guard(|| Ok(self.load_secure())).ok().flatten())
            .as_ref()
    }

    /// Indexes `$SDS` by walking its entries (each data block; mirrors
    /// skipped). `None` when there is no `$Secure` or it cannot be read.
    fn load_secure(&self) -> Option<Secure> {
        let mut fs = self.cursor();
        let file = self.file(&mut fs, SECURE).ok()?;
        let data = self
            .stream_of(&mut fs, &file, NtfsAttributeType::Data, "$SDS")
            .ok()?;
        let size = data.size().min(MAX_SDS);
        let mut h = NtfsHandle::new(self.src.clone(), data);
        let mut index = HashMap::new();
        let mut buf = vec![0u8; BLOCK as usize];
        let mut start = 0u64;
        while start < size {
            let want = usize::try_from((size - start).min(BLOCK)).ok()?;
            let n = h.read_at(start, &mut buf[..want]).ok()?;
            let block = &buf[..n];
            let mut off = 0usize;
            while off + HEADER as usize <= block.len() {
                let e = &block[off..];
                let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
                let at = u64::from_le_bytes([e[8], e[9], e[10], e[11], e[12], e[13], e[14], e[15]]);
                let len = u64::from(u32::from_le_bytes([e[16], e[17], e[18], e[19]]));
                let len_us = usize::try_from(len).unwrap_or(usize::MAX);
                if len <= HEADER || at != start + off as u64 || len_us > e.len() || id == 0 {
                    break;
                }
                index
                    .entry(id)
                    .or_insert((at + HEADER, (len - HEADER).min(MAX_SD)));
                off += len_us.div_ceil(16) * 16;
            }
            // The next data block (the one after it is its mirror).
            start += 2 * BLOCK;
        }
        Some(Secure {
            index,
            sds: Mutex::new(h),
            parsed: Mutex::new(HashMap::new()),
        })
    }

    /// The descriptor with security id `id`, from `$SDS`.
    fn descriptor(&self, id: u32) -> Result<Option<SecurityDescriptor>, FsError> {
        let Some(sec) = self.secure() else {
            return Ok(None);
        };
        if let Some(d) = sec
            .parsed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Ok(Some(d.clone()));
        }
        let Some(&(off, len)) = sec.index.get(&id) else {
            return Ok(None);
        };
        let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(0)];
        let n = sec
            .sds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read_at(off, &mut bytes)?;
        bytes.truncate(n);
        let d = SecurityDescriptor::parse(&bytes).map_err(|e| {
            corrupt(
                0,
                format!("$Secure:$SDS entry for security id {id} at {off:#x}: {e}"),
            )
        })?;
        let mut cache = sec.parsed.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= SD_CACHE {
            cache.clear();
        }
        cache.insert(id, d.clone());
        Ok(Some(d))
    }

    pub(crate) fn windows_meta_of(&self, path: &FsPath) -> Result<WindowsMeta, FsError> {
        let mut fs: ReaderCursor = self.cursor();
        let node = self.resolve(&mut fs, path)?;
        let file = self.file(&mut fs, node.rec)?;
        let si = file.info().map_err(nt)?;
        let mut attributes = si.file_attributes().bits();
        if file.is_directory() {
            attributes |= ATTR_DIRECTORY;
        }
        let mut meta = WindowsMeta {
            attributes,
            ..WindowsMeta::default()
        };
        if attributes & ATTR_REPARSE_POINT != 0 {
            meta.reparse = self
                .small_value(
                    &mut fs,
                    &file,
                    NtfsAttributeType::ReparsePoint,
                    16 * 1024 + 8,
                )?
                .and_then(|v| {
                    v.get(..4)
                        .map(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]))
                })
                .map(Reparse::from_tag);
        }
        let legacy = self.small_value(
            &mut fs,
            &file,
            NtfsAttributeType::SecurityDescriptor,
            MAX_SD,
        )?;
        let sd = match legacy {
            Some(bytes) => Some(SecurityDescriptor::parse(&bytes).map_err(|e| {
                corrupt(
                    file.position().value().map_or(0, |p| p.get()),
                    format!("record {}: $SECURITY_DESCRIPTOR: {e}", node.rec),
                )
            })?),
            None => match si.security_id() {
                Some(id) if id != 0 => self.descriptor(id)?,
                _ => None,
            },
        };
        if let Some(sd) = sd {
            meta.owner = sd.owner;
            meta.group = sd.group;
            meta.sddl = Some(sd.sddl);
        }
        Ok(meta)
    }
}
