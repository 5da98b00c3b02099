//! Who may change DM accounts (`urn:oma:mo:oma-dm-dmacc:1.2`): an account decides where
//! sessions go, how the server is trusted and what it may manage, so only an administrator
//! (uid 0, or a caller polkit authorizes for `manage`, which the D-Bus face turns into the
//! admin) creates or changes one. A server may change its own account's other nodes (to
//! rotate a credential, say) but never its `SrvID`, its `Perm` list, its `Ext/Priority` or
//! its `Auth/Bootstrap` (PROTOCOL.md §10: only the account's bootstrap server, whose data
//! [`crate::bootstrap`] applies as the admin, and the admin change the bootstrap
//! credentials). Every account's `SrvID` is unique.

use super::error::AccessError;
use super::principal::Principal;
use crate::store::{Store, StoreError, Txn};
use crate::tree::builtin::DMACC;
use crate::tree::uri::NodeAddr;

/// Account nodes no server may write: a path equal to one of these or below it.
const SERVER_FORBIDDEN: [&str; 4] = ["SrvID", "Perm", "Ext/Priority", "Auth/Bootstrap"];

/// The MOIDs the account of `srv_id` may manage (its `Perm/<x>/MOID` values); none when it
/// has no account.
pub fn permitted(store: &Store, srv_id: &str) -> Result<Vec<String>, StoreError> {
    match account_of(store, srv_id)? {
        Some(root) => store.grandchild_texts(&root.child("Perm"), "MOID"),
        None => Ok(Vec::new()),
    }
}

/// The priority of `srv_id` among servers (`Ext/Priority`, higher wins; 0 when unset or not
/// a number); `None` when it has no account.
pub fn priority(store: &Store, srv_id: &str) -> Result<Option<i64>, StoreError> {
    let Some(root) = account_of(store, srv_id)? else {
        return Ok(None);
    };
    let set = store.leaf(&root.child("Ext/Priority"))?;
    Ok(Some(
        set.and_then(|(v, _)| v.to_text().parse().ok()).unwrap_or(0),
    ))
}

/// The root of the account whose `SrvID` is `srv_id`.
fn account_of(store: &Store, srv_id: &str) -> Result<Option<NodeAddr>, StoreError> {
    Ok(store
        .instance_where(DMACC, "SrvID", srv_id)?
        .map(|miid| NodeAddr::root(DMACC, &miid)))
}

/// Whether `who` may create an instance of `moid`.
pub fn may_create(who: &Principal, moid: &str) -> Result<(), AccessError> {
    if moid != DMACC || *who == Principal::Admin {
        return Ok(());
    }
    Err(AccessError::Denied(format!(
        "{who} may not add DM accounts: that takes uid 0 or the polkit action org.omadm.client1.manage"
    )))
}

/// Whether `who` may write or delete the node at `addr` (already known to be visible and
/// writable for it) of the account whose `SrvID` is `account_srv_id`.
pub fn may_change(
    who: &Principal,
    addr: &NodeAddr,
    account_srv_id: Option<&str>,
) -> Result<(), AccessError> {
    if addr.moid != DMACC || *who == Principal::Admin {
        return Ok(());
    }
    let denied = |why: &str| Err(AccessError::Denied(format!("{addr}: {who} {why}")));
    match who {
        Principal::Server(id) if account_srv_id != Some(id.as_str()) => {
            denied("may change only its own DM account")
        }
        Principal::Server(_) => {
            let forbidden = addr.path.is_empty()
                || SERVER_FORBIDDEN.iter().any(|f| {
                    addr.path == *f
                        || addr
                            .path
                            .strip_prefix(f)
                            .is_some_and(|rest| rest.starts_with('/'))
                        || f.strip_prefix(addr.path.as_str())
                            .is_some_and(|rest| rest.starts_with('/'))
                });
            if forbidden {
                denied("may not change a DM account's SrvID, Perm, Ext/Priority or Auth/Bootstrap")
            } else {
                Ok(())
            }
        }
        _ => denied(
            "may not change DM accounts: that takes uid 0 or the polkit action org.omadm.client1.manage",
        ),
    }
}

/// Refuses a transaction that leaves two accounts with the same `SrvID`.
pub fn check_unique_srv_ids(tx: &Txn<'_>) -> Result<(), AccessError> {
    let mut ids = tx.leaf_texts(DMACC, "SrvID")?;
    ids.sort_by(|a, b| a.1.cmp(&b.1));
    match ids.windows(2).find(|w| w[0].1 == w[1].1) {
        None => Ok(()),
        Some(w) => Err(AccessError::Conflict(format!(
            "SrvID {:?} is already used by the DM account {DMACC}/{}/",
            w[1].1, w[0].0
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(path: &str) -> NodeAddr {
        NodeAddr {
            moid: DMACC.into(),
            miid: "1".into(),
            path: path.into(),
        }
    }

    #[test]
    fn servers_keep_off_identity_permissions_priority_and_bootstrap() {
        let srv = Principal::Server("acme".into());
        for path in [
            "",
            "SrvID",
            "Perm",
            "Perm/1",
            "Perm/1/MOID",
            "Ext",
            "Ext/Priority",
            "Auth",
            "Auth/Bootstrap",
            "Auth/Bootstrap/ServerURI",
            "Auth/Bootstrap/ClientSecretKey",
        ] {
            assert!(
                matches!(
                    may_change(&srv, &at(path), Some("acme")),
                    Err(AccessError::Denied(_))
                ),
                "{path}"
            );
        }
        for path in ["Auth/Trsp/Secret", "SrvURI", "Ext/CACert", "Name"] {
            assert!(may_change(&srv, &at(path), Some("acme")).is_ok(), "{path}");
            assert!(
                may_change(&srv, &at(path), Some("other")).is_err(),
                "another server's account: {path}"
            );
            assert!(may_change(&srv, &at(path), None).is_err(), "{path}");
        }
    }

    #[test]
    fn only_the_admin_adds_or_changes_accounts() {
        for who in [Principal::App("a.b".into()), Principal::User(1000)] {
            assert!(may_create(&who, DMACC).is_err());
            assert!(may_change(&who, &at("SrvURI"), None).is_err());
            assert!(may_create(&who, "urn:x:1.0").is_ok());
        }
        assert!(may_create(&Principal::Server("s".into()), DMACC).is_err());
        assert!(may_create(&Principal::Admin, DMACC).is_ok());
        assert!(may_change(&Principal::Admin, &at("SrvID"), None).is_ok());
    }
}
