//! `runner simulate`: realistic Firehose drops, deterministic for a seed and an end date.
//!
//! Tenants are created, add and remove users, are billed monthly and now and then change plan;
//! users log in and out through the day (most of the events) and the company submits a few
//! big-data jobs that terminate or are cancelled. Tenants are healthy (65%), declining (20%:
//! fewer working users each day, a handful of jobs lately) or near-dormant (15%), and their
//! profiles and job counts fall in the ranges of the seed's companies (job30 3-9, job90 10-99
//! for most, revenue up to 100,000, fees 100-1,199), the data the shipped churn model was
//! trained on, so the seed's churn rule flags a realistic share and the scores mean something. The
//! events then travel as they do in production: received a moment after they happen, delivered
//! by Firehose in objects of about `object_size` bytes or 5 minutes, under the arrival hour of
//! their oldest record, some late by hours or days, some delivered twice, a share in the legacy
//! form or with the `tenantID` alias, a few invalid, framed in every way the contract allows,
//! GZIP or not. With `noise`, error output, a stray file and a `.snappy` drop are added. With
//! [`Mix::Jobs`], users submit jobs every working day instead (most events are job events): the
//! benchmark's job-heavy shape, not data for the churn model.

use std::io::Write;

use bytes::Bytes;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::Result;
use crate::store::Location;

#[derive(Debug, Clone)]
pub struct SimulateOptions {
    pub tenants: usize,
    pub users_per_tenant: usize,
    pub days: u32,
    pub end_date: NaiveDate,
    pub seed: u64,
    /// Share of events that arrive hours to days late.
    pub late_share: f64,
    /// Share of records Firehose delivers twice (and of objects delivered twice).
    pub duplicate_share: f64,
    pub gzip_share: f64,
    pub invalid_share: f64,
    pub legacy_share: f64,
    pub object_size: usize,
    /// Firehose buffer interval: an object closes after this long (0-900 s in Firehose).
    pub buffer_seconds: u32,
    pub noise: bool,
    pub framing: Framing,
    pub mix: Mix,
}

/// How records are laid out in an object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Framing {
    /// Every framing the contract allows, in the shares producers use: mostly newline-delimited,
    /// some concatenated objects, CRLF, blank lines and a missing final newline.
    #[default]
    Mixed,
    /// Newline-delimited JSON only (what most producers send; what DuckDB's fast
    /// `newline_delimited` reader expects, so the benchmark can compare like with like).
    Ndjson,
}

/// What the tenants send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mix {
    /// Sessions are most of the events and jobs are few, in the ranges the shipped churn model
    /// was trained on (job30 3-9, job90 10-99), so scores mean something.
    #[default]
    Churn,
    /// A job-heavy producer (issue 27's drops): a working user submits one to three jobs a day
    /// and logs in on most days, so about three events in four are job events; the companies
    /// stream is written as Python's `json.dumps` writes (a space after `:` and `,`). Job counts
    /// are far above the model's range: for benchmarks, not for churn scores.
    Jobs,
}

