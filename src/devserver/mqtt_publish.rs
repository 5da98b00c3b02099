//! Publishing a Package#0 on an MQTT broker topic, the way a DM server reaches a device that
//! keeps a subscription there (omadmd's MQTT channel: the account's `Push/<x>/Addr`).
//!
//! One connection per publish: connect (MQTT 3.1.1, clean session), publish at QoS 1, wait
//! for the broker's PUBACK, disconnect. Nothing is retried: a failure is the caller's to
//! report. TLS (`mqtts://`) uses rustls with `ring`; the broker is verified with the given
//! CA certificates, else the system roots.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, MqttOptions, Packet, PublishOptions, QoS, TlsConfiguration, Transport,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use super::error::DevServerError;
use crate::notification::mqtt::parse_addr;

/// How long one publish may take, from connecting to the broker's PUBACK.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Where to publish, and how to log in.
#[derive(Clone, Debug, Default)]
pub struct MqttTarget {
    /// `mqtts://host:port/<topic>` (`mqtt://` for a plain broker): the account's
    /// `Push/<x>/Addr`.
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// PEM CA certificates that verify a TLS broker; `None`: the system roots.
    pub ca_pem: Option<String>,
}

/// `omadm-devserver notify --mqtt URL ...`: where to publish the notification.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct MqttArgs {
    /// Publish the notification on this broker topic: mqtts://HOST:PORT/TOPIC (mqtt:// for a
    /// plain broker), the DM account's Push/<x>/Addr.
    #[arg(long = "mqtt", value_name = "URL")]
    pub url: Option<String>,

    /// The broker user name (the server's own, not the device's).
    #[arg(long, value_name = "USER", requires = "url")]
    pub mqtt_user: Option<String>,

    /// The broker password for --mqtt-user.
    #[arg(long, value_name = "PASSWORD", requires = "mqtt_user")]
    pub mqtt_password: Option<String>,

    /// PEM file of the CA certificates that verify a TLS broker; default: the system roots.
    #[arg(long, value_name = "FILE", requires = "url")]
    pub mqtt_ca: Option<PathBuf>,
}

impl MqttArgs {
    /// The target these arguments name, if any (reads the CA file).
    pub fn target(&self) -> Result<Option<MqttTarget>, DevServerError> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        let ca_pem = match &self.mqtt_ca {
            Some(path) => {
                Some(std::fs::read_to_string(path).map_err(|e| DevServerError::io(path, e))?)
            }
            None => None,
        };
        Ok(Some(MqttTarget {
            url: url.clone(),
            user: self.mqtt_user.clone(),
            password: self.mqtt_password.clone(),
            ca_pem,
        }))
    }
}

/// Publishes `payload` (a Package#0) on the target's topic and waits for the broker to take
/// it (PUBACK), at most [`TIMEOUT`].
pub async fn publish(target: &MqttTarget, payload: Vec<u8>) -> Result<(), DevServerError> {
    let err = |what: String| DevServerError::Mqtt(format!("{}: {what}", target.url));
    let (broker, topic) = parse_addr(&target.url).map_err(|e| err(e.to_string()))?;
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).map_err(|e| err(format!("no random client id: {e}")))?;
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let mut options =
        MqttOptions::new(format!("devserver{id}"), (broker.host.clone(), broker.port));
    options.set_keep_alive(30).set_clean_session(true);
    match (&target.user, &target.password) {
        (Some(user), Some(password)) => {
            options.set_credentials(user.clone(), password.clone().into_bytes());
        }
        (Some(user), None) => {
            options.set_username(user.clone());
        }
        (None, _) => {}
    }
    if broker.tls {
        let config = tls_config(target.ca_pem.as_deref()).map_err(err)?;
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    }
    let (client, mut events) = AsyncClient::builder(options)
        .try_build()
        .map_err(|e| err(e.to_string()))?;
    client
        .publish(topic, payload, PublishOptions::new(QoS::AtLeastOnce))
        .await
        .map_err(|e| err(e.to_string()))?;
    let acked = async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(err(e.to_string())),
            }
        }
    };
    tokio::time::timeout(TIMEOUT, acked)
        .await
        .map_err(|_| err(format!("no PUBACK within {} s", TIMEOUT.as_secs())))??;
    // A courtesy to the broker; the message is already its.
    if client.disconnect().await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(event) = events.poll().await {
                if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
    Ok(())
}

/// TLS 1.2/1.3 with `ring`, trusting `ca_pem`'s certificates or the system roots.
fn tls_config(ca_pem: Option<&str>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| format!("CA certificate: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("CA certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err("no certificate in the CA file".into());
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
