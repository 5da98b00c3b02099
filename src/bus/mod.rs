//! The D-Bus face of omadmd: `org.omadm.Client1` on the system bus (or the session bus for
//! development), with polkit authorization.
//!
//! - [`client1`]: the interface; `dbus/org.omadm.Client1.xml` is its contract;
//! - [`access`]: caller identity per connection and polkit checks, with the read cache;
//! - [`peer`]: who a caller is, from what the kernel shows of its process;
//! - [`servers`] — one object per DM server account (`org.omadm.Client1.Server`);
//! - [`sessions`]: starting DM sessions for callers; the session scheduler's events as
//!   signals and `State`;
//! - [`transfers`] — one object per large-object transfer on the transfer board
//!   (`org.omadm.Client1.Transfer`), with its progress as `PropertiesChanged`;
//! - [`value_fd`]: `OpenValue`'s read-only descriptor of a leaf's value;
//! - [`network`]: `AccessTechnology` and `State` following the network;
//! - [`children`]: the gateway's children (`Children`, `DetachChild`'s work), announced as
//!   the device inventory changes;
//! - [`nodes`]: the answer of `Get`, serialized once from the store's rows;
//! - [`variant`]: `json` values as D-Bus variants, both ways;
//! - [`watch`]: watches and unicast `Changed` delivery;
//! - [`exec_handlers`]: local apps registered as EXEC handlers, called back for sessions;
//! - [`error`]: the `org.omadm.Client1.Error.*` names.
//!
//! Within the face, `client1` uses `servers`, `sessions`, `network`, `watch` and
//! `exec_handlers`; `network` uses `sessions`; `client1` and `nodes` use `variant`;
//! `servers` uses
//! `sessions`; `watch` uses `servers`; `client1` uses `transfers`, `children` and
//! `value_fd`; nothing points back. Outside it, `bus` uses the
//! [`Authority`], the session [`Scheduler`]'s public API, the transfer
//! [`Board`](crate::transfer::Board), the gateway's
//! [`Inventory`](crate::gateway::inventory::Inventory), the session's
//! [`AppHandlers`](crate::session::exec::AppHandlers) trait (which `exec_handlers` implements
//! for the engine) and the factory [`Bootstrap`] only.

pub mod access;
pub mod children;
pub mod client1;
pub mod error;
pub mod exec_handlers;
pub mod network;
pub mod nodes;
pub mod peer;
pub mod servers;
pub mod sessions;
pub mod transfers;
pub mod value_fd;
pub mod variant;
pub mod watch;

use std::sync::Arc;

use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use crate::authority::Authority;
use crate::bootstrap::Bootstrap;
use crate::config::Limits;
use crate::session::{Scheduler, Tasks};
use crate::store::Change;

/// The well-known bus name.
pub const NAME: &str = "org.omadm.Client1";
/// The main object.
pub const PATH: &str = "/org/omadm/Client1";
/// The main interface.
pub const INTERFACE: &str = "org.omadm.Client1";

/// Which bus to serve on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bus {
    System,
    Session,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot connect to the {bus:?} bus: {source}")]
    Connect { bus: Bus, source: zbus::Error },
    #[error("cannot export {PATH}: {0}")]
    Export(zbus::Error),
    #[error(
        "cannot own {NAME} (is another omadmd running, or does the bus policy forbid it?): {0}"
    )]
    Name(zbus::Error),
}

/// The running service. Dropping it leaves the bus.
pub struct Service {
    pub conn: zbus::Connection,
    /// Fires when the connection to the bus is lost (the bus stopped or dropped us).
    pub lost: tokio::sync::oneshot::Receiver<()>,
}

/// The parts inside omadmd the face calls.
pub struct Inward {
    pub auth: Arc<Authority>,
    pub scheduler: Arc<Scheduler>,
    /// Serves `Bootstrap` and `FactoryReset`.
    pub bootstrap: Arc<Bootstrap>,
    /// The EXEC handlers apps register; the session engine calls them (see
    /// [`crate::session::exec::ExecHandlers::with_apps`]).
    pub exec_apps: Arc<exec_handlers::ExecApps>,
    /// What the server objects show of notifications (`NotificationChannel`).
    pub notifications: servers::Notifications,
    /// The network follower's channel ([`crate::network::follow::start`]).
    pub network: tokio::sync::watch::Receiver<crate::network::NetworkState>,
    /// The large-object transfers: one object each, and `SuspendTransfer`/`ResumeTransfer`.
    pub transfers: Arc<crate::transfer::Board>,
    /// The gateway's children (`Children`, `DetachChild`); `None` when the gateway is off.
    pub gateway: Option<Arc<crate::gateway::inventory::Inventory>>,
}

