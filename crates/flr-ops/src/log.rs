//! flr's messages on stderr: one place decides which are shown (`-q`,
//! `-v`), how (text, or one JSON object per message with `--log-format
//! json`) and whether the level is coloured (only on a terminal, never with
//! `NO_COLOR`).
//!
//! Commands keep writing their messages as lines (`flr: ID:/path: …`) into
//! a [`Write`]; the [`LogWriter`] in front of stderr takes each complete
//! line, gives it a level and the volume and path it names, and renders
//! it. A new command adopts all of this by writing its messages into the
//! `err` of its [`crate::Context`].

use std::io::{IsTerminal, Write};

/// How messages are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `flr: …` lines.
    #[default]
    Text,
    /// One JSON object per message: `{"level","layer","volume","path","message"}`.
    Json,
}

/// Which messages are shown, and how.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// `-q`: errors and warnings only.
    pub quiet: bool,
    /// `-v` count: 1 adds the run's time, 2 also what the image holds.
    pub verbose: u8,
    /// `--log-format`.
    pub format: LogFormat,
    /// Colour the level (decided once: a terminal, and `NO_COLOR` unset).
    pub color: bool,
}

impl LogOptions {
    /// Decides colour: only when stderr is a terminal, `NO_COLOR` is unset
    /// or empty, and messages are text.
    pub fn decide_color(mut self, no_color: Option<&str>) -> Self {
        self.color = self.format == LogFormat::Text
            && no_color.is_none_or(str::is_empty)
            && std::io::stderr().is_terminal();
        self
    }
}

/// A message's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// A finer detail shown with `-vv`.
    Trace,
    /// A detail shown with `-v`.
    Debug,
    /// What was done (summaries, notes).
    Info,
    /// Something the operator should know: the result may be incomplete.
    Warning,
    /// Something failed.
    Error,
}

/// Layers a message may name, as their messages spell them.
const LAYERS: &[&str] = &[
    "vhdx",
    "vhd",
    "gpt",
    "mbr",
    "luks",
    "bitlocker",
    "lvm",
    "md",
    "ext4",
    "ext",
    "ntfs",
    "xfs",
    "fat",
    "btrfs",
    "blob",
    "key chain",
    "key vault",
    "resource manager",
    "fuse",
];

/// One message, parsed from its line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Message {
    /// Its level.
    pub level: Level,
    /// The layer it names, if any.
    pub layer: Option<String>,
    /// The volume it is about, if any.
    pub volume: Option<String>,
    /// The path on that volume, if any.
    pub path: Option<String>,
    /// The text (without `flr: ` and the volume and path).
    pub message: String,
}

fn is_volume_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/@._-".contains(&b))
        && s.bytes()
            .any(|b| b.is_ascii_digit() || s == "disk" || b == b'/')
}

impl Message {
    /// Parses `flr: [VOL:/PATH: |VOL: |volume VOL: ]text`; `level` is used
    /// unless the text says `warning:`/`note:` or reports a failure.
    pub fn parse(line: &str, level: Option<Level>) -> Message {
        let mut rest = line.strip_prefix("flr: ").unwrap_or(line);
        let mut volume = None;
        let mut path = None;
        let head = rest.strip_prefix("volume ").unwrap_or(rest);
        if let Some((vol, after)) = head.split_once(':') {
            if is_volume_id(vol) {
                if let Some(p) = after.strip_prefix('/') {
                    if let Some((p, text)) = p.split_once(": ") {
                        volume = Some(vol.to_string());
                        path = Some(format!("/{p}"));
                        rest = text;
                    }
                } else if let Some(text) = after.strip_prefix(' ') {
                    volume = Some(vol.to_string());
                    rest = text;
                    // `volume p2: /etc/x: …`: the path follows.
                    if let Some((p, text)) =
                        text.split_once(": ").filter(|(p, _)| p.starts_with('/'))
                    {
                        path = Some(p.to_string());
                        rest = text;
                    }
                }
            }
        }
        let lower = rest.to_ascii_lowercase();
        let level = level.unwrap_or(
            if lower.starts_with("warning") || lower.contains(": warning:") {
                Level::Warning
            } else if lower.contains("failed")
                || lower.contains("not restored")
                || lower.contains("cannot")
                || lower.starts_with("error")
            {
                Level::Error
            } else {
                Level::Info
            },
        );
        let layer = LAYERS
            .iter()
            .find(|l| {
                lower
                    .split(|c: char| !c.is_ascii_alphanumeric() && c != ' ')
                    .any(|w| w.trim() == **l)
                    || lower.starts_with(&format!("{l} "))
                    || lower.contains(&format!(" {l} "))
            })
            .map(|l| l.to_string());
        Message {
            level,
            layer,
            volume,
            path,
            message: rest.to_string(),
        }
    }
}

