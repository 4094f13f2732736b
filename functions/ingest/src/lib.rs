//! The ingest function.
