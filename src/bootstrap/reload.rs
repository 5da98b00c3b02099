//! Reload: SIGHUP (`systemctl reload omadmd`, whose unit sends it) applies the bootstrap
//! dirs again — the files new or changed since they were last applied, exactly as at start
//! ([`Bootstrap::apply_dirs`]: a bad file refused whole and logged as `file:line: reason`,
//! the others applied) — on the background store lane, and logs one line saying what it
//! did; the daemon keeps running, whatever the outcome.
//!
//! - **One at a time**: [`on_hangup`] runs one reload after another. Hangups that arrive
//!   while one runs are coalesced into one more reload after it, which sees whatever
//!   changed in the dirs meanwhile.
//! - **New accounts**: a DM account a reload adds is a committed change of an account like
//!   any other, so the scheduler greets it (its first session, carrying
//!   `BootstrapComplete`) as it does one that arrives any other way.
//! - **Stopping**: the loop ends when the daemon stops, dropping the signal stream; a
//!   reload running then gets the drain time to finish (each file is its own transaction,
//!   recorded after it, so one cut off is applied again at the next start).
//! - Nothing else is reloaded: the configuration file is read at start only.

use std::sync::Arc;

use tokio::signal::unix::Signal;

use super::{Bootstrap, Report};
use crate::session::Tasks;
use crate::store::{self, Lane, Offload, StoreError};

/// Why a reload did not finish.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    /// The store failed; the files before the one it failed on are applied.
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Offload(#[from] Offload),
}

/// Reloads once for each SIGHUP of `hangups` (coalesced while one runs) until `tasks`
/// stops.
pub async fn on_hangup(bootstrap: Arc<Bootstrap>, mut hangups: Signal, tasks: Tasks) {
    loop {
        tokio::select! {
            biased;
            () = tasks.stopped() => break,
            hangup = hangups.recv() => if hangup.is_none() { break },
        }
        tracing::info!("SIGHUP: reloading the bootstrap files");
        tokio::select! {
            done = reload(&bootstrap) => match done {
                Ok(report) => tracing::info!("{}", summary(&report)),
                Err(e) => tracing::error!("reload: {e}"),
            },
            () = tasks.aborted() => break,
        }
    }
}

/// Applies the bootstrap dirs again on the background store lane.
async fn reload(bootstrap: &Arc<Bootstrap>) -> Result<Report, ReloadError> {
    let bootstrap = bootstrap.clone();
    Ok(store::offload(Lane::Background, move || bootstrap.apply_dirs()).await??)
}

/// The one line a reload logs.
fn summary(report: &Report) -> String {
    let applied = report.applied.len();
    format!(
        "reload: {applied} bootstrap {} applied, {} refused, {} unchanged",
        if applied == 1 { "file" } else { "files" },
        report.refused.len(),
        report.unchanged
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::Authority;
    use crate::store::Pool;
    use crate::tree::builtin;
    use crate::tree::registry::Registry;

    #[tokio::test]
    async fn a_reload_applies_what_is_new_and_only_that() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(
            Pool::open(&tmp.path().join("store.db"), store::Bounds::default(), 1).unwrap(),
        );
        let auth = Arc::new(Authority::new(
            store.clone(),
            Registry::with_builtin(),
            Box::new(|_| {}),
        ));
        let dir = tmp.path().join("boot.d");
        std::fs::create_dir(&dir).unwrap();
        let boot = Arc::new(Bootstrap::new(
            auth.clone(),
            store,
            vec![dir.clone()],
            Arc::new(|_| {}),
        ));

        let report = reload(&boot).await.unwrap();
        assert_eq!(report, Report::default());
        assert_eq!(
            summary(&report),
            "reload: 0 bootstrap files applied, 0 refused, 0 unchanged"
        );

        let dmacc = builtin::DMACC;
        std::fs::write(
            dir.join("10-acme.json"),
            format!(
                r#"[{{"ClientURI": "{dmacc}/acme/", "MOData": {{"DMAcc": {{"SrvID": "acme",
                    "SrvURI": "https://acme.example/dm", "Perm": {{}}}}}}}}]"#
            ),
        )
        .unwrap();
        std::fs::write(dir.join("20-bad.json"), "[\n  {\"ClientURI\": 1}\n]\n").unwrap();
        let report = reload(&boot).await.unwrap();
        assert_eq!(report.applied, [dir.join("10-acme.json")]);
        assert_eq!(report.refused, [dir.join("20-bad.json")]);
        assert_eq!(
            summary(&report),
            "reload: 1 bootstrap file applied, 1 refused, 0 unchanged"
        );
        assert_eq!(auth.instances_of(dmacc).unwrap(), ["acme"]);

        // Nothing changed: the applied file is left alone, the refused one tried again.
        let report = reload(&boot).await.unwrap();
        assert_eq!(
            summary(&report),
            "reload: 0 bootstrap files applied, 1 refused, 1 unchanged"
        );
    }
}
