//! Principals (who acts) and rights (what they may do on an MO instance).

use std::fmt;

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

/// The logical rights of PROTOCOL.md §11 as a bit set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Rights(u8);

/// A right name that is not Read, Write, Exec or Delegate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown right {0:?} (expected Read, Write, Exec or Delegate)")]
pub struct UnknownRight(pub String);

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

/// The admin as owners and writers are stored.
pub const ADMIN: &str = "admin";

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

impl Rights {
    pub const READ: Rights = Rights(1);
    pub const WRITE: Rights = Rights(2);
    pub const EXEC: Rights = Rights(4);
    pub const DELEGATE: Rights = Rights(8);
    pub const ALL: Rights = Rights(15);
    pub const NONE: Rights = Rights(0);

    const NAMES: [(Rights, &'static str); 4] = [
        (Rights::READ, "Read"),
        (Rights::WRITE, "Write"),
        (Rights::EXEC, "Exec"),
        (Rights::DELEGATE, "Delegate"),
    ];

    /// Parses right names (`Read`, `Write`, `Exec`, `Delegate`).
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Rights, UnknownRight> {
        names.into_iter().try_fold(Rights::NONE, |acc, n| {
            Self::NAMES
                .iter()
                .find(|(_, name)| *name == n)
                .map(|(r, _)| Rights(acc.0 | r.0))
                .ok_or_else(|| UnknownRight(n.to_owned()))
        })
    }

    /// The stored bit set.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// From a stored bit set (unknown bits dropped).
    pub fn from_bits(bits: u8) -> Rights {
        Rights(bits & Rights::ALL.0)
    }

    pub fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }

    pub fn intersection(self, other: Rights) -> Rights {
        Rights(self.0 & other.0)
    }

    /// The right names held.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(r, _)| self.contains(*r))
            .map(|(_, n)| *n)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_parse_and_print() {
        let r = Rights::parse(["Read", "Exec"]).unwrap();
        assert!(r.contains(Rights::READ) && !r.contains(Rights::WRITE));
        assert_eq!(r.names(), ["Read", "Exec"]);
        assert_eq!(Rights::from_bits(0xff), Rights::ALL);
        assert_eq!(
            Rights::parse(["read"]).unwrap_err().to_string(),
            "unknown right \"read\" (expected Read, Write, Exec or Delegate)"
        );
    }

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
