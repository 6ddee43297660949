//! `runner validate`: config, jobs, schemas, schedules and every job's SQL, checked offline.
//!
//! Loading the workspace already checks `runner.toml`, `jobs/`, `schemas/events.toml` and
//! `schemas/tables/`. [`validate`] adds the source and warehouse URLs, the schedules, and plans
//! every SQL job and export dataset ([`plan_all`]): an empty table is registered for every input
//! (from the event contract, `schemas/tables/`, or the planned output of an upstream job), then
//! each job is planned in dependency order with its typed parameters, in a session holding only
//! its declared inputs, as it runs. Nothing is read; every error names the SQL file and line.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use chrono::NaiveDate;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;

use crate::config::EngineKind;
use crate::engine::{describe_for_job, params};
use crate::error::{Error, Result};
use crate::job::JobKind;
use crate::schedule::Schedules;
use crate::store::Location;
use crate::workspace::Workspace;

/// What a valid workspace holds, for the `ok:` line.
#[derive(Debug, Clone)]
pub struct Validated {
    pub config_file: String,
    pub jobs: usize,
    pub streams: usize,
    pub schedules: usize,
    /// Where SQL runs, as `runner status` names it; a Ballista scheduler was reached.
    pub engine: String,
}

/// Checks everything `runner validate` checks. Each problem is one line of the error (a config
/// error, exit 78), naming the file.
pub async fn validate(ws: &Workspace) -> Result<Validated> {
    for url in ws.config.sources.values().chain(std::iter::once(&ws.config.warehouse)) {
        Location::parse(url).map_err(|e| Error::Config { file: ws.config.file_name(), message: e.to_string() })?;
    }
    // A source folder that does not exist is an error (a typo ingests nothing, silently); one
    // that holds nothing yet is a warning (a delivery stream not delivered to yet).
    let mut missing = Vec::new();
    for (stream, url) in &ws.config.sources {
        match crate::ingest::check_source(url).await {
            Ok(c @ crate::ingest::SourceCheck::Missing { .. }) => missing.extend(c.message(stream, url, &ws.config.file_name())),
            Ok(c) => {
                if let Some(m) = c.message(stream, url, &ws.config.file_name()) {
                    crate::output::notice(format!("warning: {m}"));
                }
            }
            Err(e) => crate::output::notice(format!("warning: source `{stream}` ({url}) could not be listed: {e}")),
        }
    }
    if !missing.is_empty() {
        return Err(Error::Config { file: ws.config.file_name(), message: missing.join("\n  ") });
    }
    let schedules = Schedules::load(&ws.config.scheduler_dir, &ws.jobs)?;
    let engine = &ws.config.engine;
    if engine.kind == EngineKind::Ballista {
        crate::cluster::preflight(engine, &ws.warehouse.url).await?;
    }
    let (problems, unchecked) = plan_all(ws).await;
    if !problems.is_empty() {
        let mut message = format!("{} problem(s) found:\n  - {}", problems.len(), problems.join("\n  - "));
        if !unchecked.is_empty() {
            message.push_str(&format!(
                "\n  not planned until those are fixed (they read what a job above outputs): {}",
                unchecked.join(", ")
            ));
        }
        return Err(Error::Config { file: "jobs/, sql/".into(), message });
    }
    Ok(Validated {
        config_file: ws.config.file_name(),
        jobs: ws.jobs.jobs.len(),
        streams: ws.contract.streams.len(),
        schedules: schedules.schedules.len(),
        engine: engine.label(),
    })
}

