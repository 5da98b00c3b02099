//! Large-object transfers (DM-HLF-022): the bytes of one `bin` leaf moved between a data
//! repository and a file beside the store, never whole in memory, suspended and resumed.
//!
//! - [`board`] — what every transfer is doing now (progress, state, rate), for D-Bus and
//!   `omadmctl transfers`, and the switch that suspends and resumes one.
//! - [`fetch`] — a download: ranges from where it stopped, checkpoints, waits, checks.
//! - [`header`] — the HTTP fields of ranges, validators and digests.
//! - [`part`] — the part file a download fills and the hash of what it holds.
//! - [`send`] — an upload: the object's file streamed, sent again after a failure.
//! - [`steer`] — what both answer to: the board, the suspend switch, network moves, waits.
//!
//! The session engine decides what to transfer and commits what arrived (see
//! `session::large`); this module knows HTTP ranges, files and digests, not MOs.

pub mod board;
pub mod fetch;
pub mod header;
pub mod part;
pub mod send;
pub mod steer;

pub use board::{Board, ControlError, Direction, Event, Progress, State};
