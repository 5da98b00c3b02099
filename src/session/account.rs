//! DM server accounts (the DM Account MO, `urn:oma:mo:oma-dm-dmacc:1.2`) as the session
//! engine needs them: where the server is, how to trust it, how to authenticate to it,
//! which MOIDs it may manage, its priority and how often to poll it; and the one HTTPS
//! client per account ([`Account::client`]).

use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use crate::authority::{AccessError, Authority};
use crate::store::{self, Lane};
use crate::transport::{
    ClientAuth, ClientCache, ClientSettings, HttpClient, TransportError, Trust,
};
use crate::tree::builtin;
use crate::tree::node::Node;
use crate::tree::uri::NodeAddr;
use crate::tree::value::Value;

/// One server account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub miid: String,
    pub srv_id: String,
    pub srv_uri: String,
    pub name: Option<String>,
    /// PEM from `Ext/CACert`: a CA, or the server's own certificate (pinned).
    pub ca_pem: Option<String>,
    pub auth: ClientAuth,
    /// MOIDs from `Perm/<x>/MOID`.
    pub permitted: Vec<String>,
    /// `Ext/Priority`; higher wins (0 when unset).
    pub priority: i64,
    /// `Ext/PollSeconds`: seconds between client-initiated sessions; 0 (also when unset or
    /// negative): no polling.
    pub poll_seconds: u64,
}

/// The HTTPS clients of the accounts, for the whole process (see [`Account::client`]).
static CLIENTS: LazyLock<ClientCache> = LazyLock::new(ClientCache::default);

impl Account {
    /// Reads an account from its instance content (secrets included).
    pub fn from_node(miid: &str, node: &Node) -> Result<Account, String> {
        let text = |path: &str| match node.get(path) {
            Some(Node::Leaf(Value::Int(i))) => Some(i.to_string()),
            Some(Node::Leaf(v)) => Some(v.to_text()).filter(|t| !t.is_empty()),
            _ => None,
        };
        let srv_id = text("SrvID").ok_or("no SrvID")?;
        let srv_uri = text("SrvURI").ok_or_else(|| format!("account {srv_id} has no SrvURI"))?;
        let auth = match (
            text("Ext/ClientCert"),
            text("Ext/ClientKey"),
            text("Auth/Trsp/Data"),
            text("Auth/Trsp/Secret"),
        ) {
            (Some(chain_pem), Some(key_pem), _, _) => {
                ClientAuth::Certificate { chain_pem, key_pem }
            }
            (_, _, Some(user), Some(password)) => ClientAuth::Basic { user, password },
            _ => ClientAuth::None,
        };
        let mut permitted = Vec::new();
        if let Some(Node::Interior(entries)) = node.get("Perm") {
            for entry in entries.values() {
                if let Some(Node::Leaf(v)) = entry.get("MOID") {
                    permitted.push(v.to_text());
                }
            }
        }
        Ok(Account {
            miid: miid.to_owned(),
            priority: text("Ext/Priority")
                .and_then(|p| p.parse().ok())
                .unwrap_or(0),
            poll_seconds: text("Ext/PollSeconds")
                .and_then(|p| p.parse().ok())
                .unwrap_or(0),
            name: text("Name"),
            ca_pem: text("Ext/CACert"),
            srv_id,
            srv_uri,
            auth,
            permitted,
        })
    }

    /// Transport settings for talking to this server.
    pub fn client_settings(
        &self,
        extra_ca_files: &[PathBuf],
        max_body_bytes: usize,
    ) -> ClientSettings {
        let trust = match &self.ca_pem {
            Some(pem) => Trust::Pem(pem.clone()),
            None => Trust::Roots {
                extra_ca_files: extra_ca_files.to_vec(),
            },
        };
        ClientSettings {
            client_auth: self.auth.clone(),
            max_body_bytes,
            ..ClientSettings::with_trust(trust)
        }
    }

    /// The HTTPS client for this server with [`Account::client_settings`]: one per account
    /// for the whole process (sessions, DEFAULT fetches and SUB deliveries share it and its
    /// kept-alive connections), built anew when the account's settings or the trust store
    /// change. Building (or checking the trust store) reads files, so it runs on the
    /// background store threads.
    pub async fn client(
        &self,
        extra_ca_files: &[PathBuf],
        max_body_bytes: usize,
    ) -> Result<Arc<HttpClient>, TransportError> {
        let srv_id = self.srv_id.clone();
        let settings = self.client_settings(extra_ca_files, max_body_bytes);
        store::offload(Lane::Background, move || CLIENTS.get(&srv_id, settings))
            .await
            .map_err(|e| TransportError::Settings(format!("building the HTTPS client: {e}")))?
    }

