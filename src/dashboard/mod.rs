//! `runner dashboard`: the seed's QuickSight sheets (Customer Monitoring, Jobs) and what this
//! pipeline adds (Churn, Operations), as a web page served by the runner or one self-contained
//! HTML file.
//!
//! Every chart is a SQL file in `sql/dashboard/` (run in file-name order) whose leading comment
//! says how to draw it ([`ChartSpec`]): an analyst changes a chart by changing its SQL. The SQL
//! runs through the same engine and catalog as `runner query` (local, Ballista, or S3 with
//! Glue), with the typed parameters `$as_of` (DATE, the selected date) and `$company` (the
//! selected company, `''` for all). The page draws with Chart.js, vendored into the binary
//! (`vendor/`, MIT), so it works offline.

pub mod quicksight;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::NaiveDate;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::workspace::Workspace;

const PAGE: &str = include_str!("page.html");
const CHART_JS: &str = include_str!("vendor/chart.umd.min.js");

/// How a chart is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChartKind {
    /// One slice per row: `x` labels, `y` sizes.
    Doughnut,
    /// Vertical bars: one series per `y` column.
    Bar,
    /// Horizontal bars (rankings).
    Hbar,
    /// Lines over `x`; `y2` on a second axis.
    Line,
    /// Bars stacked by the values of `series` (long form: x, series, y).
    Stacked,
    /// The rows as they are.
    Table,
}

/// A chart: its SQL file and the comment header that says how to draw it.
#[derive(Debug, Clone, Serialize)]
pub struct ChartSpec {
    /// The file name without its order prefix and `.sql`.
    pub id: String,
    pub title: String,
    pub sheet: String,
    pub kind: ChartKind,
    pub x: Option<String>,
    pub y: Vec<String>,
    pub y2: Option<String>,
    pub series: Option<String>,
    /// The comment lines that are not keys: what the chart shows.
    pub note: String,
    /// `sql/dashboard/<file>`, shown under the chart.
    pub source: String,
    #[serde(skip)]
    pub sql: String,
    #[serde(skip)]
    pub file: PathBuf,
}

/// The charts in `dir` (`sql/dashboard/`), in file-name order.
pub fn load(dir: &Path) -> Result<Vec<ChartSpec>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::Config {
            file: dir.display().to_string(),
            message: format!("cannot read the dashboard's SQL folder: {e}"),
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    let charts = files.iter().map(|f| parse(f)).collect::<Result<Vec<_>>>()?;
    if charts.is_empty() {
        return Err(Error::Config { file: dir.display().to_string(), message: "no chart: add a .sql file".into() });
    }
    Ok(charts)
}

fn parse(file: &Path) -> Result<ChartSpec> {
    let err = |m: String| Error::Config { file: file.display().to_string(), message: m };
    let sql = std::fs::read_to_string(file).map_err(|e| err(format!("cannot read: {e}")))?;
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    let id = stem.trim_start_matches(|c: char| c.is_ascii_digit()).trim_start_matches('_').to_string();
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    let mut note = Vec::new();
    for line in sql.lines().map(str::trim).take_while(|l| l.starts_with("--")) {
        let text = line.trim_start_matches('-').trim();
        match text.split_once(':') {
            Some((k, v)) if ["title", "sheet", "chart", "x", "y", "y2", "series"].contains(&k.trim()) => {
                keys.insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => note.push(text),
        }
    }
    let need = |k: &str| keys.get(k).cloned().ok_or_else(|| err(format!("the header has no `-- {k}: ...` line")));
    let kind: ChartKind = serde_json::from_value(Value::String(need("chart")?)).map_err(|_| {
        err(format!("`-- chart: {}` is not a chart: write doughnut, bar, hbar, line, stacked or table", keys["chart"]))
    })?;
    let y: Vec<String> =
        keys.get("y").map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()).unwrap_or_default();
    if kind != ChartKind::Table {
        need("x")?;
        if y.is_empty() {
            return Err(err("the header has no `-- y: ...` line (the value columns)".into()));
        }
    }
    if kind == ChartKind::Stacked {
        need("series")?;
    }
    Ok(ChartSpec {
        id,
        title: need("title")?,
        sheet: need("sheet")?,
        kind,
        x: keys.get("x").cloned(),
        y,
        y2: keys.get("y2").cloned(),
        series: keys.get("series").cloned(),
        note: note.join(" "),
        source: format!("sql/dashboard/{}", file.file_name().and_then(|n| n.to_str()).unwrap_or_default()),
        sql,
        file: file.to_path_buf(),
    })
}

