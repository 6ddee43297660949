//! EventBridge schedule expressions: `cron(...)`, `rate(...)`, `at(...)`, parsed with the rules
//! EventBridge enforces, and their fire times in an IANA time zone.
//!
//! `cron(Minutes Hours Day-of-month Month Day-of-week Year)`: `*`, `?`, ranges, lists, steps
//! (`0/5`, `*/10`, `10-50/20`), `L` (last day of the month; `5L` the last Thursday), `W`
//! (`15W`, the weekday nearest the 15th), `#` (`3#2`, the second Tuesday; one per expression),
//! month names `JAN-DEC`, weekday names `SUN-SAT` with **1 = Sunday**, years 1970-2199. One of
//! day-of-month and day-of-week must be `?`.
//!
//! Time zones: fire times are wall-clock times in the schedule's zone. In spring a time that
//! does not exist is skipped; in autumn a repeated time fires once (at its first occurrence), as
//! EventBridge Scheduler does. `rate(...)` counts from the Unix epoch in UTC (every 5 minutes
//! fires at :00, :05, ...), so every process agrees on the periods; `at(...)` fires once.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;

/// A parsed schedule expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Cron(Box<Cron>),
    /// Every `n` seconds.
    Rate(i64),
    At(NaiveDateTime),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: BTreeSet<u32>,
    hours: BTreeSet<u32>,
    dom: DayOfMonth,
    months: BTreeSet<u32>,
    dow: DayOfWeek,
    years: BTreeSet<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DayOfMonth {
    Any,
    Days(BTreeSet<u32>),
    Last,
    /// `LW`: the last weekday (Monday to Friday) of the month.
    LastWeekday,
    /// The weekday nearest this day, within the month.
    NearestWeekday(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DayOfWeek {
    Any,
    /// EventBridge numbering: 1 = Sunday ... 7 = Saturday.
    Days(BTreeSet<u32>),
    /// The last such weekday of the month (`6L`).
    Last(u32),
    /// The nth such weekday of the month (`3#2`).
    Nth(u32, u32),
}

/// A parse error: which field and what is allowed there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    pub expr: String,
    pub message: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.expr, self.message)
    }
}

impl std::error::Error for ExprError {}

const FIELDS: [&str; 6] = ["minutes", "hours", "day-of-month", "month", "day-of-week", "year"];
const MONTHS: [&str; 12] = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

pub fn parse(text: &str) -> Result<Expr, ExprError> {
    let t = text.trim();
    let err = |m: String| ExprError { expr: t.to_string(), message: m };
    let inner = |prefix: &str| t.strip_prefix(prefix).and_then(|r| r.strip_suffix(')'));
    if let Some(body) = inner("cron(") {
        parse_cron(body).map(|c| Expr::Cron(Box::new(c))).map_err(err)
    } else if let Some(body) = inner("rate(") {
        parse_rate(body).map(Expr::Rate).map_err(err)
    } else if let Some(body) = inner("at(") {
        NaiveDateTime::parse_from_str(body.trim(), "%Y-%m-%dT%H:%M:%S")
            .map(Expr::At)
            .map_err(|_| err(format!("`{body}` is not a time: write at(yyyy-mm-ddThh:mm:ss), e.g. at(2026-12-01T00:00:00)")))
    } else {
        Err(err("a schedule is cron(...), rate(...) or at(...)".into()))
    }
}

fn parse_rate(body: &str) -> Result<i64, String> {
    let parts: Vec<&str> = body.split_whitespace().collect();
    let [value, unit] = parts[..] else {
        return Err("write rate(<value> <unit>), e.g. rate(5 minutes) or rate(1 hour)".into());
    };
    let n: i64 =
        value.parse().ok().filter(|n| *n > 0).ok_or_else(|| format!("rate value `{value}` must be a positive whole number"))?;
    let (secs, singular) = match unit {
        "minute" | "minutes" => (60, "minute"),
        "hour" | "hours" => (3600, "hour"),
        "day" | "days" => (86_400, "day"),
        other => return Err(format!("rate unit `{other}`: use minute(s), hour(s) or day(s)")),
    };
    match (n == 1, unit == singular) {
        (true, false) => Err(format!("a rate of 1 takes the singular unit: rate(1 {singular})")),
        (false, true) => Err(format!("a rate above 1 takes the plural unit: rate({n} {singular}s)")),
        _ => Ok(n * secs),
    }
}

