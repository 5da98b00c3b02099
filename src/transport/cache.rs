//! [`ClientCache`]: one [`HttpClient`] per DM server account, kept across sessions, DEFAULT
//! fetches and SUB deliveries, so that the TLS configuration is built once and kept-alive
//! connections are reused.
//!
//! A client is keyed by the account's SrvID and matched against the account's current
//! [`ClientSettings`] (trust, client authentication, limits — compared in full, so no
//! digest can collide): changed settings, or a trust store that changed since the client
//! was built ([`TrustStore`]), get a new client; the old one lives on only as long as a
//! running session holds it. A client keeps its TLS sessions for resumption
//! (`resume.rs`), so a new client — new settings, new anchors — never resumes a
//! session its predecessor established. At most [`MAX_CLIENTS`] clients are kept (the
//! least recently used goes first).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::roots::{self, TrustStore};
use super::{ClientSettings, HttpClient, TransportError};

/// Clients kept at most: more than the accounts of any device.
pub(crate) const MAX_CLIENTS: usize = 32;

/// The clients of the accounts, by SrvID.
pub struct ClientCache {
    trust: Arc<TrustStore>,
    clients: Mutex<Clients>,
}

/// The clients, each with when it was last handed out (a counter of [`ClientCache::get`]
/// calls).
#[derive(Default)]
struct Clients {
    by_srv_id: HashMap<String, (Arc<HttpClient>, u64)>,
    calls: u64,
}

impl Default for ClientCache {
    /// A cache whose clients trust the process-wide system trust store.
    fn default() -> Self {
        ClientCache::with_trust(roots::system().clone())
    }
}

impl ClientCache {
    /// A cache whose [`Trust::Roots`](super::Trust::Roots) clients take their anchors from
    /// `trust`.
    pub fn with_trust(trust: Arc<TrustStore>) -> Self {
        ClientCache {
            trust,
            clients: Mutex::new(Clients::default()),
        }
    }

    /// The client of account `srv_id` with `settings`: the cached one if it was built with
    /// the same settings and the trust store has not changed since, else a new one (which
    /// replaces it). May read the trust store's files: call it where blocking is allowed.
    pub fn get(
        &self,
        srv_id: &str,
        settings: ClientSettings,
    ) -> Result<Arc<HttpClient>, TransportError> {
        let cached = self.lock().by_srv_id.get(srv_id).map(|(c, _)| c.clone());
        if let Some(client) = cached
            && client.settings == settings
            && self.current(&client)?
        {
            self.lock().used(srv_id, &client);
            return Ok(client);
        }
        let client = Arc::new(HttpClient::with_trust_store(settings, &self.trust)?);
        self.lock().used(srv_id, &client);
        Ok(client)
    }

    /// Closes every client's idle kept-alive connections (after a network move: the next
    /// request connects anew, from the device's new address).
    pub fn forget_connections(&self) {
        for (client, _) in self.lock().by_srv_id.values() {
            client.forget_connections();
        }
    }

