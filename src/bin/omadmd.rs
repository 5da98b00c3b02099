//! `omadmd`: the OMA DM 2.0 client daemon. Wiring only: the parts live in the library.
//!
//! Background work is owned by one [`Tasks`]: sessions, the follow-up and poll loops, SUB
//! deliveries, asynchronous EXEC handlers, the D-Bus tasks, and the NetworkManager follower
//! with the network MO's keeper. On SIGTERM (or SIGINT) the
//! daemon stops accepting sessions, gives running work `[session] stop_drain_seconds` (10 s)
//! to finish, then aborts what is left — a session is cut off between commands'
//! transactions, an asynchronous EXEC's handler is killed and its result queued as
//! interrupted — with `stop_abort_seconds` (5 s) for that, syncs the store and exits 0. The
//! bus name stays the daemon's meanwhile, and each session's `SessionFinished` is sent.
//! SIGHUP reloads ([`omadmd::service::reload`]) and the watchdog
//! ([`omadmd::service::notify`]) are two of those tasks; both end when the daemon stops.
//!
//! Committed changes go to the D-Bus watchers and to SUB deliveries through bounded queues
//! of [`CHANGE_QUEUE`] batches each; each consumer hands a batch on only once it is durable
//! (`Pool::durable`: one wait for every batch queued meanwhile). The store's writer never
//! waits on them: when a queue is full the batch is dropped for that consumer, counted, and
//! logged (the first drop, then every power of two) — a watcher misses that `Changed`
//! signal, a subscribed server that delivery (the next change under its subscription
//! delivers the whole subtree again).
//!
//! Memory: glibc's malloc is set up first thing, and large blocks freed make it give back
//! what a large read left ([`malloc`]); the executable's code pages are given back after
//! start-up ([`code_pages`]).

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

use omadmd::authority::{self, Authority, Rights};
use omadmd::bootstrap::{Bootstrap, ChangeSink, ServerBootstrap};
use omadmd::bus::exec_handlers::ExecApps;
use omadmd::bus::{self, Bus};
use omadmd::config::{self, Config};
use omadmd::device::HostFacts;
use omadmd::features;
use omadmd::gateway;
use omadmd::gateway::subagent::guest::{self as subagent, Changes};
use omadmd::network;
use omadmd::notification::mqtt::{self, Mqtt};
use omadmd::notification::udp::Udp;
use omadmd::notification::verify::{Dispatch, Verifier};
use omadmd::notification::{IgnoredCounts, Inbound};
use omadmd::service::notify::{self, notify};
use omadmd::service::reload::{self, Reloader};
use omadmd::session::engine::follow_up_queue;
use omadmd::session::exec::ExecHandlers;
use omadmd::session::tasks::Drained;
use omadmd::session::{Account, Engine, Limits, Scheduler, Tasks, subscribe};
use omadmd::store::{self, Change, Lane, Pool};
use omadmd::transfer::Board;
use omadmd::tree::builtin;
use omadmd::tree::registry::Registry;
use omadmd::tree::uri::{self, UriLimits};

#[path = "omadmd/code_pages.rs"]
mod code_pages;
#[path = "omadmd/malloc.rs"]
mod malloc;

#[path = "omadmd/manual.rs"]
mod manual;

#[global_allocator]
static ALLOCATOR: malloc::Trimming = malloc::Trimming;

/// Change batches waiting for the D-Bus watchers, and for SUB deliveries, at most.
const CHANGE_QUEUE: usize = 1024;

/// Received notifications waiting for the verifier, at most; a channel with more waits.
const INBOUND_QUEUE: usize = 64;

/// How long after start-up the start-up code's pages are given back ([`code_pages`]).
const CODE_PAGE_OUT_AFTER: Duration = Duration::from_secs(2);

/// Read connections to the store: D-Bus readers, sessions and SUB deliveries rarely need more
/// at once on the small machines omadmd runs on.
const READERS: usize = 3;

