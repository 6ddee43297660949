//! Ingest against the contract: every framing, every invalid-record kind, legacy records and
//! the alias, duplicates across objects and runs, tenant ids that look like paths, refused and
//! skipped objects, and bounded batches giving the same tables as one big batch.

mod common;

use common::{TestEnv, gz, table_files, walk};

const H: &str = "2026-11-20T13";

fn job(id: &str, company: &str, ms: i64) -> String {
    format!(
        r#"{{"event_type":"job_submitted","event_id":"{id}","companyID":"{company}","userID":"u1","jobID":"j-{id}","nbJobs":2,"creationDate":{ms}}}"#
    )
}

const T0: i64 = 1_795_179_600_000; // 2026-11-20T13:00:00Z

#[tokio::test]
async fn every_framing_is_read_plain_and_gzip() {
    let env = TestEnv::new();
    let (a, b, c) = (job("a", "c1", T0), job("b", "c1", T0), job("c", "c1", T0));
    let framings = [
        format!("{a}\n{b}\n{c}\n"),           // NDJSON
        format!("{a}{b}{c}"),                 // back to back, no delimiter
        format!("{a}\r\n{b}\r\n{c}\r\n"),     // CRLF
        format!("\n{a}\n\n\n{b}\n  \n{c}\n"), // blank lines
        format!("{a}\n{b}\n{c}"),             // no final newline
        format!(
            "{a}\n{{\n  \"event_type\": \"job_submitted\", \"event_id\": \"b\",\n  \"companyID\": \"c1\", \"userID\": \"u1\"\n}}{c}"
        ), // pretty-printed
    ];
    for (i, body) in framings.iter().enumerate() {
        // Each framing in its own stream folder hour so event ids do not collide across cases.
        let ids: String = body
            .replace("\"a\"", &format!("\"a{i}\""))
            .replace("\"b\"", &format!("\"b{i}\""))
            .replace("\"c\"", &format!("\"c{i}\""));
        env.put_drop("bigdatajobs", H, i as u32 * 2, ids.as_bytes(), false);
        let gz_ids = ids
            .replace(&format!("\"a{i}\""), &format!("\"ga{i}\""))
            .replace(&format!("\"b{i}\""), &format!("\"gb{i}\""))
            .replace(&format!("\"c{i}\""), &format!("\"gc{i}\""));
        env.put_drop("bigdatajobs", H, i as u32 * 2 + 1, gz_ids.as_bytes(), true);
    }
    let s = env.ingest("bigdatajobs").await;
    assert_eq!(s.stats.quarantined_total(), 0, "{:?}", s.stats.quarantined);
    assert_eq!((s.objects, s.stats.records, s.stats.valid, s.stats.duplicates), (12, 36, 36, 0));
    let rows = env.query("SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM job_events").await;
    assert_eq!(rows, vec!["n,ids", "36,36"]);
}

