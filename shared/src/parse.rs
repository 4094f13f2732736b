//! Raw callback bytes to one [`CallbackEvent`].

use crate::{CallbackEvent, TaskIdError};

/// Why a body is not a usable callback.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    #[error("body is JSON but not an object")]
    NotAnObject,
    #[error("no task id found (looked at data.task_id, data.taskId, task_id, taskId)")]
    NoTaskId,
    #[error("invalid task id: {0}")]
    InvalidTaskId(#[from] TaskIdError),
}

/// Parse one callback body.
pub fn parse_callback(body: &[u8]) -> Result<CallbackEvent, ParseError> {
    let _ = body;
    todo!("parser")
}
