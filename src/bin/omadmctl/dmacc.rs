//! The DM account an administrator describes with `omadmctl account add`: the options and
//! the files they name, read and checked here (as the user who runs omadmctl; omadmd never
//! opens a file a caller names), turned into the MOData of a DM Account MO instance
//! (`urn:oma:mo:oma-dm-dmacc:1.2`) as `CreateInstance` takes it.
//!
//! The nodes are the ones omadmd's session engine reads: `SrvID`, `SrvURI`, `Name`,
//! `Perm/<x>/MOID`, `Ext/CACert`, `Ext/Priority` and `Auth/Trsp/{Data,Secret}`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls::pki_types::pem::{PemObject, SectionKind};
use serde_json::{Map, Value as J, json};

use omadmd::tree::uri::Moid;

use crate::cli::AccountAddArgs;

/// What is wrong with an option of `account add` or a file it names.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("--url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("--moid {moid:?}: {reason}")]
    Moid { moid: String, reason: String },
    #[error("--user {user:?}: an HTTP Basic user name cannot contain ':'")]
    User { user: String },
    #[error("{option} {}: {reason}", file.display())]
    File {
        option: &'static str,
        file: PathBuf,
        reason: String,
    },
}

/// How the account trusts the server: the `Ext/CACert` a `--ca` or `--pin` file gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrustFile {
    /// `--ca`: CA certificates, the only trust anchors for this server.
    Ca,
    /// `--pin`: the server's own certificate, which it must present.
    Pin,
}

impl TrustFile {
    fn option(self) -> &'static str {
        match self {
            TrustFile::Ca => "--ca",
            TrustFile::Pin => "--pin",
        }
    }
}

/// The MOData (`{"DMAcc": {...}}`) of the account `args` describe, with the files read and
/// every value checked.
pub fn modata(args: &AccountAddArgs) -> Result<J, InputError> {
    check_url(&args.url)?;
    let mut acc = Map::new();
    acc.insert("SrvID".into(), J::from(args.id.as_str()));
    acc.insert("SrvURI".into(), J::from(args.url.as_str()));
    if let Some(name) = &args.name {
        acc.insert("Name".into(), J::from(name.as_str()));
    }
    acc.insert("Perm".into(), J::Object(perm(&args.moids)?));
    if let (Some(user), Some(file)) = (&args.user, &args.password_file) {
        if user.contains(':') {
            return Err(InputError::User { user: user.clone() });
        }
        let password = password(file)?;
        acc.insert(
            "Auth".into(),
            json!({"Trsp": {"Data": user, "Secret": password}}),
        );
    }
    let mut ext = Map::new();
    let trust = match (&args.ca, &args.pin) {
        (Some(file), _) => Some((file, TrustFile::Ca)),
        (None, Some(file)) => Some((file, TrustFile::Pin)),
        (None, None) => None,
    };
    if let Some((file, kind)) = trust {
        ext.insert("CACert".into(), J::from(trust_pem(file, kind)?));
    }
    if let Some(priority) = args.priority {
        ext.insert("Priority".into(), J::from(priority));
    }
    if !ext.is_empty() {
        acc.insert("Ext".into(), J::Object(ext));
    }
    Ok(json!({ "DMAcc": acc }))
}

/// An absolute `https://host...` URL: DM 2.0 sessions run over TLS only.
fn check_url(url: &str) -> Result<(), InputError> {
    let fail = |reason: &str| {
        Err(InputError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        })
    };
    match url.split_once("://") {
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {}
        Some((scheme, _)) => {
            return fail(&format!(
                "the scheme is {scheme}, but omadmd reaches DM servers over https only"
            ));
        }
        None => return fail("not an absolute URL; give https://HOST[:PORT]/PATH"),
    }
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return fail(&format!("not a URL ({e})")),
    };
    if uri.host().is_none_or(str::is_empty) {
        return fail("no host; give https://HOST[:PORT]/PATH");
    }
    Ok(())
}

