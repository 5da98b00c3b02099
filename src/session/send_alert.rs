//! `SendAlert` (ARCHITECTURE.md §3, PROTOCOL.md §6): a Generic Alert a local app asks
//! omadmd to send. This module checks and bounds its fields ([`AlertRequest::check`]),
//! finds its source node as the caller may see it ([`source`]), picks the server it goes to
//! ([`recipient`]), and keeps it for that server until a session carries it
//! ([`Engine::keep_alert`], [`Engine::move_alert`]). The scheduler
//! ([`super::scheduler::Scheduler::send_alert`]) then starts that session.
//!
//! The fields, as the D-Bus method takes them (all strings):
//! - `alert_type`: a URN, `urn:<NID>:<NSS>` in RFC 8141's characters, at most
//!   [`ALERT_TYPE_BYTES`] bytes; not a session-reason alert (Package#1 carries exactly one,
//!   omadmd's own) nor an alert omadmd sends itself (`ExecResult`);
//! - `source_uri`: `""`, or a ClientURI naming one node the caller may read — one it may not
//!   read is refused exactly like one that does not exist; it goes to the server as that
//!   node's full ClientURI;
//! - `mark`: `""` or one of PROTOCOL.md §6's marks;
//! - `data_type`, `data`: `data` at most [`DATA_BYTES`] bytes, read as `data_type` says —
//!   one of [`DATA_TYPES`]: `chr` (the text), `int` (a decimal 64-bit integer), `bool`
//!   (`true`/`false`), `b64` (base64, sent as given), `json` (any JSON value, sent as that
//!   value); `""` means `chr` when there is data and no `Data` at all when there is none.
//!
//! The server: the one named; for `""`, the owner of the source node's instance when that
//! owner is a DM server with an account; else the client chooses — the highest
//! `Ext/Priority` first, falling over to the next when it cannot be reached (see
//! [`super::failover`]). Whichever server it is must itself be able to read the source node
//! (a server never hears of a node it may not read, DM-SEC-002): a named server that cannot
//! is refused, and a client choice passes over servers that cannot.

use base64::Engine as _;

use super::account::{self, Account};
use super::engine::Engine;
use super::error::SessionError;
use super::failover;
use crate::authority::{AccessError, Authority, Principal};
use crate::protocol::Alert;
use crate::protocol::alert::{self as alerts, Mark};
use crate::tree::uri::{ClientUri, NodeAddr};

/// Longest alert type, in bytes.
pub const ALERT_TYPE_BYTES: usize = 256;

/// Longest `data`, in bytes: well under the smallest `[limits] reply_bytes` (64 KiB) and
/// any Package#1, so that `pending_alerts_per_server` alerts stay small.
pub const DATA_BYTES: usize = 16 * 1024;

/// The data types `data_type` may name (and `""`).
pub const DATA_TYPES: [&str; 5] = ["chr", "int", "bool", "b64", "json"];

/// Longest server id accepted.
const SERVER_ID_BYTES: usize = 256;

/// Alert types a local app may not send: the session reasons (omadmd sends exactly one per
/// Package#1) and the alerts omadmd sends itself.
const RESERVED: [&str; 4] = [
    alerts::CLIENT_INITIATED,
    alerts::SERVER_INITIATED,
    alerts::BOOTSTRAP_COMPLETE,
    alerts::EXEC_RESULT,
];

/// Why an alert is not sent.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// A field is malformed, too long or reserved.
    #[error("{0}")]
    Invalid(String),
    /// The source node: malformed, absent or unreadable (the same answer), or not one node.
    #[error(transparent)]
    Source(AccessError),
    #[error("no DM server account is configured")]
    NoAccounts,
    #[error("no DM server account with SrvID {0:?}")]
    NoAccount(String),
    /// The server may not read the source node.
    #[error("{0}")]
    NotVisible(String),
    /// Reading the accounts or keeping the alert failed.
    #[error("{0}")]
    Store(String),
}

/// `SendAlert`'s arguments, as given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertRequest {
    pub server_id: String,
    pub alert_type: String,
    pub source_uri: String,
    pub mark: String,
    pub data_type: String,
    pub data: String,
}

