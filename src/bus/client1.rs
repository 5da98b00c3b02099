//! `org.omadm.Client1` at `/org/omadm/Client1`: the tree part of the API
//! (`dbus/org.omadm.Client1.xml` is the contract). Each method authorizes the caller with
//! polkit ([`super::access`]), then hands the work to the [`Authority`], which applies the
//! MO access model. A write is answered once it is durable ([`Pool::durable`]).

use std::path::PathBuf;
use std::sync::Arc;

use zbus::OwnedObjectPath;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Signature, Variant, interface};

use super::access::{Access, Action};
use super::children;
use super::error::Error;
use super::exec_handlers::ExecApps;
use super::nodes::Nodes;
use super::servers::Servers;
use super::sessions;
use super::transfers;
use super::value_fd::{self, OpenError};
use super::variant;
use super::watch::Watches;
use crate::authority::{AccessError, Authority, Input, Principal, Rights};
use crate::bootstrap::{Bootstrap, FileError};
use crate::gateway::inventory::Inventory;
use crate::session::Scheduler;
use crate::session::send_alert::{AlertError, AlertRequest};
use crate::store::{self, Lane, Pool};
use crate::transfer::Board;
use crate::tree::builtin;
use crate::tree::format::Format;
use crate::tree::uri::{ClientUri, Moid};

/// The interface object.
pub struct Client1 {
    /// The store the writes go to: each is durable before it is answered.
    pub(super) store: Arc<Pool>,
    pub(super) auth: Arc<Authority>,
    pub(super) access: Arc<Access>,
    pub(super) watches: Arc<Watches>,
    pub(super) scheduler: Arc<Scheduler>,
    pub(super) servers: Arc<Servers>,
    pub(super) bootstrap: Arc<Bootstrap>,
    pub(super) exec_apps: Arc<ExecApps>,
    pub(super) dev_id: String,
    /// The network follower's channel (`State`, `AccessTechnology`).
    pub(super) network: tokio::sync::watch::Receiver<crate::network::NetworkState>,
    /// The large-object transfers `SuspendTransfer` and `ResumeTransfer` switch.
    pub(super) transfers: Arc<Board>,
    /// The gateway's children (`Children`, `DetachChild`); `None` when the gateway is off.
    pub(super) gateway: Option<Arc<Inventory>>,
}