fn parse_cron(body: &str) -> Result<Cron, String> {
    let f: Vec<&str> = body.split_whitespace().collect();
    if f.len() != 6 {
        return Err(format!(
            "cron takes 6 fields (minutes hours day-of-month month day-of-week year), got {}: e.g. cron(0/5 * * * ? *)",
            f.len()
        ));
    }
    let field_err = |i: usize, m: String| format!("field {} ({}) `{}`: {m}", i + 1, FIELDS[i], f[i]);
    let minutes = values(f[0], 0, 59, &[]).map_err(|m| field_err(0, m))?;
    let hours = values(f[1], 0, 23, &[]).map_err(|m| field_err(1, m))?;
    let months = values(f[3], 1, 12, &MONTHS).map_err(|m| field_err(3, m))?;
    let years: BTreeSet<i32> =
        values(f[5], 1970, 2199, &[]).map_err(|m| field_err(5, m))?.into_iter().map(|y| y as i32).collect();
    if f[2] == "?" && f[4] == "?" {
        return Err("day-of-month and day-of-week cannot both be `?`: give one of them (e.g. `*` for day-of-month)".into());
    }
    if f[2] != "?" && f[4] != "?" {
        return Err(format!(
            "day-of-month (`{}`) and day-of-week (`{}`) cannot both be specified: write `?` in one of them",
            f[2], f[4]
        ));
    }
    let dom = if f[2] == "?" {
        DayOfMonth::Any
    } else if f[2] == "L" {
        DayOfMonth::Last
    } else if f[2].eq_ignore_ascii_case("LW") {
        DayOfMonth::LastWeekday
    } else if let Some(d) = f[2].strip_suffix('W') {
        let d: u32 = d
            .parse()
            .ok()
            .filter(|d| (1..=31).contains(d))
            .ok_or_else(|| field_err(2, "W takes one day of the month, e.g. 15W (the weekday nearest the 15th)".into()))?;
        DayOfMonth::NearestWeekday(d)
    } else {
        DayOfMonth::Days(values(f[2], 1, 31, &[]).map_err(|m| field_err(2, m))?)
    };
    let dow = if f[4] == "?" {
        DayOfWeek::Any
    } else if f[4].matches('#').count() > 0 {
        if f[4].contains(',') || f[4].matches('#').count() > 1 {
            return Err(field_err(4, "only one `#` is allowed in an expression, and not in a list".into()));
        }
        let (d, n) = f[4].split_once('#').expect("has #");
        let d = one(d, 1, 7, &DAYS).map_err(|m| field_err(4, m))?;
        let n: u32 =
            n.parse().ok().filter(|n| (1..=5).contains(n)).ok_or_else(|| field_err(4, "the n of d#n is 1 to 5".into()))?;
        DayOfWeek::Nth(d, n)
    } else if f[4] == "L" {
        // `L` alone is the last day of the week (EventBridge: "the last day of the month or
        // week"): every Saturday, not the last Saturday of the month (that is `7L`).
        DayOfWeek::Days(BTreeSet::from([7]))
    } else if let Some(d) = f[4].strip_suffix('L') {
        DayOfWeek::Last(one(d, 1, 7, &DAYS).map_err(|m| field_err(4, m))?)
    } else {
        DayOfWeek::Days(values(f[4], 1, 7, &DAYS).map_err(|m| field_err(4, m))?)
    };
    Ok(Cron { minutes, hours, dom, months, dow, years })
}

/// One value: a number in range or a name (`JAN`, `MON`), case-insensitive.
fn one(s: &str, lo: u32, hi: u32, names: &[&str]) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(i as u32 + lo);
    }
    let v: u32 = s.parse().map_err(|_| {
        if names.is_empty() {
            format!("`{s}` is not a number ({lo}-{hi} allowed)")
        } else {
            format!("`{s}` is not a number ({lo}-{hi}) or a name ({}-{})", names[0], names[names.len() - 1])
        }
    })?;
    if !(lo..=hi).contains(&v) {
        return Err(format!("{v} is out of range: {lo}-{hi} allowed"));
    }
    Ok(v)
}

