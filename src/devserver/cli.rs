//! The `omadm-devserver` command line: options, the manual text of `--help`, and the run
//! loop (start, print where to connect, serve until N sessions or a signal, report). The
//! binary only parses the command line and calls [`run`].

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use super::certs::{Certificates, issue_client_certificate};
use super::config::{BasicAuth, DEFAULT_CERT_DIR, DEFAULT_LISTEN, DevServerConfig};
use super::error::DevServerError;
use super::notify::{self, NotifyArgs};
use super::scenario::{DEFAULT_SCENARIO, Scenario};
use super::server::DevServer;

const AFTER_HELP: &str = "\
EXAMPLES
  Serve the built-in scenario on https://127.0.0.1:8443, certificates in ./devserver-certs:
      omadm-devserver

  Point omadmd at it: the DM account's SrvURI is the printed DM URL, its Ext/CACert the
  printed CA certificate, and its Perm list names the MOIDs the scenario touches:
      omadmctl set 'urn:oma:mo:oma-dm-dmacc:1.2/1/SrvURI' https://127.0.0.1:8443/dm
      omadmctl set 'urn:oma:mo:oma-dm-dmacc:1.2/1/Ext/CACert' --from-file devserver-certs/ca.pem

  Or give omadmd the account as a factory bootstrap file
  (/etc/omadmd/bootstrap.d/devserver.json), with the PEM text of ca.pem as CACert:
      [{\"ClientURI\": \"urn:oma:mo:oma-dm-dmacc:1.2/devserver/\",
        \"MOData\": {\"DMAcc\": {\"SrvID\": \"devserver\", \"SrvURI\": \"https://127.0.0.1:8443/dm\",
          \"Perm\": {\"1\": {\"MOID\": \"urn:oma:mo:oma-dm-devinfo:1.0\"},
                   \"2\": {\"MOID\": \"urn:oma:mo:ext-devserver-weather:1.0\"}},
          \"Ext\": {\"CACert\": \"-----BEGIN CERTIFICATE-----\\n...\"}}}}]

  Then let omadmd start a session with it:
      busctl call org.omadm.Client1 /org/omadm/Client1 org.omadm.Client1 \\
          StartSession ss devserver ''

  Run one scripted session on a free port, keep a transcript, and fail unless every
  expectation holds (for CI):
      omadm-devserver --listen 127.0.0.1:0 --scenario tests/fixtures/scenarios/basic.json \\
          --transcript session.jsonl --sessions 1

  Require HTTP Basic (the account's Auth/Trsp/Data and Auth/Trsp/Secret):
      omadm-devserver --basic device:s3cret

  Require client certificates, after issuing one for the device (the PEM files go into the
  account's Ext/ClientCert and Ext/ClientKey):
      omadm-devserver --issue-client-cert device-1
      omadm-devserver --require-client-cert

  Be a bootstrap server: serve an MO serialization (the DM accounts to provision) at
  https://127.0.0.1:8443/bootstrap, for omadmd's client-initiated bootstrap (a DM account
  whose Auth/Bootstrap/ServerURI is that URL, with ca.pem as its Ext/CACert):
      omadm-devserver --bootstrap accounts.json --basic device:s3cret

  Serve on all addresses under a host name the device can resolve:
      omadm-devserver --listen 0.0.0.0:8443 --public-host devserver.lan

  Make omadmd open a session: send a DM notification (Package#0) to the UDP address it
  listens on ([notification.udp] listen), signed with the account's Auth/Noti secret:
      omadm-devserver notify --udp 192.0.2.10:4000 --server-id devserver --id 7 \\
          --secret s3cret --req-mos

  Or publish it on the MQTT broker topic of the account's Push/<x>/Addr (a device behind
  NAT keeps a subscription there):
      omadm-devserver notify --mqtt mqtts://broker.example:8883/omadm/dev-1 \\
          --mqtt-user dmserver --mqtt-password pw --mqtt-ca broker-ca.pem \\
          --server-id devserver --id 8 --secret s3cret

  Start your own scenario from the built-in one:
      omadm-devserver --print-default-scenario > my.json
      omadm-devserver --scenario my.json --check

EXIT STATUS
  0  With --sessions N: N sessions finished and every expectation held. Without it: stopped
     by SIGINT or SIGTERM. Or a --check, --print-default-scenario, --man-page,
     --completions or --issue-client-cert action succeeded, or notify sent its notification.

  1  An expectation failed or the client broke a protocol rule (the failures are printed to
     stderr), or the server was stopped before N sessions finished.

  2  Bad command line, scenario, certificate directory or listening address, or notify
     could not send.

SEE ALSO
  omadmd(8), omadmctl(1), omadmd.toml(5).";

const LONG_ABOUT: &str = "\
omadm-devserver is a scriptable OMA DM 2.0 server over HTTPS, for developing and testing DM clients such as omadmd.

It speaks the DM 2.0 package loop on its DM URL (https://HOST:PORT/dm), serves and records a data repository (https://HOST:PORT/repo/PATH), checks what the client sends, and writes a transcript of every exchange. What it says in each session comes from a scenario file; without one it runs a built-in scenario that GETs DevInfo, HGETs a small settings MO from the repository and ENDs.

SESSIONS. Package#1 (POST, Content-Type application/vnd.oma.dm.initiation+json, header OMADM-DevID) opens a session and is answered with the scenario's first Package#2 (application/vnd.oma.dm.request+json). Each Package#3 (application/vnd.oma.dm.response+json) is answered with the next Package#2. A Package#2 with END ends the session. Sessions are keyed by OMADM-DevID: one open session per device, and a new Package#1 from a device abandons its open session (a failure). POSTs to /dm/ANYTHING reach the same endpoint (for CONT). The server checks the content types, Accept of Package#1, exactly one session-reason alert (first) in Package#1, one Status per command of the previous Package#2, and the statuses the scenario expects; each breach is a failure of its session.

SCENARIOS. A JSON file (// and /* */ comments allowed):

      {\"name\": \"weather\",
       \"repository\": {\"settings/weather\": [ MO serialization items ],
                      \"settings/tnds\": {\"content_type\": \"application/vnd.syncml.dmtnds+xml\",
                                        \"body\": \"<MgmtTree/>\", \"ignore_accept\": false}},
       \"uploads\": {\"sub/weather\": {\"accept\": [\"application/vnd.oma.dm.mo+json\"],
                                   \"refuse_first\": true}},
       \"packages\": [
         {\"commands\": [[\"GET\", \"urn:oma:mo:oma-dm-devinfo:1.0//\"],
                       [\"HGET\", \"{repo}/settings/weather\"]], \"expect\": [200, 200]},
         {\"commands\": [[\"SUB\", \"urn:oma:mo:ext-devserver-weather:1.0/station1/\",
                        \"{repo}/sub/weather\"]], \"expect\": [[200, 202]]},
         {\"commands\": [[\"END\"]]}]}

{repo}, {dm} and {base} in commands become the server's repository URL, DM URL and https://HOST:PORT. \"expect\" gives one status per command: a code, a list of acceptable codes, or null for any. Instead of \"commands\" a package may give \"http_status\": 503 (answer with that status and no body; the session ends) or \"raw\": \"...\" (send that body verbatim as Package#2, to test malformed packages); \"delay_ms\" delays the answer (a long delay: a server that stalls). \"repeat_commands\": N puts the command list N times into the package (a server asking for very many results); \"repeat\": N sends the package N times in a row, and \"repeat\": \"forever\" on every Package#3, never ending the session (a server that keeps a session going, e.g. with CONT); a forever package must be the last. If the last package has no END the server appends one (as a package of its own when that package has \"expect\" or \"repeat\"; none after a forever package). \"sessions\": [{\"packages\": [...]}, ...] gives each session its own script (the last repeats).

REPOSITORY. GET and HEAD serve entries with ETag and byte ranges (Range: bytes=a-b gives 206 and Content-Range; a range past the end 416). An entry {\"nested\": {\"client_uri\": URI, \"node\": NAME, \"depth\": N}} is a generated MO serialization: the node NAME at URI holding N levels of interior nodes named N, the last a leaf (any depth up to 100000, deeper than a client's tree or JSON parser may go). An Accept header that does not allow an entry's type gets 406 with OMADM-Accept naming it, unless the entry has \"ignore_accept\" (then the client must refuse it itself, with status 415). PUT stores (201 new, 200 replaced), POST stores (200), DELETE removes. An upload rule's \"accept\" list answers other types 415 with OMADM-Accept; \"refuse_first\" answers the first upload 415 whatever its type, once, to test the client's retry. Every upload is recorded.

NOTIFICATIONS. `omadm-devserver notify` builds a DM notification (Package#0: SERVER-ID, NOTIFICATION-ID with --id, TIMESTAMP, REQ-MOS, PREFERRED-CON-TYPE, and a SHA-256 digest when --secret is given, over --secret, the message and --data) with omadmd's own codec, sends it as one UDP datagram to --udp HOST:PORT and/or publishes it (QoS 1, waiting for the broker's PUBACK) on the MQTT broker topic --mqtt mqtts://HOST:PORT/TOPIC (mqtt:// for a plain broker; --mqtt-user, --mqtt-password, --mqtt-ca) and exits; omadmd verifies it and opens a session with the account whose SrvID is --server-id. See `omadm-devserver notify --help`.

BOOTSTRAP SERVER. With --bootstrap FILE the server also answers GET https://HOST:PORT/bootstrap with FILE's content as application/vnd.oma.dm.mo+json (an MO serialization array: the DM accounts, and any other MOs, a device is provisioned with), behind the same TLS, client certificates and HTTP Basic; other methods get 405. The content is served as it is, unchecked (to test how a client refuses a bad one). omadmd fetches it once for each DM account naming it in Auth/Bootstrap/ServerURI (see omadmd's README).

CERTIFICATES. The certificate directory holds ca.pem, ca.key, server.pem and server.key (keys mode 0600). What is missing is generated: a test CA, and a server certificate for localhost, 127.0.0.1, ::1, the --public-host and every --san. The CA's path is printed at start: put ca.pem into the DM account's Ext/CACert. TLS 1.2 and 1.3 only.

OUTPUT. One summary line per package and repository request on stdout, e.g. \"session 1 package#2 → 2 commands (GET, HGET)\" and \"session 1 package#3 ← [200, 404] ✗ expected [200, 200]\". --transcript FILE writes every request and response as a JSON line (time, session, direction, kind, peer, method, path, status, headers of interest, client certificate subject, body as JSON where it is JSON else as text, problems); passwords are never written.";

/// Scriptable OMA DM 2.0 server over HTTPS, for developing and testing DM clients.
#[derive(Parser, Debug)]
#[command(name = "omadm-devserver", version, long_about = LONG_ABOUT, after_long_help = AFTER_HELP)]
pub struct Cli {
    /// Address to listen on. Port 0 picks a free port; the printed URLs name it.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Host name for the server's URLs ({repo}, {dm}, the printed DM URL); added to the
    /// server certificate's names. Default: the listening address, or localhost when
    /// listening on all addresses.
    #[arg(long, value_name = "NAME")]
    pub public_host: Option<String>,

    /// Directory of ca.pem, ca.key, server.pem and server.key; missing ones are generated.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CERT_DIR)]
    pub cert_dir: PathBuf,

    /// Another DNS name or IP address the server certificate must cover (repeatable). An
    /// existing certificate that lacks one is issued anew by the CA.
    #[arg(long = "san", value_name = "NAME")]
    pub sans: Vec<String>,

    /// Require a TLS client certificate signed by the test CA; its subject is recorded in the
    /// transcript. See --issue-client-cert.
    #[arg(long)]
    pub require_client_cert: bool,

    /// Require HTTP Basic with these credentials on every request; others get 401.
    #[arg(long, value_name = "USER:PASSWORD")]
    pub basic: Option<BasicAuth>,

    /// The scenario file (JSON). Default: the built-in scenario (see
    /// --print-default-scenario).
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,

    /// Bootstrap-server mode: serve FILE (an MO serialization, served as it is) at
    /// https://HOST:PORT/bootstrap for omadmd's client-initiated bootstrap.
    #[arg(long, value_name = "FILE")]
    pub bootstrap: Option<PathBuf>,

    /// Write every exchange to FILE as JSON lines (the file is replaced).
    #[arg(long, value_name = "FILE")]
    pub transcript: Option<PathBuf>,

    /// Exit after N finished sessions: status 0 if every expectation held, 1 otherwise.
    /// Default: serve until SIGINT or SIGTERM.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub sessions: Option<u64>,

    /// Print no summary lines (the transcript file is still written).
    #[arg(long, short)]
    pub quiet: bool,

    /// Check the scenario (--scenario FILE, or the built-in one) and exit.
    #[arg(long)]
    pub check: bool,

    /// Print the built-in scenario and exit.
    #[arg(long)]
    pub print_default_scenario: bool,

    /// Print this manual as a man page (roff) and exit.
    #[arg(long)]
    pub man_page: bool,

    /// Print the completion script for SHELL and exit.
    #[arg(long, value_name = "SHELL")]
    pub completions: Option<clap_complete::Shell>,

    /// Issue a client certificate with subject CN=NAME from the test CA, write it to
    /// client-NAME.pem and client-NAME.key in the certificate directory, and exit.
    #[arg(long, value_name = "NAME")]
    pub issue_client_cert: Option<String>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What `omadm-devserver` does instead of serving.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Send a DM notification (Package#0) to omadmd and exit.
    Notify(NotifyArgs),
}

/// Runs the command line; returns the process exit status.
pub async fn run(cli: Cli) -> ExitCode {
    match run_inner(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("omadm-devserver: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run_inner(cli: Cli) -> Result<ExitCode, DevServerError> {
    if let Some(Command::Notify(args)) = &cli.command {
        notify::run(args).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if cli.man_page {
        use clap::CommandFactory as _;
        let page = crate::manpage::render(Cli::command(), "1", LONG_ABOUT, AFTER_HELP)
            .map_err(|e| DevServerError::io("(man page)", e))?;
        print!("{page}");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(shell) = cli.completions {
        use clap::CommandFactory as _;
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "omadm-devserver", &mut script);
        print!("{}", String::from_utf8_lossy(&script));
        return Ok(ExitCode::SUCCESS);
    }
    if cli.print_default_scenario {
        print!("{DEFAULT_SCENARIO}");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(name) = &cli.issue_client_cert {
        let certs = Certificates::ensure(&cli.cert_dir, &cli.sans)?;
        let id = issue_client_certificate(&certs.dir, name)?;
        let (cert, key) = id.write_to(&certs.dir, name)?;
        println!("client certificate {}: {}", id.subject, cert.display());
        println!("client key: {}", key.display());
        println!("CA certificate: {}", certs.ca_path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let scenario = match &cli.scenario {
        Some(path) => Scenario::from_file(path)?,
        None => Scenario::builtin(),
    };
    if cli.check {
        println!("scenario {:?}: valid, {}", scenario.name, scenario.shape());
        return Ok(ExitCode::SUCCESS);
    }
    let mut config = DevServerConfig::new(&cli.cert_dir);
    config.listen = cli.listen;
    config.public_host = cli.public_host.clone();
    config.extra_sans = cli.sans.clone();
    config.require_client_cert = cli.require_client_cert;
    config.basic = cli.basic.clone();
    config.transcript = cli.transcript.clone();
    config.scenario = scenario;
    if let Some(path) = &cli.bootstrap {
        config.bootstrap =
            Some(std::fs::read(path).map_err(|e| DevServerError::io(path.clone(), e))?);
    }
    if !cli.quiet {
        config.summary = Some(Arc::new(|line: &str| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }));
    }
    let shape = config.scenario.shape();
    let server = DevServer::start(config).await?;
    let certs = server.certificates();
    let ca = std::fs::canonicalize(&certs.ca_path).unwrap_or_else(|_| certs.ca_path.clone());
    let state = if certs.ca_generated() {
        "generated"
    } else {
        "reused"
    };
    println!(
        "omadm-devserver {}: scenario {:?}, {shape}",
        env!("CARGO_PKG_VERSION"),
        server.scenario_name()
    );
    println!("listening on {}", server.addr());
    println!("DM URL (SrvURI): {}", server.url());
    println!("repository: {}", server.repo_url());
    if let Some(url) = server.bootstrap_url() {
        println!("bootstrap document (Auth/Bootstrap/ServerURI): {url}");
    }
    println!(
        "CA certificate ({state}): {} — put it into the DM account's Ext/CACert",
        ca.display()
    );
    if cli.require_client_cert {
        println!("client certificates: required, signed by that CA (see --issue-client-cert)");
    }
    if let Some(b) = &cli.basic {
        println!("HTTP Basic: required (user {:?})", b.user);
    }
    if let Some(t) = &cli.transcript {
        println!("transcript: {}", t.display());
    }
    let _ = std::io::stdout().flush();

    let wanted = cli.sessions.map(|n| n as usize);
    let interrupted = tokio::select! {
        _ = async {
            match wanted {
                Some(n) => server.wait_for_sessions(n).await,
                None => std::future::pending().await,
            }
        } => false,
        _ = stop_signal() => true,
    };
    let finished = server.finished_sessions();
    let failures = server.failures();
    let results = server.results();
    server.shutdown().await;

    let failed = results.iter().filter(|o| !o.passed()).count();
    println!(
        "{}: {finished} session(s) finished, {failed} with failures",
        if interrupted { "stopped" } else { "done" }
    );
    for f in &failures {
        eprintln!("FAILED {f}");
    }
    match wanted {
        None => Ok(ExitCode::SUCCESS),
        Some(n) if interrupted && finished < n => {
            eprintln!("omadm-devserver: stopped after {finished} of {n} session(s)");
            Ok(ExitCode::FAILURE)
        }
        Some(_) if failures.is_empty() => Ok(ExitCode::SUCCESS),
        Some(_) => Ok(ExitCode::FAILURE),
    }
}

/// SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
