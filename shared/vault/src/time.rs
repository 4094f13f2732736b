//! Time as a value: the functions that need "now" take one of these, the binaries read the clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Functions that work until their invocation's deadline stop taking new work this long
/// before it, leaving time to record what they did.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(10);

/// An instant, to the millisecond, since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Now {
    pub unix_ms: i64,
}

impl Now {
    pub fn from_unix_ms(unix_ms: i64) -> Now {
        Now { unix_ms }
    }

    /// Read the system clock. Only binaries and adapters call this.
    pub fn system() -> Now {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        Now { unix_ms: ms }
    }

    pub fn unix_seconds(self) -> i64 {
        self.unix_ms.div_euclid(1000)
    }

    pub fn plus(self, d: Duration) -> Now {
        Now { unix_ms: self.unix_ms.saturating_add(d.as_millis() as i64) }
    }

    /// RFC 3339 in UTC with milliseconds, e.g. `2026-11-23T15:00:00.123Z`: sortable and
    /// readable in the AWS console.
    pub fn rfc3339(self) -> String {
        let t = UNIX_EPOCH + Duration::from_millis(self.unix_ms.max(0) as u64);
        humantime::format_rfc3339_millis(t).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(Now::from_unix_ms(0).rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Now::from_unix_ms(1_763_910_000_123).rfc3339(), "2025-11-23T15:00:00.123Z");
        assert_eq!(Now::from_unix_ms(1_999).unix_seconds(), 1);
    }
}