impl Default for SimulateOptions {
    fn default() -> Self {
        SimulateOptions {
            tenants: 20,
            users_per_tenant: 5,
            days: 14,
            end_date: Utc::now().date_naive(),
            seed: 42,
            late_share: 0.02,
            duplicate_share: 0.01,
            gzip_share: 0.5,
            invalid_share: 0.001,
            legacy_share: 0.02,
            object_size: 1 << 20,
            buffer_seconds: 300,
            noise: false,
            framing: Framing::Mixed,
            mix: Mix::Churn,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SimulateSummary {
    pub objects: u64,
    /// Distinct valid events generated (what a perfect ingest writes).
    pub events: u64,
    /// Records written, duplicates and invalid ones included.
    pub records: u64,
    pub duplicates: u64,
    pub invalid: u64,
    pub bytes: u64,
}

/// How a tenant's activity evolves over the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    /// Users work most days; 5-9 jobs in the last 30 days.
    Healthy,
    /// Busy at first, fading: fewer working users each day, a handful of jobs lately.
    Declining,
    /// Barely there: a login now and then, a few jobs a quarter.
    Dormant,
}

const INDUSTRIES: [&str; 9] = ["gov", "health", "retail", "travel", "energy", "IT", "finance", "consulting", "service"];
const STREAMS: [&str; 2] = ["companies", "bigdatajobs"];

struct Pending {
    arrival_ms: i64,
    text: String,
}

/// Packs records into Firehose objects for one stream.
struct Packer {
    stream: &'static str,
    open: Vec<Pending>,
    open_bytes: usize,
    done: Vec<(String, Bytes)>,
}

pub async fn simulate(out: &Location, o: &SimulateOptions) -> Result<SimulateSummary> {
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed);
    let mut sum = SimulateSummary::default();
    let start = o.end_date - Duration::days(i64::from(o.days.max(1)) - 1);
    let day_ms = crate::dates::midnight_ms;

    struct Tenant {
        id: String,
        segment: Segment,
        /// Chance that a user works on a day, at the start and at the end of the window.
        activity: (f64, f64),
        /// The day (index in the window) of each job the company submits, drawn up front so the
        /// counts of the last 30 and 90 days are the segment's.
        job_days: Vec<u32>,
        created_day: u32,
        users: Vec<String>,
        next_user: usize,
        fee: f64,
        /// Months billed before the window starts (totalFee = monthlyFee x months).
        months: u32,
    }
    let mut tenants: Vec<Tenant> = (0..o.tenants)
        .map(|i| {
            let segment = match rng.random_range(0..100) {
                // About half the tenants churn by the seed's rule (its companies: 56%).
                0..65 => Segment::Healthy,
                65..85 => Segment::Declining,
                _ => Segment::Dormant,
            };
            // Jobs in the last 30 days, and in the 60 days before them (the seed's companies have
            // job30 3-9 and job90 10-99); the activity of users follows the segment.
            let (activity, recent, earlier) = match segment {
                Segment::Healthy => {
                    let a = rng.random_range(0.6..0.95);
                    ((a, a), rng.random_range(5..=9), rng.random_range(15..=80))
                }
                Segment::Declining => (
                    (rng.random_range(0.5..0.8), rng.random_range(0.05..0.25)),
                    rng.random_range(3..=5),
                    rng.random_range(20..=90),
                ),
                Segment::Dormant => {
                    let a = rng.random_range(0.02..0.12);
                    // One in five has all but stopped: fewer jobs than any company the model saw.
                    let recent = if rng.random_bool(0.2) { rng.random_range(1..=2) } else { rng.random_range(3..=4) };
                    ((a, a), recent, rng.random_range(6..=14))
                }
            };
            let created_day = if rng.random_bool(0.9) { 0 } else { rng.random_range(0..o.days.max(1)) };
            let days = o.days.max(1);
            // The days of the jobs follow one smooth curve over the 90 days (a declining tenant
            // declines over weeks, not on one day), with exactly `recent` in the last 30 and
            // `earlier` in the 60 before, so job30 and job90 stay where the model was trained.
            let k = decay_per_day(recent, earlier);
            let mut job_days = Vec::new();
            let (days_i, created) = (i64::from(days), i64::from(created_day));
            for (count, start, end, cut) in [(recent, days_i - 30, days_i, false), (earlier, days_i - 90, days_i - 30, true)] {
                // The 60 days before the last 30, cut short (by a simulation of fewer than 90 days
                // or a tenant created within them), hold the curve's share of their jobs: 40 days
                // of a tenant have 40 days of jobs, not 90 crowded in. The last 30 days keep their
                // count (job30), in whatever of them there is.
                let from = start.max(created).max(0);
                if from < end {
                    let share = if cut { mass(from - start, end - start, k) / mass(0, end - start, k) } else { 1.0 };
                    let n = (f64::from(count) * share).round() as u32;
                    job_days.extend((0..n).map(|_| smooth_day(&mut rng, from as u32, end as u32, k)));
                }
            }
            Tenant {
                id: format!("comp_{i}"),
                segment,
                activity,
                job_days,
                created_day,
                users: Vec::new(),
                next_user: 0,
                fee: f64::from(rng.random_range(100..1200)),
                months: rng.random_range(1..=7),
            }
        })
        .collect();
    tracing::debug!(
        healthy = tenants.iter().filter(|t| t.segment == Segment::Healthy).count(),
        declining = tenants.iter().filter(|t| t.segment == Segment::Declining).count(),
        dormant = tenants.iter().filter(|t| t.segment == Segment::Dormant).count(),
        "simulated tenant segments"
    );

    let mut pending: [Vec<Pending>; 2] = [Vec::new(), Vec::new()];
    let mut packers = STREAMS.map(|s| Packer { stream: s, open: Vec::new(), open_bytes: 0, done: Vec::new() });

    for d in 0..o.days.max(1) {
        let date = start + Duration::days(i64::from(d));
        let t0 = day_ms(date);
        for t in tenants.iter_mut() {
            if d < t.created_day {
                continue;
            }
            let mut emit = |rng: &mut ChaCha8Rng, stream: usize, at: i64, mut ev: Value, sum: &mut SimulateSummary| {
                let received = at + rng.random_range(100..5_000);
                let late = rng.random_bool(o.late_share);
                let arrival =
                    received + if late { rng.random_range(3_600_000..72 * 3_600_000) } else { rng.random_range(0..60_000) };
                let legacy = rng.random_bool(o.legacy_share);
                let obj = ev.as_object_mut().expect("object");
                let kind = obj["event_type"].as_str().unwrap_or_default().to_string();
                if legacy && kind == "job_submitted" {
                    // The old producers' bare job record: no event_type, no event_id.
                    obj.retain(|k, _| matches!(k.as_str(), "companyID" | "userID" | "nbJobs" | "creationDate"));
                } else if legacy && kind == "tenant_updated" {
                    obj.remove("event_type");
                    obj.remove("event_id");
                    obj.insert("job30".into(), json!(rng.random_range(0..40)));
                    obj.insert("job90".into(), json!(rng.random_range(0..120)));
                } else {
                    obj.insert("event_id".into(), json!(uuid(rng)));
                    obj.insert("received_at".into(), json!(received));
                }
                if stream == 0 && rng.random_bool(0.05) {
                    let id = obj.remove("companyID").expect("companyID");
                    obj.insert("tenantID".into(), id);
                }
                let text = match (o.mix, stream) {
                    (Mix::Jobs, 0) => spaced_json(&ev),
                    _ => serde_json::to_string(&ev).expect("json"),
                };
                sum.events += 1;
                if rng.random_bool(o.duplicate_share) {
                    sum.duplicates += 1;
                    let again = arrival + rng.random_range(1_000..600_000);
                    pending[stream].push(Pending { arrival_ms: again, text: text.clone() });
                }
                pending[stream].push(Pending { arrival_ms: arrival, text });
            };
            let at = |rng: &mut ChaCha8Rng, from_h: i64, to_h: i64| t0 + rng.random_range(from_h * 3_600_000..to_h * 3_600_000);

            if d == t.created_day {
                let ts = at(&mut rng, 0, 2);
                let industry =
                    if rng.random_bool(0.01) { "aerospace" } else { INDUSTRIES[rng.random_range(0..INDUSTRIES.len())] };
                let revenu = rng.random_range(10..100_000);
                let ev = json!({"event_type":"tenant_created","companyID":t.id,"creationDate":ts,"name":format!("Company {}", t.id),
                    "industry":industry,"revenu":revenu,"employees":(revenu / rng.random_range(2..5)).max(2),"monthlyFee":t.fee,
                    "totalFee":t.fee * f64::from(t.months),"sentiment":(rng.random_range(-100..=100) as f64) / 100.0});
                emit(&mut rng, 0, ts, ev, &mut sum);
                for _ in 0..o.users_per_tenant {
                    let u = format!("user_{}", t.next_user);
                    t.next_user += 1;
                    let ts = ts + rng.random_range(60_000..3_600_000);
                    emit(
                        &mut rng,
                        0,
                        ts,
                        json!({"event_type":"user_added","companyID":t.id,"userID":u,"creationDate":ts}),
                        &mut sum,
                    );
                    t.users.push(u);
                }
            } else if date.day() == 1 || rng.random_bool(0.02) {
                // A new month is billed; now and then the plan changes within the seed's range.
                let ts = at(&mut rng, 8, 18);
                if date.day() == 1 {
                    t.months += 1;
                } else {
                    t.fee = (t.fee * rng.random_range(0.8..1.25)).round().clamp(100.0, 1199.0);
                }
                let ev = json!({"event_type":"tenant_updated","companyID":t.id,"creationDate":ts,"monthlyFee":t.fee,
                    "totalFee":t.fee * f64::from(t.months)});
                emit(&mut rng, 0, ts, ev, &mut sum);
            }
            if d > t.created_day && !t.users.is_empty() && rng.random_bool(0.01) {
                let ts = at(&mut rng, 9, 17);
                let gone = t.users.remove(rng.random_range(0..t.users.len()));
                emit(
                    &mut rng,
                    0,
                    ts,
                    json!({"event_type":"user_deleted","companyID":t.id,"userID":gone,"creationDate":ts}),
                    &mut sum,
                );
                let u = format!("user_{}", t.next_user);
                t.next_user += 1;
                emit(
                    &mut rng,
                    0,
                    ts + 60_000,
                    json!({"event_type":"user_added","companyID":t.id,"userID":u,"creationDate":ts + 60_000}),
                    &mut sum,
                );
                t.users.push(u);
            }
            // Users log in and out through the day: most of the events a tenant sends.
            let progress = f64::from(d) / f64::from(o.days.max(2) - 1);
            let activity = t.activity.0 + (t.activity.1 - t.activity.0) * progress;
            let working: Vec<String> = t.users.iter().filter(|_| rng.random_bool(activity)).cloned().collect();
            for u in &working {
                let mut ts = at(&mut rng, 6, 9);
                let sessions = match o.mix {
                    Mix::Churn => rng.random_range(2..=8),
                    Mix::Jobs => u32::from(rng.random_bool(0.7)),
                };
                for _ in 0..sessions {
                    ts += rng.random_range(60_000..3_600_000);
                    let session = uuid(&mut rng);
                    emit(
                        &mut rng,
                        0,
                        ts,
                        json!({"event_type":"user_login","companyID":t.id,"userID":u,"sessionID":session,"creationDate":ts}),
                        &mut sum,
                    );
                    ts += rng.random_range(60_000..2_400_000);
                    let off = if rng.random_bool(0.8) { "user_logoff" } else { "user_session_timeoff" };
                    emit(
                        &mut rng,
                        0,
                        ts,
                        json!({"event_type":off,"companyID":t.id,"userID":u,"sessionID":session,"creationDate":ts}),
                        &mut sum,
                    );
                }
            }
            // Big-data jobs are few: the ones drawn for this day, so job30 and job90 land where
            // the churn model was trained (3-9 and 10-99) for most tenants.
            let submitters = if working.is_empty() { &t.users } else { &working };
            let today = match o.mix {
                Mix::Churn => t.job_days.iter().filter(|&&x| x == d).count(),
                Mix::Jobs => working.iter().map(|_| rng.random_range(1..=3usize)).sum(),
            };
            for _ in 0..today {
                let Some(u) = submitters.get(rng.random_range(0..submitters.len().max(1))).cloned() else { break };
                let ts = at(&mut rng, 8, 20);
                let job = format!("job_{}", uuid(&mut rng).split('-').next().unwrap_or("0"));
                let ev = json!({"event_type":"job_submitted","companyID":t.id,"userID":u,"jobID":job,
                "nbJobs":1,"dataSize":rng.random_range(1..100_000),"creationDate":ts});
                emit(&mut rng, 1, ts, ev, &mut sum);
                let end = ts + rng.random_range(10_000..3_600_000);
                let ev = if rng.random_bool(0.05) {
                    json!({"event_type":"job_cancelled","companyID":t.id,"userID":u,"jobID":job,"creationDate":end})
                } else {
                    let status = if rng.random_bool(0.9) { "succeeded" } else { "failed" };
                    json!({"event_type":"job_terminated","companyID":t.id,"userID":u,"jobID":job,"status":status,
                    "durationSec":(end - ts) / 1000,"creationDate":end})
                };
                emit(&mut rng, 1, end, ev, &mut sum);
            }
        }
        // Everything arriving before tomorrow can be delivered: later days only add later arrivals.
        let cutoff = day_ms(date + Duration::days(1));
        for (s, p) in packers.iter_mut().enumerate() {
            pending[s].sort_by_key(|e| e.arrival_ms);
            let split = pending[s].partition_point(|e| e.arrival_ms < cutoff);
            let ready: Vec<Pending> = pending[s].drain(..split).collect();
            p.pack(ready, o, &mut rng, &mut sum);
        }
        write_done(out, &mut packers, &mut sum).await?;
    }
    for (s, p) in packers.iter_mut().enumerate() {
        pending[s].sort_by_key(|e| e.arrival_ms);
        let rest = std::mem::take(&mut pending[s]);
        p.pack(rest, o, &mut rng, &mut sum);
        p.close(o, &mut rng, &mut sum);
    }
    write_done(out, &mut packers, &mut sum).await?;
    if o.noise {
        write_noise(out, o, &mut rng, &mut sum).await?;
    }
    Ok(sum)
}

impl Packer {
    fn pack(&mut self, events: Vec<Pending>, o: &SimulateOptions, rng: &mut ChaCha8Rng, sum: &mut SimulateSummary) {
        for e in events {
            if let Some(first) = self.open.first()
                && (self.open_bytes >= o.object_size || e.arrival_ms - first.arrival_ms > i64::from(o.buffer_seconds) * 1000)
            {
                self.close(o, rng, sum);
            }
            self.open_bytes += e.text.len() + 1;
            self.open.push(e);
        }
    }