/// Connects to `bus`, exports the interface and the object manager, starts change
/// delivery from `changes` and the announcing of the scheduler's session events, and only
/// then takes the well-known name. `limits` bound what each caller may hold (watches,
/// cached polkit answers). The background tasks (announcing, change delivery, following
/// departures) are `tasks`'s and end when it stops.
pub async fn serve(
    bus: Bus,
    inward: Inward,
    changes: mpsc::Receiver<Vec<Change>>,
    dev_id: String,
    limits: &Limits,
    tasks: &Tasks,
) -> Result<Service, ServeError> {
    let Inward {
        auth,
        scheduler,
        bootstrap,
        exec_apps,
        notifications,
        network,
        transfers: board,
        gateway,
    } = inward;
    let builder = match bus {
        Bus::System => zbus::connection::Builder::system(),
        Bus::Session => zbus::connection::Builder::session(),
    };
    let conn = builder
        .build()
        .await
        .map_err(|source| ServeError::Connect {
            bus: bus.clone(),
            source,
        })?;
    let access = Arc::new(access::Access::new(conn.clone(), limits));
    let watches = Arc::new(watch::Watches::new(limits.watches_per_caller));
    let servers = Arc::new(servers::Servers::new(
        conn.clone(),
        scheduler.clone(),
        access.clone(),
        notifications,
    ));
    let iface = client1::Client1 {
        store: scheduler.store().clone(),
        auth: auth.clone(),
        access: access.clone(),
        watches: watches.clone(),
        scheduler: scheduler.clone(),
        servers: servers.clone(),
        bootstrap,
        exec_apps: exec_apps.clone(),
        dev_id,
        network: network.clone(),
        transfers: board.clone(),
        gateway: gateway.clone(),
    };
    let server = conn.object_server();
    server.at(PATH, iface).await.map_err(ServeError::Export)?;
    server
        .at(PATH, zbus::fdo::ObjectManager)
        .await
        .map_err(ServeError::Export)?;
    servers.sync().await;
    until_stopped(tasks, servers.clone().follow_channels());
    let transfers = Arc::new(transfers::Transfers::new(
        conn.clone(),
        board,
        access.clone(),
    ));
    // Subscribed before the first sync: no change of the board between the two is missed.
    let board_events = transfers.subscribe();
    transfers.sync().await;
    until_stopped(tasks, transfers.follow(board_events));
    // Subscribed before the name is taken: no caller can start a session unannounced.
    tasks.spawn(sessions::announce(
        conn.clone(),
        scheduler.clone(),
        scheduler.subscribe(),
        network.clone(),
        tasks.clone(),
    ));
    until_stopped(
        tasks,
        network::announce(conn.clone(), scheduler.clone(), network),
    );
    if let Some(inventory) = gateway {
        // Subscribed before the name is taken: every change a caller could see is announced.
        let saves = inventory.subscribe();
        until_stopped(tasks, children::announce(conn.clone(), inventory, saves));
    }
    until_stopped(
        tasks,
        watch::dispatch(
            conn.clone(),
            auth,
            watches.clone(),
            servers,
            scheduler.store().clone(),
            changes,
        ),
    );
    let (lost_tx, lost) = tokio::sync::oneshot::channel();
    let departures = forget_departed(conn.clone(), access, watches, exec_apps);
    until_stopped(tasks, async move {
        departures.await;
        // The receiver is gone only when the daemon is already stopping.
        let _ = lost_tx.send(());
    });
    // Never wait in the queue behind another owner: a second omadmd must fail at once.
    let reply = conn
        .request_name_with_flags(NAME, zbus::fdo::RequestNameFlags::DO_NOT_QUEUE)
        .await
        .map_err(ServeError::Name)?;
    if !matches!(
        reply,
        zbus::fdo::RequestNameReply::PrimaryOwner | zbus::fdo::RequestNameReply::AlreadyOwner
    ) {
        return Err(ServeError::Name(zbus::Error::NameTaken));
    }
    Ok(Service { conn, lost })
}

/// Emits `PropertiesChanged` for the `changed` properties of the `interface` at `path`
/// (one way for every object); a failure is logged.
pub(crate) async fn properties_changed(
    conn: &zbus::Connection,
    path: &str,
    interface: &str,
    changed: std::collections::HashMap<&str, zbus::zvariant::Variant<'_>>,
) {
    let names: Vec<&str> = changed.keys().copied().collect();
    let body = (interface, changed, Vec::<&str>::new());
    if let Err(e) = conn
        .emit_signal(
            None::<&str>,
            path,
            "org.freedesktop.DBus.Properties",
            "PropertiesChanged",
            &body,
        )
        .await
    {
        tracing::warn!("cannot announce {} of {path}: {e}", names.join(", "));
    }
}

/// Runs `work` as a task of `tasks`, ended when they stop.
fn until_stopped(tasks: &Tasks, work: impl Future<Output = ()> + Send + 'static) {
    let t = tasks.clone();
    tasks.spawn(async move {
        tokio::select! {
            () = work => {}
            () = t.stopped() => {}
        }
    });
}

/// Notes when each connection joins the bus, and drops identities, cached answers,
/// watches and EXEC handler registrations of connections that leave it. Returns when the
/// bus connection is gone.
async fn forget_departed(
    conn: zbus::Connection,
    access: Arc<access::Access>,
    watches: Arc<watch::Watches>,
    exec_apps: Arc<exec_handlers::ExecApps>,
) {
    let stream = async {
        let dbus = zbus::fdo::DBusProxy::new(&conn).await?;
        dbus.receive_name_owner_changed().await
    };
    let mut stream = match stream.await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot follow bus departures; caches will not be cleared: {e}");
            return;
        }
    };
    while let Some(signal) = stream.next().await {
        let Ok(args) = signal.args() else { continue };
        if !args.name().starts_with(':') {
            continue;
        }
        let name = args.name().to_string();
        if args.new_owner().is_some() {
            access.seen(&name);
        } else {
            access.forget(&name);
            watches.forget(&name);
            exec_apps.forget(&name);
        }
    }
}
