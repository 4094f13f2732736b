//! The download function: copies each queued file from its expiring URL into the vault
//! bucket, streaming with bounded memory, and records the outcome in the task record.

pub mod address;
pub mod error;
pub mod source;
pub mod source_policy;
pub mod upload;

#[cfg(test)]
mod test_support;
