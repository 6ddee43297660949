//! Churn scoring (issue 4): the trained model's accuracy, golden model rows, `runner model serve`
//! started for real on loopback and scored end to end through both contracts, and a server that
//! misbehaves on purpose (429 with Retry-After, 500s, answers slower than the timeout, garbage,
//! reset connections, a wrong number of predictions): every company ends scored or recorded as
//! an error, none lost, none duplicated. Every server listens on 127.0.0.1 only.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{REPO, TestEnv};
use runner::model::{Company, ModelDecl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const AS_OF: &str = "2026-11-20";

fn model_path() -> std::path::PathBuf {
    Path::new(REPO).join("data/model/churn.json")
}

fn model() -> ModelDecl {
    ModelDecl::load(&model_path()).unwrap()
}

#[test]
fn the_trained_model_reaches_90_percent_on_held_out_companies_and_matches_the_committed_one() {
    let rows = runner::model::train::read_companies_csv(&Path::new(REPO).join("data/companies.csv")).unwrap();
    assert_eq!(rows.len(), 10_000);
    let decl = runner::model::train::train(&rows, "data/companies.csv", 42, 3000).unwrap();
    let t = decl.training.clone().unwrap();
    assert_eq!(t.holdout_rows, 2000);
    assert!(t.holdout.accuracy >= 0.90, "holdout accuracy {:.4}", t.holdout.accuracy);
    assert!(t.holdout.auc >= 0.95, "holdout AUC {:.4}", t.holdout.auc);
    let c = t.holdout.confusion;
    assert_eq!((c.true_positive + c.false_positive + c.true_negative + c.false_negative) as usize, t.holdout_rows);
    // The training distribution the drift guard compares with: the seed's ranges.
    let job30 = decl.profile.iter().find(|p| p.feature == "job30").expect("job30 profiled");
    assert_eq!((job30.min, job30.max), (3.0, 9.0));
    assert_eq!(decl.profile.len(), decl.features.len());
    // `runner model train --data data/companies.csv` wrote the committed declaration.
    assert_eq!(decl.version, model().version, "data/model/churn.json is stale: rerun `make model`");
    assert_eq!(decl.profile, model().profile, "data/model/churn.json is stale: rerun `make model`");
}

/// One row per industry the model knows, plus `IT`'s neighbours and one it does not know, as
/// CSV lines; compared with tests/golden/model_rows.csv (UPDATE_GOLDEN=1 rewrites it).
#[test]
fn golden_model_rows_for_every_industry_and_an_unknown_one() {
    let m = model();
    let mut out = String::from("companyID,industry,row,unknown_industry\n");
    let mut industries = m.industries.clone();
    industries.push("mining".into());
    industries.push(String::new());
    assert!(m.industries.iter().any(|i| i == "IT"), "the model knows IT");
    for (n, ind) in industries.iter().enumerate() {
        let c = Company {
            company_id: format!("comp_{n}"),
            industry: Some(ind.clone()),
            revenu: Some(99420.0),
            employees: Some(4635.0),
            job30: Some(10.0),
            job90: Some(100.0),
            monthly_fee: Some(400.0),
            total_fee: Some(1200.5),
            risk_of_churn: None,
        };
        let r = m.row(&c).unwrap();
        out.push_str(&format!("{},{ind},\"{}\",{}\n", c.company_id, ModelDecl::csv_line(&r), r.unknown_industry));
    }
    let golden = Path::new(REPO).join("tests/golden/model_rows.csv");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &out).unwrap();
    }
    assert_eq!(std::fs::read_to_string(&golden).unwrap(), out, "model rows changed: review, then `make golden`");
    // The seed's request spells `employee`; ours `employees`: the same row.
    let seed: Company =
        serde_json::from_str(&std::fs::read_to_string(Path::new(REPO).join("data/model/test-company.json")).unwrap()).unwrap();
    let ours = Company { employees: seed.employees, ..seed.clone() };
    assert_eq!(seed.employees, Some(4635.0));
    assert_eq!(m.row(&seed).unwrap(), m.row(&ours).unwrap());
}

