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

use crate::error::{Error, Result};
use crate::job::{ExportCounts, ExportJob, JobMetrics, KindCounts};
use crate::store::encode_parquet;
use crate::workspace::JobRun;

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

/// Writes each dataset's rows of each tenant under the tenant's prefix, as of the run's date.
/// A dry run runs the datasets' SQL and counts what it would write.
pub async fn run(r: &JobRun<'_>, ej: &ExportJob) -> Result<JobMetrics> {
    let (ws, job) = (r.ws, r.job);
    let started = Instant::now();
    let as_of = r.as_of();
    let ctx = crate::engine::session_for(ws, Some(&ej.inputs)).await?;
    let mut m = r.metrics(as_of.to_string(), KindCounts::Export(ExportCounts::default()));
    m.periods = vec![as_of.to_string()];
    let mut tenants = std::collections::BTreeSet::new();
    for ds in &ej.datasets {
        let df = ctx
            .sql(&ds.sql)
            .await
            .map_err(|e| {
                Error::Usage(format!("{}: {}", ds.file.display(), crate::engine::describe_for_job(&ds.sql, &e, &job.file)))
            })?
            .with_param_values(crate::engine::params(as_of, (as_of, as_of)))
            .map_err(Error::df(format!("binding parameters of {}", ds.file.display())))?;
        let batches = df.collect().await.map_err(Error::df(format!("running {}", ds.file.display())))?;
        // The files are for other readers: plain strings, types Athena reads.
        let batches = crate::engine::plain_types(batches)?;
        m.rows_in += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        let mut by_tenant: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
        for b in batches.iter().filter(|b| b.num_rows() > 0) {
            let i = b.schema().index_of("companyID").map_err(|_| {
                Error::Usage(format!("{}: an export dataset must output a `companyID` column", ds.file.display()))
            })?;
            let ids = arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8)
                .map_err(Error::arrow("reading companyID"))?;
            let ids = ids.as_string::<i32>();
            let mut rows: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
            for row in 0..b.num_rows() {
                if ids.is_valid(row) {
                    rows.entry(ids.value(row)).or_default().push(row as u32);
                }
            }
            for (id, idx) in rows {
                let part =
                    arrow::compute::take_record_batch(b, &UInt32Array::from(idx)).map_err(Error::arrow("splitting by tenant"))?;
                by_tenant.entry(id.to_string()).or_default().push(part);
            }
        }
        for (id, parts) in by_tenant {
            let all = arrow::compute::concat_batches(&parts[0].schema(), &parts).map_err(Error::arrow("exporting"))?;
            m.rows_out += all.num_rows() as u64;
            let prefix = ej.prefix.replace("{companyID}", &tenant_segment(&id));
            let path = format!("{}/{}/as_of={as_of}/part-00000.parquet", prefix.trim_end_matches('/'), ds.name);
            m.partitions.push(path.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default());
            m.files += 1;
            tenants.insert(id);
            if r.dry_run {
                continue;
            }
            let data = encode_parquet(&all)?;
            m.bytes_out += data.len() as u64;
            // One put per file: a reader sees the old file or the new one, and a rerun overwrites.
            ws.warehouse.put(&ws.warehouse.child(&path), data).await?;
        }
    }
    m.counts = KindCounts::Export(ExportCounts { tenants: tenants.len() as u64, datasets: ej.datasets.len() as u64 });
    m.seconds = started.elapsed().as_secs_f64();
    Ok(m)
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
