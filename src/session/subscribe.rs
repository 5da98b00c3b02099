//! SUB deliveries: whenever something under a subscribed ClientURI changes, PUT the
//! subtree (as the subscribing server may read it) to the subscription's ServerURI. A server
//! holds at most `subscriptions_per_server` subscriptions (see [`super::commands`]), so one
//! change makes at most that many PUTs per server, each at most `reply_bytes`.

use std::sync::Arc;

use super::account::{self, Account};
use super::commands::send_mo;
use super::engine::Engine;
use super::error::SessionError;
use crate::authority::Principal;
use crate::store::{Change, Subscription};
use crate::tree::uri::ClientUri;

/// One PUT to make: the subscription, its server's account and the subtree to send.
struct Delivery {
    sub: Subscription,
    account: Account,
    body: Vec<u8>,
}

/// Delivers one batch of changes to the subscriptions they concern (each at most once).
pub async fn deliver(engine: Arc<Engine>, changes: Vec<Change>) {
    let deliveries = match engine.blocking(move |e| deliveries(e, &changes)).await {
        Ok(d) => d,
        Err(e) => return tracing::error!("SUB: cannot read subscriptions: {e}"),
    };
    for Delivery { sub, account, body } in deliveries {
        let client = match account
            .client(&engine.extra_ca_files, engine.limits.max_package_bytes)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(srv_id = %sub.srv_id, "SUB: transport: {e}");
                continue;
            }
        };
        match send_mo(&client, &sub.server_uri, body, false).await {
            Ok(_) => {
                tracing::debug!(srv_id = %sub.srv_id, "SUB {} delivered to {}", sub.client_uri, sub.server_uri)
            }
            Err(e) => {
                tracing::warn!(srv_id = %sub.srv_id, "SUB {} to {}: {e}", sub.client_uri, sub.server_uri)
            }
        }
    }
}

/// The PUTs `changes` call for, each subtree read as its server may read it. Blocking.
fn deliveries(engine: &Engine, changes: &[Change]) -> Result<Vec<Delivery>, SessionError> {
    let subscriptions = engine.with_state(|s| s.subscriptions())?;
    if subscriptions.is_empty() {
        return Ok(vec![]);
    }
    let accounts =
        account::load_all(&engine.auth).map_err(|e| SessionError::Local(e.to_string()))?;
    let mut due = Vec::new();
    for sub in subscriptions {
        let Ok(uri) = ClientUri::parse(&sub.client_uri) else {
            continue;
        };
        let principal = Principal::Server(sub.srv_id.clone());
        // Only a change the server may read is news to it (not a rotated secret, nor a
        // change in an instance it lost the right to read).
        if !changes.iter().any(|c| {
            uri.covers(&c.addr) && engine.auth.may_read(&principal, &c.addr).unwrap_or(false)
        }) {
            continue;
        }
        let Some(account) = accounts.iter().find(|a| a.srv_id == sub.srv_id) else {
            continue;
        };
        let body = match engine.auth.get_json(&principal, &uri) {
            Ok(json) => json,
            Err(e) => {
                tracing::info!(srv_id = %sub.srv_id, "SUB {}: not delivered: {e}", sub.client_uri);
                continue;
            }
        };
        due.push(Delivery {
            sub,
            account: account.clone(),
            body,
        });
    }
    Ok(due)
}
