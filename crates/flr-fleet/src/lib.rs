//! Fleet verification: the pieces that let a batch engine people already
//! run (Slurm, a Kubernetes Indexed Job, Azure Batch) verify thousands of
//! snapshots with one `flr fleet run` task per snapshot, and gather the
//! answers into one report.
//!
//! - [`spec`]: the plan, JSON Lines with one [`Item`] per snapshot (the
//!   contract between `flr fleet plan`, hand-written specs and the tasks;
//!   `docs/fleet-spec.md`);
//! - [`result`]: the versioned document a task writes for its item
//!   ([`ItemResult`]);
//! - [`store`]: the results location, a folder or a blob container behind
//!   the [`Store`] trait (atomic replace, atomic create, compare-and-delete,
//!   listing);
//! - [`lease`]: at most five active exports per incremental-snapshot
//!   family, enforced by slot leases taken in the results location;
//! - [`report`]: the gather step, streaming results into a summary JSON,
//!   JUnit XML, Prometheus text and a self-contained HTML page.
//!
//! Nothing here reads the environment or talks to a terminal: `flr-ops`
//! captures what the engine passes (its index variables) and hands the
//! values in.
//!
//! # Example
//! ```
//! use flr_fleet::{spec, Item};
//! let text = "{\"flr_fleet_spec\":1}\n{\"id\":\"vm1-os\",\"image\":\"/srv/vm1-os.vhd\"}\n";
//! let items = spec::read_all(text.as_bytes()).unwrap();
//! assert_eq!(items[0].id, "vm1-os");
//! let one: Item = spec::item_at(text.as_bytes(), 0).unwrap();
//! assert_eq!(one.image, "/srv/vm1-os.vhd");
//! ```
//!
//! # Errors
//! [`FleetError::Spec`] is the spec author's (a line that does not parse,
//! an unknown version, an index past the end); [`FleetError::Store`] is the
//! results location's (a folder that cannot be written, a container that
//! refuses), and says which name failed; [`FleetError::Output`] is writing a
//! report.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod lease;
pub mod report;
pub mod result;
pub mod spec;
pub mod store;
pub mod time;

mod html;

pub use lease::{family_key, Lease, LeaseRecord, SlotPolicy, FAMILY_LIMIT};
pub use report::{gather, Gathered, ReportOptions, Row};
pub use result::{ItemResult, KeyChainStep, Outcome, VolumeSummary, RESULT_VERSION};
pub use spec::{Header, Item, Mode, SPEC_VERSION};
pub use store::{LocalStore, Store, Versioned};

/// A fleet operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The spec is malformed or does not have the item asked for.
    #[error("spec: {0}")]
    Spec(String),
    /// The results location failed.
    #[error("results location {location}: {what}: {message}")]
    Store {
        /// The location, without any SAS.
        location: String,
        /// What was being done, with the name (`create leases/…/slot-2.json`).
        what: String,
        /// The failure.
        message: String,
    },
    /// Writing a report failed.
    #[error("output: {0}")]
    Output(#[from] std::io::Error),
}

/// A name safe for a file or blob: ASCII letters, digits, `-`, `_`, `.`;
/// anything else becomes `_`, and a name that would start with `.` or be
/// empty gets a leading `_`. At most 120 bytes (longer names keep their
/// start and add 12 hex digits of their sha256).
pub fn safe_name(s: &str) -> String {
    let mut o: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if o.is_empty() || o.starts_with('.') {
        o.insert(0, '_');
    }
    if o.len() > 120 {
        use sha2::Digest;
        let h = hex::encode(sha2::Sha256::digest(s.as_bytes()));
        o.truncate(107);
        o.push('~');
        o.push_str(&h[..12]);
    }
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn safe_names() {
        assert_eq!(super::safe_name("vm1/os disk"), "vm1_os_disk");
        assert_eq!(super::safe_name(".."), "_..");
        assert_eq!(super::safe_name(""), "_");
        let long = super::safe_name(&"x".repeat(300));
        assert_eq!(long.len(), 120);
        assert_ne!(long, super::safe_name(&"x".repeat(301)));
    }
}
