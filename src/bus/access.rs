//! The first authorization layer: who is the caller, and may it use a polkit action at
//! all. Identities are looked up once per connection; polkit's "yes" for read-type
//! actions (`read`, `watch`) is cached per connection, action and ClientURI until the
//! caller leaves the bus. uid 0 is always authorized and acts as the admin; everyone else
//! is `app:<app id>`. When polkit cannot be reached, the answer is no (fail closed).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;

use zbus::message::Header;
use zbus::names::BusName;
use zbus_polkit::policykit1::{AuthorityProxy, CheckAuthorizationFlags, Subject};

use super::error::Error;
use super::peer::{self, Peer};
use crate::authority::Principal;

/// The polkit actions of ARCHITECTURE.md §1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Read,
    Write,
    Watch,
    StartSession,
    Manage,
}

/// An authorized caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub principal: Principal,
    pub peer: Peer,
}

/// Caller identification and polkit checks for one bus connection.
pub struct Access {
    conn: zbus::Connection,
    proc_root: PathBuf,
    peers: Mutex<HashMap<String, Peer>>,
    yes: Mutex<HashSet<(String, Action, String)>>,
    /// The polkit proxy, made on first use.
    polkit: tokio::sync::OnceCell<AuthorityProxy<'static>>,
}

/// Cached "yes" answers per caller before its cache is emptied (callers cannot grow the
/// cache without bound by varying ClientURIs).
const MAX_CACHED_PER_CALLER: usize = 256;

/// The ClientURI as far as authorization cares: without `cv=` fields, which only say what
/// the caller already has.
fn cache_key(client_uri: &str) -> String {
    match client_uri.split_once('?') {
        None => client_uri.to_owned(),
        Some((path, query)) => {
            let kept: Vec<&str> = query.split('&').filter(|f| !f.starts_with("cv=")).collect();
            if kept.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
    }
}

impl Action {
    /// The polkit action id.
    pub fn id(self) -> &'static str {
        match self {
            Action::Read => "org.omadm.client1.read",
            Action::Write => "org.omadm.client1.write",
            Action::Watch => "org.omadm.client1.watch",
            Action::StartSession => "org.omadm.client1.start-session",
            Action::Manage => "org.omadm.client1.manage",
        }
    }

    fn cacheable(self) -> bool {
        matches!(self, Action::Read | Action::Watch)
    }
}

impl Access {
    pub fn new(conn: zbus::Connection) -> Access {
        Access {
            conn,
            proc_root: PathBuf::from("/proc"),
            peers: Mutex::new(HashMap::new()),
            yes: Mutex::new(HashSet::new()),
            polkit: tokio::sync::OnceCell::new(),
        }
    }

    /// Identifies the sender of `header` and checks `action` with polkit, passing the
    /// details `client_uri`, `moid` and `app_id` for rules to use.
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
        if peer.uid == 0 {
            return Ok(Caller {
                principal: Principal::Admin,
                peer,
            });
        }
        let key = (sender.clone(), action, cache_key(client_uri));
        let cached = action.cacheable() && self.lock_yes().contains(&key);
        if !cached {
            self.polkit(header, action, client_uri, &peer).await?;
            if action.cacheable() {
                let mut yes = self.lock_yes();
                if yes.iter().filter(|(s, _, _)| *s == sender).count() >= MAX_CACHED_PER_CALLER {
                    yes.retain(|(s, _, _)| *s != sender);
                }
                yes.insert(key);
            }
        }
        Ok(Caller {
            principal: Principal::App(peer.app_id.clone()),
            peer,
        })
    }

    /// Forgets everything about a connection that left the bus.
    pub fn forget(&self, unique_name: &str) {
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(unique_name);
        self.lock_yes().retain(|(s, _, _)| s != unique_name);
    }

    async fn peer(&self, sender: &str) -> Result<Peer, Error> {
        if let Some(p) = self
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sender)
        {
            return Ok(p.clone());
        }
        let dbus = zbus::fdo::DBusProxy::new(&self.conn).await?;
        let name = BusName::try_from(sender).map_err(|e| Error::Failed(e.to_string()))?;
        let creds = dbus
            .get_connection_credentials(name)
            .await
            .map_err(|e| Error::AccessDenied(format!("cannot identify {sender}: {e}")))?;
        let (Some(uid), Some(pid)) = (creds.unix_user_id(), creds.process_id()) else {
            return Err(Error::AccessDenied(format!(
                "the bus reports no uid/pid for {sender}"
            )));
        };
        let app_id = peer::app_id(&self.proc_root, pid).ok_or_else(|| {
            Error::AccessDenied(format!(
                "cannot identify the application behind {sender} (pid {pid})"
            ))
        })?;
        let p = Peer { uid, pid, app_id };
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sender.to_owned(), p.clone());
        Ok(p)
    }

    async fn polkit(
        &self,
        header: &Header<'_>,
        action: Action,
        client_uri: &str,
        peer: &Peer,
    ) -> Result<(), Error> {
        let denied = |why: String| {
            tracing::info!(app_id = %peer.app_id, uid = peer.uid, action = action.id(), client_uri, "denied: {why}");
            Error::AccessDenied(format!(
                "{} is not authorized for {}: {why}",
                peer.app_id,
                action.id()
            ))
        };
        let subject = Subject::new_for_message_header(header).map_err(|e| denied(e.to_string()))?;
        let moid = client_uri.split('/').next().unwrap_or_default();
        let details = HashMap::from([
            ("client_uri", client_uri),
            ("moid", moid),
            ("app_id", peer.app_id.as_str()),
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

    fn lock_yes(&self) -> std::sync::MutexGuard<'_, HashSet<(String, Action, String)>> {
        self.yes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::cache_key;

    #[test]
    fn cache_validators_do_not_split_the_cache() {
        assert_eq!(cache_key("urn:a:1.0//X?cv=1"), "urn:a:1.0//X");
        assert_eq!(
            cache_key("urn:a:1.0/(x)/?nv=(x)/ID:1&cv=2"),
            "urn:a:1.0/(x)/?nv=(x)/ID:1"
        );
        assert_eq!(cache_key("urn:a:1.0//X"), "urn:a:1.0//X");
    }
}
