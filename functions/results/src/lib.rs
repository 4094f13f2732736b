//! The results function.
