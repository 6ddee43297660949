//! `runner query --engine athena`: the same question, answered by Athena over the Glue catalog.
//!
//! StartQueryExecution (database, workgroup and output location from `[catalog]` and
//! `[athena]`), then GetQueryExecution polled with a doubling wait (a query may go back from
//! RUNNING to QUEUED; SUCCEEDED, FAILED and CANCELLED are final), then GetQueryResults page by page
//! (at most 1,000 rows each; the first row of a SELECT's first page is the header). The rows come
//! back as text and are cast to the Arrow types Athena reports, so the result prints exactly like
//! a local query. Ctrl-C stops the query in Athena (StopQueryExecution) before exiting: an
//! abandoned query would keep scanning, and billing, for up to its timeout.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use aws_sdk_athena::Client;
use aws_sdk_athena::types::{ColumnInfo, QueryExecutionContext, QueryExecutionState, ResultConfiguration, StatementType};

use crate::aws::sdk_error;
use crate::config::Config;
use crate::error::{Error, Result};

/// Runs `sql` in Athena and returns its rows. Needs the AWS SDK config loaded.
pub async fn query(config: &Config, sql: &str) -> Result<Vec<RecordBatch>> {
    let sdk = crate::aws::sdk().ok_or_else(|| Error::Internal("the AWS SDK config is loaded before Athena is called".into()))?;
    let client = Client::new(sdk);
    let a = &config.athena;
    let mut context = QueryExecutionContext::builder().database(&config.catalog.database);
    if let Some(id) = &config.catalog.catalog_id {
        // A catalog in another account is registered in Athena as a data source of that id.
        context = context.catalog(id);
    }
    let started = client
        .start_query_execution()
        .query_string(sql)
        .query_execution_context(context.build())
        .work_group(&a.workgroup)
        .set_result_configuration(a.output_location.as_ref().map(|o| ResultConfiguration::builder().output_location(o).build()))
        .send()
        .await
        .map_err(|e| sdk_error(format!("starting the query in Athena workgroup `{}`", a.workgroup), e))?;
    let id = started.query_execution_id().ok_or_else(|| Error::Failed("Athena returned no query execution id".into()))?;
    tracing::info!(query_execution_id = id, "Athena query started");

    let statement = tokio::select! {
        r = wait(&client, id, a.poll, a.max_poll) => r?,
        _ = tokio::signal::ctrl_c() => {
            crate::output::notice(format!("interrupted: stopping Athena query {id}"));
            client
                .stop_query_execution()
                .query_execution_id(id)
                .send()
                .await
                .map_err(|e| sdk_error(format!("stopping Athena query {id}"), e))?;
            return Err(Error::Interrupted(format!("Athena query {id} was stopped")));
        }
    };
    results(&client, id, statement == Some(StatementType::Dml)).await
}

