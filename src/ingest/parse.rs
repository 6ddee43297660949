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
use super::framing::Frame;
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
    raw_note(max, bytes.len() as u64, xxhash_rust::xxh3::xxh3_64(bytes))
}

/// What a capped `raw` leaves out: the record's length and hash.
fn raw_note(max: usize, len: u64, hash: u64) -> String {
    format!(" [raw keeps the first {max} of {len} bytes; xxh3 {hash:016x}]")
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

/// How much inflated data a GZIP object is framed in at a time (plus what the last chunk left
/// unfinished): the object is never inflated whole, so its size costs no memory beyond the rows
/// it yields.
const CHUNK: usize = 8 << 20;

/// Reads one object. `source` is its full URL (stored in every row and reject);
/// `arrival_ms` its arrival hour, the event time of records that carry none.
///
/// A GZIP object is inflated and framed chunk by chunk: a chunk's records are taken up to the
/// last one that more data could still change (an object not closed yet, a line not ended),
/// which starts the next chunk. A record over the record limit that runs past a chunk is
/// skipped to its line's end across chunks, its head kept and the rest hashed. An object that
/// inflates past the object limit, or stops inflating with an error, yields no row at all.
pub fn parse_object(
    contract: &Contract,
    sc: &StreamContract,
    source: &str,
    compression: Compression,
    arrival_ms: i64,
    body: &[u8],
    limits: Limits,
) -> ParsedObject {
    parse_in_chunks(contract, sc, source, compression, arrival_ms, body, limits, CHUNK, true)
}

/// [`parse_object`] with GZIP output framed `chunk` bytes at a time (at least twice the record
/// limit), flat records read in one pass or not.
#[allow(clippy::too_many_arguments)]
fn parse_in_chunks(
    contract: &Contract,
    sc: &StreamContract,
    source: &str,
    compression: Compression,
    arrival_ms: i64,
    body: &[u8],
    limits: Limits,
    chunk: usize,
    flat: bool,
) -> ParsedObject {
    let schema = sc.file_schema();
    let mut p = Parser {
        contract,
        sc,
        source,
        arrival_ms,
        limits,
        builders: schema.fields().iter().map(|f| ColBuilder::new(f.data_type())).collect(),
        out: ParsedObject {
            rows: RecordBatch::new_empty(schema.clone()),
            days: Vec::new(),
            keys: Vec::new(),
            rejects: Vec::new(),
            records: 0,
            bytes_uncompressed: 0,
            inflate: Duration::ZERO,
            parse: Duration::ZERO,
        },
        skip: None,
        flat,
    };
    match compression {
        Compression::None => {
            p.out.bytes_uncompressed = body.len() as u64;
            if body.len() as u64 > limits.max_object_bytes {
                return p.refuse_too_large(body.len() as u64, compression);
            }
            let started = thread_cpu();
            p.frames(body, 0, true, true);
            p.out.parse = thread_cpu().saturating_sub(started);
        }
        Compression::Gzip => {
            let mut decoder = flate2::read::MultiGzDecoder::new(body);
            let chunk = chunk.max(2 * limits.max_record_bytes);
            // Sized for what the object is likely to inflate to, growing if it holds more: a
            // buffer of a whole chunk (over 8 MiB) comes from jemalloc's oversize arena, which
            // hands its pages back to the kernel when freed, so every small object paid a page
            // fault per 4 KiB it inflated (a third of the ingest's page faults, 0.5 s of 3.5 s
            // on the hourly drops at 500 tenants).
            let expected = (body.len() as u64).saturating_mul(super::GZIP_RATIO_ESTIMATE).min(chunk as u64) as usize;
            let mut buf: Vec<u8> = Vec::with_capacity(expected);
            // Object offset of buf[0], and whether buf[0] is the object's first byte.
            let (mut base, mut first, mut eof) = (0u64, true, false);
            while !eof || !buf.is_empty() {
                let started = thread_cpu();
                // Never more than the limit (plus one byte, to know it is over).
                let room = (limits.max_object_bytes + 1).saturating_sub(p.out.bytes_uncompressed).min(chunk as u64);
                let before = buf.len();
                if let Err(e) = (&mut decoder).take(room).read_to_end(&mut buf) {
                    // A corrupt or truncated object: keep it visible, never half-read it.
                    return p.refuse(
                        reason::CORRUPT_OBJECT,
                        format!("cannot inflate GZIP object: {e}; no record of it was ingested"),
                    );
                }
                let read = (buf.len() - before) as u64;
                p.out.bytes_uncompressed += read;
                eof = read < room || room == 0;
                p.out.inflate += thread_cpu().saturating_sub(started);
                if p.out.bytes_uncompressed > limits.max_object_bytes {
                    return p.refuse_too_large(body.len() as u64, compression);
                }
                let started = thread_cpu();
                let consumed = p.frames(&buf, base, first, eof);
                p.out.parse += thread_cpu().saturating_sub(started);
                if eof {
                    break;
                }
                if consumed > 0 {
                    first = false;
                }
                buf.drain(..consumed);
                base += consumed as u64;
            }
        }
    }
    let arrays: Vec<ArrayRef> = p.builders.iter_mut().map(ColBuilder::finish).collect();
    p.out.rows = RecordBatch::try_new(schema, arrays).expect("builders follow the schema");
    p.out
}

/// A record over the record limit whose line runs past the chunk being framed: its head is
/// kept, the rest only counted and hashed, until its line ends.
struct Skip {
    offset: u64,
    head: Vec<u8>,
    len: u64,
    hash: xxhash_rust::xxh3::Xxh3,
    /// A `\r` at the end of the last piece: part of the record unless a `\n` follows.
    held_cr: bool,
}

impl Skip {
    fn at(offset: u64) -> Skip {
        Skip { offset, head: Vec::new(), len: 0, hash: xxhash_rust::xxh3::Xxh3::new(), held_cr: false }
    }

    fn feed(&mut self, mut piece: &[u8], max_raw: usize) {
        if piece.is_empty() {
            return;
        }
        if std::mem::take(&mut self.held_cr) {
            self.add(b"\r", max_raw);
        }
        if piece.last() == Some(&b'\r') {
            self.held_cr = true;
            piece = &piece[..piece.len() - 1];
        }
        self.add(piece, max_raw);
    }

    fn add(&mut self, piece: &[u8], max_raw: usize) {
        let room = (max_raw + 4).saturating_sub(self.head.len()).min(piece.len());
        self.head.extend_from_slice(&piece[..room]);
        self.len += piece.len() as u64;
        self.hash.update(piece);
    }
}

/// The state of reading one object: its column builders and what it found so far.
struct Parser<'c> {
    contract: &'c Contract,
    sc: &'c StreamContract,
    source: &'c str,
    arrival_ms: i64,
    limits: Limits,
    builders: Vec<ColBuilder>,
    out: ParsedObject,
    skip: Option<Skip>,
    /// Whether flat records are read in one pass ([`Record::scan_flat`]); off only in the tests
    /// that check it changes nothing.
    flat: bool,
}