    fn close(&mut self, o: &SimulateOptions, rng: &mut ChaCha8Rng, sum: &mut SimulateSummary) {
        if self.open.is_empty() {
            return;
        }
        let first = self.open[0].arrival_ms;
        let mut records: Vec<String> = self.open.drain(..).map(|e| e.text).collect();
        self.open_bytes = 0;
        // Each record has an `invalid_share` chance of a bad neighbour.
        let bad = (0..records.len()).filter(|_| rng.random_bool(o.invalid_share)).count();
        for _ in 0..bad {
            let rec = invalid_record(self.stream, rng);
            records.insert(rng.random_range(0..=records.len()), rec);
        }
        sum.invalid += bad as u64;
        sum.records += records.len() as u64;
        // Framing, as producers and Firehose actually lay records out.
        // The draw is made for every framing, so the rest of the output is the same.
        let drawn = rng.random_range(0..100);
        let framing = if o.framing == Framing::Ndjson { 0 } else { drawn };
        let mut body = match framing {
            0..80 => records.join("\n") + "\n",
            80..88 => records.concat(),
            88..93 => records.join("\r\n") + "\r\n",
            93..97 => records.join("\n\n") + "\n",
            _ => records.join("\n"),
        }
        .into_bytes();
        let gzip = rng.random_bool(o.gzip_share);
        if gzip {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&body).expect("in-memory gzip");
            body = gz.finish().expect("in-memory gzip");
        }
        let key = drop_key(self.stream, first, &uuid(rng), if gzip { ".gz" } else { "" });
        let body = Bytes::from(body);
        if rng.random_bool(o.duplicate_share) {
            // Firehose retried the delivery: the same object again under a new uuid.
            let again = drop_key(self.stream, first + 1_000, &uuid(rng), if gzip { ".gz" } else { "" });
            sum.duplicates += records.len() as u64;
            sum.records += records.len() as u64;
            self.done.push((again, body.clone()));
        }
        self.done.push((key, body));
    }
}

