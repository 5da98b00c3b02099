//! Only the Package#0 codec of the main crate's `notification` module (it uses only `std`,
//! `sha2` and `thiserror`).

#[path = "../../src/notification/package0.rs"]
pub mod package0;