/// Polls until the query is final; returns its statement type on success.
async fn wait(client: &Client, id: &str, first: Duration, max: Duration) -> Result<Option<StatementType>> {
    let mut delay = first;
    loop {
        let out = client
            .get_query_execution()
            .query_execution_id(id)
            .send()
            .await
            .map_err(|e| sdk_error(format!("reading the state of Athena query {id}"), e))?;
        let exec = out.query_execution().ok_or_else(|| Error::Failed(format!("Athena knows no query {id}")))?;
        let status = exec.status();
        match status.and_then(|s| s.state()) {
            Some(QueryExecutionState::Succeeded) => return Ok(exec.statement_type().cloned()),
            Some(QueryExecutionState::Failed) => {
                let reason = status.and_then(|s| s.state_change_reason()).unwrap_or("no reason given");
                let detail = status
                    .and_then(|s| s.athena_error())
                    .map(|e| {
                        format!(
                            " (error category {}, type {}, {})",
                            e.error_category().unwrap_or_default(),
                            e.error_type().unwrap_or_default(),
                            if e.retryable() { "retryable: running it again may work" } else { "not retryable" }
                        )
                    })
                    .unwrap_or_default();
                return Err(Error::Failed(format!("Athena query {id} FAILED: {reason}{detail}")));
            }
            Some(QueryExecutionState::Cancelled) => {
                return Err(Error::Failed(format!("Athena query {id} was CANCELLED (by a person or the workgroup's limits)")));
            }
            // QUEUED and RUNNING (and states a newer Athena adds) mean: ask again later.
            _ => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(max);
    }
}

/// Every page of the results as Arrow batches typed from Athena's column info.
async fn results(client: &Client, id: &str, has_header: bool) -> Result<Vec<RecordBatch>> {
    let mut pages = client.get_query_results().query_execution_id(id).max_results(1000).into_paginator().send();
    let mut batches = Vec::new();
    let mut first = true;
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| sdk_error(format!("reading the results of Athena query {id}"), e))?;
        let Some(rs) = page.result_set() else { continue };
        let info = rs.result_set_metadata().map(|m| m.column_info()).unwrap_or_default();
        let mut rows: Vec<Vec<Option<String>>> =
            rs.rows().iter().map(|r| r.data().iter().map(|d| d.var_char_value().map(str::to_string)).collect()).collect();
        if first && has_header && !rows.is_empty() {
            rows.remove(0);
        }
        first = false;
        batches.push(to_batch(info, &rows)?);
    }
    Ok(batches)
}

fn to_batch(info: &[ColumnInfo], rows: &[Vec<Option<String>>]) -> Result<RecordBatch> {
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (i, c) in info.iter().enumerate() {
        let text: StringArray = rows.iter().map(|r| r.get(i).cloned().flatten()).collect();
        let ty = arrow_type(c.r#type(), c.precision(), c.scale());
        let array = arrow::compute::cast(&text, &ty).map_err(Error::arrow(format!("reading Athena column `{}`", c.name())))?;
        fields.push(Field::new(c.name(), ty, true));
        columns.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(Error::arrow("building Athena results"))
}

/// Athena's (Trino's) type names to Arrow, through the catalog's one type map; a decimal takes
/// its precision from the column info, and anything else stays text.
fn arrow_type(ty: &str, precision: i32, scale: i32) -> DataType {
    match ty {
        "decimal" if (1..=38).contains(&precision) => DataType::Decimal128(precision as u8, scale.clamp(0, 38) as i8),
        _ => crate::catalog::arrow_type(ty).unwrap_or(DataType::Utf8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_typed_from_column_info() {
        let info = vec![
            ColumnInfo::builder().name("companyID").r#type("varchar").build().unwrap(),
            ColumnInfo::builder().name("jobs").r#type("bigint").build().unwrap(),
            ColumnInfo::builder().name("dt").r#type("date").build().unwrap(),
            ColumnInfo::builder().name("fee").r#type("decimal").precision(10).scale(2).build().unwrap(),
        ];
        let rows = vec![
            vec![Some("c-1".into()), Some("42".into()), Some("2026-11-20".into()), Some("12.50".into())],
            vec![Some("c-2".into()), None, None, None],
        ];
        let b = to_batch(&info, &rows).unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.schema().field(1).data_type(), &DataType::Int64);
        assert_eq!(b.schema().field(2).data_type(), &DataType::Date32);
        assert_eq!(b.schema().field(3).data_type(), &DataType::Decimal128(10, 2));
        assert_eq!(b.column(1).null_count(), 1);
        // The same type a warehouse reader gets for a catalog `timestamp`: UTC.
        assert_eq!(arrow_type("timestamp", 0, 0), crate::catalog::arrow_type("timestamp").unwrap());
        let text = arrow::util::pretty::pretty_format_batches(&[b]).unwrap().to_string();
        assert!(text.contains("2026-11-20") && text.contains("12.50"), "{text}");
    }
}
