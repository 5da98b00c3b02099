//! Principals: who acts. (What they may do on an MO instance, [`Rights`], is the store's:
//! grants are kept as its bit sets.)

use std::fmt;

pub use crate::store::{ADMIN, Rights, UnknownRight};

/// Who performs an operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Principal {
    /// A privileged local administrator (uid 0): all rights on every instance.
    Admin,
    /// A local application whose id the platform vouches for (a Flatpak app id, or the
    /// systemd system unit it runs in).
    App(String),
    /// Any other local caller: the Unix user it runs as, whatever binary it runs.
    User(u32),
    /// A DM server (Management Authority), by SrvID.
    Server(String),
}

/// A principal string that is not `app:<id>`, `app:*`, `uid:<n>` or `srv:<SrvID>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("principal {0:?} must be app:<id>, app:*, uid:<n>, srv:<SrvID> or srv:*")]
pub struct BadPrincipal(pub String);

/// Longest principal text accepted (`app:`/`srv:` and the id).
const MAX_PRINCIPAL_LEN: usize = 260;

/// Whether `id` can be an app id: `*` (every local caller), a Flatpak app id or a systemd
/// unit name — letters, digits and `._-@\+:`.
fn app_id_ok(id: &str) -> bool {
    id == "*"
        || (!id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-@\\+:".contains(c)))
}

/// The principal that stands for every local caller (apps and users) in grants.
pub const ANY_APP: &str = "app:*";
/// The principal that stands for every DM server in grants.
pub const ANY_SERVER: &str = "srv:*";

impl Principal {
    /// Parses `app:<id>`, `uid:<n>` or `srv:<SrvID>` (as stored in grants and owners).
    pub fn parse(text: &str) -> Result<Principal, BadPrincipal> {
        let bad = || BadPrincipal(text.chars().take(80).collect());
        if text.len() > MAX_PRINCIPAL_LEN || text.chars().any(char::is_control) {
            return Err(bad());
        }
        match text.split_once(':') {
            Some(("app", id)) if app_id_ok(id) => Ok(Principal::App(id.to_owned())),
            Some(("uid", n)) if n.bytes().all(|b| b.is_ascii_digit()) => {
                n.parse().map(Principal::User).map_err(|_| bad())
            }
            Some(("srv", id)) if !id.is_empty() => Ok(Principal::Server(id.to_owned())),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Admin => f.write_str(ADMIN),
            Principal::App(id) => write!(f, "app:{id}"),
            Principal::User(uid) => write!(f, "uid:{uid}"),
            Principal::Server(id) => write!(f, "srv:{id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_parse_and_print() {
        assert_eq!(
            Principal::parse("app:org.example.App").unwrap(),
            Principal::App("org.example.App".into())
        );
        assert_eq!(
            Principal::parse("srv:acme").unwrap().to_string(),
            "srv:acme"
        );
        assert_eq!(
            Principal::parse(ANY_APP).unwrap(),
            Principal::App("*".into())
        );
        assert_eq!(Principal::parse("uid:1000").unwrap(), Principal::User(1000));
        assert_eq!(Principal::User(7).to_string(), "uid:7");
        assert_eq!(
            Principal::parse("uid:01000").unwrap().to_string(),
            "uid:1000"
        );
        assert!(Principal::parse("app:weather@eth0.service").is_ok());
        let long = format!("app:{}", "a".repeat(300));
        for bad in [
            "app:",
            "root",
            "usr:x",
            "admin",
            "uid:",
            "uid:-1",
            "uid:1x",
            "uid:99999999999",
            "app:a b",
            "app:a/b",
            "srv:a\nb",
            long.as_str(),
        ] {
            assert!(Principal::parse(bad).is_err(), "{bad}");
        }
    }
}