async fn write_done(out: &Location, packers: &mut [Packer; 2], sum: &mut SimulateSummary) -> Result<()> {
    let mut objects = Vec::new();
    for p in packers.iter_mut() {
        for (key, body) in p.done.drain(..) {
            objects.push((format!("raw/{}/{key}", p.stream), body));
        }
    }
    sum.objects += objects.len() as u64;
    sum.bytes += objects.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
    let results: Vec<Result<()>> = futures::stream::iter(objects)
        .map(|(k, b)| async move { out.put(&out.child(&k), b).await })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect()
}

/// A record as Python's `json.dumps` writes it: `{"a": 1, "b": "x"}`.
fn spaced_json(v: &Value) -> String {
    struct Spaced;
    impl serde_json::ser::Formatter for Spaced {
        fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
            if first { Ok(()) } else { w.write_all(b", ") }
        }
        fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
            w.write_all(b": ")
        }
        fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
            if first { Ok(()) } else { w.write_all(b", ") }
        }
    }
    let mut out = Vec::with_capacity(256);
    v.serialize(&mut serde_json::Serializer::with_formatter(&mut out, Spaced)).expect("json");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// `YYYY/MM/DD/HH/<stream>-1-YYYY-MM-DD-HH-MM-SS-<uuid><ext>`, as Firehose names objects.
