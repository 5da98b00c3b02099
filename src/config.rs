//! `/etc/omadmd/omadmd.toml`: every key optional, built-in defaults serve; an unknown key
//! is an error that names it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::tree::uri::Moid;

/// The default configuration file.
pub const DEFAULT_PATH: &str = "/etc/omadmd/omadmd.toml";

/// The daemon's configuration.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub access: AccessConfig,
    pub bootstrap: BootstrapConfig,
    pub ddf: DdfConfig,
    pub tls: TlsConfig,
    pub session: SessionConfig,
    /// `[exec."<ClientURI pattern>"] command = [...]`: EXEC handlers.
    pub exec: BTreeMap<String, ExecConfig>,
    pub limits: Limits,
    pub notification: NotificationConfig,
    pub gateway: GatewayConfig,
    pub subagent: SubagentConfig,
}

/// `[gateway]`: devices managed through omadmd (docs/gateway.md).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// What every child instance grants at creation: principal (`srv:*`, `app:*`, `srv:<id>`,
    /// `app:<name>`, `user:<name>`) → rights (`Read`, `Write`, `Exec`, `Delegate`).
    pub grants: BTreeMap<String, Vec<String>>,
    /// Longest wait for a child's answer, in seconds (at most [`COMMAND_TIMEOUT_MAX`]).
    pub command_timeout_s: u64,
    /// How long past its lifetime a registration stays `online` without an Update.
    pub grace_s: u64,
    /// `LastSeen` is written at most this often per child, in seconds.
    pub last_seen_granularity_s: u64,
    /// A child `unreachable` this long is detached, in seconds.
    pub forget_after_s: u64,
    /// Largest frame on a guest's socket, in bytes (docs/gateway.md §6.2), both ways; on a
    /// guest, the bound of frames from its host.
    pub guest_frame_bytes: usize,
    pub lwm2m: Lwm2mConfig,
    /// `[gateway.guests.<name>]`: other environments' omadmd managed as children, by name.
    pub guests: BTreeMap<String, GuestConfig>,
}

/// The range `[gateway] guest_frame_bytes` must lie in.
pub const GUEST_FRAME_BYTES: std::ops::RangeInclusive<usize> = 65_536..=67_108_864;

/// `[gateway.guests.<name>]`: one guest omadmd (docs/gateway.md §6.1).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuestConfig {
    /// The socket the host serves the guest on; `/run/omadmd/guests/<name>/host.sock`
    /// when unset.
    pub socket: Option<PathBuf>,
    /// The uid the guest's omadmd has as the host sees it (`SO_PEERCRED`).
    pub uid: u32,
    /// Where the guest's token is kept (written on first start);
    /// `/var/lib/omadmd/guests/<name>.token` when unset.
    pub token_file: Option<PathBuf>,
}

impl GuestConfig {
    /// The socket of the guest `name`.
    pub fn socket_path(&self, name: &str) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| Path::new("/run/omadmd/guests").join(name).join("host.sock"))
    }

    /// The token file of the guest `name`.
    pub fn token_path(&self, name: &str) -> PathBuf {
        self.token_file
            .clone()
            .unwrap_or_else(|| Path::new("/var/lib/omadmd/guests").join(format!("{name}.token")))
    }
}

/// `[subagent]`: this omadmd as a guest of a host omadmd (docs/gateway.md §6); off until
/// `host_socket` is set.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubagentConfig {
    /// The host's socket, as this environment sees it.
    pub host_socket: Option<PathBuf>,
    /// The token the host's admin provisioned (64 hex digits).
    pub token_file: PathBuf,
    /// The MOIDs whose instances the host is shown.
    pub export_moids: Vec<Moid>,
}

impl Default for SubagentConfig {
    fn default() -> Self {
        SubagentConfig {
            host_socket: None,
            token_file: PathBuf::from("/etc/omadmd/subagent.token"),
            // Invariant: a built-in MOID is well-formed.
            export_moids: Moid::parse(crate::tree::builtin::DEVINFO)
                .into_iter()
                .collect(),
        }
    }
}

/// MOIDs a guest never exports: its DM accounts, its DACL MO, its sessions and its own
/// children (no nesting).
pub const NEVER_EXPORTED: [&str; 4] = [
    crate::tree::builtin::DMACC,
    crate::tree::builtin::DACL,
    crate::tree::builtin::SESSIONINFO,
    crate::tree::builtin::GATEWAY,
];

