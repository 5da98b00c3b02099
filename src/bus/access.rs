//! The first authorization layer: who is the caller, and may it use a polkit action at
//! all. A bus connection is identified when it first calls ([`super::peer`]) and keeps
//! that identity until it leaves the bus: uid 0 acts as the admin and is always
//! authorized, an app the platform names is `app:<id>`, any other caller `uid:<n>`. When a
//! unique name was first seen (its `NameOwnerChanged`, or its first call) is recorded, so
//! that a pid which changed hands since does not lend the connection its identity.
//!
//! polkit's "yes" for read-type actions (`read`, `watch`) is cached per connection until
//! the caller leaves the bus, as SHA-256 digests of action and ClientURI, at most
//! `[limits] auth_cache_bytes_per_caller` bytes of them. When polkit cannot be reached, the
//! answer is no (fail closed).

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};
use zbus::message::Header;
use zbus::names::BusName;
use zbus_polkit::policykit1::{AuthorityProxy, CheckAuthorizationFlags, Subject};

use super::error::Error;
use super::peer::{Credentials, Peer, Procfs};
use crate::authority::Principal;
use crate::config::Limits;
use crate::store::{self, Lane};

/// The polkit actions of ARCHITECTURE.md §1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Read,
    Write,
    Watch,
    SendAlert,
    StartSession,
    Manage,
}

/// An authorized caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub principal: Principal,
    pub peer: Peer,
}

/// A cached polkit "yes": the digest of an action and a ClientURI.
type Answer = [u8; 32];

/// One caller's cached "yes" answers, held to a number of bytes.
#[derive(Default)]
struct Answers(HashSet<Answer>);

impl Answers {
    /// Keeps `key`, within `max_bytes` of answers: a full cache is emptied first.
    fn remember(&mut self, key: Answer, max_bytes: usize) {
        let per_answer = std::mem::size_of::<Answer>();
        if (self.0.len() + 1) * per_answer > max_bytes {
            self.0.clear();
        }
        if per_answer <= max_bytes {
            self.0.insert(key);
        }
    }

    fn contains(&self, key: &Answer) -> bool {
        self.0.contains(key)
    }
}

/// Caller identification and polkit checks for one bus connection.
pub struct Access {
    conn: zbus::Connection,
    procfs: Procfs,
    /// Bytes of cached answers one caller may hold.
    cache_bytes: usize,
    callers: Mutex<HashMap<String, Known>>,
    /// The polkit proxy, made on first use.
    polkit: tokio::sync::OnceCell<AuthorityProxy<'static>>,
}

/// What the daemon knows of one bus connection, by its unique name.
struct Known {
    /// When the name was first seen, in clock ticks since boot.
    first_seen: Option<u64>,
    /// Its identity, once it has called.
    peer: Option<Peer>,
    /// polkit's cached "yes" answers.
    yes: Answers,
}

impl Action {
    /// The polkit action id.
    pub fn id(self) -> &'static str {
        match self {
            Action::Read => "org.omadm.client1.read",
            Action::Write => "org.omadm.client1.write",
            Action::Watch => "org.omadm.client1.watch",
            Action::SendAlert => "org.omadm.client1.send-alert",
            Action::StartSession => "org.omadm.client1.start-session",
            Action::Manage => "org.omadm.client1.manage",
        }
    }

    fn cacheable(self) -> bool {
        matches!(self, Action::Read | Action::Watch)
    }
}

/// The principal a caller acts as.
fn principal(peer: &Peer) -> Principal {
    match (&peer.app_id, peer.uid) {
        (_, 0) => Principal::Admin,
        (Some(app), _) => Principal::App(app.clone()),
        (None, uid) => Principal::User(uid),
    }
}

/// The earlier of two moments, either of which may be unknown.
fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The cache key of `action` on `client_uri`: the ClientURI as far as authorization cares
/// (without `cv=` fields, which only say what the caller already has), digested.
fn answer(action: Action, client_uri: &str) -> Answer {
    let mut digest = Sha256::new();
    digest.update(action.id());
    digest.update([0]);
    match client_uri.split_once('?') {
        None => digest.update(client_uri),
        Some((path, query)) => {
            digest.update(path);
            let mut sep = "?";
            for field in query.split('&').filter(|f| !f.starts_with("cv=")) {
                digest.update(sep);
                digest.update(field);
                sep = "&";
            }
        }
    }
    digest.finalize().into()
}

