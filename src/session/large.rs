//! Large objects in DM sessions (DM-HLF-022): an `HGET` into a `bin` leaf whose answer is
//! `application/octet-stream`, and an `HPUT`/`HPOST` of a leaf that holds a large object,
//! run as transfers ([`crate::transfer`]) owned by the engine's tasks.
//!
//! - A download is recorded before its first byte and checkpointed as it goes; when it is
//!   complete and checked, its file is published under its digest's name and the leaf is
//!   written (as the server, with every rule of a write: rights, DDF, quota) in one store
//!   transaction, and the record goes.
//! - The command waits for its transfer at most `transfer_wait_seconds` (and never past the
//!   session's end); a transfer still going then answers `202`, and its result goes to the
//!   server later as a `TransferResult` alert, like an asynchronous EXEC's.
//! - At start-up every recorded download goes on where it stopped ([`Engine::resume_transfers`]);
//!   on a network move, running downloads end their connection (it may be bound to an
//!   address the device no longer has) and go on at once, waiting ones try again at once.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::account::{self, Account};
use super::commands::{Context, Failure, blocking};
use super::engine::Engine;
use crate::authority::{Input, Principal};
use crate::protocol::Status;
use crate::protocol::alert::{Alert, TRANSFER_RESULT};
use crate::store::{Checkpoint, Objects, Pool, StoreError, TransferRow, Txn};
use crate::transfer::fetch::{Download, Fetched, Refused, Saved};
use crate::transfer::send::Upload;
use crate::transfer::steer::{self, Steer};
use crate::transfer::{Direction, Progress, State};
use crate::transport::{HttpClient, Method, Request, Streaming};
use crate::tree::format::Format;
use crate::tree::uri::{ClientUri, NodeAddr};
use crate::tree::value::ObjectRef;

/// Bytes a download writes between checkpoints: what a crash may cost to fetch again.
const CHECKPOINT_BYTES: u64 = 2 * 1024 * 1024;
/// The longest wait between attempts of a transfer.
const MAX_WAIT: Duration = Duration::from_secs(300);
/// A transfer without progress for this long is given up.
const GIVE_UP: Duration = Duration::from_secs(24 * 3600);

/// Held (shared) from publishing an object until its leaf refers to it, and (exclusive) by
/// a sweep: a sweep never removes an object that is about to be referred to.
static PUBLISHING: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// What `HGET` asks a data repository for when its target is a `bin` leaf.
const ACCEPT: &str =
    "application/octet-stream, application/vnd.oma.dm.mo+json;q=0.9, application/json;q=0.8";

/// How a transfer ended: the status for the server and, for a download, the object.
type Ended = Result<Option<ObjectRef>, Refused>;

/// `HGET ServerURI ClientURI` into a `bin` leaf: `None` when the answer is not an object
/// (the caller goes the MO-serialization way, asking once more), else the command's
/// status.
pub(super) async fn hget(
    ctx: &Context<'_>,
    server_uri: &str,
    addr: NodeAddr,
) -> Result<Option<Status>, Failure> {
    let Some(objects) = ctx.engine.store.objects().cloned() else {
        return Ok(None);
    };
    let response = ctx
        .client
        .open(Request::get(server_uri).with_header("Accept", ACCEPT))
        .await
        .map_err(|e| Failure::Status(500, format!("HGET {server_uri}: {e}")))?;
    let octets = response
        .header("content-type")
        .map(super::engine::media_type)
        == Some("application/octet-stream");
    if !octets || !response.is_success() {
        return Ok(None);
    }
    let row = record(ctx, server_uri, &addr, None).await?;
    let id = row.id;
    let ended = start(
        ctx.engine,
        Arc::clone(ctx.client),
        objects,
        ctx.account.clone(),
        row,
        Some(response),
    );
    wait(ctx, id, ended, &addr).await.map(Some)
}

/// `HPUT`/`HPOST` of the one leaf `addr` holding `object`.
pub(super) async fn upload(
    ctx: &Context<'_>,
    server_uri: &str,
    addr: &NodeAddr,
    object: ObjectRef,
    post: bool,
) -> Result<Status, Failure> {
    let Some(objects) = ctx.engine.store.objects().cloned() else {
        return Err(Failure::Local("this store keeps no large objects".into()));
    };
    let row = record(ctx, server_uri, addr, Some((object, post))).await?;
    let id = row.id;
    let ended = start(
        ctx.engine,
        Arc::clone(ctx.client),
        objects,
        ctx.account.clone(),
        row,
        None,
    );
    wait(ctx, id, ended, addr).await
}

