//! The command line: the clap definition of every command and option, their help texts,
//! the examples per command and the exit-status table. `--help`, the man pages and the
//! shell completions are all generated from what is here.

use std::path::PathBuf;

use clap::builder::styling::Styles;
use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::failure::EXIT_STATUS;

/// Inspect and manage omadmd, the OMA DM 2.0 client.
///
/// omadmctl reads and changes the Management Objects (MOs) that omadmd keeps, watches them for
/// changes and manages who may use them, by calling org.omadm.Client1 on the D-Bus system bus.
/// session starts DM sessions with a server and follows them; alert sends a server an alert;
/// transfers lists, follows, suspends and resumes large-object transfers; children lists the
/// devices managed through omadmd's gateway and detaches them.
/// The ddf and tnds commands check files offline and need no daemon.
///
/// Nodes are addressed by ClientURI: MOID "/" instance "/" path. An empty instance selects the
/// MOID's only instance (urn:oma:mo:oma-dm-devinfo:1.0//DevID), "*" every instance
/// (urn:oma:mo:oma-dm-dmacc:1.2/*/SrvURI), and "*" in the path every child. An x-name "(x)"
/// with an nv= query selects by value: urn:oma:mo:moid:1.0/(x)/Data?nv=(x)/ID:GPS. Quote
/// ClientURIs in the shell, since "*", "(" and "?" are special there.
///
/// What a caller may do is decided twice: polkit decides whether the user may read, write,
/// watch or manage at all, then the grants on each MO instance decide for the calling app.
/// root acts as the administrator; other users ask the administrator for a polkit rule or for
/// a grant (see omadmctl grant). Where polkit's answer is "after an administrator
/// authenticates", omadmctl lets polkit ask for the password: on a terminal through
/// pkttyagent, which it starts for itself (see --no-ask-password).
///
/// --json switches every command that prints something to JSON output, for scripts.
#[derive(Parser, Debug)]
#[command(name = "omadmctl", version)]
pub struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Talk to omadmd on the session bus instead of the system bus (for development, with
    /// `omadmd --session`).
    #[arg(long, global = true)]
    pub session: bool,

    /// Never ask for a password. Without it, when polkit wants an administrator to
    /// authenticate for a call, it asks: on a terminal through pkttyagent, which omadmctl
    /// starts for itself, else through the desktop's polkit agent.
    #[arg(long, global = true)]
    pub no_ask_password: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show the daemon's version, device ID, state, features and DM servers.
    ///
    /// Prints the properties of org.omadm.Client1: Version (omadmd's version), DevId (the
    /// device's DevInfo/DevID, stable for this machine), State (idle, session while a DM
    /// session with a server runs, or offline) and Features (the optional features this
    /// client supports); then one line per DM server omadmd has an account for: its SrvID,
    /// URL, priority, when its last session completed and how many of its notifications
    /// omadmd ignored since it started (their reasons are in omadmd's log; omadmctl account
    /// list shows more). Needs no polkit authorization.
    ///
    /// With --json, prints {"version", "dev_id", "state", "features", "servers"}, servers
    /// being an array of {"server_id", "name", "url", "priority", "last_session",
    /// "ignored_notifications"}.
    Status,

    /// Print the nodes a ClientURI resolves to, with their formats and values.
    ///
    /// Prints one line per node: its ClientURI, its format and its value, in aligned
    /// columns. Interior nodes have the format "node" and no value; use tree to see a
    /// subtree. Values of the b64 and bin formats are printed in base64, values of the json
    /// format as compact JSON (an object member omadmd holds as null is left out: D-Bus has
    /// no null; tree shows it); control characters in text values are escaped as \n, \t,
    /// ... (use --value or --json for the exact text).
    /// Nodes whose DDF forbids Get (secrets) are never shown.
    ///
    /// With --json, prints a JSON array of {"client_uri", "format", "value"} objects whose
    /// values are JSON-typed: numbers for int and float, booleans for bool, base64 strings for
    /// b64 and bin, any JSON value for json, null for null and for interior nodes, strings
    /// otherwise.
    Get(GetArgs),

    /// Print the subtrees a ClientURI resolves to as an indented tree.
    ///
    /// Fetches the MO serialization (the JSON the DM 2.0 protocol uses) of every node the
    /// ClientURI resolves to and prints each as a tree headed by its ClientURI, with the
    /// cache validator (CV) of instance roots. Interior nodes end in "/"; leaves show their
    /// values, followed by their format in brackets unless it is chr (dimmed on a terminal
    /// unless NO_COLOR is set).
    ///
    /// With --json, prints the MO serialization itself, pretty-printed; it can be fed back
    /// to omadmctl create (its MOData) or used as a factory bootstrap file.
    Tree(UriArgs),

    /// Replace or add one leaf node.
    ///
    /// Sets the leaf at CLIENT_URI, which must name one node (no "*" or x-names), to VALUE,
    /// given in the text form of its format: decimal for int and float, true/false for bool,
    /// base64 for b64 and bin, ISO 8601 for date and time, JSON text for json (holding no
    /// null, which omadmd refuses). The node's format comes from its
    /// DDF unless --format gives one. A missing leaf is added if its DDF allows it, and so
    /// are the interior nodes above it that do not exist yet (like mkdir -p): each must be
    /// an interior node of the DDF that allows Add.
    Set(SetArgs),

    /// Delete a node and its subtree, or a whole MO instance.
    ///
    /// Deletes the node at CLIENT_URI with everything below it. At an instance root (MOID
    /// "/" MIID "/"), deletes the instance. The DDF decides which nodes may be deleted.
    Delete(UriArgs),

    /// Create an MO instance and print its ClientURI.
    ///
    /// Creates an instance of MOID from MODATA_JSON, the MOData object of the MO
    /// serialization: one key, the MO's root node name from its DDF, holding the instance's
    /// nodes, e.g. {"DMAcc": {"SrvID": "ma1", ...}}. The instance must satisfy the DDF
    /// (required nodes present, formats right). The calling app becomes the instance's owner
    /// with every right on it. Prints the new instance's ClientURI (MOID "/" MIID "/").
    Create(CreateArgs),

    /// Stream changes to the nodes a ClientURI covers until interrupted.
    ///
    /// Registers a watch with omadmd and prints one line per change as it happens: the
    /// change's journal sequence number, the kind of change (added, replaced or deleted) and
    /// the ClientURI of the node. A watch covers the nodes the ClientURI resolves to, their
    /// subtrees and their ancestors; x-names match any node. Only changes to nodes the caller
    /// may read are reported, and values are not included: read them with get. Stops on
    /// Ctrl-C or SIGTERM (exit status 0), or with exit status 3 when omadmd leaves the bus.
    ///
    /// With --json, prints one JSON object {"seq", "change", "client_uri"} per line.
    /// To catch up after a restart, pass the last seq seen to omadmctl changes --since.
    Watch(UriArgs),

    /// Print the changes after a sequence number to the nodes a ClientURI covers.
    ///
    /// Asks omadmd's change journal what changed after sequence number SEQ (0: everything the
    /// journal still holds) to the nodes CLIENT_URI covers that the caller may read. Prints
    /// "current seq: N", then one line per change as watch does: seq, change (added, replaced
    /// or deleted) and ClientURI. Pass N as --since next time to get only newer changes.
    ///
    /// With --json, prints {"current_seq": N, "changes": [{"seq", "change", "client_uri"},
    /// ...]}.
    Changes(ChangesArgs),

    /// Give a principal rights on an MO instance.
    ///
    /// Gives PRINCIPAL the RIGHTs on the instance at INSTANCE_URI (MOID "/" MIID "/"),
    /// replacing the rights it had. PRINCIPAL is app:<app id> for a local app (its Flatpak
    /// app id, systemd unit or executable path, as omadmd derives it from the caller's
    /// credentials), app:* for every local app, or srv:<SrvID> for a DM server. RIGHTs are
    /// Read, Write, Exec and Delegate. Needs the write polkit action and ownership of the
    /// instance or the Delegate right on it; with the manage polkit action (or as root), any
    /// instance.
    Grant(GrantArgs),

    /// Remove every right a principal has on an MO instance.
    ///
    /// Takes all rights that omadmctl grant gave PRINCIPAL on the instance at INSTANCE_URI.
    /// The owner of an instance (the app that created it) keeps its rights.
    Revoke(RevokeArgs),

    /// List who holds which rights on an MO instance.
    ///
    /// Prints the principals holding rights on the instance at CLIENT_URI (MOID "/" MIID
    /// "/"), its owner (every right) first, then each grant: principal and rights. Needs what
    /// grant needs.
    ///
    /// With --json, prints [{"principal", "rights": [...]}, ...].
    Grants(UriArgs),

    /// Add, list and remove DM server accounts (Management Authorities).
    ///
    /// A DM account (an instance of the DM Account MO, urn:oma:mo:oma-dm-dmacc:1.2) tells
    /// omadmd about one DM server: its SrvID, where to reach it, how to trust it, how to
    /// authenticate to it, which MOs it may manage and its priority. omadmd runs DM sessions
    /// only with servers it has an account for. Adding or removing an account needs uid 0 or
    /// the manage polkit action.
    #[command(subcommand)]
    Account(AccountCommand),

    /// Apply a factory bootstrap file now.
    ///
    /// Asks omadmd to apply FILE, an MO serialization array (JSON, as tree --json prints it)
    /// or a TNDS document, as it applies the files of its [bootstrap] dirs at start: whole, as
    /// the administrator, or not at all, whatever was applied before. omadmctl does not read
    /// FILE: it passes its absolute path, and omadmd reads it as root (under its systemd unit
    /// omadmd does not see /home, /root or /tmp; put the file under /etc/omadmd/ or
    /// /var/lib/). A refused file is reported as "FILE:LINE: reason" per problem (exit status
    /// 2). Needs uid 0 or the manage polkit action.
    Bootstrap(BootstrapArgs),

    /// Remove every MO instance and apply the bootstrap files again.
    ///
    /// Asks omadmd for a factory reset: every MO instance but DevInfo and SessionInfo is
    /// removed, with every grant, SUB subscription, DEFAULT source, pending alert and poll due
    /// time, and the files of the [bootstrap] dirs are applied again, so the DM accounts they
    /// define come back. Watchers are told of each removal. On a terminal omadmctl asks for
    /// confirmation unless --yes is given; without a terminal, --yes is required. Exits 8
    /// (Busy) while a DM session runs. Needs uid 0 or the manage polkit action.
    FactoryReset(FactoryResetArgs),

    /// Start a DM session with a server, or show whether one is running.
    #[command(subcommand)]
    Session(SessionCommand),

    /// Send an alert to a DM server.
    ///
    /// Asks omadmd to send a Generic Alert of type TYPE to a DM server: omadmd keeps it and
    /// starts a session with the server, whose first package (Package#1) carries it; while a
    /// session with that server runs, the alert goes with the next one. An alert that cannot
    /// be delivered waits for a later session, across restarts (at most [limits]
    /// pending_alerts_per_server per server; beyond it the oldest are dropped). omadmctl
    /// returns once omadmd has kept the alert and prints nothing; session status shows the
    /// session, and the SessionStarted/SessionFinished signals announce it.
    ///
    /// The server is the one whose DM account has SrvID --server. Without --server, omadmd
    /// chooses: the server that owns the MO instance of --source, otherwise the one with the
    /// highest Ext/Priority; when that one cannot be reached (no connection, or the TLS
    /// handshake fails; never on an HTTP error status) the alert and its session fall over
    /// to the next server by priority, trying at most 4 servers with a backoff of about 1, 2
    /// and 4 seconds; when none answers, the alert waits for the first choice. The server
    /// must be able to read the --source node: a named server that cannot is refused (exit
    /// status 6), and omadmd's own choice passes over servers that cannot.
    ///
    /// TYPE is a URN, urn:<NID>:<NSS> with at most 256 bytes, best in a namespace of your
    /// own (e.g. urn:oma:at:ext-example:1.0:UpdateDone); the session reasons
    /// (urn:oma:at:dm:2.0:ClientInitiatedMgmt, ServerInitiatedMgmt, BootstrapComplete) and
    /// urn:oma:at:ext-omadmd:1.0:ExecResult are omadmd's own and refused. --source names the
    /// one node the alert is about; it must be a node you may read (one you may not read is
    /// "not found", exit status 4) and the server receives its full ClientURI. --data is at
    /// most 16 KiB, read as --data-type says: chr (text; the default when data is given),
    /// int (a decimal integer), bool (true or false), b64 (base64) or json (any JSON value,
    /// sent as JSON). --data-file reads the data from FILE: with --data-type b64 its bytes
    /// are base64-encoded (at most 12 KiB of them), otherwise it must be UTF-8 text (with int
    /// and bool, surrounding white space is ignored).
    ///
    /// Exits 2 on a malformed type, mark, data or ClientURI, 4 when there is no such DM
    /// account (or none at all) or no such source node, 5 when polkit denies send-alert (or
    /// read on the source), 6 when the server may not read the source. Needs the send-alert
    /// polkit action, and read on the --source node.
    Alert(AlertArgs),

    /// List large-object transfers; follow, suspend or resume them.
    ///
    /// A DM server moves a large value (a firmware image, a log bundle) between one bin node
    /// and its data repository as a transfer: HGET downloads into the node, HPUT, HPOST and
    /// SUB deliveries upload from it. Each runs in the background, resumes where it stopped
    /// after a network failure or a restart of omadmd, and shows as an
    /// org.omadm.Client1.Transfer object on the bus.
    ///
    /// Without a subcommand, prints one line per transfer omadmd shows (those in progress
    /// and the most recent finished ones): its ID, direction (download or upload), state
    /// (running, waiting: it tries again by itself, suspended, done or failed; with why in
    /// brackets for waiting and failed), bytes done and total ("?" while the size is
    /// unknown), rate, the ClientURI of its node and the server's SrvID. Needs no polkit
    /// authorization.
    ///
    /// With --json, prints an array of {"id", "direction", "state", "bytes_done",
    /// "bytes_total", "rate", "client_uri", "server_id", "error"} objects; bytes_total is
    /// null while unknown, rate is bytes per second.
    #[command(args_conflicts_with_subcommands = true)]
    Transfers(TransfersArgs),

    /// List the devices managed through omadmd's gateway; detach one.
    ///
    /// With [gateway.lwm2m] listen or [gateway.guests.NAME] configured, omadmd is a
    /// gateway: devices that hang off this machine (LwM2M sensors speaking CoAP) and other
    /// OS environments on it (containers or VMs running omadmd as a sub-agent) attach to it
    /// as children, and DM servers
    /// manage their MO instances as if they were omadmd's own. Each child has a key in the
    /// device inventory MO (urn:oma:mo:ext-omadmd-gateway:1.0/0/Children/KEY), and its MO
    /// instances have the MIIDs KEY.INSTANCE.
    ///
    /// Without a subcommand, prints one line per child, in key order: its KEY, its own ID
    /// (the LwM2M endpoint name, or the guest's name), its PROTOCOL (lwm2m or omadmd), its
    /// STATE (online; sleeping: an LwM2M device in queue mode between its wake-ups;
    /// unreachable: it stopped answering or its connection closed),
    /// when it was LAST-SEEN (UTC; updated at most every [gateway] last_seen_granularity_s)
    /// and its ADDRESS (coap://HOST:PORT: plain CoAP, not authenticated; unix:PATH: a
    /// guest's socket); below each,
    /// indented, the ClientURI of every MO instance it has. Reads of a child's instances
    /// answer with the values it last reported whatever its state; a DM server's writes and
    /// EXECs need it online (503 otherwise). Prints "No children." when there are none or the
    /// gateway is off. Needs no polkit authorization.
    ///
    /// With --json, prints an array of {"key", "id", "protocol", "address", "state",
    /// "last_seen", "mos"} objects; last_seen is POSIX seconds, mos an array of ClientURIs.
    #[command(args_conflicts_with_subcommands = true)]
    Children(ChildrenArgs),

    /// Check Device Description Framework (DDF) files offline.
    #[command(subcommand)]
    Ddf(DdfCommand),

    /// Check TNDS (MO tree XML) documents offline.
    #[command(subcommand)]
    Tnds(TndsCommand),

    /// Print a shell completion script.
    ///
    /// Prints the completion script for SHELL on standard output. Install it where the shell
    /// looks for completions, or source it from the shell's startup file.
    Completions(CompletionsArgs),

    /// Print a man page in roff.
    ///
    /// Prints omadmctl(1), or with a command name the page of that command (e.g.
    /// omadmctl-get(1)), as roff on standard output. View it with man -l -, or install it
    /// under /usr/share/man/man1/.
    Man(ManArgs),
}