/// OMA Device Management 2.0 client daemon.
///
/// The long help and the man page are [`manual::DESCRIPTION`] and [`manual::AFTER_HELP`].
#[derive(Parser, Debug)]
#[command(
    name = "omadmd",
    version,
    long_about = manual::DESCRIPTION,
    after_long_help = manual::AFTER_HELP
)]
struct Args {
    /// Serve on the session bus instead of the system bus (development).
    #[arg(long)]
    session: bool,

    /// Directory holding the store (store.db).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/omadmd")]
    state_dir: PathBuf,

    /// Configuration file; every key is optional.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Print a man page (roff) and exit: omadmd(8), or omadmd.toml(5).
    #[arg(long, value_name = "PAGE", num_args = 0..=1, default_missing_value = "omadmd")]
    man_page: Option<manual::Page>,

    /// Print the completion script for SHELL and exit.
    #[arg(long, value_name = "SHELL")]
    completions: Option<clap_complete::Shell>,
}

fn main() -> ExitCode {
    ignore_hangups_until_handled();
    let malloc_problems = malloc::configure();
    let args = Args::parse();
    if let Some(page) = args.man_page {
        return manual::print_man_page(page);
    }
    if let Some(shell) = args.completions {
        return manual::print_completions(shell);
    }
    init_logging();
    for problem in malloc_problems {
        tracing::warn!("{problem}: memory freed may stay with the daemon");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    // SIGHUP is handled from here on (ignored before, see `main`): one that arrives while
    // the daemon starts makes a reload once it runs, instead of ending it.
    let hangups = signal(SignalKind::hangup()).map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
    let (config_path, explicit) = match &args.config {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from(config::DEFAULT_PATH), false),
    };
    let config = Config::load(&config_path, explicit).map_err(|e| e.to_string())?;
    let limits = &config.limits;
    if limits.tree_depth > store::MAX_DEPTH {
        return Err(format!(
            "[limits] tree_depth = {} is above the most the store serves ({})",
            limits.tree_depth,
            store::MAX_DEPTH
        ));
    }
    uri::set_limits(UriLimits {
        bytes: limits.uri_bytes,
        segments: limits.uri_segments,
        xnames: limits.uri_xnames,
        nv_fields: limits.nv_fields,
    });
    let store_bounds = store::Bounds {
        journal_entries: limits.journal_entries,
        tree_depth: limits.tree_depth,
    };
    let (registry, refused_ddfs) = Registry::with_dirs(&config.ddf.dirs);
    for e in refused_ddfs {
        tracing::warn!("skipping DDF {e}");
    }

    std::fs::create_dir_all(&args.state_dir)
        .map_err(|e| format!("{}: {e}", args.state_dir.display()))?;
    let db = args.state_dir.join("store.db");
    // One writer for every change (MO nodes and session state); readers never wait for it.
    let store = Arc::new(
        Pool::open(&db, store_bounds, READERS)
            .map_err(|e| format!("opening {}: {e}", db.display()))?,
    );

    let tasks = Tasks::new();
    // Every committed change goes to the D-Bus watchers and to SUB deliveries (bounded; see
    // the module documentation for when they are full); a change of a DM account wakes the
    // poller.
    let (watch_tx, watch_rx) = mpsc::channel(CHANGE_QUEUE);
    let (sub_tx, sub_rx) = mpsc::channel::<Vec<Change>>(CHANGE_QUEUE);
    let watch_dropped = AtomicU64::new(0);
    let sub_dropped = AtomicU64::new(0);
    let accounts_changed = Arc::new(tokio::sync::Notify::new());
    let poke = accounts_changed.clone();
    // ... and the client-initiated bootstrap (its own Notify: each wakes one waiter).
    let bootstrap_due = Arc::new(tokio::sync::Notify::new());
    let poke_bootstrap = bootstrap_due.clone();
    // ... and the MQTT channel, which follows the accounts' Push entries.
    let push_changed = Arc::new(tokio::sync::Notify::new());
    let poke_push = push_changed.clone();
    // ... and, on a guest (`[subagent]`), the sync of the exported MOs to the host.
    let exported = config
        .subagent
        .host_socket
        .is_some()
        .then(|| Changes::new(&config.subagent));
    let to_host = exported.clone();
    // The factory reset's deletions take the same way.
    let observer: ChangeSink = Arc::new(move |changes: &[Change]| {
        offer(&watch_tx, changes, &watch_dropped, "the D-Bus watchers");
        offer(&sub_tx, changes, &sub_dropped, "SUB deliveries");
        if let Some(to_host) = &to_host {
            to_host.offer(changes);
        }
        if changes.iter().any(|c| c.addr.moid == builtin::DMACC) {
            poke.notify_one();
            poke_bootstrap.notify_one();
            poke_push.notify_one();
        }
    });
    let observe = observer.clone();
    let auth = Arc::new(
        Authority::new(
            store.clone(),
            registry,
            Box::new(move |changes| observe(changes)),
        )
        .with_bounds(authority::Bounds {
            result_rows: limits.result_rows,
            reply_bytes: limits.reply_bytes,
            owner_bytes: limits.owner_bytes,
            owner_instances: limits.owner_instances,
        })
        .with_public_moids(config.access.public_moids.clone()),
    );

    for problem in auth
        .audit_accounts()
        .map_err(|e| format!("reading DM accounts: {e}"))?
    {
        tracing::warn!("{problem}");
    }

    let lang = std::env::var("LANG").ok();
    let facts = HostFacts::read(Path::new("/"), lang.as_deref()).map_err(|e| e.to_string())?;
    auth.provide(
        builtin::DEVINFO,
        "0",
        "DevInfo",
        &facts.devinfo(),
        Rights::READ,
    )
    .map_err(|e| format!("providing DevInfo: {e}"))?;
    features::provide(&auth, &config).map_err(|e| format!("providing the Features MO: {e}"))?;
    auth.mirror_grants()
        .map_err(|e| format!("writing the grants into the DACL MO: {e}"))?;

    // Factory bootstrap files new or changed since they were last applied, before any
    // session (the poller finds the accounts they add).
    let bootstrap = Arc::new(Bootstrap::new(
        auth.clone(),
        store.clone(),
        config.bootstrap.dirs.clone(),
        observer,
    ));
    let boot = bootstrap.clone();
    store::offload(Lane::Background, move || boot.apply_dirs())
        .await
        .map_err(|e| format!("applying bootstrap files: {e}"))?
        .map_err(|e| format!("applying bootstrap files: {e}"))?;

    // Apps register over D-Bus once the bus is up; configured commands go first.
    let exec_apps = Arc::new(ExecApps::default());
    let exec = ExecHandlers::from_config(
        &config
            .exec
            .iter()
            .map(|(k, v)| (k.clone(), v.command.clone()))
            .collect(),
    )?
    .with_apps(exec_apps.clone());
    let guest_exec = exec.clone();
    let (followup_tx, followup_rx) = follow_up_queue();
    let limits = Limits::from_config(&config);
    // The large-object transfers: the D-Bus face shows and switches what their runners
    // write here.
    let transfers = Arc::new(Board::default());
    let engine = Arc::new(
        Engine::new(
            auth.clone(),
            store.clone(),
            facts.dev_id.clone(),
            limits,
            exec,
            config.tls.extra_ca_files.clone(),
            followup_tx,
        )
        .with_tasks(tasks.clone())
        .with_board(transfers.clone()),
    );
    // Before any session: EXECs a stopped daemon left running are reported interrupted, and
    // waiting alerts ask for their follow-up sessions.
    let resumed = engine.clone();
    match store::offload(Lane::Background, move || resumed.resume()).await {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::warn!("{n} asynchronous EXEC(s) reported interrupted"),
        Ok(Err(e)) => return Err(format!("resuming asynchronous EXECs: {e}")),
        Err(e) => return Err(format!("resuming asynchronous EXECs: {e}")),
    }
    match engine.resume_transfers().await {
        Ok(0) => {}
        Ok(n) => tracing::info!("{n} large-object transfer(s) go on where they stopped"),
        Err(e) => return Err(format!("resuming large-object transfers: {e}")),
    }
    tasks.spawn(subscribe::run(engine.clone(), sub_rx, tasks.clone()));
    // The device's network: NetworkManager followed (its picture on `network`, for the
    // network MO, the D-Bus properties and the notification channels), the network MO kept
    // from it and, on a move, the NetworkChanged alert queued for the servers that have it.
    let network = network::follow::start(&tasks);

    // Sessions run from here on, whether or not the bus is up.
    let scheduler = Scheduler::with_tasks(
        engine.clone(),
        auth.clone(),
        store.clone(),
        PathBuf::from("/"),
        tasks.clone(),
    );
    match scheduler.clear_stale().await {
        Ok(0) => {}
        Ok(n) => tracing::info!("removed {n} SessionInfo instance(s) left by a stopped daemon"),
        Err(e) => return Err(format!("clearing stale SessionInfo instances: {e}")),
    }
    tasks.spawn(scheduler.clone().follow_ups(followup_rx));
    scheduler.set_first_session_at_once(config.session.first_session_at_once);
    tasks.spawn(scheduler.clone().poll(accounts_changed));
    // Accounts naming a bootstrap server fetch their bootstrap from it (once each).
    let server_bootstrap = Arc::new(ServerBootstrap::new(
        auth.clone(),
        store.clone(),
        facts.dev_id.clone(),
        config.tls.extra_ca_files.clone(),
    ));
    tasks.spawn(server_bootstrap.clone().run(bootstrap_due, tasks.clone()));
    // Server notifications: every channel feeds the one verifier, which starts sessions (or
    // server-initiated bootstraps).
    let (inbound, inbound_rx) = mpsc::channel::<Inbound>(INBOUND_QUEUE);
    let ignored = Arc::new(IgnoredCounts::default());
    let verifier = Verifier::new(
        auth.clone(),
        store.clone(),
        (&config.notification).into(),
        ignored.clone(),
    );
    tasks.spawn(verifier.run(
        inbound_rx,
        Dispatch {
            scheduler: scheduler.clone(),
            bootstrap: server_bootstrap,
            tasks: tasks.clone(),
            network: Some(network.clone()),
            bearer_timeout: Duration::from_secs(config.notification.bearer_timeout_s),
        },
    ));
    if let Some(listen) = &config.notification.udp.listen {
        let udp = Udp::bind(listen).await.map_err(|e| e.to_string())?;
        match udp.local_addr() {
            Ok(addr) => tracing::info!("notification channel udp: listening on {addr}"),
            Err(e) => tracing::info!("notification channel udp: listening on {listen} ({e})"),
        }
        tasks.spawn(udp.run(inbound.clone(), tasks.clone()));
    }
    // The MQTT channel: a subscription per DM account's MQTT push entry.
    let mqtt = Mqtt::new(
        mqtt::Settings {
            keepalive_s: config.notification.mqtt.keepalive_s,
            reconnect_max: Duration::from_secs(config.notification.mqtt.reconnect_max_s),
            extra_ca_files: config.tls.extra_ca_files.clone(),
            dev_id: facts.dev_id.clone(),
        },
        inbound.clone(),
        tasks.clone(),
    );
    tasks.spawn(mqtt.clone().run(auth.clone(), push_changed));
    // The network MO kept from the follower's picture. On a move, besides the MO and the
    // NetworkChanged alert: the MQTT connections made anew at once and the DM servers' idle
    // HTTPS connections closed (they may be bound to an address the device no longer has),
    // before what could not go out meanwhile is sent.
    let moved_mqtt = mqtt.clone();
    tasks.spawn(network::mo::keep(
        auth.clone(),
        engine.clone(),
        network.clone(),
        tasks.clone(),
        async move || {
            moved_mqtt.reconnect_all();
            Account::forget_connections();
        },
    ));
    // The gateway (docs/gateway.md): the LwM2M adapter where `[gateway.lwm2m] listen` puts
    // it and the guests' sockets, its children's writes and EXECs handed to them by the
    // sessions.
    let gateway = gateway::start(&config.gateway, auth.clone(), engine.clone(), &tasks)
        .await
        .map_err(|e| e.to_string())?;
    // A guest: the host shown the exported MOs, its calls run here as `app:omadmd-host`.
    if let Some(exported) = exported {
        let guest = subagent::Guest::new(
            config.subagent.clone(),
            config.gateway.guest_frame_bytes,
            auth.clone(),
            guest_exec,
            facts.dev_id.clone(),
            exported,
        );
        tasks.spawn(guest.run(tasks.clone()));
    }
    // SIGHUP (`systemctl reload`): the configuration, DDF and bootstrap dirs read again.
    let reloader = Arc::new(
        Reloader::new(
            config_path,
            explicit,
            config.clone(),
            auth.clone(),
            bootstrap.clone(),
        )
        .with_types(gateway.types),
    );
    tasks.spawn(reload::on_hangup(reloader, hangups, tasks.clone()));
    if let Some(period) = notify::period() {
        tracing::info!(
            "watchdog: pinging systemd every {} ms",
            period.as_millis() / 2
        );
        tasks.spawn(notify::watchdog(period, auth.clone(), tasks.clone()));
    }

    let bus = if args.session {
        Bus::Session
    } else {
        Bus::System
    };
    let service = bus::serve(
        bus,
        bus::Inward {
            auth: auth.clone(),
            scheduler,
            bootstrap,
            exec_apps,
            network: network.clone(),
            transfers,
            gateway: gateway.inventory.clone(),
            notifications: bus::servers::Notifications {
                udp: config.notification.udp.listen.is_some(),
                mqtt: Some(mqtt.status()),
                ignored,
            },
        },
        watch_rx,
        facts.dev_id.clone(),
        &config.limits,
        &tasks,
    )
    .await
    .map_err(|e| e.to_string())?;
    tracing::info!(
        "serving {} on the {} bus; store {}",
        bus::NAME,
        if args.session { "session" } else { "system" },
        db.display()
    );
    notify(&[sd_notify::NotifyState::Ready]);
    // Start-up code does not run again: its pages go back once the first calls are served.
    let stopping = tasks.clone();
    tasks.spawn(async move {
        tokio::select! {
            () = stopping.stopped() => {}
            () = tokio::time::sleep(CODE_PAGE_OUT_AFTER) => {
                let problems = tokio::task::spawn_blocking(code_pages::page_out)
                    .await
                    .unwrap_or_default();
                for problem in problems {
                    tracing::warn!("{problem}: the daemon's code stays resident");
                }
            }
        }
    });

    let bus::Service { conn, lost } = service;
    let outcome = tokio::select! {
        stop = wait_for_stop() => stop,
        _ = lost => Err("lost the connection to the bus".to_owned()),
    };
    notify(&[sd_notify::NotifyState::Stopping]);
    // The bus name stays ours while work drains: an activated second daemon cannot start.
    let (drain, abort) = (
        Duration::from_secs(config.session.stop_drain_seconds),
        Duration::from_secs(config.session.stop_abort_seconds),
    );
    match tasks.shutdown(drain, abort).await {
        Drained::Finished => {}
        Drained::Aborted => tracing::warn!("running work was aborted at the drain deadline"),
        Drained::Abandoned => tracing::error!(
            "some work did not end even when aborted; it is dropped (each command is its own \
             transaction; an EXEC left recorded is reported interrupted at the next start)"
        ),
    }
    drop(conn);
    store
        .durable()
        .await
        .map_err(|e| format!("closing the store: {e}"))?;
    tracing::info!("stopped");
    outcome
}

