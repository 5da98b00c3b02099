//! PEM handling for the trust and client-authentication settings, and the decision whether a
//! certificate from an account's `Ext/CACert` is a CA (a trust anchor) or an end-entity
//! certificate (a pin). The decision reads the X.509 basicConstraints extension with a
//! minimal DER walker: `cA` TRUE means CA; a missing extension (or `cA` FALSE) means
//! end-entity, as RFC 5280 §4.2.1.9 says.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TransportError;

/// What an account's `Ext/CACert` PEM asks for.
#[derive(Debug)]
pub(crate) enum Anchors {
    /// CA certificates: the only trust anchors.
    Cas(Vec<CertificateDer<'static>>),
    /// End-entity certificates: the server must present exactly one of them.
    Pinned(Vec<CertificateDer<'static>>),
}

/// Every certificate in `pem` (other PEM sections are ignored). `what` names the source in
/// error messages. At least one certificate is required.
pub(crate) fn parse_certs(
    pem: &str,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TransportError::Settings(format!("{what}: not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TransportError::Settings(format!(
            "{what}: no \"-----BEGIN CERTIFICATE-----\" block found"
        )));
    }
    Ok(certs)
}

/// The private key in `pem` (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub(crate) fn parse_key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>, TransportError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
        TransportError::Settings(format!(
            "{what}: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM expected): {e}"
        ))
    })
}

/// Sorts the certificates of an `Ext/CACert` PEM into trust anchors or pins.
pub(crate) fn classify(pem: &str) -> Result<Anchors, TransportError> {
    let what = "server trust anchor (Ext/CACert)";
    let certs = parse_certs(pem, what)?;
    let mut cas = Vec::new();
    let mut pins = Vec::new();
    for (i, cert) in certs.into_iter().enumerate() {
        match is_ca(&cert) {
            Ok(true) => cas.push(cert),
            Ok(false) => pins.push(cert),
            Err(e) => {
                return Err(TransportError::Settings(format!(
                    "{what}: certificate #{} is not a valid X.509 certificate: {e}",
                    i + 1
                )));
            }
        }
    }
    match (cas.is_empty(), pins.is_empty()) {
        (false, true) => Ok(Anchors::Cas(cas)),
        (true, false) => Ok(Anchors::Pinned(pins)),
        _ => Err(TransportError::Settings(format!(
            "{what}: mixes {} CA and {} end-entity certificate(s); give either CA \
             certificates (trust anchors) or the server's own certificate (a pin)",
            cas.len(),
            pins.len()
        ))),
    }
}

/// Whether `der` is a certificate whose basicConstraints say `cA` TRUE.
pub(crate) fn is_ca(der: &[u8]) -> Result<bool, String> {
    const SEQUENCE: u8 = 0x30;
    const EXTENSIONS: u8 = 0xa3; // [3] EXPLICIT, constructed
    const OID: u8 = 0x06;
    const BOOLEAN: u8 = 0x01;
    const OCTET_STRING: u8 = 0x04;
    const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13]; // 2.5.29.19

    let mut input = der;
    let cert = expect(&mut input, SEQUENCE, "Certificate")?;
    if !input.is_empty() {
        return Err("trailing bytes after the certificate".into());
    }
    let mut cert = cert;
    let mut tbs = expect(&mut cert, SEQUENCE, "TBSCertificate")?;
    while !tbs.is_empty() {
        let (tag, value) = tlv(&mut tbs)?;
        if tag != EXTENSIONS {
            continue;
        }
        let mut wrapper = value;
        let mut exts = expect(&mut wrapper, SEQUENCE, "Extensions")?;
        while !exts.is_empty() {
            let mut ext = expect(&mut exts, SEQUENCE, "Extension")?;
            let oid = expect(&mut ext, OID, "extnID")?;
            if oid != BASIC_CONSTRAINTS {
                continue;
            }
            if ext.first() == Some(&BOOLEAN) {
                expect(&mut ext, BOOLEAN, "critical")?;
            }
            let mut octets = expect(&mut ext, OCTET_STRING, "extnValue")?;
            let mut bc = expect(&mut octets, SEQUENCE, "BasicConstraints")?;
            if bc.first() == Some(&BOOLEAN) {
                let ca = expect(&mut bc, BOOLEAN, "cA")?;
                return Ok(ca.iter().any(|b| *b != 0));
            }
            return Ok(false);
        }
        return Ok(false);
    }
    Ok(false)
}

