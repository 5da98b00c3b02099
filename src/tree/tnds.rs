//! TNDS XML import and export (being written).
