//! Node formats: the `DFFormat` of a DDF node and the `format` of a stored node.

use std::fmt;
use std::str::FromStr;

/// The format of a node. `Node` is the format of interior nodes; every other format is a
/// leaf format. `Json` is omadmd's constructed format for structured values (DM-HLF-024).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    Node,
    Null,
    B64,
    Bin,
    Bool,
    Chr,
    Int,
    Xml,
    Date,
    Time,
    Float,
    Json,
}

impl Format {
    /// Every format, interior first.
    pub const ALL: [Format; 12] = [
        Format::Node,
        Format::Null,
        Format::B64,
        Format::Bin,
        Format::Bool,
        Format::Chr,
        Format::Int,
        Format::Xml,
        Format::Date,
        Format::Time,
        Format::Float,
        Format::Json,
    ];

    /// The name used in DDF `DFFormat` elements, on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Node => "node",
            Format::Null => "null",
            Format::B64 => "b64",
            Format::Bin => "bin",
            Format::Bool => "bool",
            Format::Chr => "chr",
            Format::Int => "int",
            Format::Xml => "xml",
            Format::Date => "date",
            Format::Time => "time",
            Format::Float => "float",
            Format::Json => "json",
        }
    }

    /// True for the interior-node format.
    pub fn is_interior(self) -> bool {
        self == Format::Node
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format name that is not one of [`Format::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown node format {0:?} (expected one of node, null, b64, bin, bool, chr, int, xml, date, time, float, json)"
)]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| UnknownFormat(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in Format::ALL {
            assert_eq!(f.as_str().parse::<Format>(), Ok(f));
        }
    }

    #[test]
    fn unknown_name_is_refused_with_the_name() {
        let err = "string".parse::<Format>().unwrap_err();
        assert!(err.to_string().contains("\"string\""));
    }
}
