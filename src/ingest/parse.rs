//! One drop object to typed Arrow rows.
//!
//! Inflate (GZIP or not), frame, parse, validate: accepted records go into column builders of
//! the stream's table, together with each row's dedup key and event date; rejected ones become
//! [`Reject`]s with their byte offset and raw text. Pure CPU work on owned bytes, so the ingest
//! job runs one of these per object on a blocking thread, in parallel.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::DataType;
use serde_json::Value;
use xxhash_rust::xxh3::Xxh3;

use super::decode::Record;
use super::framing::frames;
use super::validate::{Accepted, Cell, reason, validate, validate_fields};
use crate::job::thread_cpu;
use crate::schema::{Contract, StreamContract};
use crate::source::Compression;

pub use crate::config::Limits;

/// A record's text for quarantine, capped at `max` bytes (on a character boundary); the rest is
/// summarised by the record's length and hash in the reject's message.
fn capped(bytes: &[u8], max: usize) -> String {
    let head = &bytes[..bytes.len().min(max)];
    let mut text = String::from_utf8_lossy(head).into_owned();
    if head.len() < bytes.len() {
        // A character cut in two at the cap shows as one replacement character: drop it.
        if text.ends_with('\u{FFFD}') && std::str::from_utf8(head).is_err() {
            text.pop();
        }
    }
    text
}

fn summary(bytes: &[u8], max: usize) -> String {
    if bytes.len() <= max {
        return String::new();
    }
    format!(" [raw keeps the first {max} of {} bytes; xxh3 {:016x}]", bytes.len(), xxhash_rust::xxh3::xxh3_64(bytes))
}

/// A record the runner could not accept.
#[derive(Debug, Clone)]
pub struct Reject {
    pub offset: Option<u64>,
    pub raw: Option<String>,
    pub code: &'static str,
    pub field: Option<String>,
    pub message: String,
}

/// The result of reading one object.
pub struct ParsedObject {
    pub rows: RecordBatch,
    /// Event date of each row, in days since the epoch.
    pub days: Vec<i32>,
    /// Dedup key of each row: `event_id`, or the record's canonical content when it has none.
    pub keys: Vec<u128>,
    pub rejects: Vec<Reject>,
    pub records: u64,
    pub bytes_uncompressed: u64,
    /// CPU time spent inflating the object, and framing, parsing and validating its records.
    pub inflate: Duration,
    pub parse: Duration,
}

enum ColBuilder {
    Str(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Ts(TimestampMillisecondBuilder),
    Bool(BooleanBuilder),
}

impl ColBuilder {
    fn new(dt: &DataType) -> ColBuilder {
        match dt {
            DataType::Utf8 => ColBuilder::Str(StringBuilder::new()),
            DataType::Int64 => ColBuilder::Int(Int64Builder::new()),
            DataType::Float64 => ColBuilder::Float(Float64Builder::new()),
            DataType::Boolean => ColBuilder::Bool(BooleanBuilder::new()),
            DataType::Timestamp(_, tz) => ColBuilder::Ts(TimestampMillisecondBuilder::new().with_timezone_opt(tz.clone())),
            other => unreachable!("the contract has no {other} columns"),
        }
    }

