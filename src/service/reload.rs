//! Reload: SIGHUP (`systemctl reload omadmd`, whose unit sends it) re-reads the
//! configuration file, loads the DDF dirs again and applies the bootstrap dirs again, on the
//! background store lane, and logs one line saying what it did; the daemon keeps running,
//! whatever the outcome.
//!
//! - **The configuration**: read as at start. A file that does not parse (or fails a bound)
//!   is refused whole and logged; the running configuration stays. Of a new one, `[ddf]`,
//!   `[bootstrap]` and `[access]` take effect at once; a change to any other section is
//!   named in the log line as taking effect at the next start (those sections size queues,
//!   sockets and bounds set up once).
//! - **The Features MO** is written again for the configuration now running
//!   ([`features::provide`]), so a server sees what it turns on or off.
//! - **DDF dirs**: every file read again; a bad file is logged and left out, as at start.
//!   The new types replace the old ones whole; commands already running finish with the
//!   types they started with.
//! - **Bootstrap dirs**: the files new or changed since they were last applied, exactly as at
//!   start ([`Bootstrap::apply_dirs`]: a bad file refused whole and logged as
//!   `file:line: reason`, the others applied). A DM account a file adds is a committed
//!   change of an account like any other, so the scheduler greets it (its first session,
//!   carrying `BootstrapComplete`) as it does one that arrives any other way.
//! - **One at a time**: [`on_hangup`] runs one reload after another. Hangups that arrive
//!   while one runs are coalesced into one more reload after it, which sees whatever
//!   changed meanwhile. systemd hears `RELOADING=1` at the start and `READY=1` at the end.
//! - **Stopping**: the loop ends when the daemon stops, dropping the signal stream; a
//!   reload running then gets the drain time to finish (each bootstrap file is its own
//!   transaction, recorded after it, so one cut off is applied again at the next start).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::signal::unix::Signal;

use super::notify::notify;
use crate::authority::Authority;
use crate::bootstrap::{Bootstrap, Report};
use crate::config::{Config, ConfigError, GatewayConfig, SubagentConfig};
use crate::features;
use crate::session::Tasks;
use crate::store::{self, Lane, Offload, StoreError};
use crate::tree::ddf::DdfError;
use crate::tree::mo_type::MoType;
use crate::tree::registry::Registry;

/// What a reload changes, and where it reads the configuration from.
pub struct Reloader {
    /// The configuration file, and whether it was named (a named file must exist; the
    /// default one may be missing, meaning the defaults).
    path: PathBuf,
    explicit: bool,
    /// The configuration in effect: the one read at start, or the last one a reload took.
    running: Mutex<Config>,
    auth: Arc<Authority>,
    bootstrap: Arc<Bootstrap>,
    /// MO types from elsewhere than the DDF dirs (the gateway's LwM2M objects, read at
    /// start), kept on top of them.
    kept_types: Vec<MoType>,
    /// `[gateway]` as the daemon started with it.
    started_gateway: GatewayConfig,
    /// `[subagent]` as the daemon started with it.
    started_subagent: SubagentConfig,
}

/// What one reload did.
#[derive(Debug)]
struct Outcome {
    /// The configuration file: re-read, or refused and why.
    config: Result<Applied, ConfigError>,
    /// MO types known now, and the DDF files left out.
    types: usize,
    refused_ddfs: Vec<DdfError>,
    bootstrap: Report,
}

/// Which sections of a re-read configuration changed.
#[derive(Debug, Default, PartialEq)]
struct Applied {
    /// Changed and in effect now.
    now: Vec<&'static str>,
    /// Changed, in effect at the next start.
    at_start: Vec<&'static str>,
}

/// Why a reload did not finish.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    /// The store failed; the bootstrap files before the one it failed on are applied.
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Offload(#[from] Offload),
}

