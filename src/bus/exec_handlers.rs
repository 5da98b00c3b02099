//! Local apps as EXEC handlers (ARCHITECTURE.md §7): `RegisterExecHandler(s moid)` makes the
//! calling connection the handler of the EXECs of the MOID's nodes, until it calls
//! `UnregisterExecHandler(s moid)` or leaves the bus. Sessions reach it through
//! [`AppHandlers`]: omadmd calls `org.omadm.Client1.ExecHandler.Execute(s client_uri,
//! s data) -> (i status, s result)` ([`INTERFACE`]) at [`PATH`] on the connection
//! (`dbus/org.omadm.Client1.ExecHandler.xml`); what the answer becomes is the session's
//! business ([`crate::session::exec`]).
//!
//! Bounds: one connection per MOID — a second one gets `Busy` (unless the first has left the
//! bus unheard of: then it takes the MOID over); at most [`PER_CONNECTION`] MOIDs per
//! connection and [`TOTAL`] in all, beyond which a registration gets `NotAllowed`. A
//! registration whose connection the call finds gone is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::error::Error;
use crate::session::exec::{AppCall, AppError, AppHandlers};
use crate::tree::uri::Moid;

/// The object an EXEC handler serves [`INTERFACE`] at, on its own connection.
pub const PATH: &str = "/org/omadm/Client1/ExecHandler";
/// The interface an EXEC handler serves.
pub const INTERFACE: &str = "org.omadm.Client1.ExecHandler";
/// Most MOIDs one connection handles.
pub const PER_CONNECTION: usize = 16;
/// Most MOIDs with a registered handler.
pub const TOTAL: usize = 256;

/// Why a registration was refused or not found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("{moid}: another connection is its EXEC handler")]
    Busy { moid: String },
    #[error("{name} is the EXEC handler of {PER_CONNECTION} MOIDs already")]
    PerConnection { name: String },
    #[error("{TOTAL} MOIDs have an EXEC handler already")]
    Total,
    #[error("{moid}: {name} is not its EXEC handler")]
    NotRegistered { moid: String, name: String },
}

impl From<RegisterError> for Error {
    fn from(e: RegisterError) -> Self {
        let message = e.to_string();
        match e {
            RegisterError::Busy { .. } => Error::Busy(message),
            RegisterError::PerConnection { .. } | RegisterError::Total => {
                Error::NotAllowed(message)
            }
            RegisterError::NotRegistered { .. } => Error::NotFound(message),
        }
    }
}

/// Which connection (unique name) handles which MOID.
#[derive(Debug, Default)]
struct Registrations {
    by_moid: HashMap<String, String>,
    /// How many MOIDs each connection handles.
    per_name: HashMap<String, usize>,
}

impl Registrations {
    /// Makes `name` the handler of `moid`; already being it is no change.
    fn add(&mut self, name: &str, moid: &str) -> Result<(), RegisterError> {
        match self.by_moid.get(moid) {
            Some(holder) if holder == name => return Ok(()),
            Some(_) => return Err(RegisterError::Busy { moid: moid.into() }),
            None => {}
        }
        let held = self.per_name.get(name).copied().unwrap_or(0);
        if held >= PER_CONNECTION {
            return Err(RegisterError::PerConnection { name: name.into() });
        }
        if self.by_moid.len() >= TOTAL {
            return Err(RegisterError::Total);
        }
        self.by_moid.insert(moid.into(), name.into());
        self.per_name.insert(name.into(), held + 1);
        Ok(())
    }

    /// Ends `name`'s registration for `moid`.
    fn remove(&mut self, name: &str, moid: &str) -> Result<(), RegisterError> {
        if self.by_moid.get(moid).map(String::as_str) != Some(name) {
            return Err(RegisterError::NotRegistered {
                moid: moid.into(),
                name: name.into(),
            });
        }
        self.by_moid.remove(moid);
        if let Some(n) = self.per_name.get_mut(name) {
            *n -= 1;
            if *n == 0 {
                self.per_name.remove(name);
            }
        }
        Ok(())
    }

