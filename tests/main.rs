//! omadmd's integration tests: one binary, one module per area. Shared helpers live in
//! `support/`.

mod support;

mod authority_bus_matrix;
mod authority_matrix;
mod bootstrap;
mod bootstrap_reload;
mod client_bootstrap;
mod dbus_identity;
mod dbus_security;
mod dbus_service;
mod dbus_session;
mod ddf_corpus;
mod devserver;
mod exec_handler;
mod harness;
mod new_account;
mod omadmctl_account;
mod omadmctl_cli;
mod poll_restart;
mod send_alert;
mod session_crash;
mod session_info;
mod session_limits;
mod session_security;
mod session_tls;
mod shutdown;
mod store_crash;
mod store_uri;
mod tnds_corpus;
mod transport_tls;
