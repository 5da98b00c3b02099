//! Executing one command of a Package#2 into its status (PROTOCOL.md §3–§4, §9). Every
//! command acts as the session's server principal through the authority — on a background
//! store thread, so that neither a costly read nor a large write holds up the runtime or the
//! session's deadline; data-repository transfers go through the session's HTTPS client.
//!
//! What one server may leave behind or set going is bounded (`[limits]`), each refusal a
//! status of its own while the session goes on:
//! - every ServerURI a command names is at most `server_uri_bytes` long, else `400`;
//! - HPUT/HPOST: the data of all its ClientURIs together is at most `reply_bytes`, else
//!   `413` and nothing is sent;
//! - SUB: the ClientURI is kept without its `cv=`; a server holds at most
//!   `subscriptions_per_server` subscriptions, a new one beyond is `413` (replacing one is
//!   not new);
//! - DEFAULT: only for a MOID the server may manage (`403` otherwise); another server's
//!   source for the MOID is never replaced (`409`) unless that server's account is gone —
//!   so a server has at most one source per MOID of its `Perm`;
//! - EXEC with a ServerURI: at most `exec_concurrent` running per server, a further one is
//!   `429` and does not run; the results wait as alerts, at most
//!   `pending_alerts_per_server` per server (the oldest dropped beyond); an EXEC's handler
//!   is a configured command or a registered app (see [`super::exec`]);
//! - SHOW: one per Package#2 is handed on; a further SHOW in the same package is `429`
//!   and is not announced.

use std::sync::Arc;

use tokio::time::Instant;

use super::account::{self, Account};
use super::engine::{Engine, Limits, media_type};
use super::exec;
use crate::authority::{AccessError, Authority, ItemsJson, Principal};
use crate::protocol::{self, Command, Items, Status};
use crate::store::{self, Lane, Offload};
use crate::transport::{HttpClient, Request};
use crate::tree::json::parse_items;
use crate::tree::uri::{ClientUri, NodeAddr};
use crate::tree::value::ObjectRef;

/// What a command runs with.
pub struct Context<'a> {
    pub engine: &'a Arc<Engine>,
    pub client: &'a Arc<HttpClient>,
    pub account: &'a Account,
    pub principal: &'a Principal,
    /// When the session must have ended (`session_seconds`).
    pub deadline: Instant,
    /// Whether a SHOW of the current Package#2 was handed on already.
    pub shown: bool,
}

/// The MO serialization formats the client reads and writes.
const ACCEPTED: [&str; 2] = [protocol::MO_JSON, "application/json"];

/// Runs `command` (anything but END and CONT, which the package loop handles).
pub async fn execute(ctx: &mut Context<'_>, command: Command) -> Status {
    let name = command.name();
    let result = match server_uri_of(&command) {
        Some(uri) => server_uri_fits(&ctx.engine.limits, uri),
        None => Ok(()),
    };
    let result = match result {
        Ok(()) => run(ctx, command).await,
        Err(e) => Err(e),
    };
    result.unwrap_or_else(|f| {
        let status = f.status();
        tracing::info!(srv_id = %ctx.account.srv_id, "{name}: {status}: {f}");
        Status::code(status)
    })
}

async fn run(ctx: &mut Context<'_>, command: Command) -> Result<Status, Failure> {
    match command {
        Command::Get { client_uri } => get(ctx, client_uri).await,
        Command::Delete { client_uri } => delete(ctx, client_uri).await,
        Command::Hget {
            server_uri,
            client_uri,
        } => hget(ctx, &server_uri, client_uri.as_ref()).await,
        Command::Hput {
            server_uri,
            client_uris,
        } => upload(ctx, &server_uri, client_uris, false).await,
        Command::Hpost {
            server_uri,
            client_uris,
        } => upload(ctx, &server_uri, client_uris, true).await,
        Command::Exec {
            client_uri,
            server_uri,
        } => run_exec(ctx, client_uri, server_uri).await,
        Command::Show { server_uri } => {
            if ctx.shown {
                return Err(Failure::Status(
                    429,
                    format!(
                        "SHOW {server_uri}: one SHOW per Package#2 is offered to user agents; \
                         not announced"
                    ),
                ));
            }
            ctx.shown = true;
            tracing::info!(srv_id = %ctx.account.srv_id, "SHOW {server_uri}: offered to user agents; going on");
            ctx.engine.show(&ctx.account.srv_id, &server_uri);
            Ok(Status::code(200))
        }
        Command::Default { moid, server_uri } => set_default(ctx, &moid, &server_uri).await,
        Command::Sub {
            client_uri,
            server_uri,
        } => subscribe(ctx, client_uri, &server_uri).await,
        Command::Unsub { client_uri } => {
            let uri = without_cv(client_uri).to_string();
            let srv_id = ctx.account.srv_id.clone();
            match ctx
                .engine
                .blocking(move |e| e.state(|tx| tx.unsubscribe(&srv_id, &uri)))
                .await
            {
                Ok(true) => Ok(Status::code(200)),
                Ok(false) => Ok(Status::code(404)),
                Err(e) => Err(Failure::Local(e.to_string())),
            }
        }
        Command::End | Command::Cont { .. } => Ok(Status::code(200)),
    }
}