    /// Ends every registration of `name`; the MOIDs it handled.
    fn forget(&mut self, name: &str) -> Vec<String> {
        if self.per_name.remove(name).is_none() {
            return Vec::new();
        }
        let mut gone = Vec::new();
        self.by_moid.retain(|moid, holder| {
            let keep = holder != name;
            if !keep {
                gone.push(moid.clone());
            }
            keep
        });
        gone
    }

    fn holder(&self, moid: &str) -> Option<&String> {
        self.by_moid.get(moid)
    }
}

/// The registered EXEC handlers, and the connection omadmd calls them on.
#[derive(Debug, Default)]
pub struct ExecApps {
    registrations: Arc<Mutex<Registrations>>,
    /// The daemon's bus connection, known from the first registration on.
    conn: OnceLock<zbus::Connection>,
}

impl ExecApps {
    /// Makes the connection `name` the EXEC handler of `moid`; `conn` is the daemon's bus
    /// connection the registration came on. A holder that left the bus without the daemon
    /// hearing of it yet is replaced.
    pub async fn register(
        &self,
        conn: &zbus::Connection,
        name: &str,
        moid: &Moid,
    ) -> Result<(), Error> {
        let conn = self.conn.get_or_init(|| conn.clone());
        let holder = lock(&self.registrations)
            .holder(moid)
            .filter(|h| *h != name)
            .cloned();
        if let Some(holder) = holder
            && !on_bus(conn, &holder).await
        {
            self.forget(&holder);
        }
        lock(&self.registrations).add(name, moid)?;
        Ok(())
    }

    /// Ends `name`'s registration for `moid`; `NotFound` when it holds none.
    pub fn unregister(&self, name: &str, moid: &Moid) -> Result<(), Error> {
        lock(&self.registrations).remove(name, moid)?;
        Ok(())
    }

    /// Ends every registration of a connection that left the bus.
    pub fn forget(&self, name: &str) {
        for moid in lock(&self.registrations).forget(name) {
            tracing::info!("{name} left the bus: no longer the EXEC handler of {moid}");
        }
    }
}

impl AppHandlers for ExecApps {
    fn handles(&self, moid: &str) -> bool {
        lock(&self.registrations).holder(moid).is_some()
    }

    fn execute(&self, moid: &str, client_uri: &str, data: &str) -> AppCall {
        let holder = lock(&self.registrations).holder(moid).cloned();
        let (conn, registrations) = (self.conn.get().cloned(), Arc::clone(&self.registrations));
        let (moid, body) = (moid.to_owned(), (client_uri.to_owned(), data.to_owned()));
        Box::pin(async move {
            let (Some(name), Some(conn)) = (holder, conn) else {
                return Err(AppError::Gone(format!("no app is registered for {moid}")));
            };
            let reply = conn
                .call_method(Some(name.as_str()), PATH, Some(INTERFACE), "Execute", &body)
                .await;
            let answer = match reply {
                Ok(reply) => reply
                    .body()
                    .deserialize::<(i32, String)>()
                    .map_err(|e| AppError::Failed(format!("{name} answered Execute wrongly: {e}"))),
                Err(e) => Err(call_error(&name, e)),
            };
            if let Err(AppError::Gone(why)) = &answer
                && lock(&registrations).remove(&name, &moid).is_ok()
            {
                tracing::info!("{name} is no longer the EXEC handler of {moid}: {why}");
            }
            answer
        })
    }
}

/// A failed `Execute` call: gone when no one is there to answer it (the connection left,
/// disconnected before replying, or serves no EXEC handler), failed otherwise.
fn call_error(name: &str, e: zbus::Error) -> AppError {
    use zbus::fdo::Error as Fdo;
    let gone = matches!(&e, zbus::Error::FDO(f) if matches!(**f,
        Fdo::ServiceUnknown(_)
            | Fdo::NameHasNoOwner(_)
            | Fdo::NoReply(_)
            | Fdo::Disconnected(_)
            | Fdo::UnknownObject(_)
            | Fdo::UnknownInterface(_)
            | Fdo::UnknownMethod(_)));
    let message = format!("{name}: {e}");
    if gone {
        AppError::Gone(message)
    } else {
        AppError::Failed(message)
    }
}

