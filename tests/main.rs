//! omadmd's integration tests: one binary, one module per area. Shared helpers live in
//! `support/`.

mod support;

mod ddf_corpus;
mod store_crash;
mod store_uri;
mod tnds_corpus;
