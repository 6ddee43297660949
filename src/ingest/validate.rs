//! Validation: one JSON record against the contract, to typed cells or a rejection.
//!
//! Every rule comes from `schemas/events.toml` through [`StreamContract`]: which event types a
//! stream has, which fields each requires, their types, aliases, accepted values, defaults and
//! the legacy form. A rejection carries a stable reason code (queried in `quarantine`), the
//! field, and a message that says what was wrong and what was expected.

use serde_json::{Map, Value};

use crate::schema::{Contract, DefaultValue, FieldType, StreamContract};

/// What validation asks of a JSON value: implemented by `serde_json::Value` and by the lazy
/// decoder's values (`decode::Lazy`), so both paths apply the very same rules.
pub trait JsonField {
    fn is_null(&self) -> bool;
    fn string(&self) -> Option<&str>;
    /// JSON integers, and floats with no fractional part (`100000.0`), are integers.
    fn integer(&self) -> Option<i64>;
    /// Any JSON number as a float.
    fn number(&self) -> Option<f64>;
    fn boolean(&self) -> Option<bool>;
    /// The value for an error message, cut short.
    fn short(&self) -> String;
}

impl JsonField for Value {
    fn is_null(&self) -> bool {
        Value::is_null(self)
    }
    fn string(&self) -> Option<&str> {
        self.as_str()
    }
    fn integer(&self) -> Option<i64> {
        as_integer(self)
    }
    fn number(&self) -> Option<f64> {
        if self.is_number() { self.as_f64() } else { None }
    }
    fn boolean(&self) -> Option<bool> {
        self.as_bool()
    }
    fn short(&self) -> String {
        short(self)
    }
}

/// Reason codes stored in `quarantine.reason_code`.
pub mod reason {
    pub const INVALID_JSON: &str = "invalid_json";
    pub const NOT_OBJECT: &str = "not_object";
    pub const MISSING_FIELD: &str = "missing_field";
    pub const UNKNOWN_EVENT_TYPE: &str = "unknown_event_type";
    pub const WRONG_STREAM: &str = "wrong_stream";
    pub const WRONG_TYPE: &str = "wrong_type";
    pub const BAD_TIMESTAMP: &str = "bad_timestamp";
    pub const BAD_VALUE: &str = "bad_value";
    pub const CORRUPT_OBJECT: &str = "corrupt_object";
    pub const UNSUPPORTED_OBJECT: &str = "unsupported_object";
    pub const RECORD_TOO_LARGE: &str = "record_too_large";
    pub const OBJECT_TOO_LARGE: &str = "object_too_large";
    /// Internal, never stored: the fast path met a record whose columns depend on key order.
    pub const ORDER_MATTERS: &str = "order_matters";
    /// Every code `quarantine` can hold.
    pub const ALL: &[&str] = &[
        INVALID_JSON,
        NOT_OBJECT,
        MISSING_FIELD,
        UNKNOWN_EVENT_TYPE,
        WRONG_STREAM,
        WRONG_TYPE,
        BAD_TIMESTAMP,
        BAD_VALUE,
        CORRUPT_OBJECT,
        UNSUPPORTED_OBJECT,
        RECORD_TOO_LARGE,
        OBJECT_TOO_LARGE,
    ];
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub code: &'static str,
    pub field: Option<String>,
    pub message: String,
}

impl Rejection {
    fn new(code: &'static str, field: &str, message: String) -> Self {
        Rejection { code, field: Some(field.to_string()), message }
    }
}

/// A typed value borrowed from the parsed record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'v> {
    Null,
    Str(&'v str),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// What validation learned about an accepted record besides its cells.
#[derive(Debug, Clone, Copy)]
pub struct Accepted<'c> {
    pub event_type: &'c str,
    pub legacy: bool,
    /// Event time from the record, if it carries one (else the caller uses the arrival hour).
    pub event_time_ms: Option<i64>,
}

