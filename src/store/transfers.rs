//! Large-object transfers in progress (`transfers` table): plain rows, given meaning by
//! `transfer/` and the session engine. A download's row says where it stands — validator,
//! size, synced bytes and the SHA-256 state after them — so that it resumes after a
//! restart; the row goes when the transfer is over and, if the session answered `202`, its
//! result alert is queued in the same transaction.

use rusqlite::{OptionalExtension as _, params};

use super::{Store, StoreError, Txn};

/// One transfer's row. Ids and byte counts are stored as SQLite integers (i64); they
/// never come near 2^63.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferRow {
    pub id: u64,
    pub srv_id: String,
    /// An upload (HPUT/HPOST); else a download (HGET).
    pub upload: bool,
    /// An upload by POST (HPOST); else by PUT.
    pub post: bool,
    pub server_uri: String,
    /// The node: filled by a download, read by an upload.
    pub client_uri: String,
    pub suspended: bool,
    /// The object's ETag or Last-Modified as the server gave it.
    pub validator: Option<String>,
    /// The object's size, once known.
    pub total: Option<u64>,
    /// Bytes of the part file that are synced and hashed into `digest`.
    pub done: u64,
    /// The serialized SHA-256 state after `done` bytes.
    pub digest: Option<Vec<u8>>,
    /// The SHA-256 the server gave for the whole object.
    pub expected: Option<Vec<u8>>,
    /// The session answered `202`: the result goes to the server as an alert.
    pub reply: bool,
}

/// Where a download stands, as saved after each synced stretch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint<'a> {
    pub validator: Option<&'a str>,
    pub total: Option<u64>,
    pub done: u64,
    pub digest: &'a [u8],
    pub expected: Option<&'a [u8]>,
}

impl Store {
    /// Every transfer not yet over, oldest first.
    pub fn transfers(&self) -> Result<Vec<TransferRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, srv_id, direction, post, server_uri, client_uri, suspended, \
                 validator, total, done, digest, expected, reply FROM transfers ORDER BY id",
            )
            .map_err(StoreError::db("preparing the transfers query"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(TransferRow {
                    id: r.get::<_, i64>(0)? as u64,
                    srv_id: r.get(1)?,
                    upload: r.get::<_, String>(2)? == "upload",
                    post: r.get(3)?,
                    server_uri: r.get(4)?,
                    client_uri: r.get(5)?,
                    suspended: r.get(6)?,
                    validator: r.get(7)?,
                    total: r.get::<_, Option<i64>>(8)?.map(|t| t as u64),
                    done: r.get::<_, i64>(9)? as u64,
                    digest: r.get(10)?,
                    expected: r.get(11)?,
                    reply: r.get(12)?,
                })
            })
            .map_err(StoreError::db("reading transfers"))?;
        rows.collect::<Result<_, _>>()
            .map_err(StoreError::db("reading transfers"))
    }
}

impl Txn<'_> {
    /// Records a new transfer for `srv_id` between `server_uri` and the node `client_uri`.
    /// Returns its id.
    pub fn begin_transfer(
        &mut self,
        srv_id: &str,
        upload: bool,
        post: bool,
        server_uri: &str,
        client_uri: &str,
    ) -> Result<u64, StoreError> {
        self.execute(
            "INSERT INTO transfers (srv_id, direction, post, server_uri, client_uri, created) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                srv_id,
                if upload { "upload" } else { "download" },
                post,
                server_uri,
                client_uri,
                self.now()
            ],
            "recording a transfer",
        )?;
        Ok(self.tx().last_insert_rowid() as u64)
    }

    /// Saves where download `id` stands.
    pub fn transfer_checkpoint(&mut self, id: u64, at: &Checkpoint<'_>) -> Result<(), StoreError> {
        self.execute(
            "UPDATE transfers SET validator = ?2, total = ?3, done = ?4, digest = ?5, \
             expected = ?6 WHERE id = ?1",
            params![
                id as i64,
                at.validator,
                at.total.map(|t| t as i64),
                at.done as i64,
                at.digest,
                at.expected
            ],
            "saving a transfer's progress",
        )?;
        Ok(())
    }

    /// Records that transfer `id` is suspended (or no longer).
    pub fn suspend_transfer(&mut self, id: u64, suspended: bool) -> Result<(), StoreError> {
        self.execute(
            "UPDATE transfers SET suspended = ?2 WHERE id = ?1",
            params![id as i64, suspended],
            "recording a transfer's suspension",
        )?;
        Ok(())
    }

    /// Records that the session answered transfer `id` with `202`. `false` when the
    /// transfer had ended already (its result is then the session's to give).
    pub fn reply_transfer_later(&mut self, id: u64) -> Result<bool, StoreError> {
        let changed = self
            .tx()
            .prepare_cached("UPDATE transfers SET reply = 1 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![id as i64]))
            .map_err(StoreError::db("recording a transfer's later report"))?;
        Ok(changed == 1)
    }

    /// Forgets transfer `id`; returns whether its result goes out as an alert (the
    /// session answered `202`).
    pub fn end_transfer(&mut self, id: u64) -> Result<bool, StoreError> {
        let reply: Option<bool> = self
            .tx()
            .query_row(
                "DELETE FROM transfers WHERE id = ?1 RETURNING reply",
                params![id as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(StoreError::db("forgetting a transfer"))?;
        Ok(reply.unwrap_or(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_keeps_its_checkpoint_until_it_ends() {
        let mut store = Store::open_in_memory().unwrap();
        let (id, _) = store
            .write(|tx| tx.begin_transfer("srv", false, false, "https://r/o", "urn:x/1/D"))
            .unwrap();
        let at = Checkpoint {
            validator: Some("\"v1\""),
            total: Some(100),
            done: 64,
            digest: &[7; 40],
            expected: Some(&[9; 32]),
        };
        store.write(|tx| tx.transfer_checkpoint(id, &at)).unwrap();
        store.write(|tx| tx.suspend_transfer(id, true)).unwrap();
        let rows = store.transfers().unwrap();
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!((row.id, row.upload, row.suspended), (id, false, true));
        assert_eq!(row.validator.as_deref(), Some("\"v1\""));
        assert_eq!((row.total, row.done), (Some(100), 64));
        assert_eq!(row.digest.as_deref(), Some(&[7u8; 40][..]));
        assert_eq!(row.expected.as_deref(), Some(&[9u8; 32][..]));
        assert!(store.write(|tx| tx.reply_transfer_later(id)).unwrap().0);
        assert!(
            store.write(|tx| tx.end_transfer(id)).unwrap().0,
            "its result is owed"
        );
        assert!(store.transfers().unwrap().is_empty());
        assert!(!store.write(|tx| tx.reply_transfer_later(id)).unwrap().0);
    }
}