impl Access {
    pub fn new(conn: zbus::Connection, limits: &Limits) -> Access {
        Access {
            conn,
            procfs: Procfs::new("/proc"),
            cache_bytes: limits.auth_cache_bytes_per_caller,
            callers: Mutex::new(HashMap::new()),
            polkit: tokio::sync::OnceCell::new(),
        }
    }

    /// Records that `unique_name` is on the bus now, unless it was seen earlier.
    pub fn seen(&self, unique_name: &str) {
        if self.lock().contains_key(unique_name) {
            return;
        }
        let now = self.procfs.now_ticks();
        self.lock()
            .entry(unique_name.to_owned())
            .and_modify(|k| k.first_seen = earliest(k.first_seen, now))
            .or_insert_with(|| {
                tracing::debug!("{unique_name} first seen");
                Known {
                    first_seen: now,
                    peer: None,
                    yes: Answers::default(),
                }
            });
    }

    /// Whether `unique_name` is still known (it has not left the bus).
    pub fn knows(&self, unique_name: &str) -> bool {
        self.lock().contains_key(unique_name)
    }

    /// Identifies the sender of `header` and checks `action` with polkit, passing the
    /// details `client_uri`, `moid`, `principal` and `app_id` for rules to use.
    pub async fn authorize(
        &self,
        header: &Header<'_>,
        action: Action,
        client_uri: &str,
    ) -> Result<Caller, Error> {
        let sender = header
            .sender()
            .ok_or_else(|| Error::AccessDenied("message has no sender".into()))?
            .to_string();
        let peer = self.peer(&sender).await?;
        let caller = Caller {
            principal: principal(&peer),
            peer,
        };
        if caller.principal == Principal::Admin {
            return Ok(caller);
        }
        let key = answer(action, client_uri);
        let cached = action.cacheable()
            && self
                .lock()
                .get(&sender)
                .is_some_and(|k| k.yes.contains(&key));
        if !cached {
            self.polkit(header, action, client_uri, &caller).await?;
            if action.cacheable() {
                self.remember(&sender, key);
            }
        }
        Ok(caller)
    }

    /// Forgets everything about a connection that left the bus.
    pub fn forget(&self, unique_name: &str) {
        self.lock().remove(unique_name);
    }

    /// Caches a "yes" for a caller still on the bus; a full cache is emptied first.
    fn remember(&self, sender: &str, key: Answer) {
        if let Some(known) = self.lock().get_mut(sender) {
            known.yes.remember(key, self.cache_bytes);
        }
    }

    /// The identity of `sender`, established on its first call and kept from then on.
    async fn peer(&self, sender: &str) -> Result<Peer, Error> {
        self.seen(sender);
        let first_seen = match self.lock().get(sender) {
            Some(Known {
                peer: Some(peer), ..
            }) => return Ok(peer.clone()),
            Some(known) => known.first_seen,
            // It left the bus meanwhile.
            None => None,
        };
        let creds = match self.credentials(sender, first_seen).await {
            Ok(c) => c,
            Err(e) => {
                // Gone from the bus: whatever `seen` recorded must not outlive it.
                if matches!(e, zbus::fdo::Error::NameHasNoOwner(_)) {
                    self.forget(sender);
                }
                return Err(Error::AccessDenied(format!(
                    "cannot identify {sender}: {e}"
                )));
            }
        };
        let (uid, pid) = (creds.uid, creds.pid);
        let app_id = if uid == 0 {
            None
        } else {
            let procfs = self.procfs.clone();
            let found = store::offload(Lane::Interactive, move || procfs.app_id(&creds)).await?;
            found.unwrap_or_else(|why| {
                tracing::info!("{sender} acts as uid:{uid}, not as the app of its pid: {why}");
                None
            })
        };
        let peer = Peer { uid, pid, app_id };
        tracing::debug!(%sender, pid, principal = %principal(&peer), "identified");
        // Fixed per connection: a concurrent first call may have settled it already.
        Ok(match self.lock().get_mut(sender) {
            Some(known) => known.peer.get_or_insert(peer).clone(),
            None => peer,
        })
    }

