//! The gateway (docs/gateway.md): devices managed through omadmd. Their MO instances are
//! ordinary instances (MIID `<key>.<instance>`), listed in the device inventory MO; DM
//! writes and EXECs on them are handed to the adapter that reaches the device
//! ([`crate::session::children`]).
//!
//! - [`inventory`]: the device inventory MO, child keys and states, and the alerts;
//! - [`lwm2m`]: the LwM2M adapter (CoAP, TLV, SenML JSON, registrations);
//! - [`route`]: writes and EXECs handed to the adapter of the child's protocol;
//! - [`subagent`]: guest omadmd instances of other environments, both ends of their wire.

pub mod inventory;
pub mod lwm2m;
pub mod route;
pub mod subagent;

use std::os::fd::AsRawFd as _;
use std::sync::Arc;

use crate::authority::Authority;
use crate::config::GatewayConfig;
use crate::session::{Engine, Tasks};
use crate::store::{self, Lane};
use crate::tree::lwm2m::Catalog;
use inventory::Inventory;
use lwm2m::adapter::Adapter;
use lwm2m::coap::Endpoint;
use subagent::host::{Guests, HostError};

/// Why the gateway cannot start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("[gateway.lwm2m] listen {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("[gateway.lwm2m] interface {interface:?}: {source}")]
    Interface {
        interface: String,
        source: std::io::Error,
    },
    #[error("reading the device inventory: {0}")]
    Inventory(String),
    #[error(transparent)]
    Guest(#[from] HostError),
}

/// What a running gateway gives the rest of the daemon.
#[derive(Default)]
pub struct Started {
    /// The MO types of the loaded LwM2M objects (kept across reloads of the DDF dirs).
    pub types: Vec<crate::tree::mo_type::MoType>,
    /// The children, for the D-Bus face; `None` when the gateway is off.
    pub inventory: Option<Arc<Inventory>>,
}

/// Starts the gateway when `[gateway.lwm2m] listen` names addresses or guests are
/// configured: the inventory read, writes and EXECs on children handed to the adapters by
/// `engine`. The LwM2M adapter: the object definitions loaded (their MO types added to the
/// authority's), the sockets bound. Guests: their sockets bound ([`Guests::start`]). Off:
/// nothing runs.
pub async fn start(
    config: &GatewayConfig,
    auth: Arc<Authority>,
    engine: Arc<Engine>,
    tasks: &Tasks,
) -> Result<Started, GatewayError> {
    let lwm2m = &config.lwm2m;
    if lwm2m.listen.is_empty() && config.guests.is_empty() {
        return Ok(Started::default());
    }
    let catalog = (!lwm2m.listen.is_empty()).then(|| {
        let (catalog, refused) = Catalog::load_dirs(&lwm2m.object_dirs);
        for e in refused {
            tracing::warn!("skipping LwM2M object {e}");
        }
        catalog
    });
    let types = catalog.as_ref().map(Catalog::mo_types).unwrap_or_default();
    if !types.is_empty() {
        let mut registry = (*auth.types()).clone();
        for t in &types {
            registry.insert(t.clone());
        }
        auth.set_types(registry);
    }
    let granularity = config.last_seen_granularity_s;
    let (a, e) = (auth.clone(), engine.clone());
    let inventory =
        match store::offload(Lane::Background, move || Inventory::load(a, e, granularity)).await {
            Ok(Ok(i)) => Arc::new(i),
            Ok(Err(e)) => return Err(GatewayError::Inventory(e.to_string())),
            Err(e) => return Err(GatewayError::Inventory(e.to_string())),
        };
    let adapter = match catalog {
        Some(catalog) => Some(lwm2m_adapter(config, catalog, inventory.clone())?),
        None => None,
    };
    let guests = if config.guests.is_empty() {
        None
    } else {
        Some(Guests::start(config, inventory.clone(), tasks).await?)
    };
    engine.set_children(Arc::new(route::Route {
        inventory: inventory.clone(),
        lwm2m: adapter.clone(),
        guests,
    }));
    if let Some(adapter) = adapter {
        tasks.spawn(adapter.run(tasks.clone()));
    }
    Ok(Started {
        types,
        inventory: Some(inventory),
    })
}

/// The LwM2M adapter on the sockets of `[gateway.lwm2m] listen`.
fn lwm2m_adapter(
    config: &GatewayConfig,
    catalog: Catalog,
    inventory: Arc<Inventory>,
) -> Result<Arc<Adapter>, GatewayError> {
    let lwm2m = &config.lwm2m;
    let mut endpoints = Vec::new();
    for addr in &lwm2m.listen {
        let socket = bind(addr, lwm2m.interface.as_deref())?;
        let endpoint = Endpoint::new(socket);
        match endpoint.local_addr() {
            Ok(local) => tracing::info!(
                "LwM2M adapter: listening on coap://{local} ({} object definitions)",
                catalog.objects().len()
            ),
            Err(e) => tracing::info!("LwM2M adapter: listening on {addr} ({e})"),
        }
        endpoints.push(Arc::new(endpoint));
    }
    Ok(Adapter::new(endpoints, catalog, inventory, config.clone()))
}

/// A UDP socket on `addr` (checked when the configuration was read), bound to `interface`
/// when one is named.
fn bind(addr: &str, interface: Option<&str>) -> Result<tokio::net::UdpSocket, GatewayError> {
    let bind_error = |source| GatewayError::Bind {
        addr: addr.to_owned(),
        source,
    };
    let socket = std::net::UdpSocket::bind(addr).map_err(bind_error)?;
    if let Some(interface) = interface {
        let name = interface.as_bytes();
        // SAFETY: the descriptor is the socket's, open for this call; the option value is
        // `name`'s bytes and its length, which setsockopt reads and does not keep.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                name.as_ptr().cast(),
                libc::socklen_t::try_from(name.len()).unwrap_or(libc::socklen_t::MAX),
            )
        };
        if rc != 0 {
            return Err(GatewayError::Interface {
                interface: interface.to_owned(),
                source: std::io::Error::last_os_error(),
            });
        }
    }
    socket.set_nonblocking(true).map_err(bind_error)?;
    tokio::net::UdpSocket::from_std(socket).map_err(bind_error)
}

/// Runs store work `f` on the blocking pool ([`store::offload`]); its error, or the pool's,
/// as text for the log.
pub(crate) async fn offload<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::authority::AccessError> + Send + 'static,
) -> Result<T, String> {
    match store::offload(Lane::Background, f).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Takes `m`. Every change the gateway makes under its locks is one assignment, insert or
/// removal, so a panic elsewhere never leaves the data half-changed: a poisoned lock is
/// taken over.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