/// `Perm`: one entry per distinct MOID, named 1, 2, ... in the order given.
fn perm(moids: &[String]) -> Result<Map<String, J>, InputError> {
    let mut seen: Vec<&str> = Vec::new();
    for moid in moids {
        Moid::parse(moid).map_err(|e| InputError::Moid {
            moid: moid.clone(),
            reason: e.reason,
        })?;
        if !seen.contains(&moid.as_str()) {
            seen.push(moid);
        }
    }
    Ok(seen
        .iter()
        .enumerate()
        .map(|(i, moid)| ((i + 1).to_string(), json!({ "MOID": moid })))
        .collect())
}

/// Largest certificate or password file read (a CA bundle fits many times over).
const MAX_FILE_BYTES: u64 = 1024 * 1024;

fn read(option: &'static str, file: &Path) -> Result<Vec<u8>, InputError> {
    use std::io::Read as _;
    let failed = |reason: String| InputError::File {
        option,
        file: file.to_owned(),
        reason,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| failed(e.to_string()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(failed(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    Ok(bytes)
}

/// The password in `file`: its one line, without the line end.
fn password(file: &Path) -> Result<String, InputError> {
    const OPTION: &str = "--password-file";
    let fail = |reason: &str| InputError::File {
        option: OPTION,
        file: file.to_owned(),
        reason: reason.to_owned(),
    };
    let text = String::from_utf8(read(OPTION, file)?).map_err(|_| fail("not UTF-8 text"))?;
    let line = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if line.is_empty() {
        return Err(fail("empty; it must hold the password on one line"));
    }
    if line.contains(['\n', '\r']) {
        return Err(fail(
            "holds more than one line; it must hold only the password",
        ));
    }
    Ok(line.to_owned())
}

/// The certificates of a `--ca` or `--pin` file, checked and written out as PEM again (so
/// that nothing else in the file, such as a private key, reaches omadmd).
pub fn trust_pem(file: &Path, kind: TrustFile) -> Result<String, InputError> {
    let option = kind.option();
    let fail = |reason: String| InputError::File {
        option,
        file: file.to_owned(),
        reason,
    };
    let bytes = read(option, file)?;
    let mut pem = String::new();
    let mut count = 0;
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes) {
        let (section, der) = section.map_err(|e| fail(format!("not valid PEM: {e}")))?;
        match section {
            SectionKind::Certificate => {}
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
                return Err(fail(
                    "holds a private key; give a file with the certificate only".into(),
                ));
            }
            _ => continue,
        }
        count += 1;
        let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| {
            fail(format!(
                "certificate #{count} is not a valid X.509 certificate: {e}"
            ))
        })?;
        match (kind, cert.is_ca()) {
            (TrustFile::Ca, false) => {
                return Err(fail(format!(
                    "certificate #{count} ({}) is not a CA certificate; to trust exactly this \
                     server certificate, give it with --pin",
                    cert.subject()
                )));
            }
            (TrustFile::Pin, true) => {
                return Err(fail(format!(
                    "certificate #{count} ({}) is a CA certificate; give it with --ca, or give \
                     the server's own certificate to --pin",
                    cert.subject()
                )));
            }
            _ => {}
        }
        pem.push_str(&encode_certificate(&der));
    }
    if count == 0 {
        return Err(fail(
            "no certificate in it (a \"-----BEGIN CERTIFICATE-----\" block)".into(),
        ));
    }
    Ok(pem)
}

/// One certificate as a PEM block: base64 in lines of 64 characters.
fn encode_certificate(der: &[u8]) -> String {
    let text = BASE64.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in text.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str) -> AccountAddArgs {
        AccountAddArgs {
            id: "ma1".into(),
            url: url.into(),
            ca: None,
            pin: None,
            name: None,
            moids: vec![],
            priority: None,
            user: None,
            password_file: None,
        }
    }

    /// A CA certificate and a server certificate (self-signed, no CA), as PEM.
    fn certificates() -> (String, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let server = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (ca_cert.pem(), server.cert.pem())
    }

    fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn builds_the_nodes_the_daemon_reads() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = certificates();
        let mut a = args("https://dm.example.com:8443/dm");
        a.name = Some("Example".into());
        a.moids = vec!["urn:a:1.0".into(), "urn:b:1.0".into(), "urn:a:1.0".into()];
        a.priority = Some(-3);
        a.ca = Some(file(&dir, "ca.pem", &format!("junk before\n{ca}")));
        a.user = Some("device".into());
        a.password_file = Some(file(&dir, "pw", "s3 cret\n"));
        let json = modata(&a).unwrap();
        let acc = &json["DMAcc"];
        assert_eq!(acc["SrvID"], "ma1");
        assert_eq!(acc["SrvURI"], "https://dm.example.com:8443/dm");
        assert_eq!(acc["Name"], "Example");
        assert_eq!(
            acc["Perm"],
            json!({"1": {"MOID": "urn:a:1.0"}, "2": {"MOID": "urn:b:1.0"}})
        );
        assert_eq!(
            acc["Auth"],
            json!({"Trsp": {"Data": "device", "Secret": "s3 cret"}})
        );
        assert_eq!(acc["Ext"]["Priority"], -3);
        assert_eq!(acc["Ext"]["CACert"], J::from(ca.replace("\r\n", "\n")));

        let bare = modata(&args("https://dm.example.com/dm")).unwrap();
        assert_eq!(
            bare,
            json!({"DMAcc": {"SrvID": "ma1", "SrvURI": "https://dm.example.com/dm", "Perm": {}}})
        );
    }

    #[test]
    fn urls_must_be_absolute_https() {
        for (url, why) in [
            ("http://dm.example.com/dm", "https only"),
            ("HTTPS://dm.example.com/dm", ""),
            ("dm.example.com/dm", "absolute"),
            ("https:///dm", "not a URL"),
            ("https://exa mple/", "not a URL"),
        ] {
            let result = check_url(url);
            if why.is_empty() {
                assert!(result.is_ok(), "{url}: {result:?}");
            } else {
                let e = result.unwrap_err().to_string();
                assert!(e.starts_with("--url ") && e.contains(why), "{url}: {e}");
            }
        }
    }

    #[test]
    fn ca_and_pin_files_hold_the_right_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, server) = certificates();
        let ca_file = file(&dir, "ca.pem", &ca);
        let server_file = file(&dir, "server.pem", &server);
        assert!(trust_pem(&ca_file, TrustFile::Ca).is_ok());
        assert!(trust_pem(&server_file, TrustFile::Pin).is_ok());
        let e = trust_pem(&server_file, TrustFile::Ca)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a CA certificate") && e.contains("--pin"),
            "{e}"
        );
        let e = trust_pem(&ca_file, TrustFile::Pin).unwrap_err().to_string();
        assert!(
            e.contains("is a CA certificate") && e.contains("--ca"),
            "{e}"
        );

        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let with_key = file(&dir, "both.pem", &format!("{server}{key}"));
        let e = trust_pem(&with_key, TrustFile::Pin)
            .unwrap_err()
            .to_string();
        assert!(e.contains("private key"), "{e}");
        let e = trust_pem(&file(&dir, "empty.pem", "hello\n"), TrustFile::Ca)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--ca ") && e.contains("no certificate"),
            "{e}"
        );
        let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let e = trust_pem(&file(&dir, "broken.pem", broken), TrustFile::Ca)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a valid X.509 certificate"), "{e}");
        let e = trust_pem(&dir.path().join("missing.pem"), TrustFile::Ca)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("missing.pem") && e.contains("No such file"),
            "{e}"
        );
    }

    #[test]
    fn password_files_hold_one_line() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(password(&file(&dir, "a", "pw\r\n")).unwrap(), "pw");
        assert_eq!(password(&file(&dir, "b", " pw ")).unwrap(), " pw ");
        for (text, why) in [
            ("", "empty"),
            ("\n", "empty"),
            ("a\nb\n", "more than one line"),
        ] {
            let e = password(&file(&dir, "c", text)).unwrap_err().to_string();
            assert!(
                e.starts_with("--password-file ") && e.contains(why),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn moids_and_users_are_checked() {
        let mut a = args("https://x/dm");
        a.moids = vec!["not a moid".into()];
        assert!(matches!(modata(&a), Err(InputError::Moid { .. })));
        let dir = tempfile::tempdir().unwrap();
        let mut a = args("https://x/dm");
        a.user = Some("a:b".into());
        a.password_file = Some(file(&dir, "pw", "x"));
        assert!(matches!(modata(&a), Err(InputError::User { .. })));
    }
}
