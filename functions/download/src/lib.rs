//! The download function.
