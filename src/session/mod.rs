//! DM sessions (PROTOCOL.md §1–§4, §6): the package loop with one server, the twelve
//! commands run through the [`Authority`](crate::authority::Authority) as the server's
//! principal, persisted alerts, and what sessions leave running (SUB deliveries, async EXEC
//! results).
//!
//! - [`scheduler`] — which sessions run and when: every trigger (D-Bus, follow-ups,
//!   polling), one session per server, session events;
//! - [`account`] — DM server accounts and choosing the server for a session;
//! - [`notice`] — what a verified server notification asks of its session;
//! - [`failover`] — falling over to the next server when the client chose one it cannot
//!   reach (DM-HLF-018);
//! - [`send_alert`] — a local app's Generic Alert: checked, its server chosen, kept;
//! - [`engine`] — the package loop;
//! - [`error`] — why a session ended early, and its status;
//! - [`info`] — the SessionInfo MO of running sessions;
//! - [`children`] — writes and EXECs on devices behind the gateway, handed to it;
//! - [`commands`] — executing one command into its status;
//! - [`large`] — large objects: HGET into a `bin` leaf and HPUT/HPOST of one as transfers
//!   that outlive their command, resumed after a restart;
//! - [`package3`] — Package#3 within `package3_bytes`;
//! - [`exec`] — EXEC handlers (configured commands, apps registered over D-Bus);
//! - [`subscribe`] — SUB deliveries;
//! - [`tasks`] — who owns background work, and stopping it (SIGTERM).

pub mod account;
pub mod children;
pub mod commands;
pub mod engine;
pub mod error;
pub mod exec;
pub mod failover;
pub mod info;
mod large;
pub mod notice;
pub mod package3;
pub mod scheduler;
pub mod send_alert;
pub mod subscribe;
pub mod tasks;

pub use account::Account;
pub use engine::{Engine, Limits, Outcome};
pub use error::SessionError;
pub use notice::Notice;
pub use scheduler::{Event, Origin, Running, Scheduler, Start, StartError};
pub use tasks::Tasks;