impl SubagentConfig {
    /// Refuses an export of what a guest never shows its host.
    fn check(&self) -> Result<(), String> {
        match self
            .export_moids
            .iter()
            .find(|m| NEVER_EXPORTED.contains(&m.as_str()))
        {
            Some(m) => Err(format!(
                "[subagent] export_moids: {m} is never exported (DM accounts, the DACL MO, \
                 SessionInfo and the gateway inventory stay the guest's)"
            )),
            None => Ok(()),
        }
    }
}

/// Most seconds `[gateway] command_timeout_s` may be: under D-Bus's default method-call
/// timeout, so a D-Bus `Set` on a child answers before its caller gives up.
pub const COMMAND_TIMEOUT_MAX: u64 = 20;

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            grants: BTreeMap::from([
                (
                    "srv:*".to_owned(),
                    vec!["Read".to_owned(), "Write".to_owned(), "Exec".to_owned()],
                ),
                ("app:*".to_owned(), vec!["Read".to_owned()]),
            ]),
            command_timeout_s: 15,
            grace_s: 60,
            last_seen_granularity_s: 300,
            forget_after_s: 7 * 24 * 3600,
            guest_frame_bytes: 8 * 1024 * 1024,
            lwm2m: Lwm2mConfig::default(),
            guests: BTreeMap::new(),
        }
    }
}

/// `[gateway.lwm2m]`: the LwM2M adapter, off until `listen` names an address.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lwm2mConfig {
    /// `"host:port"` addresses to serve LwM2M on (plain CoAP over UDP); a wildcard address
    /// is refused.
    pub listen: Vec<String>,
    /// The network interface the sockets are bound to (`SO_BINDTODEVICE`), if any.
    pub interface: Option<String>,
    /// The endpoint names allowed to register; every name when unset.
    pub endpoints: Option<Vec<String>>,
    /// Directories of LwM2M object XML, in order (a later definition of a URN wins).
    pub object_dirs: Vec<PathBuf>,
    /// Observe attributes asked of each child: least and most seconds between notifications.
    pub pmin_s: u64,
    pub pmax_s: u64,
}

impl Default for Lwm2mConfig {
    fn default() -> Self {
        Lwm2mConfig {
            listen: Vec::new(),
            interface: None,
            endpoints: None,
            object_dirs: vec![
                PathBuf::from("/usr/share/omadmd/lwm2m"),
                PathBuf::from("/etc/omadmd/lwm2m"),
            ],
            pmin_s: 10,
            pmax_s: 300,
        }
    }
}

impl GatewayConfig {
    /// `grants` as rights: what a child's instances grant at creation. [`Config::load`]
    /// refuses a file where this is an error.
    pub fn grant_rights(&self) -> Result<Vec<(String, crate::store::Rights)>, String> {
        self.grants
            .iter()
            .map(|(principal, rights)| {
                crate::store::Rights::parse(rights.iter().map(String::as_str))
                    .map(|r| (principal.clone(), r))
                    .map_err(|e| format!("[gateway] grants.{principal:?}: {e}"))
            })
            .collect()
    }