#[tokio::test]
async fn every_invalid_kind_lands_in_quarantine_with_its_reason() {
    let env = TestEnv::new();
    let good = job("ok", "c1", T0);
    let cases = [
        ("not json at all", "invalid_json", ""),
        ("[1,2,3]", "not_object", ""),
        ("\"a string\"", "not_object", ""),
        (r#"{"event_type":"job_submitted","userID":"u"}"#, "missing_field", "companyID"),
        (r#"{"event_type":"job_exploded","companyID":"c"}"#, "unknown_event_type", "event_type"),
        (r#"{"event_type":"user_login","companyID":"c","userID":"u"}"#, "wrong_stream", "event_type"),
        (r#"{"event_type":"job_submitted","companyID":"c","userID":"u","nbJobs":"two"}"#, "wrong_type", "nbJobs"),
        (
            r#"{"event_type":"job_submitted","companyID":"c","userID":"u","creationDate":"2026-11-20"}"#,
            "bad_timestamp",
            "creationDate",
        ),
        (
            r#"{"event_type":"job_submitted","companyID":"c","userID":"u","creationDate":1795179600}"#,
            "bad_timestamp",
            "creationDate",
        ),
        (
            r#"{"event_type":"job_terminated","companyID":"c","userID":"u","jobID":"j","status":"exploded"}"#,
            "bad_value",
            "status",
        ),
        (r#"{"event_type":"job_submitted","companyID":"c","userID":"u""#, "invalid_json", ""),
    ];
    let mut body = String::new();
    let mut offsets = Vec::new();
    for (raw, _, _) in &cases {
        body.push_str(&good.replace("\"ok\"", &format!("\"ok{}\"", offsets.len())));
        body.push('\n');
        offsets.push(body.len());
        body.push_str(raw);
        body.push('\n');
    }
    env.put_drop("bigdatajobs", H, 1, body.as_bytes(), false);
    // A corrupt GZIP object, a refused compression, error output and a stray file.
    env.put_drop("bigdatajobs", H, 2, b"\x1f\x8b\x08\x00garbage", false);
    std::fs::rename(
        env.drops("bigdatajobs").join("2026/11/20/13/bigdatajobs-1-2026-11-20-13-00-00-00000000-0000-4000-8000-000000000002"),
        env.drops("bigdatajobs").join("2026/11/20/13/bigdatajobs-1-2026-11-20-13-00-00-00000000-0000-4000-8000-000000000002.gz"),
    )
    .unwrap();
    env.put_raw(
        "bigdatajobs",
        "2026/11/20/13/bigdatajobs-1-2026-11-20-13-00-00-00000000-0000-4000-8000-000000000003.snappy",
        b"x",
    );
    env.put_raw(
        "bigdatajobs",
        "processing-failed/2026/11/20/13/bigdatajobs-1-2026-11-20-13-00-00-00000000-0000-4000-8000-000000000004",
        b"{}",
    );
    env.put_raw("bigdatajobs", "notes/readme.txt", b"hello");

    let s = env.ingest("bigdatajobs").await;
    assert_eq!(s.stats.valid, cases.len() as u64, "one bad record never costs its neighbours");
    assert_eq!((s.refused, s.skipped_error_output, s.skipped_stray), (1, 1, 1));
    assert_eq!(s.stats.quarantined_total(), cases.len() as u64 + 2);

    let rows = env
        .query("SELECT byte_offset, reason_code, coalesce(field, '') AS field FROM quarantine WHERE byte_offset IS NOT NULL ORDER BY byte_offset")
        .await;
    let expected: Vec<String> = std::iter::once("byte_offset,reason_code,field".to_string())
        .chain(cases.iter().zip(&offsets).map(|((_, code, field), off)| format!("{off},{code},{field}")))
        .collect();
    assert_eq!(rows, expected);
    let raw = env.query("SELECT raw FROM quarantine WHERE reason_code = 'not_object' ORDER BY byte_offset").await;
    assert_eq!(raw, vec!["raw", "\"[1,2,3]\"", "\"\"\"a string\"\"\""]);
    let whole = env.query("SELECT reason_code, source_object LIKE '%.gz' AS gz, source_object LIKE '%.snappy' AS snappy FROM quarantine WHERE byte_offset IS NULL ORDER BY reason_code").await;
    assert_eq!(whole, vec!["reason_code,gz,snappy", "corrupt_object,true,false", "unsupported_object,false,true"]);

    // A rerun neither re-reads nor re-quarantines anything.
    let again = env.ingest("bigdatajobs").await;
    assert_eq!((again.objects, again.refused, again.stats.quarantined_total()), (0, 0, 0));
    assert_eq!(env.query("SELECT count(*) AS n FROM quarantine").await, vec!["n", &format!("{}", cases.len() + 2)]);
}

#[tokio::test]
async fn legacy_records_and_the_tenant_id_alias() {
    let env = TestEnv::new();
    env.put_drop(
        "bigdatajobs",
        H,
        1,
        br#"{"companyID": "comp_4", "userID": "user_1", "nbJobs": 1, "creationDate": 1669885930000}"#,
        false,
    );
    let companies = concat!(
        r#"{"companyID": "comp_4", "industry": "retail", "revenu": 100000, "employees": 4635, "job30": 10, "job90": 100, "monthlyFee": 400.0, "totalFee": 1200.0}"#,
        "\n",
        r#"{"event_type":"user_added","event_id":"e1","tenantID":"comp_9","userID":"u9","creationDate":1795179600000}"#,
        "\n"
    );
    env.put_drop("companies", H, 1, companies.as_bytes(), false);
    env.ingest("bigdatajobs").await;
    env.ingest("companies").await;
    assert_eq!(
        env.query("SELECT event_type, legacy, companyID, nbJobs, dt FROM job_events").await,
        vec!["event_type,legacy,companyID,nbJobs,dt", "job_submitted,true,comp_4,1,2022-12-01"]
    );
    assert_eq!(
        env.query("SELECT event_type, legacy, companyID, industry, revenu, producer_job30, producer_job90, dt FROM tenant_events ORDER BY companyID").await,
        vec![
            "event_type,legacy,companyID,industry,revenu,producer_job30,producer_job90,dt",
            // No event time in the legacy snapshot: it takes the drop's arrival hour.
            "tenant_updated,true,comp_4,retail,100000,10,100,2026-11-20",
            "user_added,false,comp_9,,,,,2026-11-20",
        ]
    );
}

#[tokio::test]
async fn duplicates_across_objects_and_runs_and_by_content() {
    let env = TestEnv::new();
    let legacy = r#"{"companyID":"c2","userID":"u","nbJobs":3,"creationDate":1795179600000}"#;
    let legacy_respaced = r#"{ "nbJobs": 3, "companyID": "c2", "userID": "u", "creationDate": 1795179600000 }"#;
    env.put_drop("bigdatajobs", H, 1, format!("{}\n{}\n{legacy}\n", job("a", "c1", T0), job("b", "c1", T0)).as_bytes(), false);
    // The same records again in another object (Firehose retry), plus the same legacy record
    // with other spacing and key order: one event each.
    env.put_drop("bigdatajobs", H, 2, format!("{}{}{legacy_respaced}", job("a", "c1", T0), job("a", "c1", T0)).as_bytes(), true);
    let s = env.ingest("bigdatajobs").await;
    assert_eq!((s.stats.valid, s.stats.duplicates), (3, 3));
    // A later run sees a re-delivery of an event from the first run.
    env.put_drop(
        "bigdatajobs",
        "2026-11-21T02",
        3,
        format!("{}\n{}\n", job("b", "c1", T0), job("c", "c1", T0)).as_bytes(),
        false,
    );
    let s = env.ingest("bigdatajobs").await;
    assert_eq!((s.stats.valid, s.stats.duplicates), (1, 1));
    assert_eq!(
        env.query("SELECT coalesce(event_id, 'legacy') AS id, count(*) AS n FROM job_events GROUP BY 1 ORDER BY 1").await,
        vec!["id,n", "a,1", "b,1", "c,1", "legacy,1"]
    );
}

#[tokio::test]
async fn duplicates_older_than_the_horizon_are_not_checked() {
    let env = TestEnv::with_settings("[ingest]\ndedup_horizon = \"1day\"\n");
    env.put_drop("bigdatajobs", "2026-11-01T00", 1, job("a", "c1", T0).as_bytes(), false);
    env.ingest("bigdatajobs").await;
    env.put_drop("bigdatajobs", "2026-11-01T20", 2, job("a", "c1", T0).as_bytes(), false);
    env.put_drop("bigdatajobs", "2026-11-05T00", 3, job("a", "c1", T0).as_bytes(), false);
    let s = env.ingest("bigdatajobs").await;
    // Within a day: a duplicate. Four days later: outside the horizon, ingested again.
    assert_eq!((s.stats.valid, s.stats.duplicates), (1, 1));
}

#[tokio::test]
async fn tenant_ids_are_data_never_paths() {
    let env = TestEnv::new();
    let ids = ["a/b", "../../etc", "k=v", "with space", "café-東京", "", "%2F", "."];
    let mut body = String::new();
    for (i, id) in ids.iter().enumerate() {
        body.push_str(&job(&format!("e{i}"), &id.replace('"', "\\\""), T0));
        body.push('\n');
    }
    env.put_drop("bigdatajobs", H, 1, body.as_bytes(), false);
    env.ingest("bigdatajobs").await;
    let rows = env.query("SELECT companyID FROM job_events ORDER BY companyID").await;
    let mut expected: Vec<String> = ids.iter().map(|s| if s.is_empty() { "\"\"".to_string() } else { s.to_string() }).collect();
    expected.sort_by(|a, b| a.trim_matches('"').cmp(b.trim_matches('"')));
    assert_eq!(rows[1..], expected[..]);
    // Partitions are by date (and version) only: no id ever became a folder.
    for f in table_files(&env.warehouse()) {
        let segs: Vec<&str> = f.split('/').collect();
        assert!(segs[1].starts_with("dt="), "{f}");
        if segs[0] == "quarantine" {
            // quarantine/dt=<day>/stream=<stream>/v=<seq>/<file>: the stream is config, not data.
            assert_eq!(segs.len(), 5, "{f}");
            assert!(segs[2].starts_with("stream=") && segs[3].starts_with("v="), "{f}");
        } else {
            assert_eq!(segs.len(), 4, "{f}");
            assert!(segs[2].starts_with("v="), "{f}");
        }
    }
}

#[tokio::test]
async fn late_events_land_in_their_event_date_and_files_are_sorted_by_company() {
    let env = TestEnv::new();
    let day = 86_400_000;
    let body = format!("{}\n{}\n{}\n", job("x", "zeta", T0), job("y", "alpha", T0 - 3 * day), job("z", "mid", T0));
    env.put_drop("bigdatajobs", H, 1, body.as_bytes(), false);
    env.ingest("bigdatajobs").await;
    assert_eq!(
        env.query("SELECT dt, companyID FROM job_events ORDER BY dt, companyID").await,
        vec!["dt,companyID", "2026-11-17,alpha", "2026-11-20,mid", "2026-11-20,zeta"],
    );
    // No ORDER BY within one day's file: the file's own order, sorted by companyID. (Across
    // days the files are scanned in parallel, so their interleaving is not an order.)
    assert_eq!(
        env.query("SELECT companyID FROM job_events WHERE dt = '2026-11-20'").await,
        vec!["companyID", "mid", "zeta"],
        "no ORDER BY: the file's own order"
    );
    assert_eq!(env.query("SELECT count(*) AS n FROM job_events WHERE dt = '2026-11-17'").await, vec!["n", "1"]);
}

#[tokio::test]
async fn bounded_batches_give_the_same_tables_as_one_batch() {
    let one = TestEnv::new();
    let many = TestEnv::with_settings("[ingest]\nmax_objects_per_batch = 2\n");
    for env in [&one, &many] {
        for i in 0..7u32 {
            let body =
                format!("{}\n{}\n", job(&format!("e{i}"), &format!("c{}", i % 3), T0), job(&format!("e{}", i + 1), "c0", T0));
            env.put_drop("bigdatajobs", &format!("2026-11-20T1{i}"), i, body.as_bytes(), i % 2 == 0);
        }
    }
    let s1 = one.ingest("bigdatajobs").await;
    let s2 = many.ingest("bigdatajobs").await;
    assert_eq!((s1.batches, s2.batches), (1, 4));
    assert_eq!((s1.stats.valid, s1.stats.duplicates), (s2.stats.valid, s2.stats.duplicates));
    let q = "SELECT event_id, companyID, dt FROM job_events ORDER BY event_id";
    assert_eq!(one.query(q).await, many.query(q).await);
}

#[tokio::test]
async fn gzip_helper_matches_firehose_gzip() {
    // Guard for the helpers above: a .gz drop really is GZIP.
    assert_eq!(&gz(b"{}")[..2], b"\x1f\x8b");
}

#[tokio::test]
async fn discovery_lists_from_the_last_ingested_hour_minus_the_lookback() {
    let env = TestEnv::new();
    // A history of drops, days old.
    for (n, hour) in ["2026-11-01T00", "2026-11-02T00", "2026-11-10T05", "2026-11-20T12"].iter().enumerate() {
        env.put_drop("bigdatajobs", hour, n as u32, job(&format!("h{n}"), "c1", T0).as_bytes(), false);
    }
    let s = env.ingest("bigdatajobs").await;
    assert_eq!((s.listed, s.objects), (4, 4), "the first run lists everything");
    // Next run: a new drop, and one delivered late into an hour 20 h before the last ingested
    // one (inside the 26 h lookback). Older hours are not listed again.
    env.put_drop("bigdatajobs", "2026-11-20T14", 10, job("new", "c1", T0).as_bytes(), false);
    env.put_drop("bigdatajobs", "2026-11-19T16", 11, job("late", "c1", T0).as_bytes(), false);
    let s = env.ingest("bigdatajobs").await;
    assert_eq!(s.objects, 2, "both new drops are ingested");
    assert_eq!(s.listed, 3, "listed from 2026-11-19T10 on: the late drop, the last ingested one and the new one");
    assert_eq!(env.query("SELECT count(*) AS n FROM job_events").await, vec!["n", "6"]);
}

/// Hostile objects among valid drops, with small limits: a GZIP bomb, an object of unclosed
/// braces, an over-long line. Each lands in quarantine with its reason and a capped `raw`; the
/// valid records around them are exact; a second run reads nothing again.
#[tokio::test]
async fn hostile_objects_land_in_quarantine_capped_and_the_rest_is_exact() {
    let env =
        TestEnv::with_settings("[ingest]\nmax_record_bytes = \"4KiB\"\nmax_object_bytes = \"1MiB\"\nmax_raw_bytes = \"256\"\n");
    // A GZIP object of a few KiB that inflates to 8 MiB of zeros (inflated 1 MiB at most,
    // in chunks: refused as a whole).
    env.put_drop("bigdatajobs", H, 1, &vec![0u8; 8 << 20], true);
    // Unclosed braces, one per line, around a valid record.
    let mut braces = "{\"event_type\":\"job_submitted\",\"open\":\"never\n".repeat(2000);
    braces.push_str(&job("b1", "c1", T0));
    braces.push('\n');
    braces.push_str(&"{\"x\":{\"y\":\n".repeat(2000));
    env.put_drop("bigdatajobs", H, 2, braces.as_bytes(), false);
    // One line of 100 KiB between two valid records.
    let long = format!("{}\n{{\"x\":\"{}\"}}\n{}\n", job("l1", "c1", T0), "z".repeat(100 << 10), job("l2", "c2", T0));
    env.put_drop("bigdatajobs", H, 3, long.as_bytes(), false);
    env.put_drop("bigdatajobs", H, 4, job("ok", "c3", T0).as_bytes(), false);
    // A plain object over the object limit: refused by its listed size, never downloaded.
    env.put_drop("bigdatajobs", H, 5, format!("{}\n", job("big", "c4", T0)).repeat(20_000).as_bytes(), false);
    // A GZIP object whose compressed size alone is over the limit (incompressible bytes):
    // refused by its listed size too.
    let mut x = 7u64;
    let noise: Vec<u8> = (0..(2 << 20))
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect();
    env.put_drop("bigdatajobs", H, 6, &noise, true);

    let s = env.ingest("bigdatajobs").await;
    assert_eq!(s.stats.valid, 4, "b1, l1, l2, ok");
    assert_eq!(s.refused, 3, "the plain and the incompressible GZIP object over the limit, and the GZIP bomb");
    assert_eq!(s.objects, 3);
    let by_reason = env.query("SELECT reason_code, count(*) AS n, max(length(raw)) AS longest FROM quarantine GROUP BY reason_code ORDER BY reason_code").await;
    assert_eq!(by_reason, vec!["reason_code,n,longest", "invalid_json,4000,43", "object_too_large,3,", "record_too_large,1,256"]);
    let unread = env.query("SELECT count(*) AS n FROM quarantine WHERE reason LIKE '%bytes of GZIP, over%'").await;
    assert_eq!(unread, vec!["n", "1"], "the incompressible GZIP object was never downloaded");
    let msg = env.query("SELECT reason FROM quarantine WHERE reason_code = 'record_too_large'").await;
    assert!(msg[1].contains("102408 bytes") && msg[1].contains("xxh3"), "{msg:?}");
    let ids = env.query("SELECT event_id FROM job_events ORDER BY event_id").await;
    assert_eq!(ids, vec!["event_id", "b1", "l1", "l2", "ok"]);
    let again = env.ingest("bigdatajobs").await;
    assert_eq!((again.objects, again.stats.quarantined_total()), (0, 0));
}

/// A batch whose rows of one day hold more than `ingest.max_file_bytes` in memory is written in
/// several files of that day (one Arrow batch holds at most 2 GiB of strings per column): the
/// same rows, in more files.
#[tokio::test]
async fn a_day_over_the_file_bound_is_written_in_several_files() {
    let env = TestEnv::with_settings("[ingest]\nmax_file_bytes = \"1MiB\"\n");
    let pad = "u".repeat(400);
    let body: String = (0..6000)
        .map(|i| {
            format!(
                "{{\"event_type\":\"job_submitted\",\"event_id\":\"e{i}\",\"companyID\":\"c{}\",\"userID\":\"{pad}{i}\",\"nbJobs\":1,\"creationDate\":1795179600000}}\n",
                i % 7
            )
        })
        .collect();
    env.put_drop("bigdatajobs", H, 1, body.as_bytes(), true);
    let s = env.ingest("bigdatajobs").await;
    assert_eq!((s.batches, s.stats.valid), (1, 6000));
    let files: Vec<_> =
        walk(&env.warehouse().join("job_events")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "parquet")).collect();
    assert!(files.len() >= 2, "one day, split into files: {files:?}");
    assert_eq!(env.query("SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM job_events").await, vec!["n,d", "6000,6000"]);
}
