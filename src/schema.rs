//! The event contract, loaded from `schemas/events.toml`.
//!
//! This module owns the one in-memory form of the contract: per stream, the typed table's
//! columns (and so its Arrow schema) and, per event type, which fields are required, optional
//! or defaulted. Validation (`ingest::validate`) and table creation both read from here, so the
//! contract is stated once, in the TOML file, and nowhere in code.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::NaiveDate;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Columns the runner adds to every typed event table (not part of the producers' contract).
pub const COL_EVENT_TIME: &str = "event_time";
pub const COL_EVENT_TYPE: &str = "event_type";
pub const COL_LEGACY: &str = "legacy";
pub const COL_SOURCE: &str = "source_object";
/// The Hive partition column of the event tables (a `date`, written `dt=YYYY-MM-DD`).
pub const PARTITION_COL: &str = "dt";

/// The table of every record and object ingest could not accept (shared by the streams).
pub const QUARANTINE_TABLE: &str = "quarantine";

/// The table of every run of every job (written through its own ledger, see `runs`).
pub const RUNS_TABLE: &str = "runner_runs";

/// `runner_runs`' data-file schema (partitioned by `dt`, the run's start date).
pub fn runs_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("job", DataType::Utf8, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("logical_time", DataType::Utf8, false),
        Field::new("started_at", ts.clone(), false),
        Field::new("ended_at", ts, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("rows_in", DataType::Int64, false),
        Field::new("bytes_in", DataType::Int64, false),
        Field::new("rows_out", DataType::Int64, false),
        Field::new("bytes_out", DataType::Int64, false),
        Field::new("files", DataType::Int64, false),
        Field::new("partitions", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
        // Nullable, and last: columns added to a table go at its end.
        Field::new("kind", DataType::Utf8, true),
        Field::new("periods", DataType::Utf8, true),
        Field::new("details", DataType::Utf8, true),
        Field::new("engine", DataType::Utf8, true),
    ]))
}

/// The quarantine's second partition key: the delivery stream (after `dt`, the arrival date).
pub const QUARANTINE_STREAM_COL: &str = "stream";

/// The quarantine table's data-file schema: every record the runner could not accept, with its
/// source, byte offset, raw text, reason and the run that read it (the stream and the arrival
/// date are its partition keys), and the replay that later accepted it, if one did.
pub fn quarantine_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new(COL_SOURCE, DataType::Utf8, false),
        Field::new("byte_offset", DataType::Int64, true),
        Field::new("raw", DataType::Utf8, true),
        Field::new("reason_code", DataType::Utf8, false),
        Field::new("field", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("batch", DataType::Int64, false),
        Field::new("ingested_at", ts.clone(), false),
        // Set by `runner replay` when the record passed a later contract and was added to its
        // table (the row itself stays). Nullable, and last: files written before have neither.
        Field::new(COL_REPLAYED_RUN_ID, DataType::Utf8, true),
        Field::new(COL_REPLAYED_AT, ts, true),
    ]))
}

/// The run id of the replay that added a quarantined record to its table (NULL until then).
pub const COL_REPLAYED_RUN_ID: &str = "replayed_run_id";
/// When that replay ran.
pub const COL_REPLAYED_AT: &str = "replayed_at";

/// A field type in the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    String,
    Integer,
    Number,
    TimestampMs,
    Boolean,
}