    /// Refuses bounds that cannot work, rights that do not exist and wildcard listen
    /// addresses.
    fn check(&self) -> Result<(), String> {
        if !(1..=COMMAND_TIMEOUT_MAX).contains(&self.command_timeout_s) {
            return Err(format!(
                "[gateway] command_timeout_s = {} must be between 1 and {COMMAND_TIMEOUT_MAX}",
                self.command_timeout_s
            ));
        }
        for (key, value) in [
            ("last_seen_granularity_s", self.last_seen_granularity_s),
            ("forget_after_s", self.forget_after_s),
        ] {
            if value == 0 {
                return Err(format!("[gateway] {key} must be at least 1"));
            }
        }
        if let Some(name) = self.guests.keys().find(|n| {
            n.is_empty()
                || n.len() > 64
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }) {
            return Err(format!(
                "[gateway.guests.{name:?}]: a guest's name is 1 to 64 of A-Z, a-z, 0-9, - and _"
            ));
        }
        if !GUEST_FRAME_BYTES.contains(&self.guest_frame_bytes) {
            return Err(format!(
                "[gateway] guest_frame_bytes = {} must be between {} and {}",
                self.guest_frame_bytes,
                GUEST_FRAME_BYTES.start(),
                GUEST_FRAME_BYTES.end()
            ));
        }
        self.grant_rights()?;
        let lwm2m = &self.lwm2m;
        if lwm2m.pmin_s > lwm2m.pmax_s || lwm2m.pmax_s == 0 {
            return Err(format!(
                "[gateway.lwm2m] pmin_s = {} and pmax_s = {} must satisfy pmin_s <= pmax_s, pmax_s >= 1",
                lwm2m.pmin_s, lwm2m.pmax_s
            ));
        }
        for listen in &lwm2m.listen {
            let addr: std::net::SocketAddr = listen.parse().map_err(|_| {
                format!("[gateway.lwm2m] listen: {listen:?} is not an address:port")
            })?;
            if addr.ip().is_unspecified() {
                return Err(format!(
                    "[gateway.lwm2m] listen: {listen:?} is a wildcard; LwM2M runs unauthenticated, \
                     name the address of the devices' link"
                ));
            }
        }
        Ok(())
    }
}

/// `[notification]`: how server notifications (Package#0) are checked, and the channels they
/// arrive on (see [`crate::notification`]).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationConfig {
    /// How far a notification's TIMESTAMP may be from the device's clock, either way, in
    /// seconds; also how long its NOTIFICATION-ID counts as seen.
    pub timestamp_window_s: u64,
    /// Most notifications that start a session per server and minute.
    pub rate_per_minute: u32,
    /// How long a session whose notification asked for a kind of bearer
    /// (PREFERRED-CON-TYPE) waits for one to be up before it runs on any, in seconds.
    pub bearer_timeout_s: u64,
    pub udp: UdpConfig,
    pub mqtt: MqttConfig,
}

impl Default for NotificationConfig {
    fn default() -> Self {
        NotificationConfig {
            timestamp_window_s: 300,
            rate_per_minute: 6,
            bearer_timeout_s: 120,
            udp: UdpConfig::default(),
            mqtt: MqttConfig::default(),
        }
    }
}

/// `[notification.mqtt]`: the MQTT channel (the brokers come from the DM accounts' `Push`
/// nodes).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// MQTT keepalive, in seconds: the broker hears from the device at least this often, and
    /// a connection silent for one and a half times as long is given up and made anew.
    pub keepalive_s: u16,
    /// Longest wait between two attempts to reach a broker, in seconds (the wait starts at one
    /// second and doubles, with jitter).
    pub reconnect_max_s: u64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            keepalive_s: 60,
            reconnect_max_s: 300,
        }
    }
}

/// `[notification.udp]`: the UDP channel.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UdpConfig {
    /// `"host:port"` to receive Package#0 datagrams on; none when unset.
    pub listen: Option<String>,
}