/// Records a new transfer between `server_uri` and `addr`: a download, or with `upload`
/// the upload (by POST or not) of the object `addr` holds.
async fn record(
    ctx: &Context<'_>,
    server_uri: &str,
    addr: &NodeAddr,
    upload: Option<(ObjectRef, bool)>,
) -> Result<TransferRow, Failure> {
    let post = upload.is_some_and(|(_, post)| post);
    let (srv_id, uri, client_uri) = (
        ctx.account.srv_id.clone(),
        server_uri.to_owned(),
        addr.to_string(),
    );
    let id = ctx
        .engine
        .blocking(move |e| {
            e.state(|tx| tx.begin_transfer(&srv_id, upload.is_some(), post, &uri, &client_uri))
        })
        .await
        .map_err(|e| Failure::Local(format!("cannot record the transfer: {e}")))?;
    Ok(TransferRow {
        id,
        srv_id: ctx.account.srv_id.clone(),
        upload: upload.is_some(),
        post,
        server_uri: server_uri.to_owned(),
        client_uri: addr.to_string(),
        suspended: false,
        validator: None,
        total: upload.map(|(object, _)| object.size),
        done: 0,
        digest: None,
        expected: None,
        reply: false,
    })
}

/// Waits for the transfer within the command's time; past it, records that the result
/// goes out as an alert and answers `202`.
async fn wait(
    ctx: &Context<'_>,
    id: u64,
    mut ended: oneshot::Receiver<Ended>,
    addr: &NodeAddr,
) -> Result<Status, Failure> {
    let until = ctx
        .deadline
        .min(Instant::now() + Duration::from_secs(ctx.engine.limits.transfer_wait_seconds));
    let outcome = match tokio::time::timeout_at(until, &mut ended).await {
        Ok(outcome) => outcome,
        Err(_) => {
            let later = ctx
                .engine
                .blocking(move |e| e.state(|tx| tx.reply_transfer_later(id)))
                .await
                .map_err(|e| Failure::Local(e.to_string()))?;
            if later {
                tracing::info!(srv_id = %ctx.account.srv_id, "transfer {id} of {addr} goes on after the command: 202");
                return Ok(Status::code(202));
            }
            ended.await
        }
    };
    match outcome {
        Ok(Ok(_)) => Ok(Status {
            sc: 200,
            uri: Some(vec![addr.to_string()]),
            data: None,
        }),
        Ok(Err(refused)) => Err(Failure::Status(refused.status, refused.reason)),
        Err(_) => Err(Failure::Local("omadmd stopped during the transfer".into())),
    }
}