#[derive(Args, Debug)]
pub struct UriArgs {
    /// The ClientURI (quote it in the shell).
    pub client_uri: String,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// Print only the values, one per line, exactly as stored (b64 and bin in base64, json
    /// as compact JSON).
    #[arg(long, conflicts_with_all = ["json", "holder"])]
    pub value: bool,

    /// Print who last wrote the one node the ClientURI names (srv:<SrvID>, app:<id>,
    /// uid:<n> or admin; an instance root's owner): the principal a priority conflict
    /// names. A lower-priority server, or any local app, cannot overwrite a node a
    /// higher-priority server holds.
    #[arg(long)]
    pub holder: bool,

    /// The ClientURI (quote it in the shell).
    pub client_uri: String,
}

#[derive(Args, Debug)]
pub struct SetArgs {
    /// The node's format (chr, int, bool, float, b64, bin, date, time, xml, json, null);
    /// by default the DDF's.
    #[arg(long, value_name = "FORMAT", value_parser = FORMATS)]
    pub format: Option<String>,

    /// Read the value from FILE instead (e.g. a PEM certificate). Files that are not UTF-8
    /// text, or any file for the b64 and bin formats, are sent as raw bytes.
    #[arg(long, value_name = "FILE", conflicts_with = "value")]
    pub from_file: Option<PathBuf>,

