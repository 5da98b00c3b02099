//! Test certificates: a private CA and a server certificate kept in one directory,
//! generated on first use and reused afterwards, and the rustls server configuration built
//! from them.
//!
//! Files in the certificate directory:
//!
//! | file | what | mode |
//! |---|---|---|
//! | `ca.pem` | the test CA's certificate: put it into the DM account's `Ext/CACert` | 0644 |
//! | `ca.key` | the CA's private key (signs the server and client certificates) | 0600 |
//! | `server.pem` | the server certificate, for `localhost`, `127.0.0.1`, `::1` and every `--san` | 0644 |
//! | `server.key` | its private key | 0600 |
//!
//! A missing `ca.pem` makes a new CA (and so a new server certificate). A missing server
//! certificate, or one that does not cover every requested name, is issued anew by the CA in
//! `ca.key`. Files you put there yourself (your own CA, your own server certificate) are used
//! as they are. All keys are ECDSA P-256.

use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use sha2::{Digest as _, Sha256};

use super::error::DevServerError;

/// File name of the CA certificate in the certificate directory.
pub const CA_CERT: &str = "ca.pem";
/// File name of the CA's private key.
pub const CA_KEY: &str = "ca.key";
/// File name of the server certificate.
pub const SERVER_CERT: &str = "server.pem";
/// File name of the server's private key.
pub const SERVER_KEY: &str = "server.key";

/// The names every server certificate covers.
pub const DEFAULT_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// TLS sessions a server keeps for resumption (the oldest are forgotten first).
pub const SESSION_CACHE: usize = 256;

/// The most TLS 1.3 tickets a server sends after one handshake when a client asks.
pub const MAX_TICKETS: usize = 4;

/// The certificates in use, and which files were written this time.
#[derive(Clone, Debug)]
pub struct Certificates {
    /// The certificate directory.
    pub dir: PathBuf,
    /// Path of `ca.pem`.
    pub ca_path: PathBuf,
    /// The CA certificate (PEM), for the DM account's `Ext/CACert`.
    pub ca_pem: String,
    /// Path of `server.pem`.
    pub server_cert_path: PathBuf,
    /// Path of `server.key`.
    pub server_key_path: PathBuf,
    /// The names the server certificate covers.
    pub server_names: Vec<String>,
    /// File names written by this call (empty when everything was reused).
    pub written: Vec<&'static str>,
}

/// A client certificate and its key, issued by the test CA (for `--require-client-cert`).
#[derive(Clone, Debug)]
pub struct ClientIdentity {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PKCS#8 PEM).
    pub key_pem: String,
    /// The subject as the transcript shows it, e.g. `CN=device-1`.
    pub subject: String,
}

impl Certificates {
    /// True when this call generated the CA.
    pub fn ca_generated(&self) -> bool {
        self.written.contains(&CA_CERT)
    }

    /// Loads the certificates in `dir`, generating what is missing: a CA when `ca.pem` is
    /// missing, a server certificate when `server.pem`/`server.key` are missing or do not
    /// cover [`DEFAULT_SANS`] plus `extra_sans`.
    pub fn ensure(dir: &Path, extra_sans: &[String]) -> Result<Certificates, DevServerError> {
        fs::create_dir_all(dir).map_err(|e| DevServerError::io(dir, e))?;
        let mut sans: Vec<String> = DEFAULT_SANS.iter().map(|s| s.to_string()).collect();
        for s in extra_sans {
            let s = s.trim().to_owned();
            if s.is_empty() {
                return Err(DevServerError::Config("empty --san name".into()));
            }
            if !sans.contains(&s) {
                sans.push(s);
            }
        }
        let path = |name: &str| dir.join(name);
        let mut written = Vec::new();

        let ca_pem = if path(CA_CERT).exists() {
            read(&path(CA_CERT))?
        } else {
            let (cert_pem, key_pem) = generate_ca()?;
            write_file(&path(CA_KEY), key_pem.as_bytes(), 0o600)?;
            write_file(&path(CA_CERT), cert_pem.as_bytes(), 0o644)?;
            written.extend([CA_CERT, CA_KEY]);
            cert_pem
        };

        let have_server = path(SERVER_CERT).exists() && path(SERVER_KEY).exists();
        let missing_names = if have_server && written.is_empty() {
            let pem = read(&path(SERVER_CERT))?;
            let covered = names_in(&pem)?;
            sans.iter()
                .filter(|s| !covered.iter().any(|c| same_name(c, s)))
                .cloned()
                .collect()
        } else {
            sans.clone()
        };
        if !have_server || !written.is_empty() || !missing_names.is_empty() {
            if !path(CA_KEY).exists() {
                return Err(DevServerError::Certificate(format!(
                    "{} must be (re)issued for {}, but there is no {} to sign it with",
                    path(SERVER_CERT).display(),
                    missing_names.join(", "),
                    path(CA_KEY).display()
                )));
            }
            let issuer = load_issuer(dir, &ca_pem)?;
            let key = KeyPair::generate().map_err(cert_err)?;
            let mut params = CertificateParams::new(sans.clone()).map_err(cert_err)?;
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(DnType::OrganizationName, "omadmd development");
            params
                .distinguished_name
                .push(DnType::CommonName, "omadm-devserver");
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.use_authority_key_identifier_extension = true;
            let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;
            write_file(&path(SERVER_KEY), key.serialize_pem().as_bytes(), 0o600)?;
            write_file(&path(SERVER_CERT), cert.pem().as_bytes(), 0o644)?;
            written.extend([SERVER_CERT, SERVER_KEY]);
        }
        let server_names = names_in(&read(&path(SERVER_CERT))?)?;
        Ok(Certificates {
            dir: dir.to_owned(),
            ca_path: path(CA_CERT),
            ca_pem,
            server_cert_path: path(SERVER_CERT),
            server_key_path: path(SERVER_KEY),
            server_names,
            written,
        })
    }