/// The ServerURI a command names, if any.
fn server_uri_of(command: &Command) -> Option<&str> {
    match command {
        Command::Hget { server_uri, .. }
        | Command::Hput { server_uri, .. }
        | Command::Hpost { server_uri, .. }
        | Command::Show { server_uri }
        | Command::Cont { server_uri }
        | Command::Default { server_uri, .. }
        | Command::Sub { server_uri, .. } => Some(server_uri),
        Command::Exec { server_uri, .. } => server_uri.as_deref(),
        Command::Get { .. } | Command::Delete { .. } | Command::Unsub { .. } | Command::End => None,
    }
}

/// Refuses a ServerURI longer than `server_uri_bytes`.
pub(super) fn server_uri_fits(limits: &Limits, uri: &str) -> Result<(), Failure> {
    if uri.len() > limits.server_uri_bytes {
        return Err(Failure::Status(
            400,
            format!(
                "a ServerURI of {} bytes is longer than server_uri_bytes = {}",
                uri.len(),
                limits.server_uri_bytes
            ),
        ));
    }
    Ok(())
}

/// Runs `f` with the authority on a background store thread and waits for it: the session task
/// stays responsive (its deadline can end it), and the runtime's workers stay free. A panic
/// in `f` goes on in the session task, as if `f` had run there.
pub(super) async fn blocking<T: Send + 'static>(
    auth: &Arc<Authority>,
    f: impl FnOnce(&Authority) -> Result<T, AccessError> + Send + 'static,
) -> Result<T, Failure> {
    let auth = Arc::clone(auth);
    match store::offload(Lane::Background, move || f(&auth)).await {
        Ok(result) => result.map_err(Failure::Access),
        // The session's containment turns it into a 500 (see `engine::contain`).
        Err(Offload::Panicked(payload)) => std::panic::resume_unwind(payload),
        Err(e @ Offload::Stopped) => Err(Failure::Local(e.to_string())),
    }
}

/// `uri` without its `cv=`.
fn without_cv(uri: ClientUri) -> ClientUri {
    ClientUri { cv: None, ..uri }
}

/// Why a command failed, mapped to its status code.
#[derive(Debug, thiserror::Error)]
pub(super) enum Failure {
    #[error(transparent)]
    Access(AccessError),
    #[error("{1}")]
    Status(u16, String),
    #[error("{0}")]
    Local(String),
}

impl Failure {
    pub(super) fn status(&self) -> u16 {
        match self {
            Failure::Access(e) => e.status(),
            Failure::Status(sc, _) => *sc,
            Failure::Local(_) => 500,
        }
    }
}

/// DELETE: on a node of a child behind the gateway, checked, deleted on the child, then in
/// the mirror (checked again).
async fn delete(ctx: &Context<'_>, uri: ClientUri) -> Result<Status, Failure> {
    let mut on_child = false;
    if ctx.engine.has_children() {
        let (who, planned) = (ctx.principal.clone(), uri.clone());
        let addr = blocking(&ctx.engine.auth, move |auth| {
            auth.plan_delete(&who, &planned)
        })
        .await?;
        if let Some(children) = ctx.engine.child_of(&addr) {
            children
                .delete(addr, ctx.deadline)
                .await
                .map_err(|f| Failure::Status(f.status, f.message))?;
            on_child = true;
        }
    }
    let who = ctx.principal.clone();
    match blocking(&ctx.engine.auth, move |auth| auth.delete(&who, &uri)).await {
        Ok(_) => Ok(Status::code(200)),
        // The child's own report of the deletion reached the mirror first.
        Err(Failure::Access(AccessError::NotFound(_))) if on_child => Ok(Status::code(200)),
        Err(e) => Err(e),
    }
}

/// One GET: a run of one.
async fn get(ctx: &Context<'_>, uri: ClientUri) -> Result<Status, Failure> {
    get_run(ctx, vec![uri])
        .await
        .pop()
        .ok_or_else(|| Failure::Status(504, "session_seconds ran out before the GET".into()))
}