/// Whether the unique name `name` is on the bus (the bus says so; when it cannot be asked,
/// assumed so).
async fn on_bus(conn: &zbus::Connection, name: &str) -> bool {
    let asked = async {
        let bus = zbus::fdo::DBusProxy::new(conn).await?;
        let name = zbus::names::BusName::try_from(name.to_owned())?;
        bus.name_has_owner(name).await.map_err(zbus::Error::from)
    };
    asked.await.unwrap_or(true)
}

fn lock(registrations: &Mutex<Registrations>) -> std::sync::MutexGuard<'_, Registrations> {
    // A panic under the lock leaves the maps whole: each change is one insert or remove.
    registrations.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_connection_per_moid_until_it_unregisters_or_leaves() {
        let mut r = Registrations::default();
        r.add(":1.1", "urn:a:1.0").unwrap();
        r.add(":1.1", "urn:a:1.0").unwrap();
        assert_eq!(
            r.add(":1.2", "urn:a:1.0"),
            Err(RegisterError::Busy {
                moid: "urn:a:1.0".into()
            })
        );
        assert!(matches!(
            r.remove(":1.2", "urn:a:1.0"),
            Err(RegisterError::NotRegistered { .. })
        ));
        r.add(":1.1", "urn:b:1.0").unwrap();
        r.remove(":1.1", "urn:a:1.0").unwrap();
        r.add(":1.2", "urn:a:1.0").unwrap();
        assert_eq!(r.holder("urn:a:1.0").unwrap(), ":1.2");
        assert_eq!(r.forget(":1.1"), ["urn:b:1.0"]);
        assert!(r.holder("urn:b:1.0").is_none());
        assert!(r.forget(":1.1").is_empty());
        assert_eq!(r.per_name.get(":1.2"), Some(&1));
        r.remove(":1.2", "urn:a:1.0").unwrap();
        assert!(r.by_moid.is_empty() && r.per_name.is_empty());
    }

    #[test]
    fn registrations_are_bounded_per_connection_and_in_all() {
        let mut r = Registrations::default();
        for i in 0..PER_CONNECTION {
            r.add(":1.1", &format!("urn:m{i}:1.0")).unwrap();
        }
        assert_eq!(
            r.add(":1.1", "urn:more:1.0"),
            Err(RegisterError::PerConnection {
                name: ":1.1".into()
            })
        );
        r.add(":1.1", "urn:m0:1.0").unwrap();
        let mut n = PER_CONNECTION;
        'fill: for c in 2.. {
            for i in 0..PER_CONNECTION {
                if n == TOTAL {
                    break 'fill;
                }
                r.add(&format!(":1.{c}"), &format!("urn:c{c}m{i}:1.0"))
                    .unwrap();
                n += 1;
            }
        }
        assert_eq!(r.add(":9.9", "urn:last:1.0"), Err(RegisterError::Total));
        r.forget(":1.1");
        r.add(":9.9", "urn:last:1.0").unwrap();
    }

    #[test]
    fn refusals_are_the_bus_errors_of_the_contract() {
        let busy = Error::from(RegisterError::Busy {
            moid: "urn:a:1.0".into(),
        });
        assert!(matches!(busy, Error::Busy(m) if m.contains("urn:a:1.0")));
        assert!(matches!(
            Error::from(RegisterError::Total),
            Error::NotAllowed(_)
        ));
        assert!(matches!(
            Error::from(RegisterError::NotRegistered {
                moid: "m".into(),
                name: "n".into()
            }),
            Error::NotFound(_)
        ));
    }
}
