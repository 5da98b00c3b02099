//! One object per DM server account: `/org/omadm/Client1/server/<escaped SrvID>` with the
//! `org.omadm.Client1.Server` interface, kept in step with the DM Account MO instances
//! (added, changed, removed) and listed in the main object's `Servers` property.
//!
//! What a server may manage (its `Perm`, as `PermittedMoids`) is for administrators only:
//! uid 0 or a caller polkit allows `manage`. Everyone else gets `AccessDenied`, and views
//! without a caller to check (`GetManagedObjects`, `InterfacesAdded`) leave it out.
//!
//! `NotificationChannel` says how the server can reach the device ([`Notifications`]), and
//! changes (with `PropertiesChanged`) as the MQTT channel connects and loses its broker.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use zbus::message::Header;
use zbus::zvariant::Variant;
use zbus::{OwnedObjectPath, interface};

use super::access::{Access, Action};
use super::error::Error;
use super::sessions;
use crate::notification::mqtt;
use crate::session::{Account, Scheduler};

/// Where the server objects live.
pub const PREFIX: &str = "/org/omadm/Client1/server";

/// The server objects' interface.
pub const INTERFACE: &str = "org.omadm.Client1.Server";

/// What the server objects show of server notifications.
#[derive(Clone, Default)]
pub struct Notifications {
    /// Whether the daemon listens for Package#0 over UDP (`[notification.udp] listen`).
    pub udp: bool,
    /// The MQTT channel's state per SrvID; `None` without the MQTT channel.
    pub mqtt: Option<watch::Receiver<mqtt::Status>>,
    /// The notifications ignored per server (`IgnoredNotifications`).
    pub ignored: Arc<crate::notification::IgnoredCounts>,
}

impl Notifications {
    /// `NotificationChannel`: `mqtt:connecting` or `mqtt:connected` for a server with an
    /// MQTT push entry, else `udp` when the daemon listens for UDP, else "".
    pub fn channel(&self, srv_id: &str) -> String {
        let mqtt = self
            .mqtt
            .as_ref()
            .and_then(|m| m.borrow().get(srv_id).copied());
        match mqtt {
            Some(state) => state.as_str().to_owned(),
            None if self.udp => "udp".to_owned(),
            None => String::new(),
        }
    }
}

/// The published server objects, by SrvID.
pub struct Servers {
    conn: zbus::Connection,
    scheduler: Arc<Scheduler>,
    access: Arc<Access>,
    notifications: Notifications,
    published: Mutex<BTreeMap<String, Account>>,
}

/// `org.omadm.Client1.Server`: one DM server (Management Authority).
struct Server {
    account: Account,
    scheduler: Arc<Scheduler>,
    access: Arc<Access>,
    notifications: Notifications,
}

impl Servers {
    pub fn new(
        conn: zbus::Connection,
        scheduler: Arc<Scheduler>,
        access: Arc<Access>,
        notifications: Notifications,
    ) -> Servers {
        Servers {
            conn,
            scheduler,
            access,
            notifications,
            published: Mutex::new(BTreeMap::new()),
        }
    }

    /// Announces `NotificationChannel` changes of the published servers as the MQTT
    /// channel's state changes, until that channel is gone.
    pub async fn follow_channels(self: Arc<Self>) {
        let Some(mut states) = self.notifications.mqtt.clone() else {
            return;
        };
        let shown = || -> BTreeMap<String, String> {
            self.lock()
                .keys()
                .map(|id| (id.clone(), self.notifications.channel(id)))
                .collect()
        };
        let mut before = shown();
        while states.changed().await.is_ok() {
            let now = shown();
            for (id, channel) in &now {
                if before.get(id) != Some(channel) {
                    self.channel_changed(id, channel).await;
                }
            }
            before = now;
        }
    }

    /// `PropertiesChanged` for one server's `NotificationChannel`.
    async fn channel_changed(&self, srv_id: &str, channel: &str) {
        let Ok(p) = path(srv_id) else { return };
        let changed: HashMap<&str, Variant<'_>> =
            HashMap::from([("NotificationChannel", Variant::from(channel))]);
        super::properties_changed(&self.conn, p.as_str(), INTERFACE, changed).await;
    }

    /// The object paths of the published servers, by SrvID.
    pub fn paths(&self) -> Vec<OwnedObjectPath> {
        self.lock().keys().filter_map(|id| path(id).ok()).collect()
    }