/// Most GETs [`get_run`] runs in one store job: a store thread is never held much longer
/// than a millisecond or so, whatever a Package#2 holds.
pub const GET_RUN: usize = 64;

/// Runs consecutive GETs of a Package#2 in one store job, each exactly as [`execute`] runs
/// one: the session asks a store thread once per run rather than once per GET, which is
/// most of a small GET's cost. Stops at the session's deadline: the statuses are those of
/// the GETs that ran, in order.
pub async fn get_run(ctx: &Context<'_>, uris: Vec<ClientUri>) -> Vec<Status> {
    let (who, deadline) = (ctx.principal.clone(), ctx.deadline);
    let ran = blocking(&ctx.engine.auth, move |auth| {
        auth.get_json_each(&who, &uris, || Instant::now() < deadline)
    })
    .await;
    let outcomes = match ran {
        Ok(answers) => answers
            .into_iter()
            .map(|answer| get_status(answer.map_err(Failure::Access)))
            .collect(),
        Err(f) => vec![Err(f)],
    };
    outcomes
        .into_iter()
        .map(|outcome| {
            outcome.unwrap_or_else(|f| {
                let status = f.status();
                tracing::info!(srv_id = %ctx.account.srv_id, "GET: {status}: {f}");
                Status::code(status)
            })
        })
        .collect()
}

/// A GET's status from its answer: `304` when its `cv=` is current, else the items.
fn get_status(answer: Result<Option<Vec<u8>>, Failure>) -> Result<Status, Failure> {
    let Some(json) = answer? else {
        return Ok(Status::code(304));
    };
    let items = Items::from_json(json)
        .map_err(|e| Failure::Local(format!("a GET result is not JSON: {e}")))?;
    Ok(Status {
        sc: 200,
        uri: None,
        data: Some(items),
    })
}

async fn hget(
    ctx: &Context<'_>,
    server_uri: &str,
    target: Option<&ClientUri>,
) -> Result<Status, Failure> {
    if let Some(target) = target {
        let (who, uri) = (ctx.principal.clone(), target.clone());
        let leaf = blocking(&ctx.engine.auth, move |auth| auth.object_target(&who, &uri)).await;
        if let Ok((addr, _)) = leaf
            && let Some(status) = super::large::hget(ctx, server_uri, addr).await?
        {
            return Ok(status);
        }
    }
    let written = fetch_into_tree(
        ctx.engine,
        ctx.client,
        ctx.account,
        server_uri,
        target,
        ctx.deadline,
    )
    .await?;
    Ok(Status {
        sc: 200,
        uri: Some(written.iter().map(|a| a.to_string()).collect()),
        data: None,
    })
}

/// HGET's work: GET the MO serialization at `server_uri` and write it into the tree as
/// `account`'s server (replacing the node at `target`, or where the items say).
///
/// A target in a child's instance (docs/gateway.md §4) is checked first, written on the child
/// (its answer due by `until`), and only then written into the mirror, checked again.
pub(super) async fn fetch_into_tree(
    engine: &Engine,
    client: &HttpClient,
    account: &Account,
    server_uri: &str,
    target: Option<&ClientUri>,
    until: Instant,
) -> Result<Vec<NodeAddr>, Failure> {
    let request = Request::get(server_uri).with_header("Accept", ACCEPTED.join(", "));
    let response = client
        .send(request)
        .await
        .map_err(|e| Failure::Status(500, format!("HGET {server_uri}: {e}")))?;
    if response.status == 406 {
        return Err(Failure::Status(
            406,
            format!("{server_uri} offers none of our formats"),
        ));
    }
    if !response.is_success() {
        let sc = if response.status == 404 { 404 } else { 500 };
        return Err(Failure::Status(
            sc,
            format!("{server_uri} answered HTTP {}", response.status),
        ));
    }
    let content_type = media_type(response.header("Content-Type").unwrap_or_default());
    if !ACCEPTED.contains(&content_type) {
        return Err(Failure::Status(
            415,
            format!("{server_uri} sent {content_type:?}"),
        ));
    }
    let text = std::str::from_utf8(&response.body)
        .map_err(|_| Failure::Status(400, "MO data is not UTF-8".into()))?;
    let items = parse_items(text).map_err(|e| Failure::Status(400, e.to_string()))?;
    let principal = Principal::Server(account.srv_id.clone());
    // A child's instance root takes a partial update: what the data names is replaced.
    let mut merge = false;
    if let Some(target) = target
        && engine.has_children()
    {
        let (who, items, target) = (principal.clone(), items.clone(), target.clone());
        let (addr, node) = blocking(&engine.auth, move |auth| {
            auth.plan_write(&who, &items, &target)
        })
        .await?;
        if let Some(children) = engine.child_of(&addr) {
            merge = addr.path.is_empty();
            children
                .write(addr, node, until)
                .await
                .map_err(|f| Failure::Status(f.status, f.message))?;
        }
    }
    let account = account.clone();
    let target = target.cloned();
    blocking(&engine.auth, move |auth| match &target {
        Some(target) if merge => auth.merge_items(&principal, &items, target),
        target => auth.import_items(&principal, &items, target.as_ref(), &|moid| {
            account.may_manage(moid)
        }),
    })
    .await
}

