//! The scoring job (`jobs/score_churn.toml`): every company of `churn_features` for the run date,
//! through the configured churn endpoint, into `churn_scores` (partitioned by `dt`, the run date).
//!
//! Nothing is lost: a company whose features do not make a model row, or whose call fails for
//! good, is written with status `error` and the reason, never dropped and never defaulted to
//! false. Scores are idempotent per company, date and model: a rerun for the same date keeps the
//! companies already scored by the same model version, scores the others again, and replaces
//! the date's partition through write-audit-publish, so no score is ever duplicated. The
//! columns of `churn_scores` are stated once, in `schemas/tables/churn_scores.toml`; each row
//! carries the run id of the run that wrote it.
//!
//! Before any call, the companies are compared with the model's training distribution
//! ([`crate::model::drift`]): each company with a feature outside the training range is flagged
//! in `churn_scores.out_of_range`, the drift per feature goes to the job's drift table
//! (`churn_drift`), and over `[scoring.drift]`'s thresholds the run warns loudly (or, with
//! `refuse = true`, fails without publishing scores).
//!
//! [`endpoint`] is the reliable client every call goes through; [`bench`] measures it against a
//! running model server (`runner model bench`).

pub mod bench;
pub mod endpoint;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Date32Array, Float64Array, Float64Builder, RecordBatch, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::{Float64Type, SchemaRef};
use chrono::{NaiveDate, Utc};
use futures::StreamExt;

use crate::catalog::DeclaredTable;
use crate::config::DriftSettings;
use crate::dates::date32;
use crate::error::{Error, Result};
use crate::job::{Checks, JobMetrics, KindCounts, ScoreCounts, ScoreJob, WriteMode};
use crate::model::drift::{self, FeatureDrift};
use crate::model::{Company, ModelDecl, Prediction};
use crate::output::notice;
use crate::publish::{OutputSpec, publish_output};
use crate::workspace::{JobRun, Workspace};
use endpoint::{Endpoint, Item};

/// One company's outcome.
struct Scored {
    company_id: String,
    prediction: Option<Prediction>,
    scored_at: i64,
    endpoint: String,
    error: Option<String>,
}

