//! The Management Object model, pure and free of I/O beyond reading the bytes handed in:
//!
//! - [`format`] and [`value`]: node formats and typed leaf values (DM-HLF-024's constructed
//!   `json` format included);
//! - [`node`]: in-memory subtrees;
//! - [`mo_type`] and [`ddf`]: MO types and the DDF reader; [`builtin`]: the MOs omadmd
//!   itself defines; [`lwm2m`]: LwM2M object definitions and the MO types made from them;
//! - [`uri`] and [`resolve`]: ClientURI parsing and resolution (PROTOCOL.md §8);
//! - [`json`] and [`tnds`]: the DM 2.0 MO serialization and TNDS XML.
//!
//! [`xml`] is the bounded XML element reader the DDF, TNDS and LwM2M readers share.

pub mod builtin;
pub mod ddf;
pub mod format;
pub mod json;
pub mod lwm2m;
pub mod mo_type;
pub mod node;
pub mod registry;
pub mod resolve;
pub mod tnds;
pub mod uri;
pub mod value;
pub mod xml;

pub use format::Format;
pub use mo_type::{MoType, NodeDef};
pub use node::Node;
pub use value::Value;
