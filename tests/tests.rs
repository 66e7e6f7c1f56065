//! End-to-end tests of the `flr` binary: every file of every committed
//! fixture is restored and checked against manifests computed from the
//! source files by the fixture generators (never by flr), plus error paths,
//! path safety and the third-party corpus tier.

mod util;

mod azure;
mod blob;
mod blob_diff;
mod blob_parents;
mod btrfs;
mod cli;
mod consistency;
mod corpus;
mod diff;
mod discover;
mod docs;
mod fidelity;
mod fleet;
mod get_options;
mod hostile;
mod keychain;
mod keyvault;
mod limits;
mod lvm;
mod md;
mod mount;
mod ntfsmeta;
mod output;
mod progress;
mod scanner;
mod tools;
mod verify;
mod xfs;