/// The rate `k` of a job intensity `e^(-k t)` (t in days) under which `recent` jobs in the last
/// 30 of 90 days and `earlier` in the 60 before are what one curve gives: with `x = e^(-30 k)`,
/// the share of the last 30 days over the 60 before is `x^2 / (1 + x)`.
fn decay_per_day(recent: u32, earlier: u32) -> f64 {
    if recent == 0 || earlier == 0 {
        return 0.0;
    }
    let q = f64::from(recent) / f64::from(earlier);
    let x = (q + (q * q + 4.0 * q).sqrt()) / 2.0;
    -x.ln() / 30.0
}

/// The integral of `e^(-k t)` over `a..b` (days), up to the factor `1/k`.
fn mass(a: i64, b: i64, k: f64) -> f64 {
    if k.abs() < 1e-9 { (b - a) as f64 } else { ((-k * a as f64).exp() - (-k * b as f64).exp()) / k }
}

/// A day in `from..to` drawn with density `e^(-k t)` (inverse of its distribution function;
/// uniform when `k` is 0).
fn smooth_day(rng: &mut ChaCha8Rng, from: u32, to: u32, k: f64) -> u32 {
    let span = f64::from(to - from);
    let u: f64 = rng.random_range(0.0..1.0);
    let t = if k.abs() < 1e-9 { u * span } else { -(1.0 - u * (1.0 - (-k * span).exp())).ln() / k };
    (from + t.floor() as u32).min(to - 1)
}