    fn append(&mut self, c: Cell<'_>) {
        match (self, c) {
            (ColBuilder::Str(b), Cell::Str(s)) => b.append_value(s),
            (ColBuilder::Int(b), Cell::Int(i)) => b.append_value(i),
            (ColBuilder::Ts(b), Cell::Int(i)) => b.append_value(i),
            (ColBuilder::Float(b), Cell::Float(x)) => b.append_value(x),
            (ColBuilder::Bool(b), Cell::Bool(x)) => b.append_value(x),
            (ColBuilder::Str(b), _) => b.append_null(),
            (ColBuilder::Int(b), _) => b.append_null(),
            (ColBuilder::Ts(b), _) => b.append_null(),
            (ColBuilder::Float(b), _) => b.append_null(),
            (ColBuilder::Bool(b), _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColBuilder::Str(b) => Arc::new(b.finish()),
            ColBuilder::Int(b) => Arc::new(b.finish()),
            ColBuilder::Float(b) => Arc::new(b.finish()),
            ColBuilder::Ts(b) => Arc::new(b.finish()),
            ColBuilder::Bool(b) => Arc::new(b.finish()),
        }
    }
}

/// Reads one object. `source` is its full URL (stored in every row and reject);
/// `arrival_ms` its arrival hour, the event time of records that carry none.
pub fn parse_object(
    contract: &Contract,
    sc: &StreamContract,
    source: &str,
    compression: Compression,
    arrival_ms: i64,
    body: &[u8],
    limits: Limits,
) -> ParsedObject {
    let schema = sc.file_schema();
    let mut builders: Vec<ColBuilder> = schema.fields().iter().map(|f| ColBuilder::new(f.data_type())).collect();
    let mut out = ParsedObject {
        rows: RecordBatch::new_empty(schema.clone()),
        days: Vec::new(),
        keys: Vec::new(),
        rejects: Vec::new(),
        records: 0,
        bytes_uncompressed: 0,
        inflate: Duration::ZERO,
        parse: Duration::ZERO,
    };
    let started = thread_cpu();

    let inflated;
    let data: &[u8] = match compression {
        Compression::None => body,
        Compression::Gzip => {
            // Never more than the limit: a small GZIP bomb is read to the limit and refused.
            let mut buf = Vec::with_capacity((body.len() * 8).min(limits.max_object_bytes as usize + 1));
            let inflating = flate2::read::MultiGzDecoder::new(body).take(limits.max_object_bytes + 1).read_to_end(&mut buf);
            if let Err(e) = inflating {
                // A corrupt or truncated object: keep it visible, never half-read it.
                out.rejects.push(Reject {
                    offset: None,
                    raw: None,
                    code: reason::CORRUPT_OBJECT,
                    field: None,
                    message: format!("cannot inflate GZIP object: {e}; no record of it was ingested"),
                });
                return out;
            }
            inflated = buf;
            &inflated
        }
    };
    out.bytes_uncompressed = data.len() as u64;
    out.inflate = thread_cpu().saturating_sub(started);
    if data.len() as u64 > limits.max_object_bytes {
        out.rejects.push(Reject {
            offset: None,
            raw: None,
            code: reason::OBJECT_TOO_LARGE,
            field: None,
            message: format!(
                "the object holds more than {} bytes ({} compressed{}), over ingest.max_object_bytes: it was not read further and no record of it was ingested; raise the limit and replay it from quarantine if it is real data",
                limits.max_object_bytes,
                body.len(),
                if compression == Compression::Gzip { ", GZIP" } else { "" }
            ),
        });
        return out;
    }
    let started = thread_cpu();

    // One cells buffer for the whole object: emptied at the end of each record and recycled
    // into the next record's lifetime (the in-place collect reuses the allocation).
    let mut spare: Vec<Cell<'static>> = Vec::with_capacity(sc.columns.len());
    let mut fast_spare: Vec<Cell<'static>> = Vec::with_capacity(sc.columns.len());
    // The fast path's fields, borrowing from `data`: one buffer for every record of the object.
    let mut fields = Vec::new();
    for frame in frames(data, limits.max_record_bytes) {
        if frame.too_large {
            out.records += 1;
            out.rejects.push(Reject {
                offset: Some(frame.offset as u64),
                raw: Some(capped(frame.bytes, limits.max_raw_bytes)),
                code: reason::RECORD_TOO_LARGE,
                field: None,
                message: format!(
                    "a record of {} bytes, over ingest.max_record_bytes ({}); not parsed{}",
                    frame.bytes.len(),
                    limits.max_record_bytes,
                    summary(frame.bytes, limits.max_raw_bytes)
                ),
            });
            continue;
        }
        let mut cells: Vec<Cell<'_>> = std::mem::take(&mut spare).into_iter().map(|_| Cell::Null).collect();
        out.records += 1;
        // The fast path: a clean record with an `event_id`, validated without a tree.
        match Record::parse_into(frame.bytes, std::mem::take(&mut fields)) {
            Ok(rec) => {
                let mut done = false;
                if let Some(event_type) = rec.event_type() {
                    let mut fc: Vec<Cell<'_>> = std::mem::take(&mut fast_spare).into_iter().map(|_| Cell::Null).collect();
                    let accepted = validate_fields(contract, sc, event_type, rec.iter(), false, &mut fc);
                    if let Ok(acc) = accepted
                        && let Cell::Str(id) = fc[sc.col_event_id]
                    {
                        let key = id_key(id);
                        emit(&mut out, &mut builders, sc, &mut fc, acc, source, arrival_ms, key);
                        done = true;
                    }
                    fc.clear();
                    fast_spare = fc.into_iter().map(|_| Cell::Null).collect();
                }
                fields = rec.into_buffer();
                if done {
                    spare = cells.into_iter().map(|_| Cell::Null).collect();
                    continue;
                }
            }
            Err(buf) => fields = buf,
        }
        // The exact path: whatever the fast path does not take as it is.
        let reject = |code, field: Option<String>, message: String| Reject {
            offset: Some(frame.offset as u64),
            raw: Some(capped(frame.bytes, limits.max_raw_bytes)),
            code,
            field,
            message: message + &summary(frame.bytes, limits.max_raw_bytes),
        };
        let value: Value = match serde_json::from_slice(frame.bytes) {
            Ok(v) => v,
            Err(e) => {
                let msg = if frame.unterminated {
                    "unterminated JSON object (no closing `}` before the end of the line)".to_string()
                } else {
                    format!("not valid JSON: {e}")
                };
                out.rejects.push(reject(reason::INVALID_JSON, None, msg));
                spare = cells.into_iter().map(|_| Cell::Null).collect();
                continue;
            }
        };
        let Value::Object(map) = &value else {
            out.rejects.push(reject(reason::NOT_OBJECT, None, format!("a record must be a JSON object, got {}", kind(&value))));
            spare = cells.into_iter().map(|_| Cell::Null).collect();
            continue;
        };
        let acc = match validate(contract, sc, map, &mut cells) {
            Ok(a) => a,
            Err(r) => {
                out.rejects.push(reject(r.code, r.field, r.message));
                cells.clear();
                spare = cells.into_iter().map(|_| Cell::Null).collect();
                continue;
            }
        };
        let key = match cells[sc.col_event_id] {
            Cell::Str(id) => id_key(id),
            _ => content_key(&value),
        };
        emit(&mut out, &mut builders, sc, &mut cells, acc, source, arrival_ms, key);
        cells.clear();
        spare = cells.into_iter().map(|_| Cell::Null).collect();
    }
    let arrays: Vec<ArrayRef> = builders.iter_mut().map(ColBuilder::finish).collect();
    out.rows = RecordBatch::try_new(schema, arrays).expect("builders follow the schema");
    out.parse = thread_cpu().saturating_sub(started);
    out
}

/// The dedup key of a record with an `event_id`.
fn id_key(id: &str) -> u128 {
    let mut h = Xxh3::new();
    h.update(b"id\0");
    h.update(id.as_bytes());
    h.digest128()
}

/// Appends an accepted record: the runner's own columns, its dedup key and event date.
#[allow(clippy::too_many_arguments)]
fn emit<'v>(
    out: &mut ParsedObject,
    builders: &mut [ColBuilder],
    sc: &'v StreamContract,
    cells: &mut [Cell<'v>],
    acc: Accepted<'v>,
    source: &'v str,
    arrival_ms: i64,
    key: u128,
) {
    let event_ms = acc.event_time_ms.unwrap_or(arrival_ms);
    cells[sc.col_event_type] = Cell::Str(acc.event_type);
    cells[sc.col_event_time] = Cell::Int(event_ms);
    cells[sc.col_legacy] = Cell::Bool(acc.legacy);
    cells[sc.col_source] = Cell::Str(source);
    out.keys.push(key);
    out.days.push(crate::dates::day_of_ms(event_ms));
    for (b, c) in builders.iter_mut().zip(cells.iter()) {
        b.append(*c);
    }
}

/// A key for a record without `event_id`: its content with object keys in sorted order, so
/// that the same record re-sent with other spacing or key order is still a duplicate.
pub fn content_key(v: &Value) -> u128 {
    fn feed(h: &mut Xxh3, v: &Value) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                h.update(b"{");
                for k in keys {
                    h.update(k.as_bytes());
                    h.update(b":");
                    feed(h, &m[k]);
                    h.update(b",");
                }
                h.update(b"}");
            }
            Value::Array(a) => {
                h.update(b"[");
                for x in a {
                    feed(h, x);
                    h.update(b",");
                }
                h.update(b"]");
            }
            other => h.update(other.to_string().as_bytes()),
        }
    }
    let mut h = Xxh3::new();
    h.update(b"content\0");
    feed(&mut h, v);
    h.digest128()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use std::io::Write;

    fn c() -> Contract {
        Contract::parse(include_str!("../../schemas/events.toml"), "events.toml").unwrap()
    }

    #[test]
    fn gzip_back_to_back_and_rejects_with_offsets() {
        let c = c();
        let sc = c.stream("bigdatajobs").unwrap();
        let text = "{\"companyID\":\"a/../b\",\"userID\":\"u\",\"nbJobs\":2}{\"event_type\":\"job_submitted\",\"tenantID\":\"x\",\"userID\":\"u\",\"event_id\":\"e1\",\"creationDate\":1700000000000}\r\nnope\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        let body = gz.finish().unwrap();
        let p = parse_object(&c, sc, "file:///o", Compression::Gzip, 1_600_000_000_000, &body, Limits::default());
        assert_eq!((p.records, p.rows.num_rows(), p.rejects.len()), (3, 2, 1));
        let company = p.rows.column(sc.col_company).as_string::<i32>();
        assert_eq!(company.value(0), "a/../b");
        assert_eq!(company.value(1), "x");
        assert_eq!(p.rejects[0].offset, Some(text.find("nope").unwrap() as u64));
        assert_eq!(p.rejects[0].code, reason::INVALID_JSON);
        let nb = p.rows.column(sc.key_index["nbJobs"]).as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(nb.value(0), 2);
        assert_eq!(p.days, vec![crate::dates::day_of_ms(1_600_000_000_000), crate::dates::day_of_ms(1_700_000_000_000)]);
        assert!(!p.rows.column(sc.col_event_id).is_valid(0));
    }

    #[test]
    fn corrupt_gzip_is_one_reject() {
        let c = c();
        let sc = c.stream("companies").unwrap();
        let p = parse_object(&c, sc, "o", Compression::Gzip, 0, b"\x1f\x8b\x08garbage", Limits::default());
        assert_eq!(p.rows.num_rows(), 0);
        assert_eq!(p.rejects[0].code, reason::CORRUPT_OBJECT);
    }

    /// A GZIP bomb stops inflating at the limit and is one `object_too_large`; an over-long
    /// record is `record_too_large` with a capped `raw`, and the records around it are read.
    #[test]
    fn limits_refuse_a_bomb_and_cap_an_over_long_record() {
        let c = c();
        let sc = c.stream("bigdatajobs").unwrap();
        let limits = Limits { max_record_bytes: 1000, max_object_bytes: 1 << 20, max_raw_bytes: 100 };
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&vec![0u8; 8 << 20]).unwrap();
        let bomb = gz.finish().unwrap();
        let p = parse_object(&c, sc, "o", Compression::Gzip, 0, &bomb, limits);
        assert_eq!((p.rows.num_rows(), p.rejects.len()), (0, 1));
        assert_eq!(p.rejects[0].code, reason::OBJECT_TOO_LARGE);
        assert!(p.bytes_uncompressed <= (1 << 20) + 1, "inflated no further than the limit: {}", p.bytes_uncompressed);
        let ok = r#"{"event_type":"job_submitted","companyID":"c","userID":"u","event_id":"e1","creationDate":1700000000000}"#;
        let text = format!("{ok}\n{{\"x\":\"{}\"}}\n{}", "é".repeat(2000), ok.replace("e1", "e2"));
        let p = parse_object(&c, sc, "o", Compression::None, 0, text.as_bytes(), limits);
        assert_eq!((p.records, p.rows.num_rows(), p.rejects.len()), (3, 2, 1));
        let r = &p.rejects[0];
        assert_eq!(r.code, reason::RECORD_TOO_LARGE);
        let raw = r.raw.as_deref().unwrap();
        assert!(raw.len() <= 100 && raw.starts_with("{\"x\":\"é") && !raw.ends_with('\u{FFFD}'), "{raw}");
        assert!(r.message.contains("4008 bytes") && r.message.contains("xxh3"), "{}", r.message);
    }

    #[test]
    fn content_key_ignores_key_order_and_spacing() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":[1,{"c":2}]}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{ "b" : [1, {"c":2}], "a":1 }"#).unwrap();
        let d: Value = serde_json::from_str(r#"{"a":2,"b":[1,{"c":2}]}"#).unwrap();
        assert_eq!(content_key(&a), content_key(&b));
        assert_ne!(content_key(&a), content_key(&d));
    }
}
