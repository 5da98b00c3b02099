//! The DM 2.0 wire format (PROTOCOL.md §2–§7) as typed values: packages, commands, alerts,
//! statuses. Pure codecs: no I/O, nothing about sessions or the store.
//!
//! - [`package`] — Package#1 (initiation), Package#2 (commands), Package#3 (results);
//! - [`command`] — the twelve commands, parsed one by one so that a bad command gets its
//!   own status while the session goes on;
//! - [`alert`] — alerts and their types.

pub mod alert;
pub mod command;
pub mod package;

pub use alert::{Alert, Mark};
pub use command::{Command, CommandError};
pub use package::{Items, MoEntry, Package1, Package2, Package3, PackageError, Status};

/// `Content-Type` of Package#1.
pub const INITIATION: &str = "application/vnd.oma.dm.initiation+json";
/// `Content-Type` of Package#2 (and `Accept` of the client's posts).
pub const REQUEST: &str = "application/vnd.oma.dm.request+json";
/// `Content-Type` of Package#3.
pub const RESPONSE: &str = "application/vnd.oma.dm.response+json";
/// `Content-Type` of an MO serialization in data-repository transfers (project choice).
pub const MO_JSON: &str = "application/vnd.oma.dm.mo+json";
/// The header carrying DevInfo/DevID on every client post.
pub const DEVID_HEADER: &str = "OMADM-DevID";
/// The header in which a server names the formats it accepts (with `415`).
pub const ACCEPT_HEADER: &str = "OMADM-Accept";
