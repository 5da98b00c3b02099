//! Sub-agents (docs/gateway.md §6, DM-HLF-006): an omadmd in another environment of the
//! device (a container or VM with its own state dir and network namespace) shows its MOs
//! to the host omadmd over a Unix socket the host exposes into it, and they appear through
//! the gateway as a child's (Protocol `omadmd`).
//!
//! - [`wire`]: the frames and their bounds;
//! - [`host`]: the host end — one socket per configured guest, the checks, the mirror and
//!   the calls;
//! - [`guest`]: the guest end — connect, hello, syncs of the exported instances, the host's
//!   calls run as `app:omadmd-host`.

pub mod guest;
pub mod host;
pub mod wire;
