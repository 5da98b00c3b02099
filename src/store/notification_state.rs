//! The store side of server notifications ([`crate::notification::verify`]): the
//! NOTIFICATION-IDs each server sent lately, kept until they expire, so that a replayed
//! notification is refused across daemon restarts. An id is a duplicate only while it is
//! kept: the ids are two bytes and wrap.

use rusqlite::params;

use super::{StoreError, Txn};

impl Txn<'_> {
    /// Notes that `srv_id` sent NOTIFICATION-ID `id` at `now` (POSIX seconds), to be kept
    /// until `expires`. Returns whether it is new: `false` when the same id from that server
    /// is still kept (nothing changes then). Ids whose time has come (`expires <= now`) are
    /// forgotten first.
    pub fn note_notification_id(
        &mut self,
        srv_id: &str,
        id: u16,
        now: i64,
        expires: i64,
    ) -> Result<bool, StoreError> {
        self.execute(
            "DELETE FROM notification_ids WHERE expires <= ?1",
            params![now],
            "forgetting expired notification ids",
        )?;
        let added = self
            .tx()
            .prepare_cached(
                "INSERT INTO notification_ids (srv_id, id, expires) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (srv_id, id) DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![srv_id, id, expires]))
            .map_err(StoreError::db("recording a notification id"))?;
        Ok(added == 1)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{Store, StoreError};

    fn note(store: &mut Store, srv: &str, id: u16, now: i64, expires: i64) -> bool {
        let noted = store.write(|tx| -> Result<bool, StoreError> {
            tx.note_notification_id(srv, id, now, expires)
        });
        noted.unwrap().0
    }

    #[test]
    fn an_id_is_a_duplicate_per_server_until_it_expires_and_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let mut store = Store::open(&path).unwrap();
        assert!(note(&mut store, "a", 7, 1000, 1300));
        assert!(!note(&mut store, "a", 7, 1100, 1400), "seen");
        assert!(note(&mut store, "b", 7, 1100, 1400), "another server's id");
        drop(store);

        let mut store = Store::open(&path).unwrap();
        assert!(
            !note(&mut store, "a", 7, 1299, 1599),
            "still seen after reopening"
        );
        // The first sighting's expiry holds: the duplicate did not extend it.
        assert!(
            note(&mut store, "a", 7, 1300, 1600),
            "expired: the id wrapped around"
        );
        assert!(!note(&mut store, "a", 7, 1301, 1601));
    }
}
