//! The positioned-read trait that every flr layer speaks, and the basic
//! byte sources built on it.
//!
//! A layer (a VHD container, a GPT partition, a LUKS volume) takes an
//! [`Arc<dyn ReadAt>`](ReadAt) for what lies below it and is itself a
//! [`ReadAt`] for the layer above. Reads take `&self` and carry their own
//! offset, so there is no shared cursor and many readers can work at once.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use flr_io::{MemSource, ReadAt, Slice};
//!
//! let disk: Arc<dyn ReadAt> = Arc::new(MemSource::new(b"0123456789".to_vec()));
//! let part = Slice::new(disk, 2, 5, "partition").unwrap();
//! let mut buf = [0u8; 3];
//! part.read_exact_at(1, &mut buf).unwrap();
//! assert_eq!(&buf, b"345");
//! ```
//!
//! # Errors
//! Every failure is an [`IoError`] that names the layer and the byte offset
//! (in that layer's own address space) where it happened.
#![deny(missing_docs)]

mod bounce;
mod changes;
mod cursor;
mod error;
mod parent;
mod source;

pub use bounce::Bounce;
pub use changes::{set_runs, Change, Compared, RangeSet};
pub use cursor::{ReadOnlyCursor, ReaderCursor};
pub use error::IoError;
pub use parent::{
    inherit_chain, locator_paths, open_parent_step, quote_list, ChainFailure, FileParentResolver,
    LocatorPath, NoParentResolver, ParentResolver,
};
pub use source::{FileSource, MemSource, Refused, Slice, Zeros};

use std::sync::Arc;

/// A positioned, read-only view of bytes: a file, a virtual disk, a partition,
/// a decrypted volume.
///
/// Implementations must be safe to call from many threads at once.
pub trait ReadAt: Send + Sync {
    /// Fills `buf` with the bytes starting at `offset`, or fails. A read that
    /// extends past [`ReadAt::len`] is an error ([`IoError::OutOfRange`]).
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError>;

    /// The size in bytes.
    fn len(&self) -> u64;

    /// True when the size is zero.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A short name of this layer (`file`, `vhd`, `gpt partition`…) used in
    /// error messages.
    fn layer(&self) -> &str {
        "source"
    }

    /// Whether the range is known to read as zeros without reading anything
    /// (an unallocated VHD block, a sparse region). `false` means "unknown".
    fn is_known_zero(&self, _offset: u64, _len: u64) -> bool {
        false
    }

    /// Whether the range may differ from the base this stack is compared
    /// against (see [`Compared`]). A layer maps the range to the layer
    /// below and asks it; the default, for a layer that cannot, is
    /// [`Change::Unknown`] (treated as changed).
    fn changed(&self, _offset: u64, _len: u64) -> Change {
        Change::Unknown
    }

    /// Gives this layer its older self, `base` (the same layer in the older
    /// stack of a pair), for a layer whose map from its offsets to the
    /// layer below is data that may differ between the two versions (a
    /// thin LV's block mappings, an LV's segments): it then answers
    /// [`ReadAt::changed`] by comparing the two maps, and says changed
    /// where they differ. Returns whether it took the base. The default,
    /// for a layer mapped by fixed arithmetic or not at all, ignores it.
    fn set_base(&self, _base: &dyn ReadAt) -> bool {
        false
    }

    /// This layer as [`std::any::Any`], for [`ReadAt::set_base`] to find
    /// its older self's own structures; `None` by default.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// A shared handle to a [`ReadAt`].
pub type Source = Arc<dyn ReadAt>;

impl<T: ReadAt + ?Sized> ReadAt for Arc<T> {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        (**self).read_exact_at(offset, buf)
    }
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn layer(&self) -> &str {
        (**self).layer()
    }
    fn is_known_zero(&self, offset: u64, len: u64) -> bool {
        (**self).is_known_zero(offset, len)
    }
    fn changed(&self, offset: u64, len: u64) -> Change {
        (**self).changed(offset, len)
    }
    fn set_base(&self, base: &dyn ReadAt) -> bool {
        (**self).set_base(base)
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        (**self).as_any()
    }
}

/// Checks that `len` bytes at `offset` lie inside `size`; the helper every
/// implementation uses before reading.
pub fn check_range(layer: &str, offset: u64, len: usize, size: u64) -> Result<(), IoError> {
    let len64 = u64::try_from(len).unwrap_or(u64::MAX);
    match offset.checked_add(len64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(IoError::OutOfRange {
            layer: layer.to_string(),
            offset,
            len: len64,
            size,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The trait must stay object-safe: every layer is handed around as `dyn ReadAt`.
    #[allow(dead_code)]
    fn assert_object_safe(_: &dyn ReadAt) {}

    #[test]
    fn check_range_overflow_is_an_error() {
        assert!(check_range("t", u64::MAX, 2, u64::MAX).is_err());
        assert!(check_range("t", 8, 2, 10).is_ok());
        assert!(check_range("t", 9, 2, 10).is_err());
    }
}
