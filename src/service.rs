//! The daemon's life under its service manager: what it tells systemd (readiness, reloads,
//! stopping, watchdog pings: [`notify`]) and what `systemctl reload` does ([`reload`]).
//!
//! Both work without systemd too: with no `NOTIFY_SOCKET` nothing is sent, with no
//! `WATCHDOG_USEC` there is no watchdog, and SIGHUP reloads whoever sends it.

pub mod notify;
pub mod reload;