/// An alert whose fields are checked; its source is still to be found in the tree.
#[derive(Clone, Debug, PartialEq)]
pub struct Checked {
    /// `""`: the client chooses.
    pub server_id: String,
    /// The alert, without its `SourceURI`.
    pub alert: Alert,
    pub source: Option<ClientUri>,
}

impl AlertRequest {
    /// Checks every field against its form and bound, looking at no MO data (so it tells
    /// the caller nothing about the tree).
    pub fn check(self) -> Result<Checked, AlertError> {
        let invalid = AlertError::Invalid;
        if self.server_id.len() > SERVER_ID_BYTES {
            return Err(invalid(format!(
                "the server id is longer than {SERVER_ID_BYTES} bytes"
            )));
        }
        check_type(&self.alert_type)?;
        let mark = match self.mark.as_str() {
            "" => None,
            m => Some(m.parse::<Mark>().map_err(invalid)?),
        };
        let (data_type, data) = data(&self.data_type, &self.data)?;
        let source = match self.source_uri.as_str() {
            "" => None,
            uri => Some(
                ClientUri::parse(uri)
                    .map_err(|e| AlertError::Source(AccessError::InvalidUri(e.to_string())))?,
            ),
        };
        Ok(Checked {
            server_id: self.server_id,
            alert: Alert {
                mark,
                data_type,
                data,
                ..Alert::of_type(&self.alert_type)
            },
            source,
        })
    }
}

/// `urn:<NID>:<NSS>` within [`ALERT_TYPE_BYTES`], not [`RESERVED`].
fn check_type(alert_type: &str) -> Result<(), AlertError> {
    let invalid = |why: &str| {
        let shown: String = alert_type.chars().take(80).collect();
        AlertError::Invalid(format!("alert type {shown:?}: {why}"))
    };
    if alert_type.is_empty() {
        return Err(AlertError::Invalid("the alert type is required".into()));
    }
    if alert_type.len() > ALERT_TYPE_BYTES {
        return Err(invalid(&format!("longer than {ALERT_TYPE_BYTES} bytes")));
    }
    let urn = "must be a URN, urn:<NID>:<NSS> (e.g. urn:oma:at:ext-example:1.0:Done)";
    let (scheme, rest) = alert_type.split_at_checked(4).ok_or_else(|| invalid(urn))?;
    let (nid, nss) = rest.split_once(':').ok_or_else(|| invalid(urn))?;
    let nid_ok = (1..=32).contains(&nid.len())
        && !nid.starts_with('-')
        && nid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let nss_ok = !nss.is_empty()
        && nss
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b));
    if !scheme.eq_ignore_ascii_case("urn:") || !nid_ok || !nss_ok {
        return Err(invalid(urn));
    }
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(alert_type)) {
        return Err(invalid("omadmd sends this alert itself"));
    }
    Ok(())
}

/// `DataType` and `Data` from `data_type` and `data` (see the module documentation).
fn data(
    data_type: &str,
    data: &str,
) -> Result<(Option<String>, Option<serde_json::Value>), AlertError> {
    use serde_json::Value as J;
    if data.len() > DATA_BYTES {
        return Err(AlertError::Invalid(format!(
            "the alert data is longer than {DATA_BYTES} bytes"
        )));
    }
    let bad = |what: &str| AlertError::Invalid(format!("the alert data is not {what}"));
    let value = match data_type {
        "" if data.is_empty() => return Ok((None, None)),
        "" | "chr" => J::String(data.to_owned()),
        "int" => J::from(data.parse::<i64>().map_err(|_| bad("a decimal integer"))?),
        "bool" => J::Bool(data.parse::<bool>().map_err(|_| bad("true or false"))?),
        "b64" => {
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|_| bad("base64"))?;
            J::String(data.to_owned())
        }
        "json" => serde_json::from_str(data).map_err(|e| bad(&format!("JSON ({e})")))?,
        other => {
            let shown: String = other.chars().take(40).collect();
            return Err(AlertError::Invalid(format!(
                "unknown data type {shown:?} (expected one of {})",
                DATA_TYPES.join(", ")
            )));
        }
    };
    let data_type = match data_type {
        "" => "chr",
        t => t,
    };
    Ok((Some(data_type.to_owned()), Some(value)))
}