    /// The ClientURI of one leaf node (quote it in the shell).
    pub client_uri: String,

    /// The new value, in the text form of the node's format.
    #[arg(required_unless_present = "from_file", allow_hyphen_values = true)]
    pub value: Option<String>,
}

/// Leaf formats `set --format` accepts (the daemon checks again).
const FORMATS: [&str; 11] = [
    "chr", "int", "bool", "float", "b64", "bin", "date", "time", "xml", "json", "null",
];

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The MOID of the MO type, e.g. urn:oma:mo:oma-dm-dmacc:1.2.
    pub moid: String,

    /// The MOData JSON object ({"<RootName>": {...}}); @FILE reads it from FILE, "-" from
    /// standard input.
    pub modata_json: String,
}

#[derive(Args, Debug)]
pub struct ChangesArgs {
    /// Report changes with a sequence number greater than SEQ.
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    pub since: u64,

    /// The ClientURI (quote it in the shell).
    pub client_uri: String,
}

#[derive(Args, Debug)]
pub struct GrantArgs {
    /// The instance root, MOID "/" MIID "/".
    pub instance_uri: String,

    /// app:<app id>, app:* or srv:<SrvID>.
    pub principal: String,

    /// The rights to give (any of Read, Write, Exec, Delegate).
    #[arg(required = true, value_name = "RIGHT", ignore_case = true, value_parser = right_parser())]
    pub rights: Vec<String>,
}