/// `runner model serve --port 0`, with the address it printed.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start() -> Server {
        let mut child = common::bin()
            .args(["--quiet", "model", "serve", "--port", "0", "--model"])
            .arg(model_path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stderr.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.split("on ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "{line}");
        Server { child, url }
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..100 {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the model server did not stop within 5 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// A pipeline over simulated drops, scoring through `scoring` (a runner.toml section).
fn env_with(scoring: &str) -> TestEnv {
    let extra = format!("[scoring]\nmodel = \"{}\"\n{scoring}", model_path().display());
    let env = TestEnv::with_settings(&extra);
    let out = runner(&env, &["simulate", "--out", "drops", "--tenants", "30", "--users-per-tenant", "2", "--days", "3"])
        .args(["--end-date", AS_OF, "--seed", "9"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out =
        runner(&env, &["run", "ingest_bigdatajobs", "ingest_companies", "tenant_activity_daily", "tenants", "churn_features"])
            .args(["--at", AS_OF])
            .output()
            .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    env
}

fn set_scoring(env: &TestEnv, scoring: &str) {
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    let head = text.split("[scoring]").next().unwrap().to_string();
    std::fs::write(env.config_path(), format!("{head}[scoring]\nmodel = \"{}\"\n{scoring}", model_path().display())).unwrap();
}

/// Deletes `churn_scores` (files and catalog entry), so the next run scores every company again.
fn drop_scores(env: &TestEnv) {
    std::fs::remove_dir_all(env.warehouse().join("churn_scores")).unwrap();
    std::fs::remove_dir_all(env.warehouse().join("_runner/catalog/churn_scores")).ok();
}

fn runner(env: &TestEnv, args: &[&str]) -> Command {
    let mut c = env.cmd(args);
    // Test credentials for the SigV4 and SageMaker paths (nothing leaves 127.0.0.1), and an API key.
    c.env("AWS_ACCESS_KEY_ID", "AKIDTESTING").env("AWS_SECRET_ACCESS_KEY", "testing-secret");
    c.env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
    c.env("CHURN_TEST_KEY", API_KEY);
    c
}

const API_KEY: &str = "k3y-that-must-never-be-printed";

fn score(env: &TestEnv) -> (bool, serde_json::Value, String) {
    let out = runner(env, &["run", "score_churn", "--at", AS_OF, "--format", "json"]).output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.success(), v, String::from_utf8_lossy(&out.stderr).to_string())
}

/// companyID -> (status, churn, error) of the run date's scores.
async fn scores(env: &TestEnv) -> Vec<(String, String, String, String)> {
    let lines = env
        .query(&format!(
            "SELECT companyID, status, CAST(churn AS VARCHAR) AS churn, coalesce(error, '') AS error FROM churn_scores \
             WHERE dt = DATE '{AS_OF}' ORDER BY companyID"
        ))
        .await;
    lines[1..]
        .iter()
        .map(|l| {
            let mut p = l.splitn(4, ',');
            let (id, status, churn) = (p.next().unwrap(), p.next().unwrap(), p.next().unwrap());
            (id.into(), status.into(), churn.into(), p.next().unwrap_or("").trim_matches('"').into())
        })
        .collect()
}

async fn company_count(env: &TestEnv) -> usize {
    let n = env.query(&format!("SELECT count(*) FROM churn_features WHERE as_of = DATE '{AS_OF}'")).await;
    n[1].parse().unwrap()
}

#[tokio::test]
async fn model_serve_scores_end_to_end_through_both_contracts() {
    let server = Server::start();
    let http = reqwest::Client::new();
    assert_eq!(http.get(format!("{}/ping", server.url)).send().await.unwrap().status(), 200);
    // The API Gateway contract, with the seed's own request (`employee`).
    let seed = std::fs::read(Path::new(REPO).join("data/model/test-company.json")).unwrap();
    let r = http.post(format!("{}/assessChurn", server.url)).body(seed).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["churn"], true, "a retail company churns");
    // Bad input: 400 naming the field, never a 5xx.
    for (path, ct, body, field) in [
        ("assessChurn", "application/json", r#"{"companyID":"c","job30":"ten"}"#, "job30"),
        ("assessChurn", "application/json", r#"{"industry":"IT"}"#, "companyID"),
        (
            "assessChurn",
            "application/json",
            r#"{"companyID":"c","industry":"IT","revenu":1,"employees":1,"job90":1,"monthlyFee":1,"totalFee":1}"#,
            "job30",
        ),
        ("invocations", "text/csv", "1,2,x,4,5,6,0,0,0,0,0,0,0,0,0", "job30"),
        ("invocations", "application/json", "{}", "Content-Type"),
    ] {
        let r = http.post(format!("{}/{path}", server.url)).header("content-type", ct).body(body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(v["field"], field, "{body}: {v}");
    }

    // The scoring job against the container contract, then API Gateway: every company scored,
    // and exactly as the in-process model scores it.
    let env = env_with(&format!("endpoint = \"container\"\nurl = \"{}\"\nbatch_rows = 7\n", server.url));
    let n = company_count(&env).await;
    assert!(n >= 20, "{n} companies");
    let (ok, v, err) = score(&env);
    assert!(ok, "{err}");
    assert_eq!(v[0]["scored"], n as u64, "{v}");
    assert_eq!(v[0]["calls"], n.div_ceil(7) as u64, "{v}");
    let by_container = scores(&env).await;
    assert_eq!(by_container.len(), n);
    assert!(by_container.iter().all(|s| s.1 == "scored"), "{by_container:?}");

    set_scoring(&env, "endpoint = \"local\"\n");
    let local_env_scores = {
        // A new model version would be rescored; the same one is kept: force a fresh partition.
        drop_scores(&env);
        let (ok, _, err) = score(&env);
        assert!(ok, "{err}");
        scores(&env).await
    };
    let churn = |v: &[(String, String, String, String)]| v.iter().map(|s| (s.0.clone(), s.2.clone())).collect::<Vec<_>>();
    assert_eq!(churn(&by_container), churn(&local_env_scores), "the container answers what the model computes");

    set_scoring(&env, &format!("endpoint = \"apigateway\"\nurl = \"{}/assessChurn\"\nconcurrency = 4\n", server.url));
    drop_scores(&env);
    let (ok, v, err) = score(&env);
    assert!(ok, "{err}");
    assert_eq!(v[0]["calls"], n as u64, "one call per company: {v}");
    assert_eq!(churn(&scores(&env).await), churn(&local_env_scores));

    // SageMaker's InvokeEndpoint through the AWS SDK, at the server's /endpoints/<name>/invocations.
    set_scoring(
        &env,
        &format!(
            "endpoint = \"sagemaker\"\nendpoint_name = \"churn\"\nregion = \"us-east-1\"\nurl = \"{}\"\nbatch_rows = 10\n",
            server.url
        ),
    );
    drop_scores(&env);
    let (ok, v, err) = score(&env);
    assert!(ok, "{err}");
    assert_eq!(v[0]["calls"], n.div_ceil(10) as u64, "{v}");
    assert_eq!(v[0]["endpoint"], "sagemaker churn");
    assert_eq!(churn(&scores(&env).await), churn(&local_env_scores));

    // SIGTERM: the server drains and exits cleanly.
    assert!(server.terminate().success());
}

/// What the misbehaving server does with the n-th request it receives.
#[derive(Clone, Copy, Debug)]
enum Act {
    TooMany,
    Error500,
    Slow,
    Garbage,
    Reset,
    WrongCount,
    Good,
}

/// An HTTP/1.1 server on loopback answering `/invocations` per `script` (by request number;
/// past its end, `after`).
async fn misbehaving_server(script: Vec<Act>, after: Act) -> (String, Arc<AtomicUsize>) {
    let (url, count, _) = recording_server(script, after).await;
    (url, count)
}

/// The misbehaving server, also keeping each request's head (request line and headers,
/// lower-cased). `/assessChurn` gets the seed Lambda's `{ "churn":true}` when the act is Good.
async fn recording_server(script: Vec<Act>, after: Act) -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let m = Arc::new(model());
    let heads: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let heads_w = heads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let (m, script, seen, heads) = (m.clone(), script.clone(), seen.clone(), heads_w.clone());
            tokio::spawn(async move {
                // Requests on one connection, one after another (bounded by the client's calls).
                loop {
                    let Some((head, body)) = read_request(&mut sock).await else { return };
                    heads.lock().unwrap().push(head.clone());
                    let n = seen.fetch_add(1, Ordering::SeqCst);
                    let act = script.get(n).copied().unwrap_or(after);
                    let rows: Vec<&str> = body.lines().filter(|l| !l.is_empty()).collect();
                    let good = || {
                        if head.starts_with("post /assesschurn") {
                            return r#"{ "churn":true}"#.to_string();
                        }
                        let preds: Vec<String> = rows
                            .iter()
                            .map(|l| {
                                let p = m.predict(&m.parse_csv_line(l).unwrap());
                                format!("{{\"score\":{},\"predicted_label\":{}}}", p.score, p.predicted_label)
                            })
                            .collect();
                        format!("{{\"predictions\":[{}]}}", preds.join(","))
                    };
                    let (status, extra, body) = match act {
                        Act::TooMany => ("429 Too Many Requests", "Retry-After: 1\r\n", "slow down".to_string()),
                        Act::Error500 => ("500 Internal Server Error", "", "boom".to_string()),
                        Act::Slow => {
                            tokio::time::sleep(Duration::from_millis(1500)).await;
                            ("200 OK", "", good())
                        }
                        Act::Garbage => ("200 OK", "", "<html>bad gateway</html>".to_string()),
                        Act::Reset => return, // drop the connection without an answer
                        Act::WrongCount => ("200 OK", "", r#"{"predictions":[{"score":0.5,"predicted_label":1}]}"#.to_string()),
                        Act::Good => ("200 OK", "", good()),
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
                        body.len()
                    );
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, count, heads)
}

/// Reads one request: its head, lower-cased, and its Content-Length body; `None` when the
/// client closed.
async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let len: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))).unwrap_or(0);
    while buf.len() < header_end + len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((head, String::from_utf8_lossy(&buf[header_end..header_end + len]).to_string()))
}

const FLAKY: &str = "timeout = \"400ms\"\nbackoff = \"10ms\"\nmax_attempts = 4\nbatch_rows = 4\nconcurrency = 3\n";

// Multi-threaded: the misbehaving server's tasks must run while the test waits for the child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_endpoint_loses_and_duplicates_nothing() {
    use Act::*;
    // Every kind of trouble, then good answers: retries get every company scored.
    let script = vec![TooMany, Error500, Slow, Garbage, Reset, WrongCount, Error500, TooMany];
    let (url, count) = misbehaving_server(script, Good).await;
    // Nine attempts per call: one call may meet all eight bad answers and still succeed.
    let env = env_with(&format!(
        "endpoint = \"container\"\nurl = \"{url}\"\n{}",
        FLAKY.replace("max_attempts = 4", "max_attempts = 9")
    ));
    let n = company_count(&env).await;
    let (ok, v, err) = score(&env);
    assert!(ok, "{err}");
    assert_eq!(v[0]["retries"], 8, "one retry per bad answer: {v}");
    assert!(count.load(Ordering::SeqCst) > n.div_ceil(4), "retried calls reached the server");
    let s = scores(&env).await;
    assert_eq!(s.len(), n, "every company exactly once");
    assert!(s.iter().all(|x| x.1 == "scored"), "{s:?}");

    // A call that fails on every attempt: its companies are errors with the reason, the others
    // are scored; nothing is dropped and nothing defaults to false.
    let (url, _) = misbehaving_server(vec![Error500, Error500, Error500, Error500], Good).await;
    set_scoring(
        &env,
        &format!("endpoint = \"container\"\nurl = \"{url}\"\n{FLAKY}concurrency = 1\n").replace("concurrency = 3\n", ""),
    );
    drop_scores(&env);
    let (ok, v, err) = score(&env);
    assert!(ok, "{err}");
    assert_eq!(v[0]["errors"], 4, "{v}");
    assert_eq!(v[0]["errors_by_reason"]["http_500"], 4, "{v}");
    let s = scores(&env).await;
    assert_eq!(s.len(), n);
    let errors: Vec<_> = s.iter().filter(|x| x.1 == "error").collect();
    assert_eq!(errors.len(), 4);
    assert!(errors.iter().all(|e| e.2.is_empty() && e.3.contains("HTTP 500") && e.3.contains("4 attempts")), "{errors:?}");

    // The next run scores only the failed companies again; the partition stays one row each.
    let (url, count) = misbehaving_server(vec![], Good).await;
    set_scoring(&env, &format!("endpoint = \"container\"\nurl = \"{url}\"\n{FLAKY}"));
    let (ok, v, err) = score(&env);
    assert!(ok, "{err}");
    assert_eq!(v[0]["kept"], (n - 4) as u64, "{v}");
    assert_eq!(v[0]["scored"], 4, "{v}");
    assert_eq!(count.load(Ordering::SeqCst), 1, "one call for the four companies left");
    let s = scores(&env).await;
    assert_eq!(s.len(), n);
    assert!(s.iter().all(|x| x.1 == "scored"));

    // The scores flow into tenants and churn_features (the seed's enriched companies). Both ran
    // for this date before the scores existed and read scores as published, so without --force
    // they are up to date (the next date's run reads these scores).
    let out = runner(&env, &["run", "tenants", "churn_features", "--at", AS_OF, "--force"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for table in ["tenants", "churn_features"] {
        let q = format!(
            "SELECT count(*) FROM {table} t JOIN churn_scores s ON s.companyID = t.companyID AND s.dt = t.as_of \
             WHERE t.as_of = DATE '{AS_OF}' AND t.riskOfChurn = s.churn"
        );
        assert_eq!(env.query(&q).await[1], n.to_string(), "{table}.riskOfChurn is the score's label");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_opens_the_circuit_and_fails_the_run_with_every_company_recorded() {
    let (url, count) = misbehaving_server(vec![], Act::Error500).await;
    let env = env_with(&format!("endpoint = \"container\"\nurl = \"{url}\"\n{FLAKY}breaker_failures = 5\n"));
    let n = company_count(&env).await;
    let (ok, _, err) = score(&env);
    assert!(!ok, "a run that scored nothing fails");
    assert!(err.contains("the endpoint scored no company"), "{err}");
    assert!(count.load(Ordering::SeqCst) <= 5 + 3, "the breaker stopped the calls: {}", count.load(Ordering::SeqCst));
    let s = scores(&env).await;
    assert_eq!(s.len(), n, "every company recorded");
    assert!(s.iter().all(|x| x.1 == "error"));
    assert!(s.iter().any(|x| x.3.starts_with("circuit_open")), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_gateway_calls_carry_the_key_and_a_sigv4_signature_and_neither_leaks() {
    let (url, _, heads) = recording_server(vec![Act::Error500], Act::Good).await;
    let env = env_with(&format!(
        "endpoint = \"apigateway\"\nurl = \"{url}/assessChurn\"\napi_key_env = \"CHURN_TEST_KEY\"\nsigv4 = true\nregion = \"eu-west-1\"\n{FLAKY}"
    ));
    let n = company_count(&env).await;
    let out = runner(&env, &["-vv", "run", "score_churn", "--at", AS_OF, "--format", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), n + 1, "one call per company, one retry");
    for h in &heads {
        assert!(h.contains(&format!("x-api-key: {}", API_KEY.to_ascii_lowercase())), "{h}");
        assert!(h.contains("authorization: aws4-hmac-sha256 credential=akidtesting/"), "{h}");
        assert!(h.contains("/eu-west-1/execute-api/aws4_request"), "{h}");
    }
    let s = scores(&env).await;
    assert_eq!(s.len(), n);
    assert!(s.iter().all(|x| x.1 == "scored" && x.2 == "true"), "the answer `{{ \"churn\":true}}` is read: {s:?}");
    // Neither the key nor the secret reaches the logs, the summary or the table.
    let everything = format!(
        "{}{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        env.query("SELECT * FROM churn_scores").await.join("\n")
    );
    for secret in [API_KEY, "testing-secret"] {
        assert!(!everything.contains(secret), "`{secret}` leaked");
    }
}

/// The demo as a new user runs it (`make demo`: `runner run --all` on the committed sample in
/// data/drops, the shipped model): the answers make sense. Both classes are scored, some tenants
/// do the very minimum and some do not, and companies_enriched holds every scored company with
/// the risk of that run.
#[tokio::test]
async fn the_demo_scores_both_classes_and_enriches_every_company_in_one_run() {
    let env = TestEnv::new();
    for f in common::walk(&Path::new(REPO).join("data/drops")) {
        let dest = env.root().join("drops").join(f.strip_prefix(Path::new(REPO).join("data/drops")).unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, dest).unwrap();
    }
    let out = runner(&env, &["run", "--all", "--at", AS_OF, "--format", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let score = runs.as_array().unwrap().iter().find(|r| r["job"] == "score_churn").expect("score_churn ran");
    assert!(score["out_of_range"].as_u64().unwrap() * 5 <= score["companies"].as_u64().unwrap(), "{score}");

    let classes = env.query(&format!("SELECT DISTINCT churn FROM churn_scores WHERE dt = DATE '{AS_OF}' ORDER BY churn")).await;
    assert_eq!(classes, ["churn", "false", "true"], "the demo's scores hold both classes");
    let minimal = env.query("SELECT DISTINCT minimal_activity FROM tenants ORDER BY minimal_activity").await;
    assert_eq!(minimal, ["minimal_activity", "false", "true"]);
    let spread =
        env.query(&format!("SELECT count(*) FROM churn_scores WHERE score BETWEEN 0.05 AND 0.95 AND dt = DATE '{AS_OF}'")).await;
    assert!(spread[1].parse::<u64>().unwrap() >= 3, "scores spread between the classes: {spread:?}");

    // One run: every scored company is in companies_enriched with this run's risk.
    let check = env
        .query(&format!(
            "SELECT count(*) AS scored, \
                    count(e.companyID) AS enriched, \
                    sum(CASE WHEN e.riskOfChurn = s.churn AND e.churn_score = s.score AND e.score_status = 'scored' THEN 1 ELSE 0 END) AS same \
             FROM churn_scores s LEFT JOIN companies_enriched e ON e.companyID = s.companyID AND e.as_of = s.dt \
             WHERE s.dt = DATE '{AS_OF}' AND s.status = 'scored'"
        ))
        .await;
    let n: Vec<u64> = check[1].split(',').map(|v| v.parse().unwrap()).collect();
    assert!(n[0] >= 20, "{check:?}");
    assert_eq!((n[1], n[2]), (n[0], n[0]), "{check:?}");
    let total = env.query(&format!("SELECT count(*) FROM companies_enriched WHERE as_of = DATE '{AS_OF}'")).await;
    assert_eq!(total[1], company_count(&env).await.to_string());
    // tenants ran before this date's scores: its risk is empty and says so (never scored).
    let stale = env.query("SELECT count(*) FROM tenants WHERE riskOfChurn IS NOT NULL OR risk_scored_on IS NOT NULL").await;
    assert_eq!(stale[1], "0");
}

/// Tenants far outside the model's training range (3 days of history: job90 far below the
/// training minimum of 10): the run reports the drift, flags each such row in churn_scores and
/// records the drift per feature; with `refuse = true` it publishes no score.
#[tokio::test]
async fn drift_outside_the_training_range_is_reported_flagged_and_can_refuse_to_publish() {
    let env = env_with("");
    let (ok, v, stderr) = score(&env);
    assert!(ok, "{stderr}");
    let companies = v[0]["companies"].as_u64().unwrap();
    assert!(v[0]["out_of_range"].as_u64().unwrap() * 10 >= companies * 8, "{v}");
    assert!(v[0]["out_of_range_by_feature"]["job90"].as_u64().unwrap() > 0, "{v}");
    assert!(stderr.contains("WARNING") && stderr.contains("outside the model's training range"), "{stderr}");
    assert!(stderr.contains("job90") && stderr.contains("below 10"), "{stderr}");

    let flagged =
        env.query(&format!("SELECT count(*) FROM churn_scores WHERE dt = DATE '{AS_OF}' AND out_of_range LIKE '%job90%'")).await;
    assert_eq!(flagged[1], v[0]["out_of_range_by_feature"]["job90"].to_string());
    let drift = env
        .query(&format!(
            "SELECT feature, rows, below_min, level FROM churn_drift WHERE dt = DATE '{AS_OF}' AND feature = 'job90'"
        ))
        .await;
    let cells: Vec<&str> = drift[1].split(',').collect();
    assert_eq!(cells[1], companies.to_string(), "{drift:?}");
    assert!(cells[2].parse::<u64>().unwrap() > 0, "{drift:?}");
    assert_eq!(cells[3], "too_few_rows", "PSI needs 50 rows: {drift:?}");

    // Refuse: the run fails, says why, publishes no score; the drift is still recorded.
    drop_scores(&env);
    set_scoring(&env, "[scoring.drift]\nrefuse = true\n");
    let (ok, _, stderr) = score(&env);
    assert!(!ok, "a refused run fails");
    assert!(stderr.contains("scoring.drift.refuse is set, so no score was published"), "{stderr}");
    let none = env.query(&format!("SELECT count(*) FROM churn_scores WHERE dt = DATE '{AS_OF}'")).await;
    assert_eq!(none[1], "0");
    let drift = env.query(&format!("SELECT count(*) FROM churn_drift WHERE dt = DATE '{AS_OF}'")).await;
    assert_eq!(drift[1], "6", "one row per model feature");
}
