//! The query engine: DataFusion sessions over the catalog, and running SQL with typed parameters.
//!
//! Each catalog table becomes a listing table over its location with its partition keys, so a
//! filter on `dt` prunes whole partition folders before any file is opened. A *versioned* table
//! (see `catalog::layout`) keeps each partition's versions in `v=<run id>`
//! folders: it is read as a view over the (partition, version) pairs the catalog points at, so a
//! reader never sees a version before it is published, nor two versions of one partition (an
//! old version stays on disk for a grace period after it is replaced, for queries in flight). Tables declared in
//! `schemas/tables/` and not written yet read as empty. Identifiers are not lower-cased: the
//! producers' column names (`companyID`, `nbJobs`) are written as they are.
//!
//! SQL reaches the engine with its parameters as typed placeholders ([`params`]), never pasted
//! into its text; a SQL error is described by line ([`describe`]) and, for a job, with what to
//! change in its job file ([`describe_for_job`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use chrono::NaiveDate;
use datafusion::catalog::view::ViewTable;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::functions::expr_fn::concat_ws;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder};
use datafusion::prelude::{SessionConfig, SessionContext, cast, col, lit};

use crate::catalog::layout::{CURRENT_VERSION, version_of};
use crate::catalog::{TableMeta, arrow_type};
use crate::config::EngineKind;
use crate::dates::date32;
use crate::error::{Error, Result};
use crate::workspace::{FileCaches, Workspace};

pub mod table;

/// A session with every catalog table registered.
pub async fn session(ws: &Workspace) -> Result<SessionContext> {
    session_for(ws, None).await
}

/// A session with the tables `only` names (a job's declared inputs), or every catalog table.
/// A job sees only its inputs: they decide the order jobs run in, so a query of an undeclared
/// table fails instead of reading it before its producer ran; and the catalog is read for those
/// tables alone (a table's partitions are one read each on a local catalog).
/// The session runs where `[engine]` says: in this process, or on a Ballista cluster.
pub async fn session_for(ws: &Workspace, only: Option<&[String]>) -> Result<SessionContext> {
    open(ws, only, ws.config.engine.kind).await
}

/// [`session_for`] in this process whatever the engine: for the runner's own small tables.
pub async fn local_session_for(ws: &Workspace, only: Option<&[String]>) -> Result<SessionContext> {
    open(ws, only, EngineKind::Local).await
}

async fn open(ws: &Workspace, only: Option<&[String]>, engine: EngineKind) -> Result<SessionContext> {
    ws.check_format(false).await?;
    let ctx = match engine {
        EngineKind::Local => {
            let ctx = context_with(Some(&ws.file_caches))?;
            ctx.runtime_env()
                .register_object_store(&ws.warehouse.store_url, ws.file_caches.ranges.wrap(ws.warehouse.store.clone()));
            ctx
        }
        EngineKind::Ballista => crate::cluster::remote_context(&ws.config.engine, session_config()?, &ws.warehouse.url).await?,
    };
    let wanted = |name: &str| only.is_none_or(|o| o.iter().any(|t| t == name));
    // Each table with its partitions, from one catalog snapshot per table (two requests,
    // whatever its history), the tables read at once.
    let names: Vec<String> = match only {
        None => ws.catalog.tables().await?.into_iter().map(|t| t.name).collect(),
        Some(names) => names.to_vec(),
    };
    let tables: Vec<(TableMeta, Vec<crate::catalog::PartitionMeta>)> =
        futures::future::try_join_all(names.iter().map(|n| ws.catalog.table_with_partitions(n)))
            .await?
            .into_iter()
            .flatten()
            .collect();
    for (t, partitions) in &tables {
        match engine {
            EngineKind::Local => register_catalog_table(&ctx, ws, t, partitions.clone())?,
            EngineKind::Ballista => register(&ctx, t, Some(published_versions(t, partitions)))?,
        }
    }
    for (name, d) in &ws.declared {
        if wanted(name) && !tables.iter().any(|(t, _)| &t.name == name) {
            register_empty(&ctx, name, &view_types(&*d.schema()?))?;
        }
    }
    Ok(ctx)
}

