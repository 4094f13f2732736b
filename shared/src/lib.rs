//! # suno-callbacks
//!
//! Everything a receiver of Suno API callbacks (docs.sunoapi.org and docs.kie.ai) needs
//! that does not touch the network: raw body bytes in, one [`CallbackEvent`] out.
//!
//! * [`parse_callback`]: every documented family, both documentation dialects, failure
//!   bodies, and unknown families that still carry a task id. The rules (where the task id
//!   is looked for, how the family and the stage are decided, how files are named) are in
//!   the [`parse`] module docs.
//! * [`parse_poll`]: the answers of the providers' polling (record-info) endpoints, for
//!   when a callback never comes, read into the same [`CallbackEvent`] (or "still pending"),
//!   with the same file names; rules and the status mapping in the [`poll`] module docs.
//! * [`TaskId`]: a validated task id, safe as a DynamoDB key and as one S3 key segment
//!   (ASCII letters, digits and `- _ . * ~ + = @ , : !`, at most 128 bytes, no `..`).
//! * [`Stage`] and [`merge_stage`]: stage ordering (`text` < `first` < `complete`;
//!   `error` and `final` end a task) that never moves a task backwards.
//! * [`signature`]: the docs.kie.ai webhook HMAC scheme ([`HmacVerifier`], [`sign`]) and a
//!   plain shared-token scheme ([`TokenVerifier`]).
//! * [`s3_key`]: the S3 key layout (`tasks/<task_id>/<name>.<ext>`).
//!
//! The crate reads no clock: every time-dependent check takes "now" as an argument. No input
//! makes it panic.
//!
//! ```
//! use suno_callbacks::{parse_callback, Family, Stage};
//!
//! let body = br#"{"code":500,"msg":"Vocal separation failed",
//!                 "data":{"task_id":"3e63b4cc88d52611159371f6af5571e7","vocal_separation_info":null}}"#;
//! let event = parse_callback(body).unwrap();
//! assert_eq!(event.family, Family::VocalSeparation);
//! assert_eq!(event.stage, Stage::Error);
//! assert!(!event.succeeded() && event.files.is_empty());
//! ```

pub mod event;
pub mod parse;
pub mod poll;
pub mod s3_key;
pub mod signature;
pub mod stage;
pub mod task_id;

pub use event::{
    CallbackEvent, Details, Family, FileRef, LyricsVariant, MidiInstrument, MidiNote, SeparationType, Track,
};
pub use parse::{ParseError, callback_task_id, parse_callback};
pub use poll::{PollError, PollResult, parse_poll};
pub use signature::{HmacKey, HmacVerifier, SignatureError, TokenError, TokenVerifier, VerifierConfigError, sign};
pub use stage::{Stage, StageMerge, merge_stage};
pub use task_id::{TaskId, TaskIdError};

/// The README's examples run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