pub fn drop_key(stream: &str, arrival_ms: i64, uuid: &str, ext: &str) -> String {
    let t = DateTime::<Utc>::from_timestamp_millis(arrival_ms).expect("valid time");
    format!("{}/{stream}-1-{}-{uuid}{ext}", t.format("%Y/%m/%d/%H"), t.format("%Y-%m-%d-%H-%M-%S"))
}

fn uuid(rng: &mut ChaCha8Rng) -> String {
    uuid::Builder::from_random_bytes(rng.random()).into_uuid().to_string()
}

fn invalid_record(stream: &str, rng: &mut ChaCha8Rng) -> String {
    let (t, u) = if stream == "bigdatajobs" { ("job_submitted", "userID") } else { ("user_login", "userID") };
    match rng.random_range(0..6) {
        0 => "this is not json".to_string(),
        1 => "[1,2,3]".to_string(),
        2 => format!(r#"{{"event_type":"{t}","{u}":"user_0","creationDate":1700000000000}}"#),
        3 => r#"{"event_type":"tenant_exploded","companyID":"comp_0"}"#.to_string(),
        4 => format!(r#"{{"event_type":"{t}","companyID":"comp_0","{u}":"user_0","nbJobs":"two","creationDate":"yesterday"}}"#),
        _ => format!(r#"{{"event_type":"{t}","companyID":"comp_0","{u}":"user_0","creationDate":1700000000}}"#),
    }
}

async fn write_noise(out: &Location, o: &SimulateOptions, rng: &mut ChaCha8Rng, sum: &mut SimulateSummary) -> Result<()> {
    let t = o.end_date.and_hms_opt(12, 0, 0).expect("noon").and_utc().timestamp_millis();
    for stream in STREAMS {
        let failed = format!("raw/{stream}/processing-failed/{}", drop_key(stream, t, &uuid(rng), ""));
        let rec = json!({"attemptsMade":4,"arrivalTimestamp":t,"errorCode":"Lambda.FunctionError",
            "errorMessage":"The Lambda function was successfully invoked but it returned an error result.","rawData":"eyJ4IjoxfQ=="});
        out.put(&out.child(&failed), Bytes::from(rec.to_string() + "\n")).await?;
        out.put(&out.child(&format!("raw/{stream}/README.txt")), Bytes::from_static(b"dropped here by hand\n")).await?;
        let snappy = format!("raw/{stream}/{}", drop_key(stream, t, &uuid(rng), ".snappy"));
        out.put(&out.child(&snappy), Bytes::from_static(b"\xff\x06\x00\x00sNaPpY")).await?;
        sum.objects += 3;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_days_follow_one_smooth_curve_across_the_30_day_boundary() {
        // 7 jobs in the last 30 days, 47 in the 60 before: the rate falls over weeks, and the
        // days just before and after the boundary carry about the same rate.
        let k = decay_per_day(7, 47);
        assert!(k > 0.0);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut per_day = [0u32; 90];
        for _ in 0..2000 {
            for _ in 0..47 {
                per_day[smooth_day(&mut rng, 0, 60, k) as usize] += 1;
            }
            for _ in 0..7 {
                per_day[smooth_day(&mut rng, 60, 90, k) as usize] += 1;
            }
        }
        let mean = |r: std::ops::Range<usize>| per_day[r.clone()].iter().sum::<u32>() as f64 / r.len() as f64;
        // Three days either side: what the curve itself falls in three days, no step on top.
        let (before, after) = (mean(57..60), mean(60..63));
        let expected = (-3.0 * k).exp();
        assert!((after / before / expected - 1.0).abs() < 0.1, "a step at the boundary: {before} then {after}, not x{expected}");
        assert!(mean(0..10) > 2.0 * mean(80..90), "a decline over the window");
        assert_eq!(decay_per_day(0, 10), 0.0);
    }

    #[test]
    fn keys_follow_the_firehose_layout() {
        let k = drop_key("bigdatajobs", 1_763_643_912_000, "5f0c3e1a-8d0b-4a51-9b7e-0d3f4c2a9e11", ".gz");
        assert_eq!(k, "2025/11/20/13/bigdatajobs-1-2025-11-20-13-05-12-5f0c3e1a-8d0b-4a51-9b7e-0d3f4c2a9e11.gz");
        assert!(matches!(crate::source::classify(&k), crate::source::KeyKind::Drop(_)));
    }

    /// Every object under `out` (key, text), GZIP ones inflated.
    async fn inflated(out: &Location) -> Vec<(String, String)> {
        use std::io::Read;
        let mut objects = Vec::new();
        for meta in out.list("").await.unwrap() {
            let raw = out.get(&meta.location).await.unwrap();
            let mut text = String::new();
            if meta.location.as_ref().ends_with(".gz") {
                flate2::read::MultiGzDecoder::new(&raw[..]).read_to_string(&mut text).unwrap();
            } else {
                text = String::from_utf8(raw.to_vec()).unwrap();
            }
            objects.push((meta.location.to_string(), text));
        }
        objects
    }

    /// `--framing ndjson`: every object, inflated, is one JSON object per line, each line ending
    /// in `\n`; the events are those of the mixed framing.
    #[tokio::test]
    async fn ndjson_framing_writes_one_object_per_line() {
        let run = |framing| async move {
            let dir = tempfile::tempdir().unwrap();
            let out = Location::parse(&crate::config::to_url(dir.path(), ".").unwrap()).unwrap();
            let o = SimulateOptions {
                tenants: 3,
                days: 2,
                end_date: NaiveDate::from_ymd_opt(2026, 11, 20).unwrap(),
                framing,
                ..Default::default()
            };
            let sum = simulate(&out, &o).await.unwrap();
            let bodies = inflated(&out).await.into_iter().map(|(_, text)| text).collect::<Vec<_>>();
            (sum, bodies)
        };
        let (ndjson, bodies) = run(Framing::Ndjson).await;
        assert!(!bodies.is_empty());
        let mut lines = 0;
        for b in &bodies {
            assert!(b.ends_with('\n') && !b.contains('\r') && !b.contains("\n\n") && !b.contains("}{"), "{b:?}");
            for line in b.lines() {
                // Invalid records are on their own lines too, parsable or not.
                lines += 1;
                assert!(line.starts_with('{') || !line.is_empty(), "{line:?}");
            }
        }
        let (mixed, mixed_bodies) = run(Framing::Mixed).await;
        assert_eq!((ndjson.events, ndjson.records, ndjson.objects), (mixed.events, mixed.records, mixed.objects));
        assert_eq!(lines as u64, ndjson.records);
        assert!(mixed_bodies.iter().any(|b| b.contains("}{") || b.contains('\r') || !b.ends_with('\n')), "mixed framing varies");
    }

    /// `--mix jobs`: about three events in four are job events, and the companies stream is
    /// written with a space after `:` and `,` (still JSON the contract reads).
    #[tokio::test]
    async fn the_jobs_mix_is_mostly_job_events_and_spaces_its_companies_records() {
        let dir = tempfile::tempdir().unwrap();
        let out = Location::parse(&crate::config::to_url(dir.path(), ".").unwrap()).unwrap();
        let o = SimulateOptions {
            tenants: 20,
            users_per_tenant: 10,
            days: 5,
            end_date: NaiveDate::from_ymd_opt(2026, 11, 20).unwrap(),
            framing: Framing::Ndjson,
            invalid_share: 0.0,
            mix: Mix::Jobs,
            ..Default::default()
        };
        simulate(&out, &o).await.unwrap();
        let (mut jobs, mut companies) = (0usize, 0usize);
        for (key, text) in inflated(&out).await {
            for line in text.lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                assert!(v.get("companyID").or(v.get("tenantID")).is_some(), "{line}");
                if key.contains("/bigdatajobs-") {
                    jobs += 1;
                } else {
                    assert!(line.starts_with("{\"") && line.contains("\": ") && line.contains(", \""), "{line}");
                    companies += 1;
                }
            }
        }
        let share = jobs as f64 / (jobs + companies) as f64;
        assert!((0.65..0.85).contains(&share), "job events are {share:.2} of {} events", jobs + companies);
    }
}