/// The rights `grant` accepts, as the daemon spells them.
const RIGHTS: [&str; 4] = ["Read", "Write", "Exec", "Delegate"];

/// Accepts a right in any case and yields the daemon's spelling.
fn right_parser() -> impl clap::builder::TypedValueParser<Value = String> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(RIGHTS).map(|given: String| {
        RIGHTS
            .iter()
            .find(|r| r.eq_ignore_ascii_case(&given))
            .map_or(given, |r| (*r).to_owned())
    })
}

#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// The instance root, MOID "/" MIID "/".
    pub instance_uri: String,

    /// app:<app id>, app:* or srv:<SrvID>.
    pub principal: String,
}

#[derive(Subcommand, Debug)]
pub enum AccountCommand {
    /// Add a DM account for a server and print its ClientURI.
    ///
    /// Builds the DM Account MO instance from the options and creates it in omadmd: SrvID
    /// from --id, SrvURI from --url, Name from --name, one Perm/<x>/MOID per --moid,
    /// Ext/Priority from --priority, Ext/CACert from the PEM file of --ca or --pin, and
    /// Auth/Trsp/Data and Auth/Trsp/Secret (HTTP Basic) from --user and --password-file.
    /// omadmctl reads the files itself, as the user who runs it, and checks everything
    /// before it calls omadmd: the URL must be https, a --ca file must hold CA certificates
    /// and a --pin file the server's own certificate, and the password file must hold one
    /// non-empty line. Without --ca or --pin, the server is checked against the system's
    /// trust store.
    ///
    /// Prints the new instance's ClientURI (MOID "/" MIID "/"); with --json,
    /// {"client_uri"}. Exits 2 on a bad option or file, 7 when an account with that SrvID
    /// exists already. Needs uid 0 or the manage polkit action.
    Add(AccountAddArgs),

    /// List the DM accounts: SrvID, URL, priority, permitted MOIDs and last session.
    ///
    /// Prints one line per DM server account omadmd has: its SrvID, its URL (SrvURI), its
    /// Ext/Priority (the server with the highest one is the default for session start), the
    /// MOIDs it may manage (its Perm list) and when its last DM session completed (UTC, or
    /// "never"). The permitted MOIDs are shown only to uid 0 and to users the manage polkit
    /// action allows; others see "(hidden)".
    ///
    /// With --json, prints an array of {"server_id", "name", "url", "priority",
    /// "permitted_moids", "last_session", "ignored_notifications"} objects; permitted_moids
    /// is null when hidden and last_session is POSIX seconds, or null for never.
    List,

    /// Remove the DM account of a server.
    ///
    /// Deletes the DM Account MO instance whose SrvID is SERVER_ID. omadmd forgets the
    /// server: no more sessions with it, and what it created stays in the tree. Exits 4 when
    /// there is no account with that SrvID. Needs uid 0 or the manage polkit action.
    Remove(AccountRemoveArgs),
}

#[derive(Args, Debug)]
pub struct AccountAddArgs {
    /// The server's identifier (SrvID), as the server itself names it; unique per account.
    #[arg(long, value_name = "ID", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub id: String,

    /// The server's DM 2.0 URL (SrvURI); https only.
    #[arg(long, value_name = "URL")]
    pub url: String,

    /// Trust the server through the CA certificate(s) in FILE (PEM), instead of the
    /// system's trust store.
    #[arg(long, value_name = "FILE", conflicts_with = "pin")]
    pub ca: Option<PathBuf>,

    /// Trust exactly the server certificate in FILE (PEM): the server must present it, and
    /// its name and dates are not checked.
    #[arg(long, value_name = "FILE")]
    pub pin: Option<PathBuf>,

    /// A display name for the account.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// A MOID the server may manage (repeatable), e.g. urn:oma:mo:oma-dm-devinfo:1.0.
    #[arg(long = "moid", value_name = "MOID")]
    pub moids: Vec<String>,

