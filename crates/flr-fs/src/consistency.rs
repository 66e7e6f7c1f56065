//! Whether a filesystem image is consistent, and what flr did about it.
//!
//! A snapshot of a running machine is taken as if its power had been cut:
//! the filesystem was not unmounted, and its newest metadata may exist only
//! in its journal. [`Consistency`] says both things flr knows about that:
//! whether the filesystem records a clean unmount ([`Unmount`]), and what
//! flr did with its journal ([`Journal`]): there is none, it held nothing to
//! replay, flr replayed it in memory (never on the image), or flr did not
//! replay it, with a typed [`NotReplayed`] reason.
//!
//! [`Consistency::may_miss_changes`] is the one question the operations ask
//! ("should the user be warned that recent changes may be missing?"), and
//! [`Consistency::sentence`] the one line they print.

use serde::Serialize;

/// Whether the filesystem was cleanly unmounted when the image was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmount {
    /// The filesystem records a clean unmount (XFS unmount record, ext4
    /// without `needs_recovery`, NTFS `$LogFile` clean, FAT clean bit).
    Clean,
    /// It was in use: the image is crash-consistent at best.
    Dirty,
    /// The filesystem keeps no such record (FAT12), or flr could not read it.
    #[default]
    Unknown,
}

/// What flr did with the filesystem's journal.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Journal {
    /// The filesystem has no journal (FAT, ext2).
    None,
    /// The journal holds nothing to replay.
    Clean,
    /// The journal's committed transactions were replayed in memory: every
    /// read sees the filesystem as the kernel would after recovery.
    Replayed {
        /// Committed transactions applied.
        transactions: u64,
        /// Updates the journal records as started but not finished, which
        /// the kernel would complete after recovery and flr does not (XFS
        /// file-mapping intents without their done records). The files they
        /// touch read as they were before the update.
        unfinished: u64,
    },
    /// The journal may hold changes, and flr reads the filesystem without
    /// them.
    NotReplayed {
        /// Why.
        reason: NotReplayed,
    },
    /// The reader does not say (the default for a filesystem that has not
    /// been taught to).
    #[default]
    NotChecked,
}

/// Why a journal was not replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum NotReplayed {
    /// flr does not replay this kind of journal (NTFS `$LogFile`).
    NotImplemented,
    /// The caller asked for the filesystem as it is on disk.
    Disabled,
    /// The journal lives on another device (an XFS external log, an ext3/4
    /// external journal), which the image does not contain.
    ExternalLog,
    /// The journal uses a format or feature flr does not know.
    Unsupported {
        /// What it is.
        what: String,
    },
    /// The journal is damaged: replaying it could produce wrong bytes.
    Damaged {
        /// Byte offset in the volume, where known.
        offset: Option<u64>,
        /// What is wrong.
        what: String,
    },
    /// The journal is larger than flr's memory limits for a replay.
    TooLarge {
        /// Which limit.
        what: String,
    },
    /// Reading the journal failed (the layer below).
    ReadFailed {
        /// The error.
        what: String,
    },
}

impl NotReplayed {
    /// The reason in a few words.
    pub fn describe(&self) -> String {
        match self {
            NotReplayed::NotImplemented => "flr does not replay this journal".into(),
            NotReplayed::Disabled => "replay turned off".into(),
            NotReplayed::ExternalLog => "the journal is on a separate device".into(),
            NotReplayed::Unsupported { what } => format!("unsupported journal content: {what}"),
            NotReplayed::Damaged {
                offset: Some(o),
                what,
            } => format!("damaged journal at byte offset {o:#x}: {what}"),
            NotReplayed::Damaged { offset: None, what } => format!("damaged journal: {what}"),
            NotReplayed::TooLarge { what } => format!("journal too large to replay: {what}"),
            NotReplayed::ReadFailed { what } => format!("the journal could not be read: {what}"),
        }
    }
}

/// A filesystem's consistency as flr found it (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Consistency {
    /// Whether it was cleanly unmounted.
    pub unmount: Unmount,
    /// What flr did with its journal.
    pub journal: Journal,
    /// The name of the journal in sentences (`log`, `journal`, `$LogFile`).
    #[serde(skip)]
    pub journal_name: &'static str,
}

impl Consistency {
    /// A consistency record.
    pub fn new(unmount: Unmount, journal: Journal, journal_name: &'static str) -> Self {
        Consistency {
            unmount,
            journal,
            journal_name,
        }
    }

