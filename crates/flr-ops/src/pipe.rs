//! Writing file data into a pipe quickly.
//!
//! A pipe holds 64 KiB by default, so a writer handing over 128 KiB chunks
//! blocks on every chunk until the reader has drained half of it, and the
//! two processes take turns instead of running side by side. When stdout is
//! a pipe, [`widen`] asks the kernel for a larger buffer (`F_SETPIPE_SZ`, up
//! to `/proc/sys/fs/pipe-max-size` for an unprivileged user), so several
//! chunks fit and the reader and writer overlap. Anything else (a file, a
//! terminal, `/dev/null`) is left alone.

use std::os::fd::AsFd;

/// The pipe buffer asked for: 1 MiB, the default `pipe-max-size`, which an
/// unprivileged process may also set.
pub(crate) const WANT: usize = 1 << 20;

/// Widens `fd`'s buffer to `want` bytes when it is a pipe (or FIFO);
/// returns the buffer size now in effect, or `None` when `fd` is no pipe or
/// the kernel refused (the write then simply runs with the default size).
pub(crate) fn widen(fd: impl AsFd, want: usize) -> Option<usize> {
    let fd = fd.as_fd();
    let st = rustix::fs::fstat(fd).ok()?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Fifo {
        return None;
    }
    let now = rustix::pipe::fcntl_getpipe_size(fd).ok()?;
    if now >= want {
        return Some(now);
    }
    rustix::pipe::fcntl_setpipe_size(fd, want)
        .ok()
        .or(Some(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipe made by the kernel is widened to 1 MiB (the kernel's own
    /// answer, read back with F_GETPIPE_SZ); a regular file is left alone.
    #[test]
    fn widens_pipes_only() {
        let (r, w) = rustix::pipe::pipe().expect("pipe");
        assert_eq!(rustix::pipe::fcntl_getpipe_size(&w).ok(), Some(65536));
        assert_eq!(widen(&w, WANT), Some(WANT));
        assert_eq!(rustix::pipe::fcntl_getpipe_size(&r).ok(), Some(WANT));
        let f = tempfile::tempfile().expect("temp file");
        assert_eq!(widen(&f, WANT), None);
    }
}
