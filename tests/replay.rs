//! `runner replay`: records rejected under yesterday's contract land exactly once after today's
//! fix. The story of the issue (a new event type before the contract knows it), a SIGKILL at
//! every point of a replay, two replays at once, a replay beside an ingest, and a replayed
//! record the table already holds. Each compares the tables with a warehouse whose contract
//! knew the event type from the start, fed the same drops.

mod common;

use common::{REPO, TestEnv, text};

const H1: &str = "2026-11-20T13";
const H2: &str = "2026-11-20T15";
const T0: i64 = 1_795_179_600_000; // 2026-11-20T13:00:00Z

fn ev(t: &str, id: &str, company: &str, user: Option<&str>, ms: i64) -> String {
    let user = user.map(|u| format!(r#","userID":"{u}""#)).unwrap_or_default();
    format!(r#"{{"event_type":"{t}","event_id":"{id}","companyID":"{company}"{user},"creationDate":{ms}}}"#)
}

/// The first drop: a login, two invitations (one of a tenant with nothing else that day), an
/// invitation without its user, and a line that is not JSON.
fn drop_a() -> String {
    [
        ev("user_login", "a-login", "c1", Some("u1"), T0 + 1_000),
        ev("user_invited", "a-inv-1", "c1", Some("u7"), T0 + 2_000),
        ev("user_invited", "a-inv-2", "c2", Some("u8"), T0 + 3_000),
        ev("user_invited", "a-inv-3", "c1", None, T0 + 4_000),
        "not json at all".to_string(),
    ]
    .join("\n")
}

fn job_drop() -> String {
    format!(
        r#"{{"event_type":"job_submitted","event_id":"j1","companyID":"c1","userID":"u1","jobID":"j1","nbJobs":3,"creationDate":{}}}"#,
        T0 + 5_000
    )
}

/// A workspace with its own copy of schemas/, so the test can fix the contract; `fixed`: the
/// contract knows `user_invited` from the start.
fn env(fixed: bool) -> TestEnv {
    env_with(fixed, "")
}

/// [`env`] with `settings` appended to runner.toml.
fn env_with(fixed: bool, settings: &str) -> TestEnv {
    let env = TestEnv::with_settings(settings);
    copy_dir(std::path::Path::new(&format!("{REPO}/schemas")), &env.root().join("schemas"));
    let cfg = std::fs::read_to_string(env.config_path()).unwrap();
    let from = format!("schemas_dir = \"{REPO}/schemas\"");
    assert!(cfg.contains(&from));
    std::fs::write(env.config_path(), cfg.replace(&from, "schemas_dir = \"schemas\"")).unwrap();
    if fixed {
        fix_contract(&env);
    }
    env
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            copy_dir(&p, &to.join(p.file_name().unwrap()));
        } else {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// Today's fix: the contract learns `user_invited`.
fn fix_contract(env: &TestEnv) {
    let p = env.root().join("schemas/events.toml");
    let mut text = std::fs::read_to_string(&p).unwrap();
    text.push_str("\n[event_types.user_invited]\nstream = \"companies\"\nrequired = [\"userID\"]\n");
    std::fs::write(p, text).unwrap();
}

fn ok(env: &TestEnv, args: &[&str]) -> String {
    let out = env.output(args);
    assert!(out.status.success(), "runner {args:?}: {}", text(&out.stderr));
    text(&out.stderr)
}

/// The replay summary's rows by reason.
fn replay(env: &TestEnv, args: &[&str]) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut a = vec!["replay"];
    a.extend_from_slice(args);
    let rows = env.json(&a);
    rows.as_array().unwrap().iter().map(|r| (r["reason"].as_str().unwrap().to_string(), r.clone())).collect()
}

const EVENTS: &str = "SELECT * FROM tenant_events ORDER BY event_id";
const DAILY: &str = "SELECT * FROM tenant_activity_daily ORDER BY dt, companyID";

/// A query's rows, the workspace's own folder (in `source_object`) written `<root>`.
async fn rows(env: &TestEnv, sql: &str) -> Vec<String> {
    let root = env.root().display().to_string();
    env.query(sql).await.into_iter().map(|l| l.replace(&root, "<root>")).collect()
}

/// Drop A (and a job drop) ingested, with the daily table, by a contract that knows
/// `user_invited` (`fixed`) or not yet.
fn ingested(fixed: bool) -> TestEnv {
    let env = env(fixed);
    env.put_drop("companies", H1, 1, drop_a().as_bytes(), false);
    env.put_drop("bigdatajobs", H1, 1, job_drop().as_bytes(), false);
    ok(&env, &["run", "ingest_companies", "ingest_bigdatajobs", "tenant_activity_daily", "--at", "2026-11-20"]);
    env
}

/// The drops ingested by a contract that does not know `user_invited` yet.
fn ingested_before_the_fix() -> TestEnv {
    ingested(false)
}

/// The same drops ingested with the contract fixed from the start.
fn reference() -> TestEnv {
    ingested(true)
}

#[tokio::test]
async fn a_new_event_type_rejected_yesterday_lands_once_after_the_contract_is_fixed() {
    let env = ingested_before_the_fix();
    // An object the runner refuses whole: listed by the dry run, left alone.
    env.put_raw(
        "companies",
        "2026/11/20/13/companies-1-2026-11-20-13-00-00-00000000-0000-4000-8000-000000000009.snappy",
        b"\x00\x01",
    );
    ok(&env, &["run", "ingest_companies"]);
    let q = "SELECT reason_code, count(*) AS n FROM quarantine GROUP BY reason_code ORDER BY reason_code";
    assert_eq!(rows(&env, q).await, vec!["reason_code,n", "invalid_json,1", "unknown_event_type,3", "unsupported_object,1"]);
    let events_before = rows(&env, EVENTS).await;
    let daily_before = rows(&env, DAILY).await;
    // Before the fix, a replay accepts nothing and changes nothing.
    let r = replay(&env, &[]);
    assert_eq!(r["unknown_event_type"]["accepted"], 0, "{r:?}");
    assert_eq!(rows(&env, EVENTS).await, events_before);

    fix_contract(&env);
    let before_dry = common::table_files(&env.warehouse());
    let r = replay(&env, &["--dry-run"]);
    let unknown = &r["unknown_event_type"];
    assert_eq!((unknown["selected"].as_u64(), unknown["would_accept"].as_u64()), (Some(3), Some(2)), "{r:?}");
    assert_eq!(unknown["still_rejected"], 1);
    assert_eq!(unknown["now_rejected_as"], "missing_field=1");
    assert!(unknown["examples"].as_str().unwrap().contains("accepted into tenant_events/dt=2026-11-20"), "{unknown}");
    assert_eq!((r["invalid_json"]["still_rejected"].as_u64(), r["invalid_json"]["would_accept"].as_u64()), (Some(1), Some(0)));
    let refused = &r["unsupported_object"];
    assert_eq!(refused["left_alone"], 1);
    assert!(refused["left_alone_why"].as_str().unwrap().contains("object-level reject"), "{refused}");
    assert_eq!(common::table_files(&env.warehouse()), before_dry, "a dry run writes nothing");
    assert_eq!(rows(&env, EVENTS).await, events_before);

    let out = env.cmd(&["replay", "--format", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("tenant_events/dt=2026-11-20"), "the summary names the days: {}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let unknown = summary.as_array().unwrap().iter().find(|r| r["reason"] == "unknown_event_type").unwrap();
    assert_eq!((unknown["accepted"].as_u64(), unknown["still_rejected"].as_u64()), (Some(2), Some(1)), "{summary}");
    let run_id = unknown["run_id"].as_str().unwrap().to_string();

    // The tables are those of a contract that knew the type from the start; the daily table
    // after its next run too (the replayed day is rebuilt, as for late data).
    let reference = reference();
    assert_eq!(rows(&env, EVENTS).await, rows(&reference, EVENTS).await);
    assert_eq!(rows(&env, DAILY).await, daily_before, "not rebuilt before its next run");
    ok(&env, &["run", "tenant_activity_daily", "--at", "2026-11-20"]);
    assert_eq!(rows(&env, DAILY).await, rows(&reference, DAILY).await);
    assert_ne!(rows(&env, DAILY).await, daily_before, "c2's invitation makes a row of its own");

    // The quarantine keeps every row: the replayed ones marked with the replay's run id and
    // time, the one still failing with today's reason.
    let q = "SELECT reason_code, replayed_run_id IS NOT NULL AS replayed, replayed_at IS NOT NULL AS at, count(*) AS n \
             FROM quarantine GROUP BY 1, 2, 3 ORDER BY 1, 2";
    assert_eq!(
        rows(&env, q).await,
        vec![
            "reason_code,replayed,at,n",
            "invalid_json,false,false,1",
            "missing_field,false,false,1",
            "unknown_event_type,true,true,2",
            "unsupported_object,false,false,1"
        ]
    );
    let ids = rows(&env, "SELECT DISTINCT replayed_run_id FROM quarantine WHERE replayed_run_id IS NOT NULL").await;
    assert_eq!(ids, vec!["replayed_run_id".to_string(), run_id]);

    // Replaying again adds nothing.
    let events = rows(&env, EVENTS).await;
    let r = replay(&env, &[]);
    assert!(r.values().all(|row| row["accepted"] == 0), "{r:?}");
    assert_eq!(rows(&env, EVENTS).await, events);
}

#[tokio::test]
async fn a_sigkill_at_any_point_of_a_replay_then_a_rerun_lands_every_record_once() {
    let reference = reference();
    let expected = rows(&reference, EVENTS).await;
    for point in ["replay.before_commit", "replay.after_commit", "ingest.mid_publish", "ingest.before_catalog"] {
        let env = ingested_before_the_fix();
        fix_contract(&env);
        let out = env.cmd(&["replay"]).env("RUNNER_FAILPOINT", point).output().unwrap();
        assert_eq!(out.status.code(), None, "{point}: the failpoint must kill the replay: {}", text(&out.stderr));
        ok(&env, &["replay"]);
        assert_eq!(rows(&env, EVENTS).await, expected, "after a kill at {point}");
        let marked = rows(&env, "SELECT count(*) AS n FROM quarantine WHERE replayed_run_id IS NOT NULL").await;
        assert_eq!(marked, vec!["n", "2"], "{point}");
        // And an ingest run after it (which rolls forward what a replay left) changes nothing.
        ok(&env, &["run", "ingest_companies"]);
        assert_eq!(rows(&env, EVENTS).await, expected, "{point}");
    }
}

#[tokio::test]
async fn two_replays_at_once_land_every_record_once() {
    let expected = rows(&reference(), EVENTS).await;
    for _ in 0..3 {
        let env = ingested_before_the_fix();
        fix_contract(&env);
        let a = env.cmd(&["replay", "--format", "json"]).spawn().unwrap();
        let b = env.cmd(&["replay", "--format", "json"]).spawn().unwrap();
        let mut accepted = 0;
        for child in [a, b] {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", text(&out.stderr));
            let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            accepted += rows.as_array().unwrap().iter().map(|r| r["accepted"].as_u64().unwrap()).sum::<u64>();
        }
        assert_eq!(accepted, 2, "the two replays accept each record once between them");
        assert_eq!(rows(&env, EVENTS).await, expected);
        let marked = rows(&env, "SELECT count(*) AS n FROM quarantine WHERE replayed_run_id IS NOT NULL").await;
        assert_eq!(marked, vec!["n", "2"]);
    }
}

#[tokio::test]
async fn a_replay_beside_an_ingest_of_the_same_stream_neither_duplicates_nor_loses() {
    // New drops arrive after the fix, holding invitations the contract now accepts.
    let later = [
        ev("user_invited", "b-inv", "c3", Some("u9"), T0 + 7_200_000),
        ev("user_login", "b-login", "c3", Some("u9"), T0 + 7_201_000),
    ]
    .join("\n");
    let reference = reference();
    reference.put_drop("companies", H2, 2, later.as_bytes(), false);
    ok(&reference, &["run", "ingest_companies"]);
    let expected = rows(&reference, EVENTS).await;
    for _ in 0..3 {
        let env = ingested_before_the_fix();
        fix_contract(&env);
        env.put_drop("companies", H2, 2, later.as_bytes(), false);
        let a = env.cmd(&["replay"]).spawn().unwrap();
        let b = env.cmd(&["run", "ingest_companies", "--no-lock"]).spawn().unwrap();
        for child in [a, b] {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
        assert_eq!(rows(&env, EVENTS).await, expected);
        let q = "SELECT count(*) AS n FROM quarantine WHERE replayed_run_id IS NOT NULL";
        assert_eq!(rows(&env, q).await, vec!["n", "2"]);
    }
}

#[tokio::test]
async fn a_replayed_record_the_table_already_holds_is_counted_once() {
    let env = ingested_before_the_fix();
    fix_contract(&env);
    // Firehose delivers a duplicate of `a-inv-1` later; this time the contract accepts it.
    let dup = ev("user_invited", "a-inv-1", "c1", Some("u7"), T0 + 2_000);
    env.put_drop("companies", H2, 3, dup.as_bytes(), false);
    ok(&env, &["run", "ingest_companies"]);
    let r = replay(&env, &[]);
    let unknown = &r["unknown_event_type"];
    assert_eq!((unknown["accepted"].as_u64(), unknown["already_in_table"].as_u64()), (Some(1), Some(1)), "{r:?}");
    let n =
        rows(&env, "SELECT event_id, count(*) AS n FROM tenant_events WHERE event_type = 'user_invited' GROUP BY 1 ORDER BY 1")
            .await;
    assert_eq!(n, vec!["event_id,n", "a-inv-1,1", "a-inv-2,1"]);
    // Both replayed rows are marked: a-inv-1 is in the table once, from its later copy.
    let q = "SELECT count(*) AS n FROM quarantine WHERE replayed_run_id IS NOT NULL";
    assert_eq!(rows(&env, q).await, vec!["n", "2"]);
    // Only the selected reason and dates are replayed.
    let r = replay(&env, &["--reason", "invalid_json", "--from", "2026-11-21"]);
    assert!(r.is_empty(), "nothing arrived on or after 2026-11-21: {r:?}");
    let out = env.output(&["replay", "--reason", "unknown_event_typ"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("unknown_event_type"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn a_replayed_record_whose_copy_left_the_dedup_horizon_long_ago_is_still_counted_once() {
    // Short horizons and a checkpoint every two batches: by the time of the replay, the ledger
    // has forgotten the dedup keys of the accepted copy; the table still holds its event_id.
    let env = env_with(false, "[ingest]\ndedup_horizon = \"1h\"\nlookback = \"1h\"\ncheckpoint_every = 2\n");
    env.put_drop("companies", H1, 1, drop_a().as_bytes(), false);
    ok(&env, &["run", "ingest_companies"]);
    fix_contract(&env);
    let dup = ev("user_invited", "a-inv-1", "c1", Some("u7"), T0 + 2_000);
    env.put_drop("companies", H2, 3, dup.as_bytes(), false);
    ok(&env, &["run", "ingest_companies"]);
    // Days later, other drops: the checkpoint keeps the keys of the last two hours only.
    for (n, hour) in ["2026-11-25T09", "2026-11-25T10", "2026-11-25T11", "2026-11-25T12"].iter().enumerate() {
        let later = ev("user_login", &format!("late-{n}"), "c1", Some("u1"), T0 + 5 * 86_400_000);
        env.put_drop("companies", hour, 10 + n as u32, later.as_bytes(), false);
        ok(&env, &["run", "ingest_companies"]);
    }
    let r = replay(&env, &[]);
    let unknown = &r["unknown_event_type"];
    assert_eq!((unknown["accepted"].as_u64(), unknown["already_in_table"].as_u64()), (Some(1), Some(1)), "{r:?}");
    let n = rows(&env, "SELECT count(*) AS n FROM tenant_events WHERE event_id = 'a-inv-1'").await;
    assert_eq!(n, vec!["n", "1"]);
}

#[tokio::test]
async fn records_a_replay_cannot_land_exactly_are_left_alone_with_the_reason() {
    let env = env(false);
    // A record whose bytes are not UTF-8: quarantine keeps its text with U+FFFD, which is not
    // what arrived. And an invitation without event_id from long before the newest arrival.
    let mut body = br#"{"event_type":"user_invited","event_id":"bad-utf8","companyID":"c1","userID":"u"#.to_vec();
    body.extend_from_slice(b"\xe9\"}\n");
    body.extend_from_slice(
        format!(r#"{{"event_type":"user_invited","companyID":"c9","userID":"u9","creationDate":{T0}}}"#).as_bytes(),
    );
    env.put_drop("companies", H1, 1, &body, false);
    ok(&env, &["run", "ingest_companies"]);
    // Ten days later: the ledger keeps dedup keys for lookback + horizon (8 days) behind this.
    let later = ev("user_login", "later", "c1", Some("u1"), T0 + 10 * 86_400_000);
    env.put_drop("companies", "2026-11-30T13", 2, later.as_bytes(), false);
    ok(&env, &["run", "ingest_companies"]);
    fix_contract(&env);
    let r = replay(&env, &[]);
    let why: String = r.values().map(|row| row["left_alone_why"].as_str().unwrap().to_string()).collect::<Vec<_>>().join(" ");
    assert!(why.contains("not UTF-8"), "{r:?}");
    assert!(why.contains("no event_id, and older than the dedup keys the ledger keeps"), "{r:?}");
    assert!(r.values().all(|row| row["accepted"] == 0), "{r:?}");
    let n = rows(&env, "SELECT count(*) AS n FROM tenant_events WHERE event_type = 'user_invited'").await;
    assert_eq!(n, vec!["n", "0"]);
}
