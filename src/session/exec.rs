//! EXEC handlers: commands an administrator maps to ClientURI patterns in the
//! configuration (`[exec."<ClientURI pattern>"] command = [...]`). The command runs with
//! `OMADM_CLIENT_URI` (the executed node) and `OMADM_SERVER_ID` in its environment; exit 0
//! is `200`, anything else `500`; its standard output (up to 64 KiB) is the result.

use std::collections::BTreeMap;
use std::process::Stdio;

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
    let out = tokio::process::Command::new(program)
        .args(args)
        .env("OMADM_CLIENT_URI", addr.to_string())
        .env("OMADM_SERVER_ID", srv_id)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    match out {
        Ok(out) => {
            let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
            output.truncate(MAX_OUTPUT);
            ExecResult {
                status: if out.status.success() { 200 } else { 500 },
                output,
            }
        }
        Err(e) => ExecResult {
            status: 500,
            output: format!("cannot run {program}: {e}"),
        },
    }
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
}