    /// Closes every account client's idle kept-alive connections: after a network move,
    /// so that the next session connects from the device's new address instead of waiting
    /// out a connection the move left behind.
    pub fn forget_connections() {
        CLIENTS.forget_connections();
    }

    /// Whether this server may create instances of `moid`.
    pub fn may_manage(&self, moid: &str) -> bool {
        self.permitted.iter().any(|m| m == moid)
    }
}

/// Every readable account; broken ones are logged and skipped.
pub fn load_all(auth: &Authority) -> Result<Vec<Account>, AccessError> {
    let mut out = Vec::new();
    for miid in auth.instances_of(builtin::DMACC)? {
        let node = auth.read_internal(&NodeAddr::root(builtin::DMACC, &miid))?;
        match Account::from_node(&miid, &node) {
            Ok(a) if bootstrap_only(&node, &a) => {
                tracing::debug!(srv_id = %a.srv_id, "a bootstrap-only account: no DM sessions");
            }
            Ok(a) => out.push(a),
            Err(e) => tracing::warn!("skipping DM account {miid}: {e}"),
        }
    }
    Ok(out)
}

/// Whether the account only names a bootstrap server (its `SrvURI` is its
/// `Auth/Bootstrap/ServerURI`): the client fetches accounts from it and runs no DM session
/// with it.
pub fn bootstrap_only(node: &Node, account: &Account) -> bool {
    matches!(node.get("Auth/Bootstrap/ServerURI"), Some(Node::Leaf(v)) if v.to_text() == account.srv_uri)
}

/// The server for a session: `srv_id` when given, else the one with the highest priority
/// (DM-HLF-018; ties go to the first account).
pub fn choose<'a>(accounts: &'a [Account], srv_id: &str) -> Option<&'a Account> {
    if srv_id.is_empty() {
        accounts.iter().rev().max_by_key(|a| a.priority)
    } else {
        accounts.iter().find(|a| a.srv_id == srv_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::json::node_from_json;

    fn account(json: serde_json::Value) -> Result<Account, String> {
        Account::from_node("1", &node_from_json(&json, None, "DMAcc").unwrap())
    }

    #[test]
    fn reads_credentials_permissions_and_priority() {
        let a = account(serde_json::json!({
            "SrvID": "s", "SrvURI": "https://x/dm", "Perm": {"a": {"MOID": "urn:a:1.0"}, "b": {"MOID": "urn:b:1.0"}},
            "Auth": {"Trsp": {"Data": "u", "Secret": "p"}}, "Ext": {"Priority": 7, "CACert": "PEM", "PollSeconds": 3600}}))
        .unwrap();
        assert_eq!(
            a.auth,
            ClientAuth::Basic {
                user: "u".into(),
                password: "p".into()
            }
        );
        assert!(a.may_manage("urn:b:1.0") && !a.may_manage("urn:c:1.0"));
        assert_eq!((a.priority, a.ca_pem.as_deref()), (7, Some("PEM")));
        assert_eq!(a.poll_seconds, 3600);
        assert!(matches!(a.client_settings(&[], 10).trust, Trust::Pem(_)));
        assert!(
            account(serde_json::json!({"SrvURI": "https://x/"}))
                .unwrap_err()
                .contains("SrvID")
        );
        assert!(
            account(serde_json::json!({"SrvID": "s"}))
                .unwrap_err()
                .contains("SrvURI")
        );
    }

    #[test]
    fn chooses_by_id_or_priority() {
        let mk = |id: &str, p| Account {
            priority: p,
            srv_id: id.into(),
            ..account(serde_json::json!({"SrvID": "x", "SrvURI": "https://x/"})).unwrap()
        };
        let all = [mk("a", 1), mk("b", 5), mk("c", 5)];
        assert_eq!(choose(&all, "").unwrap().srv_id, "b");
        assert_eq!(choose(&all, "a").unwrap().srv_id, "a");
        assert!(choose(&all, "z").is_none());
        assert!(choose(&[], "").is_none());
    }
}
