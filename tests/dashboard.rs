//! The dashboard, seen the way a person sees it: `runner dashboard --port 0` started for real on
//! 127.0.0.1 and loaded in headless Chromium (Debian's `chromium`, which `make test` installs);
//! every chart drawn with the number of marks its SQL yields, the company filter changing the
//! jobs charts, no console error, a screenshot kept as a test artifact; the `--out` report drawn
//! the same from a file; and the QuickSight template accepted by `cfn-lint`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{TestEnv, text};
use serde_json::Value;

const END: &str = "2026-11-20";

/// Headless Chromium: `RUNNER_TEST_CHROMIUM`, else `chromium` on the PATH. Without one the
/// test fails saying how to get it: it never passes without having looked.
fn chromium() -> String {
    let candidates: Vec<String> =
        std::env::var("RUNNER_TEST_CHROMIUM").ok().into_iter().chain(["chromium".into(), "chromium-browser".into()]).collect();
    for c in &candidates {
        if Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return c.clone();
        }
    }
    panic!(
        "this test needs headless Chromium (tried {candidates:?}): `make test` installs Debian's `chromium`, or set RUNNER_TEST_CHROMIUM"
    )
}

fn browser(args: &[&str], url: &str) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=15000", "--timeout=60000"])
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium failed on {url}: {}", text(&out.stderr));
    out
}

/// What the page reports after drawing: per chart its kind and marks, and console errors.
fn rendered(url: &str) -> Value {
    // At a laptop's width, where the sheets lay cards out in three columns.
    let dom = text(&browser(&["--window-size=1400,3200", "--dump-dom"], url).stdout);
    let start = dom.find("<pre id=\"render-report\"").unwrap_or_else(|| panic!("no render report in the page:\n{dom}"));
    let body = &dom[dom[start..].find('>').unwrap() + start + 1..];
    let json = &body[..body.find("</pre>").unwrap()];
    assert!(!json.is_empty(), "the page did not finish drawing:\n{dom}");
    serde_json::from_str(&json.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\""))
        .unwrap_or_else(|e| panic!("{e}: {json}"))
}

/// The marks each chart should draw, from its SQL run in-process: a slice, bar or point per
/// row and value column; a stacked chart one bar per date and reason; a table one row per row.
async fn expected_marks(env: &TestEnv, company: &str) -> BTreeMap<String, u64> {
    let ws = env.workspace();
    let charts = runner::dashboard::load(&Path::new(common::REPO).join("sql/dashboard")).unwrap();
    let as_of: chrono::NaiveDate = END.parse().unwrap();
    let mut out = BTreeMap::new();
    let ctx = runner::engine::session(&ws).await.unwrap();
    for c in &charts {
        let v = runner::dashboard::run_chart(&ctx, c, as_of, company).await;
        assert!(v.get("error").is_none(), "{}: {}", c.id, v["error"]);
        let rows = v["rows"].as_array().unwrap();
        let non_null = |col: &str| rows.iter().filter(|r| !r[col].is_null()).count() as u64;
        let marks = match c.kind {
            runner::dashboard::ChartKind::Table => rows.len() as u64,
            runner::dashboard::ChartKind::Stacked => {
                let distinct =
                    |col: &str| rows.iter().map(|r| r[col].to_string()).collect::<std::collections::BTreeSet<_>>().len();
                (distinct(c.x.as_deref().unwrap()) * distinct(c.series.as_deref().unwrap())) as u64
            }
            _ => c.y.iter().chain(&c.y2).map(|y| non_null(y)).sum(),
        };
        out.insert(c.id.clone(), marks);
    }
    out
}

struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `runner dashboard --port 0`, and the address it printed.
fn serve(env: &TestEnv) -> Server {
    let mut child = common::cmd_in(env.root(), &env.config_path(), &["dashboard", "--port", "0"]).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines.next().expect("the dashboard printed its address").unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://127.0.0.1:")).unwrap_or_else(|| panic!("{line}"));
    Server(child, url.to_string())
}

fn marks(report: &Value) -> BTreeMap<String, u64> {
    report["charts"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v["marks"].as_u64().unwrap())).collect()
}