/// Plans every SQL job against empty tables; returns one message per problem, and the jobs not
/// planned because an input is the output of a job with a problem (one typo upstream is one
/// problem, not one per job downstream with wrong guesses). Each job is planned in a session
/// holding only its declared inputs, as it runs.
pub async fn plan_all(ws: &Workspace) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut unchecked: Vec<String> = Vec::new();
    // Outputs of jobs that could not be planned.
    let mut broken: std::collections::BTreeSet<String> = Default::default();
    let mut schemas: BTreeMap<String, SchemaRef> = BTreeMap::new();
    for sc in ws.contract.streams.values() {
        let mut fields: Vec<Field> = sc.file_schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(crate::schema::PARTITION_COL, arrow::datatypes::DataType::Date32, true));
        schemas.insert(sc.table.clone(), Arc::new(Schema::new(fields)));
    }
    for (name, d) in &ws.declared {
        match d.schema() {
            Ok(s) => {
                schemas.insert(name.clone(), s);
            }
            Err(e) => problems.push(format!("schemas/tables/{name}.toml: {e}")),
        }
    }
    let names: Vec<String> = ws.jobs.jobs.keys().cloned().collect();
    let ordered = match ws.jobs.order(&names) {
        Ok(o) => o,
        Err(e) => return (vec![e.to_string()], Vec::new()),
    };
    let day = NaiveDate::from_ymd_opt(2026, 1, 1).expect("date");
    // With Ballista, each plan must also have a wire form (tables and functions the scheduler
    // knows).
    let ballista = ws.config.engine.kind == EngineKind::Ballista;
    let ships = |df: &DataFrame| -> datafusion::error::Result<()> {
        if ballista {
            crate::cluster::check_plan_ships(df.logical_plan()).map_err(DataFusionError::Plan)?;
        }
        Ok(())
    };
    for job in ordered {
        let ctx = match crate::engine::new_context() {
            Ok(ctx) => ctx,
            Err(e) => return (vec![e.to_string()], Vec::new()),
        };
        let reads_broken = |inputs: &[String]| inputs.iter().any(|i| broken.contains(i));
        let (inputs, output): (&[String], Option<&String>) = match &job.kind {
            JobKind::Export(ej) => (&ej.inputs, None),
            JobKind::Sql(sj) => (&sj.inputs, Some(&sj.output)),
            _ => (&[], None),
        };
        if reads_broken(inputs) {
            unchecked.push(job.name.clone());
            broken.extend(output.cloned());
            continue;
        }
        if let JobKind::Export(ej) = &job.kind {
            if !register_inputs(&ctx, &ej.inputs, &schemas, &job.file.display().to_string(), &mut problems) {
                continue;
            }
            for ds in &ej.datasets {
                let planned = async {
                    let df = ctx.sql(&ds.sql).await?.with_param_values(params(day, (day, day)))?;
                    ships(&df)?;
                    df.create_physical_plan().await.map(|p| p.schema())
                }
                .await;
                match planned {
                    Ok(schema) if schema.index_of("companyID").is_err() => {
                        problems.push(format!("{}: an export dataset must output `companyID`", ds.file.display()))
                    }
                    Ok(_) => {}
                    Err(e) => problems.push(format!("{}: {}", ds.file.display(), describe_for_job(&ds.sql, &e, &job.file))),
                }
            }
            continue;
        }
        let JobKind::Sql(sj) = &job.kind else { continue };
        let file = sj.file.display().to_string();
        // A missing input is the job's problem; planning its SQL would only repeat it.
        if !register_inputs(&ctx, &sj.inputs, &schemas, &job.file.display().to_string(), &mut problems) {
            broken.insert(sj.output.clone());
            continue;
        }
        let planned = async {
            let df = ctx.sql(&sj.sql).await?;
            let df = df.with_param_values(params(day, (day, day)))?;
            ships(&df)?;
            df.create_physical_plan().await.map(|p| p.schema())
        }
        .await;
        match planned {
            Ok(schema) => {
                for k in &sj.partition_by {
                    if schema.index_of(k).is_err() {
                        problems.push(format!("{file}: the output has no partition column `{k}` (job {})", job.name));
                    }
                }
                for c in sj.checks.not_null.iter().chain(&sj.checks.unique).chain(sj.checks.accepted_values.keys()) {
                    if schema.index_of(c).is_err() {
                        problems
                            .push(format!("{}: [checks] names column `{c}`, which {file} does not output", job.file.display()));
                    }
                }
                schemas.insert(sj.output.clone(), schema);
            }
            Err(e) => {
                problems.push(format!("{file}: {}", describe_for_job(&sj.sql, &e, &job.file)));
                broken.insert(sj.output.clone());
            }
        }
    }
    (problems, unchecked)
}

/// Registers an empty table for each input whose schema is known; reports the others. Returns
/// whether every input was registered.
fn register_inputs(
    ctx: &datafusion::prelude::SessionContext,
    inputs: &[String],
    schemas: &BTreeMap<String, SchemaRef>,
    job_file: &str,
    problems: &mut Vec<String>,
) -> bool {
    let before = problems.len();
    for input in inputs {
        let Some(schema) = schemas.get(input) else {
            let hint = crate::error::did_you_mean(input, schemas.keys().map(String::as_str));
            problems.push(format!(
                "{job_file}: input table `{input}` is not produced by any job, the contract or schemas/tables/{hint}"
            ));
            continue;
        };
        if let Err(e) = crate::engine::register_empty(ctx, input, &crate::engine::view_types(schema)) {
            problems.push(format!("{job_file}: input table `{input}`: {e}"));
        }
    }
    problems.len() == before
}
