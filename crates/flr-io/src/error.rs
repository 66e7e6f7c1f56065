use std::fmt;

/// An error from a positioned read, naming the layer and the byte offset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IoError {
    /// The read extends past the end of the layer.
    #[error(
        "{layer}: read of {len} bytes at offset {offset:#x} goes past the end ({size:#x} bytes)"
    )]
    OutOfRange {
        /// The layer that refused the read.
        layer: String,
        /// Offset of the read within that layer.
        offset: u64,
        /// Length of the read.
        len: u64,
        /// Size of the layer.
        size: u64,
    },
    /// The operating system failed the read.
    #[error("{layer}: I/O error at offset {offset:#x}: {source}")]
    Os {
        /// The layer (usually `file`).
        layer: String,
        /// Offset of the failed read.
        offset: u64,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A structure the layer needs for this read is corrupt (a BAT entry
    /// pointing past the end of the file, a bad block header).
    #[error("{layer}: corrupt structure at offset {offset:#x}: {what}")]
    Corrupt {
        /// The layer whose structure is corrupt.
        layer: String,
        /// Offset of the corrupt structure.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// The read needs something the layer does not support.
    #[error("{layer}: unsupported at offset {offset:#x}: {what}")]
    Unsupported {
        /// The layer.
        layer: String,
        /// Offset of the read.
        offset: u64,
        /// What is missing.
        what: String,
    },
}

impl IoError {
    /// What `layer` reports when the read of its structure `what` (at
    /// `offset` in that layer) failed with `self` below it: a failure of
    /// the storage ([`IoError::Os`]: a disk error, a refused or broken
    /// network read) stays that failure, since nothing is known to be
    /// corrupt; anything else (a read past the end of the file) means the
    /// structure that pointed there is corrupt.
    pub fn reading(self, layer: &str, offset: u64, what: impl fmt::Display) -> Self {
        match self {
            e @ IoError::Os { .. } => e,
            e => IoError::corrupt(layer, offset, format!("{what}: {e}")),
        }
    }

    /// Builds a [`IoError::Corrupt`].
    pub fn corrupt(layer: impl Into<String>, offset: u64, what: impl fmt::Display) -> Self {
        IoError::Corrupt {
            layer: layer.into(),
            offset,
            what: what.to_string(),
        }
    }

    /// Builds a [`IoError::Unsupported`].
    pub fn unsupported(layer: impl Into<String>, offset: u64, what: impl fmt::Display) -> Self {
        IoError::Unsupported {
            layer: layer.into(),
            offset,
            what: what.to_string(),
        }
    }
}

impl From<IoError> for std::io::Error {
    fn from(e: IoError) -> Self {
        let kind = match &e {
            IoError::OutOfRange { .. } => std::io::ErrorKind::UnexpectedEof,
            IoError::Os { source, .. } => source.kind(),
            IoError::Corrupt { .. } => std::io::ErrorKind::InvalidData,
            IoError::Unsupported { .. } => std::io::ErrorKind::Unsupported,
        };
        std::io::Error::new(kind, e)
    }
}