    /// Whether the user should be told that recent changes may be missing
    /// from what flr shows: the journal was not replayed on a filesystem
    /// that was not cleanly unmounted, a replay left updates unfinished, or
    /// a filesystem without a journal (FAT) was in use.
    pub fn may_miss_changes(&self) -> bool {
        match &self.journal {
            Journal::NotReplayed { .. } => self.unmount != Unmount::Clean,
            Journal::Replayed { unfinished, .. } => *unfinished > 0,
            Journal::None => self.unmount == Unmount::Dirty,
            Journal::Clean | Journal::NotChecked => false,
        }
    }

    /// One line for people: `clean`, `log replayed in memory: 12
    /// transactions`, `dirty: NTFS $LogFile not replayed, recent changes may
    /// be missing`.
    pub fn sentence(&self) -> String {
        let name = if self.journal_name.is_empty() {
            "journal"
        } else {
            self.journal_name
        };
        let plural = |n: u64, one: &str, many: &str| {
            if n == 1 {
                format!("1 {one}")
            } else {
                format!("{n} {many}")
            }
        };
        match (&self.journal, self.unmount) {
            (Journal::Replayed {
                transactions,
                unfinished: 0,
            }, _) => format!(
                "{name} replayed in memory: {}",
                plural(*transactions, "transaction", "transactions")
            ),
            (Journal::Replayed {
                transactions,
                unfinished,
            }, _) => format!(
                "{name} replayed in memory: {}; {} still in progress not applied, recent changes to those files may be missing",
                plural(*transactions, "transaction", "transactions"),
                plural(*unfinished, "update", "updates")
            ),
            (Journal::NotReplayed { reason }, Unmount::Clean) => {
                format!("clean ({name} not read: {})", reason.describe())
            }
            (Journal::NotReplayed { reason }, _) => format!(
                "{}: {name} not replayed ({}), recent changes may be missing",
                if self.unmount == Unmount::Dirty { "dirty" } else { "possibly dirty" },
                reason.describe()
            ),
            (Journal::Clean, Unmount::Dirty) => {
                format!("not cleanly unmounted; the {name} holds nothing to replay")
            }
            (Journal::Clean, _) => "clean".into(),
            (Journal::None, Unmount::Dirty) => {
                "dirty: not cleanly unmounted and without a journal, recent changes may be missing or incomplete".into()
            }
            (Journal::None, Unmount::Clean) => "clean".into(),
            (Journal::None, Unmount::Unknown) => "no journal; clean unmount not recorded".into(),
            (Journal::NotChecked, Unmount::Clean) => "clean".into(),
            (Journal::NotChecked, Unmount::Dirty) => "dirty".into(),
            (Journal::NotChecked, Unmount::Unknown) => "consistency not checked".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_and_warnings() {
        let c = Consistency::new(
            Unmount::Dirty,
            Journal::Replayed {
                transactions: 12,
                unfinished: 0,
            },
            "log",
        );
        assert_eq!(c.sentence(), "log replayed in memory: 12 transactions");
        assert!(!c.may_miss_changes());
        let c = Consistency::new(
            Unmount::Dirty,
            Journal::NotReplayed {
                reason: NotReplayed::NotImplemented,
            },
            "NTFS $LogFile",
        );
        assert!(c.may_miss_changes());
        assert!(c
            .sentence()
            .starts_with("dirty: NTFS $LogFile not replayed"));
        assert!(c.sentence().ends_with("recent changes may be missing"));
        let c = Consistency::new(Unmount::Clean, Journal::Clean, "log");
        assert_eq!(c.sentence(), "clean");
        assert!(!c.may_miss_changes());
        assert!(!Consistency::default().may_miss_changes());
        let j = serde_json::to_value(Consistency::new(
            Unmount::Dirty,
            Journal::NotReplayed {
                reason: NotReplayed::Damaged {
                    offset: Some(4096),
                    what: "bad CRC".into(),
                },
            },
            "log",
        ))
        .unwrap();
        assert_eq!(j["unmount"], "dirty");
        assert_eq!(j["journal"]["state"], "not_replayed");
        assert_eq!(j["journal"]["reason"]["kind"], "damaged");
        assert_eq!(j["journal"]["reason"]["offset"], 4096);
    }
}