/// `[limits]`: bounds on everything callers and servers send, each with a safe default.
/// Exceeding one is an error that names the limit, never a crash or a dropped connection.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Longest ClientURI, in bytes.
    pub uri_bytes: usize,
    /// Most path segments in a ClientURI (below the MO instance).
    pub uri_segments: usize,
    /// Most x-names in a ClientURI.
    pub uri_xnames: usize,
    /// Most `nv=` fields in a ClientURI.
    pub nv_fields: usize,
    /// Most nodes one read (Get, wildcard, server GET) may return.
    pub result_rows: usize,
    /// Largest reply to one read, in bytes (as serialized).
    pub reply_bytes: usize,
    /// Deepest node below an instance root any write may create.
    pub tree_depth: usize,
    /// Most watches one bus connection may hold.
    pub watches_per_caller: usize,
    /// Bytes of cached polkit answers kept per bus connection.
    pub auth_cache_bytes_per_caller: usize,
    /// Most bytes (node names and values) of the instances one owner (app or server) owns.
    pub owner_bytes: u64,
    /// Most instances one owner (app or server) owns.
    pub owner_instances: u64,
    /// Change-journal entries kept; older ones are pruned.
    pub journal_entries: u64,
    /// Most Package#2s in one DM session.
    pub session_packages: u32,
    /// Longest DM session, in seconds.
    pub session_seconds: u64,
    /// Largest Package#3 (results) the client sends, in bytes.
    pub package3_bytes: usize,
    /// Most `SUB` subscriptions one DM server holds; further ones are refused (`413`).
    pub subscriptions_per_server: usize,
    /// Most asynchronous `EXEC`s (with a ServerURI) one DM server has running at once;
    /// further ones are refused (`429`).
    pub exec_concurrent: usize,
    /// Most alerts kept waiting for one DM server; beyond it the oldest are dropped.
    pub pending_alerts_per_server: usize,
    /// Longest ServerURI a DM server may name in a command, in bytes (`400` beyond).
    pub server_uri_bytes: usize,
    /// Largest large object (a `bin` value kept in a file: HGET into a `bin` leaf), in
    /// bytes (`413` beyond); it also counts towards its owner's `owner_bytes`.
    pub object_bytes: u64,
    /// How long an HGET, HPUT or HPOST of a large object holds its session before it
    /// answers `202` and reports the result later in an alert, in seconds.
    pub transfer_wait_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            uri_bytes: 4096,
            uri_segments: 64,
            uri_xnames: 8,
            nv_fields: 16,
            result_rows: 100_000,
            reply_bytes: 16 * 1024 * 1024,
            tree_depth: 32,
            watches_per_caller: 128,
            auth_cache_bytes_per_caller: 64 * 1024,
            owner_bytes: 64 * 1024 * 1024,
            owner_instances: 10_000,
            journal_entries: 100_000,
            session_packages: 200,
            session_seconds: 900,
            package3_bytes: 8 * 1024 * 1024,
            subscriptions_per_server: 64,
            exec_concurrent: 4,
            pending_alerts_per_server: 64,
            server_uri_bytes: 2048,
            object_bytes: 4 * 1024 * 1024 * 1024,
            transfer_wait_seconds: 30,
        }
    }
}

/// `[access]`: what every DM server may do whatever its account's `Perm` list says.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// MOIDs every server may read (their instances' grants permitting); never written by a
    /// server that was not given them.
    pub public_moids: Vec<Moid>,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            // Invariant: a built-in MOID is well-formed.
            public_moids: [
                crate::tree::builtin::DEVINFO,
                crate::tree::builtin::FEATURES_MO,
            ]
            .into_iter()
            .flat_map(Moid::parse)
            .collect(),
        }
    }
}

/// `[tls]`: extra CA certificates (PEM files) trusted for servers whose account has no
/// `Ext/CACert`, on top of the system roots.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub extra_ca_files: Vec<PathBuf>,
}

/// `[session]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Largest Package#2 accepted; larger ones end the session with 413.
    pub max_package_bytes: usize,
    /// On SIGTERM, how long running sessions and asynchronous EXEC handlers may take to
    /// finish (at most [`STOP_DRAIN_MAX`]).
    pub stop_drain_seconds: u64,
    /// Then, how long aborted work may take to record that it was aborted (1 to
    /// [`STOP_ABORT_MAX`]).
    pub stop_abort_seconds: u64,
    /// Whether a DM account that never had a session gets one at once (carrying
    /// `BootstrapComplete`) when it arrives or at start; off, its first session waits for
    /// a trigger (and still carries it).
    pub first_session_at_once: bool,
}

/// Most `stop_drain_seconds`; with [`STOP_ABORT_MAX`], a stop stays within systemd's default
/// 90 s `TimeoutStopSec`.
pub const STOP_DRAIN_MAX: u64 = 60;

/// Most `stop_abort_seconds`.
pub const STOP_ABORT_MAX: u64 = 20;

/// One `[exec."<pattern>"]` entry.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// The program and its arguments.
    pub command: Vec<String>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_package_bytes: 8 * 1024 * 1024,
            stop_drain_seconds: 10,
            stop_abort_seconds: 5,
            first_session_at_once: true,
        }
    }
}

/// `[ddf]`: where DDF files are read from, in order (later files override earlier ones).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DdfConfig {
    pub dirs: Vec<PathBuf>,
}

impl Default for DdfConfig {
    fn default() -> Self {
        DdfConfig {
            dirs: vec!["/usr/share/omadmd/ddf".into(), "/etc/omadmd/ddf".into()],
        }
    }
}

