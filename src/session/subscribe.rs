//! SUB deliveries: whenever something under a subscribed ClientURI changes, PUT the
//! subtree (as the subscribing server may read it) to the subscription's ServerURI. A server
//! holds at most `subscriptions_per_server` subscriptions (see [`super::commands`]), so one
//! change makes at most that many PUTs per server, each at most `reply_bytes`.
//!
//! A delivery that fails (the server, or the network, unreachable — during a network move,
//! say) marks the subscription *owed* in the store; [`redeliver`] sends every owed
//! subscription's current subtree once the server can be reached again (after a restart, a
//! network change, a session with it), and a later delivery that works clears the mark.
//!
//! A subscribed leaf that holds a large object is sent as the object itself, streamed from
//! its file (as an HPUT of it would), not as an MO serialization.
//!
//! A subtree goes out only once what it shows is durable: after it is read, the delivery
//! waits with [`Pool::durable`](crate::store::Pool::durable) (group commit: one sync covers
//! every commit made before the wait began, the subtree's included), so a server never
//! receives a state that a power loss undoes. The store's writer does not wait for it.

use std::sync::Arc;

use futures_util::FutureExt as _;
use tokio::sync::mpsc;

use super::account::{self, Account};
use super::commands::send_mo;
use super::engine::Engine;
use super::error::SessionError;
use super::tasks::Tasks;
use crate::authority::Principal;
use crate::store::{Change, Subscription};
use crate::transfer::send;
use crate::transport::{HttpClient, Method};
use crate::tree::uri::ClientUri;
use crate::tree::value::ObjectRef;

/// One PUT to make: the subscription, its server's account and the subtree to send.
struct Delivery {
    sub: Subscription,
    account: Account,
    body: Body,
}

/// What a delivery sends.
enum Body {
    /// The subtree's MO serialization.
    Json(Vec<u8>),
    /// A subscribed leaf's large object, streamed from its file (`application/octet-stream`
    /// with `Repr-Digest`, as an HPUT of it).
    Object(ObjectRef),
}

/// Runs SUB deliveries until the daemon stops: first what is owed from before, then each
/// batch of `changes` as it comes, one at a time, and what is owed again whenever the
/// engine says it may go out ([`Engine::subs_owed`]: the network came back or moved, a
/// session with a server worked). Batches still queued when the daemon stops are dropped;
/// a delivery in progress is cut off if it aborts.
pub async fn run(engine: Arc<Engine>, mut changes: mpsc::Receiver<Vec<Change>>, tasks: Tasks) {
    let mut owed = true;
    loop {
        let work = if owed {
            owed = false;
            redeliver(engine.clone(), None).boxed()
        } else {
            tokio::select! {
                biased;
                () = tasks.stopped() => break,
                () = engine.subs_owed().notified() => {
                    owed = true;
                    continue;
                }
                batch = changes.recv() => match batch {
                    Some(b) => deliver(engine.clone(), b).boxed(),
                    None => break,
                },
            }
        };
        tokio::select! {
            () = work => {}
            () = tasks.aborted() => break,
        }
    }
}

/// Delivers one batch of changes to the subscriptions they concern (each at most once).
pub async fn deliver(engine: Arc<Engine>, changes: Vec<Change>) {
    match engine
        .blocking(move |e| deliveries(e, Due::Changed(&changes)))
        .await
    {
        Ok(d) => send(&engine, d).await,
        Err(e) => tracing::error!("SUB: cannot read subscriptions: {e}"),
    }
}

/// Sends the current subtree of every owed subscription (of `srv_id`'s, or of every
/// server's): what failed to go out before.
pub async fn redeliver(engine: Arc<Engine>, srv_id: Option<String>) {
    match engine
        .blocking(move |e| deliveries(e, Due::Owed(srv_id.as_deref())))
        .await
    {
        Ok(d) => send(&engine, d).await,
        Err(e) => tracing::error!("SUB: cannot read subscriptions: {e}"),
    }
}

/// Which subscriptions a delivery run is for.
enum Due<'a> {
    /// Those a change of the batch concerns.
    Changed(&'a [Change]),
    /// The owed ones, of one server or of all.
    Owed(Option<&'a str>),
}

/// Makes the PUTs once what they carry is durable, marking each subscription owed when its
/// PUT fails and clearing the mark when one works. When the store cannot make it durable,
/// nothing is sent and the marks stay as they are.
async fn send(engine: &Arc<Engine>, deliveries: Vec<Delivery>) {
    if deliveries.is_empty() {
        return;
    }
    if let Err(e) = engine.store.durable().await {
        tracing::error!("SUB: {} delivery(ies) not sent: {e}", deliveries.len());
        return;
    }
    for Delivery { sub, account, body } in deliveries {
        let sent = match account
            .client(&engine.extra_ca_files, engine.limits.max_package_bytes)
            .await
        {
            Ok(client) => match body {
                Body::Json(body) => send_mo(&client, &sub.server_uri, body, false)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Body::Object(object) => put_object(engine, &client, &sub.server_uri, object).await,
            },
            Err(e) => Err(format!("transport: {e}")),
        };
        match &sent {
            Ok(()) => {
                tracing::debug!(srv_id = %sub.srv_id, "SUB {} delivered to {}", sub.client_uri, sub.server_uri)
            }
            Err(e) => {
                tracing::warn!(srv_id = %sub.srv_id, "SUB {} to {}: {e}; owed until it can be sent", sub.client_uri, sub.server_uri)
            }
        }
        let owed = sent.is_err();
        if owed != sub.owed {
            let (srv_id, client_uri) = (sub.srv_id.clone(), sub.client_uri.clone());
            let marked = engine
                .blocking(move |e| e.state(|tx| tx.set_owed(&srv_id, &client_uri, owed)))
                .await;
            if let Err(e) = marked {
                tracing::error!(srv_id = %sub.srv_id, "SUB {}: cannot record the delivery: {e}", sub.client_uri);
            }
        }
    }
}

/// PUTs a large object's file to `url`, once (a failure leaves the subscription owed).
async fn put_object(
    engine: &Engine,
    client: &HttpClient,
    url: &str,
    object: ObjectRef,
) -> Result<(), String> {
    let objects = engine
        .store
        .objects()
        .ok_or("this store keeps no large objects")?;
    let response =
        send::send_object(client, Method::Put, url, objects, &object, Arc::default()).await?;
    if response.is_success() {
        Ok(())
    } else {
        Err(format!("{url} answered HTTP {}", response.status))
    }
}

/// The PUTs `which` calls for, each subtree read as its server may read it. Blocking.
fn deliveries(engine: &Engine, which: Due<'_>) -> Result<Vec<Delivery>, SessionError> {
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
        let wanted = match which {
            // Only a change the server may read is news to it (not a rotated secret, nor a
            // change in an instance it lost the right to read).
            Due::Changed(changes) => changes.iter().any(|c| {
                uri.covers(&c.addr) && engine.auth.may_read(&principal, &c.addr).unwrap_or(false)
            }),
            Due::Owed(srv) => sub.owed && srv.is_none_or(|s| s == sub.srv_id),
        };
        if !wanted {
            continue;
        }
        let Some(account) = accounts.iter().find(|a| a.srv_id == sub.srv_id) else {
            continue;
        };
        let body = match engine.auth.object_at(&principal, &uri) {
            Ok(Some((_, object))) => Ok(Body::Object(object)),
            Ok(None) => engine.auth.get_json(&principal, &uri).map(Body::Json),
            Err(e) => Err(e),
        };
        let body = match body {
            Ok(body) => body,
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
