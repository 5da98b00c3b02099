//! The parts of omadmd the fuzz targets exercise, [`tree`], [`protocol`], the Package#0
//! codec ([`notification::package0`]) and the LwM2M payload codecs ([`gateway::lwm2m`]),
//! compiled from the main crate's own source files. They are pure and use nothing else of
//! the crate (see the crate map in `src/lib.rs`), so the fuzz build compiles them with their
//! few dependencies only, not the daemon's (D-Bus, TLS, SQLite, tokio, HTTP): that keeps the
//! instrumented build to a minute or two in CI. This library is named `omadmd`, so the
//! targets read as code using the real crate does.

#[path = "../../src/protocol/mod.rs"]
pub mod protocol;
#[path = "../../src/tree/mod.rs"]
pub mod tree;

pub mod gateway;
pub mod notification;
