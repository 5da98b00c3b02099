//! What DM sessions leave behind for later: alerts waiting for delivery, `DEFAULT` sources,
//! `SUB` subscriptions, when each polled server's next session is due, and the asynchronous
//! EXECs whose handler runs. Plain rows; the session engine and scheduler give them meaning.

use rusqlite::params;

use super::{Store, StoreError, Txn};

/// A persisted alert (its JSON text) for a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingAlert {
    pub id: i64,
    pub srv_id: String,
    pub alert_json: String,
}

/// When a polled server's next session is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollDue {
    /// POSIX seconds.
    pub due: i64,
    /// The `PollSeconds` the due time was set with.
    pub every: i64,
}

/// An asynchronous EXEC whose handler was started and whose result is not queued yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsyncExec {
    pub id: i64,
    pub srv_id: String,
    /// The executed node.
    pub client_uri: String,
    /// Where the result alert goes (the EXEC's ServerURI).
    pub target_uri: String,
}

/// A `SUB` subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub srv_id: String,
    pub client_uri: String,
    pub server_uri: String,
    /// Its last delivery failed: the subtree's current state is owed to the server.
    pub owed: bool,
}

impl Store {
    /// Alerts waiting for `srv_id`, oldest first.
    pub fn pending_alerts(&self, srv_id: &str) -> Result<Vec<PendingAlert>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, alert FROM pending_alerts WHERE srv_id = ?1 ORDER BY id")
            .map_err(StoreError::db("preparing the pending alerts query"))?;
        let rows = stmt
            .query_map([srv_id], |r| {
                Ok(PendingAlert {
                    id: r.get(0)?,
                    srv_id: srv_id.to_owned(),
                    alert_json: r.get(1)?,
                })
            })
            .map_err(StoreError::db("reading pending alerts"))?;
        rows.collect::<Result<_, _>>()
            .map_err(StoreError::db("reading pending alerts"))
    }

    /// The asynchronous EXECs started and not finished, oldest first.
    pub fn async_execs(&self) -> Result<Vec<AsyncExec>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, srv_id, client_uri, target_uri FROM async_execs ORDER BY id",
            )
            .map_err(StoreError::db("preparing the asynchronous EXEC query"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(AsyncExec {
                    id: r.get(0)?,
                    srv_id: r.get(1)?,
                    client_uri: r.get(2)?,
                    target_uri: r.get(3)?,
                })
            })
            .map_err(StoreError::db("reading asynchronous EXECs"))?;
        rows.collect::<Result<_, _>>()
            .map_err(StoreError::db("reading asynchronous EXECs"))
    }

    /// Where waiting alerts go: each server with alerts waiting, with each distinct
    /// `TargetURI` among them (`None`: alerts for no particular URI).
    pub fn pending_alert_targets(&self) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT DISTINCT srv_id, json_extract(alert, '$.TargetURI') FROM pending_alerts \
                 WHERE json_valid(alert) ORDER BY 1, 2",
            )
            .map_err(StoreError::db("preparing the pending alert targets query"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(StoreError::db("reading pending alert targets"))?;
        rows.collect::<Result<_, _>>()
            .map_err(StoreError::db("reading pending alert targets"))
    }

    /// Every subscription.
    pub fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT srv_id, client_uri, server_uri, owed FROM subscriptions ORDER BY srv_id, client_uri")
            .map_err(StoreError::db("preparing the subscriptions query"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Subscription {
                    srv_id: r.get(0)?,
                    client_uri: r.get(1)?,
                    server_uri: r.get(2)?,
                    owed: r.get(3)?,
                })
            })
            .map_err(StoreError::db("reading subscriptions"))?;
        rows.collect::<Result<_, _>>()
            .map_err(StoreError::db("reading subscriptions"))
    }

    /// When `srv_id` last completed a session (POSIX seconds), if ever.
    pub fn last_session(&self, srv_id: &str) -> Result<Option<i64>, StoreError> {
        use rusqlite::OptionalExtension as _;
        self.conn
            .prepare_cached("SELECT last FROM server_sessions WHERE srv_id = ?1")
            .and_then(|mut s| s.query_row([srv_id], |r| r.get(0)).optional())
            .map_err(StoreError::db("reading the last session"))
    }

    /// Every server's next poll, by server id.
    pub fn poll_due(&self) -> Result<Vec<(String, PollDue)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT srv_id, due, every FROM poll_due ORDER BY srv_id")
            .map_err(StoreError::db("preparing the poll query"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    PollDue {
                        due: r.get(1)?,
                        every: r.get(2)?,
                    },
                ))
            })
            .map_err(StoreError::db("reading poll due times"))?;
        rows.collect::<Result<_, _>>()
            .map_err(StoreError::db("reading poll due times"))
    }

    /// The `DEFAULT` source of `moid`: (server id, ServerURI).
    pub fn default_source(&self, moid: &str) -> Result<Option<(String, String)>, StoreError> {
        use rusqlite::OptionalExtension as _;
        self.conn
            .prepare_cached("SELECT srv_id, server_uri FROM defaults WHERE moid = ?1")
            .and_then(|mut s| {
                s.query_row([moid], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(StoreError::db("reading a default source"))
    }
}

impl Txn<'_> {
    /// Keeps an alert for a later session with `srv_id`, and at most `keep` of its alerts
    /// in all: older ones beyond that are dropped. Returns how many were dropped.
    pub fn queue_alert(
        &mut self,
        srv_id: &str,
        alert_json: &str,
        keep: usize,
    ) -> Result<usize, StoreError> {
        self.execute(
            "INSERT INTO pending_alerts (srv_id, alert, at) VALUES (?1, ?2, ?3)",
            params![srv_id, alert_json, self.now()],
            "queueing an alert",
        )?;
        self.tx()
            .execute(
                "DELETE FROM pending_alerts WHERE srv_id = ?1 AND id NOT IN \
                 (SELECT id FROM pending_alerts WHERE srv_id = ?1 ORDER BY id DESC LIMIT ?2)",
                params![srv_id, i64::try_from(keep).unwrap_or(i64::MAX)],
            )
            .map_err(StoreError::db("dropping the oldest pending alerts"))
    }

    /// Records that an asynchronous EXEC of `client_uri` for `srv_id`, its result to go to
    /// `target_uri`, is about to start its handler. Returns its id.
    pub fn begin_exec(
        &mut self,
        srv_id: &str,
        client_uri: &str,
        target_uri: &str,
    ) -> Result<i64, StoreError> {
        self.execute(
            "INSERT INTO async_execs (srv_id, client_uri, target_uri, started) \
             VALUES (?1, ?2, ?3, ?4)",
            params![srv_id, client_uri, target_uri, self.now()],
            "recording an asynchronous EXEC",
        )?;
        Ok(self.tx().last_insert_rowid())
    }

    /// Asynchronous EXEC `id` is over: queues its result alert for `srv_id` (as
    /// [`Txn::queue_alert`] does, keeping at most `keep`) and forgets the EXEC, both or
    /// neither. Returns how many older alerts were dropped.
    pub fn finish_exec(
        &mut self,
        id: i64,
        srv_id: &str,
        alert_json: &str,
        keep: usize,
    ) -> Result<usize, StoreError> {
        self.execute(
            "DELETE FROM async_execs WHERE id = ?1",
            params![id],
            "forgetting a finished asynchronous EXEC",
        )?;
        self.queue_alert(srv_id, alert_json, keep)
    }

    /// Forgets alerts that were delivered.
    pub fn drop_alerts(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        for id in ids {
            self.execute(
                "DELETE FROM pending_alerts WHERE id = ?1",
                params![id],
                "dropping a delivered alert",
            )?;
        }
        Ok(())
    }

    /// Sets the `DEFAULT` source of `moid` to `srv_id`'s `server_uri`, unless another
    /// server's source is recorded for it: that one is replaced only when it is
    /// `replaceable`'s (a server whose account is gone). Returns whether it was set.
    pub fn set_default_source(
        &mut self,
        moid: &str,
        srv_id: &str,
        server_uri: &str,
        replaceable: Option<&str>,
    ) -> Result<bool, StoreError> {
        let changed = self
            .tx()
            .execute(
                "INSERT INTO defaults (moid, srv_id, server_uri) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (moid) DO UPDATE SET srv_id = excluded.srv_id, server_uri = excluded.server_uri \
                 WHERE defaults.srv_id IN (excluded.srv_id, ?4)",
                params![moid, srv_id, server_uri, replaceable.unwrap_or(srv_id)],
            )
            .map_err(StoreError::db("recording a default source"))?;
        Ok(changed > 0)
    }

    /// Records that `srv_id` completed a session now.
    pub fn record_session(&mut self, srv_id: &str) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO server_sessions (srv_id, last) VALUES (?1, ?2) \
             ON CONFLICT (srv_id) DO UPDATE SET last = excluded.last",
            params![srv_id, self.now()],
            "recording a session",
        )
    }

    /// Forgets that `srv_id` ever had a session (its account is gone: one added again under
    /// the same SrvID is new, and its first session carries `BootstrapComplete`).
    pub fn forget_sessions(&mut self, srv_id: &str) -> Result<(), StoreError> {
        self.execute(
            "DELETE FROM server_sessions WHERE srv_id = ?1",
            params![srv_id],
            "forgetting a server's sessions",
        )
    }

    /// Adds or replaces a subscription, unless it is new and `srv_id` already holds `max`.
    /// Returns whether it was recorded.
    pub fn subscribe(
        &mut self,
        srv_id: &str,
        client_uri: &str,
        server_uri: &str,
        max: usize,
    ) -> Result<bool, StoreError> {
        let (held, this): (i64, i64) = self
            .tx()
            .query_row(
                "SELECT count(*), coalesce(sum(client_uri = ?2), 0) FROM subscriptions WHERE srv_id = ?1",
                params![srv_id, client_uri],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(StoreError::db("counting subscriptions"))?;
        if this == 0 && usize::try_from(held).unwrap_or(usize::MAX) >= max {
            return Ok(false);
        }
        self.execute(
            "INSERT INTO subscriptions (srv_id, client_uri, server_uri) VALUES (?1, ?2, ?3) \
             ON CONFLICT (srv_id, client_uri) DO UPDATE SET server_uri = excluded.server_uri",
            params![srv_id, client_uri, server_uri],
            "recording a subscription",
        )?;
        Ok(true)
    }

    /// Sets when `srv_id`'s next poll is due.
    pub fn set_poll_due(&mut self, srv_id: &str, due: PollDue) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO poll_due (srv_id, due, every) VALUES (?1, ?2, ?3) \
             ON CONFLICT (srv_id) DO UPDATE SET due = excluded.due, every = excluded.every",
            params![srv_id, due.due, due.every],
            "recording a poll due time",
        )
    }

    /// Forgets `srv_id`'s poll (it is no longer polled).
    pub fn clear_poll_due(&mut self, srv_id: &str) -> Result<(), StoreError> {
        self.execute(
            "DELETE FROM poll_due WHERE srv_id = ?1",
            params![srv_id],
            "forgetting a poll due time",
        )
    }

    /// Records whether the subscription's current state is owed to its server (its last
    /// delivery failed) or not (it was delivered).
    pub fn set_owed(
        &mut self,
        srv_id: &str,
        client_uri: &str,
        owed: bool,
    ) -> Result<(), StoreError> {
        self.execute(
            "UPDATE subscriptions SET owed = ?3 WHERE srv_id = ?1 AND client_uri = ?2",
            params![srv_id, client_uri, owed],
            "recording a subscription's delivery",
        )
    }

    /// Removes a subscription; whether there was one.
    pub fn unsubscribe(&mut self, srv_id: &str, client_uri: &str) -> Result<bool, StoreError> {
        let n = self
            .tx()
            .execute(
                "DELETE FROM subscriptions WHERE srv_id = ?1 AND client_uri = ?2",
                params![srv_id, client_uri],
            )
            .map_err(StoreError::db("removing a subscription"))?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_defaults_and_subscriptions_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let mut store = Store::open(&path).unwrap();
        store
            .write(|tx| {
                tx.queue_alert("a", r#"{"AlertType":"x"}"#, 10)?;
                tx.queue_alert("b", r#"{"AlertType":"y"}"#, 10)?;
                tx.set_default_source("urn:x:1.0", "a", "https://one/", None)?;
                tx.set_default_source("urn:x:1.0", "b", "https://two/", Some("a"))?;
                tx.subscribe("a", "urn:x:1.0/m/", "https://sub/", 10)
            })
            .unwrap();
        drop(store);
        let mut store = Store::open(&path).unwrap();
        let pending = store.pending_alerts("a").unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].alert_json, r#"{"AlertType":"x"}"#);
        store.write(|tx| tx.drop_alerts(&[pending[0].id])).unwrap();
        assert!(store.pending_alerts("a").unwrap().is_empty());
        assert_eq!(store.pending_alerts("b").unwrap().len(), 1);
        assert_eq!(
            store.default_source("urn:x:1.0").unwrap(),
            Some(("b".into(), "https://two/".into()))
        );
        assert_eq!(store.subscriptions().unwrap().len(), 1);
        assert_eq!(store.last_session("a").unwrap(), None);
        store.write(|tx| tx.record_session("a")).unwrap();
        assert!(store.last_session("a").unwrap().is_some());
        let (gone, _) = store
            .write(|tx| tx.unsubscribe("a", "urn:x:1.0/m/"))
            .unwrap();
        assert!(gone);
        let (gone, _) = store
            .write(|tx| tx.unsubscribe("a", "urn:x:1.0/m/"))
            .unwrap();
        assert!(!gone);
    }

    #[test]
    fn an_async_exec_persists_until_its_result_is_queued_in_the_same_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let mut store = Store::open(&path).unwrap();
        let (first, _) = store
            .write(|tx| tx.begin_exec("a", "urn:x:1.0/m/Run", "https://a/results"))
            .unwrap();
        let (second, _) = store
            .write(|tx| tx.begin_exec("b", "urn:x:1.0/n/Run", "https://b/results"))
            .unwrap();
        assert!(second > first);
        // A daemon stopped here: the next one finds both.
        drop(store);
        let mut store = Store::open(&path).unwrap();
        let running = store.async_execs().unwrap();
        assert_eq!(
            running,
            [
                AsyncExec {
                    id: first,
                    srv_id: "a".into(),
                    client_uri: "urn:x:1.0/m/Run".into(),
                    target_uri: "https://a/results".into(),
                },
                AsyncExec {
                    id: second,
                    srv_id: "b".into(),
                    client_uri: "urn:x:1.0/n/Run".into(),
                    target_uri: "https://b/results".into(),
                },
            ]
        );
        let alert = r#"{"AlertType":"x","TargetURI":"https://a/results"}"#;
        store
            .write(|tx| tx.finish_exec(first, "a", alert, 10))
            .unwrap();
        assert_eq!(store.async_execs().unwrap().len(), 1, "b still runs");
        assert_eq!(store.pending_alerts("a").unwrap()[0].alert_json, alert);

        // A failing queue leaves the EXEC recorded: its result is not lost.
        let failed = store.write(|tx| {
            tx.finish_exec(second, "b", "{}", 10)?;
            Err::<(), _>(StoreError::Corrupt("injected".into()))
        });
        assert!(failed.is_err());
        assert_eq!(store.async_execs().unwrap()[0].id, second);
        assert!(store.pending_alerts("b").unwrap().is_empty());

        store.write(|tx| tx.queue_alert("b", "{}", 10)).unwrap();
        store
            .write(|tx| tx.queue_alert("b", "not json", 10))
            .unwrap();
        assert_eq!(
            store.pending_alert_targets().unwrap(),
            [
                ("a".into(), Some("https://a/results".into())),
                ("b".into(), None)
            ]
        );
    }

    #[test]
    fn poll_due_times_persist_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let mut store = Store::open(&path).unwrap();
        let due = PollDue {
            due: 100,
            every: 60,
        };
        store.write(|tx| tx.set_poll_due("a", due)).unwrap();
        store
            .write(|tx| tx.set_poll_due("b", PollDue { due: 5, every: 1 }))
            .unwrap();
        store
            .write(|tx| tx.set_poll_due("b", PollDue { due: 7, every: 2 }))
            .unwrap();
        drop(store);
        let mut store = Store::open(&path).unwrap();
        assert_eq!(
            store.poll_due().unwrap(),
            [
                ("a".into(), due),
                ("b".into(), PollDue { due: 7, every: 2 })
            ]
        );
        store.write(|tx| tx.clear_poll_due("a")).unwrap();
        assert_eq!(store.poll_due().unwrap().len(), 1);
    }

    #[test]
    fn each_server_holds_at_most_its_subscriptions_and_alerts() {
        let mut store = Store::open_in_memory().unwrap();
        let sub = |store: &mut Store, srv: &str, uri: &str, to: &str| {
            store.write(|tx| tx.subscribe(srv, uri, to, 2)).unwrap().0
        };
        assert!(sub(&mut store, "a", "urn:x:1.0/m/", "https://1/"));
        assert!(sub(&mut store, "a", "urn:x:1.0/n/", "https://1/"));
        assert!(
            !sub(&mut store, "a", "urn:x:1.0/o/", "https://1/"),
            "a third"
        );
        assert!(
            sub(&mut store, "a", "urn:x:1.0/m/", "https://2/"),
            "replacing one is not a new one"
        );
        assert!(
            sub(&mut store, "b", "urn:x:1.0/o/", "https://1/"),
            "per server"
        );
        let subs = store.subscriptions().unwrap();
        assert_eq!(subs.len(), 3);
        assert_eq!(subs[0].server_uri, "https://2/");

        for i in 0..5 {
            let (dropped, _) = store
                .write(|tx| tx.queue_alert("a", &format!("{{\"n\":{i}}}"), 3))
                .unwrap();
            assert_eq!(dropped, usize::from(i >= 3), "alert {i}");
        }
        store.write(|tx| tx.queue_alert("b", "{}", 3)).unwrap();
        let kept: Vec<String> = store
            .pending_alerts("a")
            .unwrap()
            .into_iter()
            .map(|p| p.alert_json)
            .collect();
        assert_eq!(
            kept,
            [r#"{"n":2}"#, r#"{"n":3}"#, r#"{"n":4}"#],
            "the newest"
        );
        assert_eq!(store.pending_alerts("b").unwrap().len(), 1);
    }

    #[test]
    fn a_default_source_is_replaced_only_by_its_server_or_over_a_gone_one() {
        let mut store = Store::open_in_memory().unwrap();
        let mut set = |srv: &str, uri: &str, replaceable: Option<&str>| {
            store
                .write(|tx| tx.set_default_source("urn:x:1.0", srv, uri, replaceable))
                .unwrap()
                .0
        };
        assert!(set("a", "https://a1/", None));
        assert!(set("a", "https://a2/", None), "its own server replaces it");
        assert!(!set("b", "https://b/", None), "another server does not");
        assert!(!set("b", "https://b/", Some("c")), "nor over a third one");
        assert_eq!(
            store.default_source("urn:x:1.0").unwrap(),
            Some(("a".into(), "https://a2/".into()))
        );
        let (set, _) = store
            .write(|tx| tx.set_default_source("urn:x:1.0", "b", "https://b/", Some("a")))
            .unwrap();
        assert!(set, "a gone server's source is replaced");
        assert_eq!(
            store.default_source("urn:x:1.0").unwrap(),
            Some(("b".into(), "https://b/".into()))
        );
    }
}