impl FieldType {
    pub fn arrow(self) -> DataType {
        match self {
            FieldType::String => DataType::Utf8,
            FieldType::Integer => DataType::Int64,
            FieldType::Number => DataType::Float64,
            // Milliseconds, UTC: Athena reads it, and it is what producers send.
            FieldType::TimestampMs => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            FieldType::Boolean => DataType::Boolean,
        }
    }
    pub fn describe(self) -> &'static str {
        match self {
            FieldType::String => "a string",
            FieldType::Integer => "an integer",
            FieldType::Number => "a number",
            FieldType::TimestampMs => "an integer of epoch milliseconds",
            FieldType::Boolean => "a boolean",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: FieldType,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub values: Vec<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    #[serde(default)]
    pub doc: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContract {
    version: u32,
    timestamps: RawTimestamps,
    envelope: RawEnvelope,
    fields: Vec<FieldDef>,
    streams: BTreeMap<String, RawStream>,
    event_types: BTreeMap<String, RawEventType>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimestamps {
    min: NaiveDate,
    max: NaiveDate,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvelope {
    required: Vec<String>,
    optional: Vec<String>,
    dedup_key: String,
    event_time_from: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    table: String,
    legacy: RawLegacy,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLegacy {
    event_type: String,
    #[serde(default)]
    rename: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEventType {
    stream: String,
    #[serde(default)]
    required: Vec<String>,
    #[serde(default)]
    optional: Vec<String>,
    #[serde(default)]
    defaults: BTreeMap<String, toml::Value>,
}

/// A default value for an absent field, already typed.
#[derive(Debug, Clone, PartialEq)]
pub enum DefaultValue {
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
}

/// One event type, resolved to column indexes of its stream's table.
#[derive(Debug, Clone)]
pub struct EventType {
    pub name: String,
    /// Column index -> required?
    pub fields: Vec<(usize, bool)>,
    pub defaults: Vec<(usize, DefaultValue)>,
    /// Column index -> may a record of this type set it (envelope or own field)?
    pub allowed: Vec<bool>,
}

/// One column of a typed event table.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub def: Option<FieldDef>,
    pub data_type: DataType,
}

/// A map looked up per record field or row, with short keys (field names, tenant ids): foldhash,
/// hashbrown's default hasher, hashes one in a few nanoseconds (xxh3's streaming hasher spent
/// more on its set-up and digest than on the bytes: 3% of the ingest's CPU).
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A delivery stream and the table it feeds.
#[derive(Debug, Clone)]
pub struct StreamContract {
    pub name: String,
    pub table: String,
    /// Data columns in table order (the partition column `dt` is not among them).
    pub columns: Vec<Column>,
    /// Producer key (canonical name or alias) -> column index. Looked up for every field of
    /// every record: hashed with foldhash, not SipHash (see [`FastMap`]).
    pub key_index: FastMap<String, usize>,
    /// Looked up for every record.
    pub event_types: FastMap<String, EventType>,
    pub legacy_event_type: String,
    pub legacy_rename: FastMap<String, String>,
    pub col_event_id: usize,
    pub col_company: usize,
    pub col_event_type: usize,
    pub col_event_time: usize,
    pub col_legacy: usize,
    pub col_source: usize,
    /// Columns consulted, in order, for the event time.
    pub event_time_from: Vec<usize>,
    /// Envelope fields (column, required?) checked for every event type.
    pub envelope: Vec<(usize, bool)>,
}

impl StreamContract {
    /// The Arrow schema of the table's data files (without the partition column).
    pub fn file_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|c| {
                    let nullable = c.name != crate::schema::COL_EVENT_TIME
                        && c.name != COL_EVENT_TYPE
                        && c.name != COL_LEGACY
                        && c.name != COL_SOURCE;
                    Field::new(&c.name, c.data_type.clone(), nullable)
                })
                .collect::<Vec<_>>(),
        ))
    }
}

/// The whole contract.
#[derive(Debug, Clone)]
pub struct Contract {
    pub streams: BTreeMap<String, StreamContract>,
    /// Stream that owns each event type, for "wrong stream" errors.
    pub type_stream: HashMap<String, String>,
    pub ts_min_ms: i64,
    pub ts_max_ms: i64,
}

impl Contract {
    pub fn load(path: &Path) -> Result<Contract> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Io { what: format!("reading the event contract {}", path.display()), source: e })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn stream(&self, name: &str) -> Result<&StreamContract> {
        self.streams.get(name).ok_or_else(|| Error::Config {
            file: "schemas/events.toml".into(),
            message: format!(
                "stream `{name}` is not in the event contract (streams: {})",
                self.streams.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })
    }

    pub fn parse(text: &str, file: &str) -> Result<Contract> {
        let err = |message: String| Error::Config { file: file.to_string(), message };
        let raw: RawContract = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        if raw.version != 1 {
            return Err(err(format!("contract version {} is not supported (expected 1)", raw.version)));
        }
        let defs: BTreeMap<&str, &FieldDef> = raw.fields.iter().map(|f| (f.name.as_str(), f)).collect();
        if defs.len() != raw.fields.len() {
            return Err(err("a field is defined twice in [[fields]]".into()));
        }
        let lookup = |name: &str, ctx: &str| -> Result<&FieldDef> {
            defs.get(name).copied().ok_or_else(|| err(format!("{ctx} names field `{name}`, which is not defined in [[fields]]")))
        };
        for name in raw.envelope.required.iter().chain(&raw.envelope.optional) {
            lookup(name, "[envelope]")?;
        }
        let mut type_stream = HashMap::new();
        for (name, et) in &raw.event_types {
            if !raw.streams.contains_key(&et.stream) {
                return Err(err(format!("event type `{name}` names stream `{}`, which is not in [streams]", et.stream)));
            }
            type_stream.insert(name.clone(), et.stream.clone());
        }

        let mut streams = BTreeMap::new();
        for (sname, rs) in &raw.streams {
            // Columns: envelope fields first, then the runner's own, then each field used by an
            // event type of this stream, in [[fields]] order.
            let mut used: Vec<&str> = Vec::new();
            for (_, et) in raw.event_types.iter().filter(|(_, e)| &e.stream == sname) {
                for f in et.required.iter().chain(&et.optional) {
                    lookup(f, "an event type")?;
                    used.push(f);
                }
            }
            let mut columns = Vec::new();
            let field_col = |f: &FieldDef| Column { name: f.name.clone(), def: Some(f.clone()), data_type: f.ty.arrow() };
            let envelope: Vec<&str> = raw.envelope.required.iter().chain(&raw.envelope.optional).map(String::as_str).collect();
            for f in &raw.fields {
                if envelope.contains(&f.name.as_str()) {
                    columns.push(field_col(f));
                }
            }
            columns.insert(0, Column { name: COL_EVENT_TYPE.into(), def: None, data_type: DataType::Utf8 });
            columns.push(Column { name: COL_EVENT_TIME.into(), def: None, data_type: FieldType::TimestampMs.arrow() });
            for f in &raw.fields {
                if used.contains(&f.name.as_str()) && !envelope.contains(&f.name.as_str()) {
                    columns.push(field_col(f));
                }
            }
            columns.push(Column { name: COL_LEGACY.into(), def: None, data_type: DataType::Boolean });
            columns.push(Column { name: COL_SOURCE.into(), def: None, data_type: DataType::Utf8 });

            let idx = |n: &str| columns.iter().position(|c| c.name == n);
            let mut key_index = FastMap::default();
            for (i, c) in columns.iter().enumerate() {
                if let Some(def) = &c.def {
                    for k in std::iter::once(&def.name).chain(&def.aliases) {
                        if key_index.insert(k.clone(), i).is_some() {
                            return Err(err(format!("key `{k}` is both a field and an alias")));
                        }
                    }
                }
            }
            let mut event_types = FastMap::default();
            for (tname, et) in raw.event_types.iter().filter(|(_, e)| &e.stream == sname) {
                let mut fields: Vec<(usize, bool)> = Vec::new();
                for f in &et.required {
                    fields.push((idx(f).expect("column exists"), true));
                }
                for f in &et.optional {
                    fields.push((idx(f).expect("column exists"), false));
                }
                let mut defaults = Vec::new();
                for (f, v) in &et.defaults {
                    let def = lookup(f, &format!("event type `{tname}` defaults"))?;
                    let col = idx(f)
                        .filter(|c| fields.iter().any(|(i, _)| i == c))
                        .ok_or_else(|| err(format!("event type `{tname}` has a default for `{f}`, which it does not list")))?;
                    let dv = match (def.ty, v) {
                        (FieldType::Integer, toml::Value::Integer(i)) => DefaultValue::Int(*i),
                        (FieldType::Number, toml::Value::Float(x)) => DefaultValue::Float(*x),
                        (FieldType::Number, toml::Value::Integer(i)) => DefaultValue::Float(*i as f64),
                        (FieldType::String, toml::Value::String(s)) => DefaultValue::Str(s.clone()),
                        (FieldType::Boolean, toml::Value::Boolean(b)) => DefaultValue::Bool(*b),
                        _ => {
                            return Err(err(format!("event type `{tname}`: default for `{f}` must be {}", def.ty.describe())));
                        }
                    };
                    defaults.push((col, dv));
                }
                let mut allowed = vec![false; columns.len()];
                for (i, _) in &fields {
                    allowed[*i] = true;
                }
                for f in &envelope {
                    allowed[idx(f).expect("envelope column")] = true;
                }
                event_types.insert(tname.clone(), EventType { name: tname.clone(), fields, defaults, allowed });
            }
            if !event_types.contains_key(&rs.legacy.event_type) {
                return Err(err(format!(
                    "stream `{sname}`: legacy event type `{}` is not an event type of this stream",
                    rs.legacy.event_type
                )));
            }
            for to in rs.legacy.rename.values() {
                if idx(to).is_none() {
                    return Err(err(format!("stream `{sname}`: legacy rename target `{to}` is not a column")));
                }
            }
            let must = |n: &str| idx(n).ok_or_else(|| err(format!("stream `{sname}` has no column `{n}`")));
            let envelope_cols = raw
                .envelope
                .required
                .iter()
                .map(|f| Ok((must(f)?, true)))
                .chain(raw.envelope.optional.iter().map(|f| Ok((must(f)?, false))))
                .collect::<Result<Vec<_>>>()?;
            let event_time_from = raw.envelope.event_time_from.iter().map(|f| must(f)).collect::<Result<Vec<_>>>()?;
            streams.insert(
                sname.clone(),
                StreamContract {
                    name: sname.clone(),
                    table: rs.table.clone(),
                    col_event_id: must(&raw.envelope.dedup_key)?,
                    col_company: must("companyID")?,
                    col_event_type: must(COL_EVENT_TYPE)?,
                    col_event_time: must(COL_EVENT_TIME)?,
                    col_legacy: must(COL_LEGACY)?,
                    col_source: must(COL_SOURCE)?,
                    columns,
                    key_index,
                    event_types,
                    legacy_event_type: rs.legacy.event_type.clone(),
                    legacy_rename: rs.legacy.rename.clone().into_iter().collect(),
                    event_time_from,
                    envelope: envelope_cols,
                },
            );
        }
        let ms = crate::dates::midnight_ms;
        Ok(Contract { streams, type_stream, ts_min_ms: ms(raw.timestamps.min), ts_max_ms: ms(raw.timestamps.max) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract() -> Contract {
        Contract::parse(include_str!("../schemas/events.toml"), "schemas/events.toml").unwrap()
    }

    #[test]
    fn streams_and_tables_come_from_the_file() {
        let c = contract();
        assert_eq!(c.stream("companies").unwrap().table, "tenant_events");
        assert_eq!(c.stream("bigdatajobs").unwrap().table, "job_events");
        assert_eq!(c.type_stream["job_terminated"], "bigdatajobs");
    }

    #[test]
    fn alias_maps_to_the_canonical_column() {
        let c = contract();
        let s = c.stream("companies").unwrap();
        assert_eq!(s.key_index["tenantID"], s.key_index["companyID"]);
        assert_eq!(s.columns[s.key_index["tenantID"]].name, "companyID");
    }

    #[test]
    fn job_table_has_job_fields_and_not_tenant_fields() {
        let c = contract();
        let s = c.stream("bigdatajobs").unwrap();
        let names: Vec<_> = s.columns.iter().map(|c| c.name.as_str()).collect();
        assert!(names.contains(&"nbJobs") && names.contains(&"status"));
        assert!(!names.contains(&"industry"));
        assert_eq!(s.file_schema().field_with_name("nbJobs").unwrap().data_type(), &DataType::Int64);
    }

    #[test]
    fn undefined_field_is_a_config_error_naming_it() {
        let text =
            include_str!("../schemas/events.toml").replace("required = [\"userID\", \"jobID\"]", "required = [\"userId\"]");
        let e = Contract::parse(&text, "x.toml").unwrap_err().to_string();
        assert!(e.contains("userId") && e.contains("x.toml"), "{e}");
    }
}
