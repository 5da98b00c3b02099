//! [`Target`]: a request URL checked against the transport's rules — `https://` only,
//! except plain `http://` to a loopback host when the settings allow it — and split into
//! what connecting and the request line need.

use std::net::IpAddr;

use rustls::pki_types::ServerName;

use super::TransportError;

/// Where a request goes.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// The URL as given, for messages.
    pub url: String,
    /// `https` (true) or plain loopback `http` (false).
    pub tls: bool,
    /// The host without IPv6 brackets: what name resolution gets.
    pub host: String,
    pub port: u16,
    /// The `Host` header: the URL's authority.
    pub authority: String,
    /// The request target in origin form (`/path?query`).
    pub path_and_query: String,
    /// What the server certificate must name (for `https`).
    pub server_name: Option<ServerName<'static>>,
}

impl Target {
    pub(crate) fn parse(url: &str, allow_plain_loopback: bool) -> Result<Target, TransportError> {
        let bad = |why: &str| TransportError::InvalidUrl(format!("{url:?}: {why}"));
        let uri: http::Uri = url.parse().map_err(|e| bad(&format!("malformed ({e})")))?;
        let scheme = uri
            .scheme_str()
            .ok_or_else(|| bad("not an absolute URL (https://host/...)"))?
            .to_ascii_lowercase();
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad(
                "user credentials in the URL are not supported; the account's credentials are used",
            ));
        }
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_string();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let tls = match scheme.as_str() {
            "https" => true,
            "http" => {
                if !is_loopback_host(&host) {
                    return Err(bad(
                        "plain http:// is refused: DM sessions and data-repository transfers \
                         need TLS (https://)",
                    ));
                }
                if !allow_plain_loopback {
                    return Err(bad(
                        "plain http:// is refused: DM sessions and data-repository transfers \
                         need TLS (https://); plain HTTP to a loopback host needs the \
                         allow_plain_loopback setting",
                    ));
                }
                false
            }
            other => return Err(bad(&format!("unsupported scheme {other:?}; use https://"))),
        };
        let port = match authority.port_u16() {
            Some(0) => return Err(bad("port 0")),
            Some(p) => p,
            None if tls => 443,
            None => 80,
        };
        let server_name = if tls {
            Some(
                ServerName::try_from(host.clone())
                    .map_err(|e| bad(&format!("host {host:?} is no valid server name: {e}")))?,
            )
        } else {
            None
        };
        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/");
        let path_and_query = if path_and_query.starts_with('/') {
            path_and_query.to_string()
        } else {
            format!("/{path_and_query}")
        };
        Ok(Target {
            url: url.to_string(),
            tls,
            host,
            port,
            authority: authority.as_str().to_string(),
            path_and_query,
            server_name,
        })
    }

    /// Connections are reused only for the same scheme, host and port.
    pub(crate) fn origin(&self) -> (bool, String, u16) {
        (self.tls, self.host.to_ascii_lowercase(), self.port)
    }
}

/// A literal loopback address, or `localhost` (whose resolved addresses are then filtered
/// to loopback ones).
pub(crate) fn is_loopback_host(host: &str) -> bool {
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => {
            let h = host.trim_end_matches('.');
            h.eq_ignore_ascii_case("localhost") || h.to_ascii_lowercase().ends_with(".localhost")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_urls_split_into_parts() {
        let t = Target::parse("https://dm.example.com/omadm?x=1#frag", false).unwrap();
        assert!(t.tls);
        assert_eq!((t.host.as_str(), t.port), ("dm.example.com", 443));
        assert_eq!(t.authority, "dm.example.com");
        assert_eq!(t.path_and_query, "/omadm?x=1");
        let t = Target::parse("HTTPS://[::1]:8443", false).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path_and_query.as_str()),
            ("::1", 8443, "/")
        );
        assert_eq!(t.authority, "[::1]:8443");
        assert!(matches!(t.server_name, Some(ServerName::IpAddress(_))));
    }

    #[test]
    fn plain_http_needs_loopback_and_the_switch() {
        for url in [
            "http://127.0.0.1:8080/x",
            "http://[::1]/",
            "http://localhost:1/",
            "http://127.9.9.9/",
        ] {
            let err = Target::parse(url, false).unwrap_err().to_string();
            assert!(
                err.contains("need TLS") && err.contains("allow_plain_loopback"),
                "{err}"
            );
            let t = Target::parse(url, true).unwrap();
            assert!(!t.tls && t.server_name.is_none());
        }
        let t = Target::parse("http://127.0.0.1/", true).unwrap();
        assert_eq!(t.port, 80);
        for url in [
            "http://dm.example.com/",
            "http://10.0.0.1/",
            "http://localhost.example.com/",
        ] {
            let err = Target::parse(url, true).unwrap_err().to_string();
            assert!(
                err.contains("need TLS") && !err.contains("allow_plain_loopback"),
                "{err}"
            );
        }
    }

    #[test]
    fn malformed_urls_are_refused() {
        for (url, why) in [
            ("dm.example.com/x", "malformed"),
            ("/omadm", "not an absolute url"),
            ("ftp://dm.example.com/", "unsupported scheme"),
            ("https://user:pw@dm.example.com/", "credentials"),
            ("https://dm.example.com:0/", "port 0"),
            ("https://dm example.com/", "invalid"),
            ("", "empty"),
        ] {
            let err = Target::parse(url, true).unwrap_err();
            assert!(matches!(err, TransportError::InvalidUrl(_)), "{url}");
            let text = err.to_string();
            assert!(text.to_lowercase().contains(why), "{url}: {text}");
        }
    }
}
