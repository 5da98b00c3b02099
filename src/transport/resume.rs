//! TLS session resumption: [`Sessions`] holds, for one [`HttpClient`](super::HttpClient), a
//! rustls configuration per origin (host and port), each with a session store of its own,
//! so that the next connection to that origin — the next DM session, hours later — resumes
//! the TLS session (TLS 1.3 ticket, TLS 1.2 session ID or ticket) instead of a full
//! handshake: no certificate chain sent, no signature made or checked.
//!
//! A resumed session skips the server certificate check: it stands on the full handshake
//! that opened it. So resumption is kept within what that handshake proved:
//!
//! - **one origin** — a session is offered only to the host and port it was established
//!   with (rustls alone keys its store by server name, which would offer a session to
//!   another port of the same host);
//! - **one client** — an [`HttpClient`](super::HttpClient) is built for one account's
//!   settings (trust, client certificate) and the trust store's anchors at that time; a
//!   change in any of them builds a new client ([`ClientCache`](super::ClientCache)), whose
//!   stores start empty, and rustls itself resumes only with the same verifier and client
//!   certificate (`Arc` identity);
//! - **bounded in time** — an origin's store is dropped [`MAX_AGE`] after it was created,
//!   so a full handshake (checking the certificate against the current trust anchors and
//!   date) happens at least that often, whatever ticket lifetimes the server grants
//!   (RFC 8446 §4.6.1 asks clients to limit how long keys from one handshake live on);
//! - **bounded in size** — [`MAX_ORIGINS`] origins per client, the least recently used
//!   forgotten first; one server name per store, with at most 8 TLS 1.3 tickets (rustls's
//!   limit) and one TLS 1.2 session.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::ClientConfig;
use rustls::client::{ClientSessionMemoryCache, Resumption};

use super::target::Target;

/// Origins per client with a session store; beyond, the least recently used is forgotten.
pub(crate) const MAX_ORIGINS: usize = 8;

/// How long after its creation an origin's session store may still be used: at least one
/// full handshake per origin and day.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// The size a rustls [`ClientSessionMemoryCache`] needs to hold one server name (it keeps
/// `size / 8` names, rounded up, with up to 8 TLS 1.3 tickets each).
const ONE_SERVER: usize = 1;

/// The per-origin TLS configurations of one client. See the [module documentation](self).
pub(crate) struct Sessions {
    /// The client's configuration; each origin's is a copy with its own session store.
    base: Arc<ClientConfig>,
    /// Most recently used last.
    origins: Mutex<VecDeque<Origin>>,
}

struct Origin {
    host: String,
    port: u16,
    config: Arc<ClientConfig>,
    created: SystemTime,
}

impl Sessions {
    pub(crate) fn new(base: Arc<ClientConfig>) -> Sessions {
        Sessions {
            base,
            origins: Mutex::new(VecDeque::new()),
        }
    }

    /// The configuration to connect to `target` with at `now`: its origin's, with the
    /// sessions it may resume; a new one (empty store) when there is none yet or the store
    /// is older than [`MAX_AGE`] (or from the future: the clock went back). Plain `http`
    /// needs none: the client's own.
    pub(crate) fn config(&self, target: &Target, now: SystemTime) -> Arc<ClientConfig> {
        if !target.tls {
            return self.base.clone();
        }
        let mut origins = self
            .origins
            .lock()
            // Entries are replaced whole: one poisoned by a panic elsewhere is intact.
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = origins
            .iter()
            .position(|o| o.port == target.port && o.host == target.host)
            && let Some(origin) = origins.remove(i)
            && now
                .duration_since(origin.created)
                .is_ok_and(|age| age < MAX_AGE)
        {
            let config = origin.config.clone();
            origins.push_back(origin);
            return config;
        }
        if origins.len() >= MAX_ORIGINS {
            origins.pop_front();
        }
        let mut config = ClientConfig::clone(&self.base);
        config.resumption = Resumption::store(Arc::new(ClientSessionMemoryCache::new(ONE_SERVER)));
        let config = Arc::new(config);
        origins.push_back(Origin {
            host: target.host.clone(),
            port: target.port,
            config: config.clone(),
            created: now,
        });
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> Sessions {
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
        Sessions::new(Arc::new(config))
    }

    fn target(url: &str) -> Target {
        Target::parse(url, false).unwrap()
    }

    fn hours(h: u64) -> Duration {
        Duration::from_secs(h * 3600)
    }

    #[test]
    fn one_configuration_per_origin() {
        let s = sessions();
        let now = SystemTime::now();
        let a = s.config(&target("https://dm.example.com/dm"), now);
        assert!(Arc::ptr_eq(
            &a,
            &s.config(&target("https://dm.example.com:443/other?x=1"), now)
        ));
        let other_port = s.config(&target("https://dm.example.com:8443/dm"), now);
        let other_host = s.config(&target("https://repo.example.com/dm"), now);
        assert!(!Arc::ptr_eq(&a, &other_port));
        assert!(!Arc::ptr_eq(&a, &other_host));
        // Same verifier and client credentials: a copy of the client's configuration.
        assert_eq!(a.alpn_protocols, s.base.alpn_protocols);
    }

    #[test]
    fn a_store_lives_at_most_max_age_and_never_across_a_clock_jump_back() {
        let s = sessions();
        let t0 = SystemTime::now();
        let url = target("https://dm.example.com/dm");
        let first = s.config(&url, t0);
        assert!(Arc::ptr_eq(&first, &s.config(&url, t0 + hours(23))));
        let renewed = s.config(&url, t0 + hours(24));
        assert!(!Arc::ptr_eq(&first, &renewed), "a day old: a new store");
        assert!(Arc::ptr_eq(&renewed, &s.config(&url, t0 + hours(25))));
        let back = s.config(&url, t0);
        assert!(!Arc::ptr_eq(&renewed, &back), "the clock went back");
    }

    #[test]
    fn at_most_max_origins_least_recently_used_forgotten() {
        let s = sessions();
        let now = SystemTime::now();
        let url = |i: usize| target(&format!("https://dm.example.com:{}/dm", 1000 + i));
        let first = s.config(&url(0), now);
        for i in 1..MAX_ORIGINS {
            s.config(&url(i), now);
        }
        // Using the first and second again makes the third the least recently used.
        assert!(Arc::ptr_eq(&first, &s.config(&url(0), now)));
        s.config(&url(1), now);
        s.config(&url(MAX_ORIGINS), now);
        let origins = s.origins.lock().unwrap();
        assert_eq!(origins.len(), MAX_ORIGINS);
        let ports: Vec<u16> = origins.iter().map(|o| o.port).collect();
        assert!(ports.contains(&1000) && ports.contains(&1001), "{ports:?}");
        assert!(
            !ports.contains(&1002),
            "the least recently used went: {ports:?}"
        );
    }
}
