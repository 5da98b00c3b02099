//! Where a write or EXEC on a child's instance goes (docs/gateway.md §4): to the adapter of
//! the child's protocol. What sessions call as [`Children`].

use std::sync::Arc;

use tokio::time::Instant;

use super::inventory::{Inventory, Protocol};
use super::lwm2m::adapter::Adapter;
use super::subagent::host::Guests;
use crate::session::children::{ChildCall, ChildFailure, Children};
use crate::tree::node::Node;
use crate::tree::uri::NodeAddr;

/// The inventory and the adapters that reach its children.
pub struct Route {
    pub inventory: Arc<Inventory>,
    pub lwm2m: Option<Arc<Adapter>>,
    pub guests: Option<Arc<Guests>>,
}

/// The adapter that reaches one child.
enum Reach {
    Lwm2m(Arc<Adapter>),
    Guest(Arc<Guests>),
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("lwm2m", &self.lwm2m.is_some())
            .field("guests", &self.guests.is_some())
            .finish_non_exhaustive()
    }
}

impl Route {
    /// The adapter for the child whose instance `addr` is in: the protocol it speaks.
    fn adapter(&self, addr: &NodeAddr) -> Result<Reach, ChildFailure> {
        let key = key_of(addr);
        let child = self.inventory.get(key).ok_or_else(|| ChildFailure {
            status: 404,
            message: format!("{addr}: no such child"),
        })?;
        match child.protocol {
            Protocol::Lwm2m => self
                .lwm2m
                .clone()
                .map(Reach::Lwm2m)
                .ok_or_else(|| ChildFailure {
                    status: 503,
                    message: format!("child {key} speaks LwM2M, and the LwM2M adapter is off"),
                }),
            Protocol::Omadmd => self
                .guests
                .clone()
                .map(Reach::Guest)
                .ok_or_else(|| ChildFailure {
                    status: 503,
                    message: format!("child {key} is a guest omadmd, and no guest is configured"),
                }),
        }
    }
}

impl Children for Route {
    fn owns(&self, addr: &NodeAddr) -> bool {
        addr.miid.contains('.') && self.inventory.get(key_of(addr)).is_some()
    }

    fn write(&self, addr: NodeAddr, node: Node, until: Instant) -> ChildCall {
        let adapter = self.adapter(&addr);
        Box::pin(async move {
            match adapter? {
                Reach::Lwm2m(a) => a.write(addr, node, until).await,
                Reach::Guest(g) => g.write(addr, node, until).await,
            }
        })
    }

    fn exec(&self, addr: NodeAddr, until: Instant) -> ChildCall {
        let adapter = self.adapter(&addr);
        Box::pin(async move {
            match adapter? {
                Reach::Lwm2m(a) => a.exec(addr, until).await,
                Reach::Guest(g) => g.exec(addr, until).await,
            }
        })
    }

    fn delete(&self, addr: NodeAddr, until: Instant) -> ChildCall {
        let adapter = self.adapter(&addr);
        Box::pin(async move {
            match adapter? {
                // Every node of an LwM2M child is Permanent: the authority refuses first.
                Reach::Lwm2m(_) => Err(ChildFailure {
                    status: 405,
                    message: format!(
                        "{addr}: an LwM2M device's nodes come and go with its registration"
                    ),
                }),
                Reach::Guest(g) => g.delete(addr, until).await,
            }
        })
    }
}

/// The child key of an instance's MIID: what comes before its first dot.
pub fn key_of(addr: &NodeAddr) -> &str {
    addr.miid.split_once('.').map_or(&addr.miid, |(key, _)| key)
}