/// `[bootstrap]`: where factory bootstrap files are read from, dirs in order, files in name
/// order within each (see [`crate::bootstrap`]).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootstrapConfig {
    pub dirs: Vec<PathBuf>,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig {
            dirs: vec![
                "/usr/lib/omadmd/bootstrap.d".into(),
                "/etc/omadmd/bootstrap.d".into(),
            ],
        }
    }
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
}

impl Config {
    /// Reads `path`. A missing file at the default path means the defaults; a missing file
    /// named explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text).map_err(|message| ConfigError::Parse {
                path: path.to_owned(),
                message,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config =
            toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
        config.limits.check()?;

        config.session.check()?;
        config.notification.check()?;
        config.notification.mqtt.check()?;
        config.gateway.check()?;
        config.subagent.check()?;
        Ok(config)
    }
}

/// The range `[limits] reply_bytes` must lie in: room for one answer at least, and well under
/// the 32 MiB a system bus carries in one message.
const REPLY_BYTES: std::ops::RangeInclusive<usize> = 64 * 1024..=24 * 1024 * 1024;

impl SessionConfig {
    /// Refuses stop times outside their ranges.
    fn check(&self) -> Result<(), String> {
        if self.stop_drain_seconds > STOP_DRAIN_MAX {
            return Err(format!(
                "[session] stop_drain_seconds = {} must be at most {STOP_DRAIN_MAX}",
                self.stop_drain_seconds
            ));
        }
        if !(1..=STOP_ABORT_MAX).contains(&self.stop_abort_seconds) {
            return Err(format!(
                "[session] stop_abort_seconds = {} must be between 1 and {STOP_ABORT_MAX}",
                self.stop_abort_seconds
            ));
        }
        Ok(())
    }
}

impl MqttConfig {
    /// Refuses a keepalive (MQTT's 0 turns it off: a dead connection would go unnoticed) or
    /// a longest wait of zero.
    fn check(&self) -> Result<(), String> {
        if self.keepalive_s == 0 {
            return Err("[notification.mqtt] keepalive_s must be at least 1".into());
        }
        if self.reconnect_max_s == 0 {
            return Err("[notification.mqtt] reconnect_max_s must be at least 1".into());
        }
        Ok(())
    }
}

impl NotificationConfig {
    /// Refuses a window or rate of zero, and a bearer wait of more than an hour.
    fn check(&self) -> Result<(), String> {
        if self.timestamp_window_s == 0 {
            return Err("[notification] timestamp_window_s must be at least 1".into());
        }
        if self.rate_per_minute == 0 {
            return Err("[notification] rate_per_minute must be at least 1".into());
        }
        if self.bearer_timeout_s > 3600 {
            return Err("[notification] bearer_timeout_s must be at most 3600".into());
        }
        Ok(())
    }
}

