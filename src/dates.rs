//! Days and times as the runner spells them: Arrow's `Date32` (days since the Unix epoch),
//! event days from epoch milliseconds, the `YYYY-MM-DD` of a Hive partition, and the logical
//! times the command line takes. One home, so a partition day means the same everywhere.

use chrono::{DateTime, NaiveDate, Utc};

/// Milliseconds in a UTC day: event times are epoch milliseconds, event days are whole days.
pub const MS_PER_DAY: i64 = 86_400_000;

/// The Unix epoch as a date.
fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch is a date")
}

/// Days since the Unix epoch: Arrow's `Date32`.
pub fn date32(d: NaiveDate) -> i32 {
    (d - epoch()).num_days() as i32
}

/// The UTC day (as `Date32`) of an epoch-millisecond time.
pub fn day_of_ms(ms: i64) -> i32 {
    ms.div_euclid(MS_PER_DAY) as i32
}

/// A `Date32` as a Hive partition value: `2026-11-20`.
pub fn day_string(day: i32) -> String {
    DateTime::<Utc>::from_timestamp_millis(i64::from(day) * MS_PER_DAY)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1970-01-01".into())
}

/// Midnight UTC at the start of `d`.
pub fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

/// Midnight UTC of `d` in epoch milliseconds.
pub fn midnight_ms(d: NaiveDate) -> i64 {
    midnight(d).timestamp_millis()
}

/// A logical time from the command line: `YYYY-MM-DD` (midnight UTC) or RFC 3339.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(d) = s.parse::<NaiveDate>() {
        return Ok(midnight(d));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("`{s}` is not a date (YYYY-MM-DD) or an RFC 3339 time (2026-11-20T13:05:00Z): {e}"))
}

/// The days from `from` to `to`, both included.
pub fn days_between(from: NaiveDate, to: NaiveDate) -> Vec<NaiveDate> {
    from.iter_days().take_while(|d| *d <= to).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip_through_date32_and_milliseconds() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        assert_eq!(day_string(date32(d)), "2026-11-20");
        assert_eq!(day_of_ms(midnight_ms(d)), date32(d));
        assert_eq!(day_of_ms(midnight_ms(d) - 1), date32(d) - 1, "the millisecond before midnight is the day before");
        assert_eq!(day_of_ms(-1), -1, "before the epoch rounds down, not towards zero");
        assert_eq!(parse_time("2026-11-20").unwrap(), midnight(d));
        assert_eq!(parse_time("2026-11-20T13:05:00+01:00").unwrap().to_rfc3339(), "2026-11-20T12:05:00+00:00");
        assert!(parse_time("20 Nov").unwrap_err().contains("RFC 3339"));
        assert_eq!(days_between(d, d.succ_opt().unwrap()).len(), 2);
        assert!(days_between(d.succ_opt().unwrap(), d).is_empty());
    }
}