/// The one node `uri` names that `who` may read. Absent and unreadable nodes are the same
/// `NotFound`.
pub fn source(auth: &Authority, who: &Principal, uri: &ClientUri) -> Result<NodeAddr, AlertError> {
    let found = auth.get(who, uri).map_err(AlertError::Source)?;
    match found.as_slice() {
        [one] => Ok(one.addr.clone()),
        [] => Err(AlertError::Source(AccessError::NotFound(format!(
            "{uri}: no such node"
        )))),
        many => Err(AlertError::Source(AccessError::InvalidUri(format!(
            "{uri}: names {} nodes; an alert's source is one node",
            many.len()
        )))),
    }
}

/// Where an alert goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recipient {
    /// The server named, or the source's owner: that server only.
    One(Account),
    /// The client's choice: these servers in the order they are tried (never empty).
    Choice(Vec<Account>),
}

/// The server(s) an alert from `who` for `srv_id` (`""`: see the module documentation)
/// with source node `source` goes to. Reads the store: call it off the async workers.
pub fn recipient(
    auth: &Authority,
    who: &Principal,
    srv_id: &str,
    source: Option<&NodeAddr>,
) -> Result<Recipient, AlertError> {
    let store = |e: AccessError| AlertError::Store(format!("reading the DM accounts: {e}"));
    let accounts = account::load_all(auth).map_err(store)?;
    let reads = |account: &Account| -> Result<bool, AlertError> {
        match source {
            None => Ok(true),
            Some(addr) => auth
                .may_read(&Principal::Server(account.srv_id.clone()), addr)
                .map_err(store),
        }
    };
    if !srv_id.is_empty() {
        let account = accounts
            .into_iter()
            .find(|a| a.srv_id == srv_id)
            .ok_or_else(|| AlertError::NoAccount(srv_id.to_owned()))?;
        if !reads(&account)? {
            return Err(not_visible(&account.srv_id, source));
        }
        return Ok(Recipient::One(account));
    }
    if accounts.is_empty() {
        return Err(AlertError::NoAccounts);
    }
    if let Some(addr) = source {
        let root = NodeAddr::root(&addr.moid, &addr.miid).to_string();
        let owner = auth
            .holder(who, root.as_str())
            .map_err(AlertError::Source)?;
        if let Ok(Principal::Server(owner)) = Principal::parse(&owner)
            && let Some(account) = accounts.iter().find(|a| a.srv_id == owner)
            && reads(account)?
        {
            return Ok(Recipient::One(account.clone()));
        }
    }
    let mut order = Vec::new();
    for account in failover::by_priority(&accounts) {
        if reads(account)? {
            order.push(account.clone());
        }
    }
    if order.is_empty() {
        return Err(not_visible("any DM server", source));
    }
    Ok(Recipient::Choice(order))
}

fn not_visible(server: &str, source: Option<&NodeAddr>) -> AlertError {
    let source = source.map(ToString::to_string).unwrap_or_default();
    AlertError::NotVisible(format!(
        "{source}: not visible to {server}; an alert names only nodes its server may read"
    ))
}

impl Engine {
    /// Keeps the alert `alert_json` for `srv_id`'s next session (at most
    /// `pending_alerts_per_server`: beyond it the oldest go, logged). Asks for no session:
    /// the caller starts one. Blocking: call it in [`Engine::blocking`].
    pub fn keep_alert(&self, srv_id: &str, alert_json: &str) -> Result<(), SessionError> {
        let keep = self.limits.pending_alerts_per_server;
        let dropped = self.state(|tx| tx.queue_alert(srv_id, alert_json, keep))?;
        self.log_dropped(srv_id, dropped);
        Ok(())
    }