    /// The server's priority (Ext/Priority): the highest is the default server, and a
    /// server's writes win over those of lower ones.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub priority: Option<i64>,

    /// The HTTP Basic user name the client sends (Auth/Trsp/Data); needs --password-file.
    #[arg(long, value_name = "USER", requires = "password_file")]
    pub user: Option<String>,

    /// A file whose one line is the HTTP Basic password (Auth/Trsp/Secret); needs --user.
    /// A password is never given on the command line, where other users could see it.
    #[arg(long, value_name = "FILE", requires = "user")]
    pub password_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct AccountRemoveArgs {
    /// The SrvID of the account to remove.
    pub server_id: String,
}

#[derive(Args, Debug)]
pub struct BootstrapArgs {
    /// The bootstrap file (JSON or TNDS), read by omadmd as root.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Args, Debug)]
pub struct FactoryResetArgs {
    /// Reset without asking for confirmation.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Subcommand, Debug)]
pub enum SessionCommand {
    /// Start a DM session with a server and follow it to its end.
    ///
    /// Asks omadmd to start a DM session with the server whose DM account has SrvID
    /// SERVER_ID or, without SERVER_ID, with the server whose account has the highest
    /// Ext/Priority; when omadmd chose and that server cannot be reached (503, or 495 when
    /// the TLS handshake fails), omadmd goes on with a new session with the next server by
    /// priority (see omadmctl alert), which session start reports as failed but does not
    /// follow: session status and the SessionStarted signal show it. omadmd runs the session in the background; omadmctl prints a line when
    /// it starts and one with its result when it ends: "finished: 200 OK", or "failed:" with
    /// the status and what it means (400 malformed package, 413 package too large, 415 wrong
    /// content type, 495 server certificate refused, 503 server unreachable, 504 longer than
    /// [limits] session_seconds, 508 more packages than [limits] session_packages, 500 local
    /// failure; any other status is the server's HTTP status). On a terminal, a spinner with
    /// the elapsed time runs on stderr meanwhile.
    ///
    /// Exits 0 when the session succeeded and 9 when it failed; 4 when there is no such DM
    /// account (or none at all), 8 when a session with that server is already running.
    /// Ctrl-C stops waiting (exit status 130) but not the session, which goes on in omadmd.
    ///
    /// With --no-wait, prints the session id and returns at once. With --json, prints
    /// {"server_id", "session_id", "status", "result"} when the session has ended, or
    /// {"session_id"} with --no-wait.
    Start(SessionStartArgs),

    /// Show whether a DM session is running.
    ///
    /// Prints omadmd's State: idle when no DM session runs, session while one does (started
    /// with session start, by a server's request, or as a follow-up omadmd started itself),
    /// offline when omadmd cannot reach the network. Needs no polkit authorization.
    ///
    /// With --json, prints {"state"}.
    Status,
}

#[derive(Args, Debug)]
pub struct AlertArgs {
    /// The SrvID of the server's DM account; by default omadmd chooses (the owner of
    /// --source's instance, else the highest Ext/Priority, falling over when unreachable).
    #[arg(long, value_name = "ID", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub server: Option<String>,

    /// The alert type, a URN (e.g. urn:oma:at:ext-example:1.0:UpdateDone).
    #[arg(long = "type", value_name = "TYPE", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub alert_type: String,

    /// The ClientURI of the one node the alert is about (its SourceURI; quote it in the
    /// shell).
    #[arg(long, value_name = "URI")]
    pub source: Option<String>,

    /// How serious the alert is.
    #[arg(long, value_name = "MARK", value_parser = MARKS)]
    pub mark: Option<String>,

    /// How to read the data: chr (text, the default), int, bool, b64 or json.
    #[arg(long, value_name = "TYPE", value_parser = DATA_TYPES)]
    pub data_type: Option<String>,

    /// The alert's data (at most 16 KiB).
    #[arg(
        long,
        value_name = "DATA",
        allow_hyphen_values = true,
        conflicts_with = "data_file"
    )]
    pub data: Option<String>,

    /// Read the alert's data from FILE ("-": standard input).
    #[arg(long, value_name = "FILE")]
    pub data_file: Option<PathBuf>,
}

/// The marks `alert --mark` accepts (PROTOCOL.md §6).
const MARKS: [&str; 7] = [
    "fatal",
    "critical",
    "minor",
    "warning",
    "informational",
    "harmless",
    "indeterminate",
];

/// The data types `alert --data-type` accepts (the daemon checks again).
const DATA_TYPES: [&str; 5] = omadmd::session::send_alert::DATA_TYPES;

#[derive(Args, Debug)]
pub struct SessionStartArgs {
    /// Why the session starts: the session-reason alert type sent to the server, default
    /// urn:oma:at:dm:2.0:ClientInitiatedMgmt (also ServerInitiatedMgmt, BootstrapComplete).
    /// A name without ":" stands for urn:oma:at:dm:2.0:<name>.
    #[arg(long, value_name = "ALERT_TYPE", value_parser = reason_parser())]
    pub reason: Option<String>,

    /// Print the session id and return without waiting for the session to end.
    #[arg(long)]
    pub no_wait: bool,