/// Validates `rec`, filling `cells` (one per column of the stream's table; the runner's own
/// columns stay `Null` for the caller to fill).
pub fn validate<'v, 'c>(
    contract: &'c Contract,
    sc: &'c StreamContract,
    rec: &'v Map<String, Value>,
    cells: &mut Vec<Cell<'v>>,
) -> Result<Accepted<'c>, Rejection>
where
    'c: 'v,
{
    validate_fields(contract, sc, rec.get("event_type"), rec.iter().map(|(k, v)| (k.as_str(), v)), true, cells)
}

/// [`validate`] over any record: its `event_type` value, and its fields. `in_key_order`: the
/// fields come in key order, each key once (a JSON object keeps the last of repeated keys), and
/// of two keys for one column (aliases) the first wins. Otherwise they come as the record has
/// them, and a column named twice (a repeated key, two aliases) is refused with the internal
/// code [`reason::ORDER_MATTERS`]: the caller then validates the record in key order.
pub fn validate_fields<'v, 'c, V: JsonField + 'v>(
    contract: &'c Contract,
    sc: &'c StreamContract,
    event_type: Option<&'v V>,
    fields: impl Iterator<Item = (&'v str, &'v V)>,
    in_key_order: bool,
    cells: &mut Vec<Cell<'v>>,
) -> Result<Accepted<'c>, Rejection>
where
    'c: 'v,
{
    cells.clear();
    cells.resize(sc.columns.len(), Cell::Null);
    // Columns a key named with a null value (unordered fields only; at most 128 columns).
    let mut named_null: u128 = 0;
    let order_matters = || Rejection { code: reason::ORDER_MATTERS, field: None, message: String::new() };
    if !in_key_order && sc.columns.len() > 128 {
        return Err(order_matters());
    }

    let (et, legacy) = match event_type.map(|v| (v, v.string())) {
        None => (&sc.event_types[&sc.legacy_event_type], true),
        Some((_, Some(t))) => match sc.event_types.get(t) {
            Some(et) => (et, false),
            None => {
                return Err(match contract.type_stream.get(t) {
                    Some(other) => Rejection::new(
                        reason::WRONG_STREAM,
                        "event_type",
                        format!("event_type `{t}` belongs to stream `{other}`, not `{}`", sc.name),
                    ),
                    None => Rejection::new(
                        reason::UNKNOWN_EVENT_TYPE,
                        "event_type",
                        format!("unknown event_type `{t}` for stream `{}` (expected one of: {})", sc.name, {
                            let mut known: Vec<&str> = sc.event_types.keys().map(String::as_str).collect();
                            known.sort_unstable();
                            known.join(", ")
                        }),
                    ),
                });
            }
        },
        Some((other, None)) => {
            return Err(Rejection::new(
                reason::WRONG_TYPE,
                "event_type",
                format!("event_type must be a string, got {}", other.short()),
            ));
        }
    };

    for (key, value) in fields {
        if key == "event_type" || (in_key_order && value.is_null()) {
            continue;
        }
        let key = if legacy { sc.legacy_rename.get(key).map(String::as_str).unwrap_or(key) } else { key };
        // Unknown extra fields, and fields another event type owns, are not errors.
        let Some(&col) = sc.key_index.get(key) else { continue };
        if !in_key_order {
            // In any order, a column named twice would depend on which key comes first.
            let bit = 1u128 << col;
            if cells[col] != Cell::Null || named_null & bit != 0 {
                return Err(order_matters());
            }
            if value.is_null() {
                named_null |= bit;
                continue;
            }
        }
        if !et.allowed[col] || cells[col] != Cell::Null {
            continue;
        }
        let def = sc.columns[col].def.as_ref().expect("contract columns have a definition");
        let name = def.name.as_str();
        let cell = match def.ty {
            FieldType::String => match value.string() {
                Some(s) => Cell::Str(s),
                None => {
                    return Err(Rejection::new(
                        reason::WRONG_TYPE,
                        name,
                        format!("{name} must be a string, got {}", value.short()),
                    ));
                }
            },
            FieldType::Integer => match value.integer() {
                Some(i) => Cell::Int(i),
                None => {
                    return Err(Rejection::new(
                        reason::WRONG_TYPE,
                        name,
                        format!("{name} must be an integer, got {}", value.short()),
                    ));
                }
            },
            FieldType::Number => match value.number() {
                Some(x) => Cell::Float(x),
                None => {
                    return Err(Rejection::new(
                        reason::WRONG_TYPE,
                        name,
                        format!("{name} must be a number, got {}", value.short()),
                    ));
                }
            },
            FieldType::Boolean => match value.boolean() {
                Some(b) => Cell::Bool(b),
                None => {
                    return Err(Rejection::new(
                        reason::WRONG_TYPE,
                        name,
                        format!("{name} must be a boolean, got {}", value.short()),
                    ));
                }
            },
            FieldType::TimestampMs => match value.integer() {
                Some(ms) if ms >= contract.ts_min_ms && ms < contract.ts_max_ms => Cell::Int(ms),
                Some(ms) if ms > 0 && ms * 1000 >= contract.ts_min_ms && ms * 1000 < contract.ts_max_ms => {
                    return Err(Rejection::new(
                        reason::BAD_TIMESTAMP,
                        name,
                        format!("{name} {ms} looks like epoch seconds; producers must send epoch milliseconds"),
                    ));
                }
                _ => {
                    return Err(Rejection::new(
                        reason::BAD_TIMESTAMP,
                        name,
                        format!("{name} must be epoch milliseconds (an integer, years 2000-2099), got {}", value.short()),
                    ));
                }
            },
        };
        if !def.values.is_empty()
            && let Cell::Str(s) = cell
            && !def.values.iter().any(|v| v == s)
        {
            return Err(Rejection::new(
                reason::BAD_VALUE,
                name,
                format!("{name} `{s}` is not accepted (expected one of: {})", def.values.join(", ")),
            ));
        }
        let num = match cell {
            Cell::Int(i) => Some(i as f64),
            Cell::Float(x) => Some(x),
            _ => None,
        };
        if let Some(x) = num
            && (def.min.is_some_and(|m| x < m) || def.max.is_some_and(|m| x > m))
        {
            return Err(Rejection::new(
                reason::BAD_VALUE,
                name,
                format!("{name} {x} is out of range [{}, {}]", fmt_bound(def.min), fmt_bound(def.max)),
            ));
        }
        cells[col] = cell;
    }

    for &(col, required) in sc.envelope.iter().chain(&et.fields) {
        if required && cells[col] == Cell::Null {
            let def = sc.columns[col].def.as_ref().expect("defined");
            let also =
                if def.aliases.is_empty() { String::new() } else { format!(" (also accepted as {})", def.aliases.join(", ")) };
            let what = if legacy { format!("legacy {} record", et.name) } else { et.name.clone() };
            return Err(Rejection::new(reason::MISSING_FIELD, &def.name, format!("{} is required for {what}{also}", def.name)));
        }
    }
    for (col, dv) in &et.defaults {
        if cells[*col] == Cell::Null {
            cells[*col] = match dv {
                DefaultValue::Int(i) => Cell::Int(*i),
                DefaultValue::Float(x) => Cell::Float(*x),
                DefaultValue::Str(s) => Cell::Str(s),
                DefaultValue::Bool(b) => Cell::Bool(*b),
            };
        }
    }
    let event_time_ms = sc.event_time_from.iter().find_map(|&c| match cells[c] {
        Cell::Int(ms) => Some(ms),
        _ => None,
    });
    Ok(Accepted { event_type: &et.name, legacy, event_time_ms })
}

