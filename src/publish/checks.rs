//! Quality checks on a job's output, run after it is written and before it is published.
//!
//! Computed directly on the output's Arrow batches (no SQL text is built from config values).
//! Every failed check is reported, not just the first, so one run tells the whole story.

use std::collections::HashSet;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use arrow::row::{RowConverter, SortField};

use crate::job::Checks;

/// Runs `checks` over the output; returns one message per failed check.
pub fn run(checks: &Checks, batches: &[RecordBatch]) -> Vec<String> {
    let mut failed = Vec::new();
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    if let Some(min) = checks.min_rows
        && rows < min
    {
        failed.push(format!("row count {rows} is below min_rows = {min}"));
    }
    if let Some(max) = checks.max_rows
        && rows > max
    {
        failed.push(format!("row count {rows} is above max_rows = {max}"));
    }
    let Some(schema) = batches.first().map(|b| b.schema()) else { return failed };
    let col = |name: &str| schema.index_of(name).ok();

    for c in &checks.not_null {
        match col(c) {
            None => failed.push(format!("not_null names column `{c}`, which the output does not have")),
            Some(i) => {
                let nulls: usize = batches.iter().map(|b| b.column(i).null_count()).sum();
                if nulls > 0 {
                    failed.push(format!("column `{c}` has {nulls} NULL value(s) (not_null)"));
                }
            }
        }
    }
    if !checks.unique.is_empty() {
        let idx: Option<Vec<usize>> = checks.unique.iter().map(|c| col(c)).collect();
        match idx {
            None => failed.push(format!("unique names a column the output does not have: {:?}", checks.unique)),
            Some(idx) => {
                let fields = idx.iter().map(|i| SortField::new(schema.field(*i).data_type().clone())).collect();
                match RowConverter::new(fields) {
                    Ok(conv) => {
                        let mut seen = HashSet::new();
                        let mut dups = 0u64;
                        let mut example = None;
                        for b in batches {
                            let cols: Vec<_> = idx.iter().map(|i| b.column(*i).clone()).collect();
                            let Ok(keys) = conv.convert_columns(&cols) else { continue };
                            for (r, k) in keys.iter().enumerate() {
                                // A 128-bit hash of the row's key bytes: no allocation per
                                // row, and a collision (2^-128) is not a practical concern.
                                if !seen.insert(xxhash_rust::xxh3::xxh3_128(k.as_ref())) {
                                    dups += 1;
                                    if example.is_none() {
                                        example = Some(describe_row(b, &idx, r));
                                    }
                                }
                            }
                        }
                        if dups > 0 {
                            failed.push(format!(
                                "{dups} duplicate row(s) for unique ({}), e.g. {}",
                                checks.unique.join(", "),
                                example.unwrap_or_default()
                            ));
                        }
                    }
                    Err(e) => failed.push(format!("unique cannot compare these columns: {e}")),
                }
            }
        }
    }
    for (c, accepted) in &checks.accepted_values {
        let Some(i) = col(c) else {
            failed.push(format!("accepted_values names column `{c}`, which the output does not have"));
            continue;
        };
        let mut bad: Vec<String> = Vec::new();
        for b in batches {
            let Ok(strings) = arrow::compute::cast(b.column(i), &DataType::Utf8) else { continue };
            let strings = strings.as_string::<i32>();
            for v in strings.iter().flatten() {
                if !accepted.iter().any(|a| a == v) && !bad.iter().any(|x| x == v) && bad.len() < 5 {
                    bad.push(v.to_string());
                }
            }
        }
        if !bad.is_empty() {
            failed.push(format!("column `{c}` holds values outside accepted_values: {}", bad.join(", ")));
        }
    }
    failed
}

fn describe_row(b: &RecordBatch, idx: &[usize], r: usize) -> String {
    idx.iter()
        .map(|i| {
            let v = arrow::util::display::array_value_to_string(b.column(*i), r).unwrap_or_default();
            format!("{}={v}", b.schema().field(*i).name())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            ("k", Arc::new(StringArray::from(vec![Some("a"), Some("b"), Some("a"), None])) as _),
            ("n", Arc::new(Int64Array::from(vec![1, 2, 1, 3])) as _),
        ])
        .unwrap()
    }

    #[test]
    fn each_check_can_fail_and_pass() {
        let ok = Checks { min_rows: Some(4), max_rows: Some(4), ..Default::default() };
        assert!(run(&ok, &[batch()]).is_empty());
        let bad = Checks {
            not_null: vec!["k".into()],
            unique: vec!["k".into(), "n".into()],
            min_rows: Some(5),
            max_rows: Some(3),
            accepted_values: [("k".to_string(), vec!["a".to_string()])].into(),
        };
        let f = run(&bad, &[batch()]);
        assert_eq!(f.len(), 5, "{f:#?}");
        assert!(f.iter().any(|m| m.contains("k=a, n=1")), "{f:#?}");
        assert!(f.iter().any(|m| m.contains("outside accepted_values: b")), "{f:#?}");
        let missing = Checks { not_null: vec!["nope".into()], ..Default::default() };
        assert!(run(&missing, &[batch()])[0].contains("nope"));
    }
}
