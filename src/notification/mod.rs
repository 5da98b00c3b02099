//! Server notifications (Package#0, PROTOCOL.md §5; ARCHITECTURE.md §5): how a DM server makes
//! the device open a session. Channels receive payloads and hand each to one verifier as an
//! [`Inbound`]; what passes becomes a session through the scheduler.

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
