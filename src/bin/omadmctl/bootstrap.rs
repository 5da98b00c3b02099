//! `omadmctl bootstrap` and `omadmctl factory-reset`: a factory bootstrap file applied on
//! request (omadmd reads the file, omadmctl only names it), and the factory reset with its
//! confirmation.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::Path;

use crate::client::Client;
use crate::failure::Failure;

/// The absolute form of `file`, for omadmd to read. Nothing is read here.
pub fn absolute(file: &Path) -> Result<String, Failure> {
    let path = std::path::absolute(file)
        .map_err(|e| Failure::usage(format!("{}: {e}", file.display())))?;
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| Failure::usage(format!("{}: the path is not UTF-8", path.display())))
}

/// Asks omadmd to apply the bootstrap file at `path` (absolute).
pub async fn apply(client: &Client, path: &str) -> Result<(), Failure> {
    client
        .proxy
        .bootstrap(path)
        .await
        .map_err(|e| client.fail(e))
}

/// Unless `yes`, asks on the terminal whether to reset; without a terminal, refuses.
pub fn confirm_reset(yes: bool) -> Result<(), Failure> {
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Failure::usage(
            "factory-reset removes every MO instance; with no terminal to confirm on, pass --yes",
        ));
    }
    eprint!(
        "A factory reset removes every MO instance but DevInfo and SessionInfo, with every \
         grant and subscription, and applies the bootstrap files again.\n\
         Type \"yes\" to reset: "
    );
    // The prompt is a courtesy: if stderr is gone, the answer still decides.
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Failure::new(1, format!("reading the answer: {e}")))?;
    if answer.trim() == "yes" {
        Ok(())
    } else {
        Err(Failure::new(1, "factory reset cancelled"))
    }
}

/// Asks omadmd for the factory reset.
pub async fn factory_reset(client: &Client) -> Result<(), Failure> {
    client
        .proxy
        .factory_reset()
        .await
        .map_err(|e| client.fail(e))
}
