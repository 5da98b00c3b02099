//! DM sessions (PROTOCOL.md §1–§4, §6): the package loop with one server, the twelve
//! commands run through the [`Authority`](crate::authority::Authority) as the server's
//! principal, persisted alerts, and what sessions leave running (SUB deliveries, async EXEC
//! results).
//!
//! - [`account`] — DM server accounts and choosing the server for a session;
//! - [`engine`] — the package loop;
//! - [`commands`] — executing one command into its status;
//! - [`package3`] — Package#3 within `package3_bytes`;
//! - [`exec`] — EXEC handlers (configured commands);
//! - [`subscribe`] — SUB deliveries.

pub mod account;
pub mod commands;
pub mod engine;
pub mod exec;
pub mod package3;
pub mod subscribe;

pub use account::Account;
pub use engine::{Engine, Limits, Outcome};
