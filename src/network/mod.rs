//! The device's network, from NetworkManager over D-Bus (DM-HLF-007, -008;
//! ARCHITECTURE.md §5): which connections, technologies and addresses the device has, and
//! when it *moves* (a new primary connection or address; see [`follow`]).
//!
//! - [`state`]: [`NetworkState`], the typed picture, and the attachment a move changes;
//! - [`technology`]: access technologies from device interfaces and types;
//! - [`nm`]: NetworkManager's D-Bus names, reading its picture, which signals matter;
//! - [`follow`]: the follower task and the `watch` channel it publishes on;
//! - [`mo`]: the network MO kept current, and what a move calls for (the `NetworkChanged`
//!   alert, and what the daemon hands it).
//!
//! `mo` uses the others; `follow` uses `nm`, which uses `state` and `technology`. Outside,
//! the daemon starts [`follow::start`] and [`mo::keep`]; the D-Bus face and the
//! notification channels read the channel.

pub mod follow;
pub mod mo;
pub mod nm;
pub mod state;
pub mod technology;

pub use state::NetworkState;
pub use technology::Technology;