    /// What the bus says about `sender`.
    async fn credentials(
        &self,
        sender: &str,
        first_seen: Option<u64>,
    ) -> Result<Credentials, zbus::fdo::Error> {
        let dbus = zbus::fdo::DBusProxy::new(&self.conn).await?;
        let name =
            BusName::try_from(sender).map_err(|e| zbus::fdo::Error::InvalidArgs(e.to_string()))?;
        let creds = dbus.get_connection_credentials(name).await?;
        let (Some(uid), Some(pid)) = (creds.unix_user_id(), creds.process_id()) else {
            return Err(zbus::fdo::Error::Failed(
                "the bus reports no uid and pid".into(),
            ));
        };
        Ok(Credentials {
            uid,
            pid,
            pidfd: creds.into_process_fd().map(OwnedFd::from),
            first_seen,
        })
    }

    async fn polkit(
        &self,
        header: &Header<'_>,
        action: Action,
        client_uri: &str,
        caller: &Caller,
    ) -> Result<(), Error> {
        let who = caller.principal.to_string();
        let denied = |why: String| {
            tracing::info!(principal = %who, uid = caller.peer.uid, action = action.id(), client_uri, "denied: {why}");
            Error::AccessDenied(format!(
                "{who} is not authorized for {}: {why}",
                action.id()
            ))
        };
        let subject = Subject::new_for_message_header(header).map_err(|e| denied(e.to_string()))?;
        let moid = client_uri.split('/').next().unwrap_or_default();
        let details = HashMap::from([
            ("client_uri", client_uri),
            ("moid", moid),
            ("principal", who.as_str()),
            ("app_id", caller.peer.app_id.as_deref().unwrap_or_default()),
        ]);
        let authority = self
            .polkit
            .get_or_try_init(|| AuthorityProxy::new(&self.conn))
            .await
            .map_err(|e| denied(format!("polkit unreachable ({e})")))?;
        let result = authority
            .check_authorization(
                &subject,
                action.id(),
                &details,
                CheckAuthorizationFlags::empty(),
                "",
            )
            .await
            .map_err(|e| denied(format!("polkit unreachable ({e})")))?;
        if result.is_authorized {
            Ok(())
        } else if result.is_challenge {
            Err(denied("authentication required".into()))
        } else {
            Err(denied("not allowed by policy".into()))
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        self.callers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_cache_stays_within_its_bytes() {
        let mut answers = Answers::default();
        let key = |n: u8| [n; 32];
        for n in 0..10 {
            answers.remember(key(n), 100);
            assert!(answers.0.len() * 32 <= 100, "after {n}");
            assert!(answers.contains(&key(n)), "the newest answer is kept");
        }
        let mut none = Answers::default();
        none.remember(key(1), 16);
        assert!(!none.contains(&key(1)), "no room for even one answer");
    }

    #[test]
    fn cache_validators_do_not_split_the_cache() {
        let read = |uri| answer(Action::Read, uri);
        assert_eq!(read("urn:a:1.0//X?cv=1"), read("urn:a:1.0//X"));
        assert_eq!(
            read("urn:a:1.0/(x)/?nv=(x)/ID:1&cv=2"),
            read("urn:a:1.0/(x)/?nv=(x)/ID:1")
        );
        assert_ne!(read("urn:a:1.0//X"), read("urn:a:1.0//Y"));
        assert_ne!(read("urn:a:1.0//X"), answer(Action::Watch, "urn:a:1.0//X"));
    }

    #[test]
    fn callers_are_admin_app_or_user() {
        let peer = |uid, app: Option<&str>| Peer {
            uid,
            pid: 1,
            app_id: app.map(str::to_owned),
        };
        assert_eq!(principal(&peer(0, Some("x.service"))), Principal::Admin);
        assert_eq!(
            principal(&peer(1000, Some("x.service"))),
            Principal::App("x.service".into())
        );
        assert_eq!(principal(&peer(1000, None)), Principal::User(1000));
    }
}