/// A list of `*`, values, ranges and steps.
fn values(field: &str, lo: u32, hi: u32, names: &[&str]) -> Result<BTreeSet<u32>, String> {
    let mut out = BTreeSet::new();
    for item in field.split(',') {
        if item.is_empty() {
            return Err("an empty list item".into());
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s.parse().ok().filter(|s| *s > 0).ok_or_else(|| format!("step `{s}` must be a positive number"))?;
                (r, Some(s))
            }
            None => (item, None),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (one(a, lo, hi, names)?, one(b, lo, hi, names)?);
            if a > b {
                return Err(format!("range {a}-{b} runs backwards"));
            }
            (a, b)
        } else {
            let a = one(range, lo, hi, names)?;
            // `0/5`: from 0 to the end in steps of 5.
            (a, if step.is_some() { hi } else { a })
        };
        out.extend((a..=b).step_by(step.unwrap_or(1) as usize));
    }
    Ok(out)
}

impl Expr {
    /// The first fire time strictly after `after`, or `None` when there is none (an `at` in the
    /// past, a cron whose years are over).
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        match self {
            Expr::Rate(secs) => {
                let t = after.timestamp().div_euclid(*secs) * secs + secs;
                DateTime::from_timestamp(t, 0)
            }
            Expr::At(local) => resolve(tz, *local).filter(|t| *t > after),
            Expr::Cron(c) => c.next_after(after, tz),
        }
    }

    /// The fire times in `(from, to]`, at most `limit` of them, oldest first.
    pub fn fire_times(&self, from: DateTime<Utc>, to: DateTime<Utc>, tz: Tz, limit: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = from;
        while out.len() < limit {
            match self.next_after(t, tz) {
                Some(n) if n <= to => {
                    out.push(n);
                    t = n;
                }
                _ => break,
            }
        }
        out
    }
}

/// A wall-clock time in `tz` as an instant: skipped in a spring gap, the first occurrence when
/// autumn repeats it.
fn resolve(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        LocalResult::None => None,
    }
}

impl Cron {
    fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let start = after.with_timezone(&tz).naive_local();
        let mut day = start.date();
        // Bounded: a valid expression fires at least once in 8 years (29 February).
        for _ in 0..(366 * 8) {
            if day.year() > 2199 {
                return None;
            }
            if self.years.contains(&day.year()) && self.months.contains(&day.month()) && self.day_matches(day) {
                for &h in &self.hours {
                    for &m in &self.minutes {
                        let local = day.and_time(NaiveTime::from_hms_opt(h, m, 0)?);
                        if local < start.with_second(0)? {
                            continue;
                        }
                        if let Some(t) = resolve(tz, local).filter(|t| *t > after) {
                            return Some(t);
                        }
                    }
                }
            }
            day = day.succ_opt()?;
        }
        None
    }

    fn day_matches(&self, d: NaiveDate) -> bool {
        let last = last_day(d);
        let dom_ok = match &self.dom {
            DayOfMonth::Any => true,
            DayOfMonth::Days(s) => s.contains(&d.day()),
            DayOfMonth::Last => d.day() == last,
            DayOfMonth::LastWeekday => {
                let end = NaiveDate::from_ymd_opt(d.year(), d.month(), last).expect("in month");
                let back = match end.weekday() {
                    Weekday::Sat => 1,
                    Weekday::Sun => 2,
                    _ => 0,
                };
                d == end - Duration::days(back)
            }
            DayOfMonth::NearestWeekday(n) => {
                let target = NaiveDate::from_ymd_opt(d.year(), d.month(), (*n).min(last)).expect("in month");
                nearest_weekday(target) == d
            }
        };
        // EventBridge numbering: Sunday = 1.
        let dow = d.weekday().num_days_from_sunday() + 1;
        let dow_ok = match &self.dow {
            DayOfWeek::Any => true,
            DayOfWeek::Days(s) => s.contains(&dow),
            DayOfWeek::Last(w) => *w == dow && d.day() + 7 > last,
            DayOfWeek::Nth(w, n) => *w == dow && (d.day() - 1) / 7 + 1 == *n,
        };
        dom_ok && dow_ok
    }
}

impl Cron {
    /// The five fields of a Unix crontab line, when cron can say the same thing.
    pub fn unix_fields(&self) -> Result<String, String> {
        if self.years.len() != 230 {
            return Err("the year field (crontab has none)".into());
        }
        let dom = match &self.dom {
            DayOfMonth::Any => "*".to_string(),
            DayOfMonth::Days(s) => unix_list(s, 1, 31),
            DayOfMonth::Last => return Err("`L` (last day of the month)".into()),
            DayOfMonth::LastWeekday => return Err("`LW` (last weekday of the month)".into()),
            DayOfMonth::NearestWeekday(_) => return Err("`W` (nearest weekday)".into()),
        };
        let dow = match &self.dow {
            DayOfWeek::Any => "*".to_string(),
            // Unix cron counts Sunday as 0.
            DayOfWeek::Days(s) => unix_list(&s.iter().map(|d| d - 1).collect(), 0, 6),
            DayOfWeek::Last(_) => return Err("`L` (last weekday of the month)".into()),
            DayOfWeek::Nth(..) => return Err("`#` (nth weekday of the month)".into()),
        };
        Ok(format!(
            "{} {} {dom} {} {dow}",
            unix_list(&self.minutes, 0, 59),
            unix_list(&self.hours, 0, 23),
            unix_list(&self.months, 1, 12)
        ))
    }
}

