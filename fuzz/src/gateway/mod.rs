//! Only the LwM2M payload codecs of the main crate's gateway: paths, TLV, SenML JSON and
//! the registration link format (they use only `tree`, `serde_json`, `base64` and
//! `thiserror`; the CoAP adapter beside them is not compiled here).

pub mod lwm2m;