/// HPUT/HPOST: the MO serialization of every ClientURI's data, one array, sent once. The
/// body is built as the ClientURIs are read and may not grow past `reply_bytes`: beyond,
/// the command is `413` and nothing is sent.
async fn upload(
    ctx: &Context<'_>,
    server_uri: &str,
    uris: Vec<ClientUri>,
    post: bool,
) -> Result<Status, Failure> {
    if let [uri] = uris.as_slice()
        && let Some((addr, object)) = large_object(ctx, uri).await?
    {
        return super::large::upload(ctx, server_uri, &addr, object, post).await;
    }
    let mut body = ItemsJson::new(ctx.engine.limits.reply_bytes);
    let mut all_unchanged = true;
    for uri in uris {
        if Instant::now() >= ctx.deadline {
            return Err(Failure::Status(
                504,
                "session_seconds ran out during the upload".into(),
            ));
        }
        let who = ctx.principal.clone();
        let (unchanged, filled) = blocking(&ctx.engine.auth, move |auth| {
            let changed = auth.write_items_if_changed(&who, &uri, &mut body)?;
            Ok((!changed, body))
        })
        .await?;
        body = filled;
        all_unchanged &= unchanged;
    }
    if all_unchanged {
        return Ok(Status::code(304));
    }
    let status = send_mo(ctx.client, server_uri, body.finish(), post).await?;
    Ok(Status::code(status))
}

/// The leaf `uri` names when it holds a large object the server may read (HPUT/HPOST of
/// it send the object itself); `None` for anything else.
async fn large_object(
    ctx: &Context<'_>,
    uri: &ClientUri,
) -> Result<Option<(NodeAddr, ObjectRef)>, Failure> {
    let (who, uri) = (ctx.principal.clone(), uri.clone());
    blocking(&ctx.engine.auth, move |auth| auth.object_at(&who, &uri)).await
}

/// PUTs or POSTs an MO serialization; on `415` with `OMADM-Accept` naming a format we
/// write, tries once more in that format (`406` when it names none). Returns `200`.
pub(super) async fn send_mo(
    client: &HttpClient,
    server_uri: &str,
    body: Vec<u8>,
    post: bool,
) -> Result<u16, Failure> {
    let mut content_type = protocol::MO_JSON.to_owned();
    for attempt in 0..2 {
        let request = if post {
            Request::post(server_uri, body.clone())
        } else {
            Request::put(server_uri, body.clone())
        };
        let response = client
            .send(request.with_header("Content-Type", &content_type))
            .await
            .map_err(|e| Failure::Status(500, format!("{server_uri}: {e}")))?;
        if response.is_success() {
            return Ok(200);
        }
        if response.status != 415 || attempt == 1 {
            return Err(Failure::Status(
                500,
                format!("{server_uri} answered HTTP {}", response.status),
            ));
        }
        let offered = response
            .header(protocol::ACCEPT_HEADER)
            .unwrap_or_default()
            .to_owned();
        content_type = offered
            .split(',')
            .map(|f| media_type(f.trim()))
            .find(|f| ACCEPTED.contains(f))
            .ok_or_else(|| Failure::Status(406, format!("{server_uri} accepts only {offered:?}")))?
            .to_owned();
    }
    Err(Failure::Status(
        500,
        format!("{server_uri} refused the upload"),
    ))
}