    /// Publishes an object per DM account, replaces changed ones, removes stale ones.
    pub async fn sync(&self) {
        let accounts = match self.scheduler.accounts().await {
            Ok(a) => a,
            Err(e) => return tracing::error!("cannot read DM accounts: {e}"),
        };
        let wanted: BTreeMap<String, Account> = accounts
            .into_iter()
            .map(|a| (a.srv_id.clone(), a))
            .collect();
        let current = self.lock().clone();
        let server = self.conn.object_server();
        for (id, old) in &current {
            if wanted.get(id) != Some(old)
                && let Ok(p) = path(id)
            {
                let _ = server.remove::<Server, _>(p).await;
            }
        }
        for (id, acc) in &wanted {
            if current.get(id) == Some(acc) {
                continue;
            }
            let iface = Server {
                account: acc.clone(),
                scheduler: self.scheduler.clone(),
                access: self.access.clone(),
                notifications: self.notifications.clone(),
            };
            match path(id) {
                Ok(p) => {
                    if let Err(e) = server.at(p, iface).await {
                        tracing::warn!("cannot publish server {id}: {e}");
                    }
                }
                Err(e) => tracing::warn!("server {id} has no valid object path: {e}"),
            }
        }
        *self.lock() = wanted;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Account>> {
        self.published.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `PREFIX/<SrvID escaped>`: letters and digits kept, every other byte as `_XX` (hex).
pub fn path(srv_id: &str) -> Result<OwnedObjectPath, zbus::Error> {
    let escaped: String = srv_id
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("_{b:02x}")
            }
        })
        .collect();
    let escaped = if escaped.is_empty() {
        "_".to_owned()
    } else {
        escaped
    };
    OwnedObjectPath::try_from(format!("{PREFIX}/{escaped}"))
}

#[interface(name = "org.omadm.Client1.Server")]
impl Server {
    /// Starts a DM session with this server; see `org.omadm.Client1.StartSession`.
    #[zbus(out_args("session_id"))]
    async fn start_session(
        &self,
        reason: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, Error> {
        let caller = self
            .access
            .authorize(&header, Action::StartSession, "")
            .await?;
        let (srv, sid) = sessions::start(&self.scheduler, &self.account.srv_id, &reason).await?;
        tracing::info!(by = %caller.principal, "session {sid} with {srv} requested");
        Ok(sid)
    }

    #[zbus(property)]
    fn server_id(&self) -> String {
        self.account.srv_id.clone()
    }

    #[zbus(property)]
    fn name(&self) -> String {
        self.account.name.clone().unwrap_or_default()
    }

    #[zbus(property)]
    fn server_uri(&self) -> String {
        self.account.srv_uri.clone()
    }

    #[zbus(property)]
    fn priority(&self) -> i64 {
        self.account.priority
    }

    /// The MOIDs the server may manage; administrators only (see the module documentation).
    #[zbus(property)]
    async fn permitted_moids(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
    ) -> Result<Vec<String>, Error> {
        let header = header.ok_or_else(|| {
            Error::AccessDenied("PermittedMoids is only read by a caller it can check".into())
        })?;
        self.access
            .authorize_without_asking(&header, Action::Manage, "")
            .await?;
        Ok(self.account.permitted.clone())
    }

    /// When the last session completed, POSIX seconds (0: never).
    #[zbus(property)]
    async fn last_session(&self) -> u64 {
        self.scheduler.last_session(&self.account.srv_id).await
    }

    /// How the server reaches this client for notifications: "", `udp`, `mqtt:connecting` or
    /// `mqtt:connected` (see [`Notifications::channel`]).
    #[zbus(property)]
    fn notification_channel(&self) -> String {
        self.notifications.channel(&self.account.srv_id)
    }

    /// How many notifications naming this server were ignored since omadmd started (each
    /// is logged with its reason).
    #[zbus(property)]
    fn ignored_notifications(&self) -> u64 {
        self.notifications.ignored.of(&self.account.srv_id)
    }
}

#[cfg(test)]
mod tests {
    use super::path;

    #[test]
    fn server_ids_are_escaped_into_object_paths() {
        assert_eq!(
            path("devserver").unwrap().as_str(),
            "/org/omadm/Client1/server/devserver"
        );
        assert_eq!(
            path("a.b-c").unwrap().as_str(),
            "/org/omadm/Client1/server/a_2eb_2dc"
        );
        assert_eq!(path("").unwrap().as_str(), "/org/omadm/Client1/server/_");
    }
}