/// A versioned table's published (partition, version) pairs, as `<value>/.../<version>`.
fn published_versions(t: &TableMeta, partitions: &[crate::catalog::PartitionMeta]) -> BTreeSet<String> {
    let mut v: BTreeSet<String> = partitions
        .iter()
        .filter_map(|p| version_of(&p.location).map(|ver| [p.values.clone(), vec![ver]].concat().join("/")))
        .collect();
    v.extend(t.parameters.get(CURRENT_VERSION).cloned());
    v
}

/// A table read in this process: the catalog's partitions, pruned before any object is opened.
fn register_catalog_table(
    ctx: &SessionContext,
    ws: &Workspace,
    t: &TableMeta,
    mut partitions: Vec<crate::catalog::PartitionMeta>,
) -> Result<()> {
    if t.partition_keys.is_empty() {
        // An unpartitioned table is read at its current version's folder.
        partitions = match t.parameters.get(CURRENT_VERSION) {
            Some(v) => vec![crate::catalog::PartitionMeta::new(Vec::new(), format!("{}v={v}/", t.location))],
            None => vec![crate::catalog::PartitionMeta::new(Vec::new(), t.location.clone())],
        };
    }
    let table = table::CatalogTable::new(t, partitions, &ws.warehouse, ws.file_caches.ranges.clone())?;
    ctx.register_table(t.name.as_str(), Arc::new(table))
        .map(|_| ())
        .map_err(Error::df(format!("registering table `{}` at {}", t.name, t.location)))
}

/// The tables `sql` names (in `FROM`, joins, sub-queries; not CTE names), or `None` when it
/// reads the information schema or cannot be parsed (then every table is registered, and
/// DataFusion reports the error).
pub fn referenced_tables(sql: &str) -> Option<Vec<String>> {
    let ctx = new_context().ok()?;
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state.sql_to_statement(sql, &dialect).ok()?;
    let refs = state.resolve_table_references(&statement).ok()?;
    let mut out = Vec::new();
    for r in refs {
        if r.schema().is_some_and(|s| s.eq_ignore_ascii_case("information_schema")) {
            return None;
        }
        out.push(r.table().to_string());
    }
    out.sort();
    out.dedup();
    Some(out)
}

/// A session with the tables the SQL texts name (every table when one of them reads the
/// information schema or does not parse).
pub async fn session_for_sql(ws: &Workspace, sqls: &[&str]) -> Result<SessionContext> {
    let mut names = Vec::new();
    for sql in sqls {
        match referenced_tables(sql) {
            Some(n) => names.extend(n),
            None => return session(ws).await,
        }
    }
    names.sort();
    names.dedup();
    session_for(ws, Some(&names)).await
}

/// `runner query`: `sql` over every catalog table; SQL that does not plan is a usage error
/// pointing at its line.
pub async fn query(ws: &Workspace, sql: &str) -> Result<Vec<RecordBatch>> {
    // Only the tables the query names are opened (a table's catalog is two requests).
    let ctx = session_for_sql(ws, &[sql]).await?;
    let df = match ctx.sql(sql).await {
        Ok(df) => df,
        Err(e) => {
            // A table that does not exist: name the closest one of the catalog and the declared
            // tables (the session holds only the ones the query names). DataFusion already does
            // so for columns.
            let hint = match undeclared_table(&e) {
                // A job's output not written yet: say which job writes it, not a guess.
                Some(t) if let Some(j) = ws.jobs.jobs.values().find(|j| j.outputs(&ws.contract).contains(&t)) => format!(
                    "; table `{t}` has no data yet: job `{}` writes it (`runner run {}` after its inputs, or `runner run --all`)",
                    j.name, j.name
                ),
                Some(t) => {
                    let mut names: Vec<String> = ws.catalog.tables().await?.into_iter().map(|t| t.name).collect();
                    names.extend(ws.declared.keys().cloned());
                    names.extend(table_names(&ctx));
                    crate::error::did_you_mean(&t, names.iter().map(String::as_str))
                }
                None => String::new(),
            };
            return Err(Error::Usage(format!("the query does not plan: {}{hint}", describe(sql, &e))));
        }
    };
    df.collect().await.map_err(Error::df("running the query"))
}

