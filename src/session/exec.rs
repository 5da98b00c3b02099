//! EXEC handlers (ARCHITECTURE.md §7): commands an administrator maps to ClientURI patterns
//! in the configuration (`[exec."<ClientURI pattern>"] command = [...]`), and local apps
//! registered over D-Bus as the handler of a MOID ([`AppHandlers`], kept by the D-Bus face).
//! A configured command wins over an app for the same node: the administrator's choice. No
//! handler: `501`.
//!
//! A configured command runs with `OMADM_CLIENT_URI` (the executed node) and
//! `OMADM_SERVER_ID` in its environment; exit 0 is `200`, anything else `500`; its standard
//! output is the result: the first 64 KiB are kept (cut on a character boundary), the rest is
//! read and discarded so that the handler is not blocked on a full pipe. Its standard error is
//! discarded. It runs to its end.
//!
//! An app is called with `Execute(client_uri, data)` (`data`: the executed node's value as
//! text, as the server may read it; empty for an interior node or one it may not read) and
//! answers `(status, result)`: the status is the EXEC's when it is one of [`APP_STATUSES`],
//! else `500`; the result is kept like a command's output (64 KiB). An app that is gone (it
//! left the bus, or no one answered the call) is `501` with no result, like no handler; a
//! failed call `500`; an app must answer within [`APP_SYNC_SECONDS`] during a session (the
//! session's deadline may come first) and within [`APP_ASYNC_SECONDS`] for an asynchronous
//! EXEC, else `500`. Why a call failed goes to the log, not to the server.
//!
//! A synchronous EXEC's status carries its handler's result, when there is one, as `Data`
//! ([`status`]): one item, `ClientURI` the executed node, `MOData` its name (the MIID for an
//! instance root) holding the result text; left out, the status kept, when it does not fit
//! in Package#3 ([`super::package3`]).
//!
//! An asynchronous EXEC (one with a ServerURI) reports its result later, as an
//! [`alert::EXEC_RESULT`] alert ([`result_alert`]), whichever handler ran it. It is recorded
//! in the store before its handler starts, and forgotten in the transaction that queues its
//! result (see [`super::engine::Engine::start_async_exec`]); if the daemon stops or crashes
//! meanwhile, its result is [`interrupted`]: status [`INTERRUPTED_STATUS`], output
//! [`INTERRUPTED_OUTPUT`] — queued when the daemon gives up on the handler at shutdown, or by
//! the next daemon at start for a handler it finds recorded.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use tokio::process::Child;
use tokio::time::Instant;

use super::children::Children;
use crate::protocol::{Alert, Items, Status, alert};
use crate::tree::json::MoItem;
use crate::tree::uri::{ClientUri, NodeAddr};

/// The configured handlers, in pattern order, and the apps registered for MOIDs.
#[derive(Clone, Debug, Default)]
pub struct ExecHandlers {
    handlers: Vec<(ClientUri, Vec<String>)>,
    apps: Option<Arc<dyn AppHandlers>>,
}

/// The local apps registered as the EXEC handler of a MOID, at most one per MOID. The D-Bus
/// face keeps the registrations and makes the calls; sessions see only this.
pub trait AppHandlers: Send + Sync + std::fmt::Debug {
    /// Whether an app is registered for `moid`.
    fn handles(&self, moid: &str) -> bool;

    /// Calls the app registered for `moid` with the EXEC of `client_uri` and `data`; its
    /// answer `(status, result)` as it gave it. Not bounded in time: the caller bounds it.
    fn execute(&self, moid: &str, client_uri: &str, data: &str) -> AppCall;
}

/// A call of an app's EXEC handler under way.
pub type AppCall = Pin<Box<dyn Future<Output = Result<(i32, String), AppError>> + Send>>;

/// Why an app gave no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// No app answers for the MOID: none is registered, it left the bus, or it does not
    /// serve the call (`501`).
    #[error("no app handles it any more: {0}")]
    Gone(String),
    /// The call failed otherwise (`500`).
    #[error("the app's handler failed: {0}")]
    Failed(String),
}

/// What runs an EXEC.
#[derive(Clone, Debug)]
pub enum Handler {
    /// A command from the configuration.
    Command(Vec<String>),
    /// The app registered for the node's MOID.
    App(Arc<dyn AppHandlers>),
    /// The device behind the gateway whose instance the node is in: it runs its own
    /// resource (docs/gateway.md §4).
    Child(Arc<dyn Children>),
}

