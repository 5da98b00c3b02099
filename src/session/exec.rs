//! EXEC handlers: commands an administrator maps to ClientURI patterns in the
//! configuration (`[exec."<ClientURI pattern>"] command = [...]`). The command runs with
//! `OMADM_CLIENT_URI` (the executed node) and `OMADM_SERVER_ID` in its environment; exit 0
//! is `200`, anything else `500`; its standard output is the result: the first 64 KiB are
//! kept (cut on a character boundary), the rest is read and discarded so that the handler is
//! not blocked on a full pipe. Its standard error is discarded.
//!
//! An asynchronous EXEC (one with a ServerURI) reports its result later, as an
//! [`alert::EXEC_RESULT`] alert ([`result_alert`]). It is recorded in the store before its
//! handler starts, and forgotten in the transaction that queues its result (see
//! [`super::engine::Engine::start_async_exec`]); if the daemon stops or crashes meanwhile,
//! its result is [`interrupted`]: status [`INTERRUPTED_STATUS`], output
//! [`INTERRUPTED_OUTPUT`] — queued when the daemon gives up on the handler at shutdown, or by
//! the next daemon at start for a handler it finds recorded.

use std::collections::BTreeMap;
use std::process::{ExitStatus, Stdio};

use tokio::io::AsyncReadExt as _;
use tokio::process::Child;

use crate::protocol::{Alert, alert};
use crate::tree::uri::{ClientUri, NodeAddr};

/// The configured handlers, in pattern order.
#[derive(Clone, Debug, Default)]
pub struct ExecHandlers {
    handlers: Vec<(ClientUri, Vec<String>)>,
}

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
        Ok(ExecHandlers { handlers })
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