    /// The rustls configuration: TLS 1.2 and 1.3 with the ring provider, HTTP/1.1 by ALPN,
    /// and with `require_client_cert` a client certificate signed by the CA in `ca.pem`.
    ///
    /// Sessions resume: the server keeps the last [`SESSION_CACHE`] sessions in memory
    /// (TLS 1.3 tickets are their 32-byte keys; TLS 1.2 resumes by session ID), and sends
    /// the number of TLS 1.3 tickets a client asks for with RFC 9149 `ticket_request` (at
    /// most [`MAX_TICKETS`]; rustls's 2 to a client that does not ask). The configuration
    /// and its cache belong to one server: no other server resumes its sessions.
    pub(crate) fn server_config(
        &self,
        require_client_cert: bool,
    ) -> Result<Arc<rustls::ServerConfig>, DevServerError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = CertificateDer::pem_file_iter(&self.server_cert_path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| pem_err(&self.server_cert_path, e))?;
        let key = PrivateKeyDer::from_pem_file(&self.server_key_path)
            .map_err(|e| pem_err(&self.server_key_path, e))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(cert_err)?;
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            for der in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
                let der = der.map_err(|e| pem_err(&self.ca_path, e))?;
                roots.add(der).map_err(cert_err)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(cert_err)?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_single_cert(chain, key).map_err(cert_err)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
        config.max_tls13_tickets = MAX_TICKETS;
        Ok(Arc::new(config))
    }
}

/// Issues a client certificate with subject `CN=<common_name>` from the CA in `dir`
/// (`ca.pem` + `ca.key`), for devices that authenticate with `--require-client-cert`.
pub fn issue_client_certificate(
    dir: &Path,
    common_name: &str,
) -> Result<ClientIdentity, DevServerError> {
    let ca_pem = read(&dir.join(CA_CERT))?;
    let issuer = load_issuer(dir, &ca_pem)?;
    let key = KeyPair::generate().map_err(cert_err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;
    Ok(ClientIdentity {
        subject: subject_of(cert.der()).unwrap_or_else(|| format!("CN={common_name}")),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

impl ClientIdentity {
    /// Writes `client-<name>.pem` and `client-<name>.key` (0600) into `dir`; returns their
    /// paths.
    pub fn write_to(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), DevServerError> {
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let cert = dir.join(format!("client-{safe}.pem"));
        let key = dir.join(format!("client-{safe}.key"));
        write_file(&key, self.key_pem.as_bytes(), 0o600)?;
        write_file(&cert, self.cert_pem.as_bytes(), 0o644)?;
        Ok((cert, key))
    }
}

/// The subject of a DER certificate as `CN=..., O=...`.
pub(crate) fn subject_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.subject().to_string())
}

fn generate_ca() -> Result<(String, String), DevServerError> {
    let key = KeyPair::generate().map_err(cert_err)?;
    let tag = crate::tree::value::hex(&Sha256::digest(key.public_key_raw())[..4]);
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "omadmd development");
    params
        .distinguished_name
        .push(DnType::CommonName, format!("omadm-devserver test CA {tag}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).map_err(cert_err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn load_issuer(dir: &Path, ca_pem: &str) -> Result<Issuer<'static, KeyPair>, DevServerError> {
    let key_path = dir.join(CA_KEY);
    let key = KeyPair::from_pem(&read(&key_path)?)
        .map_err(|e| DevServerError::Certificate(format!("{}: {e}", key_path.display())))?;
    Issuer::from_ca_cert_pem(ca_pem, key)
        .map_err(|e| DevServerError::Certificate(format!("{}: {e}", dir.join(CA_CERT).display())))
}

/// The DNS names and IP addresses a PEM certificate covers.
fn names_in(pem: &str) -> Result<Vec<String>, DevServerError> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| DevServerError::Certificate(format!("server certificate: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| DevServerError::Certificate(format!("server certificate: {e}")))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => names.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        names.push(IpAddr::from(a).to_string());
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        names.push(IpAddr::from(a).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(names)
}

fn same_name(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.eq_ignore_ascii_case(b),
    }
}

fn read(path: &Path) -> Result<String, DevServerError> {
    fs::read_to_string(path).map_err(|e| DevServerError::io(path, e))
}

/// Writes through a temporary file created with `mode`, then renames it into place.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), DevServerError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| DevServerError::io(&tmp, e))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| DevServerError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| DevServerError::io(path, e))
}

fn cert_err(e: impl std::fmt::Display) -> DevServerError {
    DevServerError::Certificate(e.to_string())
}

fn pem_err(path: &Path, e: impl std::fmt::Display) -> DevServerError {
    DevServerError::Certificate(format!("{}: {e}", path.display()))
}
