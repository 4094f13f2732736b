//! Stage ordering: `submitted` < `text` < `first` < `complete`; `error` and `final` end a task.

use serde::{Deserialize, Serialize};

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Registered by its owner before any callback (`PUT /tasks/{id}`): no callback or poll
    /// ever produces it, and every other stage moves a task on from it.
    Submitted,
    Text,
    First,
    Complete,
    Error,
    /// The single callback of a family without stages.
    Final,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Submitted => "submitted",
            Stage::Text => "text",
            Stage::First => "first",
            Stage::Complete => "complete",
            Stage::Error => "error",
            Stage::Final => "final",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "submitted" => Stage::Submitted,
            "text" => Stage::Text,
            "first" => Stage::First,
            "complete" => Stage::Complete,
            "error" => Stage::Error,
            "final" => Stage::Final,
            other => return Err(format!("unknown stage {other:?}")),
        })
    }
}

/// The result of merging an incoming stage into what is known of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageMerge {
    /// The task's stage after the merge.
    pub stage: Stage,
    /// Whether the incoming event moved the task (so its code and message become the task's).
    pub advanced: bool,
}

/// Merge `incoming` into `current` (None for a task not seen yet). Never moves backwards.
pub fn merge_stage(current: Option<Stage>, incoming: Stage) -> StageMerge {
    match current {
        Some(now) if incoming.rank() <= now.rank() => StageMerge { stage: now, advanced: false },
        _ => StageMerge { stage: incoming, advanced: true },
    }
}

impl Stage {
    /// `submitted` < `text` < `first` < every stage that ends a task. Ends are never left: once a task is
    /// `complete`, `error` or `final`, a later event changes its files and history, not its stage.
    pub fn rank(self) -> u8 {
        match self {
            Stage::Submitted => 0,
            Stage::Text => 1,
            Stage::First => 2,
            Stage::Complete | Stage::Error | Stage::Final => 3,
        }
    }

    /// Whether the task has ended at this stage.
    pub fn is_terminal(self) -> bool {
        self.rank() == 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Stage::*;

    #[test]
    fn new_task_takes_any_stage() {
        for s in [Text, First, Complete, Error, Final] {
            assert_eq!(merge_stage(None, s), StageMerge { stage: s, advanced: true });
        }
    }

    #[test]
    fn moves_forward_only() {
        assert_eq!(merge_stage(Some(Text), First), StageMerge { stage: First, advanced: true });
        assert_eq!(merge_stage(Some(First), Complete), StageMerge { stage: Complete, advanced: true });
        assert_eq!(merge_stage(Some(Text), Error), StageMerge { stage: Error, advanced: true });
        assert_eq!(merge_stage(Some(First), Text), StageMerge { stage: First, advanced: false });
        assert_eq!(merge_stage(Some(First), First), StageMerge { stage: First, advanced: false });
    }

    #[test]
    fn a_registered_task_moves_on_with_any_stage_and_never_back() {
        for s in [Text, First, Complete, Error, Final] {
            assert_eq!(merge_stage(Some(Submitted), s), StageMerge { stage: s, advanced: true });
            assert_eq!(merge_stage(Some(s), Submitted), StageMerge { stage: s, advanced: false });
        }
        assert!(!Submitted.is_terminal());
        assert_eq!("submitted".parse::<Stage>(), Ok(Submitted));
        assert_eq!(Submitted.to_string(), "submitted");
    }

    #[test]
    fn ends_are_never_left() {
        for end in [Complete, Error, Final] {
            for s in [Text, First, Complete, Error, Final] {
                assert_eq!(merge_stage(Some(end), s), StageMerge { stage: end, advanced: false });
            }
        }
    }
}
