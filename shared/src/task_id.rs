//! Task ids, checked once so the rest of the system can use them as a DynamoDB key and as
//! one S3 key segment without further thought.
//!
//! # What is accepted
//!
//! 1 to [`TaskId::MAX_LEN`] bytes of printable ASCII letters, digits and `- _ . * ~ + = @ , : !`.
//! Real task ids are 32 hex digits; the documentation's example ids are masked with `*`
//! (`2fac****9f72`), and `*` is a legal S3 key character, so it is accepted. Everything that
//! could change the meaning of a key is refused: `/` and `\`, the segments `.` and `..` (and
//! any `..`), spaces, control characters, non-ASCII, and `%` (so no encoded form can hide one).

use serde::{Deserialize, Serialize};

/// A validated task id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaskId(String);

/// Why a string is not a task id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskIdError {
    #[error("task id is empty")]
    Empty,
    #[error("task id is {len} bytes long; at most {max} are accepted", max = TaskId::MAX_LEN)]
    TooLong { len: usize },
    #[error(
        "task id contains {found:?} at byte {at}; only ASCII letters, digits and - _ . * ~ + = @ , : ! are accepted"
    )]
    BadCharacter { found: char, at: usize },
    #[error("task id contains \"..\"; it could escape its S3 prefix")]
    DotDot,
    #[error("task id \".\" is not a usable S3 key segment")]
    Dot,
}

impl TaskId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(raw: &str) -> Result<TaskId, TaskIdError> {
        if raw.is_empty() {
            return Err(TaskIdError::Empty);
        }
        if raw.len() > Self::MAX_LEN {
            return Err(TaskIdError::TooLong { len: raw.len() });
        }
        if let Some((at, found)) = raw.char_indices().find(|&(_, c)| !Self::allowed(c)) {
            return Err(TaskIdError::BadCharacter { found, at });
        }
        if raw == "." {
            return Err(TaskIdError::Dot);
        }
        if raw.contains("..") {
            return Err(TaskIdError::DotDot);
        }
        Ok(TaskId(raw.to_owned()))
    }

    fn allowed(c: char) -> bool {
        c.is_ascii_alphanumeric() || "-_.*~+=@,:!".contains(c)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TaskId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TaskId {
    type Error = TaskIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        TaskId::parse(&s)
    }
}

impl From<TaskId> for String {
    fn from(id: TaskId) -> String {
        id.0
    }
}

impl std::str::FromStr for TaskId {
    type Err = TaskIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskId::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_and_documented_ids() {
        for ok in ["3e63b4cc88d52611159371f6af5571e7", "2fac****9f72", "task_id_5bbe7721119d", "a.b"] {
            assert_eq!(TaskId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_unsafe_ids_with_a_reason() {
        assert_eq!(TaskId::parse(""), Err(TaskIdError::Empty));
        assert_eq!(TaskId::parse(&"a".repeat(129)), Err(TaskIdError::TooLong { len: 129 }));
        assert!(TaskId::parse(&"a".repeat(128)).is_ok());
        assert_eq!(TaskId::parse("a/b"), Err(TaskIdError::BadCharacter { found: '/', at: 1 }));
        assert_eq!(TaskId::parse("a\nb"), Err(TaskIdError::BadCharacter { found: '\n', at: 1 }));
        assert_eq!(TaskId::parse("a b"), Err(TaskIdError::BadCharacter { found: ' ', at: 1 }));
        assert_eq!(TaskId::parse("%2e%2e"), Err(TaskIdError::BadCharacter { found: '%', at: 0 }));
        assert_eq!(TaskId::parse("é"), Err(TaskIdError::BadCharacter { found: 'é', at: 0 }));
        assert_eq!(TaskId::parse(".."), Err(TaskIdError::DotDot));
        assert_eq!(TaskId::parse("a..b"), Err(TaskIdError::DotDot));
        assert_eq!(TaskId::parse("."), Err(TaskIdError::Dot));
    }
}