impl Reloader {
    /// Reloads of the configuration at `path` (`explicit`: named on the command line) that
    /// started the daemon as `running`, into `auth`'s types and public MOIDs and
    /// `bootstrap`'s dirs.
    pub fn new(
        path: PathBuf,
        explicit: bool,
        running: Config,
        auth: Arc<Authority>,
        bootstrap: Arc<Bootstrap>,
    ) -> Reloader {
        let started_gateway = running.gateway.clone();
        let started_subagent = running.subagent.clone();
        Reloader {
            path,
            explicit,
            running: Mutex::new(running),
            auth,
            bootstrap,
            started_gateway,
            started_subagent,
            kept_types: Vec::new(),
        }
    }

    /// The reloader keeping `types` on top of the DDF dirs' at every reload.
    pub fn with_types(self, types: Vec<MoType>) -> Reloader {
        Reloader {
            kept_types: types,
            ..self
        }
    }

    /// Reads the configuration and the DDF dirs, puts what may change at once in effect, and
    /// applies the bootstrap dirs. Blocking file and store work: run it on a store lane.
    fn reload(&self) -> Result<Outcome, StoreError> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let config = Config::load(&self.path, self.explicit).map(|new| {
            let applied = changes(&running, &new);
            *running = new;
            applied
        });
        let (mut types, refused_ddfs) = Registry::with_dirs(&running.ddf.dirs);
        for t in &self.kept_types {
            types.insert(t.clone());
        }
        let known = types.types().len();
        self.auth.set_types(types);
        self.auth
            .set_public_moids(running.access.public_moids.clone());
        self.bootstrap.set_dirs(running.bootstrap.dirs.clone());
        // `[gateway]` and `[subagent]` take effect at the next start: the features they
        // turn on stay as they started.
        let shown = Config {
            gateway: self.started_gateway.clone(),
            subagent: self.started_subagent.clone(),
            ..running.clone()
        };
        if let Err(e) = features::provide(&self.auth, &shown) {
            tracing::error!("reload: cannot write the Features MO: {e}");
        }
        drop(running);
        let bootstrap = self.bootstrap.apply_dirs()?;
        Ok(Outcome {
            config,
            types: known,
            refused_ddfs,
            bootstrap,
        })
    }
}

/// Reloads once for each SIGHUP of `hangups` (coalesced while one runs) until `tasks`
/// stops.
pub async fn on_hangup(reloader: Arc<Reloader>, mut hangups: Signal, tasks: Tasks) {
    loop {
        tokio::select! {
            biased;
            () = tasks.stopped() => break,
            hangup = hangups.recv() => if hangup.is_none() { break },
        }
        tracing::info!("SIGHUP: reloading the configuration, DDF and bootstrap dirs");
        notify(&[sd_notify::NotifyState::Reloading]);
        tokio::select! {
            done = reload(&reloader) => match done {
                Ok(outcome) => log(&outcome),
                Err(e) => tracing::error!("reload: {e}"),
            },
            () = tasks.aborted() => break,
        }
        notify(&[sd_notify::NotifyState::Ready]);
    }
}

/// One reload on the background store lane.
async fn reload(reloader: &Arc<Reloader>) -> Result<Outcome, ReloadError> {
    let reloader = reloader.clone();
    Ok(store::offload(Lane::Background, move || reloader.reload()).await??)
}