/// Scores every company of the input for the run's date and publishes the date's partition of
/// the output. A dry run reads the companies and says how many it would score; it calls nothing.
pub async fn run(r: &JobRun<'_>, sj: &ScoreJob) -> Result<JobMetrics> {
    let (ws, job, progress) = (r.ws, r.job, r.progress);
    let (as_of, run_id) = (r.as_of(), r.run_id.as_str());
    let started = Instant::now();
    // Both tables are declared before any call: a missing declaration costs no scoring.
    let declared = declared_table(ws, &sj.output, "its scores", "churn_scores.toml")?.schema()?;
    let drift_table =
        sj.drift.as_deref().map(|t| Ok::<_, Error>((t, declared_table(ws, t, "its drift", "churn_drift.toml")?))).transpose()?;
    let settings = &ws.config.scoring;
    let model = Arc::new(ModelDecl::load(&settings.model)?);
    let endpoint = Arc::new(Endpoint::new(settings, model.clone()).await?);
    let endpoint_name = endpoint.describe();
    let mut summary = ScoreCounts {
        model_id: model.id.clone(),
        model_version: model.version.clone(),
        endpoint: endpoint_name.clone(),
        ..Default::default()
    };
    let ctx = crate::engine::session_for(ws, Some(&[sj.input.clone(), sj.output.clone()])).await?;
    let companies = read_companies(&ctx, &sj.input, as_of).await?;
    summary.companies = companies.len() as u64;
    let kept = previous_scores(ws, &ctx, &sj.output, as_of, &model).await?;

    // The guard at the model's door: how far are these companies from the training data?
    let (drift, flagged) = drift::assess(&model.profile, &companies);
    let out_of_range: HashMap<String, String> =
        companies.iter().zip(&flagged).filter(|(_, f)| !f.is_empty()).map(|(c, f)| (c.company_id.clone(), f.join(","))).collect();
    summary.out_of_range = out_of_range.len() as u64;
    for d in &drift {
        summary.out_of_range_by_feature.insert(d.feature.clone(), d.out_of_range());
        if let Some(psi) = d.psi {
            summary.psi.insert(d.feature.clone(), psi);
        }
    }
    let alarm = drift_alarm(&drift, summary.out_of_range, companies.len(), &settings.drift);
    if model.profile.is_empty() {
        notice(format!(
            "note: job `{}`: the model declaration {} has no training profile, so drift is not checked; retrain with `runner model train`",
            job.name,
            settings.model.display()
        ));
    } else if let Some(why) = &alarm {
        // Once, as a notice (a log line saying the same would print it twice).
        notice(format!(
            "WARNING: job `{}`: {why}. Scores of these companies are extrapolations: each is flagged in `{}.out_of_range`{}.",
            job.name,
            sj.output,
            if settings.drift.refuse { "; scoring.drift.refuse is set, so no score is published" } else { "" }
        ));
    }

    // Companies to score: model rows, or an error for the ones that cannot make one.
    let now = Utc::now().timestamp_millis();
    let mut results: Vec<Scored> = Vec::new();
    let mut items = Vec::new();
    for c in &companies {
        if let Some(prev) = kept.get(&c.company_id) {
            // Counted as on the run that scored it: a rerun reports the same data the same way.
            if let Ok(row) = model.row(c) {
                summary.unknown_industry += u64::from(row.unknown_industry);
            }
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
    let mut m = r.metrics(as_of.to_string(), KindCounts::Score(ScoreCounts::default()));
    m.periods = vec![as_of.to_string()];
    m.rows_in = summary.companies;
    if r.dry_run {
        // Would score `attempted` companies (the others are kept or cannot make a model row).
        if let Some(d) = &sj.drift {
            m.partitions.push(format!("{d}/dt={as_of}"));
        }
        m.rows_out = summary.companies;
        m.partitions = vec![format!("dt={as_of}")];
        summary.errors = results.iter().filter(|r| r.error.is_some()).count() as u64;
        summary.would_score = Some(attempted as u64);
        m.counts = KindCounts::Score(summary);
        m.seconds = started.elapsed().as_secs_f64();
        return Ok(m);
    }
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

    // The drift is recorded whatever happens next, so a refused run can be looked into.
    if let Some((table, d)) = drift_table
        && !drift.is_empty()
    {
        publish_drift(ws, job, table, d, &drift, &model, as_of, run_id, &settings.model.display().to_string()).await?;
    }
    if let (Some(why), true) = (&alarm, settings.drift.refuse) {
        return Err(Error::Failed(format!(
            "job `{}`: {why}; scoring.drift.refuse is set, so no score was published (the drift per feature is in `{}`)",
            job.name,
            sj.drift.as_deref().unwrap_or("the summary")
        )));
    }

    // Publish the date's partition: kept, new and failed companies together.
    results.sort_by(|a, b| a.company_id.cmp(&b.company_id));
    let batch = to_batch(&results, &model, as_of, run_id, &out_of_range, &sj.output, &declared)?;
    let schema = batch.schema();
    let spec = OutputSpec {
        job: job.name.clone(),
        description: job.description.clone(),
        output: sj.output.clone(),
        partition_by: vec!["dt".into()],
        mode: WriteMode::ReplacePartitions,
        checks: Checks {
            not_null: vec!["companyID".into(), "status".into(), "dt".into()],
            unique: vec!["companyID".into(), "dt".into()],
            accepted_values: [("status".to_string(), vec!["scored".to_string(), "error".to_string()])].into(),
            ..Default::default()
        },
        source: settings.model.display().to_string(),
    };
    let expected = BTreeSet::from([vec![as_of.to_string()]]);
    let published = publish_output(ws, &spec, &schema, vec![batch], expected, run_id, false).await?;
    m.rows_out = published.rows;
    m.bytes_out = published.bytes;
    m.files = published.files;
    m.partitions = published.partitions;
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
    // No company could make a model row (their data is missing or wrong: companies never
    // ingested, a misspelled source): nothing was scored, which is a failed run too.
    if attempted == 0 && summary.kept == 0 && summary.companies > 0 {
        let first = results.iter().find_map(|r| r.error.as_deref()).unwrap_or_default().to_string();
        return Err(Error::Failed(format!(
            "job `{}`: no company could be scored: none of the {} has a valid model row (the first: {first}); every company is \
             recorded in `{}` with status `error`. Check the companies' data: did `ingest_companies` ingest anything (its \
             source url in runner.toml)?",
            job.name, summary.companies, sj.output
        )));
    }
    m.counts = KindCounts::Score(summary);
    m.seconds = started.elapsed().as_secs_f64();
    Ok(m)
}

/// A table the scoring job writes, as `schemas/tables/<table>.toml` declares it (columns, then
/// `dt`); `what` and `example` make the error say what to add.
fn declared_table<'w>(ws: &'w Workspace, table: &str, what: &str, example: &str) -> Result<&'w DeclaredTable> {
    ws.declared.get(table).ok_or_else(|| Error::Config {
        file: ws.config.schemas_dir.join("tables").display().to_string(),
        message: format!(
            "the scoring job writes {what} to `{table}`, which is not declared: add {table}.toml with its columns (see {example})"
        ),
    })
}