impl Engine {
    /// At start-up: makes the object directories, removes object files no node refers to
    /// (and part files no transfer owns), and goes on with every transfer a stopped daemon
    /// left recorded. Returns how many.
    pub async fn resume_transfers(self: &Arc<Self>) -> Result<usize, String> {
        let Some(objects) = self.store.objects().cloned() else {
            return Ok(0);
        };
        let dirs = objects.clone();
        let (rows, accounts) = self
            .blocking(move |e| {
                dirs.create_dirs()
                    .map_err(|err| super::SessionError::Local(format!("object files: {err}")))?;
                sweep(e, &dirs)?;
                let rows = e.with_state(|s| s.transfers())?;
                let accounts = account::load_all(&e.auth)
                    .map_err(|err| super::SessionError::Local(err.to_string()))?;
                Ok((rows, accounts))
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut resumed = 0;
        for row in rows {
            let Some(account) = accounts.iter().find(|a| a.srv_id == row.srv_id) else {
                tracing::warn!(srv_id = %row.srv_id, "transfer {} dropped: its server has no account any more", row.id);
                let id = row.id;
                let _ = self
                    .blocking(move |e| e.state(|tx| tx.end_transfer(id)))
                    .await;
                continue;
            };
            let client = account
                .client(&self.extra_ca_files, self.limits.max_package_bytes)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(srv_id = %row.srv_id, "transfer {} of {} goes on from {} bytes", row.id, row.client_uri, row.done);
            drop(start(
                self,
                client,
                objects.clone(),
                account.clone(),
                row,
                None,
            ));
            resumed += 1;
        }
        Ok(resumed)
    }

    /// The network moved: transfers go on at once, on a new connection.
    pub fn network_moved(&self) {
        self.network_moves.send_modify(|moves| *moves += 1);
    }
}

/// Starts the transfer of `row` as a task of the engine; its outcome comes on the
/// returned channel (also when nobody waits for it any more).
fn start(
    engine: &Arc<Engine>,
    client: Arc<HttpClient>,
    objects: Objects,
    account: Account,
    row: TransferRow,
    first: Option<Streaming>,
) -> oneshot::Receiver<Ended> {
    let (tx, rx) = oneshot::channel();
    let engine = Arc::clone(engine);
    let tasks = engine.tasks.clone();
    tasks.clone().spawn(async move {
        let id = row.id;
        let run = run(&engine, &client, &objects, &account, &row, first);
        let ended = tokio::select! {
            ended = run => ended,
            // Stopping: the record stays, the next start goes on from the last checkpoint.
            () = tasks.stopped() => return,
        };
        engine.board.set_state(
            id,
            if ended.is_ok() {
                State::Done
            } else {
                State::Failed
            },
            ended
                .as_ref()
                .err()
                .map(|r| steer::public(&r.reason, &row.server_uri))
                .unwrap_or_default(),
        );
        finish(&engine, &objects, &row, &ended).await;
        let _ = tx.send(ended);
    });
    rx
}

/// The transfer itself, and for a download the leaf written.
async fn run(
    engine: &Arc<Engine>,
    client: &HttpClient,
    objects: &Objects,
    account: &Account,
    row: &TransferRow,
    first: Option<Streaming>,
) -> Ended {
    let suspended = engine.board.add(
        Progress {
            id: row.id,
            srv_id: row.srv_id.clone(),
            direction: if row.upload {
                Direction::Upload
            } else {
                Direction::Download
            },
            server_uri: row.server_uri.clone(),
            client_uri: row.client_uri.clone(),
            state: State::Running,
            done: row.done,
            total: row.total,
            rate: 0,
            error: String::new(),
        },
        row.suspended,
    );
    let principal = Principal::Server(account.srv_id.clone());
    let (who, target) = (principal.clone(), row.client_uri.clone());
    if row.upload {
        let found = blocking(&engine.auth, move |auth| {
            auth.object_at(&who, &recorded_uri(&target)?)
        })
        .await
        .map_err(|f| refused(f.status(), f.to_string()))?;
        let Some((_, object)) = found else {
            return Err(refused(
                409,
                format!("{} no longer holds a large object", row.client_uri),
            ));
        };
        let (store, id) = (Arc::clone(&engine.store), row.id);
        let save = move |suspended: bool| {
            persist(Arc::clone(&store), move |tx| {
                tx.suspend_transfer(id, suspended)
            })
        };
        Upload {
            steer: steer(engine, row, suspended),
            client,
            method: if row.post { Method::Post } else { Method::Put },
            url: &row.server_uri,
            objects,
            object,
            save: &save,
        }
        .run()
        .await?;
        return Ok(None);
    }
    let (addr, room) = blocking(&engine.auth, move |auth| {
        auth.object_target(&who, &recorded_uri(&target)?)
    })
    .await
    .map_err(|f| refused(f.status(), f.to_string()))?;
    let (store, id) = (Arc::clone(&engine.store), row.id);
    let save = move |at: Saved, suspended: bool| {
        persist(Arc::clone(&store), move |tx| {
            tx.transfer_checkpoint(
                id,
                &Checkpoint {
                    validator: at.validator.as_deref(),
                    total: at.total,
                    done: at.done,
                    digest: at.digest.as_deref().unwrap_or_default(),
                    expected: at.expected.as_ref().map(|e| &e[..]),
                },
            )?;
            tx.suspend_transfer(id, suspended)
        })
    };
    let saved = Saved {
        validator: row.validator.clone(),
        total: row.total,
        done: row.done,
        digest: row.digest.clone(),
        expected: row
            .expected
            .as_deref()
            .and_then(|e| <[u8; 32]>::try_from(e).ok()),
    };
    let fetched = Download {
        steer: steer(engine, row, suspended),
        client,
        url: &row.server_uri,
        part: objects.part(row.id),
        max_bytes: engine.limits.object_bytes.min(room),
        checkpoint_bytes: CHECKPOINT_BYTES,
        save: &save,
    }
    .run(saved, first)
    .await?;
    commit(engine, objects, &principal, &addr, fetched)
        .await
        .map(Some)
}

/// What transfer `id` answers to: the engine's board and network moves.
fn steer<'a>(
    engine: &'a Engine,
    row: &'a TransferRow,
    suspended: watch::Receiver<bool>,
) -> Steer<'a> {
    Steer {
        id: row.id,
        url: &row.server_uri,
        board: &engine.board,
        suspended,
        network: engine.network_moves.subscribe(),
        max_wait: MAX_WAIT,
        give_up: GIVE_UP,
    }
}