impl Parser<'_> {
    /// The object as one reject and no rows (whatever earlier chunks yielded).
    fn refuse(mut self, code: &'static str, message: String) -> ParsedObject {
        let schema = self.sc.file_schema();
        self.out.rows = RecordBatch::new_empty(schema);
        self.out.days.clear();
        self.out.keys.clear();
        self.out.records = 0;
        self.out.rejects = vec![Reject { offset: None, raw: None, code, field: None, message }];
        self.out
    }

    fn refuse_too_large(self, compressed: u64, compression: Compression) -> ParsedObject {
        let message = format!(
            "the object holds more than {} bytes ({} compressed{}), over ingest.max_object_bytes: it was not read further and no record of it was ingested; raise the limit and copy the object to a new key if it is real data (`runner replay` re-reads records, not objects)",
            self.limits.max_object_bytes,
            compressed,
            if compression == Compression::Gzip { ", GZIP" } else { "" }
        );
        self.refuse(reason::OBJECT_TOO_LARGE, message)
    }

    fn record_too_large(&mut self, offset: u64, raw: String, len: u64, hash: u64) {
        self.out.records += 1;
        let max = self.limits.max_raw_bytes;
        self.out.rejects.push(Reject {
            offset: Some(offset),
            raw: Some(raw),
            code: reason::RECORD_TOO_LARGE,
            field: None,
            message: format!(
                "a record of {len} bytes, over ingest.max_record_bytes ({}); not parsed{}",
                self.limits.max_record_bytes,
                raw_note(max, len, hash)
            ),
        });
    }

    /// Frames `data` (object offset `base`) and takes its records. Unless `eof`, stops at the
    /// first record more data could still change and returns where it starts (all of `data`
    /// when a too-large record runs past its end: it is skipped on in the next chunks).
    fn frames(&mut self, data: &[u8], base: u64, first: bool, eof: bool) -> usize {
        let limit = self.limits.max_record_bytes;
        let mut at = 0;
        if let Some(skip) = &mut self.skip {
            match memchr::memchr(b'\n', data) {
                Some(i) => {
                    skip.feed(&data[..i], self.limits.max_raw_bytes);
                    at = i;
                }
                None => {
                    skip.feed(data, self.limits.max_raw_bytes);
                    at = data.len();
                }
            }
            if at < data.len() || eof {
                let skip = self.skip.take().expect("skipping");
                self.record_too_large(skip.offset, capped(&skip.head, self.limits.max_raw_bytes), skip.len, skip.hash.digest());
            }
            if self.skip.is_some() {
                return data.len();
            }
        }
        // Records starting this close to the end may still change with more data.
        let tail = if eof { usize::MAX } else { data.len().saturating_sub(limit + 1) };
        let rest = &data[at..];
        let mut consumed = data.len();
        // One cells buffer for the chunk: emptied at the end of each record and recycled into
        // the next record's lifetime (the in-place collect reuses the allocation).
        let mut spare: Vec<Cell<'static>> = Vec::with_capacity(self.sc.columns.len());
        let mut fast_spare: Vec<Cell<'static>> = Vec::with_capacity(self.sc.columns.len());
        // The fast path's fields, borrowing from `data`: one buffer for every record of the chunk.
        let mut fields = Vec::new();
        // The chunk checked as UTF-8 once, for the fast path to slice its strings from (`None`
        // when it is not: a bad byte, or a GZIP chunk that ends inside a character; then each
        // string is checked on its own, as before).
        let text = if self.flat { simdutf8::basic::from_utf8(rest).ok() } else { None };
        let mut frames = super::framing::frames_at(rest, limit, first && at == 0);
        loop {
            // A flat record is read in the pass that finds its end; anything else is framed
            // first and parsed after (a closed object is taken whatever chunk it ends).
            let mut read = None;
            if self.flat
                && let Some(s) = frames.next_start()
                && rest[s] == b'{'
            {
                match Record::scan_flat(&rest[s..], text.and_then(|t| t.get(s..)), limit, std::mem::take(&mut fields)) {
                    Ok((rec, len)) => read = Some((rec, len)),
                    Err(buf) => fields = buf,
                }
            }
            let frame = match &read {
                Some((_, len)) => frames.take_closed(*len),
                None => match frames.next() {
                    Some(f) => f,
                    None => break,
                },
            };
            let start = at + frame.offset;
            let end = start + frame.bytes.len();
            let closed = frame.bytes.first() == Some(&b'{') && !frame.unterminated && !frame.too_large;
            let line_ended = data[end..].starts_with(b"\n") || data[end..].starts_with(b"\r\n");
            if !eof {
                if frame.too_large && !line_ended && start < tail {
                    let mut skip = Skip::at(base + start as u64);
                    skip.feed(&data[start..], self.limits.max_raw_bytes);
                    self.skip = Some(skip);
                    return data.len();
                }
                if start >= tail && !(closed || (frame.bytes.first() != Some(&b'{') && line_ended)) {
                    consumed = start;
                    break;
                }
            }
            self.frame(frame, base + start as u64, read.map(|(rec, _)| rec), &mut spare, &mut fast_spare, &mut fields);
        }
        consumed
    }

    /// Takes one record: accepted into the builders, or a reject.
    fn frame<'d>(
        &mut self,
        frame: Frame<'d>,
        offset: u64,
        read: Option<Record<'d>>,
        spare: &mut Vec<Cell<'static>>,
        fast_spare: &mut Vec<Cell<'static>>,
        fields: &mut super::decode::Fields<'d>,
    ) {
        let (contract, sc, source, arrival_ms, limits) = (self.contract, self.sc, self.source, self.arrival_ms, self.limits);
        if frame.too_large {
            let hash = xxhash_rust::xxh3::xxh3_64(frame.bytes);
            self.record_too_large(offset, capped(frame.bytes, limits.max_raw_bytes), frame.bytes.len() as u64, hash);
            return;
        }
        let out = &mut self.out;
        let builders = &mut self.builders;
        let mut cells: Vec<Cell<'_>> = std::mem::take(spare).into_iter().map(|_| Cell::Null).collect();
        out.records += 1;
        // The fast path: a clean record with an `event_id`, validated without a tree.
        let parsed = match read {
            Some(rec) => Ok(rec),
            None => Record::parse_into(frame.bytes, std::mem::take(fields)),
        };
        match parsed {
            Ok(rec) => {
                let mut done = false;
                if let Some(event_type) = rec.event_type() {
                    let mut fc: Vec<Cell<'_>> = std::mem::take(fast_spare).into_iter().map(|_| Cell::Null).collect();
                    let accepted = validate_fields(contract, sc, event_type, rec.iter(), false, &mut fc);
                    if let Ok(acc) = accepted
                        && let Cell::Str(id) = fc[sc.col_event_id]
                    {
                        let key = id_key(id);
                        emit(out, builders, sc, &mut fc, acc, source, arrival_ms, key);
                        done = true;
                    }
                    fc.clear();
                    *fast_spare = fc.into_iter().map(|_| Cell::Null).collect();
                }
                *fields = rec.into_buffer();
                if done {
                    *spare = cells.into_iter().map(|_| Cell::Null).collect();
                    return;
                }
            }
            Err(buf) => *fields = buf,
        }
        // The exact path: whatever the fast path does not take as it is.
        let reject = |code, field: Option<String>, message: String| Reject {
            offset: Some(offset),
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
                *spare = cells.into_iter().map(|_| Cell::Null).collect();
                return;
            }
        };
        let Value::Object(map) = &value else {
            out.rejects.push(reject(reason::NOT_OBJECT, None, format!("a record must be a JSON object, got {}", kind(&value))));
            *spare = cells.into_iter().map(|_| Cell::Null).collect();
            return;
        };
        let acc = match validate(contract, sc, map, &mut cells) {
            Ok(a) => a,
            Err(r) => {
                out.rejects.push(reject(r.code, r.field, r.message));
                cells.clear();
                *spare = cells.into_iter().map(|_| Cell::Null).collect();
                return;
            }
        };
        let key = match cells[sc.col_event_id] {
            Cell::Str(id) => id_key(id),
            _ => content_key(&value),
        };
        emit(out, builders, sc, &mut cells, acc, source, arrival_ms, key);
        cells.clear();
        *spare = cells.into_iter().map(|_| Cell::Null).collect();
    }
}

