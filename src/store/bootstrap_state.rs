//! The store side of factory bootstrap ([`crate::bootstrap`]): which bootstrap files were
//! applied, by path and SHA-256 digest, and the factory reset — one transaction that removes
//! every MO instance but those omadmd provides itself and forgets what servers left behind.

use rusqlite::{OptionalExtension as _, params};

use super::{Store, StoreError, Txn};
use crate::tree::uri::NodeAddr;

impl Store {
    /// The digest (SHA-256, hex) of the content of the bootstrap file at `path` last applied,
    /// if it was applied since the last factory reset.
    pub fn bootstrap_digest(&self, path: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached("SELECT digest FROM bootstrap_files WHERE path = ?1")
            .and_then(|mut s| s.query_row([path], |r| r.get(0)).optional())
            .map_err(StoreError::db("reading a bootstrap record"))
    }
}

impl Txn<'_> {
    /// Records that the bootstrap file at `path` was applied with content of `digest`.
    pub fn record_bootstrap(&mut self, path: &str, digest: &str) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO bootstrap_files (path, digest, applied) VALUES (?1, ?2, ?3) \
             ON CONFLICT (path) DO UPDATE SET digest = excluded.digest, applied = excluded.applied",
            params![path, digest, self.now()],
            "recording a bootstrap file",
        )
    }

    /// The factory reset: deletes every instance except those of the MOIDs in `keep` (each
    /// deletion journaled as `writer`'s, so the journal's sequence keeps rising and watchers
    /// see the instances go; their grants go with them), takes back every grant on the
    /// instances kept but the everyone-grants (`app:*`, `srv:*`) omadmd's own MOs carry, and
    /// forgets every `SUB` subscription, `DEFAULT` source, pending alert, poll due time,
    /// last-session time and bootstrap record. Asynchronous EXECs still running stay recorded: their handlers
    /// report as usual. Returns how many instances were deleted.
    pub fn factory_reset(&mut self, keep: &[&str], writer: &str) -> Result<usize, StoreError> {
        let roots: Vec<NodeAddr> = {
            let mut stmt = self
                .tx()
                .prepare_cached("SELECT moid, miid FROM instances ORDER BY moid, miid")
                .map_err(StoreError::db("preparing the instance list"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(NodeAddr::root(
                        &r.get::<_, String>(0)?,
                        &r.get::<_, String>(1)?,
                    ))
                })
                .map_err(StoreError::db("listing instances"))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(StoreError::db("listing instances"))?
        };
        let mut deleted = 0;
        // The DACL MO follows the grants (below), it is not deleted with the rest.
        for root in roots
            .iter()
            .filter(|r| !keep.contains(&r.moid.as_str()) && r.moid != crate::tree::builtin::DACL)
        {
            self.delete(root, writer)?;
            deleted += 1;
        }
        self.execute(
            "DELETE FROM grants WHERE principal NOT IN ('app:*', 'srv:*')",
            params![],
            "taking back grants",
        )?;
        self.mirror_all(writer)?;
        for (table, context) in [
            ("subscriptions", "forgetting subscriptions"),
            ("defaults", "forgetting DEFAULT sources"),
            ("pending_alerts", "forgetting pending alerts"),
            ("poll_due", "forgetting poll due times"),
            ("server_sessions", "forgetting last sessions"),
            ("bootstrap_files", "forgetting bootstrap records"),
        ] {
            self.execute(&format!("DELETE FROM {table}"), params![], context)?;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::store::{ChangeKind, Rights};
    use crate::tree::builtin::DACL;
    use crate::tree::node::Node;
    use crate::tree::value::Value;

    const KEPT: &str = "urn:oma:mo:kept:1.0";
    const GONE: &str = "urn:oma:mo:gone:1.0";

    fn content() -> Node {
        Node::Interior(BTreeMap::from([(
            "A".to_owned(),
            Node::Leaf(Value::Chr("a".into())),
        )]))
    }

    #[test]
    fn bootstrap_records_are_kept_per_path_and_replaced() {
        let mut store = Store::open_in_memory().unwrap();
        assert_eq!(store.bootstrap_digest("/b/1.json").unwrap(), None);
        store
            .write(|tx| tx.record_bootstrap("/b/1.json", "aa"))
            .unwrap();
        store
            .write(|tx| tx.record_bootstrap("/b/1.json", "bb"))
            .unwrap();
        assert_eq!(
            store.bootstrap_digest("/b/1.json").unwrap().as_deref(),
            Some("bb")
        );
        assert_eq!(store.bootstrap_digest("/b/2.json").unwrap(), None);
    }

    #[test]
    fn factory_reset_removes_all_but_kept_instances_journaled_and_forgets_session_state() {
        let mut store = Store::open_in_memory().unwrap();
        store
            .write(|tx| {
                tx.create_instance(KEPT, Some("0"), "K", &content(), "admin")?;
                tx.create_instance(GONE, Some("1"), "G", &content(), "app:a")?;
                tx.create_instance(GONE, Some("2"), "G", &content(), "srv:s")?;
                tx.set_grant(&NodeAddr::root(KEPT, "0"), "app:*", Rights::READ, "admin")?;
                tx.set_grant(
                    &NodeAddr::root(KEPT, "0"),
                    "app:c",
                    Rights::READ.union(Rights::WRITE),
                    "admin",
                )?;
                tx.set_grant(&NodeAddr::root(GONE, "1"), "app:b", Rights::READ, "admin")?;
                tx.queue_alert("s", "{}", 10)?;
                tx.set_default_source(GONE, "s", "https://s/", None)?;
                tx.record_session("s")?;
                tx.record_bootstrap("/b/1.json", "aa")
            })
            .unwrap();
        store
            .conn
            .execute_batch(
                "INSERT INTO subscriptions (srv_id, client_uri, server_uri) VALUES ('s', 'urn:oma:mo:gone:1.0/1/', 'https://s/');
                 INSERT INTO poll_due VALUES ('s', 1, 60);",
            )
            .unwrap();
        let before = store.last_seq().unwrap();
        let (deleted, changes) = store
            .write(|tx| tx.factory_reset(&[KEPT], "admin"))
            .unwrap();
        assert_eq!(deleted, 2);
        let gone: Vec<_> = changes
            .iter()
            .filter(|c| c.addr.moid != DACL)
            .map(|c| (c.addr.to_string(), c.kind, c.seq > before))
            .collect();
        assert_eq!(
            gone,
            [
                (format!("{GONE}/1/"), ChangeKind::Deleted, true),
                (format!("{GONE}/2/"), ChangeKind::Deleted, true)
            ]
        );
        // The grants' DACL entries went with them (GONE/1's with its instance, app:c's
        // with the grants taken back), each change journaled; everyone's grant stays.
        let entries: Vec<_> = changes
            .iter()
            .filter(|c| c.addr.moid == DACL)
            .map(|c| c.kind)
            .collect();
        assert_eq!(entries, [ChangeKind::Deleted, ChangeKind::Deleted]);
        assert_eq!(store.last_seq().unwrap(), before + 4);
        let dacl = crate::store::dacl_root();
        let left = store.subtree(&dacl).unwrap();
        let Node::Interior(left) = left else {
            panic!("the DACL root is interior")
        };
        assert_eq!(left.len(), 1);
        let only = left.values().next().unwrap();
        assert_eq!(
            only.get("Principal"),
            Some(&Node::Leaf(Value::Chr("app:*".into())))
        );
        let instances: Vec<_> = store
            .list_instances()
            .unwrap()
            .into_iter()
            .map(|i| i.moid)
            .collect();
        assert_eq!(instances, [DACL, KEPT]);
        assert_eq!(
            store.grants(&NodeAddr::root(KEPT, "0")).unwrap(),
            [("app:*".to_owned(), Rights::READ)]
        );
        assert!(store.pending_alerts("s").unwrap().is_empty());
        assert!(store.subscriptions().unwrap().is_empty());
        assert!(store.poll_due().unwrap().is_empty());
        assert_eq!(store.default_source(GONE).unwrap(), None);
        assert_eq!(store.last_session("s").unwrap(), None);
        assert_eq!(store.bootstrap_digest("/b/1.json").unwrap(), None);
        let left: i64 = store
            .conn
            .query_row("SELECT count(*) FROM grants", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            left, 1,
            "grants on deleted instances went with them, and the kept one's but app:*"
        );
    }
}
