//! [`JobState`]: where a prewarm job is. The jobs component (control) moves jobs between
//! states; status, the CLI and origins read them. Serialized in lowercase (`"filling"`).

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Filling,
    Ready,
    Failed,
    Expired,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Filling,
        JobState::Ready,
        JobState::Failed,
        JobState::Expired,
        JobState::Cancelled,
    ];

    /// No further change happens to a job in this state.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Failed | JobState::Expired | JobState::Cancelled)
    }

    /// Still wanted: neither cancelled nor expired (a failed job still counts, as a failure).
    pub fn is_live(self) -> bool {
        !matches!(self, JobState::Cancelled | JobState::Expired)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Filling => "filling",
            JobState::Ready => "ready",
            JobState::Failed => "failed",
            JobState::Expired => "expired",
            JobState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_agree() {
        for s in JobState::ALL {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<JobState>(&format!("\"{}\"", s.as_str())).unwrap(), s);
        }
        assert!(JobState::Failed.is_final() && JobState::Failed.is_live());
        assert!(!JobState::Cancelled.is_live() && !JobState::Filling.is_final());
    }
}
