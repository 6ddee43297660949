//! The state benchmark's generator (`bench/state.sh`): a warehouse whose streams each have N
//! committed ingest batches, written with the runner's own ledger code, as a year of 5-minute
//! runs with `checkpoint_every = 100` leaves it: a checkpoint up to the last multiple of 100, the
//! commit records after it, the dedup keys of the horizon, and in the source the drops of the
//! last 30 hours (a run lists from the last ingested hour minus the lookback, so older drops are
//! never listed; they are left out to keep the generator fast on S3).
//!
//!     cargo run --release --example state_warehouse -- <warehouse-url> <source-root-url> <commits>
//!
//! Then it removes what that checkpoint replaced, as the first run after the retention does.
//! One drop per batch, arriving every 5 minutes up to 2026-11-20T12:00Z; `<source-root-url>`
//! gets `raw/<stream>/YYYY/MM/DD/HH/...` like `runner simulate`.

use runner::catalog::layout::day_folder;
use runner::dates::{day_of_ms, day_string};
use runner::ledger::{Batch, BatchStats, Commit, CommitKind, ConsumedObject, FileEntry, Ledger, LedgerState, encode_keys};
use runner::store::Location;

const FIVE_MINUTES: i64 = 300_000;
const HOUR: i64 = 3_600_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, warehouse, sources, n] = args.as_slice() else {
        return Err("usage: state_warehouse <warehouse-url> <source-root-url> <commits>".into());
    };
    let n: u64 = n.parse()?;
    if warehouse.starts_with("s3") {
        runner::aws::init(None).await;
    }
    let wh = Location::parse(warehouse)?;
    wh.put(&wh.child("_runner/format.json"), bytes::Bytes::from_static(br#"{"format":2}"#)).await?;
    let end = chrono::NaiveDate::from_ymd_opt(2026, 11, 20)
        .expect("date")
        .and_hms_opt(12, 0, 0)
        .expect("time")
        .and_utc()
        .timestamp_millis();
    for (stream, table) in [("bigdatajobs", "job_events"), ("companies", "tenant_events")] {
        let src = Location::parse(&format!("{}/raw/{stream}/", sources.trim_end_matches('/')))?;
        let ledger = Ledger::new(wh.clone(), stream);
        let mut commits = Vec::new();
        let mut attempts = Vec::new();
        for seq in 1..=n {
            let arrival = end - (n - seq) as i64 * FIVE_MINUTES;
            let key = runner::simulate::drop_key(stream, arrival, &format!("00000000-0000-4000-8000-{seq:012}"), "");
            let day = day_string(day_of_ms(arrival));
            let attempt = runner::ledger::Attempt::new(seq);
            let path = format!("{}/part-{stream}-{seq:012}.parquet", day_folder(table, &day, Some(0)));
            commits.push(Commit {
                stream: stream.to_string(),
                seq,
                attempt: attempt.id.clone(),
                run_id: format!("gen{seq}"),
                committed_at: String::new(),
                files: vec![FileEntry {
                    table: table.to_string(),
                    partition: vec![day],
                    staged: String::new(),
                    path,
                    rows: 1,
                    bytes: 2_000,
                }],
                kind: CommitKind::Ingest(Batch {
                    objects: vec![ConsumedObject {
                        key,
                        size: 200,
                        arrival_ms: arrival - arrival.rem_euclid(HOUR),
                        refused: None,
                    }],
                    dedup_keys: ledger.dedup_path(&attempt),
                    max_arrival_ms: arrival - arrival.rem_euclid(HOUR),
                    stats: BatchStats { records: 1, valid: 1, ..Default::default() },
                }),
            });
            attempts.push(attempt);
        }
        // Dedup keys of the batches a checkpoint may keep (26 h lookback + 7 days horizon).
        let keep_ms = 26 * HOUR + 7 * 24 * HOUR;
        let arrival = |c: &Commit| c.batch().map(|b| b.max_arrival_ms).unwrap_or(0);
        let newest = commits.last().map(arrival).unwrap_or(0);
        let puts = commits.iter().filter(|c| arrival(c) >= newest - keep_ms).map(|c| {
            let (wh, path, seq) = (wh.clone(), c.batch().map(|b| b.dedup_keys.clone()).unwrap_or_default(), c.seq);
            async move { wh.put(&wh.child(&path), encode_keys(&[u128::from(seq), 1])).await }
        });
        futures::future::try_join_all(puts).await?;
        // The drops a run lists: the last 30 hours of arrivals.
        let drops = commits.iter().filter(|c| arrival(c) >= newest - 30 * HOUR).map(|c| {
            let (src, key, seq) = (src.clone(), c.objects()[0].key.clone(), c.seq);
            async move {
                let body = format!(
                    "{{\"event_type\":\"job_submitted\",\"event_id\":\"gen-{seq}\",\"companyID\":\"c1\",\"userID\":\"u1\",\"nbJobs\":1,\"creationDate\":1795179600000}}\n"
                );
                src.put(&src.child(&key), bytes::Bytes::from(body)).await
            }
        });
        futures::future::try_join_all(drops).await?;
        let cut = n - n % 100;
        let state = LedgerState { base: None, published: commits.iter().map(|c| c.seq).collect(), commits };
        if cut > 0 {
            ledger.write_checkpoint(&state, cut, keep_ms, "generator").await?;
        }
        for (c, a) in state.commits.iter().zip(&attempts).filter(|(c, _)| c.seq > cut) {
            ledger.commit(a, c, std::time::Duration::MAX).await?;
            ledger.mark_published(c.seq).await?;
        }
        // What a later run does once the checkpoint is older than the retention (the steady
        // state of a runner every 5 minutes): the per-batch dedup keys it consolidated go.
        let loaded = ledger.load().await?;
        ledger.clean_up(&loaded, "a later run", chrono::Duration::zero()).await?;
        runner::output::notice(format!("{stream}: {n} batches, checkpoint at {cut}, {} commit records after it", n - cut));
    }
    Ok(())
}
