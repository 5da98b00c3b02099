//! The D-Bus side: the `org.omadm.Client1` proxy (the contract is
//! `dbus/org.omadm.Client1.xml`), the `org.omadm.Client1.Server` proxy of the DM server
//! objects, and the connection to the system or session bus.

use zbus::proxy::CacheProperties;
use zbus::{OwnedObjectPath, OwnedVariant};

use crate::failure::{Bus, Failure};

#[zbus::proxy(
    interface = "org.omadm.Client1",
    default_service = "org.omadm.Client1",
    default_path = "/org/omadm/Client1"
)]
pub trait Client1 {
    /// Every node the ClientURI resolves to, as (client_uri, format, value).
    fn get(&self, client_uri: &str) -> zbus::Result<Vec<(String, String, OwnedVariant)>>;

    /// Who last wrote the one node the ClientURI names.
    fn holder(&self, client_uri: &str) -> zbus::Result<String>;

    /// The MO serialization of the resolved nodes and their subtrees.
    fn get_json(&self, client_uri: &str) -> zbus::Result<String>;

    fn set(&self, client_uri: &str, format: &str, value: &zbus::Variant<'_>) -> zbus::Result<()>;

    fn delete(&self, client_uri: &str) -> zbus::Result<()>;

    fn create_instance(&self, moid: &str, modata_json: &str) -> zbus::Result<String>;

    fn watch(&self, client_uri: &str) -> zbus::Result<u64>;

    fn unwatch(&self, watch_id: u64) -> zbus::Result<()>;

    /// (current_seq, [(client_uri, change, seq)]).
    fn changes_since(
        &self,
        client_uri: &str,
        seq: u64,
    ) -> zbus::Result<(u64, Vec<(String, String, u64)>)>;

    fn grant(&self, instance_uri: &str, principal: &str, rights: &[&str]) -> zbus::Result<()>;

    fn revoke(&self, instance_uri: &str, principal: &str) -> zbus::Result<()>;

    /// Who holds which rights on the instance: its owner first, then the grants.
    fn list_grants(&self, instance_uri: &str) -> zbus::Result<Vec<(String, Vec<String>)>>;

    /// Applies the factory bootstrap file at path (absolute; omadmd reads it).
    fn bootstrap(&self, path: &str) -> zbus::Result<()>;

    /// Removes every MO instance but omadmd's own and applies the bootstrap files again.
    fn factory_reset(&self) -> zbus::Result<()>;

    /// Starts a DM session with server_id ("": the highest-priority server) for reason
    /// ("": client-initiated); returns the session id at once.
    fn start_session(&self, server_id: &str, reason: &str) -> zbus::Result<String>;

    /// Sends a Generic Alert to server_id ("": omadmd chooses); returns once it is kept.
    fn send_alert(
        &self,
        server_id: &str,
        alert_type: &str,
        source_uri: &str,
        mark: &str,
        data_type: &str,
        data: &str,
    ) -> zbus::Result<()>;

    /// Broadcast when a session starts.
    #[zbus(signal)]
    fn session_started(
        &self,
        server_id: String,
        session_id: String,
        reason: String,
    ) -> zbus::Result<()>;

    /// Broadcast when a session ends; status 200 is success.
    #[zbus(signal)]
    fn session_finished(
        &self,
        server_id: String,
        session_id: String,
        status: i32,
    ) -> zbus::Result<()>;

    /// Sent to the watcher only.
    #[zbus(signal)]
    fn changed(
        &self,
        watch_id: u64,
        client_uri: String,
        change: String,
        seq: u64,
    ) -> zbus::Result<()>;

    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn dev_id(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn features(&self) -> zbus::Result<Vec<String>>;

    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;

    /// The primary connection's access technology (`ethernet`, `wifi`, `cellular`, ...),
    /// `none` without one or without NetworkManager.
    #[zbus(property)]
    fn access_technology(&self) -> zbus::Result<String>;

    /// The sessions in progress, as (server id, session id).
    #[zbus(property)]
    fn sessions(&self) -> zbus::Result<Vec<(String, String)>>;

    /// One `org.omadm.Client1.Server` object per DM account.
    #[zbus(property)]
    fn servers(&self) -> zbus::Result<Vec<OwnedObjectPath>>;
}

/// One DM server account (the contract is `dbus/org.omadm.Client1.Server.xml`).
#[zbus::proxy(
    interface = "org.omadm.Client1.Server",
    default_service = "org.omadm.Client1"
)]
pub trait Server {
    #[zbus(property)]
    fn server_id(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn server_uri(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn priority(&self) -> zbus::Result<i64>;

    /// Only uid 0 and callers polkit allows `manage` may read it.
    #[zbus(property)]
    fn permitted_moids(&self) -> zbus::Result<Vec<String>>;

    /// POSIX seconds; 0: never.
    #[zbus(property)]
    fn last_session(&self) -> zbus::Result<u64>;

    /// Notifications naming the server that omadmd ignored since it started.
    #[zbus(property)]
    fn ignored_notifications(&self) -> zbus::Result<u64>;

    /// How the server can reach omadmd: `""`, `udp`, `mqtt:connecting`, `mqtt:connected`.
    #[zbus(property)]
    fn notification_channel(&self) -> zbus::Result<String>;
}

/// A connection to omadmd: the proxy, and which bus it is on (for error messages).
pub struct Client {
    pub proxy: Client1Proxy<'static>,
    pub bus: Bus,
}

impl Client {
    /// Connects to `bus` (the system bus honours `DBUS_SYSTEM_BUS_ADDRESS`, the session bus
    /// `DBUS_SESSION_BUS_ADDRESS`). Properties are not cached: each read asks the daemon.
    pub async fn connect(bus: Bus) -> Result<Client, Failure> {
        let conn = match bus {
            Bus::System => zbus::Connection::system().await,
            Bus::Session => zbus::Connection::session().await,
        }
        .map_err(|e| connect_failure(e, bus))?;
        let proxy = Client1Proxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| Failure::from_dbus(e, bus))?;
        Ok(Client { proxy, bus })
    }

    /// The proxy of the server object at `path`, properties not cached.
    pub async fn server(&self, path: OwnedObjectPath) -> Result<ServerProxy<'static>, Failure> {
        ServerProxy::builder(self.proxy.inner().connection())
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| self.fail(e))
    }

    /// Maps a failed call to its exit status and message.
    pub fn fail(&self, error: zbus::Error) -> Failure {
        Failure::from_dbus(error, self.bus)
    }
}

/// A connection that could not be made: always status 3, with the reason.
fn connect_failure(error: zbus::Error, bus: Bus) -> Failure {
    let failure = Failure::from_dbus(error, bus);
    if failure.status == 3 {
        failure
    } else {
        Failure::new(
            3,
            format!("cannot connect to the {bus} bus: {}", failure.message),
        )
    }
}
