//! omadmd — an OMA Device Management 2.0 client for Linux.
//!
//! Crate map (arrows point at what a module may use; nothing points back up):
//!
//! - [`tree`] — the MO model: formats, values, DDF types, ClientURI parsing and
//!   resolution, MO serialization (JSON) and TNDS. Pure; no I/O beyond reading files
//!   handed in.
//! - [`store`] → `tree` — the SQLite store: instances, nodes, the change journal, cache
//!   validators, grants; crash-safe transactions.
//! - [`authority`] → `store`, `tree` — the MO access model: principals, rights, grants,
//!   DDF access types, No-Get secrets. Every read and write by anyone goes through it.
//! - [`device`] → `tree` — DevInfo facts read from the host.
//! - [`config`] — `/etc/omadmd/omadmd.toml`.
//! - [`bus`] → `authority` — the D-Bus face: `org.omadm.Client1`, polkit, watches. Nothing
//!   inward knows about D-Bus.
//!
//! The binaries (`omadmd`, `omadmctl`, `omadm-devserver`) live in `src/bin/` and only wire
//! these parts together.

pub mod authority;
pub mod bus;
pub mod config;
pub mod device;
pub mod store;
pub mod tree;
