//! TNDS import against the real corpus files (being written).