/// The dedup key of a record with an `event_id`.
pub fn id_key(id: &str) -> u128 {
    // xxh3 of `id\0` then the id, in one call for an id that fits the stack buffer: the
    // streaming hasher's set-up and digest cost 4% of the ingest's CPU, and the one-shot hash of
    // the same bytes is the same key (the dedup keys of earlier batches stay valid).
    const PREFIX: &[u8] = b"id\0";
    let mut buf = [0u8; 128];
    if let Some(rest) = buf.get_mut(PREFIX.len()..PREFIX.len() + id.len()) {
        rest.copy_from_slice(id.as_bytes());
        buf[..PREFIX.len()].copy_from_slice(PREFIX);
        return xxhash_rust::xxh3::xxh3_128(&buf[..PREFIX.len() + id.len()]);
    }
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

    /// The one-pass read of flat records changes nothing: the same rows, keys, days and
    /// rejects (offsets, raw text, messages) as framing then parsing every record, on any mix of
    /// records the two might read apart, whole or inflated in chunks.
    #[test]
    fn flat_pass_reads_what_framing_then_parsing_reads() {
        let c = c();
        // Valid flat records, each way the parsers may disagree (numbers, literals, escapes,
        // nesting, control characters, invalid UTF-8, repeats, broken objects), back to back and
        // across lines, some over the record limit.
        let pieces: Vec<Vec<u8>> = [
            r#"{"companyID":"comp_1","creationDate":1795199392770,"durationSec":981,"event_id":"9397ca6d","event_type":"job_terminated","jobID":"j","received_at":1795199396414,"status":"succeeded","userID":"user_3"}"#,
            r#"{"companyID": "comp_109", "creationDate": 1795160280456, "event_id": "7b11", "event_type": "user_login", "sessionID": "s", "userID": "user_2"}"#,
            r#"{"event_type":"tenant_updated","event_id":"t1","tenantID":"c 1","revenu":100000.5,"employees":12,"totalFee":-3,"monthlyFee":1e3}"#,
            r#"{"event_type":"job_submitted","event_id":"e","companyID":"c","userID":"u","nbJobs":01}"#,
            r#"{"event_type":"job_submitted","event_id":"e","companyID":"c","userID":"u","nbJobs":-0,"dataSize":18446744073709551616}"#,
            r#"{"event_type":"job_submitted","event_id":"e","companyID":"c","userID":"u","nbJobs":1234567890123456789,"dataSize":123456789012345678}"#,
            r#"{"event_type":"job_submitted","event_id":"e","companyID":"c","userID":"u","nbJobs":1.,"dataSize":.5}"#,
            r#"{"event_type":"job_submitted","event_id":"e","companyID":"c","userID":"u","nbJobs":+1}"#,
            r#"{"event_type":"job_submitted","event_id":"e","companyID":"c","userID":"u","nbJobs":1e,"x":truex}"#,
            r#"{"event_type":"job_submitted","event_id":"e","companyID":"c","userID":"u","a":true,"b":false,"c":null}"#,
            r#"{"event_type":"job_submitted","event_id":"e\"q","companyID":"c\\d","userID":"\u0041"}"#,
            r#"{"event_type":"job_submitted","event_id":"n","companyID":"c","userID":"u","x":{"y":[1,{"z":"}"}]}}"#,
            "{\"event_type\":\"job_submitted\",\"event_id\":\"tab\there\",\"companyID\":\"c\"}",
            r#"{"event_type":"job_submitted","event_id":"d","companyID":"c","companyID":"d","userID":"u"}"#,
            r#"{"event_type":"job_submitted","event_id":"d","event_type":"job_cancelled","companyID":"c"}"#,
            r#"{"event_type":"job_submitted","companyID":"no id","userID":"u","nbJobs":2}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{,}"#,
            r#"{}"#,
            "{ \t\r\n }",
            r#"{"a":"}{"}{"b":"{"}"#,
            "{\n  \"event_type\": \"job_submitted\",\n  \"event_id\": \"multi\",\n  \"companyID\": \"c\"\n}",
            r#"{"event_type":"job_submitted","event_id":"é€😀","companyID":"ü"}"#,
            r#"{"open":1"#,
            "garbage",
            "[1,2]",
            r#"{"event_type":"job_submitted","event_id":"long","companyID":"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"}"#,
            r#"{"a":nul}"#,
            r#"{"a":1 2}"#,
        ]
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .chain([b"{\"event_type\":\"job_submitted\",\"event_id\":\"\xff\xfe\",\"companyID\":\"c\"}".to_vec(), b"{\"a\":\"x\"\xff}".to_vec()])
        .collect();
        let seps: [&[u8]; 5] = [b"\n", b"\r\n", b"", b"\n\n", b" "];
        let limits = Limits { max_record_bytes: 200, max_object_bytes: 1 << 20, max_raw_bytes: 32 };
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for stream in ["bigdatajobs", "companies"] {
            let sc = c.stream(stream).unwrap();
            let mut totals = (0, 0);
            for round in 0..40 {
                // Every fourth object starts with a byte-order mark.
                let mut text = if round % 4 == 0 { b"\xEF\xBB\xBF".to_vec() } else { Vec::new() };
                for _ in 0..(20 + round * 3) {
                    text.extend_from_slice(&pieces[next(pieces.len())]);
                    text.extend_from_slice(seps[next(seps.len())]);
                }
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&text).unwrap();
                let body = gz.finish().unwrap();
                let reads = |flat: bool| {
                    [
                        (Compression::None, &text[..], CHUNK),
                        (Compression::Gzip, &body[..], 400),
                        (Compression::Gzip, &body[..], 1 << 20),
                    ]
                    .map(|(comp, bytes, chunk)| parse_in_chunks(&c, sc, "o", comp, 7, bytes, limits, chunk, flat))
                };
                let seen = |o: &ParsedObject| {
                    let rejects: Vec<_> =
                        o.rejects.iter().map(|r| (r.offset, r.code, r.raw.clone(), r.field.clone(), r.message.clone())).collect();
                    (o.records, o.rows.clone(), o.keys.clone(), o.days.clone(), rejects, o.bytes_uncompressed)
                };
                for (fast, framed) in reads(true).iter().zip(reads(false).iter()) {
                    assert_eq!(seen(fast), seen(framed), "{stream}, round {round}: {}", String::from_utf8_lossy(&text));
                    totals.0 += framed.rows.num_rows();
                    totals.1 += framed.rejects.len();
                }
            }
            assert!(totals.0 > 100 && totals.1 > 100, "{stream}: {totals:?}");
        }
    }

    #[test]
    fn one_shot_id_key_is_the_streaming_key() {
        for len in 0..300 {
            let id: String = (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            let mut h = Xxh3::new();
            h.update(b"id\0");
            h.update(id.as_bytes());
            assert_eq!(id_key(&id), h.digest128(), "{len}");
        }
    }

    /// Framed chunk by chunk (GZIP), an object reads exactly as framed whole (plain): the same
    /// rows, and the same rejects at the same offsets with the same raw text and message,
    /// whatever falls on a chunk's edge (multi-line objects, CRLF, unclosed braces, lines over
    /// the record limit running across several chunks, a BOM).
    #[test]
    fn chunked_inflate_reads_what_a_whole_read_reads() {
        let c = c();
        let sc = c.stream("bigdatajobs").unwrap();
        let limits = Limits { max_record_bytes: 120, max_object_bytes: 1 << 20, max_raw_bytes: 16 };
        let ok = |i: usize| format!(r#"{{"event_type":"job_submitted","companyID":"c","userID":"u","event_id":"e{i}"}}"#);
        let pieces = |i: usize| -> String {
            match i % 9 {
                0 => ok(i) + "\n",
                1 => ok(i) + "\r\n",
                2 => format!("{{\n \"event_type\": \"job_submitted\",\n \"event_id\": \"m{i}\", \"companyID\": \"c\"}}\n"),
                3 => format!("{{\"open\":{i}\n"),
                4 => format!("{}\r\n", "z".repeat(300 + i % 7)),
                5 => ok(i),
                6 => format!("{{\"x\":\"{}\"}}\n", "é".repeat(70 + i % 5)),
                7 => "garbage\n\n".to_string(),
                _ => format!("{{\"a\":1}}{{\"b\":{i}}}\n"),
            }
        };
        for seed in 0..6usize {
            let mut text = if seed % 2 == 0 { "\u{feff}".to_string() } else { String::new() };
            for i in 0..120 {
                text.push_str(&pieces(i * (seed + 1) + seed));
            }
            let whole = parse_object(&c, sc, "o", Compression::None, 0, text.as_bytes(), limits);
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(text.as_bytes()).unwrap();
            let body = gz.finish().unwrap();
            assert!(whole.rows.num_rows() > 30 && whole.rejects.len() > 30, "{} rows", whole.rows.num_rows());
            for chunk in [1, 250, 333, 500, 1 << 20] {
                let p = parse_in_chunks(&c, sc, "o", Compression::Gzip, 0, &body, limits, chunk, true);
                assert_eq!(p.records, whole.records, "seed {seed}, chunk {chunk}");
                assert_eq!(p.rows, whole.rows, "seed {seed}, chunk {chunk}");
                assert_eq!(p.keys, whole.keys);
                let r = |o: &ParsedObject| -> Vec<(Option<u64>, &str, Option<String>, String)> {
                    o.rejects.iter().map(|r| (r.offset, r.code, r.raw.clone(), r.message.clone())).collect()
                };
                assert_eq!(r(&p), r(&whole), "seed {seed}, chunk {chunk}");
                assert_eq!(p.bytes_uncompressed, text.len() as u64);
            }
        }
        // A line far over the limit across many chunks: one reject with its length and hash.
        let long = "y".repeat(5_000);
        let text = format!("{}\n{long}\r\n{}\n", ok(1), ok(2));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        let p = parse_in_chunks(&c, sc, "o", Compression::Gzip, 0, &gz.finish().unwrap(), limits, 100, true);
        assert_eq!((p.records, p.rows.num_rows(), p.rejects.len()), (3, 2, 1));
        let hash = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(long.as_bytes()));
        assert!(p.rejects[0].message.contains("5000 bytes") && p.rejects[0].message.contains(&hash), "{}", p.rejects[0].message);
        assert_eq!(p.rejects[0].raw.as_deref(), Some(&long[..16]));
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