/// Hands `changes` to a bounded queue; when it is full the batch is dropped for that
/// consumer and counted in `dropped`, logged the first time and at every power of two.
fn offer(
    queue: &mpsc::Sender<Vec<Change>>,
    changes: &[Change],
    dropped: &AtomicU64,
    consumer: &str,
) {
    match queue.try_send(changes.to_vec()) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            let n = dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    "{n} change batch(es) dropped for {consumer} so far: its queue of \
                     {CHANGE_QUEUE} is full"
                );
            }
        }
        // Nobody listens any more: the daemon is stopping.
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

/// SIGHUP's default action ends a process. From the first instruction until `run` handles
/// it (reloads), a hangup is ignored: nothing is loaded yet that it could reload.
fn ignore_hangups_until_handled() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code; nothing
    // else runs yet (no threads), and tokio's handler replaces it in `run`.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}

async fn wait_for_stop() -> Result<(), String> {
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot handle SIGINT: {e}"))?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    Ok(())
}

/// Logging to the journal or standard error, filtered by RUST_LOG ([`log_filter`]).
fn init_logging() {
    let (filter, refused) = match log_filter(&std::env::var("RUST_LOG").unwrap_or_default()) {
        Ok(filter) => (filter, None),
        Err(refused) => (
            Targets::new().with_default(LevelFilter::INFO),
            Some(refused),
        ),
    };
    // Levels as syslog means them: INFO is informational (6), DEBUG debug (7).
    let priorities = tracing_journald::PriorityMappings {
        info: tracing_journald::Priority::Informational,
        debug: tracing_journald::Priority::Debug,
        ..tracing_journald::PriorityMappings::new()
    };
    let journald = std::env::var_os("JOURNAL_STREAM")
        .is_some()
        .then(|| tracing_journald::layer().ok())
        .flatten()
        .map(|layer| layer.with_priority_mappings(priorities));
    match journald {
        Some(layer) => tracing_subscriber::registry()
            .with(filter)
            .with(layer)
            .init(),
        None => tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .init(),
    }
    if let Some(refused) = refused {
        tracing::warn!("{refused}");
    }
}