/// A stderr writer that renders each complete line by the [`LogOptions`].
pub struct LogWriter<W: Write> {
    inner: W,
    opts: LogOptions,
    pending: Vec<u8>,
    /// The level of the lines written next (unset: from their text).
    level: Option<Level>,
}

impl<W: Write> LogWriter<W> {
    /// Messages into `inner`.
    pub fn new(inner: W, opts: LogOptions) -> Self {
        LogWriter {
            inner,
            opts,
            pending: Vec::new(),
            level: None,
        }
    }

    /// Writes one message at `level`.
    pub fn message(&mut self, level: Level, line: &str) -> std::io::Result<()> {
        self.flush_pending()?;
        self.level = Some(level);
        let r = self.emit(line.trim_end_matches('\n'));
        self.level = None;
        r
    }

    fn emit(&mut self, line: &str) -> std::io::Result<()> {
        let m = Message::parse(line, self.level);
        let shown = match m.level {
            Level::Trace => self.opts.verbose >= 2,
            Level::Debug => self.opts.verbose >= 1,
            Level::Info => !self.opts.quiet,
            Level::Warning | Level::Error => true,
        };
        if !shown {
            return Ok(());
        }
        match self.opts.format {
            LogFormat::Json => {
                serde_json::to_writer(&mut self.inner, &m)?;
                self.inner.write_all(b"\n")
            }
            LogFormat::Text if self.opts.color && m.level >= Level::Warning => {
                let c = if m.level == Level::Error { "31" } else { "33" };
                let body = line.strip_prefix("flr: ").unwrap_or(line);
                writeln!(self.inner, "\x1b[1;{c}mflr:\x1b[0m {body}")
            }
            LogFormat::Text => writeln!(self.inner, "{line}"),
        }
    }

    fn flush_pending(&mut self) -> std::io::Result<()> {
        while let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=i).collect();
            let line = String::from_utf8_lossy(&line[..i]).into_owned();
            self.emit(&line)?;
        }
        Ok(())
    }
}

impl<W: Write> Write for LogWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        self.flush_pending()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_pending()?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for LogWriter<W> {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let line = String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned();
            let _ = self.emit(&line);
        }
        let _ = self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_volume_path_and_level() {
        let m = Message::parse("flr: p2:/etc/x: not restored: ext4 extent corrupt", None);
        assert_eq!(m.volume.as_deref(), Some("p2"));
        assert_eq!(m.path.as_deref(), Some("/etc/x"));
        assert_eq!(m.level, Level::Error);
        assert_eq!(m.layer.as_deref(), Some("ext4"));
        let m = Message::parse("flr: p3: warning: journal not replayed", None);
        assert_eq!((m.volume.as_deref(), m.level), (Some("p3"), Level::Warning));
        let m = Message::parse("flr: restored 3 files (10 bytes)", None);
        assert_eq!((m.volume, m.level), (None, Level::Info));
    }

    #[test]
    fn quiet_drops_info_and_json_renders_objects() {
        let mut out = Vec::new();
        {
            let opts = LogOptions {
                quiet: true,
                format: LogFormat::Json,
                ..LogOptions::default()
            };
            let mut w = LogWriter::new(&mut out, opts);
            write!(w, "flr: restored 1 files\nflr: p1:/a: warning: odd\n").unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["level"], "warning");
        assert_eq!(v["path"], "/a");
    }
}