/// The names of the tables a session has registered.
fn table_names(ctx: &SessionContext) -> Vec<String> {
    let Some(catalog) = ctx.catalog("datafusion") else { return Vec::new() };
    catalog.schema_names().iter().filter_map(|s| catalog.schema(s)).flat_map(|s| s.table_names()).collect()
}

/// A session with the runner's SQL settings and no tables. DataFusion's own options can be tuned
/// from the environment, as in datafusion-cli: `DATAFUSION_EXECUTION_TARGET_PARTITIONS=8` sets
/// `datafusion.execution.target_partitions`.
pub fn new_context() -> Result<SessionContext> {
    context_with(None)
}

/// Scans planned at once (see [`session_config`]).
const PLANNING_CONCURRENCY: usize = 16;

/// The runner's SQL settings, for a local session and a Ballista one alike.
fn session_config() -> Result<SessionConfig> {
    let config = SessionConfig::from_env()
        .map_err(|e| Error::Usage(format!("a DATAFUSION_* environment variable has a value DataFusion cannot use: {e}")))?;
    let mut config = config.with_information_schema(true);
    config.options_mut().sql_parser.enable_ident_normalization = false;
    config.options_mut().sql_parser.collect_spans = true;
    // Planning a scan reads the store (a partition folder's listing, the small files fetched
    // whole): a query of many tables plans them all at once, not a core's worth at a time,
    // which on S3 is a round trip per table one after another.
    if std::env::var_os("DATAFUSION_EXECUTION_PLANNING_CONCURRENCY").is_none() {
        let options = config.options_mut();
        options.execution.planning_concurrency = options.execution.planning_concurrency.max(PLANNING_CONCURRENCY);
    }
    Ok(config)
}

/// An empty table with `schema`, as a view of no rows: a plan that reads it can be sent to a
/// Ballista cluster (an in-memory table cannot).
pub fn register_empty(ctx: &SessionContext, name: &str, schema: &SchemaRef) -> Result<()> {
    let err = || format!("declaring table `{name}`");
    let columns: Vec<Expr> = schema
        .fields()
        .iter()
        .map(|f| Ok(lit(ScalarValue::try_from(f.data_type())?).alias(f.name())))
        .collect::<std::result::Result<_, DataFusionError>>()
        .map_err(Error::df(err()))?;
    let plan = LogicalPlanBuilder::empty(false).project(columns).and_then(|b| b.build()).map_err(Error::df(err()))?;
    ctx.register_table(name, Arc::new(ViewTable::new(plan, None))).map(|_| ()).map_err(Error::df(err()))
}