/// The statuses an app's answer may give an EXEC: those of PROTOCOL.md §4 but `202` (an
/// asynchronous EXEC's), `304` (a cache validator's), `401` (authentication's) and `406`/`415`
/// (formats'). Any other is `500`.
pub const APP_STATUSES: [u16; 9] = [200, 400, 403, 404, 405, 409, 413, 500, 501];
/// Most seconds an app may take to answer an EXEC run within a session (the session's
/// deadline may come first).
pub const APP_SYNC_SECONDS: u64 = 120;
/// Most seconds an app may take to answer an asynchronous EXEC.
pub const APP_ASYNC_SECONDS: u64 = 3600;

/// A handler's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecResult {
    pub status: u16,
    pub output: String,
}

const MAX_OUTPUT: usize = 64 * 1024;

/// The `sc` of an interrupted asynchronous EXEC's result.
pub const INTERRUPTED_STATUS: u16 = 500;
/// The output of an interrupted asynchronous EXEC's result.
pub const INTERRUPTED_OUTPUT: &str = "interrupted: omadmd stopped before the handler finished";

/// The result of an asynchronous EXEC whose handler the daemon stopped waiting for.
pub fn interrupted() -> ExecResult {
    ExecResult {
        status: INTERRUPTED_STATUS,
        output: INTERRUPTED_OUTPUT.to_owned(),
    }
}

/// The alert reporting `result` of an asynchronous EXEC of `client_uri` to `target_uri`.
pub fn result_alert(client_uri: &str, target_uri: &str, result: &ExecResult) -> Alert {
    let mut alert = Alert::of_type(alert::EXEC_RESULT);
    alert.source_uri = Some(client_uri.to_owned());
    alert.target_uri = Some(target_uri.to_owned());
    alert.data = Some(serde_json::json!({ "sc": result.status, "output": result.output }));
    alert
}

impl ExecHandlers {
    /// Builds the handlers from the configuration's `[exec]` table.
    pub fn from_config(table: &BTreeMap<String, Vec<String>>) -> Result<ExecHandlers, String> {
        let mut handlers = Vec::new();
        for (pattern, command) in table {
            let uri = ClientUri::parse(pattern).map_err(|e| format!("[exec] {e}"))?;
            if command.is_empty() {
                return Err(format!("[exec.\"{pattern}\"] command is empty"));
            }
            handlers.push((uri, command.clone()));
        }
        Ok(ExecHandlers {
            handlers,
            apps: None,
        })
    }

    /// These handlers, and after them the apps registered in `apps`.
    pub fn with_apps(self, apps: Arc<dyn AppHandlers>) -> ExecHandlers {
        ExecHandlers {
            apps: Some(apps),
            ..self
        }
    }

    /// The handler for the node at `addr`: a configured command first (the administrator's
    /// choice), else the app registered for its MOID.
    pub fn handler(&self, addr: &NodeAddr) -> Option<Handler> {
        if let Some(command) = self.find(addr) {
            return Some(Handler::Command(command.to_vec()));
        }
        self.apps
            .as_ref()
            .filter(|apps| apps.handles(&addr.moid))
            .map(|apps| Handler::App(Arc::clone(apps)))
    }

    /// The command for the node at `addr`, if one is configured.
    pub fn find(&self, addr: &NodeAddr) -> Option<&[String]> {
        self.handlers
            .iter()
            .find(|(uri, _)| {
                uri.covers(addr)
                    && uri.path.len() == addr.path.split('/').filter(|s| !s.is_empty()).count()
            })
            .map(|(_, cmd)| cmd.as_slice())
    }
}

impl Handler {
    /// Runs the EXEC of `addr` on behalf of `srv_id`. An app is called with `data` and must
    /// answer by `until`, and so must a child; a configured command runs to its end.
    pub async fn run(
        &self,
        addr: &NodeAddr,
        srv_id: &str,
        data: &str,
        until: Instant,
    ) -> ExecResult {
        match self {
            Handler::Command(command) => run(command, addr, srv_id).await,
            Handler::Child(children) => match children.exec(addr.clone(), until).await {
                Ok(()) => ExecResult {
                    status: 200,
                    output: String::new(),
                },
                Err(failure) => {
                    tracing::warn!(srv_id = %srv_id, "EXEC {addr}: {failure}");
                    ExecResult {
                        status: failure.status,
                        output: failure.message,
                    }
                }
            },
            Handler::App(apps) => {
                let call = apps.execute(&addr.moid, &addr.to_string(), data);
                match tokio::time::timeout_at(until, call).await {
                    Ok(answer) => app_result(addr, answer),
                    Err(_) => {
                        tracing::warn!(srv_id = %srv_id, "EXEC {addr}: the app did not answer in time");
                        ExecResult {
                            status: 500,
                            output: "the EXEC handler did not answer in time".into(),
                        }
                    }
                }
            }
        }
    }
}