/// `*`, `*/k`, `a-b/k`, `a-b` or a list, whichever says the set.
fn unix_list(s: &BTreeSet<u32>, lo: u32, hi: u32) -> String {
    let v: Vec<u32> = s.iter().copied().collect();
    if v.len() == (hi - lo + 1) as usize {
        return "*".into();
    }
    if v.len() >= 3 {
        let k = v[1] - v[0];
        let regular = v.windows(2).all(|w| w[1] - w[0] == k);
        if regular && v[v.len() - 1] + k > hi {
            return if v[0] == lo { format!("*/{k}") } else { format!("{}-{hi}/{k}", v[0]) };
        }
        if regular && k == 1 {
            return format!("{}-{}", v[0], v[v.len() - 1]);
        }
    }
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

fn last_day(d: NaiveDate) -> u32 {
    let (y, m) = if d.month() == 12 { (d.year() + 1, 1) } else { (d.year(), d.month() + 1) };
    NaiveDate::from_ymd_opt(y, m, 1).expect("first of month").pred_opt().expect("a day before").day()
}

/// The weekday nearest `d`, without leaving its month (as Quartz and EventBridge define `W`).
fn nearest_weekday(d: NaiveDate) -> NaiveDate {
    match d.weekday() {
        Weekday::Sat if d.day() == 1 => d + Duration::days(2),
        Weekday::Sat => d - Duration::days(1),
        Weekday::Sun if d.day() == last_day(d) => d - Duration::days(2),
        Weekday::Sun => d + Duration::days(1),
        _ => d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next_n(expr: &str, after: &str, tz: &str, n: usize) -> Vec<String> {
        let e = parse(expr).unwrap();
        let tz: Tz = tz.parse().unwrap();
        let mut t = utc(after);
        let mut out = Vec::new();
        for _ in 0..n {
            t = e.next_after(t, tz).unwrap();
            out.push(t.with_timezone(&tz).format("%Y-%m-%d %H:%M %a %Z").to_string());
        }
        out
    }

    #[test]
    fn examples_from_the_eventbridge_documentation() {
        let u = "UTC";
        // 10:15 UTC every day.
        assert_eq!(
            next_n("cron(15 10 * * ? *)", "2026-11-20T11:00:00Z", u, 2),
            ["2026-11-21 10:15 Sat UTC", "2026-11-22 10:15 Sun UTC"]
        );
        // 18:00 Monday to Friday.
        assert_eq!(
            next_n("cron(0 18 ? * MON-FRI *)", "2026-11-20T19:00:00Z", u, 2),
            ["2026-11-23 18:00 Mon UTC", "2026-11-24 18:00 Tue UTC"]
        );
        // 8:00 on the first day of the month.
        assert_eq!(
            next_n("cron(0 8 1 * ? *)", "2026-11-20T00:00:00Z", u, 2),
            ["2026-12-01 08:00 Tue UTC", "2027-01-01 08:00 Fri UTC"]
        );
        // Every 10 minutes on weekdays.
        assert_eq!(
            next_n("cron(0/10 * ? * MON-FRI *)", "2026-11-20T23:45:00Z", u, 3),
            ["2026-11-20 23:50 Fri UTC", "2026-11-23 00:00 Mon UTC", "2026-11-23 00:10 Mon UTC"]
        );
        // Every 5 minutes between 8:00 and 17:55 on weekdays.
        assert_eq!(
            next_n("cron(0/5 8-17 ? * MON-FRI *)", "2026-11-20T17:52:00Z", u, 2),
            ["2026-11-20 17:55 Fri UTC", "2026-11-23 08:00 Mon UTC"]
        );
        // 9:00 on the first Monday of each month.
        assert_eq!(
            next_n("cron(0 9 ? * 2#1 *)", "2026-11-20T00:00:00Z", u, 2),
            ["2026-12-07 09:00 Mon UTC", "2027-01-04 09:00 Mon UTC"]
        );
        // Last day of the month, last Friday, nearest weekday.
        assert_eq!(
            next_n("cron(0 0 L * ? *)", "2026-11-20T00:00:00Z", u, 3),
            ["2026-11-30 00:00 Mon UTC", "2026-12-31 00:00 Thu UTC", "2027-01-31 00:00 Sun UTC"]
        );
        assert_eq!(
            next_n("cron(0 12 ? * 6L 2026)", "2026-11-01T00:00:00Z", u, 2),
            ["2026-11-27 12:00 Fri UTC", "2026-12-25 12:00 Fri UTC"]
        );
        // `L` alone in day-of-week: the last day of every week, Saturday.
        assert_eq!(
            next_n("cron(0 9 ? * L *)", "2026-11-20T00:00:00Z", u, 3),
            ["2026-11-21 09:00 Sat UTC", "2026-11-28 09:00 Sat UTC", "2026-12-05 09:00 Sat UTC"]
        );
        // `LW`: the last weekday of the month (2027-01-31 is a Sunday, so Friday the 29th).
        assert_eq!(
            next_n("cron(0 18 LW * ? *)", "2026-11-01T00:00:00Z", u, 3),
            ["2026-11-30 18:00 Mon UTC", "2026-12-31 18:00 Thu UTC", "2027-01-29 18:00 Fri UTC"]
        );
        // 2026-11-15 is a Sunday: the nearest weekday is Monday the 16th; 2027-05-01 is a Saturday, so Monday the 3rd.
        assert_eq!(next_n("cron(0 6 15W * ? *)", "2026-11-01T00:00:00Z", u, 1), ["2026-11-16 06:00 Mon UTC"]);
        assert_eq!(next_n("cron(0 6 1W MAY ? *)", "2027-04-01T00:00:00Z", u, 1), ["2027-05-03 06:00 Mon UTC"]);
        // Lists, names, years.
        assert_eq!(
            next_n("cron(30 6,18 ? JAN,JUL SUN 2027-2028)", "2026-11-20T00:00:00Z", u, 2),
            ["2027-01-03 06:30 Sun UTC", "2027-01-03 18:30 Sun UTC"]
        );
        assert_eq!(
            parse("cron(0 0 1 1 ? 1969)").unwrap_err().message,
            "field 6 (year) `1969`: 1969 is out of range: 1970-2199 allowed"
        );
        // A schedule whose years are over never fires again.
        assert_eq!(parse("cron(0 0 1 1 ? 2020)").unwrap().next_after(utc("2026-01-01T00:00:00Z"), Tz::UTC), None);
    }

    #[test]
    fn cron_lines_for_crontab() {
        let f = |e: &str| match parse(e).unwrap() {
            Expr::Cron(c) => c.unix_fields(),
            _ => unreachable!(),
        };
        assert_eq!(f("cron(0/5 * * * ? *)").unwrap(), "*/5 * * * *");
        assert_eq!(f("cron(10 2 ? * MON-FRI *)").unwrap(), "10 2 * * 1-5");
        assert_eq!(f("cron(0 8 1,15 * ? *)").unwrap(), "0 8 1,15 * *");
        assert!(f("cron(0 0 L * ? *)").unwrap_err().contains("`L`"));
        assert!(f("cron(0 0 ? * 2#1 *)").unwrap_err().contains("`#`"));
        assert!(f("cron(0 0 1 1 ? 2027)").unwrap_err().contains("year"));
    }

    #[test]
    fn rates_and_at() {
        assert_eq!(
            next_n("rate(5 minutes)", "2026-11-20T13:02:10Z", "UTC", 2),
            ["2026-11-20 13:05 Fri UTC", "2026-11-20 13:10 Fri UTC"]
        );
        assert_eq!(next_n("rate(1 hour)", "2026-11-20T13:00:00Z", "UTC", 1), ["2026-11-20 14:00 Fri UTC"]);
        assert_eq!(next_n("rate(1 day)", "2026-11-20T13:00:00Z", "UTC", 1), ["2026-11-21 00:00 Sat UTC"]);
        let e = parse("at(2026-12-01T00:00:00)").unwrap();
        let tz: Tz = "Europe/Paris".parse().unwrap();
        assert_eq!(e.next_after(utc("2026-11-20T00:00:00Z"), tz), Some(utc("2026-11-30T23:00:00Z")));
        assert_eq!(e.next_after(utc("2026-12-01T00:00:00Z"), tz), None);
    }

    #[test]
    fn invalid_expressions_name_the_field_and_what_is_allowed() {
        for (expr, msg) in [
            ("cron(0 25 * * ? *)", "field 2 (hours) `25`: 25 is out of range: 0-23 allowed"),
            ("cron(60 * * * ? *)", "field 1 (minutes) `60`: 60 is out of range: 0-59 allowed"),
            ("cron(0 0 * * * *)", "day-of-month (`*`) and day-of-week (`*`) cannot both be specified: write `?` in one of them"),
            ("cron(0 0 ? * ? *)", "day-of-month and day-of-week cannot both be `?`"),
            ("cron(0 0 * * ?)", "cron takes 6 fields (minutes hours day-of-month month day-of-week year), got 5"),
            ("cron(0 0 ? FOO * *)", "field 4 (month) `FOO`: `FOO` is not a number (1-12) or a name (JAN-DEC)"),
            ("cron(0 0 ? * 0 *)", "field 5 (day-of-week) `0`: 0 is out of range: 1-7 allowed"),
            ("cron(0 0 ? * 2#1,3#1 *)", "only one `#` is allowed"),
            ("cron(0 0 ? * 2#6 *)", "the n of d#n is 1 to 5"),
            ("cron(0/0 * * * ? *)", "step `0` must be a positive number"),
            ("cron(0 10-5 * * ? *)", "range 10-5 runs backwards"),
            ("rate(1 minutes)", "a rate of 1 takes the singular unit: rate(1 minute)"),
            ("rate(5 minute)", "a rate above 1 takes the plural unit: rate(5 minutes)"),
            ("rate(0 hours)", "rate value `0` must be a positive whole number"),
            ("rate(5 weeks)", "rate unit `weeks`: use minute(s), hour(s) or day(s)"),
            ("at(2026-12-01 00:00)", "is not a time: write at(yyyy-mm-ddThh:mm:ss)"),
            ("every 5 minutes", "a schedule is cron(...), rate(...) or at(...)"),
        ] {
            let e = parse(expr).unwrap_err();
            assert!(e.message.contains(msg), "{expr}: got `{}`", e.message);
        }
        assert!(parse("cron(0/5 * * * ? *)").is_ok());
        assert!(parse("cron(0 9 ? * mon-fri *)").is_ok(), "names are case-insensitive");
    }

    #[test]
    fn daylight_saving_spring_forward_skips_and_fall_back_fires_once() {
        // New York: 2026-03-08 02:00 -> 03:00; 2026-11-01 02:00 -> 01:00.
        let ny = "America/New_York";
        // 02:30 does not exist on 2026-03-08: skipped.
        assert_eq!(
            next_n("cron(30 2 * * ? *)", "2026-03-07T12:00:00Z", ny, 3),
            ["2026-03-09 02:30 Mon EDT", "2026-03-10 02:30 Tue EDT", "2026-03-11 02:30 Wed EDT"]
        );
        // Hourly across the spring change: 01:00 EST, then 03:00 EDT (02:00 does not exist).
        assert_eq!(
            next_n("cron(0 * * * ? *)", "2026-03-08T05:30:00Z", ny, 2),
            ["2026-03-08 01:00 Sun EST", "2026-03-08 03:00 Sun EDT"]
        );
        // 01:30 happens twice on 2026-11-01: it fires once, at the first.
        assert_eq!(
            next_n("cron(30 1 * * ? *)", "2026-10-31T12:00:00Z", ny, 2),
            ["2026-11-01 01:30 Sun EDT", "2026-11-02 01:30 Mon EST"]
        );
        // Hourly across the autumn change: 00:00, 01:00 (EDT), 02:00 (EST): the repeated hour once.
        assert_eq!(
            next_n("cron(0 * * * ? *)", "2026-11-01T03:30:00Z", ny, 3),
            ["2026-11-01 00:00 Sun EDT", "2026-11-01 01:00 Sun EDT", "2026-11-01 02:00 Sun EST"]
        );
        // Every 15 minutes inside the repeated hour: no fire is repeated.
        let times = next_n("cron(0/15 * * * ? *)", "2026-11-01T05:00:00Z", ny, 8);
        let unique: BTreeSet<&String> = times.iter().collect();
        assert_eq!(unique.len(), times.len(), "{times:?}");
    }
}