/// The selection every chart is run for.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Selection {
    pub as_of: Option<NaiveDate>,
    #[serde(default)]
    pub company: String,
}

/// One chart's rows for a selection (JSON objects, with the columns in order), or the error
/// that stopped it: a chart that fails shows its error, the others still draw.
/// `ctx` is a session over the catalog (`engine::session`), shared by the charts of one page.
pub async fn run_chart(ctx: &SessionContext, chart: &ChartSpec, as_of: NaiveDate, company: &str) -> Value {
    match rows(ctx, chart, as_of, company).await {
        Ok((columns, rows)) => json!({"columns": columns, "rows": rows}),
        // The card names its SQL file below the error: the message names it only when the
        // error itself does (a line in it), never twice.
        Err(e) => json!({"error": e.to_string()}),
    }
}

async fn rows(ctx: &SessionContext, chart: &ChartSpec, as_of: NaiveDate, company: &str) -> Result<(Vec<String>, Value)> {
    let params = crate::engine::params_with(as_of, &[("company", company)]);
    let batches = crate::engine::collect_sql(ctx, &chart.sql, params, &chart.file.display().to_string()).await?;
    to_json(&batches)
}

/// Batches as column names and an array of row objects (nulls kept).
fn to_json(batches: &[RecordBatch]) -> Result<(Vec<String>, Value)> {
    let columns = batches.first().map(|b| b.schema().fields().iter().map(|f| f.name().clone()).collect()).unwrap_or_default();
    let mut buf = Vec::new();
    {
        let mut w =
            arrow::json::WriterBuilder::new().with_explicit_nulls(true).build::<_, arrow::json::writer::JsonArray>(&mut buf);
        w.write_batches(&batches.iter().collect::<Vec<_>>()).map_err(Error::arrow("writing chart rows"))?;
        w.finish().map_err(Error::arrow("writing chart rows"))?;
    }
    let rows =
        if buf.is_empty() { json!([]) } else { serde_json::from_slice(&buf).map_err(|e| Error::Internal(e.to_string()))? };
    Ok((columns, rows))
}

/// The dates the as-of selector offers (the `tenants` snapshots, newest first), and the
/// companies of the selected one.
pub async fn meta(ws: &Workspace, as_of: Option<NaiveDate>) -> Result<Value> {
    let has_tenants = ws.catalog.table("tenants").await?.is_some();
    if !has_tenants {
        return Ok(json!({"dates": [], "as_of": null, "companies": [], "database": ws.config.catalog.database}));
    }
    let ctx = crate::engine::session_for(ws, Some(&["tenants".to_string()])).await?;
    let what = "listing the dates of tenants";
    let df =
        ctx.sql("SELECT DISTINCT CAST(as_of AS VARCHAR) AS d FROM tenants ORDER BY d DESC").await.map_err(Error::df(what))?;
    let dates: Vec<String> = strings(&df.collect().await.map_err(Error::df(what))?);
    let as_of = as_of.or_else(|| dates.first().and_then(|d| d.parse::<NaiveDate>().ok()));
    let companies = match as_of {
        Some(day) => {
            let b = crate::engine::collect_sql(
                &ctx,
                "SELECT DISTINCT companyID FROM tenants WHERE as_of = $as_of ORDER BY companyID",
                crate::engine::params_with(day, &[]),
                "listing the companies of tenants",
            )
            .await?;
            strings(&b)
        }
        None => Vec::new(),
    };
    let as_of = as_of.map(|d| d.to_string());
    Ok(json!({"dates": dates, "as_of": as_of, "companies": companies, "database": ws.config.catalog.database}))
}

fn strings(batches: &[RecordBatch]) -> Vec<String> {
    use arrow::array::AsArray;
    batches
        .iter()
        .flat_map(|b| {
            let c = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).expect("strings cast to strings");
            c.as_string::<i32>().iter().flatten().map(str::to_string).collect::<Vec<_>>()
        })
        .collect()
}

