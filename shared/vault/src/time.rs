//! Time as a value: the functions that need "now" take a [`Timestamp`], the binaries read the
//! clock. The record's times are [`Timestamp`]s too, compared as time and stored as text.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::StoreError;

/// Functions that work until their invocation's deadline stop taking new work this long
/// before it, leaving time to record what they did.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(10);

/// How far ahead of a request's clock another's may be (clocks synchronised by NTP differ by
/// milliseconds): a time read further ahead was written by a hand (a digit too many), and is
/// not carried on (it would keep its task out of the sweeper's sight until then).
pub const MAX_CLOCK_LEAD: Duration = Duration::from_secs(3600);

/// The longest a best-effort call made inside that margin may take (a retry's delay, a
/// multipart upload's abort): one that hangs must not run the invocation into its timeout,
/// which answers nothing and sends its whole batch back after the visibility timeout.
pub const BEST_EFFORT_CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// `call`'s answer, or None when it gives none within [`BEST_EFFORT_CALL_TIMEOUT`].
pub async fn best_effort<T>(call: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(BEST_EFFORT_CALL_TIMEOUT, call).await.ok()
}

/// `call`'s answer, or [`StoreError::Unavailable`] (`no answer <what> within <budget>`) when it
/// gives none within `budget`: a stalled table, bucket or queue call fails like one that is
/// unavailable, rather than holding its caller past its deadline.
pub async fn answer_within<T>(
    budget: Duration,
    what: &str,
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let unanswered = || Err(StoreError::Unavailable(format!("no answer {what} within {}s", budget.as_secs())));
    tokio::time::timeout(budget, call).await.unwrap_or_else(|_| unanswered())
}

/// 9999-12-31T23:59:59.999Z in Unix ms: the last time RFC 3339 (four-digit years) can write.
pub(crate) const LAST_RFC3339_MS: i64 = 253_402_300_799_999;

/// An instant, to the millisecond, since the Unix epoch.
///
/// Stored (serde) and displayed as RFC 3339 in UTC with milliseconds, e.g.
/// `2026-11-23T15:00:00.123Z`: readable in the AWS console, and fixed-width, so DynamoDB's
/// text order of stored values (the `open-tasks` index) is their time order. Compared as time:
/// read back from any RFC 3339 UTC text (`2026-01-01T00:00:01Z` is before
/// `2026-01-01T00:00:01.500Z`, though as text it sorts after).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    pub unix_ms: i64,
}

impl Timestamp {
    pub fn from_unix_ms(unix_ms: i64) -> Timestamp {
        Timestamp { unix_ms }
    }

    /// Read the system clock. Only binaries and adapters call this.
    pub fn now() -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }

    fn from_system_time(t: SystemTime) -> Timestamp {
        let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Timestamp { unix_ms: ms }
    }

    pub fn unix_seconds(self) -> i64 {
        self.unix_ms.div_euclid(1000)
    }

    /// `d` later, saturating (never wrapping into the past).
    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp { unix_ms: self.unix_ms.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)) }
    }

    /// Whole seconds from `earlier` to this time (0 when this is not later).
    pub fn seconds_since(self, earlier: Timestamp) -> u64 {
        u64::try_from(self.unix_ms.saturating_sub(earlier.unix_ms) / 1000).unwrap_or(0)
    }

    /// `d` earlier (saturating, as [`Self::plus`]).
    pub fn minus(self, d: Duration) -> Timestamp {
        Timestamp { unix_ms: self.unix_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)) }
    }

    /// RFC 3339 in UTC with milliseconds, e.g. `2026-11-23T15:00:00.123Z`: sortable and
    /// readable in the AWS console. Times before 1970 or after 9999 are written as those
    /// bounds (RFC 3339 has four-digit years; a saturated time must not fail to print).
    pub fn rfc3339(self) -> String {
        let t = UNIX_EPOCH + Duration::from_millis(self.unix_ms.clamp(0, LAST_RFC3339_MS) as u64);
        humantime::format_rfc3339_millis(t).to_string()
    }
}

/// When a claim on a file ends, in whole Unix seconds: a file item's `lease_until` as the
/// table stores it (a number, which the claim conditions compare with the writer's clock,
/// `#lease < :now`, in the same unit). Its own type, so that no millisecond time is taken
/// for one (a lease a thousand times too long would hold a file for ages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseEnd {
    pub unix_seconds: i64,
}

