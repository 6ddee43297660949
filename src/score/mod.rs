//! The scoring job (`jobs/score_churn.toml`): every company of `churn_features` for the run date,
//! through the configured churn endpoint, into `churn_scores` (partitioned by `dt`, the run date).
//!
//! Nothing is lost: a company whose features do not make a model row, or whose call fails for
//! good, is written with status `error` and the reason, never dropped and never defaulted to
//! false. Scores are idempotent per company, date and model: a rerun for the same date keeps the
//! companies already scored by the same model version, scores the others again, and replaces
//! the date's partition through write-audit-publish, so no score is ever duplicated.

pub mod endpoint;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Date32Array, Float64Array, Float64Builder, RecordBatch, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, TimeUnit};
use chrono::{NaiveDate, Utc};
use futures::StreamExt;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::job::{Job, WriteMode};
use crate::model::{Company, ModelDecl, Prediction};
use crate::progress::Progress;
use crate::transform::{OutputSpec, SqlSummary, publish_output};
use crate::workspace::Workspace;
use endpoint::{Endpoint, Item};

/// What a scoring job reads and writes (its `[score]` section).
#[derive(Debug, Clone)]
pub struct ScoreJob {
    /// The Company entity per company and as-of date (`churn_features`).
    pub input: String,
    /// Where scores go (`churn_scores`).
    pub output: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ScoreSummary {
    pub job: String,
    pub as_of: String,
    pub model_id: String,
    pub model_version: String,
    pub endpoint: String,
    pub companies: u64,
    pub scored: u64,
    /// Companies scored by an earlier run of the same date and model, kept as they were.
    pub kept: u64,
    pub churn: u64,
    pub errors: u64,
    pub errors_by_reason: BTreeMap<String, u64>,
    /// Companies whose industry the model does not know (scored with an all-zero one-hot).
    pub unknown_industry: u64,
    pub calls: u64,
    pub retries: u64,
    pub files: u64,
    pub seconds: f64,
}

/// One company's outcome.
struct Scored {
    company_id: String,
    prediction: Option<Prediction>,
    scored_at: i64,
    endpoint: String,
    error: Option<String>,
}

pub async fn run(
    ws: &Workspace,
    job: &Job,
    sj: &ScoreJob,
    as_of: NaiveDate,
    run_id: &str,
    progress: &Progress,
) -> Result<ScoreSummary> {
    let started = Instant::now();
    let settings = &ws.config.scoring;
    let model = Arc::new(ModelDecl::load(&settings.model)?);
    let endpoint = Arc::new(Endpoint::new(settings, model.clone()).await?);
    let endpoint_name = endpoint.describe();
    let mut summary = ScoreSummary {
        job: job.name.clone(),
        as_of: as_of.to_string(),
        model_id: model.id.clone(),
        model_version: model.version.clone(),
        endpoint: endpoint_name.clone(),
        ..Default::default()
    };
    let ctx = crate::engine::session_for(ws, Some(&[sj.input.clone(), sj.output.clone()])).await?;
    let companies = read_companies(&ctx, &sj.input, as_of).await?;
    summary.companies = companies.len() as u64;
    let kept = previous_scores(ws, &ctx, &sj.output, as_of, &model).await?;

    // Companies to score: model rows, or an error for the ones that cannot make one.
    let now = Utc::now().timestamp_millis();
    let mut results: Vec<Scored> = Vec::new();
    let mut items = Vec::new();
    for c in &companies {
        if let Some(prev) = kept.get(&c.company_id) {
            results.push(Scored {
                company_id: c.company_id.clone(),
                prediction: Some(prev.0),
                scored_at: prev.1,
                endpoint: prev.2.clone(),
                error: None,
            });
            summary.kept += 1;
            continue;
        }
        match model.row(c) {
            Ok(row) => {
                summary.unknown_industry += u64::from(row.unknown_industry);
                items.push(Item { company_id: c.company_id.clone(), json: company_json(c), row });
            }
            Err(e) => results.push(Scored {
                company_id: c.company_id.clone(),
                prediction: None,
                scored_at: now,
                endpoint: endpoint_name.clone(),
                error: Some(format!("invalid_input: {e}")),
            }),
        }
    }

    let attempted = items.len();
    progress.start(&job.name, attempted as u64);
    let batches: Vec<Vec<Item>> = items.chunks(endpoint.batch_size(&items)).map(<[Item]>::to_vec).collect();
    let mut calls = futures::stream::iter(batches)
        .map(|batch| {
            let endpoint = endpoint.clone();
            async move {
                let r = endpoint.score(&batch).await;
                (batch, r)
            }
        })
        .buffer_unordered(settings.concurrency);
    while let Some((batch, r)) = calls.next().await {
        let at = Utc::now().timestamp_millis();
        for (i, item) in batch.iter().enumerate() {
            let (prediction, error) = match &r {
                Ok(p) => (Some(p[i]), None),
                Err((code, msg)) => (None, Some(format!("{code}: {msg}"))),
            };
            results.push(Scored {
                company_id: item.company_id.clone(),
                prediction,
                scored_at: at,
                endpoint: endpoint_name.clone(),
                error,
            });
            progress.inc();
        }
    }
    drop(calls);
    progress.finish();
    summary.calls = endpoint.stats.calls.load(Ordering::Relaxed);
    summary.retries = endpoint.stats.retries.load(Ordering::Relaxed);
    for r in &results {
        match (&r.prediction, &r.error) {
            (Some(p), _) => summary.churn += u64::from(p.predicted_label == 1),
            (None, Some(e)) => {
                summary.errors += 1;
                let code = e.split(':').next().unwrap_or("error").to_string();
                *summary.errors_by_reason.entry(code).or_default() += 1;
            }
            (None, None) => unreachable!("a result is a prediction or an error"),
        }
    }
    // Scored by this run: every prediction but the kept ones.
    summary.scored = results.iter().filter(|r| r.prediction.is_some()).count() as u64 - summary.kept;

    // Publish the date's partition: kept, new and failed companies together.
    results.sort_by(|a, b| a.company_id.cmp(&b.company_id));
    let batch = to_batch(&results, &model, as_of)?;
    let schema = batch.schema();
    let spec = OutputSpec {
        output: sj.output.clone(),
        partition_by: vec!["dt".into()],
        mode: WriteMode::ReplacePartitions,
        checks: crate::job::Checks {
            not_null: vec!["companyID".into(), "status".into(), "dt".into()],
            unique: vec!["companyID".into(), "dt".into()],
            accepted_values: [("status".to_string(), vec!["scored".to_string(), "error".to_string()])].into(),
            ..Default::default()
        },
        source: settings.model.display().to_string(),
    };
    let mut out = SqlSummary::default();
    let expected = BTreeSet::from([vec![as_of.to_string()]]);
    publish_output(ws, job, &spec, &schema, vec![batch], expected, run_id, false, &mut out).await?;
    summary.files = out.files;
    summary.seconds = started.elapsed().as_secs_f64();
    // An endpoint that answered none of the calls fails the run (after recording every company);
    // companies whose features make no model row are data problems, reported but not fatal.
    if attempted > 0 && summary.scored == 0 {
        let reasons: Vec<String> = summary.errors_by_reason.iter().map(|(k, v)| format!("{k}={v}")).collect();
        return Err(Error::Failed(format!(
            "job `{}`: the endpoint scored no company ({}); every company is recorded in `{}` with status `error` and will be scored again on the next run",
            job.name,
            reasons.join(" "),
            sj.output
        )));
    }
    Ok(summary)
}

/// The companies of `input` as of the date, as Company entities.
async fn read_companies(ctx: &datafusion::prelude::SessionContext, input: &str, as_of: NaiveDate) -> Result<Vec<Company>> {
    let sql = format!(
        "SELECT companyID, industry, CAST(revenu AS DOUBLE) AS revenu, CAST(employees AS DOUBLE) AS employees, \
         CAST(job30 AS DOUBLE) AS job30, CAST(job90 AS DOUBLE) AS job90, CAST(monthlyFee AS DOUBLE) AS monthlyFee, \
         CAST(totalFee AS DOUBLE) AS totalFee, riskOfChurn FROM \"{input}\" WHERE as_of = $as_of ORDER BY companyID"
    );
    let what = format!("reading `{input}` for scoring");
    let df = ctx.sql(&sql).await.map_err(Error::df(what.clone()))?;
    let df = df.with_param_values(crate::transform::params(as_of, (as_of, as_of))).map_err(Error::df(what.clone()))?;
    let batches = crate::engine::plain_types(df.collect().await.map_err(Error::df(what))?)?;
    let mut out = Vec::new();
    for b in &batches {
        let s = |i: usize| b.column(i).as_string::<i32>().clone();
        let f = |i: usize| b.column(i).as_primitive::<Float64Type>().clone();
        let (id, ind) = (s(0), s(1));
        let nums: Vec<Float64Array> = (2..8).map(f).collect();
        let risk = b.column(8).as_boolean().clone();
        for r in 0..b.num_rows() {
            let n = |k: usize| (!nums[k].is_null(r)).then(|| nums[k].value(r));
            out.push(Company {
                company_id: id.value(r).to_string(),
                industry: (!ind.is_null(r)).then(|| ind.value(r).to_string()),
                revenu: n(0),
                employees: n(1),
                job30: n(2),
                job90: n(3),
                monthly_fee: n(4),
                total_fee: n(5),
                risk_of_churn: (!risk.is_null(r)).then(|| risk.value(r)),
            });
        }
    }
    Ok(out)
}

/// Scores of `output` for the date by this model version: (prediction, scored_at, endpoint).
async fn previous_scores(
    ws: &Workspace,
    ctx: &datafusion::prelude::SessionContext,
    output: &str,
    as_of: NaiveDate,
    model: &ModelDecl,
) -> Result<HashMap<String, (Prediction, i64, String)>> {
    let mut out = HashMap::new();
    if ws.catalog.table(output).await?.is_none() {
        return Ok(out);
    }
    let sql = format!(
        "SELECT companyID, score, churn, CAST(scored_at AS BIGINT) AS at, endpoint FROM \"{output}\" \
         WHERE dt = $as_of AND status = 'scored' AND model_id = $model_id AND model_version = $model_version"
    );
    let what = format!("reading earlier scores of `{output}`");
    let params: HashMap<String, datafusion::common::ScalarValue> = [
        ("as_of".to_string(), datafusion::common::ScalarValue::Date32(Some(crate::transform::date32(as_of)))),
        ("model_id".to_string(), datafusion::common::ScalarValue::Utf8(Some(model.id.clone()))),
        ("model_version".to_string(), datafusion::common::ScalarValue::Utf8(Some(model.version.clone()))),
    ]
    .into();
    let df = ctx.sql(&sql).await.map_err(Error::df(what.clone()))?;
    let batches = df.with_param_values(params).map_err(Error::df(what.clone()))?.collect().await.map_err(Error::df(what))?;
    let batches = crate::engine::plain_types(batches)?;
    for b in &batches {
        let id = b.column(0).as_string::<i32>();
        let score = b.column(1).as_primitive::<Float64Type>();
        let churn = b.column(2).as_boolean();
        let at = b.column(3).as_primitive::<arrow::datatypes::Int64Type>();
        let ep = b.column(4).as_string::<i32>();
        for r in 0..b.num_rows() {
            let p = Prediction {
                score: if score.is_null(r) { f64::NAN } else { score.value(r) },
                predicted_label: u8::from(churn.value(r)),
            };
            out.insert(id.value(r).to_string(), (p, at.value(r), ep.value(r).to_string()));
        }
    }
    Ok(out)
}

/// The Company JSON API Gateway receives: integral numbers as integers, as the seed sent them.
fn company_json(c: &Company) -> serde_json::Value {
    let num = |v: Option<f64>| match v {
        Some(x) if x.fract() == 0.0 && x.abs() < 9e15 => serde_json::Value::from(x as i64),
        Some(x) => serde_json::Value::from(x),
        None => serde_json::Value::Null,
    };
    serde_json::json!({
        "companyID": c.company_id,
        "industry": c.industry,
        "revenu": num(c.revenu),
        "employees": num(c.employees),
        "job30": num(c.job30),
        "job90": num(c.job90),
        "monthlyFee": num(c.monthly_fee),
        "totalFee": num(c.total_fee),
        "riskOfChurn": c.risk_of_churn.unwrap_or(false),
    })
}

/// The `churn_scores` rows (the columns of `schemas/tables/churn_scores.toml`, then `dt`).
fn to_batch(results: &[Scored], model: &ModelDecl, as_of: NaiveDate) -> Result<RecordBatch> {
    let n = results.len();
    let (mut id, mut score, mut churn) = (StringBuilder::new(), Float64Builder::new(), BooleanBuilder::new());
    let (mut mid, mut mver, mut ep) = (StringBuilder::new(), StringBuilder::new(), StringBuilder::new());
    let mut at = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let (mut status, mut error) = (StringBuilder::new(), StringBuilder::new());
    for r in results {
        id.append_value(&r.company_id);
        score.append_option(r.prediction.and_then(|p| p.score.is_finite().then_some(p.score)));
        churn.append_option(r.prediction.map(|p| p.predicted_label == 1));
        mid.append_value(&model.id);
        mver.append_value(&model.version);
        ep.append_value(&r.endpoint);
        at.append_value(r.scored_at);
        status.append_value(if r.prediction.is_some() { "scored" } else { "error" });
        error.append_option(r.error.as_deref());
    }
    let day = crate::transform::date32(as_of);
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("companyID", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
        Field::new("churn", DataType::Boolean, true),
        Field::new("model_id", DataType::Utf8, true),
        Field::new("model_version", DataType::Utf8, true),
        Field::new("endpoint", DataType::Utf8, true),
        Field::new("scored_at", ts, true),
        Field::new("status", DataType::Utf8, true),
        Field::new("error", DataType::Utf8, true),
        Field::new("dt", DataType::Date32, true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(score.finish()),
        Arc::new(churn.finish()),
        Arc::new(mid.finish()),
        Arc::new(mver.finish()),
        Arc::new(ep.finish()),
        Arc::new(at.finish()),
        Arc::new(status.finish()),
        Arc::new(error.finish()),
        Arc::new(Date32Array::from(vec![day; n])),
    ];
    RecordBatch::try_new(schema, cols).map_err(Error::arrow("building churn_scores rows"))
}
