//! The pure modules of `src/gateway/lwm2m/`, compiled from their source files.

#[path = "../../../src/gateway/lwm2m/codec.rs"]
pub mod codec;
#[path = "../../../src/gateway/lwm2m/link.rs"]
pub mod link;
#[path = "../../../src/gateway/lwm2m/path.rs"]
pub mod path;
#[path = "../../../src/gateway/lwm2m/senml.rs"]
pub mod senml;
#[path = "../../../src/gateway/lwm2m/tlv.rs"]
pub mod tlv;