    /// The SrvID of the server's DM account; by default, the account with the highest
    /// Ext/Priority.
    pub server_id: Option<String>,
}

/// The namespace of the DM 2.0 alert types (a bare `--reason` name is put in it).
const ALERT_TYPE_PREFIX: &str = "urn:oma:at:dm:2.0:";

/// Accepts a full alert type, or a bare name such as ServerInitiatedMgmt (the daemon checks
/// which reasons it knows).
fn reason_parser() -> impl clap::builder::TypedValueParser<Value = String> {
    use clap::builder::TypedValueParser as _;
    clap::builder::NonEmptyStringValueParser::new().map(|given: String| {
        if given.contains(':') {
            given
        } else {
            format!("{ALERT_TYPE_PREFIX}{given}")
        }
    })
}

#[derive(Args, Debug)]
pub struct TransfersArgs {
    #[command(subcommand)]
    pub command: Option<TransfersCommand>,
}

#[derive(Subcommand, Debug)]
pub enum TransfersCommand {
    /// Follow transfers until they end, with a progress bar each.
    ///
    /// Follows the transfer ID or, without ID, every transfer not finished yet and those
    /// that start meanwhile, until each is done or failed. On a terminal, draws a progress
    /// bar per transfer on stderr (bytes, percentage, rate, state). Elsewhere it prints a
    /// line each time a transfer's state changes and each tenth of the way, as transfers
    /// prints them (id, direction, state, done/total, rate, ClientURI, SrvID); with --json,
    /// one JSON object a line, as transfers --json prints them. Prints "No transfers
    /// running." when there is nothing to follow.
    ///
    /// Exits 0 when every transfer followed is done, 10 when one failed, 4 when there is no
    /// transfer ID, 3 when omadmd leaves the bus. Ctrl-C stops following (exit status 130)
    /// but not the transfers. Needs no polkit authorization.
    Watch(TransfersWatchArgs),

    /// Suspend a transfer.
    ///
    /// Asks omadmd to suspend transfer ID: it stops at its next chunk after saving where it
    /// is, and stays suspended, across restarts of omadmd too, until transfers resume.
    /// Suspending a suspended transfer is no error. Exits 4 when there is no transfer ID, 6
    /// when it has finished. Needs uid 0 or the manage polkit action.
    Suspend(TransferIdArgs),

