//! # suno-callbacks
//!
//! Everything a receiver of Suno API callbacks (docs.sunoapi.org and docs.kie.ai) needs
//! that does not touch the network: raw body bytes in, one [`CallbackEvent`] out.
//!
//! * [`parse_callback`]: every documented family, both documentation dialects, failure
//!   bodies, and unknown families that still carry a task id.
//! * [`TaskId`]: a validated task id, safe as a DynamoDB key and as one S3 key segment.
//! * [`Stage`] and [`merge_stage`]: stage ordering (`text` < `first` < `complete`;
//!   `error` and `final` end a task) that never moves a task backwards.
//! * [`signature`]: the docs.kie.ai webhook HMAC scheme and a plain shared-token scheme.
//! * [`s3_key`]: the S3 key layout (`tasks/<task_id>/<name>.<ext>`).
//!
//! The crate reads no clock: every time-dependent check takes "now" as an argument.

pub mod event;
pub mod parse;
pub mod s3_key;
pub mod signature;
pub mod stage;
pub mod task_id;

pub use event::{
    CallbackEvent, Details, Family, FileRef, LyricsVariant, MidiInstrument, MidiNote, SeparationType, Track,
};
pub use parse::{ParseError, parse_callback};
pub use signature::{
    HmacKey, HmacVerifier, SignatureError, TokenError, TokenVerifier, VerifierConfigError, sign,
};
pub use stage::{Stage, StageMerge, merge_stage};
pub use task_id::{TaskId, TaskIdError};