#[interface(name = "org.omadm.Client1")]
impl Client1 {
    #[zbus(out_args("principal"))]
    async fn holder(
        &self,
        client_uri: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, Error> {
        let uri = self.well_formed(&client_uri)?;
        let caller = self
            .access
            .authorize(&header, Action::Read, &client_uri)
            .await?;
        let (auth, who) = (self.auth.clone(), caller.principal);
        Ok(store::offload(Lane::Interactive, move || auth.holder(&who, &uri)).await??)
    }

    #[zbus(out_args("nodes"))]
    async fn get(
        &self,
        client_uri: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Nodes, Error> {
        let uri = self.well_formed(&client_uri)?;
        let reader = self.reader(&header, &client_uri, &uri.moid).await?;
        let read = || {
            let (auth, who, uri) = (self.auth.clone(), reader.clone(), uri.clone());
            async move {
                let nodes = store::offload(Lane::Interactive, move || {
                    let mut nodes = Nodes::default();
                    auth.get_each(&who, &uri, |addr, leaf| nodes.push(addr, leaf))
                        .map(|()| nodes)
                })
                .await??;
                Ok::<_, Error>(nodes)
            }
        };
        match read().await {
            Err(Error::NotFound(_)) if self.fetched_default(&client_uri).await => read().await,
            other => other,
        }
    }

    #[zbus(out_args("json"))]
    async fn get_json(
        &self,
        client_uri: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, Error> {
        let uri = self.well_formed(&client_uri)?;
        let reader = self.reader(&header, &client_uri, &uri.moid).await?;
        let read = || {
            let (auth, who, uri) = (self.auth.clone(), reader.clone(), uri.clone());
            async move {
                let json =
                    store::offload(Lane::Interactive, move || auth.get_json(&who, &uri)).await??;
                // Invariant: serde_json writes UTF-8.
                String::from_utf8(json).map_err(|e| Error::Failed(e.to_string()))
            }
        };
        match read().await {
            Err(Error::NotFound(_)) if self.fetched_default(&client_uri).await => read().await,
            other => other,
        }
    }

    async fn set(
        &self,
        client_uri: String,
        format: String,
        value: Variant<'_>,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), Error> {
        let uri = self.well_formed(&client_uri)?;
        let who = self.writer(&header, &client_uri, &uri.moid).await?;
        let format = match format.as_str() {
            "" => None,
            f => Some(
                f.parse::<Format>()
                    .map_err(|e| Error::InvalidValue(e.to_string()))?,
            ),
        };
        let input = from_variant(value)?;
        let auth = self.auth.clone();
        store::offload(Lane::Write, move || auth.set(&who, &uri, format, input)).await??;
        self.durable().await
    }

    async fn delete(
        &self,
        client_uri: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), Error> {
        let uri = self.well_formed(&client_uri)?;
        let who = self.writer(&header, &client_uri, &uri.moid).await?;
        let auth = self.auth.clone();
        store::offload(Lane::Write, move || auth.delete(&who, &uri)).await??;
        self.durable().await
    }

    #[zbus(out_args("client_uri"))]
    async fn create_instance(
        &self,
        moid: String,
        modata_json: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, Error> {
        let moid = Moid::parse(&moid).map_err(|e| Error::InvalidUri(e.to_string()))?;
        let who = self.writer(&header, &format!("{moid}/"), &moid).await?;
        let (auth, creator) = (self.auth.clone(), who.clone());
        let root = store::offload(Lane::Write, move || {
            auth.create_instance(&creator, &moid, &modata_json)
        })
        .await??;
        self.durable().await?;
        tracing::info!(principal = %who, "created {root}");
        Ok(root.to_string())
    }

    #[zbus(out_args("watch_id"))]
    async fn watch(
        &self,
        client_uri: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<u64, Error> {
        let uri = self.well_formed(&client_uri)?;
        let caller = self
            .access
            .authorize(&header, Action::Watch, &client_uri)
            .await?;
        // A watch on nodes the caller may not read is accepted like one on nodes that do not
        // exist (yet): it is never told of changes it may not read, their deletion included.
        let owner = sender(&header)?;
        // Registering reads the store (the journal's position, what the caller may read).
        let (watches, auth, who) = (self.watches.clone(), self.auth.clone(), owner.clone());
        let id = store::offload(Lane::Interactive, move || {
            watches.add(&auth, &who, caller.principal, &uri)
        })
        .await??;
        // A caller that left the bus while this call ran is forgotten already; so is its watch.
        if !self.access.knows(&owner) {
            self.watches.remove(&owner, id);
        }
        Ok(id)
    }

    async fn unwatch(
        &self,
        watch_id: u64,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), Error> {
        let owner = sender(&header)?;
        if self.watches.remove(&owner, watch_id) {
            Ok(())
        } else {
            Err(Error::NotFound(format!("no watch {watch_id} of {owner}")))
        }
    }

    #[zbus(out_args("current_seq", "changes"))]
    async fn changes_since(
        &self,
        client_uri: String,
        seq: u64,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(u64, Vec<(String, String, u64)>), Error> {
        let uri = self.well_formed(&client_uri)?;
        let caller = self
            .access
            .authorize(&header, Action::Read, &client_uri)
            .await?;
        let (auth, who) = (self.auth.clone(), caller.principal.clone());
        let (current, changes) = store::offload(Lane::Interactive, move || {
            auth.changes_since(&who, &uri, seq)
        })
        .await??;
        Ok((
            current,
            changes
                .into_iter()
                .map(|c| (c.addr.to_string(), c.kind.as_str().to_owned(), c.seq))
                .collect(),
        ))
    }

    async fn grant(
        &self,
        instance_uri: String,
        principal: String,
        rights: Vec<String>,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), Error> {
        let rights = Rights::parse(rights.iter().map(String::as_str))
            .map_err(|e| Error::InvalidValue(e.to_string()))?;
        let to = principal.clone();
        let by = self
            .delegating(&header, Lane::Write, &instance_uri, move |auth, who, at| {
                auth.grant(who, at, &to, rights)
            })
            .await?
            .0;
        self.durable().await?;
        tracing::info!(by = %by, "granted {principal} {:?} on {instance_uri}", rights.names());
        Ok(())
    }

    async fn revoke(
        &self,
        instance_uri: String,
        principal: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), Error> {
        let to = principal.clone();
        let by = self
            .delegating(&header, Lane::Write, &instance_uri, move |auth, who, at| {
                auth.grant(who, at, &to, Rights::NONE)
            })
            .await?
            .0;
        self.durable().await?;
        tracing::info!(by = %by, "revoked {principal} on {instance_uri}");
        Ok(())
    }

    #[zbus(out_args("grants"))]
    async fn list_grants(
        &self,
        instance_uri: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<(String, Vec<String>)>, Error> {
        let grants = self
            .delegating(
                &header,
                Lane::Interactive,
                &instance_uri,
                |auth, who, at| auth.list_grants(who, at),
            )
            .await?
            .1;
        Ok(grants
            .into_iter()
            .map(|(p, r)| (p, r.names().into_iter().map(str::to_owned).collect()))
            .collect())
    }

    /// Applies the factory bootstrap file at `path` ([`crate::bootstrap`]). Only `manage`:
    /// omadmd reads the file as root.
    async fn bootstrap(
        &self,
        path: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), Error> {
        let caller = self.access.authorize(&header, Action::Manage, "").await?;
        let (bootstrap, file) = (self.bootstrap.clone(), PathBuf::from(&path));
        let written = store::offload(Lane::Write, move || bootstrap.apply_file(&file))
            .await?
            .map_err(file_error)?;
        self.durable().await?;
        tracing::info!(by = %caller.principal, "bootstrap file {path} applied: {} item(s)", written.len());
        Ok(())
    }

    /// Removes every MO instance but omadmd's own, and what servers left behind, then applies
    /// the bootstrap files again ([`Bootstrap::factory_reset`]). Refused while a DM session
    /// runs.
    async fn factory_reset(&self, #[zbus(header)] header: Header<'_>) -> Result<(), Error> {
        let caller = self.access.authorize(&header, Action::Manage, "").await?;
        let bootstrap = self.bootstrap.clone();
        let principal = caller.principal.clone();
        // No session runs, nor starts, while the tree is reset.
        let reset = self
            .scheduler
            .without_sessions(async move {
                tracing::warn!(by = %principal, "factory reset");
                store::offload(Lane::Write, move || bootstrap.factory_reset()).await
            })
            .await
            .map_err(|e| Error::Busy(format!("{e}; reset when it has ended")))??
            .map_err(AccessError::from)?;
        self.durable().await?;
        tracing::warn!(
            by = %caller.principal,
            "factory reset done: {} instance(s) removed, {} bootstrap file(s) applied, {} refused",
            reset.removed,
            reset.report.applied.len(),
            reset.report.refused.len()
        );
        Ok(())
    }

    /// Makes the calling connection the EXEC handler of `moid`'s nodes
    /// ([`super::exec_handlers`]): `Busy` when another connection is. Only `manage`.
    async fn register_exec_handler(
        &self,
        moid: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(), Error> {
        let moid = Moid::parse(&moid).map_err(|e| Error::InvalidUri(e.to_string()))?;
        let caller = self
            .access
            .authorize(&header, Action::Manage, &format!("{moid}/"))
            .await?;
        let name = sender(&header)?;
        self.exec_apps.register(conn, &name, &moid).await?;
        // A caller that left the bus while this call ran is forgotten already; so is this.
        if !self.access.knows(&name) {
            self.exec_apps.forget(&name);
        }
        tracing::info!(principal = %caller.principal, "{name} is the EXEC handler of {moid}");
        Ok(())
    }

    /// Ends the calling connection's registration as the EXEC handler of `moid`: `NotFound`
    /// when it holds none. Only `manage`.
    async fn unregister_exec_handler(
        &self,
        moid: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), Error> {
        let moid = Moid::parse(&moid).map_err(|e| Error::InvalidUri(e.to_string()))?;
        let caller = self
            .access
            .authorize(&header, Action::Manage, &format!("{moid}/"))
            .await?;
        let name = sender(&header)?;
        self.exec_apps.unregister(&name, &moid)?;
        tracing::info!(principal = %caller.principal, "{name} is no longer the EXEC handler of {moid}");
        Ok(())
    }

    #[zbus(out_args("session_id"))]
    async fn start_session(
        &self,
        server_id: String,
        reason: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, Error> {
        let caller = self
            .access
            .authorize(&header, Action::StartSession, "")
            .await?;
        let (srv, sid) = sessions::start(&self.scheduler, &server_id, &reason).await?;
        tracing::info!(by = %caller.principal, "session {sid} with {srv} requested");
        Ok(sid)
    }

    /// Sends a Generic Alert ([`crate::session::send_alert`] checks it and picks its
    /// server): kept for that server, then a session with it starts. Action `send-alert`,
    /// and `read` on the source node when one is named.
    #[allow(clippy::too_many_arguments)]
    async fn send_alert(
        &self,
        server_id: String,
        alert_type: String,
        source_uri: String,
        mark: String,
        data_type: String,
        data: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), Error> {
        let source = source_uri.clone();
        let checked = AlertRequest {
            server_id,
            alert_type,
            source_uri,
            mark,
            data_type,
            data,
        }
        .check()
        .map_err(alert_error)?;
        let caller = self
            .access
            .authorize(&header, Action::SendAlert, &source)
            .await?;
        if !source.is_empty() {
            self.access
                .authorize(&header, Action::Read, &source)
                .await?;
        }
        let alert_type = checked.alert.alert_type.clone();
        let srv = self
            .scheduler
            .send_alert(caller.principal.clone(), checked)
            .await
            .map_err(alert_error)?;
        tracing::info!(by = %caller.principal, "alert {alert_type} sent to {srv}");
        Ok(())
    }

    /// Suspends the large-object transfer whose object is `transfer`
    /// ([`super::transfers`]): its runner stops after saving where it is. Only `manage`.
    async fn suspend_transfer(
        &self,
        transfer: OwnedObjectPath,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), Error> {
        let (id, caller) = self.transfer_control(&transfer, &header).await?;
        self.transfers.suspend(id)?;
        tracing::info!(by = %caller, "transfer {id} suspended");
        Ok(())
    }

    /// Resumes the suspended transfer whose object is `transfer`. Only `manage`.
    async fn resume_transfer(
        &self,
        transfer: OwnedObjectPath,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), Error> {
        let (id, caller) = self.transfer_control(&transfer, &header).await?;
        self.transfers.resume(id)?;
        tracing::info!(by = %caller, "transfer {id} resumed");
        Ok(())
    }

    /// Detaches the gateway's child `key` ([`children::detach`]): its instances and inventory
    /// node go, and servers are told (`ChildDetached`, Reason `removed`). `NotFound` for a
    /// key the inventory does not hold (checked first: `Children` is public, and a wrong key
    /// costs no prompt). Only `manage`.
    async fn detach_child(
        &self,
        key: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), Error> {
        let inventory = children::holding(self.gateway.as_ref(), &key)?.clone();
        let caller = self.access.authorize(&header, Action::Manage, "").await?;
        children::detach(inventory, key.clone()).await?;
        self.durable().await?;
        tracing::info!(by = %caller.principal, "child {key} detached");
        Ok(())
    }

    /// One leaf's value as a read-only descriptor ([`super::value_fd`]), for a caller who
    /// may `Get` it, under the same rules (polkit `read`, then the MO access model).
    #[zbus(out_args("fd"))]
    async fn open_value(
        &self,
        client_uri: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<zbus::OwnedFd, Error> {
        let uri = self.well_formed(&client_uri)?;
        let reader = self.reader(&header, &client_uri, &uri.moid).await?;
        let open = || {
            let (auth, store) = (self.auth.clone(), self.store.clone());
            let (who, uri, asked) = (reader.clone(), uri.clone(), client_uri.clone());
            async move {
                // Opening a file is blocking work too: both on the store's lane.
                let fd = store::offload(Lane::Interactive, move || {
                    let found = auth.get(&who, &uri).map_err(OpenError::from)?;
                    value_fd::open(&asked, found, store.objects())
                })
                .await??;
                Ok::<_, Error>(zbus::OwnedFd::from(fd))
            }
        };
        match open().await {
            Err(Error::NotFound(_)) if self.fetched_default(&client_uri).await => open().await,
            other => other,
        }
    }

    /// A server's `SHOW`: offer `url` to the user. Broadcast; any desktop agent may act.
    #[zbus(signal)]
    async fn show(emitter: &SignalEmitter<'_>, server_id: &str, url: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn session_started(
        emitter: &SignalEmitter<'_>,
        server_id: &str,
        session_id: &str,
        reason: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn session_finished(
        emitter: &SignalEmitter<'_>,
        server_id: &str,
        session_id: &str,
        status: i32,
    ) -> zbus::Result<()>;

    /// Sent with a destination (the watcher) by [`super::watch::dispatch`]; declared here so
    /// that introspection shows it.
    #[zbus(signal)]
    async fn changed(
        emitter: &SignalEmitter<'_>,
        watch_id: u64,
        client_uri: &str,
        change: &str,
        seq: u64,
    ) -> zbus::Result<()>;

    #[zbus(property)]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }

    #[zbus(property)]
    fn dev_id(&self) -> String {
        self.dev_id.clone()
    }

    #[zbus(property)]
    fn features(&self) -> Vec<String> {
        crate::features::FEATURES
            .iter()
            .map(|f| (*f).to_owned())
            .collect()
    }

    /// The objects of the DM server accounts (`org.omadm.Client1.Server`).
    #[zbus(property)]
    fn servers(&self) -> Vec<zbus::OwnedObjectPath> {
        self.servers.paths()
    }

    /// The sessions in progress, as (server id, session id).
    #[zbus(property)]
    fn sessions(&self) -> Vec<(String, String)> {
        sessions::running(&self.scheduler)
    }

    #[zbus(property)]
    fn state(&self) -> String {
        super::network::properties(&self.scheduler, &self.network.borrow())
            .1
            .to_owned()
    }

    /// The access technology of the primary connection (`none` without one).
    #[zbus(property)]
    fn access_technology(&self) -> String {
        self.network.borrow().access_technology().to_owned()
    }

    /// The gateway's children ([`children`]): for every caller, as `State` is.
    #[zbus(property)]
    fn children(&self) -> Vec<children::Entry> {
        children::entries(self.gateway.as_deref())
    }
}

impl Client1 {
    /// The transfer id of the object path `transfer`, once polkit allows the caller `manage`
    /// (asked after the path is checked, so a wrong path costs no prompt); with the
    /// caller's principal.
    async fn transfer_control(
        &self,
        transfer: &OwnedObjectPath,
        header: &Header<'_>,
    ) -> Result<(u64, Principal), Error> {
        let id = transfers::id_of(transfer.as_str())
            .ok_or_else(|| Error::NotFound(format!("{transfer} is not a transfer object")))?;
        let caller = self.access.authorize(header, Action::Manage, "").await?;
        Ok((id, caller.principal))
    }

    /// Waits until the writes this call committed are on disk, sharing the sync with
    /// concurrent writers ([`Pool::durable`]): a caller told "done" never loses the change,
    /// power loss included.
    async fn durable(&self) -> Result<(), Error> {
        Ok(self.store.durable().await.map_err(AccessError::from)?)
    }

    /// Parses `client_uri` once, refusing a malformed ClientURI, or one beyond the `[limits]`
    /// of its shape, before anything else (polkit included) spends work on it. Looks at no
    /// MO data, so it tells the caller nothing it could not work out itself.
    fn well_formed(&self, client_uri: &str) -> Result<ClientUri, Error> {
        Ok(self.auth.query(client_uri)?.into_owned())
    }

    /// Who reads at `client_uri` (polkit `read`): the caller; for DM accounts, which only
    /// administrators see, the admin when polkit also authorizes `manage` for the caller (a
    /// non-root administrator listing or removing accounts). Without `manage`, the caller,
    /// to whom the accounts are not there.
    async fn reader(
        &self,
        header: &Header<'_>,
        client_uri: &str,
        moid: &str,
    ) -> Result<Principal, Error> {
        self.acting_as(header, client_uri, moid, Action::Read).await
    }

    /// Who a write to `client_uri` (an MO of `moid`) acts as: the caller, once polkit allows
    /// it `write`; for a DM account (which only administrators change), the admin, once
    /// polkit also allows it `manage` — without it, the write is refused.
    async fn writer(
        &self,
        header: &Header<'_>,
        client_uri: &str,
        moid: &str,
    ) -> Result<Principal, Error> {
        self.acting_as(header, client_uri, moid, Action::Write)
            .await
    }

    /// The principal a caller allowed `action` acts as on an MO of `moid`: itself, or for a
    /// DM account the admin when polkit also allows it `manage`. Without `manage` a reader
    /// stays itself (the accounts are not there for it); a writer is refused. A write to a
    /// DM account asks polkit for `manage` alone (the policy makes it imply `write`), so a
    /// caller who must authenticate is asked once.
    async fn acting_as(
        &self,
        header: &Header<'_>,
        client_uri: &str,
        moid: &str,
        action: Action,
    ) -> Result<Principal, Error> {
        if moid == builtin::DMACC && action != Action::Read {
            let caller = self
                .access
                .authorize(header, Action::Manage, client_uri)
                .await?;
            if caller.principal != Principal::Admin {
                tracing::info!(principal = %caller.principal, "changing a DM account as an administrator (polkit manage): {client_uri}");
            }
            return Ok(Principal::Admin);
        }
        let caller = self.access.authorize(header, action, client_uri).await?;
        if moid != builtin::DMACC || caller.principal == Principal::Admin {
            return Ok(caller.principal);
        }
        match self
            .access
            .authorize(header, Action::Manage, client_uri)
            .await
        {
            Ok(_) => Ok(Principal::Admin),
            Err(_) => Ok(caller.principal),
        }
    }

    /// Runs a grants operation on the instance at `instance_uri` (polkit `write`) as the
    /// caller, who needs Delegate on it; when it lacks that right, as the admin if polkit
    /// authorizes `manage` (which may grant on any instance). Returns who acted, and `op`'s
    /// answer.
    async fn delegating<T: Send + 'static>(
        &self,
        header: &Header<'_>,
        lane: Lane,
        instance_uri: &str,
        op: impl Fn(&Authority, &Principal, &ClientUri) -> Result<T, AccessError>
        + Clone
        + Send
        + 'static,
    ) -> Result<(Principal, T), Error> {
        let at = self.well_formed(instance_uri)?;
        let caller = self
            .access
            .authorize(header, Action::Write, instance_uri)
            .await?;
        let attempt = |who: Principal| {
            let (auth, at, op) = (self.auth.clone(), at.clone(), op.clone());
            store::offload(lane, move || op(&auth, &who, &at))
        };
        match attempt(caller.principal.clone()).await? {
            Ok(t) => Ok((caller.principal, t)),
            // An instance the caller cannot see is not there for it; only a caller polkit
            // lets manage learns otherwise.
            Err(e @ (AccessError::Denied(_) | AccessError::NotFound(_)))
                if caller.principal != Principal::Admin =>
            {
                if self
                    .access
                    .authorize(header, Action::Manage, instance_uri)
                    .await
                    .is_err()
                {
                    return Err(e.into());
                }
                tracing::info!(principal = %caller.principal, "managing grants as an administrator (polkit manage): {instance_uri}");
                Ok((Principal::Admin, attempt(Principal::Admin).await??))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// When `client_uri`'s MOID has no instance at all and a server named a `DEFAULT`
    /// source for it, fetches the MO from there; whether anything was fetched.
    async fn fetched_default(&self, client_uri: &str) -> bool {
        let Ok(uri) = ClientUri::parse(client_uri) else {
            return false;
        };
        if !self
            .auth
            .instances_of(&uri.moid)
            .is_ok_and(|m| m.is_empty())
        {
            return false;
        }
        match self.scheduler.fetch_default(&uri.moid).await {
            Ok(fetched) => fetched,
            Err(e) => {
                tracing::warn!("fetching {} from its DEFAULT source failed: {e}", uri.moid);
                false
            }
        }
    }
}

/// Why an alert was not sent, as a D-Bus error.
fn alert_error(e: AlertError) -> Error {
    let message = e.to_string();
    match e {
        AlertError::Invalid(_) => Error::InvalidValue(message),
        AlertError::Source(e) => Error::from(e),
        AlertError::NoAccounts | AlertError::NoAccount(_) => Error::NotFound(message),
        AlertError::NotVisible(_) => Error::NotAllowed(message),
        AlertError::Store(_) => {
            tracing::error!("SendAlert failed: {message}");
            Error::Failed(message)
        }
    }
}

/// Why a bootstrap file was not applied, as a D-Bus error.
fn file_error(e: FileError) -> Error {
    let message = e.to_string();
    match e {
        FileError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Error::NotFound(format!(
                "{message} (under its systemd unit omadmd does not see /home, /root or /tmp)"
            ))
        }
        FileError::Read { .. } => Error::Failed(message),
        FileError::Store(e) => Error::from(AccessError::from(e)),
        FileError::NotAbsolute { .. }
        | FileError::NotRegular { .. }
        | FileError::TooLarge { .. }
        | FileError::Refused { .. } => Error::InvalidValue(message),
    }
}

fn sender(header: &Header<'_>) -> Result<String, Error> {
    header
        .sender()
        .map(|s| s.to_string())
        .ok_or_else(|| Error::AccessDenied("message has no sender".into()))
}

/// The value `Set` was given, before the node's format is known: a string is the format's
/// text form (for `json`, JSON text); numbers, booleans and bytes are themselves;
/// dictionaries, other arrays, variants in the variant and integers beyond `i64` are JSON
/// ([`variant::to_json`]).
fn from_variant(value: Variant<'_>) -> Result<Input, Error> {
    Ok(match value {
        Variant::Str(s) => Input::Text(s.to_string()),
        Variant::Bool(b) => Input::Bool(b),
        Variant::I16(i) => Input::Int(i.into()),
        Variant::U16(i) => Input::Int(i.into()),
        Variant::I32(i) => Input::Int(i.into()),
        Variant::U32(i) => Input::Int(i.into()),
        Variant::I64(i) => Input::Int(i),
        Variant::U64(i) => match i64::try_from(i) {
            Ok(i) => Input::Int(i),
            Err(_) => Input::Json(i.into()),
        },
        Variant::F64(f) => Input::Float(f),
        Variant::U8(b) => Input::Int(b.into()),
        Variant::Array(a) if a.element_signature() == &Signature::U8 => Input::Bytes(
            Vec::<u8>::try_from(Variant::Array(a))
                .map_err(|e| Error::InvalidValue(format!("the byte array cannot be read: {e}")))?,
        ),
        json @ (Variant::Array(_) | Variant::Dict(_) | Variant::Variant(_)) => Input::Json(
            variant::to_json(&json).map_err(|e| Error::InvalidValue(format!("the value {e}")))?,
        ),
        other => {
            return Err(Error::InvalidValue(format!(
                "a value of D-Bus type {} cannot be set: give a string, number, boolean, byte \
                 array, or for a json node a dictionary a{{sv}} or an array",
                other.value_signature()
            )));
        }
    })
}
