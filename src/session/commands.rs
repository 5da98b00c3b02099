//! Executing one command of a Package#2 into its status (PROTOCOL.md §3–§4, §9). Every
//! command acts as the session's server principal through the authority; data-repository
//! transfers go through the session's HTTPS client.

use std::sync::Arc;

use super::account::Account;
use super::engine::{Engine, media_type};
use super::exec;
use crate::authority::{AccessError, Authority, Principal};
use crate::protocol::{self, Alert, Command, Status, alert};
use crate::transport::{HttpClient, Request};
use crate::tree::json::{MoItem, parse_items};
use crate::tree::uri::{ClientUri, NodeAddr};

/// What a command runs with.
pub struct Context<'a> {
    pub engine: &'a Arc<Engine>,
    pub client: &'a HttpClient,
    pub account: &'a Account,
    pub principal: &'a Principal,
}

/// The MO serialization formats the client reads and writes.
const ACCEPTED: [&str; 2] = [protocol::MO_JSON, "application/json"];

/// Runs `command` (anything but END and CONT, which the package loop handles).
pub async fn execute(ctx: &mut Context<'_>, command: Command) -> Status {
    let name = command.name();
    let result = match command {
        Command::Get { client_uri } => get(ctx, &client_uri),
        Command::Delete { client_uri } => ctx
            .engine
            .auth
            .delete(ctx.principal, &client_uri.to_string())
            .map(|_| Status::code(200))
            .map_err(Failure::Access),
        Command::Hget {
            server_uri,
            client_uri,
        } => hget(ctx, &server_uri, client_uri.as_ref()).await,
        Command::Hput {
            server_uri,
            client_uris,
        } => upload(ctx, &server_uri, &client_uris, false).await,
        Command::Hpost {
            server_uri,
            client_uris,
        } => upload(ctx, &server_uri, &client_uris, true).await,
        Command::Exec {
            client_uri,
            server_uri,
        } => run_exec(ctx, &client_uri, server_uri).await,
        Command::Show { server_uri } => {
            tracing::info!(srv_id = %ctx.account.srv_id, "SHOW {server_uri}: offered to user agents; going on");
            ctx.engine.show(&ctx.account.srv_id, &server_uri);
            Ok(Status::code(200))
        }
        Command::Default { moid, server_uri } => ctx
            .engine
            .state(|tx| tx.set_default_source(&moid, &ctx.account.srv_id, &server_uri))
            .map(|_| Status::code(200))
            .map_err(|(_, e)| Failure::Local(e)),
        Command::Sub {
            client_uri,
            server_uri,
        } => subscribe(ctx, &client_uri, &server_uri),
        Command::Unsub { client_uri } => {
            let uri = client_uri.to_string();
            match ctx
                .engine
                .state(|tx| tx.unsubscribe(&ctx.account.srv_id, &uri))
            {
                Ok(true) => Ok(Status::code(200)),
                Ok(false) => Ok(Status::code(404)),
                Err((_, e)) => Err(Failure::Local(e)),
            }
        }
        Command::End | Command::Cont { .. } => Ok(Status::code(200)),
    };
    result.unwrap_or_else(|f| {
        let status = f.status();
        tracing::info!(srv_id = %ctx.account.srv_id, "{name}: {status}: {f}");
        Status::code(status)
    })
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
    fn status(&self) -> u16 {
        match self {
            Failure::Access(e) => match e {
                AccessError::NotFound(_) => 404,
                AccessError::Denied(_) => 403,
                AccessError::InvalidUri(_) | AccessError::InvalidValue(_) => 400,
                AccessError::NotAllowed(_) => 405,
                AccessError::Conflict(_) => 409,
                AccessError::Limit(_) => 413,
                AccessError::Store(_) => 500,
            },
            Failure::Status(sc, _) => *sc,
            Failure::Local(_) => 500,
        }
    }
}

fn get(ctx: &Context<'_>, uri: &ClientUri) -> Result<Status, Failure> {
    let auth = &ctx.engine.auth;
    if let Some(cv) = &uri.cv
        && auth
            .cache_validator(ctx.principal, uri)
            .map_err(Failure::Access)?
            .as_ref()
            == Some(cv)
    {
        return Ok(Status::code(304));
    }
    let items = auth
        .get_items(ctx.principal, &uri.to_string())
        .map_err(Failure::Access)?;
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
    let written = fetch_into_tree(
        &ctx.engine.auth,
        ctx.client,
        ctx.account,
        server_uri,
        target,
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
pub(super) async fn fetch_into_tree(
    auth: &Authority,
    client: &HttpClient,
    account: &Account,
    server_uri: &str,
    target: Option<&ClientUri>,
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
    auth.import_items(&principal, &items, target, &|moid| account.may_manage(moid))
        .map_err(Failure::Access)
}

async fn upload(
    ctx: &Context<'_>,
    server_uri: &str,
    uris: &[ClientUri],
    post: bool,
) -> Result<Status, Failure> {
    let auth = &ctx.engine.auth;
    let mut items: Vec<MoItem> = Vec::new();
    let mut all_unchanged = true;
    for uri in uris {
        let unchanged = match &uri.cv {
            Some(cv) => {
                auth.cache_validator(ctx.principal, uri)
                    .map_err(Failure::Access)?
                    .as_ref()
                    == Some(cv)
            }
            None => false,
        };
        all_unchanged &= unchanged;
        if !unchanged {
            items.extend(
                auth.get_items(ctx.principal, &uri.to_string())
                    .map_err(Failure::Access)?,
            );
        }
    }
    if all_unchanged {
        return Ok(Status::code(304));
    }
    let body = serde_json::to_vec(&items).map_err(|e| Failure::Local(e.to_string()))?;
    let status = send_mo(ctx.client, server_uri, body, post).await?;
    Ok(Status::code(status))
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
    uri: &ClientUri,
    result_uri: Option<String>,
) -> Result<Status, Failure> {
    let addr = ctx
        .engine
        .auth
        .exec_target(ctx.principal, uri)
        .map_err(Failure::Access)?;
    let Some(command) = ctx.engine.exec.find(&addr).map(<[String]>::to_vec) else {
        return Err(Failure::Status(501, format!("{addr}: no EXEC handler")));
    };
    let srv_id = ctx.account.srv_id.clone();
    match result_uri {
        None => {
            let result = exec::run(&command, &addr, &srv_id).await;
            Ok(Status::code(result.status))
        }
        Some(target) => {
            let engine = Arc::clone(ctx.engine);
            tokio::spawn(async move {
                let result = exec::run(&command, &addr, &srv_id).await;
                let mut alert = Alert::of_type(alert::EXEC_RESULT);
                alert.source_uri = Some(addr.to_string());
                alert.target_uri = Some(target);
                alert.data =
                    Some(serde_json::json!({ "sc": result.status, "output": result.output }));
                engine.queue_alert(&srv_id, &alert);
            });
            Ok(Status::code(202))
        }
    }
}

fn subscribe(ctx: &Context<'_>, uri: &ClientUri, server_uri: &str) -> Result<Status, Failure> {
    ctx.engine
        .auth
        .get(ctx.principal, &uri.to_string())
        .map_err(Failure::Access)?;
    let text = uri.to_string();
    ctx.engine
        .state(|tx| tx.subscribe(&ctx.account.srv_id, &text, server_uri))
        .map_err(|(_, e)| Failure::Local(e))?;
    Ok(Status::code(200))
}
