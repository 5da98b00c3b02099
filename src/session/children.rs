//! Devices behind the gateway as sessions see them (docs/gateway.md §4): a write, DELETE or
//! EXEC on a child's instance is checked here like any other, then handed to the gateway,
//! which asks the child and answers with a status. Sessions know only this trait; the gateway
//! implements it (`crate::gateway`) and is plugged in once it runs
//! ([`super::Engine::set_children`]).

use std::future::Future;
use std::pin::Pin;

use tokio::time::Instant;

use crate::tree::node::Node;
use crate::tree::uri::NodeAddr;

/// The children's MO instances, as the gateway reaches them.
pub trait Children: Send + Sync + std::fmt::Debug {
    /// Whether `addr` lies in an instance of a child (its MIID starts with an attached
    /// child's key and a dot).
    fn owns(&self, addr: &NodeAddr) -> bool;

    /// Asks the child to write `node` at `addr` (checked already, nothing written yet); the
    /// answer comes by `until`.
    fn write(&self, addr: NodeAddr, node: Node, until: Instant) -> ChildCall;

    /// Asks the child to execute the node at `addr` (checked already); the answer comes by
    /// `until`.
    fn exec(&self, addr: NodeAddr, until: Instant) -> ChildCall;

    /// Asks the child to delete the node at `addr` (checked already); the answer comes by
    /// `until`.
    fn delete(&self, addr: NodeAddr, until: Instant) -> ChildCall;
}

/// A call to a child under way.
pub type ChildCall = Pin<Box<dyn Future<Output = Result<(), ChildFailure>> + Send>>;

/// Why a child did not do what it was asked, as a DM status (docs/gateway.md §4.3).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ChildFailure {
    /// `503` absent, `504` no answer in time, `404` detached, or the child's own answer
    /// mapped.
    pub status: u16,
    pub message: String,
}