/// Which sections differ between `old` and `new`, by when the difference takes effect.
fn changes(old: &Config, new: &Config) -> Applied {
    let mut applied = Applied::default();
    let sections: [(&'static str, bool, bool); 10] = [
        ("[access]", old.access != new.access, true),
        ("[bootstrap]", old.bootstrap != new.bootstrap, true),
        ("[ddf]", old.ddf != new.ddf, true),
        ("[tls]", old.tls != new.tls, false),
        ("[session]", old.session != new.session, false),
        ("[exec]", old.exec != new.exec, false),
        ("[limits]", old.limits != new.limits, false),
        (
            "[notification]",
            old.notification != new.notification,
            false,
        ),
        ("[gateway]", old.gateway != new.gateway, false),
        ("[subagent]", old.subagent != new.subagent, false),
    ];
    for (name, changed, live) in sections {
        match (changed, live) {
            (false, _) => {}
            (true, true) => applied.now.push(name),
            (true, false) => applied.at_start.push(name),
        }
    }
    applied
}

/// Logs what a reload did: why the configuration was refused, a line per refused DDF file,
/// then one summary line (a warning when anything was refused or waits for a restart).
fn log(outcome: &Outcome) {
    if let Err(e) = &outcome.config {
        tracing::error!("reload: configuration refused: {e}");
    }
    for e in &outcome.refused_ddfs {
        tracing::warn!("skipping DDF {e}");
    }
    let line = summary(outcome);
    let clean = outcome.config.as_ref().is_ok_and(|a| a.at_start.is_empty())
        && outcome.refused_ddfs.is_empty()
        && outcome.bootstrap.refused.is_empty();
    if clean {
        tracing::info!("{line}");
    } else {
        tracing::warn!("{line}");
    }
}

/// The one line a reload logs.
fn summary(outcome: &Outcome) -> String {
    let config = match &outcome.config {
        Err(_) => "configuration refused, the running one stays".into(),
        Ok(a) if a.now.is_empty() && a.at_start.is_empty() => "configuration unchanged".into(),
        Ok(a) => {
            let mut parts = Vec::new();
            if !a.now.is_empty() {
                parts.push(format!("{} applied", a.now.join(" ")));
            }
            if !a.at_start.is_empty() {
                parts.push(format!(
                    "{} changed, in effect at the next start",
                    a.at_start.join(" ")
                ));
            }
            format!("configuration: {}", parts.join("; "))
        }
    };
    let report = &outcome.bootstrap;
    let applied = report.applied.len();
    format!(
        "reload: {config}; {} MO types ({} DDF {} refused); {applied} bootstrap {} applied, \
         {} refused, {} unchanged",
        outcome.types,
        outcome.refused_ddfs.len(),
        if outcome.refused_ddfs.len() == 1 {
            "file"
        } else {
            "files"
        },
        if applied == 1 { "file" } else { "files" },
        report.refused.len(),
        report.unchanged
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Pool;
    use crate::tree::builtin;

    /// A DDF of one MO type, `moid`, shaped like DevInfo.
    fn ddf_of(moid: &str) -> String {
        builtin::DDF_FILES[0].1.replace(builtin::DEVINFO, moid)
    }

    #[tokio::test]
    async fn a_reload_applies_the_configuration_ddfs_and_bootstrap_files() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(
            Pool::open(&tmp.path().join("store.db"), store::Bounds::default(), 1).unwrap(),
        );
        let auth = Arc::new(Authority::new(
            store.clone(),
            Registry::with_builtin(),
            Box::new(|_| {}),
        ));
        let (ddf_dir, boot_dir) = (tmp.path().join("ddf"), tmp.path().join("boot.d"));
        std::fs::create_dir(&ddf_dir).unwrap();
        std::fs::create_dir(&boot_dir).unwrap();
        let path = tmp.path().join("omadmd.toml");
        let first = "[ddf]\ndirs = []\n[bootstrap]\ndirs = []\n";
        std::fs::write(&path, first).unwrap();
        let boot = Arc::new(Bootstrap::new(
            auth.clone(),
            store,
            vec![],
            Arc::new(|_| {}),
        ));
        let reloader = Arc::new(Reloader::new(
            path.clone(),
            true,
            Config::parse(first).unwrap(),
            auth.clone(),
            boot,
        ));

        let outcome = reload(&reloader).await.unwrap();
        let builtins = builtin::DDF_FILES.len();
        assert_eq!(
            summary(&outcome),
            format!(
                "reload: configuration unchanged; {builtins} MO types (0 DDF files refused); \
                 0 bootstrap files applied, 0 refused, 0 unchanged"
            )
        );

        // New dirs, a new public MOID and a new limit; a DDF and a bootstrap file in the
        // dirs, and a DDF that is not one.
        std::fs::write(
            &path,
            format!(
                "[ddf]\ndirs = [{ddf_dir:?}]\n[bootstrap]\ndirs = [{boot_dir:?}]\n\
                 [access]\npublic_moids = [\"urn:x-test:mo:1.0\"]\n\
                 [limits]\nresult_rows = 10\n"
            ),
        )
        .unwrap();
        std::fs::write(ddf_dir.join("10-test.ddf"), ddf_of("urn:x-test:mo:1.0")).unwrap();
        std::fs::write(ddf_dir.join("20-bad.ddf"), "<MgmtTree>").unwrap();
        let dmacc = builtin::DMACC;
        std::fs::write(
            boot_dir.join("10-acme.json"),
            format!(
                r#"[{{"ClientURI": "{dmacc}/acme/", "MOData": {{"DMAcc": {{"SrvID": "acme",
                    "SrvURI": "https://acme.example/dm", "Perm": {{}}}}}}}}]"#
            ),
        )
        .unwrap();
        assert!(auth.types().get("urn:x-test:mo:1.0").is_none());
        let outcome = reload(&reloader).await.unwrap();
        assert_eq!(
            summary(&outcome),
            format!(
                "reload: configuration: [access] [bootstrap] [ddf] applied; [limits] changed, \
                 in effect at the next start; {} MO types (1 DDF file refused); 1 bootstrap \
                 file applied, 0 refused, 0 unchanged",
                builtins + 1
            )
        );
        assert!(auth.types().get("urn:x-test:mo:1.0").is_some());
        assert_eq!(auth.instances_of(dmacc).unwrap(), ["acme"]);
        assert_eq!(outcome.refused_ddfs.len(), 1);
        assert_eq!(
            outcome.refused_ddfs[0].file.as_deref(),
            Some(ddf_dir.join("20-bad.ddf").as_path())
        );

        // A configuration that does not parse is refused whole: the running one stays, and
        // the dirs it names are read again (the DDF removed meanwhile is gone).
        std::fs::write(&path, "[ddf]\ndirs = 7\n").unwrap();
        std::fs::remove_file(ddf_dir.join("10-test.ddf")).unwrap();
        let outcome = reload(&reloader).await.unwrap();
        assert_eq!(
            summary(&outcome),
            format!(
                "reload: configuration refused, the running one stays; {builtins} MO types (1 \
                 DDF file refused); 0 bootstrap files applied, 0 refused, 1 unchanged"
            )
        );
        let refused = outcome.config.unwrap_err().to_string();
        assert!(
            refused.starts_with(&format!("{}: ", path.display())),
            "{refused}"
        );
        assert!(auth.types().get("urn:x-test:mo:1.0").is_none());
        let running = reloader.running.lock().unwrap();
        assert_eq!(running.ddf.dirs, [ddf_dir]);
        assert_eq!(running.limits.result_rows, 10);
    }

    #[test]
    fn changes_name_each_section_by_when_it_takes_effect() {
        let old = Config::default();
        assert_eq!(changes(&old, &old), Applied::default());
        let new = Config::parse(
            "[session]\nstop_drain_seconds = 3\n[exec.\"x\"]\ncommand = [\"/bin/true\"]\n\
             [notification.udp]\nlisten = \"127.0.0.1:0\"\n[tls]\nextra_ca_files = [\"/a\"]\n\
             [access]\npublic_moids = []\n",
        )
        .unwrap();
        assert_eq!(
            changes(&old, &new),
            Applied {
                now: vec!["[access]"],
                at_start: vec!["[tls]", "[session]", "[exec]", "[notification]"],
            }
        );
    }
}
