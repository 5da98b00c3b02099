//! The D-Bus side: the `org.omadm.Client1` methods ([`Calls`]) and proxy (the contract is
//! `dbus/org.omadm.Client1.xml`), the `org.omadm.Client1.Server` proxy of the DM server
//! objects, and the connection to the system or session bus.
//!
//! Every method call carries `ALLOW_INTERACTIVE_AUTHORIZATION` unless the user said
//! `--no-ask-password`: omadmd then lets polkit ask the user for a password, through the
//! polkit agent [`crate::agent`] starts for this process on a terminal (or the desktop's).
//! Calls have no timeout, as systemd's interactive calls: a person typing a password takes
//! the time it takes, and Ctrl-C ends the wait. (zbus sets none unless asked, and the bus
//! has none for replies.) Property reads carry no flag and are never prompted for.

use std::ops::Deref;

use zbus::proxy::{CacheProperties, MethodFlags};
use zbus::{OwnedObjectPath, OwnedVariant};

use crate::agent::{self, Agent};
use crate::failure::{ACCESS_DENIED, Bus, Failure};

/// The properties and signals of `org.omadm.Client1`; its methods are [`Calls`]'s.
#[zbus::proxy(
    interface = "org.omadm.Client1",
    default_service = "org.omadm.Client1",
    default_path = "/org/omadm/Client1"
)]
pub trait Client1 {
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

    /// The gateway's children: (key, id, protocol, address, state, last_seen, mos).
    #[zbus(property)]
    fn children(&self) -> zbus::Result<Vec<omadmd::bus::children::Entry>>;
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

/// The methods of `org.omadm.Client1`, each called with the flags the user chose
/// (interactive authorization, or `--no-ask-password`); the properties and signals are the
/// [`Client1Proxy`]'s, which this derefs to.
pub struct Calls {
    proxy: Client1Proxy<'static>,
    flags: MethodFlags,
}

impl Deref for Calls {
    type Target = Client1Proxy<'static>;

    fn deref(&self) -> &Client1Proxy<'static> {
        &self.proxy
    }
}

impl Calls {
    /// Every node the ClientURI resolves to, as (client_uri, format, value).
    pub async fn get(&self, client_uri: &str) -> zbus::Result<Vec<(String, String, OwnedVariant)>> {
        self.call("Get", &(client_uri,)).await
    }

    /// Who last wrote the one node the ClientURI names.
    pub async fn holder(&self, client_uri: &str) -> zbus::Result<String> {
        self.call("Holder", &(client_uri,)).await
    }

    /// The MO serialization of the resolved nodes and their subtrees.
    pub async fn get_json(&self, client_uri: &str) -> zbus::Result<String> {
        self.call("GetJson", &(client_uri,)).await
    }

    pub async fn set(
        &self,
        client_uri: &str,
        format: &str,
        value: &zbus::Variant<'_>,
    ) -> zbus::Result<()> {
        self.call("Set", &(client_uri, format, value)).await
    }

    pub async fn delete(&self, client_uri: &str) -> zbus::Result<()> {
        self.call("Delete", &(client_uri,)).await
    }

    pub async fn create_instance(&self, moid: &str, modata_json: &str) -> zbus::Result<String> {
        self.call("CreateInstance", &(moid, modata_json)).await
    }

    pub async fn watch(&self, client_uri: &str) -> zbus::Result<u64> {
        self.call("Watch", &(client_uri,)).await
    }

    pub async fn unwatch(&self, watch_id: u64) -> zbus::Result<()> {
        self.call("Unwatch", &(watch_id,)).await
    }

    /// (current_seq, [(client_uri, change, seq)]).
    pub async fn changes_since(
        &self,
        client_uri: &str,
        seq: u64,
    ) -> zbus::Result<(u64, Vec<(String, String, u64)>)> {
        self.call("ChangesSince", &(client_uri, seq)).await
    }

    pub async fn grant(
        &self,
        instance_uri: &str,
        principal: &str,
        rights: &[&str],
    ) -> zbus::Result<()> {
        self.call("Grant", &(instance_uri, principal, rights)).await
    }

    pub async fn revoke(&self, instance_uri: &str, principal: &str) -> zbus::Result<()> {
        self.call("Revoke", &(instance_uri, principal)).await
    }

    /// Who holds which rights on the instance: its owner first, then the grants.
    pub async fn list_grants(
        &self,
        instance_uri: &str,
    ) -> zbus::Result<Vec<(String, Vec<String>)>> {
        self.call("ListGrants", &(instance_uri,)).await
    }