/// When an app must have answered an EXEC run within a session that ends by `deadline`.
pub fn sync_until(deadline: Instant) -> Instant {
    deadline.min(Instant::now() + Duration::from_secs(APP_SYNC_SECONDS))
}

/// When an app must have answered an asynchronous EXEC started now.
pub fn async_until() -> Instant {
    Instant::now() + Duration::from_secs(APP_ASYNC_SECONDS)
}

/// An app's answer to the EXEC of `addr` as its result: a status among [`APP_STATUSES`], the
/// result within 64 KiB.
fn app_result(addr: &NodeAddr, answer: Result<(i32, String), AppError>) -> ExecResult {
    match answer {
        Ok((status, result)) => {
            let status = match u16::try_from(status) {
                Ok(sc) if APP_STATUSES.contains(&sc) => sc,
                _ => {
                    tracing::warn!(
                        "EXEC {addr}: the app answered status {status}, which an EXEC cannot have: 500"
                    );
                    500
                }
            };
            ExecResult {
                status,
                output: text_within(result.as_bytes(), MAX_OUTPUT),
            }
        }
        // The details (bus names, D-Bus errors) are for the log, not for the server.
        Err(e) => {
            tracing::info!("EXEC {addr}: {e}");
            match e {
                AppError::Gone(_) => ExecResult {
                    status: 501,
                    output: String::new(),
                },
                AppError::Failed(_) => ExecResult {
                    status: 500,
                    output: "the EXEC handler failed".into(),
                },
            }
        }
    }
}

/// The status of a synchronous EXEC of `addr` that gave `result`: its code, and its output
/// as `Data` when there is any (one item: the executed node's name holding the text).
pub fn status(addr: &NodeAddr, result: ExecResult) -> Status {
    let mut status = Status::code(result.status);
    if !result.output.is_empty() {
        let name = addr
            .path
            .rsplit('/')
            .find(|s| !s.is_empty())
            .unwrap_or(&addr.miid);
        status.data = Some(Items::of(&[MoItem {
            ddf: None,
            client_uri: addr.to_string(),
            cv: None,
            mo_data: serde_json::Map::from_iter([(
                name.to_owned(),
                serde_json::Value::String(result.output),
            )]),
        }]));
    }
    status
}

/// Runs a handler command for `addr` on behalf of `srv_id`.
pub async fn run(command: &[String], addr: &NodeAddr, srv_id: &str) -> ExecResult {
    let Some((program, args)) = command.split_first() else {
        return ExecResult {
            status: 500,
            output: "empty command".into(),
        };
    };
    let spawned = tokio::process::Command::new(program)
        .args(args)
        .env("OMADM_CLIENT_URI", addr.to_string())
        .env("OMADM_SERVER_ID", srv_id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let result = match spawned {
        Ok(mut child) => collect(&mut child).await,
        Err(e) => Err(e),
    };
    match result {
        Ok((status, output)) => ExecResult {
            status: if status.success() { 200 } else { 500 },
            output,
        },
        Err(e) => ExecResult {
            status: 500,
            output: format!("cannot run {program}: {e}"),
        },
    }
}

/// Waits for `child` to exit, keeping at most [`MAX_OUTPUT`] bytes of its output.
async fn collect(child: &mut Child) -> std::io::Result<(ExitStatus, String)> {
    let mut kept = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        (&mut stdout)
            .take(MAX_OUTPUT as u64)
            .read_to_end(&mut kept)
            .await?;
        tokio::io::copy(&mut stdout, &mut tokio::io::sink()).await?;
    }
    let status = child.wait().await?;
    Ok((status, text_within(&kept, MAX_OUTPUT)))
}

