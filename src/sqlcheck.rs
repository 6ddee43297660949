//! SQL errors that point at their line, and planning every job's SQL without reading data.
//!
//! `runner validate` registers an empty table for every input (from the catalog, the event
//! contract, `schemas/tables/`, or the planned output of an upstream job), then plans each SQL
//! job in dependency order with its typed parameters. Nothing is read; every error names the
//! SQL file and line.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use chrono::NaiveDate;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;

use crate::job::JobKind;
use crate::workspace::Workspace;

/// A DataFusion error as `line N: message`, when the error carries a position or names an
/// identifier found in the SQL.
pub fn describe(sql: &str, e: &DataFusionError) -> String {
    let msg = e.strip_backtrace();
    if let Some(span) = e.diagnostic().and_then(|d| d.span) {
        return format!("line {}: {msg}", span.start.line);
    }
    // Parser errors say "at Line: 3, Column: 7".
    if let Some(i) = msg.find("Line: ") {
        let n: String = msg[i + 6..].chars().take_while(|c| c.is_ascii_digit()).collect();
        if !n.is_empty() {
            return format!("line {n}: {msg}");
        }
    }
    // Otherwise the first identifier the message quotes that the SQL contains.
    for quoted in msg.split(['`', '\'', '"']).skip(1).step_by(2) {
        let name = quoted.rsplit('.').next().unwrap_or(quoted);
        if name.len() > 1
            && let Some(line) = sql.lines().position(|l| !l.trim_start().starts_with("--") && l.contains(name))
        {
            return format!("line {}: {msg}", line + 1);
        }
    }
    msg
}

/// [`describe`], plus what to do when the SQL reads a table its job does not declare: a job
/// sees only its `inputs`, which also decide the order jobs run in.
pub fn describe_for_job(sql: &str, e: &DataFusionError, job_file: &std::path::Path) -> String {
    let msg = describe(sql, e);
    match undeclared_table(e) {
        Some(t) => format!("{msg}; if `{t}` is a table, add it to `inputs` in {}", job_file.display()),
        None => msg,
    }
}

/// The table of a "table '...' not found" planning error.
fn undeclared_table(e: &DataFusionError) -> Option<String> {
    let msg = e.strip_backtrace();
    let start = msg.find("table '")? + "table '".len();
    let rest = &msg[start..];
    let name = &rest[..rest.find("' not found")?];
    Some(name.rsplit('.').next().unwrap_or(name).to_string())
}

/// Plans every SQL job against empty tables; returns one message per problem. Each job is
/// planned in a session holding only its declared inputs, as it runs.
pub async fn plan_all(ws: &Workspace) -> Vec<String> {
    let mut problems = Vec::new();
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
        Err(e) => return vec![e.to_string()],
    };
    let day = NaiveDate::from_ymd_opt(2026, 1, 1).expect("date");
    for job in ordered {
        let ctx = match crate::engine::new_context() {
            Ok(ctx) => ctx,
            Err(e) => return vec![e.to_string()],
        };
        if let JobKind::Export(ej) = &job.kind {
            register_inputs(&ctx, &ej.inputs, &schemas, &job.file.display().to_string(), &mut problems);
            for ds in &ej.datasets {
                let planned = async {
                    let df = ctx.sql(&ds.sql).await?.with_param_values(crate::transform::params(day, (day, day)))?;
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
        register_inputs(&ctx, &sj.inputs, &schemas, &job.file.display().to_string(), &mut problems);
        let planned = async {
            let df = ctx.sql(&sj.sql).await?;
            let df = df.with_param_values(crate::transform::params(day, (day, day)))?;
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
            Err(e) => problems.push(format!("{file}: {}", describe_for_job(&sj.sql, &e, &job.file))),
        }
    }
    problems
}

/// Registers an empty table for each input whose schema is known; reports the others.
fn register_inputs(
    ctx: &datafusion::prelude::SessionContext,
    inputs: &[String],
    schemas: &BTreeMap<String, SchemaRef>,
    job_file: &str,
    problems: &mut Vec<String>,
) {
    for input in inputs {
        let Some(schema) = schemas.get(input) else {
            problems
                .push(format!("{job_file}: input table `{input}` is not produced by any job, the contract or schemas/tables/"));
            continue;
        };
        let table = MemTable::try_new(crate::engine::view_types(schema), vec![vec![]]).expect("empty table");
        let _ = ctx.register_table(input.as_str(), Arc::new(table));
    }
}
