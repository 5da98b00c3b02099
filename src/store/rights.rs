//! [`Rights`]: what a principal may do on an MO instance (PROTOCOL.md §11), as the grants
//! table keeps them — a bit set — and as people read them: `Read`, `Write`, `Exec`,
//! `Delegate`.

/// The logical rights of PROTOCOL.md §11 as a bit set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Rights(u8);

/// A right name that is not Read, Write, Exec or Delegate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown right {0:?} (expected Read, Write, Exec or Delegate)")]
pub struct UnknownRight(pub String);

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

    /// The right names held, comma-separated (`""` for none): the DACL MO's `Rights` leaf.
    pub fn to_text(self) -> String {
        self.names().join(",")
    }

    /// Parses [`Rights::to_text`]'s form; spaces around names are ignored, empty is none.
    pub fn parse_text(text: &str) -> Result<Rights, UnknownRight> {
        Rights::parse(text.split(',').map(str::trim).filter(|n| !n.is_empty()))
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
    fn rights_as_text_round_trip() {
        let r = Rights::READ.union(Rights::DELEGATE);
        assert_eq!(r.to_text(), "Read,Delegate");
        assert_eq!(Rights::parse_text(" Read , Delegate").unwrap(), r);
        assert_eq!(Rights::parse_text("").unwrap(), Rights::NONE);
        assert!(Rights::parse_text("Read,Own").is_err());
    }
}