    /// Applies the factory bootstrap file at path (absolute; omadmd reads it).
    pub async fn bootstrap(&self, path: &str) -> zbus::Result<()> {
        self.call("Bootstrap", &(path,)).await
    }

    /// Removes every MO instance but omadmd's own and applies the bootstrap files again.
    pub async fn factory_reset(&self) -> zbus::Result<()> {
        self.call("FactoryReset", &()).await
    }

    /// Starts a DM session with server_id ("": the highest-priority server) for reason
    /// ("": client-initiated); returns the session id at once.
    pub async fn start_session(&self, server_id: &str, reason: &str) -> zbus::Result<String> {
        self.call("StartSession", &(server_id, reason)).await
    }

    /// Sends a Generic Alert to server_id ("": omadmd chooses); returns once it is kept.
    pub async fn send_alert(
        &self,
        server_id: &str,
        alert_type: &str,
        source_uri: &str,
        mark: &str,
        data_type: &str,
        data: &str,
    ) -> zbus::Result<()> {
        let body = (server_id, alert_type, source_uri, mark, data_type, data);
        self.call("SendAlert", &body).await
    }

    /// Suspends the large-object transfer whose object is `transfer`.
    pub async fn suspend_transfer(&self, transfer: &OwnedObjectPath) -> zbus::Result<()> {
        self.call("SuspendTransfer", &(transfer,)).await
    }

    /// Resumes the suspended transfer whose object is `transfer`.
    pub async fn resume_transfer(&self, transfer: &OwnedObjectPath) -> zbus::Result<()> {
        self.call("ResumeTransfer", &(transfer,)).await
    }

    /// Detaches the gateway's child `key`.
    pub async fn detach_child(&self, key: &str) -> zbus::Result<()> {
        self.call("DetachChild", &(key,)).await
    }

    /// Calls `method` with `body` and the chosen flags; its reply.
    async fn call<B, R>(&self, method: &'static str, body: &B) -> zbus::Result<R>
    where
        B: serde::Serialize + zbus::DynamicType,
        R: for<'d> zbus::wire::DynamicDeserialize<'d>,
    {
        self.proxy
            .inner()
            .call_with_flags(method, self.flags, body)
            .await?
            // Invariant: the flags never hold NO_REPLY_EXPECTED, so a reply always comes.
            .ok_or_else(|| zbus::Error::Failure(format!("{method}: omadmd sent no reply")))
    }
}

/// Whether omadmctl lets polkit ask the user for a password (`--no-ask-password` says no).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AskPassword {
    Yes,
    No,
}

/// A connection to omadmd: its methods and proxy, which bus it is on (for error messages),
/// and the polkit agent started for it (stopped when the client is dropped).
pub struct Client {
    pub proxy: Calls,
    pub bus: Bus,
    agent: Agent,
}

impl Client {
    /// Connects to `bus` (the system bus honours `DBUS_SYSTEM_BUS_ADDRESS`, the session bus
    /// `DBUS_SESSION_BUS_ADDRESS`). Properties are not cached: each read asks the daemon.
    /// With `ask` [`AskPassword::Yes`], calls allow interactive authorization and, on the
    /// system bus, a polkit agent is started on a terminal ([`agent::start`]).
    pub async fn connect(bus: Bus, ask: AskPassword) -> Result<Client, Failure> {
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
        let (flags, agent) = match ask {
            AskPassword::Yes if bus == Bus::System => {
                (MethodFlags::ALLOW_INTERACTIVE_AUTH, agent::start().await)
            }
            // polkit is on the system bus only.
            AskPassword::Yes => (MethodFlags::ALLOW_INTERACTIVE_AUTH, Agent::NotNeeded),
            AskPassword::No => (MethodFlags::empty(), Agent::Declined),
        };
        Ok(Client {
            proxy: Calls { proxy, flags },
            bus,
            agent,
        })
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

    /// Maps a failed call to its exit status and message; a refusal's hint says how to be
    /// asked for a password where omadmctl could not ask.
    pub fn fail(&self, error: zbus::Error) -> Failure {
        let mut failure = Failure::from_dbus(error, self.bus);
        if failure.status == ACCESS_DENIED
            && let Some(hint) = self.agent.access_hint()
        {
            failure.hint = Some(hint);
        }
        failure
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