    /// As [`Engine::keep_alert`], first dropping the alerts waiting for `srv_id` that
    /// `replaces` picks (older news the new alert makes moot), all in one write.
    pub fn keep_alert_replacing(
        &self,
        srv_id: &str,
        alert_json: &str,
        replaces: &dyn Fn(&str) -> bool,
    ) -> Result<(), SessionError> {
        let keep = self.limits.pending_alerts_per_server;
        let mut store = self.store.writer();
        let stale: Vec<i64> = store
            .pending_alerts(srv_id)?
            .into_iter()
            .filter(|p| replaces(&p.alert_json))
            .map(|p| p.id)
            .collect();
        let (dropped, _) = store.write(|tx| {
            tx.drop_alerts(&stale)?;
            tx.queue_alert(srv_id, alert_json, keep)
        })?;
        drop(store);
        self.log_dropped(srv_id, dropped);
        Ok(())
    }

    /// Moves one alert `alert_json` waiting for `from` to `to` (a client-chosen server
    /// falling over), in one transaction; whether one was waiting. Identical alerts are
    /// interchangeable, so any one of them moves. Blocking: call it in [`Engine::blocking`].
    pub(super) fn move_alert(
        &self,
        from: &str,
        to: &str,
        alert_json: &str,
    ) -> Result<bool, SessionError> {
        let waiting = self.with_state(|s| s.pending_alerts(from))?;
        let Some(found) = waiting.into_iter().find(|p| p.alert_json == alert_json) else {
            return Ok(false);
        };
        let keep = self.limits.pending_alerts_per_server;
        let dropped = self.state(|tx| {
            tx.drop_alerts(&[found.id])?;
            tx.queue_alert(to, alert_json, keep)
        })?;
        if dropped > 0 {
            tracing::warn!(
                srv_id = %to,
                "dropped the {dropped} oldest undelivered alert(s): more than \
                 pending_alerts_per_server = {keep} were waiting"
            );
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(alert_type: &str) -> AlertRequest {
        AlertRequest {
            alert_type: alert_type.into(),
            ..AlertRequest::default()
        }
    }

    fn refused(r: AlertRequest) -> String {
        match r.check() {
            Err(AlertError::Invalid(why)) => why,
            other => panic!("refused as invalid: {other:?}"),
        }
    }

    #[test]
    fn alert_types_are_bounded_urns_and_not_omadmds_own() {
        for ok in [
            "urn:oma:at:ext-example:1.0:Done",
            "URN:x:y",
            "urn:oma:at:dm:2.0:Foo%20Bar",
        ] {
            assert!(request(ok).check().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Done",
            "urn:",
            "urn::x",
            "urn:x:",
            "urn:-x:y",
            "urn:x y:z",
            "urn:x:a b",
            "urn:x:a\nb",
            "urn:x:é",
            "http://example.com/x",
        ] {
            refused(request(bad));
        }
        let long = format!("urn:x:{}", "a".repeat(ALERT_TYPE_BYTES));
        assert!(refused(request(&long)).contains("longer than 256"));
        let at_bound = format!("urn:x:{}", "a".repeat(ALERT_TYPE_BYTES - 6));
        assert!(request(&at_bound).check().is_ok());
        for reserved in RESERVED {
            assert!(refused(request(reserved)).contains("omadmd sends"));
        }
        assert!(refused(request("urn:OMA:at:dm:2.0:clientinitiatedmgmt")).contains("omadmd sends"));
    }

    #[test]
    fn marks_data_types_and_data_are_checked_and_bounded() {
        let with = |mark: &str, data_type: &str, data: &str| AlertRequest {
            mark: mark.into(),
            data_type: data_type.into(),
            data: data.into(),
            ..request("urn:x:y")
        };
        let alert = |r: AlertRequest| r.check().unwrap().alert;
        let a = alert(with("critical", "", ""));
        assert_eq!(a.mark, Some(Mark::Critical));
        assert_eq!((a.data_type, a.data), (None, None));
        refused(with("loud", "", ""));

        let a = alert(with("", "", "hello"));
        assert_eq!(a.data_type.as_deref(), Some("chr"));
        assert_eq!(a.data, Some(serde_json::json!("hello")));
        let a = alert(with("", "int", "-42"));
        assert_eq!(a.data, Some(serde_json::json!(-42)));
        assert_eq!(
            alert(with("", "bool", "true")).data,
            Some(serde_json::json!(true))
        );
        assert_eq!(
            alert(with("", "b64", "aGk=")).data,
            Some(serde_json::json!("aGk="))
        );
        let a = alert(with("", "json", r#"{"sc": 200, "list": [1, 2]}"#));
        assert_eq!(a.data_type.as_deref(), Some("json"));
        assert_eq!(a.data, Some(serde_json::json!({"sc": 200, "list": [1, 2]})));
        for (data_type, data) in [
            ("int", "4.5"),
            ("int", ""),
            ("bool", "yes"),
            ("b64", "not base64!"),
            ("json", "{"),
            ("xml", "<a/>"),
            ("CHR", "x"),
        ] {
            refused(with("", data_type, data));
        }
        let big = "x".repeat(DATA_BYTES + 1);
        assert!(refused(with("", "chr", &big)).contains("longer than 16384"));
        assert!(with("", "chr", &big[1..]).check().is_ok());

        let server = AlertRequest {
            server_id: "s".repeat(SERVER_ID_BYTES + 1),
            ..request("urn:x:y")
        };
        assert!(refused(server).contains("server id"));
        match (AlertRequest {
            source_uri: "not a uri".into(),
            ..request("urn:x:y")
        })
        .check()
        {
            Err(AlertError::Source(AccessError::InvalidUri(_))) => {}
            other => panic!("a malformed source is an InvalidUri: {other:?}"),
        }
        let checked = AlertRequest {
            source_uri: "urn:oma:mo:oma-dm-devinfo:1.0//DevID".into(),
            ..request("urn:x:y")
        }
        .check()
        .unwrap();
        assert!(checked.source.is_some());
        assert_eq!(checked.alert.source_uri, None, "set once the node is found");
    }

    mod choice {
        use std::sync::Arc;

        use super::super::*;
        use crate::authority::Rights;
        use crate::store::{self, Pool};
        use crate::tree::builtin;
        use crate::tree::registry::Registry;

        const X: &str = "urn:oma:mo:ext-omadmd-test-x:1.0";
        const Y: &str = "urn:oma:mo:ext-omadmd-test-y:1.0";

        struct Fixture {
            auth: Authority,
            _dir: tempfile::TempDir,
        }

        fn fixture() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let pool = Pool::open(&dir.path().join("store.db"), store::Bounds::default(), 1);
            let auth = Authority::new(
                Arc::new(pool.unwrap()),
                Registry::with_builtin(),
                Box::new(|_| {}),
            );
            // c has the highest priority but may not manage X.
            for (srv_id, priority, moid) in [("a", 1, X), ("b", 5, X), ("c", 9, Y)] {
                let modata = serde_json::json!({"DMAcc": {"SrvID": srv_id,
                    "SrvURI": "https://x/", "Perm": {"p": {"MOID": moid}},
                    "Ext": {"Priority": priority}}});
                auth.create_instance(&Principal::Admin, builtin::DMACC, &modata.to_string())
                    .unwrap();
            }
            Fixture { auth, _dir: dir }
        }

        fn ids(r: Recipient) -> Vec<String> {
            match r {
                Recipient::One(a) => vec![format!("one:{}", a.srv_id)],
                Recipient::Choice(all) => all.into_iter().map(|a| a.srv_id).collect(),
            }
        }

        fn node(f: &Fixture, who: &Principal, uri: &str) -> Result<NodeAddr, AlertError> {
            source(&f.auth, who, &ClientUri::parse(uri).unwrap())
        }

        #[test]
        fn the_named_server_the_owner_or_the_highest_priority_that_may_read() {
            let f = fixture();
            let admin = Principal::Admin;
            let app = Principal::App("org.example.App".into());
            let other_app = Principal::App("org.example.Other".into());
            let choose = |who: &Principal, srv: &str, src: Option<&NodeAddr>| {
                recipient(&f.auth, who, srv, src).map(ids)
            };

            // No source: the one named, or every server by priority.
            assert_eq!(choose(&app, "a", None).unwrap(), ["one:a"]);
            assert_eq!(choose(&app, "", None).unwrap(), ["c", "b", "a"]);
            assert!(matches!(
                choose(&app, "zz", None),
                Err(AlertError::NoAccount(_))
            ));

            // A source a server owns: that server, whoever asks.
            let owned = f
                .auth
                .create_instance(&Principal::Server("a".into()), X, r#"{"X": {"V": "1"}}"#)
                .unwrap();
            let v = node(&f, &admin, &format!("{owned}V")).unwrap();
            assert_eq!(v.to_string(), format!("{owned}V"));
            assert_eq!(choose(&admin, "", Some(&v)).unwrap(), ["one:a"]);
            // b may manage X but holds no right on a's instance; c may not manage X.
            assert!(matches!(
                choose(&admin, "b", Some(&v)),
                Err(AlertError::NotVisible(_))
            ));
            assert!(matches!(
                choose(&admin, "c", Some(&v)),
                Err(AlertError::NotVisible(_))
            ));

            // An app's instance: the client chooses among the servers that may read it.
            let mine = f
                .auth
                .create_instance(&app, X, r#"{"X": {"V": "2"}}"#)
                .unwrap();
            let v = node(&f, &app, &format!("{mine}V")).unwrap();
            assert!(matches!(
                choose(&app, "", Some(&v)),
                Err(AlertError::NotVisible(_))
            ));
            for srv in ["srv:a", "srv:b", "srv:c"] {
                f.auth
                    .grant(&app, &mine.to_string(), srv, Rights::READ)
                    .unwrap();
            }
            assert_eq!(
                choose(&app, "", Some(&v)).unwrap(),
                ["b", "a"],
                "c was granted Read but may not manage X"
            );

            // What the caller may not read does not exist for it; one node only.
            match node(&f, &other_app, &format!("{mine}V")) {
                Err(AlertError::Source(AccessError::NotFound(_))) => {}
                other => panic!("an unreadable source is not found: {other:?}"),
            }
            match node(&f, &app, &format!("{mine}Nope")) {
                Err(AlertError::Source(AccessError::NotFound(_))) => {}
                other => panic!("an absent source is not found: {other:?}"),
            }
            match node(&f, &admin, &format!("{X}/*/V")) {
                Err(AlertError::Source(AccessError::InvalidUri(why))) => {
                    assert!(why.contains("names 2 nodes"), "{why}")
                }
                other => panic!("a source names one node: {other:?}"),
            }
        }

        #[test]
        fn no_accounts_is_its_own_answer() {
            let dir = tempfile::tempdir().unwrap();
            let pool = Pool::open(&dir.path().join("store.db"), store::Bounds::default(), 1);
            let auth = Authority::new(
                Arc::new(pool.unwrap()),
                Registry::with_builtin(),
                Box::new(|_| {}),
            );
            assert!(matches!(
                recipient(&auth, &Principal::Admin, "", None),
                Err(AlertError::NoAccounts)
            ));
        }
    }

    mod replacing {
        use crate::session::Engine;

        #[test]
        fn a_newer_alert_replaces_the_waiting_ones_it_names_and_only_those() {
            let dir = tempfile::tempdir().unwrap();
            let (_, engine) = Engine::for_tests(dir.path());
            let none = |_: &str| false;
            engine
                .keep_alert_replacing("a", r#"{"n":1,"k":"x"}"#, &none)
                .unwrap();
            engine
                .keep_alert_replacing("a", r#"{"n":2,"k":"y"}"#, &none)
                .unwrap();
            engine
                .keep_alert_replacing("b", r#"{"n":3,"k":"x"}"#, &none)
                .unwrap();
            let same_k = |w: &str| w.contains(r#""k":"x""#);
            engine
                .keep_alert_replacing("a", r#"{"n":4,"k":"x"}"#, &same_k)
                .unwrap();
            let waiting = |srv: &str| -> Vec<String> {
                engine
                    .with_state(|s| s.pending_alerts(srv))
                    .unwrap()
                    .into_iter()
                    .map(|p| p.alert_json)
                    .collect()
            };
            assert_eq!(waiting("a"), [r#"{"n":2,"k":"y"}"#, r#"{"n":4,"k":"x"}"#]);
            assert_eq!(waiting("b"), [r#"{"n":3,"k":"x"}"#]);
        }
    }
}