impl LeaseEnd {
    pub fn from_unix_seconds(unix_seconds: i64) -> LeaseEnd {
        LeaseEnd { unix_seconds }
    }

    /// The lease ending at `t`, to the second below.
    pub fn at(t: Timestamp) -> LeaseEnd {
        LeaseEnd { unix_seconds: t.unix_seconds() }
    }

    /// Whether the claim still holds at `now`: to the end of its last second.
    pub fn holds_at(self, now: Timestamp) -> bool {
        self.unix_seconds >= now.unix_seconds()
    }

    /// Whether the claim ended before `now`'s second: what the table's `#lease < :now` says.
    pub fn lapsed_at(self, now: Timestamp) -> bool {
        !self.holds_at(now)
    }

    /// How long from `now` until the claim has lapsed (the next second after its last):
    /// nothing once it has.
    pub fn lapses_in(self, now: Timestamp) -> Duration {
        let left = self.unix_seconds.saturating_add(1).saturating_sub(now.unix_seconds());
        Duration::from_secs(u64::try_from(left).unwrap_or(0))
    }

    /// The lease's end as a time (its second's start).
    pub fn timestamp(self) -> Timestamp {
        Timestamp::from_unix_ms(self.unix_seconds.saturating_mul(1000))
    }

    /// `d` later, saturating, to the second below.
    pub fn plus(self, d: Duration) -> LeaseEnd {
        LeaseEnd { unix_seconds: self.unix_seconds.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)) }
    }
}

/// `span` has passed from `since` to `now`, or the clock went back before `since`.
pub fn passed_or_stepped_back(span: Duration, since: Timestamp, now: Timestamp) -> bool {
    now < since || now >= since.plus(span)
}

/// RFC 3339 in UTC (`Z` or `+00:00`), any precision of seconds; kept to the millisecond.
impl FromStr for Timestamp {
    type Err = humantime::TimestampError;

    fn from_str(text: &str) -> Result<Timestamp, Self::Err> {
        humantime::parse_rfc3339(text).map(Timestamp::from_system_time)
    }
}

