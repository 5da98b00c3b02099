//! The rustls client configuration of one [`HttpClient`](super::HttpClient): the `ring`
//! crypto provider (held by this configuration, never installed process-wide), TLS 1.2 and
//! 1.3 only, the server verifier chosen by [`Trust`] (the shared anchors of a
//! [`TrustStore`] for [`Trust::Roots`]), the client certificate, and one TLS 1.3 ticket
//! asked for per handshake (sessions resume: [`super::resume`]).

use std::sync::Arc;

use rustls::client::TicketRequest;
use rustls::{ClientConfig, RootCertStore};

use super::certs::{self, Anchors};
use super::pin::PinnedVerifier;
use super::roots::TrustStore;
use super::{ClientAuth, ClientSettings, TransportError, Trust};

/// The TLS configuration of one client, and the shared anchors it was built with.
#[derive(Debug)]
pub(crate) struct Built {
    pub(crate) config: Arc<ClientConfig>,
    /// No trust anchor at all (an empty system store and no extra files): TLS errors say
    /// why everything is refused.
    pub(crate) roots_empty: bool,
    /// With [`Trust::Roots`], the anchors from `system` (a newer `Arc` means the store
    /// changed since).
    pub(crate) roots: Option<Arc<RootCertStore>>,
}

/// Builds the TLS configuration; with [`Trust::Roots`] the anchors come from `system`.
pub(crate) fn client_config(
    settings: &ClientSettings,
    system: &TrustStore,
) -> Result<Built, TransportError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TransportError::Settings(format!("TLS provider: {e}")))?;
    let mut shared = None;
    let builder = match &settings.trust {
        Trust::Roots { extra_ca_files } => {
            let roots = system.roots(extra_ca_files)?;
            shared = Some(roots.clone());
            builder.with_root_certificates(roots)
        }
        Trust::Pem(pem) => match certs::classify(pem)? {
            Anchors::Cas(cas) => {
                let mut roots = RootCertStore::empty();
                for (i, ca) in cas.into_iter().enumerate() {
                    roots.add(ca).map_err(|e| {
                        TransportError::Settings(format!(
                            "server trust anchor (Ext/CACert): CA certificate #{} is \
                             unusable: {e}",
                            i + 1
                        ))
                    })?;
                }
                builder.with_root_certificates(roots)
            }
            Anchors::Pinned(pins) => {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(PinnedVerifier::new(
                        pins,
                        provider.signature_verification_algorithms,
                    )))
            }
        },
    };
    let mut config = match &settings.client_auth {
        ClientAuth::Certificate { chain_pem, key_pem } => {
            let chain = certs::parse_certs(chain_pem, "client certificate chain")?;
            let key = certs::parse_key(key_pem, "client private key")?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TransportError::Settings(format!("client certificate and key: {e}")))?
        }
        ClientAuth::None | ClientAuth::Basic { .. } => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // One connection per DM session: one TLS 1.3 ticket after each handshake is all the
    // next session needs (RFC 9149; servers that ignore the request send their default).
    config.send_ticket_request = Some(TicketRequest {
        new_session_count: 1,
        resumption_count: 1,
    });
    Ok(Built {
        config: Arc::new(config),
        roots_empty: shared.as_ref().is_some_and(|r| r.is_empty()),
        roots: shared,
    })
}

#[cfg(test)]
mod tests {
    use super::super::roots;
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn self_signed() -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["device".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn client_key_must_fit_its_certificate() {
        let (cert_a, key_a) = self_signed();
        let (_, key_b) = self_signed();
        let settings = |chain_pem: &str, key_pem: &str| ClientSettings {
            client_auth: ClientAuth::Certificate {
                chain_pem: chain_pem.into(),
                key_pem: key_pem.into(),
            },
            ..ClientSettings::default()
        };
        assert!(client_config(&settings(&cert_a, &key_a), roots::system()).is_ok());
        let err = client_config(&settings(&cert_a, &key_b), roots::system())
            .unwrap_err()
            .to_string();
        assert!(err.contains("client certificate and key"), "{err}");
        let err = client_config(&settings("", &key_a), roots::system())
            .unwrap_err()
            .to_string();
        assert!(err.contains("client certificate chain"), "{err}");
        let err = client_config(&settings(&cert_a, "nope"), roots::system())
            .unwrap_err()
            .to_string();
        assert!(err.contains("client private key"), "{err}");
    }

    #[test]
    fn extra_ca_files_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = self_signed();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, &ca).unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let missing = dir.path().join("missing.pem");
        let with = |files: Vec<std::path::PathBuf>| {
            client_config(
                &ClientSettings::with_trust(Trust::Roots {
                    extra_ca_files: files,
                }),
                roots::system(),
            )
        };
        assert!(!with(vec![good]).unwrap().roots_empty);
        let err = with(vec![empty]).unwrap_err().to_string();
        assert!(
            err.contains("empty.pem") && err.contains("no \"-----BEGIN"),
            "{err}"
        );
        let err = with(vec![missing]).unwrap_err().to_string();
        assert!(
            err.contains("extra CA file") && err.contains("missing.pem"),
            "{err}"
        );
    }
}
