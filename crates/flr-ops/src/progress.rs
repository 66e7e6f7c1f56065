//! Progress on stderr for the long commands (`get`, `cat`, `verify`,
//! `manifest`, `diff`, `mount`'s first scan): bytes, files, rate and ETA,
//! drawn by `indicatif`.
//!
//! Shown only when stderr is a terminal, and never with `--format json`,
//! `--log-format json` or `-q` ([`wanted`]); the session decides once and
//! every command gets a [`Progress`] that is either live or does nothing.
//! Messages written while a bar is drawn go through [`Progress::wrap`],
//! which lifts the bar for the line and draws it again below.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};

/// Whether progress may be drawn: stderr is a terminal, output is for
/// people, messages are text and not quietened.
pub(crate) fn wanted(format: crate::OutputFormat, log: crate::LogOptions) -> bool {
    format == crate::OutputFormat::Human
        && log.format == crate::LogFormat::Text
        && !log.quiet
        && std::io::stderr().is_terminal()
}

/// A progress bar that is either drawn or does nothing (cheap to clone).
#[derive(Clone, Default)]
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    /// Files expected (shown as `done/total files`), 0 when unknown.
    files: u64,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("live", &self.bar.is_some())
            .finish()
    }
}

impl Progress {
    /// Nothing drawn.
    pub(crate) fn off() -> Progress {
        Progress::default()
    }

    /// A bar labelled `label` for `bytes` bytes in `files` files (a spinner
    /// with counts and rate when the total is unknown, `None`); nothing
    /// when `enabled` is false.
    pub(crate) fn new(enabled: bool, label: &str, bytes: Option<u64>, files: u64) -> Progress {
        if !enabled {
            return Progress::off();
        }
        let (bar, template) = match bytes {
            Some(total) => (
                ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
                    .with_finish(ProgressFinish::AndClear),
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {msg} {bytes_per_sec} eta {eta}",
            ),
            None => (
                ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
                    .with_finish(ProgressFinish::AndClear),
                "{prefix} {spinner} {bytes} {msg} {bytes_per_sec} {elapsed}",
            ),
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        let p = Progress {
            bar: Some(bar),
            files,
        };
        p.set_files(0);
        if bytes.is_none() {
            p.tick_steadily();
        }
        p
    }

    /// A spinner for a phase whose size is unknown (`mount`'s first scan):
    /// `label`, the elapsed time and `msg`.
    pub(crate) fn spinner(enabled: bool, label: &str) -> Progress {
        if !enabled {
            return Progress::off();
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
            .with_finish(ProgressFinish::AndClear);
        bar.set_style(
            ProgressStyle::with_template("{prefix} {spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(label.to_string());
        let p = Progress {
            bar: Some(bar),
            files: 0,
        };
        p.tick_steadily();
        p
    }

    fn tick_steadily(&self) {
        if let Some(b) = &self.bar {
            b.enable_steady_tick(Duration::from_millis(200));
        }
    }

    /// Whether a bar is drawn.
    pub(crate) fn is_live(&self) -> bool {
        self.bar.is_some()
    }

    /// `n` more bytes done.
    pub(crate) fn bytes(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// `done` files finished so far.
    pub(crate) fn set_files(&self, done: u64) {
        if let Some(b) = &self.bar {
            if self.files > 0 {
                b.set_message(format!("{done}/{} files", self.files));
            } else {
                b.set_message(format!("{done} files"));
            }
        }
    }

    /// A free-form note in place of the file count.
    pub(crate) fn note(&self, msg: String) {
        if let Some(b) = &self.bar {
            b.set_message(msg);
        }
    }

    /// Removes the bar (the command's own summary follows).
    pub(crate) fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    /// `w` with the bar lifted around every write, so messages do not
    /// mix with it.
    pub(crate) fn wrap<'w>(&self, w: &'w mut dyn Write) -> Lifted<'w> {
        Lifted {
            inner: w,
            bar: self.bar.clone(),
        }
    }
}

/// A writer that lifts the progress bar for each write.
pub(crate) struct Lifted<'w> {
    inner: &'w mut dyn Write,
    bar: Option<ProgressBar>,
}

impl Write for Lifted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &self.bar {
            Some(b) => {
                let inner = &mut self.inner;
                b.suspend(|| inner.write(buf))
            }
            None => self.inner.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &self.bar {
            Some(b) => {
                let inner = &mut self.inner;
                b.suspend(|| inner.flush())
            }
            None => self.inner.flush(),
        }
    }
}