fn context_with(caches: Option<&FileCaches>) -> Result<SessionContext> {
    let config = session_config()?;
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(c) = caches {
        runtime = runtime.with_cache_manager(
            CacheManagerConfig::default()
                .with_file_metadata_cache(Some(c.metadata()))
                .with_file_statistics_cache(Some(c.statistics())),
        );
    }
    let runtime = runtime.build_arc().map_err(Error::df("starting the query engine"))?;
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

fn register(ctx: &SessionContext, t: &TableMeta, versions: Option<BTreeSet<String>>) -> Result<()> {
    let ctx_err = || format!("registering table `{}` at {}", t.name, t.location);
    let url = ListingTableUrl::parse(&t.location).map_err(Error::df(ctx_err()))?;
    let mut partition_cols =
        t.partition_keys.iter().map(|k| Ok((k.name.clone(), arrow_type(&k.ty)?))).collect::<Result<Vec<_>>>()?;
    if versions.is_some() {
        partition_cols.push(("v".to_string(), DataType::Utf8));
    }
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(partition_cols);
    let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(view_types(&*t.file_schema()?));
    let table = Arc::new(
        ListingTable::try_new(config)
            .map_err(Error::df(ctx_err()))?
            .with_cache(ctx.runtime_env().cache_manager.get_file_statistic_cache()),
    );
    match versions {
        None => ctx.register_table(t.name.as_str(), table).map(|_| ()).map_err(Error::df(ctx_err())),
        Some(versions) => {
            // Only the published version of each partition, without the `v` column. The filter
            // names partition columns only, so DataFusion applies it while listing folders.
            let current: Vec<_> = versions.into_iter().map(lit).collect();
            let key_parts: Vec<Expr> =
                t.partition_keys.iter().map(|k| cast(col(format!("\"{}\"", k.name)), DataType::Utf8)).chain([col("v")]).collect();
            let key = concat_ws(lit("/"), key_parts);
            let columns: Vec<_> = t.columns.iter().chain(&t.partition_keys).map(|c| col(format!("\"{}\"", c.name))).collect();
            let df = ctx.read_table(table).map_err(Error::df(ctx_err()))?;
            let df = if current.is_empty() { df.filter(lit(false)) } else { df.filter(key.in_list(current, false)) }
                .and_then(|df| df.select(columns))
                .map_err(Error::df(ctx_err()))?;
            // A view (not `DataFrame::into_view`): Ballista sends views to its scheduler.
            let view = ViewTable::new(df.into_unoptimized_plan(), None);
            ctx.register_table(t.name.as_str(), Arc::new(view)).map(|_| ()).map_err(Error::df(ctx_err()))
        }
    }
}

/// The schema a table is read with: strings as Arrow string views. The Parquet reader then
/// points into the pages' dictionaries instead of copying every string, and grouping and
/// comparing start from each view's inline prefix; the SQL DAG used about 10% less CPU this way.
/// Outputs are converted back with [`plain_types`] before anything is written or inspected.
pub fn view_types(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Query results in types every reader takes ([`athena_types`]), for code that reads them as
/// plain strings or writes them for other readers.
pub fn plain_types(batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    let Some(schema) = batches.first().map(|b| b.schema()) else { return Ok(batches) };
    Ok(athena_types(batches, &schema)?.0)
}

/// Widens the types Athena cannot read: unsigned integers to signed ones (checked: a value
/// that does not fit is an error, never wrapped), nanosecond timestamps to microseconds, string
/// views to strings.
pub fn athena_types(batches: Vec<RecordBatch>, schema: &Arc<Schema>) -> Result<(Vec<RecordBatch>, Arc<Schema>)> {
    use arrow::datatypes::TimeUnit;
    let target = |dt: &DataType| -> Option<DataType> {
        match dt {
            DataType::UInt8 => Some(DataType::Int16),
            DataType::UInt16 => Some(DataType::Int32),
            DataType::UInt32 | DataType::UInt64 => Some(DataType::Int64),
            DataType::Timestamp(TimeUnit::Nanosecond, tz) => Some(DataType::Timestamp(TimeUnit::Microsecond, tz.clone())),
            DataType::Utf8View | DataType::LargeUtf8 => Some(DataType::Utf8),
            _ => None,
        }
    };
    if schema.fields().iter().all(|f| target(f.data_type()).is_none()) {
        return Ok((batches, schema.clone()));
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_data_type(target(f.data_type()).unwrap_or_else(|| f.data_type().clone())))
        .collect();
    let new_schema = Arc::new(Schema::new(fields));
    let opts = arrow::compute::CastOptions { safe: false, ..Default::default() };
    let out = batches
        .into_iter()
        .map(|b| {
            let cols = b
                .columns()
                .iter()
                .zip(new_schema.fields())
                .map(|(c, f)| arrow::compute::cast_with_options(c, f.data_type(), &opts))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(Error::arrow("widening output types for Athena"))?;
            RecordBatch::try_new(new_schema.clone(), cols).map_err(Error::arrow("widening output types for Athena"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((out, new_schema))
}

/// The named parameters every job's SQL may use: `$as_of` (the run's logical date) and
/// `$dt_from`..`$dt_to` (the days an incremental job rebuilds; both the as-of date otherwise),
/// all DATEs.
pub fn params(as_of: NaiveDate, days: (NaiveDate, NaiveDate)) -> ParamValues {
    let date = |d: NaiveDate| ScalarValue::Date32(Some(date32(d)));
    let map: HashMap<String, ScalarValue> =
        [("as_of".to_string(), date(as_of)), ("dt_from".to_string(), date(days.0)), ("dt_to".to_string(), date(days.1))].into();
    map.into()
}

/// [`params`] plus named string parameters (a model's id and version, say).
pub fn params_with(as_of: NaiveDate, strings: &[(&str, &str)]) -> ParamValues {
    let mut map: HashMap<String, ScalarValue> = [("as_of".to_string(), ScalarValue::Date32(Some(date32(as_of))))].into();
    for (k, v) in strings {
        map.insert(k.to_string(), ScalarValue::Utf8(Some(v.to_string())));
    }
    map.into()
}

/// Plans `sql` with `params` and collects its rows as plain types ([`plain_types`]); errors say
/// `what` was being read.
pub async fn collect_sql(ctx: &SessionContext, sql: &str, params: ParamValues, what: &str) -> Result<Vec<RecordBatch>> {
    let df = ctx.sql(sql).await.map_err(Error::df(what.to_string()))?;
    let df = df.with_param_values(params).map_err(Error::df(what.to_string()))?;
    plain_types(df.collect().await.map_err(Error::df(what.to_string()))?)
}

/// A DataFusion error as `line N: message`, when the error carries a position or names an
/// identifier found in the SQL.
pub fn describe(sql: &str, e: &DataFusionError) -> String {
    let msg = plain(&e.strip_backtrace());
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

/// DataFusion's message in the project's words: a parser error without its Rust debug form
/// (`SQL error: ParserError("...")`), and without the advice to turn on identifier
/// normalization, which the runner keeps off on purpose (column names keep their case, as in
/// the contract: quote nothing, spell the case).
fn plain(msg: &str) -> String {
    let mut msg = msg.to_string();
    if let Some(rest) = msg.strip_prefix("SQL error: ParserError(\"").and_then(|r| r.strip_suffix("\")")) {
        msg = format!("SQL syntax error: {}", rest.replace("\\\"", "\""));
    }
    // The runner keeps identifier normalization off: that advice would undo the contract.
    msg = msg.replace(
        " or disable the datafusion.sql_parser.enable_ident_normalization configuration.",
        ", or write it as the table spells it.",
    );
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

/// `batch` with `schema`'s types and nullability: DataFusion may read strings as views and
/// Parquet files say less about nullability than the contract does.
pub fn retype(batch: &RecordBatch, schema: &SchemaRef) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| if c.data_type() == f.data_type() { Ok(Arc::clone(c)) } else { arrow::compute::cast(c, f.data_type()) })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

#[cfg(test)]
mod tests {
    #[test]
    fn planner_messages_are_in_the_projects_words() {
        let parser = super::plain("SQL error: ParserError(\"Expected: an SQL statement, found: SELEC at Line: 1, Column: 1\")");
        assert_eq!(parser, "SQL syntax error: Expected: an SQL statement, found: SELEC at Line: 1, Column: 1");
        let case = super::plain(
            "No field named companyid.\nColumn names are case sensitive. You can use double quotes to refer to the \"companyID\" column or disable the datafusion.sql_parser.enable_ident_normalization configuration.",
        );
        assert!(!case.contains("enable_ident_normalization") && case.contains("as the table spells it"), "{case}");
    }
}