    /// Resume a suspended transfer.
    ///
    /// Asks omadmd to resume transfer ID from where it stopped. Resuming one that is not
    /// suspended is no error. Exits 4 when there is no transfer ID, 6 when it has finished.
    /// Needs uid 0 or the manage polkit action.
    Resume(TransferIdArgs),
}

#[derive(Args, Debug)]
pub struct TransfersWatchArgs {
    /// The transfer to follow (as transfers lists it); every unfinished one by default.
    pub id: Option<u64>,
}

#[derive(Args, Debug)]
pub struct TransferIdArgs {
    /// The transfer's ID, as transfers lists it.
    pub id: u64,
}

#[derive(Args, Debug)]
pub struct ChildrenArgs {
    #[command(subcommand)]
    pub command: Option<ChildrenCommand>,
}

#[derive(Subcommand, Debug)]
pub enum ChildrenCommand {
    /// Detach a child: remove it and its MO instances.
    ///
    /// Asks omadmd to detach the child KEY (as children lists it): its MO instances and its
    /// node in the device inventory are removed in one transaction, watchers are told of
    /// each removal, and every DM server whose account may manage the inventory
    /// (urn:oma:mo:ext-omadmd-gateway:1.0) is sent the alert
    /// urn:oma:at:ext-omadmd:1.0:ChildDetached with Reason "removed". Its LwM2M
    /// registration ends too: a device that is still there learns it at its next Update
    /// (4.04) and registers, and attaches, anew (keep it out with [gateway.lwm2m]
    /// endpoints). Exits 4 when there is no child KEY or the gateway is off. Needs uid 0 or
    /// the manage polkit action.
    Detach(ChildKeyArgs),
}

#[derive(Args, Debug)]
pub struct ChildKeyArgs {
    /// The child's key, as children lists it.
    pub key: String,
}

#[derive(Subcommand, Debug)]
pub enum DdfCommand {
    /// Validate DDF files and summarize each.
    ///
    /// Prints a summary of each file: the MOs it defines (MOID, root node, node count), or
    /// the line and reason it was refused. Needs no daemon. Exits 1 if any file is invalid.
    Check {
        /// DDF files to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TndsCommand {
    /// Validate TNDS documents and summarize each.
    ///
    /// Prints a summary of each document: its node count and MOID, or every problem with its
    /// line. Trees whose MOID one of the --ddf files defines are checked against that MO
    /// type. Needs no daemon. Exits 1 if any file is invalid.
    Check {
        /// DDF file defining MO types to check against (repeatable).
        #[arg(long = "ddf", value_name = "FILE")]
        ddfs: Vec<PathBuf>,
        /// TNDS files to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// The command whose page to print (e.g. get, or ddf check); none for omadmctl(1).
    #[arg(value_name = "COMMAND")]
    pub command: Vec<String>,

    /// Instead of a page, list the command of every page but omadmctl(1), one a line (for
    /// installing them all: the page of "ddf check" is omadmctl-ddf-check(1)).
    #[arg(long, conflicts_with = "command")]
    pub list: bool,
}

/// One example of a command's use: what it does, and the command line.
pub type Example = (&'static str, &'static str);

/// The examples of a command, by its path below omadmctl ("" for omadmctl itself).
pub fn examples(path: &str) -> &'static [Example] {
    match path {
        "" => &[
            (
                "Is omadmd running, and which device is this?",
                "omadmctl status",
            ),
            (
                "Show the device information MO",
                "omadmctl tree 'urn:oma:mo:oma-dm-devinfo:1.0//'",
            ),
            (
                "Print every DM server's URI",
                "omadmctl get 'urn:oma:mo:oma-dm-dmacc:1.2/*/SrvURI'",
            ),
            (
                "Follow changes to the DM accounts",
                "omadmctl watch 'urn:oma:mo:oma-dm-dmacc:1.2/*/'",
            ),
            (
                "Add a DM server's account, trusting its CA",
                "omadmctl account add --id ma1 --url https://dm.example.com/dm --ca ca.pem",
            ),
            (
                "Start a session with the default DM server and wait for its result",
                "omadmctl session start",
            ),
        ],
        "status" => &[
            ("Show the daemon's properties", "omadmctl status"),
            (
                "Print the device ID in a script",
                "omadmctl status --json | jq -r .dev_id",
            ),
        ],
        "get" => &[
            (
                "Read the device ID",
                "omadmctl get 'urn:oma:mo:oma-dm-devinfo:1.0//DevID'",
            ),
            (
                "List the top-level nodes of every DM account",
                "omadmctl get 'urn:oma:mo:oma-dm-dmacc:1.2/*/*'",
            ),
            (
                "Print only the value, for a script",
                "omadmctl get --value 'urn:oma:mo:oma-dm-devinfo:1.0//SwV'",
            ),
            (
                "JSON-typed values",
                "omadmctl get --json 'urn:oma:mo:oma-dm-dmacc:1.2/*/Ext/Priority'",
            ),
        ],
        "tree" => &[
            (
                "Show the DevInfo MO",
                "omadmctl tree 'urn:oma:mo:oma-dm-devinfo:1.0//'",
            ),
            (
                "Show every DM account",
                "omadmctl tree 'urn:oma:mo:oma-dm-dmacc:1.2/*/'",
            ),
            (
                "Save one instance as an MO serialization",
                "omadmctl tree --json 'urn:oma:mo:oma-dm-dmacc:1.2/1/' > dmacc-1.json",
            ),
        ],
        "set" => &[
            (
                "Rename a DM account",
                "omadmctl set 'urn:oma:mo:oma-dm-dmacc:1.2/1/Name' 'Example MA'",
            ),
            (
                "Set a number, naming its format",
                "omadmctl set --format int 'urn:oma:mo:oma-dm-dmacc:1.2/1/Ext/Priority' 10",
            ),
            (
                "Pin a server's CA certificate from a PEM file",
                "omadmctl set 'urn:oma:mo:oma-dm-dmacc:1.2/1/Ext/CACert' --from-file ca.pem",
            ),
        ],
        "delete" => &[
            (
                "Delete a leaf",
                "omadmctl delete 'urn:oma:mo:oma-dm-dmacc:1.2/1/Name'",
            ),
            (
                "Delete a whole instance",
                "omadmctl delete 'urn:oma:mo:oma-dm-dmacc:1.2/1/'",
            ),
        ],
        "create" => &[
            (
                "Add a DM account",
                "omadmctl create urn:oma:mo:oma-dm-dmacc:1.2 '{\"DMAcc\": {\"SrvID\": \"ma1\", \
                 \"SrvURI\": \"https://dm.example.com/dm\", \"Perm\": {\"1\": {\"MOID\": \
                 \"urn:oma:mo:oma-dm-devinfo:1.0\"}}}}'",
            ),
            (
                "Take the MOData from a file",
                "omadmctl create urn:oma:mo:oma-dm-dmacc:1.2 @dmacc.json",
            ),
        ],
        "watch" => &[
            (
                "Follow changes to every DM account",
                "omadmctl watch 'urn:oma:mo:oma-dm-dmacc:1.2/*/'",
            ),
            (
                "Feed changes to a script as JSON lines",
                "omadmctl watch --json 'urn:oma:mo:oma-dm-devinfo:1.0//' | jq -r .client_uri",
            ),
        ],
        "changes" => &[
            (
                "Everything the journal holds about DM accounts",
                "omadmctl changes 'urn:oma:mo:oma-dm-dmacc:1.2/*/'",
            ),
            (
                "Only what changed after seq 42",
                "omadmctl changes --since 42 'urn:oma:mo:oma-dm-dmacc:1.2/*/'",
            ),
        ],
        "grant" => &[
            (
                "Let a systemd service read and write an instance",
                "omadmctl grant 'urn:oma:mo:ext-example-sensor:1.0/1/' app:sensord.service Read \
                 Write",
            ),
            (
                "Let every local app read the DevInfo MO",
                "omadmctl grant 'urn:oma:mo:oma-dm-devinfo:1.0/0/' 'app:*' Read",
            ),
        ],
        "revoke" => &[(
            "Take the rights given to a service",
            "omadmctl revoke 'urn:oma:mo:ext-example-sensor:1.0/1/' app:sensord.service",
        )],
        "grants" => &[(
            "Who may do what with an instance",
            "omadmctl grants 'urn:oma:mo:ext-example-sensor:1.0/1/'",
        )],
        "account add" => &[
            (
                "Add a server trusted through its CA, allowed to manage one MO",
                "omadmctl account add --id ma1 --url https://dm.example.com/dm --ca ca.pem \
                 --moid urn:oma:mo:ext-example-weather:1.0",
            ),
            (
                "Pin the server's own certificate, log in with HTTP Basic, give a priority",
                "omadmctl account add --id lab --url https://10.0.0.5:8443/dm --pin server.pem \
                 --user device --password-file /root/lab.pass --priority 10",
            ),
            (
                "Add one, then start a session with it",
                "omadmctl account add --id ma1 --url https://dm.example.com/dm && omadmctl \
                 session start ma1",
            ),
        ],
        "account list" => &[
            ("Show every DM account", "omadmctl account list"),
            (
                "The SrvIDs of the accounts, for a script",
                "omadmctl account list --json | jq -r '.[].server_id'",
            ),
        ],
        "account remove" => &[("Remove the account of ma1", "omadmctl account remove ma1")],
        "bootstrap" => &[
            (
                "Add the DM accounts of a bootstrap file",
                "omadmctl bootstrap /etc/omadmd/acme.json",
            ),
            (
                "Apply a TNDS document",
                "omadmctl bootstrap /var/lib/provisioning/acme.xml",
            ),
        ],
        "factory-reset" => &[
            (
                "Return to the bootstrap state, asking first",
                "omadmctl factory-reset",
            ),
            ("The same from a script", "omadmctl factory-reset --yes"),
        ],
        "session start" => &[
            (
                "Start a session with the server of the highest priority",
                "omadmctl session start",
            ),
            (
                "Start a session with the server ma1 and return at once",
                "omadmctl session start --no-wait ma1",
            ),
            (
                "Tell the server ma1 that a bootstrap is complete",
                "omadmctl session start --reason BootstrapComplete ma1",
            ),
            (
                "The result as JSON, for a script",
                "omadmctl session start --json ma1 | jq .status",
            ),
        ],
        "alert" => &[
            (
                "Tell the default server that an update finished",
                "omadmctl alert --type urn:oma:at:ext-example:1.0:UpdateDone",
            ),
            (
                "A warning about one node, to the server that owns its instance",
                "omadmctl alert --type urn:oma:at:ext-example:1.0:LowBattery --mark warning \
                 --source 'urn:oma:mo:ext-example-battery:1.0/1/Level' --data-type int --data 7",
            ),
            (
                "JSON data from a file, to the server ma1",
                "omadmctl alert --server ma1 --type urn:oma:at:ext-example:1.0:Report \
                 --data-type json --data-file report.json",
            ),
        ],
        "transfers" => &[
            ("List the transfers", "omadmctl transfers"),
            (
                "The transfers that failed, for a script",
                "omadmctl transfers --json | jq '.[] | select(.state == \"failed\")'",
            ),
        ],
        "transfers watch" => &[
            (
                "Follow every transfer until they end",
                "omadmctl transfers watch",
            ),
            (
                "Wait for transfer 3 in a script",
                "omadmctl transfers watch 3 > /dev/null && echo done",
            ),
        ],
        "transfers suspend" => &[(
            "Suspend transfer 3, e.g. on a metered link",
            "omadmctl transfers suspend 3",
        )],
        "transfers resume" => &[("Let transfer 3 carry on", "omadmctl transfers resume 3")],
        "children" => &[
            ("List the devices behind the gateway", "omadmctl children"),
            (
                "The keys of the unreachable children, for a script",
                "omadmctl children --json | jq -r '.[] | select(.state == \"unreachable\") | .key'",
            ),
            (
                "Read a child's temperature (its instance's MIID is KEY.INSTANCE)",
                "omadmctl get 'urn:oma:lwm2m:ext:3303/thermo-42.0/5700'",
            ),
        ],
        "children detach" => &[(
            "Remove the child thermo-42 and its instances",
            "omadmctl children detach thermo-42",
        )],
        "session status" => &[
            ("Is a DM session running?", "omadmctl session status"),
            (
                "The state in a script",
                "omadmctl session status --json | jq -r .state",
            ),
        ],
        "ddf check" => &[
            (
                "Check a vendor DDF",
                "omadmctl ddf check /usr/share/omadmd/ddf/*.ddf",
            ),
            ("Summaries as JSON", "omadmctl ddf check --json vendor.ddf"),
        ],
        "tnds check" => &[(
            "Check a bootstrap tree against its MO type",
            "omadmctl tnds check --ddf vendor.ddf bootstrap.xml",
        )],
        "completions" => &[
            (
                "Install bash completions for the current user",
                "omadmctl completions bash > ~/.local/share/bash-completion/completions/omadmctl",
            ),
            (
                "Load zsh completions",
                "omadmctl completions zsh > \"${fpath[1]}/_omadmctl\"",
            ),
        ],
        "man" => &[
            ("Read the main page", "omadmctl man | man -l -"),
            ("Read the page of get", "omadmctl man get | man -l -"),
        ],
        _ => &[],
    }
}

/// The environment variables omadmctl reads, with what they do.
pub const ENVIRONMENT: [(&str, &str); 3] = [
    (
        "DBUS_SYSTEM_BUS_ADDRESS",
        "The address of the system bus (default unix:path=/run/dbus/system_bus_socket).",
    ),
    (
        "DBUS_SESSION_BUS_ADDRESS",
        "The address of the session bus, used with --session.",
    ),
    (
        "NO_COLOR",
        "When set, tree prints no colours or dimmed text.",
    ),
];

/// The full clap command: the derive definition plus, in every command's long help, its
/// examples, and in omadmctl's the exit statuses and the environment.
pub fn command() -> clap::Command {
    let cmd = Cli::command().after_long_help(top_after_help());
    add_examples(cmd, "")
}

fn add_examples(mut cmd: clap::Command, path: &str) -> clap::Command {
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in names {
        let sub_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path} {name}")
        };
        cmd = cmd.mut_subcommand(&name, |sub| {
            let text = examples_text(&sub_path);
            let sub = if text.is_empty() {
                sub
            } else {
                sub.after_long_help(text)
            };
            add_examples(sub, &sub_path)
        });
    }
    cmd
}