/// Reads one TLV with tag `want` from the front of `input`.
fn expect<'a>(input: &mut &'a [u8], want: u8, what: &str) -> Result<&'a [u8], String> {
    let (tag, value) = tlv(input)?;
    if tag != want {
        return Err(format!(
            "{what}: expected DER tag {want:#04x}, found {tag:#04x}"
        ));
    }
    Ok(value)
}

/// Reads one DER tag-length-value (single-byte tags, definite lengths up to 4 bytes).
fn tlv<'a>(input: &mut &'a [u8]) -> Result<(u8, &'a [u8]), String> {
    let truncated = || "truncated DER".to_string();
    let (&tag, rest) = input.split_first().ok_or_else(truncated)?;
    if tag & 0x1f == 0x1f {
        return Err("unsupported multi-byte DER tag".into());
    }
    let (&first, mut rest) = rest.split_first().ok_or_else(truncated)?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err("bad DER length".into());
        }
        let (bytes, tail) = rest.split_at(n);
        rest = tail;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return Err(truncated());
    }
    let (value, tail) = rest.split_at(len);
    *input = tail;
    Ok((tag, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    fn cert(is_ca: IsCa) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.is_ca = is_ca;
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn ca_and_end_entity_are_told_apart() {
        let (ca, _) = cert(IsCa::Ca(BasicConstraints::Unconstrained));
        let (ca_len, _) = cert(IsCa::Ca(BasicConstraints::Constrained(0)));
        let (ee, _) = cert(IsCa::NoCa);
        let (explicit_ee, _) = cert(IsCa::ExplicitNoCa);
        let der = |pem: &str| parse_certs(pem, "t").unwrap().remove(0);
        assert_eq!(is_ca(&der(&ca)), Ok(true));
        assert_eq!(is_ca(&der(&ca_len)), Ok(true));
        assert_eq!(is_ca(&der(&ee)), Ok(false));
        assert_eq!(is_ca(&der(&explicit_ee)), Ok(false));
    }

    #[test]
    fn classify_sorts_anchors_and_pins() {
        let (ca1, _) = cert(IsCa::Ca(BasicConstraints::Unconstrained));
        let (ca2, _) = cert(IsCa::Ca(BasicConstraints::Unconstrained));
        let (ee1, _) = cert(IsCa::NoCa);
        let (ee2, _) = cert(IsCa::NoCa);
        assert!(matches!(classify(&format!("{ca1}{ca2}")), Ok(Anchors::Cas(v)) if v.len() == 2));
        assert!(matches!(classify(&ee1), Ok(Anchors::Pinned(v)) if v.len() == 1));
        assert!(
            matches!(classify(&format!("{ee1}\n{ee2}")), Ok(Anchors::Pinned(v)) if v.len() == 2)
        );
        let mixed = classify(&format!("{ca1}{ee1}")).unwrap_err().to_string();
        assert!(mixed.contains("mixes 1 CA and 1 end-entity"), "{mixed}");
    }

    #[test]
    fn bad_pem_is_named() {
        let none = classify("hello").unwrap_err().to_string();
        assert!(
            none.contains("Ext/CACert") && none.contains("no \"-----BEGIN CERTIFICATE"),
            "{none}"
        );
        let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let err = classify(broken).unwrap_err().to_string();
        assert!(err.contains("not valid PEM"), "{err}");
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = classify(garbage).unwrap_err().to_string();
        assert!(err.contains("certificate #1 is not a valid X.509"), "{err}");
        let err = parse_key(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "client key",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("client key: no usable private key"), "{err}");
    }

    #[test]
    fn keys_and_surrounding_text_parse() {
        let (ee, key) = cert(IsCa::NoCa);
        assert!(parse_key(&key, "k").is_ok());
        // Comments around the blocks and other sections are ignored.
        let bundle = format!("subject=CN=x\n{ee}\n{key}\ntrailer\n");
        assert_eq!(parse_certs(&bundle, "t").unwrap().len(), 1);
    }

    #[test]
    fn der_walker_rejects_malformed_input() {
        assert!(is_ca(&[]).is_err());
        assert!(is_ca(&[0x30, 0x05, 0x30]).is_err());
        assert!(is_ca(&[0x30, 0x85, 0, 0, 0, 0, 1]).is_err());
        assert!(is_ca(&[0x30, 0x02, 0x30, 0x00, 0xff]).is_err());
        // A TBSCertificate without extensions (an X.509 v1 certificate) is no CA.
        assert_eq!(is_ca(&[0x30, 0x04, 0x30, 0x02, 0x02, 0x00]), Ok(false));
    }
}