    /// Whether `client`'s anchors are still the trust store's.
    fn current(&self, client: &HttpClient) -> Result<bool, TransportError> {
        Ok(match (&client.roots, &client.settings.trust) {
            (Some(built), super::Trust::Roots { extra_ca_files }) => {
                Arc::ptr_eq(built, &self.trust.roots(extra_ca_files)?)
            }
            _ => true,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Clients> {
        // The map holds only finished clients: one poisoned by a panic elsewhere is intact.
        self.clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Clients {
    /// Records that `client` is the client of `srv_id` and was just handed out; beyond
    /// [`MAX_CLIENTS`], forgets the least recently used other client.
    fn used(&mut self, srv_id: &str, client: &Arc<HttpClient>) {
        self.calls += 1;
        if !self.by_srv_id.contains_key(srv_id)
            && self.by_srv_id.len() >= MAX_CLIENTS
            && let Some(oldest) = self
                .by_srv_id
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(id, _)| id.clone())
        {
            self.by_srv_id.remove(&oldest);
        }
        self.by_srv_id
            .insert(srv_id.to_owned(), (client.clone(), self.calls));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    use super::super::{ClientAuth, Trust};
    use super::*;

    fn ca_pem() -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["ca".to_string()]).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    /// A cache over a trust store with no system part, checked on every call.
    fn cache() -> ClientCache {
        ClientCache::with_trust(Arc::new(TrustStore::new(
            Vec::new(),
            Duration::ZERO,
            Box::new(Vec::new),
        )))
    }

    fn roots(extra: &Path) -> ClientSettings {
        ClientSettings::with_trust(Trust::Roots {
            extra_ca_files: vec![extra.to_owned()],
        })
    }

    #[test]
    fn same_settings_same_client_changed_settings_new_client() {
        let cache = cache();
        let pem = ClientSettings::with_trust(Trust::Pem(ca_pem()));
        let a = cache.get("a", pem.clone()).unwrap();
        assert!(Arc::ptr_eq(&a, &cache.get("a", pem.clone()).unwrap()));
        let b = cache.get("b", pem.clone()).unwrap();
        assert!(!Arc::ptr_eq(&a, &b), "one client per account");

        let basic = ClientSettings {
            client_auth: ClientAuth::Basic {
                user: "u".into(),
                password: "p".into(),
            },
            ..pem.clone()
        };
        let a2 = cache.get("a", basic.clone()).unwrap();
        assert!(!Arc::ptr_eq(&a, &a2), "new credentials, new client");
        assert!(Arc::ptr_eq(&a2, &cache.get("a", basic.clone()).unwrap()));
        let limited = ClientSettings {
            max_body_bytes: 1024,
            ..basic
        };
        assert!(!Arc::ptr_eq(&a2, &cache.get("a", limited).unwrap()));
        let other_ca = ClientSettings::with_trust(Trust::Pem(ca_pem()));
        assert!(!Arc::ptr_eq(&a, &cache.get("a", other_ca).unwrap()));
        assert!(
            Arc::ptr_eq(&b, &cache.get("b", pem).unwrap()),
            "b untouched"
        );
    }

    #[test]
    fn a_changed_trust_store_gets_a_new_client() {
        let dir = tempfile::tempdir().unwrap();
        let extra = dir.path().join("extra.pem");
        std::fs::write(&extra, ca_pem()).unwrap();
        let cache = cache();
        let first = cache.get("a", roots(&extra)).unwrap();
        assert!(Arc::ptr_eq(&first, &cache.get("a", roots(&extra)).unwrap()));
        std::fs::write(&extra, format!("{}{}", ca_pem(), ca_pem())).unwrap();
        let renewed = cache.get("a", roots(&extra)).unwrap();
        assert!(!Arc::ptr_eq(&first, &renewed), "the store changed");
        assert_eq!(renewed.roots.as_ref().map(|r| r.len()), Some(2));
        assert!(Arc::ptr_eq(
            &renewed,
            &cache.get("a", roots(&extra)).unwrap()
        ));
    }

    #[test]
    fn at_most_max_clients_least_recently_used_forgotten() {
        let cache = cache();
        let pem = ClientSettings::with_trust(Trust::Pem(ca_pem()));
        let first = cache.get("a0", pem.clone()).unwrap();
        cache.get("a1", pem.clone()).unwrap();
        for i in 2..MAX_CLIENTS {
            cache.get(&format!("a{i}"), pem.clone()).unwrap();
        }
        assert!(Arc::ptr_eq(&first, &cache.get("a0", pem.clone()).unwrap()));
        cache.get("one-more", pem.clone()).unwrap();
        let clients = &cache.lock().by_srv_id;
        assert_eq!(clients.len(), MAX_CLIENTS);
        assert!(clients.contains_key("a0"), "used again: kept");
        assert!(!clients.contains_key("a1"), "the least recently used went");
    }

    #[test]
    fn bad_settings_are_refused_and_not_cached() {
        let cache = cache();
        let err = cache
            .get("a", ClientSettings::with_trust(Trust::Pem("nope".into())))
            .unwrap_err();
        assert!(err.to_string().contains("Ext/CACert"), "{err}");
        assert!(cache.lock().by_srv_id.is_empty());
    }
}