fn heading(text: &str) -> String {
    let style = Styles::default().get_header().to_owned();
    format!("{style}{text}{style:#}")
}

fn examples_text(path: &str) -> String {
    let list = examples(path);
    if list.is_empty() {
        return String::new();
    }
    let mut text = format!("{}\n", heading("EXAMPLES:"));
    for (what, command) in list {
        text.push_str(&format!("  {what}:\n      $ {command}\n"));
    }
    text
}

fn top_after_help() -> String {
    let mut text = examples_text("");
    text.push_str(&format!("\n{}\n", heading("EXIT STATUS:")));
    let width = EXIT_STATUS
        .iter()
        .map(|(code, _)| code.to_string().len())
        .max()
        .unwrap_or(1);
    for (code, meaning) in EXIT_STATUS {
        text.push_str(&hanging(&format!("  {code:<width$}  "), meaning));
    }
    text.push_str(&format!("\n{}\n", heading("ENVIRONMENT:")));
    for (name, meaning) in ENVIRONMENT {
        text.push_str(&format!("  {name}\n"));
        text.push_str(&hanging("      ", meaning));
    }
    text
}

/// `text` after `first`, wrapped to 79 columns with later lines indented as far as `first`
/// (clap does not re-wrap lines that fit the terminal).
fn hanging(first: &str, text: &str) -> String {
    const WIDTH: usize = 79;
    let indent = " ".repeat(first.len());
    let mut out = String::new();
    let mut line = first.to_owned();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.len() + 1 + word.len() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = indent.clone();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out.push('\n');
    out
}