/// The page: the template with Chart.js and `data` (for a static report; `null` when served).
fn page(charts: &[ChartSpec], data: Value) -> String {
    let boot = json!({"charts": charts, "data": data});
    // `</` inside a script would end it early: JSON escapes it.
    let boot = boot.to_string().replace("</", "<\\/");
    PAGE.replacen("/*CHART_JS*/", CHART_JS, 1).replacen("/*BOOT*/", &boot, 1)
}

/// `runner dashboard --out FILE`: every chart for one selection, in one HTML file that needs
/// nothing else (Chart.js and the rows are inside).
pub async fn report(ws: &Workspace, charts: &[ChartSpec], sel: &Selection) -> Result<String> {
    let meta = meta(ws, sel.as_of).await?;
    let as_of = meta["as_of"].as_str().and_then(|d| d.parse::<NaiveDate>().ok());
    let mut results = serde_json::Map::new();
    if let Some(day) = as_of {
        let sqls: Vec<&str> = charts.iter().map(|c| c.sql.as_str()).collect();
        let ctx = crate::engine::session_for_sql(ws, &sqls).await?;
        for c in charts {
            results.insert(c.id.clone(), run_chart(&ctx, c, day, &sel.company).await);
        }
    }
    Ok(page(charts, json!({"meta": meta, "company": sel.company, "results": results})))
}

struct App {
    ws: Workspace,
    charts: Vec<ChartSpec>,
}

/// `runner dashboard --port N`: serves the page until `shutdown`; `bound` gets the address.
pub async fn serve(
    ws: Workspace,
    charts: Vec<ChartSpec>,
    addr: SocketAddr,
    bound: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = Arc::new(App { ws, charts });
    let router = Router::new()
        .route("/", get(index))
        .route("/api/meta", get(api_meta))
        .route("/api/chart/{id}", get(api_chart))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Io { what: format!("binding {addr} (is the port in use? try --port 0)"), source: e })?;
    let local = listener.local_addr().map_err(|e| Error::Io { what: "reading the bound address".into(), source: e })?;
    bound(local);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::Io { what: "serving the dashboard".into(), source: e })
}

async fn index(State(app): State<Arc<App>>) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page(&app.charts, Value::Null)).into_response()
}

async fn api_meta(State(app): State<Arc<App>>, Query(sel): Query<Selection>) -> Response {
    match meta(&app.ws, sel.as_of).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"error": e.to_string()}))).into_response(),
    }
}

async fn api_chart(State(app): State<Arc<App>>, UrlPath(id): UrlPath<String>, Query(sel): Query<Selection>) -> Response {
    let Some(chart) = app.charts.iter().find(|c| c.id == id) else {
        return (StatusCode::NOT_FOUND, axum::Json(json!({"error": format!("no chart `{id}`")}))).into_response();
    };
    let Some(as_of) = sel.as_of else {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "as_of=YYYY-MM-DD is required"}))).into_response();
    };
    match crate::engine::session_for_sql(&app.ws, &[&chart.sql]).await {
        Ok(ctx) => axum::Json(run_chart(&ctx, chart, as_of, &sel.company).await).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"error": e.to_string()}))).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_committed_chart_parses_and_a_bad_header_names_the_fix() {
        let charts = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/dashboard")).unwrap();
        assert_eq!(charts[0].id, "customers_per_industry");
        assert_eq!(charts[0].kind, ChartKind::Doughnut);
        let sheets: Vec<&str> = charts.iter().map(|c| c.sheet.as_str()).collect();
        for s in ["Customer Monitoring", "Jobs", "Churn", "Operations"] {
            assert!(sheets.contains(&s), "{s}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("01_x.sql"), "-- title: X\n-- sheet: S\n-- chart: pie\nSELECT 1").unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("01_x.sql") && e.contains("doughnut, bar"), "{e}");
        std::fs::write(dir.path().join("01_x.sql"), "-- title: X\n-- sheet: S\n-- chart: bar\n-- x: a\nSELECT 1").unwrap();
        assert!(load(dir.path()).unwrap_err().to_string().contains("-- y:"));
    }
}
