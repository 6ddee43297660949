//! Results on stdout in the format asked for: an aligned table for people, CSV or JSON for
//! programs; and [`notice`], the one way to tell the person at the terminal something on stderr
//! that is not a log line. Logs and progress never come to stdout. Only this module and
//! `progress` print (clippy.toml denies `print!`, `println!` and `eprintln!` elsewhere).
#![allow(clippy::disallowed_macros)]

use std::io::Write;

use arrow::array::RecordBatch;
use clap::ValueEnum;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Aligned table for a terminal.
    #[default]
    Table,
    /// CSV with a header row.
    Csv,
    /// A JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
}

pub fn write_batches(out: &mut dyn Write, format: Format, batches: &[RecordBatch]) -> Result<()> {
    let io = |e: std::io::Error| Error::Io { what: "writing results".into(), source: e };
    match format {
        Format::Table => {
            let t = arrow::util::pretty::pretty_format_batches(batches).map_err(Error::arrow("formatting results"))?;
            writeln!(out, "{t}").map_err(io)?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            writeln!(out, "{rows} row{}", if rows == 1 { "" } else { "s" }).map_err(io)?;
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&mut *out);
            for b in batches {
                w.write(b).map_err(Error::arrow("writing CSV"))?;
            }
        }
        // Every column of every row, NULL as `null`: a reader tells a NULL from a missing column.
        Format::Json => {
            let mut w =
                arrow::json::WriterBuilder::new().with_explicit_nulls(true).build::<_, arrow::json::writer::JsonArray>(&mut *out);
            w.write_batches(&batches.iter().collect::<Vec<_>>()).map_err(Error::arrow("writing JSON"))?;
            w.finish().map_err(Error::arrow("writing JSON"))?;
            writeln!(out).map_err(io)?;
        }
        Format::Ndjson => {
            let mut w = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::LineDelimited>(&mut *out);
            w.write_batches(&batches.iter().collect::<Vec<_>>()).map_err(Error::arrow("writing JSON"))?;
            w.finish().map_err(Error::arrow("writing JSON"))?;
        }
    }
    out.flush().map_err(io)
}

/// A message for the person running the command (what was skipped, where a server listens),
/// on stderr, so stdout stays the result.
pub fn notice(msg: impl std::fmt::Display) {
    eprintln!("{msg}");
}

/// Records in the format asked: JSON keeps every field of each record (serde), table and CSV
/// show the batch `table` builds (`runner run` prints every kind of job run this way, from
/// `JobMetrics`).
pub fn write_records<T: serde::Serialize>(
    out: &mut dyn Write,
    format: Format,
    records: &[T],
    table: impl FnOnce() -> Result<RecordBatch>,
) -> Result<()> {
    let io = |e: std::io::Error| Error::Io { what: "writing the summary".into(), source: e };
    if matches!(format, Format::Json | Format::Ndjson) {
        let text = if format == Format::Json {
            serde_json::to_string_pretty(records)
        } else {
            records.iter().map(serde_json::to_string).collect::<std::result::Result<Vec<_>, _>>().map(|v| v.join("\n"))
        }
        .map_err(|e| Error::Internal(e.to_string()))?;
        return writeln!(out, "{text}").map_err(io);
    }
    write_batches(out, format, &[table()?])
}