/// JSON integers, and floats with no fractional part (`100000.0`), are integers.
fn as_integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|x| x.fract() == 0.0 && x.abs() < 9.0e15).map(|x| x as i64)),
        _ => None,
    }
}

fn fmt_bound(b: Option<f64>) -> String {
    b.map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

/// A value for an error message, cut short.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 { format!("{}...", &s[..s.floor_char_boundary(40)]) } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Contract;

    fn c() -> Contract {
        Contract::parse(include_str!("../../schemas/events.toml"), "events.toml").unwrap()
    }

    fn check(stream: &str, json: &str) -> Result<(String, bool), Rejection> {
        let c = c();
        let sc = c.stream(stream).unwrap();
        let v: Value = serde_json::from_str(json).unwrap();
        let mut cells = Vec::new();
        validate(&c, sc, v.as_object().unwrap(), &mut cells).map(|a| (a.event_type.to_string(), a.legacy))
    }

    #[test]
    fn legacy_records_take_the_streams_legacy_type() {
        let j = r#"{"companyID":"comp_4","userID":"user_1","nbJobs":1,"creationDate":1669885930000}"#;
        assert_eq!(check("bigdatajobs", j).unwrap(), ("job_submitted".into(), true));
        let t = r#"{"companyID":"comp_4","industry":"retail","revenu":100000,"employees":4635,"job30":10,"job90":100,"monthlyFee":400.0,"totalFee":1200.0}"#;
        assert_eq!(check("companies", t).unwrap(), ("tenant_updated".into(), true));
    }

    #[test]
    fn alias_and_integral_floats() {
        let j = r#"{"event_type":"tenant_updated","tenantID":"t 1","revenu":100000.0}"#;
        assert!(check("companies", j).is_ok());
    }

    #[test]
    fn every_rejection_kind() {
        let cases = [
            ("bigdatajobs", r#"{"event_type":"job_submitted","userID":"u"}"#, reason::MISSING_FIELD, "companyID"),
            ("bigdatajobs", r#"{"event_type":"job_exploded","companyID":"c"}"#, reason::UNKNOWN_EVENT_TYPE, "event_type"),
            ("bigdatajobs", r#"{"event_type":"user_login","companyID":"c","userID":"u"}"#, reason::WRONG_STREAM, "event_type"),
            (
                "bigdatajobs",
                r#"{"event_type":"job_submitted","companyID":"c","userID":"u","nbJobs":"two"}"#,
                reason::WRONG_TYPE,
                "nbJobs",
            ),
            (
                "bigdatajobs",
                r#"{"event_type":"job_submitted","companyID":"c","userID":"u","creationDate":"2026-11-20"}"#,
                reason::BAD_TIMESTAMP,
                "creationDate",
            ),
            (
                "bigdatajobs",
                r#"{"event_type":"job_submitted","companyID":"c","userID":"u","creationDate":1669885930}"#,
                reason::BAD_TIMESTAMP,
                "creationDate",
            ),
            (
                "bigdatajobs",
                r#"{"event_type":"job_terminated","companyID":"c","userID":"u","jobID":"j","status":"exploded"}"#,
                reason::BAD_VALUE,
                "status",
            ),
            ("companies", r#"{"event_type":"tenant_created","companyID":"c","sentiment":3}"#, reason::BAD_VALUE, "sentiment"),
            ("companies", r#"{"event_type":"user_login","companyID":"c"}"#, reason::MISSING_FIELD, "userID"),
            ("companies", r#"{"event_type":7,"companyID":"c"}"#, reason::WRONG_TYPE, "event_type"),
            ("companies", r#"{"event_type":"user_added","companyID":5,"userID":"u"}"#, reason::WRONG_TYPE, "companyID"),
        ];
        for (stream, json, code, field) in cases {
            let r = check(stream, json).expect_err(json);
            assert_eq!((r.code, r.field.as_deref()), (code, Some(field)), "{json}: {}", r.message);
        }
    }

    #[test]
    fn extra_fields_and_nulls_are_not_errors_and_defaults_apply() {
        let c = c();
        let sc = c.stream("bigdatajobs").unwrap();
        let v: Value =
            serde_json::from_str(r#"{"event_type":"job_submitted","companyID":"c","userID":"u","shoe":1,"dataSize":null}"#)
                .unwrap();
        let mut cells = Vec::new();
        validate(&c, sc, v.as_object().unwrap(), &mut cells).unwrap();
        assert_eq!(cells[sc.key_index["nbJobs"]], Cell::Int(1));
        assert_eq!(cells[sc.key_index["dataSize"]], Cell::Null);
    }
}