async fn run_exec(
    ctx: &Context<'_>,
    uri: ClientUri,
    result_uri: Option<String>,
) -> Result<Status, Failure> {
    let who = ctx.principal.clone();
    let addr = blocking(&ctx.engine.auth, move |auth| auth.exec_target(&who, &uri)).await?;
    let handler = match ctx.engine.child_of(&addr) {
        Some(children) => exec::Handler::Child(children.clone()),
        None => ctx
            .engine
            .exec
            .handler(&addr)
            .ok_or_else(|| Failure::Status(501, format!("{addr}: no EXEC handler")))?,
    };
    let data = match handler {
        exec::Handler::App(_) => exec_data(ctx, &addr).await,
        exec::Handler::Command(_) | exec::Handler::Child(_) => String::new(),
    };
    let srv_id = ctx.account.srv_id.clone();
    match result_uri {
        None => {
            let result = handler
                .run(&addr, &srv_id, &data, exec::sync_until(ctx.deadline))
                .await;
            Ok(exec::status(&addr, result))
        }
        Some(target) => {
            let Some(slot) = ctx.engine.exec_slot(&srv_id) else {
                return Err(Failure::Status(
                    429,
                    format!(
                        "{addr}: exec_concurrent = {} asynchronous EXECs of this server are \
                         running; not run",
                        ctx.engine.limits.exec_concurrent
                    ),
                ));
            };
            ctx.engine
                .start_async_exec(slot, handler, data, addr, target)
                .await
                .map_err(Failure::Local)?;
            Ok(Status::code(202))
        }
    }
}

/// What an app's EXEC handler is called with: the value of the node at `addr` as text, as
/// the server may read it; empty for an interior node, or one the server may not read.
async fn exec_data(ctx: &Context<'_>, addr: &NodeAddr) -> String {
    let (who, uri) = (ctx.principal.clone(), addr.to_string());
    blocking(&ctx.engine.auth, move |auth| auth.get(&who, uri.as_str()))
        .await
        .ok()
        .and_then(|found| found.into_iter().next())
        .and_then(|f| f.value)
        .map(|v| v.to_text())
        .unwrap_or_default()
}

/// SUB: the subtree must be there for the server to read; kept without `cv=` (one
/// subscription per subtree, whatever validator the server names).
async fn subscribe(ctx: &Context<'_>, uri: ClientUri, server_uri: &str) -> Result<Status, Failure> {
    let uri = without_cv(uri);
    let text = uri.to_string();
    let who = ctx.principal.clone();
    blocking(&ctx.engine.auth, move |auth| auth.get(&who, &uri).map(drop)).await?;
    let max = ctx.engine.limits.subscriptions_per_server;
    let (srv_id, subscribed, server_uri) = (
        ctx.account.srv_id.clone(),
        text.clone(),
        server_uri.to_owned(),
    );
    match ctx
        .engine
        .blocking(move |e| e.state(|tx| tx.subscribe(&srv_id, &subscribed, &server_uri, max)))
        .await
    {
        Ok(true) => Ok(Status::code(200)),
        Ok(false) => Err(Failure::Status(
            413,
            format!(
                "{text}: the server holds subscriptions_per_server = {max} subscriptions \
                 already; UNSUB one first"
            ),
        )),
        Err(e) => Err(Failure::Local(e.to_string())),
    }
}

/// DEFAULT: only for a MOID the server may manage; another server's source stays unless
/// that server's account is gone.
async fn set_default(ctx: &Context<'_>, moid: &str, server_uri: &str) -> Result<Status, Failure> {
    let srv_id = &ctx.account.srv_id;
    if !ctx.account.may_manage(moid) {
        return Err(Failure::Status(
            403,
            format!("{moid} is not among the MOIDs this server may manage"),
        ));
    }
    let wanted = moid.to_owned();
    let holder = ctx
        .engine
        .blocking(move |e| e.with_state(|s| s.default_source(&wanted)))
        .await
        .map_err(|e| Failure::Local(e.to_string()))?
        .map(|(holder, _)| holder)
        .filter(|holder| holder != srv_id);
    let replaceable = match holder {
        None => None,
        Some(holder) => {
            let accounts = blocking(&ctx.engine.auth, account::load_all).await?;
            if accounts.iter().any(|a| a.srv_id == holder) {
                None
            } else {
                Some(holder)
            }
        }
    };
    let (source, srv_id, server_uri) = (moid.to_owned(), srv_id.clone(), server_uri.to_owned());
    let set = move |e: &Engine| {
        e.state(|tx| tx.set_default_source(&source, &srv_id, &server_uri, replaceable.as_deref()))
    };
    match ctx.engine.blocking(set).await {
        Ok(true) => Ok(Status::code(200)),
        Ok(false) => Err(Failure::Status(
            409,
            format!("{moid}: another server's DEFAULT source is recorded; it stays"),
        )),
        Err(e) => Err(Failure::Local(e.to_string())),
    }
}