impl Limits {
    /// Refuses bounds that cannot work: zero, or a reply the bus would not carry.
    fn check(&self) -> Result<(), String> {
        let counts = [
            ("uri_bytes", self.uri_bytes as u64),
            ("uri_segments", self.uri_segments as u64),
            ("uri_xnames", self.uri_xnames as u64),
            ("nv_fields", self.nv_fields as u64),
            ("result_rows", self.result_rows as u64),
            ("tree_depth", self.tree_depth as u64),
            ("watches_per_caller", self.watches_per_caller as u64),
            (
                "auth_cache_bytes_per_caller",
                self.auth_cache_bytes_per_caller as u64,
            ),
            ("owner_bytes", self.owner_bytes),
            ("owner_instances", self.owner_instances),
            ("journal_entries", self.journal_entries),
            ("session_packages", u64::from(self.session_packages)),
            ("session_seconds", self.session_seconds),
            ("package3_bytes", self.package3_bytes as u64),
            (
                "subscriptions_per_server",
                self.subscriptions_per_server as u64,
            ),
            ("exec_concurrent", self.exec_concurrent as u64),
            (
                "pending_alerts_per_server",
                self.pending_alerts_per_server as u64,
            ),
            ("server_uri_bytes", self.server_uri_bytes as u64),
            ("object_bytes", self.object_bytes),
            ("transfer_wait_seconds", self.transfer_wait_seconds),
        ];
        if let Some((key, _)) = counts.iter().find(|(_, v)| *v == 0) {
            return Err(format!("[limits] {key} must be at least 1"));
        }
        if !REPLY_BYTES.contains(&self.reply_bytes) {
            return Err(format!(
                "[limits] reply_bytes = {} must be between {} and {} (a system bus message holds at most 32 MiB)",
                self.reply_bytes,
                REPLY_BYTES.start(),
                REPLY_BYTES.end()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert_eq!(
            Config::default().ddf.dirs[1],
            PathBuf::from("/etc/omadmd/ddf")
        );
    }

    #[test]
    fn public_moids_default_to_devinfo_and_features_and_must_be_moids() {
        assert_eq!(
            Config::default().access.public_moids,
            [
                Moid::parse(crate::tree::builtin::DEVINFO).unwrap(),
                Moid::parse(crate::tree::builtin::FEATURES_MO).unwrap()
            ]
        );
        let c = Config::parse("[access]\npublic_moids = [\"urn:x:1.0\"]\n").unwrap();
        assert_eq!(c.access.public_moids, [Moid::parse("urn:x:1.0").unwrap()]);
        let e = Config::parse("[access]\npublic_moids = [\"x/y\"]\n").unwrap_err();
        assert!(e.contains("public_moids"), "{e}");
    }

    #[test]
    fn stop_times_are_bounded() {
        let c =
            Config::parse("[session]\nstop_drain_seconds = 0\nstop_abort_seconds = 20\n").unwrap();
        assert_eq!(
            (c.session.stop_drain_seconds, c.session.stop_abort_seconds),
            (0, 20)
        );
        for bad in [
            "stop_drain_seconds = 61",
            "stop_abort_seconds = 0",
            "stop_abort_seconds = 21",
        ] {
            let e = Config::parse(&format!("[session]\n{bad}\n")).unwrap_err();
            assert!(e.contains(bad.split(' ').next().unwrap()), "{e}");
        }
    }

    #[test]
    fn keys_are_read_and_unknown_keys_are_named() {
        let c = Config::parse("[ddf]\ndirs = [\"/x\"]\n").unwrap();
        assert_eq!(c.ddf.dirs, [PathBuf::from("/x")]);
        let err = Config::parse("[ddf]\ndirz = []\n").unwrap_err();
        assert!(err.contains("dirz"), "{err}");
        let err = Config::parse("[nope]\n").unwrap_err();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn bootstrap_dirs_have_defaults_and_refuse_unknown_keys() {
        assert_eq!(
            Config::default().bootstrap.dirs,
            [
                PathBuf::from("/usr/lib/omadmd/bootstrap.d"),
                PathBuf::from("/etc/omadmd/bootstrap.d")
            ]
        );
        let c = Config::parse("[bootstrap]\ndirs = [\"/b\"]\n").unwrap();
        assert_eq!(c.bootstrap.dirs, [PathBuf::from("/b")]);
        let err = Config::parse("[bootstrap]\ndir = []\n").unwrap_err();
        assert!(err.contains("`dir`"), "{err}");
    }

    #[test]
    fn session_tls_and_exec_keys() {
        let c = Config::parse(
            "[tls]\nextra_ca_files = [\"/ca.pem\"]\n[session]\nmax_package_bytes = 1024\n\
             [exec.\"urn:x:1.0/*/Reboot\"]\ncommand = [\"/sbin/reboot\"]\n",
        )
        .unwrap();
        assert_eq!(c.tls.extra_ca_files, [PathBuf::from("/ca.pem")]);
        assert_eq!(c.session.max_package_bytes, 1024);
        assert_eq!(c.exec["urn:x:1.0/*/Reboot"].command, ["/sbin/reboot"]);
        assert_eq!(Config::default().session.max_package_bytes, 8 * 1024 * 1024);
        let err = Config::parse("[exec.\"x\"]\ncmd = []\n").unwrap_err();
        assert!(err.contains("cmd"), "{err}");
    }

    #[test]
    fn limits_have_defaults_and_refuse_unknown_keys() {
        let c = Config::parse("[limits]\nuri_bytes = 100\nsession_packages = 3\n").unwrap();
        assert_eq!(c.limits.uri_bytes, 100);
        assert_eq!(c.limits.session_packages, 3);
        assert_eq!(c.limits.tree_depth, Limits::default().tree_depth);
        let err = Config::parse("[limits]\nuri_byte = 1\n").unwrap_err();
        assert!(err.contains("uri_byte"), "{err}");
        let err = Config::parse("[limits]\nresult_rows = 0\n").unwrap_err();
        assert!(err.contains("result_rows must be at least 1"), "{err}");
        let err = Config::parse("[limits]\nreply_bytes = 100000000\n").unwrap_err();
        assert!(err.contains("32 MiB"), "{err}");
    }

    #[test]
    fn notification_keys_have_defaults_and_are_bounded() {
        let d = Config::default().notification;
        assert_eq!(
            (d.timestamp_window_s, d.rate_per_minute, d.bearer_timeout_s),
            (300, 6, 120)
        );
        assert_eq!(d.udp.listen, None);
        let c = Config::parse(
            "[notification]\ntimestamp_window_s = 60\nrate_per_minute = 2\n\
             [notification.udp]\nlisten = \"127.0.0.1:4000\"\n",
        )
        .unwrap();
        assert_eq!(c.notification.timestamp_window_s, 60);
        assert_eq!(c.notification.rate_per_minute, 2);
        assert_eq!(c.notification.udp.listen.as_deref(), Some("127.0.0.1:4000"));
        for bad in [
            "timestamp_window_s = 0",
            "rate_per_minute = 0",
            "bearer_timeout_s = 3601",
        ] {
            let e = Config::parse(&format!("[notification]\n{bad}\n")).unwrap_err();
            assert!(e.contains(bad.split(' ').next().unwrap()), "{e}");
        }
        let e = Config::parse("[notification.udp]\nlisten_on = \"x\"\n").unwrap_err();
        assert!(e.contains("listen_on"), "{e}");
    }

    #[test]
    fn mqtt_keys_have_defaults_and_are_bounded() {
        let d = Config::default().notification.mqtt;
        assert_eq!((d.keepalive_s, d.reconnect_max_s), (60, 300));
        let c =
            Config::parse("[notification.mqtt]\nkeepalive_s = 30\nreconnect_max_s = 10\n").unwrap();
        assert_eq!(c.notification.mqtt.keepalive_s, 30);
        assert_eq!(c.notification.mqtt.reconnect_max_s, 10);
        for bad in ["keepalive_s = 0", "reconnect_max_s = 0", "broker = \"x\""] {
            let e = Config::parse(&format!("[notification.mqtt]\n{bad}\n")).unwrap_err();
            assert!(e.contains(bad.split(' ').next().unwrap()), "{e}");
        }
    }

    #[test]
    fn missing_files() {
        let missing = Path::new("/nonexistent/omadmd.toml");
        assert_eq!(Config::load(missing, false).unwrap(), Config::default());
        let err = Config::load(missing, true).unwrap_err();
        assert!(
            err.to_string().starts_with("/nonexistent/omadmd.toml: "),
            "{err}"
        );
    }

    #[test]
    fn guests_and_the_subagent_have_their_defaults_and_bounds() {
        let c = Config::parse("[gateway.guests.web1]\nuid = 100000\n").unwrap();
        let g = &c.gateway.guests["web1"];
        assert_eq!(g.uid, 100000);
        assert_eq!(
            g.socket_path("web1"),
            Path::new("/run/omadmd/guests/web1/host.sock")
        );
        assert_eq!(
            g.token_path("web1"),
            Path::new("/var/lib/omadmd/guests/web1.token")
        );
        let e = Config::parse("[gateway.guests.\"a.b\"]\n").unwrap_err();
        assert!(e.contains("a.b"), "{e}");
        let e = Config::parse("[gateway]\nguest_frame_bytes = 10\n").unwrap_err();
        assert!(e.contains("guest_frame_bytes"), "{e}");

        assert_eq!(Config::default().subagent.host_socket, None);
        assert_eq!(
            Config::default().subagent.export_moids[0].as_str(),
            crate::tree::builtin::DEVINFO
        );
        let e = Config::parse(&format!(
            "[subagent]\nexport_moids = [\"{}\"]\n",
            crate::tree::builtin::DMACC
        ))
        .unwrap_err();
        assert!(e.contains("export_moids"), "{e}");
    }
}