/// `bytes` as text (invalid UTF-8 replaced), at most `max` bytes of it, cut where a
/// character starts.
fn text_within(bytes: &[u8], max: usize) -> String {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn configured_commands_run_with_the_node_in_their_environment() {
        let table = BTreeMap::from([
            (
                "urn:oma:mo:x:1.0/*/Reboot".to_owned(),
                vec![
                    "sh".to_owned(),
                    "-c".to_owned(),
                    "echo $OMADM_CLIENT_URI $OMADM_SERVER_ID".to_owned(),
                ],
            ),
            (
                "urn:oma:mo:x:1.0/*/Fail".to_owned(),
                vec!["false".to_owned()],
            ),
        ]);
        let h = ExecHandlers::from_config(&table).unwrap();
        let reboot = NodeAddr::root("urn:oma:mo:x:1.0", "m").child("Reboot");
        let cmd = h.find(&reboot).unwrap();
        let r = run(cmd, &reboot, "srv1").await;
        assert_eq!(
            r,
            ExecResult {
                status: 200,
                output: "urn:oma:mo:x:1.0/m/Reboot srv1\n".into()
            }
        );
        let fail = NodeAddr::root("urn:oma:mo:x:1.0", "m").child("Fail");
        assert_eq!(run(h.find(&fail).unwrap(), &fail, "s").await.status, 500);
        assert!(
            h.find(&NodeAddr::root("urn:oma:mo:x:1.0", "m").child("Other"))
                .is_none()
        );
        assert!(
            h.find(&NodeAddr::root("urn:oma:mo:x:1.0", "m")).is_none(),
            "a parent of the pattern is not a match"
        );
        assert_eq!(
            run(&["/nonexistent".into()], &reboot, "s").await.status,
            500
        );
        assert!(
            ExecHandlers::from_config(&BTreeMap::from([("bad".to_owned(), vec!["x".to_owned()])]))
                .is_err()
        );
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()]
    }

    #[tokio::test]
    async fn long_output_is_cut_on_a_character_boundary_and_the_rest_discarded() {
        let addr = NodeAddr::root("urn:oma:mo:x:1.0", "m").child("Run");
        // One byte, then two-byte characters: the 64 KiB mark falls inside one. Then
        // 10 MB more, which must be read to the end for the handler to exit.
        let r = run(
            &sh(
                "printf x; i=0; while [ $i -lt 40000 ]; do printf 'é'; i=$((i+1)); done; \
                 head -c 10000000 /dev/zero; exit 3",
            ),
            &addr,
            "s",
        )
        .await;
        assert_eq!(r.status, 500, "the exit status is kept");
        assert_eq!(
            r.output.len(),
            MAX_OUTPUT - 1,
            "cut before the split character"
        );
        assert!(r.output.starts_with("xéé") && r.output.ends_with('é'));
        assert_eq!(r.output.chars().filter(|c| *c == 'é').count(), 32767);

        let r = run(&sh("printf 'ok é'"), &addr, "s").await;
        assert_eq!(
            r,
            ExecResult {
                status: 200,
                output: "ok é".into()
            }
        );
    }

    #[test]
    fn results_go_out_as_project_alerts() {
        let a = result_alert("urn:x:1.0/m/Run", "https://s/r", &interrupted());
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::json!({
                "AlertType": "urn:oma:at:ext-omadmd:1.0:ExecResult",
                "SourceURI": "urn:x:1.0/m/Run",
                "TargetURI": "https://s/r",
                "Data": {"sc": 500, "output": "interrupted: omadmd stopped before the handler finished"}
            })
        );
    }

    /// Apps for a test: one registered MOID, answering each call with `answer` (or never).
    #[derive(Debug)]
    struct FakeApps {
        moid: &'static str,
        answer: Option<Result<(i32, String), AppError>>,
        calls: std::sync::Mutex<Vec<(String, String, String)>>,
    }

    impl AppHandlers for FakeApps {
        fn handles(&self, moid: &str) -> bool {
            moid == self.moid
        }

        fn execute(&self, moid: &str, client_uri: &str, data: &str) -> AppCall {
            self.calls
                .lock()
                .unwrap()
                .push((moid.into(), client_uri.into(), data.into()));
            match self.answer.clone() {
                Some(answer) => Box::pin(async move { answer }),
                None => Box::pin(std::future::pending()),
            }
        }
    }

    fn apps(answer: Option<Result<(i32, String), AppError>>) -> Arc<FakeApps> {
        Arc::new(FakeApps {
            moid: "urn:oma:mo:x:1.0",
            answer,
            calls: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[tokio::test]
    async fn a_configured_command_wins_over_the_app_of_the_moid() {
        let table = BTreeMap::from([("urn:oma:mo:x:1.0/*/Reboot".to_owned(), sh("echo cmd"))]);
        let app = apps(Some(Ok((200, "app".into()))));
        let h = ExecHandlers::from_config(&table)
            .unwrap()
            .with_apps(app.clone());
        let reboot = NodeAddr::root("urn:oma:mo:x:1.0", "m").child("Reboot");
        let other = NodeAddr::root("urn:oma:mo:x:1.0", "m").child("Other");
        assert!(matches!(h.handler(&reboot), Some(Handler::Command(_))));
        let r = h
            .handler(&reboot)
            .unwrap()
            .run(&reboot, "s", "", soon())
            .await;
        assert_eq!(r.output, "cmd\n");
        let r = h
            .handler(&other)
            .unwrap()
            .run(&other, "s", "v", soon())
            .await;
        assert_eq!(
            r,
            ExecResult {
                status: 200,
                output: "app".into()
            }
        );
        assert_eq!(
            *app.calls.lock().unwrap(),
            [(
                "urn:oma:mo:x:1.0".to_owned(),
                "urn:oma:mo:x:1.0/m/Other".to_owned(),
                "v".to_owned()
            )]
        );
        let elsewhere = NodeAddr::root("urn:oma:mo:y:1.0", "m").child("Other");
        assert!(h.handler(&elsewhere).is_none(), "no app for that MOID");
        assert!(ExecHandlers::default().handler(&other).is_none());
    }

    #[tokio::test]
    async fn an_apps_answer_is_bounded_to_exec_statuses_and_64_kib() {
        let addr = NodeAddr::root("urn:oma:mo:x:1.0", "m").child("Run");
        let answer = async |a| {
            Handler::App(apps(Some(a)))
                .run(&addr, "s", "", soon())
                .await
        };
        for sc in APP_STATUSES {
            assert_eq!(answer(Ok((i32::from(sc), String::new()))).await.status, sc);
        }
        for odd in [0, -1, 202, 304, 418, 65_536 + 200, i32::MAX] {
            assert_eq!(answer(Ok((odd, "x".into()))).await.status, 500, "{odd}");
        }
        let long = answer(Ok((200, "é".repeat(40_000)))).await;
        assert_eq!(long.output.len(), MAX_OUTPUT);
        // Gone is no handler: 501 without a result; the details stay in the log.
        let gone = answer(Err(AppError::Gone(":1.9 left the bus".into()))).await;
        assert_eq!(
            gone,
            ExecResult {
                status: 501,
                output: String::new()
            }
        );
        let failed = answer(Err(AppError::Failed(":1.9: Error.Failed: /etc/x".into()))).await;
        assert_eq!(failed.status, 500);
        assert!(!failed.output.contains("/etc/x"), "{}", failed.output);
        // An app that never answers: 500 when the time is up.
        let stuck = Handler::App(apps(None))
            .run(&addr, "s", "", Instant::now() + Duration::from_millis(50))
            .await;
        assert_eq!(stuck.status, 500);
        assert!(stuck.output.contains("in time"), "{}", stuck.output);
    }

    #[test]
    fn a_sync_result_travels_in_the_status_named_for_the_node() {
        let run = NodeAddr::root("urn:oma:mo:x:1.0", "m")
            .child("Job")
            .child("Run");
        let busy = status(
            &run,
            ExecResult {
                status: 405,
                output: "busy".into(),
            },
        );
        assert_eq!(
            serde_json::to_value(&busy).unwrap(),
            serde_json::json!({"sc": 405, "Data": [
                {"ClientURI": "urn:oma:mo:x:1.0/m/Job/Run", "MOData": {"Run": "busy"}}]})
        );
        let root = NodeAddr::root("urn:oma:mo:x:1.0", "m");
        let ok = status(
            &root,
            ExecResult {
                status: 200,
                output: "ok".into(),
            },
        );
        assert_eq!(ok.data.unwrap().parse().unwrap()[0].mo_data["m"], "ok");
        let quiet = status(
            &root,
            ExecResult {
                status: 200,
                output: String::new(),
            },
        );
        assert_eq!(quiet, Status::code(200), "no result, no data");
    }

    #[test]
    fn text_is_cut_where_a_character_starts() {
        assert_eq!(text_within("aé€".as_bytes(), 6), "aé€");
        assert_eq!(text_within("aé€".as_bytes(), 5), "aé");
        assert_eq!(text_within("aé€".as_bytes(), 2), "a");
        assert_eq!(text_within("aé€".as_bytes(), 0), "");
        // A character split by the read itself becomes U+FFFD, itself cut if it would not fit.
        assert_eq!(text_within(&"aé".as_bytes()[..2], 2), "a");
        assert_eq!(text_within(&"aé".as_bytes()[..2], 4), "a\u{fffd}");
    }
}