fn artifact(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A workspace with `days` of drops of `tenants` tenants ending on END.
fn with_drops(tenants: &str, days: &str) -> TestEnv {
    let env = TestEnv::new();
    let sim = common::bin()
        .args(["simulate", "--tenants", tenants, "--days", days, "--end-date", END, "--out"])
        .arg(env.root().join("drops"))
        .output()
        .unwrap();
    assert!(sim.status.success(), "{}", text(&sim.stderr));
    env
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_draws_every_chart_and_the_company_filter_works() {
    let env = with_drops("25", "40");
    let run = common::cmd_in(env.root(), &env.config_path(), &["run", "--all", "--at", END]).output().unwrap();
    assert!(run.status.success(), "{}", text(&run.stderr));

    let server = serve(&env);
    let all = rendered(&format!("{}?as_of={END}", server.1));
    assert_eq!(all["errors"], serde_json::json!([]), "console errors: {}", all["errors"]);
    assert_eq!(all["as_of"], END);
    let want = expected_marks(&env, "").await;
    assert_eq!(marks(&all), want, "marks per chart, all companies");
    // The donut: one slice per industry.
    let industries = common::cmd_in(
        env.root(),
        &env.config_path(),
        &["query", &format!("SELECT COUNT(DISTINCT industry) AS n FROM tenants WHERE as_of = DATE '{END}'"), "--format", "csv"],
    )
    .output()
    .unwrap();
    let n: u64 = text(&industries.stdout).lines().nth(1).unwrap().trim().parse().unwrap();
    assert!(n >= 3);
    assert_eq!(want["customers_per_industry"], n);
    for (id, m) in &want {
        assert!(*m > 0, "chart {id} drew nothing, so the fixture proves nothing about it");
    }
    // What a person sees: every category of a chart labelled (no skipped ticks), every table's
    // headers aligned as their cells, no card with content past its edge.
    for (id, c) in all["charts"].as_object().unwrap() {
        if c["kind"] != "line" && c.get("categories").is_some() {
            assert_eq!(
                c["labelled"], c["categories"],
                "chart {id}: only {} of {} categories labelled",
                c["labelled"], c["categories"]
            );
        }
        if c["kind"] == "table" {
            assert_eq!(c["misaligned"], 0, "table {id}: headers not aligned as their cells");
        }
    }
    assert_eq!(all["overflowing"], serde_json::json!([]), "cards with content past their edge");
    assert_eq!(all["holes"], 0, "rows of cards that leave part of the sheet empty");

    // One company: the filtered jobs charts change, the others do not.
    let one = rendered(&format!("{}?as_of={END}&company=comp_1", server.1));
    assert_eq!(one["company"], "comp_1");
    assert_eq!(marks(&one), expected_marks(&env, "comp_1").await);
    assert!(marks(&one)["jobs_by_date"] < marks(&all)["jobs_by_date"]);
    assert_eq!(marks(&one)["job30_job90_per_company"], 2, "job30 and job90 of one company");
    assert_eq!(marks(&one)["customers_per_industry"], marks(&all)["customers_per_industry"]);

    // A screenshot, kept for people to look at.
    let png = artifact("dashboard.png");
    let _ = std::fs::remove_file(&png);
    browser(&["--window-size=1400,4400", &format!("--screenshot={}", png.display())], &format!("{}?as_of={END}", server.1));
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 50_000, "{} is not a full screenshot", png.display());
    // And one per sheet, for a reviewer: each sheet alone, as `?sheet=` draws it.
    for sheet in ["Customer Monitoring", "Jobs", "Churn", "Operations"] {
        let url = format!("{}?as_of={END}&sheet={}", server.1, sheet.replace(' ', "%20"));
        let one = rendered(&url);
        assert!(!one["charts"].as_object().unwrap().is_empty(), "sheet {sheet} drew no chart");
        assert!(one["charts"].as_object().unwrap().len() < all["charts"].as_object().unwrap().len(), "{sheet} alone");
        let png = artifact(&format!("dashboard-{}.png", sheet.to_lowercase().replace(' ', "-")));
        let _ = std::fs::remove_file(&png);
        browser(&["--window-size=1400,1600", &format!("--screenshot={}", png.display())], &url);
        assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"), "{}", png.display());
    }

    // The same sheets as one file: drawn the same, without the server.
    drop(server);
    let report = artifact("report.html");
    let o = common::cmd_in(env.root(), &env.config_path(), &["dashboard", "--out", report.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "the report loads something from the network");
    let offline = rendered(&format!("file://{}", report.display()));
    assert_eq!(offline["errors"], serde_json::json!([]));
    assert_eq!(marks(&offline), want);
}

#[test]
fn the_quicksight_template_has_a_dataset_per_table_and_passes_cfn_lint() {
    let env = with_drops("3", "3");
    let before = common::cmd_in(env.root(), &env.config_path(), &["quicksight", "export"]).output().unwrap();
    assert_eq!(before.status.code(), Some(2), "no table yet: {}", text(&before.stderr));
    assert!(text(&before.stderr).contains("runner run --all"));
    let run = common::cmd_in(env.root(), &env.config_path(), &["run", "--all", "--at", END]).output().unwrap();
    assert!(run.status.success(), "{}", text(&run.stderr));

    let path = env.root().join("quicksight.json");
    let o = common::cmd_in(env.root(), &env.config_path(), &["quicksight", "export", "--out", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let t: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let tables = text(&common::cmd_in(env.root(), &env.config_path(), &["tables", "--format", "csv"]).output().unwrap().stdout);
    let names: Vec<&str> = tables.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    let resources = t["Resources"].as_object().unwrap();
    let datasets: Vec<&Value> = resources.values().filter(|r| r["Type"] == "AWS::QuickSight::DataSet").collect();
    assert_eq!(datasets.len(), names.len());
    let tenants = datasets
        .iter()
        .find(|d| d["Properties"]["PhysicalTableMap"]["table"]["RelationalTable"]["Name"] == "tenants")
        .expect("a tenants dataset");
    let cols = tenants["Properties"]["PhysicalTableMap"]["table"]["RelationalTable"]["InputColumns"].as_array().unwrap();
    let ty = |n: &str| cols.iter().find(|c| c["Name"] == n).unwrap()["Type"].as_str().unwrap().to_string();
    assert_eq!(ty("as_of"), "DATETIME");
    assert_eq!(ty("job30"), "INTEGER");
    assert_eq!(ty("companyID"), "STRING");

    // cfn-lint, from the test Python (`make test` installs it).
    let py = common::python_with(&["cfnlint"]);
    let lint = Command::new(&py)
        .args(["-c", "import sys; from cfnlint.runner import main; sys.argv = ['cfn-lint'] + sys.argv[1:]; sys.exit(main())"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(lint.status.success(), "cfn-lint: {}{}", text(&lint.stdout), text(&lint.stderr));
    // ... which does reject a broken one, so its pass means something.
    let broken = env.root().join("broken.json");
    std::fs::write(&broken, std::fs::read_to_string(&path).unwrap().replacen("\"INTEGER\"", "\"INTEGR\"", 1)).unwrap();
    let lint = Command::new(&py)
        .args(["-c", "import sys; from cfnlint.runner import main; sys.argv = ['cfn-lint'] + sys.argv[1:]; sys.exit(main())"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!lint.status.success());
}
