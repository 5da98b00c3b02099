//! omadmd's integration tests: one binary, one module per area. Shared helpers live in
//! `support/`.

mod support;

mod dbus_service;
mod ddf_corpus;
mod harness;
mod omadmctl_cli;
mod store_crash;
mod store_uri;
mod tnds_corpus;