/// The log filter RUST_LOG asks for: comma-separated `target=level` directives and a bare
/// default level, info when empty; why not, when it is not understood. (A [`Targets`]
/// filter: the regular-expression span and field filters of `EnvFilter` would add about
/// 300 KiB of code to the daemon, resident whether used or not.)
fn log_filter(spec: &str) -> Result<Targets, String> {
    match spec.trim() {
        "" => Ok(Targets::new().with_default(LevelFilter::INFO)),
        spec => spec
            .parse()
            .map_err(|e| format!("RUST_LOG={spec:?} not understood ({e}): logging at info")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn rust_log_sets_levels_per_target_and_a_default() {
        let filter = log_filter("omadmd=debug,zbus=warn").unwrap();
        assert!(filter.would_enable("omadmd::session::engine", &Level::DEBUG));
        assert!(!filter.would_enable("omadmd::session::engine", &Level::TRACE));
        assert!(!filter.would_enable("zbus::connection", &Level::INFO));
        assert!(!filter.would_enable("rustls", &Level::ERROR));

        let filter = log_filter("warn,omadmd=trace").unwrap();
        assert!(filter.would_enable("rustls", &Level::WARN));
        assert!(!filter.would_enable("rustls", &Level::INFO));
        assert!(filter.would_enable("omadmd", &Level::TRACE));
    }

    #[test]
    fn no_rust_log_means_info() {
        for spec in ["", "  "] {
            let filter = log_filter(spec).unwrap();
            assert!(filter.would_enable("omadmd", &Level::INFO));
            assert!(!filter.would_enable("omadmd", &Level::DEBUG));
        }
    }

    #[test]
    fn a_rust_log_not_understood_is_named() {
        let err = log_filter("omadmd=loud").unwrap_err();
        assert!(
            err.contains("RUST_LOG=\"omadmd=loud\" not understood"),
            "{err}"
        );
    }
}
