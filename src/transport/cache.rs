//! [`ClientCache`]: one [`HttpClient`] per DM server account, kept across sessions, DEFAULT
//! fetches and SUB deliveries, so that the TLS configuration is built once and kept-alive
//! connections are reused.
//!
//! A client is keyed by the account's SrvID and matched against the account's current
//! [`ClientSettings`] (trust, client authentication, limits — compared in full, so no
//! digest can collide): changed settings, or a trust store that changed since the client
//! was built ([`TrustStore`]), get a new client; the old one lives on only as long as a
//! running session holds it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::roots::{self, TrustStore};
use super::{ClientSettings, HttpClient, TransportError};

/// The clients of the accounts, by SrvID.
pub struct ClientCache {
    trust: Arc<TrustStore>,
    clients: Mutex<HashMap<String, Arc<HttpClient>>>,
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
            clients: Mutex::new(HashMap::new()),
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
        let cached = self.lock().get(srv_id).cloned();
        if let Some(client) = cached
            && client.settings == settings
            && self.current(&client)?
        {
            return Ok(client);
        }
        let client = Arc::new(HttpClient::with_trust_store(settings, &self.trust)?);
        self.lock().insert(srv_id.to_owned(), client.clone());
        Ok(client)
    }

    /// Closes every client's idle kept-alive connections (after a network move: the next
    /// request connects anew, from the device's new address).
    pub fn forget_connections(&self) {
        for client in self.lock().values() {
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<HttpClient>>> {
        // The map holds only finished clients: one poisoned by a panic elsewhere is intact.
        self.clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    fn bad_settings_are_refused_and_not_cached() {
        let cache = cache();
        let err = cache
            .get("a", ClientSettings::with_trust(Trust::Pem("nope".into())))
            .unwrap_err();
        assert!(err.to_string().contains("Ext/CACert"), "{err}");
        assert!(cache.lock().is_empty());
    }
}
