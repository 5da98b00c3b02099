//! omadmd's manual: the texts of `--help` (the description and the FILES, SIGNALS,
//! ENVIRONMENT, EXIT STATUS and SEE ALSO sections after the options), and what
//! `--man-page` and `--completions` print: omadmd(8) rendered from those same texts,
//! omadmd.toml(5) from the example configuration, and the shell completion scripts.

use std::process::ExitCode;

use clap::CommandFactory as _;

use omadmd::manpage::{self, omadmd_toml::Example};

/// The description (`--help`, and DESCRIPTION in omadmd(8)).
pub const DESCRIPTION: &str = "\
omadmd keeps the device's Management Objects (MOs) in an SQLite store, runs OMA DM 2.0 sessions over HTTPS with the DM servers it has DM accounts for (urn:oma:mo:oma-dm-dmacc:1.2), and serves the MOs to local applications as org.omadm.Client1 on the D-Bus system bus, with polkit deciding what each caller may do.

It is started by systemd (omadmd.service), at boot or by D-Bus activation of org.omadm.Client1, and runs as root in the unit's sandbox. It tells systemd when it is ready, reloading and stopping (Type=notify), and pings the service watchdog while its store answers.

A session with a DM server starts when a local app or an administrator asks for one (omadmctl session start, or StartSession), when an app's alert is waiting for the server (SendAlert), every Ext/PollSeconds seconds for DM accounts that set it, at once for a DM account that never had one ([session] first_session_at_once), and when the server sends a DM notification (Package#0, over UDP or MQTT) that passes verification: its digest with the DM account's Auth/Noti credentials, its TIMESTAMP window, a NOTIFICATION-ID not seen before, the per-server rate. An ignored notification is logged with its reason and counted in the server's IgnoredNotifications. At most one session runs per server.

DM accounts arrive from factory bootstrap files (applied once each), from omadmctl account add (AddAccount), or from a bootstrap server that a DM account names.

Logs go to the journal, with structured fields, when systemd started omadmd, else to standard error.";

/// What `--help` shows after the options, and omadmd(8) after OPTIONS.
pub const AFTER_HELP: &str = "\
FILES
  /etc/omadmd/omadmd.toml
    The configuration (omadmd.toml(5)); every key is optional, and without the file the defaults serve. --config names another file.
  /usr/lib/omadmd/bootstrap.d/, /etc/omadmd/bootstrap.d/
    Factory bootstrap files, the distribution's then the administrator's: MO serializations (*.json) and TNDS documents (*.xml), each applied once, at start or at a reload after it appeared or changed ([bootstrap] dirs).
  /usr/share/omadmd/ddf/, /etc/omadmd/ddf/
    DDF files: the MO types shipped with omadmd, then the administrator's ([ddf] dirs).
  /var/lib/omadmd/store.db
    The store (SQLite, with its store.db-wal and store.db-shm): MOs, grants, DM accounts, session state and the change journal. --state-dir names another directory.
  /run/omadmd/guests/<name>/host.sock, /var/lib/omadmd/guests/<name>.token
    A guest's socket and token ([gateway.guests.<name>]): another environment's omadmd, given that directory and a copy of the token as its [subagent] token_file, shows this omadmd its MOs.
  /usr/lib/systemd/system/omadmd.service
    The systemd unit. Local changes go in a drop-in (systemctl edit omadmd).
  /usr/share/dbus-1/system.d/org.omadm.Client1.conf
    The system bus policy: only root may own org.omadm.Client1, everyone may call it, and polkit decides inside omadmd.
  /usr/share/dbus-1/system-services/org.omadm.Client1.service
    D-Bus activation of org.omadm.Client1 through omadmd.service.
  /usr/share/dbus-1/interfaces/org.omadm.Client1*.xml
    The D-Bus interfaces, documented member by member.
  /usr/share/polkit-1/actions/org.omadm.client1.policy
    The polkit actions org.omadm.client1.read, .write, .watch, .send-alert, .start-session and .manage.

SIGNALS
  SIGTERM, SIGINT
    Stop: no session starts any more; running sessions and asynchronous EXEC handlers get [session] stop_drain_seconds (10) to finish, then sessions are cut off between commands and the handlers' results are reported to their servers as interrupted, within stop_abort_seconds (5); the store is synced and omadmd exits with status 0. The bus name stays omadmd's meanwhile.
  SIGHUP
    Reload (systemctl reload omadmd): read the configuration file again (a file that does not parse is refused whole and the running configuration stays; [access], [bootstrap] and [ddf] take effect at once, a change to another table at the next start), read the DDF dirs again, and apply the bootstrap dirs' new and changed files. One log line says what the reload did. Hangups during a reload make one more reload after it.

ENVIRONMENT
  RUST_LOG
    The log level: a level (error, warn, info, debug, trace) and target=level directives, comma-separated, for example RUST_LOG=omadmd=debug. Unset, info; a value not understood is logged, and info used.
  JOURNAL_STREAM
    Set by systemd: logs go to the journal instead of standard error.
  NOTIFY_SOCKET
    Set by systemd (Type=notify): where omadmd reports READY=1, RELOADING=1, STOPPING=1 and its STATUS=. Unset, nothing is reported.
  WATCHDOG_USEC
    Set by systemd from WatchdogSec=: omadmd sends WATCHDOG=1 every half period while its store answers, so that a daemon that is stuck is restarted. Unset, there is no watchdog.
  SSL_CERT_FILE, SSL_CERT_DIR
    The system trust store, when set (else the usual locations of Debian, Fedora, Alpine and Arch), trusted with [tls] extra_ca_files for DM servers whose account has no Ext/CACert.
  LANG
    The language DevInfo's Lang node reports.
  DBUS_SYSTEM_BUS_ADDRESS, DBUS_SESSION_BUS_ADDRESS
    The bus to serve on: the system bus, or the session bus with --session.

EXIT STATUS
  0
    Stopped by SIGTERM or SIGINT; or --help, --version, --man-page or --completions printed what they print.
  1
    omadmd could not start or failed while running (a bad configuration file, a store that cannot be opened, the bus name taken...); the log says why.
  2
    A bad command line.

SEE ALSO
  omadmctl(1), omadm-devserver(1), omadmd.toml(5), systemd.service(5), systemctl(1), journalctl(1), polkit(8), busctl(1).";

/// The man pages `--man-page` prints.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Page {
    /// omadmd(8), this manual.
    #[value(name = "omadmd")]
    Omadmd,
    /// omadmd.toml(5), the configuration file's.
    #[value(name = "omadmd.toml")]
    OmadmdToml,
}

/// Prints `page` in roff.
pub fn print_man_page(page: Page) -> ExitCode {
    let rendered = match page {
        Page::Omadmd => manpage::render(super::Args::command(), "8", DESCRIPTION, AFTER_HELP)
            .map_err(|e| e.to_string()),
        Page::OmadmdToml => Example::parse(manpage::omadmd_toml::EXAMPLE)
            .map(|example| example.man_page())
            .map_err(|e| e.to_string()),
    };
    match rendered {
        Ok(page) => {
            print!("{page}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("omadmd: cannot render the man page: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the completion script for `shell`.
pub fn print_completions(shell: clap_complete::Shell) -> ExitCode {
    clap_complete::generate(
        shell,
        &mut super::Args::command(),
        "omadmd",
        &mut std::io::stdout(),
    );
    ExitCode::SUCCESS
}
