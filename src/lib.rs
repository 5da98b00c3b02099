//! omadmd — an OMA Device Management 2.0 client for Linux.
//!
//! Crate map (arrows point at what a module may use):
//!
//! - [`tree`]: the MO model — formats, values, DDF types, ClientURI parsing and
//!   resolution, MO serialization (JSON) and TNDS. Pure; no I/O.
//! - [`store`] → `tree`: the SQLite store — instances, nodes, the change journal and cache
//!   validators, crash-safe transactions.
//!
//! - [`authority`] → `store`, `tree`: the MO access model — principals, rights,
//!   grants, DDF access types, No-Get secrets.
//! - [`device`] → `tree`: DevInfo facts read from the host.
//! - [`config`]: `/etc/omadmd/omadmd.toml`.
//!
//! The binaries (`omadmd`, `omadmctl`, `omadm-devserver`) live in `src/bin/` and only wire
//! these parts together.

pub mod authority;
pub mod bus;
pub mod config;
pub mod device;
pub mod store;
pub mod tree;