/// The companies of `input` as of the date, as Company entities.
async fn read_companies(ctx: &datafusion::prelude::SessionContext, input: &str, as_of: NaiveDate) -> Result<Vec<Company>> {
    let sql = format!(
        "SELECT companyID, industry, CAST(revenu AS DOUBLE) AS revenu, CAST(employees AS DOUBLE) AS employees, \
         CAST(job30 AS DOUBLE) AS job30, CAST(job90 AS DOUBLE) AS job90, CAST(monthlyFee AS DOUBLE) AS monthlyFee, \
         CAST(totalFee AS DOUBLE) AS totalFee, riskOfChurn FROM \"{input}\" WHERE as_of = $as_of ORDER BY companyID"
    );
    let what = format!("reading `{input}` for scoring");
    let batches = crate::engine::collect_sql(ctx, &sql, crate::engine::params(as_of, (as_of, as_of)), &what).await?;
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
    let params = crate::engine::params_with(as_of, &[("model_id", &model.id), ("model_version", &model.version)]);
    let batches = crate::engine::collect_sql(ctx, &sql, params, &what).await?;
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

/// The `churn_scores` rows, in the columns `schema` declares (a declared column the job does
/// not produce is an error naming it).
fn to_batch(
    results: &[Scored],
    model: &ModelDecl,
    as_of: NaiveDate,
    run_id: &str,
    out_of_range: &HashMap<String, String>,
    table: &str,
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let n = results.len();
    let (mut id, mut score, mut churn) = (StringBuilder::new(), Float64Builder::new(), BooleanBuilder::new());
    let (mut mid, mut mver, mut ep) = (StringBuilder::new(), StringBuilder::new(), StringBuilder::new());
    let mut at = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let (mut status, mut error, mut oor) = (StringBuilder::new(), StringBuilder::new(), StringBuilder::new());
    for r in results {
        oor.append_option(out_of_range.get(&r.company_id));
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
    let columns: HashMap<&str, ArrayRef> = HashMap::from([
        ("companyID", Arc::new(id.finish()) as ArrayRef),
        ("score", Arc::new(score.finish())),
        ("churn", Arc::new(churn.finish())),
        ("model_id", Arc::new(mid.finish())),
        ("model_version", Arc::new(mver.finish())),
        ("endpoint", Arc::new(ep.finish())),
        ("scored_at", Arc::new(at.finish())),
        ("status", Arc::new(status.finish())),
        ("error", Arc::new(error.finish())),
        ("out_of_range", Arc::new(oor.finish())),
        ("run_id", Arc::new(arrow::array::StringArray::from(vec![run_id; n]))),
        (
            "model_precision",
            Arc::new(arrow::array::Float64Array::from(vec![model.training.as_ref().map(|t| t.holdout.precision); n])),
        ),
        ("dt", Arc::new(Date32Array::from(vec![date32(as_of); n]))),
    ]);
    declared_batch(schema, table, columns)
}

/// The columns of a declared table, in the declared order (a declared column the job does not
/// produce is an error naming it and the table's file).
fn declared_batch(schema: &SchemaRef, table: &str, mut columns: HashMap<&str, ArrayRef>) -> Result<RecordBatch> {
    let cols = schema
        .fields()
        .iter()
        .map(|f| {
            columns.remove(f.name().as_str()).ok_or_else(|| Error::Config {
                file: format!("schemas/tables/{table}.toml"),
                message: format!("column `{}` is declared but the scoring job does not produce it", f.name()),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema.clone(), cols).map_err(Error::arrow(format!("building {table} rows")))
}

/// Why the drift is over the configured thresholds, or `None`.
fn drift_alarm(drift: &[FeatureDrift], out_of_range: u64, companies: usize, limits: &DriftSettings) -> Option<String> {
    let mut why = Vec::new();
    if companies > 0 && out_of_range as f64 / companies as f64 > limits.max_out_of_range_share {
        let features: Vec<String> = drift
            .iter()
            .filter(|d| d.out_of_range() > 0)
            .map(|d| format!("{} {} above {} / {} below {}", d.feature, d.above_max, d.train_max, d.below_min, d.train_min))
            .collect();
        why.push(format!(
            "{out_of_range} of {companies} companies ({:.0}%) have features outside the model's training range ({}; limit {:.0}%)",
            100.0 * out_of_range as f64 / companies as f64,
            features.join(", "),
            100.0 * limits.max_out_of_range_share
        ));
    }
    let shifted: Vec<String> =
        drift.iter().filter_map(|d| d.psi.filter(|p| *p > limits.max_psi).map(|p| format!("{} {p:.2}", d.feature))).collect();
    if !shifted.is_empty() {
        why.push(format!("population stability index over {} (significant shift): {}", limits.max_psi, shifted.join(", ")));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// Publishes the run date's partition of the drift table (one row per feature).
#[allow(clippy::too_many_arguments)]
async fn publish_drift(
    ws: &Workspace,
    job: &crate::job::Job,
    table: &str,
    declared: &DeclaredTable,
    drift: &[FeatureDrift],
    model: &ModelDecl,
    as_of: NaiveDate,
    run_id: &str,
    source: &str,
) -> Result<()> {
    let schema = declared.schema()?;
    let n = drift.len();
    let u = |f: fn(&FeatureDrift) -> u64| {
        Arc::new(arrow::array::Int64Array::from_iter_values(drift.iter().map(|d| f(d) as i64))) as ArrayRef
    };
    let columns: HashMap<&str, ArrayRef> = HashMap::from([
        ("feature", Arc::new(arrow::array::StringArray::from_iter_values(drift.iter().map(|d| d.feature.as_str()))) as ArrayRef),
        ("rows", u(|d| d.rows)),
        ("below_min", u(|d| d.below_min)),
        ("above_max", u(|d| d.above_max)),
        ("train_min", Arc::new(Float64Array::from_iter_values(drift.iter().map(|d| d.train_min)))),
        ("train_max", Arc::new(Float64Array::from_iter_values(drift.iter().map(|d| d.train_max)))),
        ("psi", Arc::new(Float64Array::from_iter(drift.iter().map(|d| d.psi)))),
        ("level", Arc::new(arrow::array::StringArray::from_iter_values(drift.iter().map(|d| d.level)))),
        ("model_id", Arc::new(arrow::array::StringArray::from(vec![model.id.as_str(); n]))),
        ("model_version", Arc::new(arrow::array::StringArray::from(vec![model.version.as_str(); n]))),
        ("run_id", Arc::new(arrow::array::StringArray::from(vec![run_id; n]))),
        ("dt", Arc::new(Date32Array::from(vec![date32(as_of); n]))),
    ]);
    let batch = declared_batch(&schema, table, columns)?;
    let spec = OutputSpec {
        job: job.name.clone(),
        description: declared.description.clone(),
        output: table.to_string(),
        partition_by: vec!["dt".into()],
        mode: WriteMode::ReplacePartitions,
        checks: Checks {
            not_null: vec!["feature".into(), "dt".into()],
            unique: vec!["feature".into(), "dt".into()],
            ..Default::default()
        },
        source: source.to_string(),
    };
    let expected = BTreeSet::from([vec![as_of.to_string()]]);
    publish_output(ws, &spec, &schema, vec![batch], expected, run_id, false).await?;
    Ok(())
}