/// Writes a transfer's record on a store thread.
fn persist(
    store: Arc<Pool>,
    write: impl FnOnce(&mut Txn<'_>) -> Result<(), StoreError> + Send + 'static,
) -> BoxFuture<'static, Result<(), String>> {
    async move {
        crate::store::offload(crate::store::Lane::Background, move || {
            store.writer().write(write).map(drop)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }
    .boxed()
}

/// A transfer's recorded ClientURI, parsed again (it was a node's address when recorded).
fn recorded_uri(text: &str) -> Result<ClientUri, crate::authority::AccessError> {
    ClientUri::parse(text).map_err(|e| crate::authority::AccessError::InvalidUri(e.to_string()))
}

/// Publishes a complete download and writes the leaf.
async fn commit(
    engine: &Arc<Engine>,
    objects: &Objects,
    who: &Principal,
    addr: &NodeAddr,
    fetched: Fetched,
) -> Result<ObjectRef, Refused> {
    let object = ObjectRef {
        size: fetched.size,
        sha256: fetched.sha256,
    };
    let _publishing = PUBLISHING.read().await;
    let (dir, path) = (objects.clone(), fetched.path);
    crate::store::offload(crate::store::Lane::Background, move || {
        dir.publish(&path, &object)
    })
    .await
    .map_err(|e| refused(500, e.to_string()))?
    .map_err(|e| refused(500, format!("publishing the object: {e}")))?;
    let (who, target) = (who.clone(), addr.to_string());
    blocking(&engine.auth, move |auth| {
        auth.set(
            &who,
            target.as_str(),
            Some(Format::Bin),
            Input::Object(object),
        )
    })
    .await
    .map_err(|f| refused(f.status(), f.to_string()))?;
    engine
        .store
        .durable()
        .await
        .map_err(|e| refused(500, e.to_string()))?;
    Ok(object)
}

/// Forgets the transfer (queuing its result alert when the session answered `202`),
/// removes what a failed download left, and sweeps objects no node refers to.
async fn finish(engine: &Arc<Engine>, objects: &Objects, row: &TransferRow, ended: &Ended) {
    let alert = result_alert(row, ended);
    let (id, srv_id, objects) = (row.id, row.srv_id.clone(), objects.clone());
    let ran = engine
        .blocking(move |e| {
            let later = e.state(|tx| tx.end_transfer(id))?;
            if later {
                e.queue_alert(&srv_id, &alert);
            }
            sweep(e, &objects)
        })
        .await;
    match ran {
        Ok(0) => {}
        Ok(n) => tracing::debug!("{n} object file(s) no node refers to removed"),
        Err(e) => tracing::error!("transfer {id}: {e}", id = row.id),
    }
    match ended {
        Ok(_) => {
            tracing::info!(srv_id = %row.srv_id, "transfer {} of {} done", row.id, row.client_uri)
        }
        Err(r) => {
            tracing::warn!(srv_id = %row.srv_id, "transfer {} of {} failed: {}: {}", row.id, row.client_uri, r.status, r.reason)
        }
    }
}

/// Removes object files no node refers to, and part files no transfer owns; returns how
/// many. Blocking.
fn sweep(engine: &Engine, objects: &Objects) -> Result<usize, super::SessionError> {
    let _sweeping = PUBLISHING.blocking_write();
    let store = engine.store.reader();
    let referenced = store.object_refs()?;
    let running = store.transfers()?.iter().map(|t| t.id).collect();
    drop(store);
    objects
        .sweep(&referenced, &running)
        .map_err(|err| super::SessionError::Local(format!("sweeping object files: {err}")))
}

/// The `TransferResult` alert of a transfer.
fn result_alert(row: &TransferRow, ended: &Ended) -> Alert {
    let mut alert = Alert::of_type(TRANSFER_RESULT);
    alert.source_uri = Some(row.client_uri.clone());
    alert.target_uri = Some(row.server_uri.clone());
    alert.data = Some(match ended {
        Ok(Some(o)) => serde_json::json!({"sc": 200, "bytes": o.size, "sha256": o.hex()}),
        Ok(None) => serde_json::json!({"sc": 200}),
        Err(r) => serde_json::json!({"sc": r.status, "error": r.reason}),
    });
    alert
}

fn refused(status: u16, reason: impl Into<String>) -> Refused {
    Refused {
        status,
        reason: reason.into(),
    }
}
