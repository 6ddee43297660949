//! Per-tenant export (the seed's "one bucket per company"): each tenant's rows under its own
//! prefix, from a template such as `exports/{companyID}/`.
//!
//! A tenant id is a producer string, so it is never used as a path as it is: [`tenant_segment`]
//! percent-encodes every byte outside `[A-Za-z0-9_-]`. The encoding is injective (`%` itself is
//! encoded), never yields `.`, `..` or a `/`, and maps the empty id to `%`, which no other id
//! produces: no id can escape its prefix or land in another tenant's.

use std::collections::BTreeMap;
use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use chrono::{NaiveDate, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ingest::encode_parquet;
use crate::job::{ExportJob, Job};
use crate::workspace::Workspace;

/// The path segment for a tenant id.
pub fn tenant_segment(id: &str) -> String {
    if id.is_empty() {
        return "%".into();
    }
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ExportSummary {
    pub job: String,
    pub as_of: String,
    pub tenants: u64,
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
}

pub async fn run(ws: &Workspace, job: &Job, ej: &ExportJob, as_of: Option<NaiveDate>) -> Result<ExportSummary> {
    let started = Instant::now();
    let as_of = as_of.unwrap_or_else(|| Utc::now().date_naive());
    let ctx = crate::engine::session_for(ws, Some(&ej.inputs)).await?;
    let mut s = ExportSummary { job: job.name.clone(), as_of: as_of.to_string(), ..Default::default() };
    let mut tenants = std::collections::BTreeSet::new();
    for ds in &ej.datasets {
        let df = ctx
            .sql(&ds.sql)
            .await
            .map_err(|e| {
                Error::Usage(format!("{}: {}", ds.file.display(), crate::sqlcheck::describe_for_job(&ds.sql, &e, &job.file)))
            })?
            .with_param_values(crate::transform::params(as_of, (as_of, as_of)))
            .map_err(Error::df(format!("binding parameters of {}", ds.file.display())))?;
        let batches = df.collect().await.map_err(Error::df(format!("running {}", ds.file.display())))?;
        // The files are for other readers: plain strings, types Athena reads.
        let batches = crate::engine::plain_types(batches)?;
        let mut by_tenant: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
        for b in batches.iter().filter(|b| b.num_rows() > 0) {
            let i = b.schema().index_of("companyID").map_err(|_| {
                Error::Usage(format!("{}: an export dataset must output a `companyID` column", ds.file.display()))
            })?;
            let ids = arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8)
                .map_err(Error::arrow("reading companyID"))?;
            let ids = ids.as_string::<i32>();
            let mut rows: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
            for r in 0..b.num_rows() {
                if ids.is_valid(r) {
                    rows.entry(ids.value(r)).or_default().push(r as u32);
                }
            }
            for (id, r) in rows {
                let part =
                    arrow::compute::take_record_batch(b, &UInt32Array::from(r)).map_err(Error::arrow("splitting by tenant"))?;
                by_tenant.entry(id.to_string()).or_default().push(part);
            }
        }
        for (id, parts) in by_tenant {
            let all = arrow::compute::concat_batches(&parts[0].schema(), &parts).map_err(Error::arrow("exporting"))?;
            s.rows += all.num_rows() as u64;
            let prefix = ej.prefix.replace("{companyID}", &tenant_segment(&id));
            let path = format!("{}/{}/as_of={as_of}/part-00000.parquet", prefix.trim_end_matches('/'), ds.name);
            let data = encode_parquet(&all)?;
            s.bytes += data.len() as u64;
            s.files += 1;
            // One put per file: a reader sees the old file or the new one, and a rerun overwrites.
            ws.warehouse.put(&ws.warehouse.child(&path), data).await?;
            tenants.insert(id);
        }
    }
    s.tenants = tenants.len() as u64;
    s.seconds = started.elapsed().as_secs_f64();
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn traversal_and_collisions_are_impossible() {
        for (id, seg) in [
            ("acme", "acme"),
            ("../x", "%2E%2E%2Fx"),
            ("/", "%2F"),
            ("%2F", "%252F"),
            ("k=v", "k%3Dv"),
            ("café", "caf%C3%A9"),
            ("", "%"),
            (".", "%2E"),
            ("a b", "a%20b"),
        ] {
            assert_eq!(tenant_segment(id), seg, "{id:?}");
        }
    }

    proptest! {
        #[test]
        fn one_safe_segment_per_id_and_no_two_ids_share_one(a in ".*", b in ".*") {
            let (sa, sb) = (tenant_segment(&a), tenant_segment(&b));
            prop_assert!(!sa.is_empty() && !sa.contains('/') && sa != "." && sa != "..");
            prop_assert_eq!(a == b, sa == sb);
        }
    }
}
