//! omadmd — an OMA Device Management 2.0 client for Linux.
//!
//! Crate map (arrows point at what a module may use; nothing points back up):
//!
//! - [`tree`] — the MO model: formats, values, DDF types, ClientURI parsing and
//!   resolution, MO serialization (JSON) and TNDS. Pure; no I/O beyond reading files
//!   handed in.
//! - [`store`] → `tree` — the SQLite store: instances, nodes, the change journal, cache
//!   validators, grants; crash-safe transactions; the process's connections (one writer for
//!   everything) and the one async boundary in front of them (`offload`).
//! - [`authority`] → `store`, `tree` — the MO access model: principals, rights, grants,
//!   DDF access types, No-Get secrets. Every read and write by anyone goes through it.
//! - [`bootstrap`] → `authority`, `store`, `tree`, and for client-initiated bootstrap
//!   `transport`, `protocol` (media types) and `session` (DM accounts' settings, `Tasks`)
//!   — factory bootstrap files (JSON MO serialization, TNDS) applied once each by path and
//!   digest, the factory reset, and bootstraps fetched from the bootstrap servers DM
//!   accounts name.
//! - [`protocol`] → `tree` — the DM 2.0 wire format: packages, commands, alerts. Pure.
//! - [`session`] → `authority`, `protocol`, `transport`, `transfer`, `store`, and the data types of
//!   `notification::package0` (pure: a notification's preferred bearer) — DM sessions: the
//!   scheduler (every trigger, one session per server, polling, session events, the
//!   SessionInfo MO), the package loop, the twelve commands, persisted alerts, SUB
//!   deliveries. Runs without D-Bus.
//! - [`notification`] → `session` (the scheduler), `bootstrap` (server-initiated
//!   bootstrap), `authority`, `store`, `transport`, `config` — server
//!   notifications: the Package#0 codec, the one verifier every channel feeds, the UDP and
//!   MQTT channels.
//! - [`network`] → `authority`, `session` (DM accounts, the engine's alert queue, `Tasks`),
//!   `store`'s async boundary (`offload`), `tree` — the device's network from
//!   NetworkManager over D-Bus: the follower and its `watch` channel, the network MO, the
//!   `NetworkChanged` alert on a move.
//! - [`gateway`] → `authority`, `session` (DM accounts, the engine's alert queue, the
//!   `children::Children` trait it implements, `Tasks`, EXEC handlers for a guest's calls),
//!   `store`'s async boundary, `config`, `tree` — devices behind omadmd (docs/gateway.md):
//!   the device inventory MO and its alerts, the LwM2M adapter over CoAP (TLV, SenML JSON,
//!   registrations, mirrored instances), sub-agents (both ends of the guest socket), and the
//!   route that hands a child's writes, DELETEs and EXECs to the adapter of its protocol.
//! - [`device`] → `tree` — DevInfo facts read from the host.
//! - [`features`] → `authority`, `config`, `tree` — the optional features built in
//!   (DM-HLF-019): the one list the D-Bus `Features` property and the Features MO show.
//! - [`config`] → `tree` (`Moid`) — `/etc/omadmd/omadmd.toml`.
//! - [`transfer`] → `transport`, `store` (object files), `tree` (`ObjectRef`) — large-object
//!   transfers (DM-HLF-022): resumable downloads into part files with ranges, validators
//!   and digests, streamed uploads, and the board of their progress with the switch that
//!   suspends one. The session engine (`session::large`) drives them.
//! - [`transport`] — the HTTPS client of DM sessions and data-repository transfers: TLS
//!   trust and pinning (the trust store loaded once and reloaded on change), one cached
//!   client per account, client certificates, HTTP Basic, timeouts, retries. Bytes and URLs
//!   only.
//! - [`devserver`] → `protocol`, `tree`, `notification::package0` (to send Package#0) —
//!   `omadm-devserver`, the scriptable DM 2.0 server
//!   over HTTPS for development, tests and demos (server side; no client code uses it).
//! - [`bus`] → `authority`, `bootstrap`, `session` (the scheduler's public API, and the
//!   `exec::AppHandlers` trait it implements for apps' EXEC handlers), `store`'s
//!   async boundary (`offload`), `network`'s channel (for `State` and `AccessTechnology`),
//!   `features` (the list `Features` shows), `gateway`'s inventory (`Children`,
//!   `DetachChild`), and the data types of `tree`, `store` (`Change`) and `config`
//!   (`Limits`) — the D-Bus face:
//!   `org.omadm.Client1`, polkit, watches, session events as signals. Nothing inward knows
//!   about D-Bus.
//!
//! - [`service`] → `authority`, `bootstrap`, `config`, `features`, `session` (`Tasks`),
//!   `store`'s async boundary, `tree` (the registry) — the daemon's life under systemd:
//!   sd_notify states, the watchdog, and SIGHUP reloads of the configuration, DDF and
//!   bootstrap dirs (and the Features MO written again).
//!
//! - [`manpage`] — the man pages, rendered from the binaries' help texts and the example
//!   configuration (`packaging/omadmd.toml`); used by the binaries only.
//!
//! The binaries (`omadmd`, `omadmctl`, `omadm-devserver`) live in `src/bin/` and only wire
//! these parts together.

pub mod authority;
pub mod bootstrap;
pub mod bus;
pub mod config;
pub mod device;
pub mod devserver;
pub mod features;
pub mod gateway;
pub mod manpage;
pub mod network;
pub mod notification;
pub mod protocol;
pub mod service;
pub mod session;
pub mod store;
pub mod transfer;
pub mod transport;
pub mod tree;
