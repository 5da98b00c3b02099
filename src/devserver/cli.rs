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
use super::objects::{ObjectFaults, ObjectSpec};
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

  Serve a firmware image as https://127.0.0.1:8443/repo/objects/fw (HGET it into a bin
  leaf), cut the first download after 16 MiB, answer the first resume 503, and read what
  was sent:
      omadm-devserver --object fw=/srv/fw.img --cut-object-after 16M --object-5xx-after 16M
      curl --cacert devserver-certs/ca.pem https://127.0.0.1:8443/admin/stats

  Fetch a range of it the way a resuming client does, and upload a file streamed, with
  its digest:
      curl --cacert devserver-certs/ca.pem -r 1000- -H 'If-Range: \"ETAG\"' \\
          https://127.0.0.1:8443/repo/objects/fw -o rest.bin
      curl --cacert devserver-certs/ca.pem -T log.tar -H 'Content-Type: application/octet-stream' \\
          -H \"Repr-Digest: sha-256=:$(openssl dgst -sha256 -binary log.tar | base64):\" \\
          https://127.0.0.1:8443/repo/logs/1

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

CONTENT CODING. Every response advertises Accept-Encoding: gzip (RFC 7694), so a client may gzip its request bodies (Content-Encoding: gzip; decoded within the same 64 MiB limit as identity bodies); a request whose Accept-Encoding allows gzip gets its response gzip-coded when it is JSON, XML or text of at least 256 bytes (DM packages, MO data), never an application/octet-stream object, a 206 or an answer to a Range request (a coded response's ETag is weak). The transcript keeps the decoded bodies and notes the coded size. --no-gzip turns all of this off.

LARGE OBJECTS. --object NAME=PATH (repeatable) serves the file PATH at https://HOST:PORT/repo/objects/NAME as application/octet-stream, streamed from disk (never whole in memory), with Content-Length, Accept-Ranges: bytes, a strong ETag made of the file's inode, size and modification time (nanoseconds), Last-Modified, and Repr-Digest: sha-256=:BASE64: (RFC 9530) of the whole file, computed once per version of the file (at start for every --object, before the server answers: a few seconds per GiB). Range: bytes=a-b (also a- and -n) gives 206 with Content-Range, a range past the end 416 with Content-Range: bytes */SIZE; If-Range with an entity tag must be a strong match, with an HTTP-date it must equal Last-Modified exactly, else the whole object is sent (200). Replacing the file on disk (a new file renamed over it) or changing it makes a new version: a new ETag, so a resume with the old one gets 200 and the whole new object. Objects are never gzip-coded. A PUT or POST with Content-Type application/octet-stream to /repo/PATH is streamed to a file in the data directory (--data-dir; by default a directory of its own in the certificate directory, removed at exit), its SHA-256 computed as it arrives: a Repr-Digest request header that does not match gets 400 and the file is removed, a body over --max-upload-bytes gets 413 (at once when its Content-Length says so), a Content-Encoding other than identity 415. A stored upload is recorded with its file, size and SHA-256 instead of its bytes, and is then served at /repo/PATH like an --object (DELETE removes it). Other uploads (MO JSON and the like) are kept in memory as before.

FAULTS. For testing how a client suspends and resumes: --cut-object-after BYTES aborts the connection (no clean end, the Content-Length never reached) after BYTES body bytes of an object response that is longer, for the first --cut-object-times N such responses (default 1; 0: every one). --object-5xx-after BYTES answers the first object GET after BYTES body bytes of objects have been sent in total with 503 and Retry-After: 1, once; with --cut-object-after BYTES at the same value, the client's first resume after the cut gets the 503. BYTES may end in K, M or G (KiB, MiB, GiB).

STATS. GET https://HOST:PORT/admin/stats answers JSON: {\"objects\": {\"objects/NAME\": {\"size\": S, \"gets\": G, \"bytes_sent\": B, \"complete\": C, \"cut\": X, \"abandoned\": A, \"unavailable\": U}, ...}, \"bytes_sent\": TOTAL, \"uploads\": [{\"method\", \"path\", \"status\", \"size\", \"sha256\" (hex), \"file\"}, ...]}: per object (by repository path) the size last served, the GETs answered with a body (200 or 206), the body bytes handed to connections over all of them, and how those responses ended (to the end, cut on purpose, or early otherwise), and the 503s injected; then the streamed uploads. It sits behind the same TLS, client certificates and HTTP Basic as the rest. Each object response also leaves a summary line when its body ends (\"session 1 object /repo/objects/fw: 16777216 of 67108864 bytes sent, connection cut (--cut-object-after)\") and, with --transcript, an out record whose bytes are the body bytes sent.

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

    /// No gzip content coding: answer identity-coded only, refuse gzip-coded requests (415)
    /// and do not advertise Accept-Encoding: gzip (a baseline for measuring the bytes
    /// saved).
    #[arg(long)]
    pub no_gzip: bool,

    /// Serve the file at PATH as /repo/objects/NAME (application/octet-stream, streamed,
    /// with ranges, ETag, Last-Modified and Repr-Digest). Repeatable.
    #[arg(long = "object", value_name = "NAME=PATH")]
    pub objects: Vec<ObjectSpec>,

    /// Directory for streamed (application/octet-stream) uploads, kept at exit. Default: a
    /// directory of its own in the certificate directory, removed at exit.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// The largest streamed upload; larger ones get 413. K, M and G suffixes (KiB, MiB, GiB)
    /// allowed.
    #[arg(long, value_name = "BYTES", default_value = "4G", value_parser = parse_bytes)]
    pub max_upload_bytes: u64,

    /// Fault: abort the connection after BYTES body bytes of an object response that is
    /// longer (see --cut-object-times).
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub cut_object_after: Option<u64>,

    /// How many object responses --cut-object-after cuts: the first N (0: every one).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cut_object_times: u64,

    /// Fault: once BYTES body bytes of objects have been sent in total, answer the next
    /// object GET 503 (with Retry-After: 1), once.
    #[arg(long = "object-5xx-after", value_name = "BYTES", value_parser = parse_bytes)]
    pub object_5xx_after: Option<u64>,

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
    config.gzip = !cli.no_gzip;
    config.scenario = scenario;
    config.objects = cli.objects.clone();
    config.data_dir = cli.data_dir.clone();
    config.max_upload_bytes = cli.max_upload_bytes;
    config.object_faults = ObjectFaults {
        cut_after: cli.cut_object_after,
        cut_times: cli.cut_object_times,
        unavailable_after: cli.object_5xx_after,
    };
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
    for o in &cli.objects {
        println!(
            "object {}: {}/objects/{}",
            o.path.display(),
            server.repo_url(),
            o.name
        );
    }
    if !cli.objects.is_empty() || cli.data_dir.is_some() {
        println!(
            "uploads (application/octet-stream): {}",
            server.data_dir().display()
        );
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

/// A byte count: digits, optionally followed by K, M or G (binary multiples).
fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, shift) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 10),
        Some((i, 'M' | 'm')) => (&s[..i], 20),
        Some((i, 'G' | 'g')) => (&s[..i], 30),
        _ => (s, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{s:?} is not a byte count (digits, optionally K, M or G)"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_take_binary_suffixes() {
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("16M"), Ok(16 << 20));
        assert_eq!(parse_bytes("4G"), Ok(4 << 30));
        assert_eq!(parse_bytes("2k"), Ok(2048));
        assert!(parse_bytes("M").is_err());
        assert!(parse_bytes("-1").is_err());
        assert!(parse_bytes("99999999999G").is_err());
    }

    #[test]
    fn object_options_reach_the_configuration() {
        let cli = Cli::try_parse_from([
            "omadm-devserver",
            "--object",
            "fw=/tmp/fw.img",
            "--object",
            "log=/tmp/log",
            "--cut-object-after",
            "16M",
            "--cut-object-times",
            "0",
            "--object-5xx-after",
            "1K",
        ])
        .unwrap();
        assert_eq!(cli.objects.len(), 2);
        assert_eq!(cli.objects[1].name, "log");
        assert_eq!(cli.max_upload_bytes, 4 << 30);
        assert_eq!(cli.cut_object_after, Some(16 << 20));
        assert_eq!(cli.cut_object_times, 0);
        assert_eq!(cli.object_5xx_after, Some(1024));
        assert!(Cli::try_parse_from(["omadm-devserver", "--object", "fw"]).is_err());
    }
}
