//! The LwM2M 1.1 adapter (docs/gateway.md §2, §8): omadmd as an LwM2M server over CoAP/UDP.
//!
//! - [`path`]: LwM2M paths (`/oid/iid/rid/riid`);
//! - [`codec`]: what the payload codecs share (decoded values, value rules, errors);
//! - [`adapter`]: registrations, the mirror of each child's instances, writes and EXECs;
//! - [`coap`]: CoAP messages on one socket: retransmission, matching, Observe;
//! - [`tlv`]: the LwM2M TLV content format (11542);
//! - [`senml`]: SenML JSON (110);
//! - [`link`]: CoRE link format (RFC 6690) of registrations.

pub mod adapter;
pub mod coap;
pub mod codec;
pub mod link;
pub mod path;
pub mod senml;
pub mod tlv;