/// As stored: [`Timestamp::rfc3339`].
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        struct Rfc3339;

        impl serde::de::Visitor<'_> for Rfc3339 {
            type Value = Timestamp;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 time in UTC, such as 2026-11-23T15:00:00.123Z")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Timestamp, E> {
                text.parse().map_err(|e| E::custom(format_args!("bad time {text:?}: {e}")))
            }
        }

        deserializer.deserialize_str(Rfc3339)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call that never answers fails as unavailable once its budget is spent, saying which
    /// call; one that answers in time is its answer.
    #[tokio::test(start_paused = true)]
    async fn a_call_without_an_answer_in_its_budget_is_unavailable() {
        let budget = Duration::from_secs(15);
        let started = tokio::time::Instant::now();
        let hung = answer_within(budget, "listing parked/", std::future::pending::<Result<(), StoreError>>()).await;
        assert_eq!(hung, Err(StoreError::Unavailable("no answer listing parked/ within 15s".into())));
        assert_eq!(started.elapsed(), budget);
        assert_eq!(answer_within(budget, "x", async { Ok::<_, StoreError>(7) }).await, Ok(7));
    }

    /// A lease holds to the end of its second and has lapsed from the next: the table's
    /// condition (`#lease < :now`, both in seconds) and the readers agree.
    #[test]
    fn a_lease_holds_to_the_end_of_its_second() {
        let lease = LeaseEnd::at(Timestamp::from_unix_ms(1_800_000_000_999));
        assert_eq!(lease.unix_seconds, 1_800_000_000);
        assert!(lease.holds_at(Timestamp::from_unix_ms(1_800_000_000_999)));
        assert!(lease.lapsed_at(Timestamp::from_unix_ms(1_800_000_001_000)));
        assert!(!lease.lapsed_at(Timestamp::from_unix_ms(1_799_999_999_000)));
        assert_eq!(lease.plus(Duration::from_millis(2_999)).unix_seconds, 1_800_000_002);
        assert_eq!(lease.timestamp(), Timestamp::from_unix_ms(1_800_000_000_000));
        assert_eq!(lease.lapses_in(Timestamp::from_unix_ms(1_799_999_990_500)), Duration::from_secs(11));
        assert_eq!(lease.lapses_in(Timestamp::from_unix_ms(1_800_000_001_000)), Duration::ZERO);
        assert_eq!(LeaseEnd::from_unix_seconds(i64::MAX).plus(Duration::from_secs(1)).unix_seconds, i64::MAX);
        assert_eq!(serde_json::to_value(lease).unwrap(), serde_json::json!(1_800_000_000));
        assert_eq!(serde_json::from_value::<LeaseEnd>(serde_json::json!(7)).unwrap(), LeaseEnd::from_unix_seconds(7));
    }

    #[test]
    fn far_times_saturate_and_print() {
        let far = Timestamp::from_unix_ms(0).plus(Duration::from_millis(u64::MAX));
        assert_eq!(far.unix_ms, i64::MAX);
        assert_eq!(Timestamp::from_unix_ms(0).minus(Duration::from_millis(u64::MAX)).unix_ms, -i64::MAX);
        assert_eq!(Timestamp::from_unix_ms(5_000).minus(Duration::from_secs(2)).unix_ms, 3_000);
        assert_eq!(far.rfc3339(), "9999-12-31T23:59:59.999Z");
        assert_eq!(Timestamp::from_unix_ms(LAST_RFC3339_MS).rfc3339(), "9999-12-31T23:59:59.999Z");
        assert_eq!(Timestamp::from_unix_ms(-5).rfc3339(), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(Timestamp::from_unix_ms(0).rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp::from_unix_ms(1_763_910_000_123).rfc3339(), "2025-11-23T15:00:00.123Z");
        assert_eq!(Timestamp::from_unix_ms(1_999).unix_seconds(), 1);
    }

    #[test]
    fn displays_and_serialises_as_stored() {
        let t = Timestamp::from_unix_ms(1_763_910_000_123);
        assert_eq!(t.to_string(), "2025-11-23T15:00:00.123Z");
        assert_eq!(serde_json::to_value(t).unwrap(), serde_json::json!("2025-11-23T15:00:00.123Z"));
        assert_eq!(serde_json::from_value::<Timestamp>(serde_json::json!("2025-11-23T15:00:00.123Z")).unwrap(), t);
    }

    #[test]
    fn reads_any_rfc3339_utc_time_to_the_millisecond() {
        let read = |text: &str| serde_json::from_value::<Timestamp>(serde_json::json!(text)).unwrap();
        assert_eq!(read("2025-11-23T15:00:00Z"), Timestamp::from_unix_ms(1_763_910_000_000));
        assert_eq!(read("2025-11-23T15:00:00.1239Z"), Timestamp::from_unix_ms(1_763_910_000_123));
        assert_eq!(read("2025-11-23T15:00:00.123+00:00"), Timestamp::from_unix_ms(1_763_910_000_123));
        // Written back in the one stored form.
        assert_eq!(read("2025-11-23T15:00:00Z").rfc3339(), "2025-11-23T15:00:00.000Z");
    }

    #[test]
    fn orders_as_time_not_text() {
        let read = |text: &str| serde_json::from_value::<Timestamp>(serde_json::json!(text)).unwrap();
        // Within one second, a time written without millis sorts after every time with them
        // as text (`Z` > `.`), though it is the earliest.
        let (whole, half_past) = ("2026-01-01T00:00:01Z", "2026-01-01T00:00:01.500Z");
        assert!(whole > half_past, "as text");
        assert!(read(whole) < read(half_past));
        assert_eq!(read(half_past).unix_ms - read(whole).unix_ms, 500);
        assert!(read("2026-01-01T00:00:01Z") > read("2026-01-01T00:00:00.999Z"));
        assert_eq!(read(whole).max(read(half_past)).rfc3339(), half_past);
    }

    #[test]
    fn a_malformed_time_is_a_serde_error() {
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00.000Z",
            "2026-01-01 00:00:00.000",
            "2026-01-01T00:00:00.000+01:00",
            "1969-12-31T23:59:59.999Z",
        ] {
            let read = serde_json::from_value::<Timestamp>(serde_json::json!(bad));
            assert!(read.is_err(), "{bad:?} read as {read:?}");
        }
        assert!(serde_json::from_value::<Timestamp>(serde_json::json!(1_763_910_000_123_i64)).is_err());
    }
}
