//! Server notifications (Package#0, PROTOCOL.md §5; ARCHITECTURE.md §5): how a DM server makes
//! the device open a session. Channels receive payloads and hand each to one verifier as an
//! [`Inbound`]; what passes becomes a session through the scheduler.
//!
//! - [`package0`] — the Package#0 codec, both ways, and its digest;
//! - [`verify`] — the one verifier every channel feeds: the account, the digest, the
//!   TIMESTAMP window, duplicate NOTIFICATION-IDs, the per-server rate; then the session
//!   (or, for a bootstrap-only account, the bootstrap);
//! - [`bearer`] — PREFERRED-CON-TYPE: holding a session until a bearer of the kind asked
//!   for is up;
//! - [`udp`] — the UDP channel (`[notification.udp] listen`);
//! - [`mqtt`] — the MQTT channel (the DM accounts' `Push` entries, `[notification.mqtt]`);
//! - [`IgnoredCounts`] — the notifications ignored, per server, for the D-Bus face.

pub mod bearer;
pub mod mqtt;
pub mod package0;
pub mod udp;
pub mod verify;

use std::collections::BTreeMap;
use std::sync::Mutex;

/// The channel a Package#0 came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Via {
    /// A UDP datagram (`[notification.udp] listen`).
    Udp,
    /// A message on a DM account's MQTT topic (`Push/<x>`).
    Mqtt,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Udp => "udp",
            Via::Mqtt => "mqtt",
        }
    }
}

/// One payload as a channel received it, not yet parsed or verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    pub payload: Vec<u8>,
    pub via: Via,
}

/// How many notifications naming each server were ignored since the daemon started (its
/// server object's `IgnoredNotifications`). Notifications naming no account are logged, not
/// counted.
#[derive(Debug, Default)]
pub struct IgnoredCounts(Mutex<BTreeMap<String, u64>>);

impl IgnoredCounts {
    /// Notifications naming `srv_id` that were ignored.
    pub fn of(&self, srv_id: &str) -> u64 {
        self.lock().get(srv_id).copied().unwrap_or(0)
    }

    /// Counts one ignored notification naming `srv_id`.
    pub fn count(&self, srv_id: &str) {
        *self.lock().entry(srv_id.to_owned()).or_default() += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
