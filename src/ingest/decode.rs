//! The fast path from a record's bytes to typed cells: no `serde_json::Value` tree.
//!
//! A record is parsed into its fields as (key, value) pairs that borrow from the drop's bytes
//! (a string is copied only when it holds escapes; objects and arrays inside a record are
//! skipped, as the contract has no such columns), in the record's own order, and validation
//! runs on them through the same [`validate_fields`](super::validate::validate_fields) as the
//! exact path. A `serde_json::Map` would hold the keys sorted, each once (the last repeat wins),
//! and aliases are decided by that order; instead of sorting, the fast path refuses any record
//! where a column is named twice, so order cannot change a result. `parse` falls back to the
//! exact path (a full `Value`) for every record the fast path does not accept as it is: invalid
//! JSON, not an object, a column named twice or `event_type` twice, any rejection (so reasons
//! and messages are the exact path's), and records without `event_id` (their dedup key is the
//! canonical content). Clean records, the common case, never build a tree.
//!
//! Why this and not another decoder: the profile showed the tree (a `BTreeMap` per record, a
//! `String` per key and value, inserts and string comparisons) at about a quarter of ingest;
//! serde's borrowed visitor removes it without a new dependency or a second JSON grammar, and
//! keeps byte offsets, framing and every rule in one place. The candidates, measured on the
//! ingest benchmark's 655 MB of inflated NDJSON (2.8 M records), one thread, record to fields
//! and nothing else (a scratch crate over the same bytes, best of 3):
//!
//! | decoder                                         | seconds | MB/s |
//! |-------------------------------------------------|---------|------|
//! | line scan only (memchr)                          | 0.21    | 3187 |
//! | `serde_json::Value` (the old path)               | 2.60    | 252  |
//! | serde_json, borrowed `BTreeMap<&str, &RawValue>` | 1.71    | 382  |
//! | this decoder (borrowed pairs, typed values)      | 1.52    | 430  |
//! | serde_json, borrowed `Vec<(&str, &RawValue)>`    | 1.21    | 543  |
//! | sonic-rs lazy object iterator                    | 1.18    | 553  |
//! | sonic-rs `Value`                                 | 0.88    | 740  |
//! | simd-json borrowed value (copies each record)    | 2.27    | 289  |
//!
//! Raw values would be parsed a second time to type them, so their lead is smaller than it
//! looks. sonic-rs is the fastest; the decode is about 1.5 s of the ingest's 10.6 CPU
//! seconds at that size (`make bench` prints the stages), so it would save at most about 6% of
//! the CPU while bringing a second JSON grammar whose errors, numbers and escapes the reject
//! messages would have to match. arrow-json's decoder goes straight to Arrow but would need the
//! aliases, legacy forms, defaults and reason codes reimplemented on its side. Kept: this one.
//!
//! In front of it, [`Record::scan_flat`] reads the common record, a flat object with no escape,
//! in the one pass that also finds where it ends, so the framer does not scan it first. Its
//! grammar is a strict subset: whatever it is not sure of (escapes, nesting, numbers beyond a
//! plain integer, which serde_json reads for it) goes to the framer and this decoder. On the
//! job-heavy hourly drops at 500 tenants (1.46 M records), the ingest went from 2.7-3.9 s to
//! 2.2 s with the one-shot dedup hash of the same commit, the files byte for byte the same.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::validate::JsonField;

/// A JSON value as validation needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Lazy<'a> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(Cow<'a, str>),
    /// An object or an array (no contract column holds one).
    Complex,
}

impl<'de> Deserialize<'de> for Lazy<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Lazy<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Lazy<'de>, E> {
                Ok(Lazy::Null)
            }
            fn visit_none<E>(self) -> Result<Lazy<'de>, E> {
                Ok(Lazy::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Lazy<'de>, E> {
                Ok(Lazy::Bool(b))
            }
            fn visit_i64<E>(self, i: i64) -> Result<Lazy<'de>, E> {
                Ok(Lazy::I64(i))
            }
            fn visit_u64<E>(self, u: u64) -> Result<Lazy<'de>, E> {
                Ok(Lazy::U64(u))
            }
            fn visit_f64<E>(self, x: f64) -> Result<Lazy<'de>, E> {
                Ok(Lazy::F64(x))
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Lazy<'de>, E> {
                Ok(Lazy::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Lazy<'de>, E> {
                Ok(Lazy::Str(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Lazy<'de>, E> {
                Ok(Lazy::Str(Cow::Owned(s)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Lazy<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Lazy::Complex)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Lazy<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Lazy::Complex)
            }
        }
        d.deserialize_any(V)
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A record's fields as read, borrowing from the drop's bytes: the buffer reused from record to
/// record.
pub type Fields<'a> = Vec<(Cow<'a, str>, Lazy<'a>)>;

/// A record's fields in the record's order (a repeated key each time it occurs).
#[derive(Debug, Default)]
pub struct Record<'a> {
    fields: Fields<'a>,
}

/// Fills a record's fields into a buffer that is reused from record to record (no allocation
/// per record once it has grown).
struct Fill<'b, 'de>(&'b mut Fields<'de>);

impl<'de> DeserializeSeed<'de> for Fill<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Fill<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(k)) = map.next_key::<Key>()? {
            self.0.push((k, map.next_value::<Lazy>()?));
        }
        Ok(())
    }
}

impl<'a> Record<'a> {
    /// The record in `bytes`, when they are one JSON object (else the exact path says why not).
    pub fn parse(bytes: &'a [u8]) -> Option<Record<'a>> {
        Record::parse_into(bytes, Vec::new()).ok()
    }

    /// [`Record::parse`] into `buf` (emptied first); on failure `buf` comes back for the next
    /// record. [`Record::into_buffer`] returns it after use.
    pub fn parse_into(bytes: &'a [u8], mut buf: Fields<'a>) -> Result<Record<'a>, Fields<'a>> {
        buf.clear();
        let mut de = serde_json::Deserializer::from_slice(bytes);
        match Fill(&mut buf).deserialize(&mut de).and_then(|()| de.end()) {
            Ok(()) => Ok(Record { fields: buf }),
            Err(_) => Err(buf),
        }
    }

    /// The flat record that starts `bytes` (at its `{`), read in one pass that also finds where
    /// it ends: `Ok((record, length))`. Only for what needs no grammar beyond the common case: an
    /// object of at most `limit` bytes whose values are strings without escapes, numbers, `true`,
    /// `false` or `null`. Anything else (an escape, a nested value, a control character, invalid
    /// JSON or UTF-8, a record over the limit) is `Err` with the buffer back, and the record is
    /// framed and parsed as before, so what this accepts it accepts with the fields
    /// [`Record::parse_into`] gives and the end the framer finds (tested on both).
    ///
    /// Why: framing scanned every record once for its braces and serde_json parsed it again,
    /// about 22% of the ingest's CPU together; this pass is one loop over the bytes.
    ///
    /// `text` is `bytes` as a `str` when the caller has checked the whole chunk once (with
    /// SIMD): each string is then sliced from it instead of checked on its own, which cost 3%
    /// of the ingest's CPU in 40 million short checks. A slice between two `"` of valid UTF-8
    /// is valid UTF-8 (an ASCII byte is never inside a character), so both read the same.
    pub fn scan_flat(
        bytes: &'a [u8],
        text: Option<&'a str>,
        limit: usize,
        mut buf: Fields<'a>,
    ) -> Result<(Record<'a>, usize), Fields<'a>> {
        buf.clear();
        let end = bytes.len().min(limit);
        let text = text.and_then(|t| t.get(..end));
        match scan_fields(&bytes[..end], text, &mut buf) {
            Some(len) => Ok((Record { fields: buf }, len)),
            None => Err(buf),
        }
    }

    /// The buffer, emptied, for the next record.
    pub fn into_buffer(mut self) -> Fields<'a> {
        self.fields.clear();
        self.fields
    }

    /// The `event_type` value: `Some(None)` when absent, `None` when the key is repeated.
    pub fn event_type(&self) -> Option<Option<&Lazy<'a>>> {
        let mut found = self.fields.iter().filter(|(k, _)| k == "event_type").map(|(_, v)| v);
        let first = found.next();
        if found.next().is_some() { None } else { Some(first) }
    }

    /// The fields in the record's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Lazy<'a>)> {
        self.fields.iter().map(|(k, v)| (k.as_ref(), v))
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The string whose text starts at `i` (past its opening quote): its text and the index past
/// its closing quote. `None` at an escape or a control character (the parsers' business) or
/// invalid UTF-8. A `"` byte never occurs inside a multi-byte UTF-8 character, so the first one
/// closes the string.
fn flat_str<'a>(b: &'a [u8], text: Option<&'a str>, i: usize) -> Option<(&'a str, usize)> {
    let mut j = i;
    while j < b.len() {
        match b[j] {
            b'"' => {
                let s = match text {
                    Some(t) => t.get(i..j)?,
                    None => std::str::from_utf8(&b[i..j]).ok()?,
                };
                return Some((s, j + 1));
            }
            b'\\' | 0..0x20 => return None,
            _ => j += 1,
        }
    }
    None
}

/// [`Record::scan_flat`]'s pass: the fields into `out`, and the record's length.
fn scan_fields<'a>(b: &'a [u8], text: Option<&'a str>, out: &mut Fields<'a>) -> Option<usize> {
    if b.first() != Some(&b'{') {
        return None;
    }
    let mut i = skip_ws(b, 1);
    if b.get(i) == Some(&b'}') {
        return Some(i + 1);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let (key, after) = flat_str(b, text, i + 1)?;
        i = skip_ws(b, after);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        let value = match *b.get(i)? {
            b'"' => {
                let (s, after) = flat_str(b, text, i + 1)?;
                i = after;
                Lazy::Str(Cow::Borrowed(s))
            }
            b't' if b[i..].starts_with(b"true") => {
                i += 4;
                Lazy::Bool(true)
            }
            b'f' if b[i..].starts_with(b"false") => {
                i += 5;
                Lazy::Bool(false)
            }
            b'n' if b[i..].starts_with(b"null") => {
                i += 4;
                Lazy::Null
            }
            b'-' | b'0'..=b'9' => {
                let len = b[i..].iter().take_while(|c| matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')).count();
                let token = &b[i..i + len];
                i += len;
                number(token)?
            }
            _ => return None,
        };
        out.push((Cow::Borrowed(key), value));
        // What follows a value must be `,` or `}` (so `truex` or `1 2` are left to the parser).
        i = skip_ws(b, i);
        match *b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            b'}' => return Some(i + 1),
            _ => return None,
        }
    }
}

/// A number token as serde_json reads it: a plain non-negative integer of up to 18 digits
/// directly (`U64`, as serde_json visits one), anything else (a sign, a fraction, an exponent,
/// more digits, a malformed token) by serde_json itself, so the value is its value to the bit.
fn number(token: &[u8]) -> Option<Lazy<'static>> {
    let plain =
        !token.is_empty() && token.len() <= 18 && token.iter().all(u8::is_ascii_digit) && (token[0] != b'0' || token.len() == 1);
    if plain {
        return Some(Lazy::U64(token.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'))));
    }
    match serde_json::from_slice::<Lazy>(token).ok()? {
        Lazy::I64(x) => Some(Lazy::I64(x)),
        Lazy::U64(x) => Some(Lazy::U64(x)),
        Lazy::F64(x) => Some(Lazy::F64(x)),
        _ => None,
    }
}

impl JsonField for Lazy<'_> {
    fn is_null(&self) -> bool {
        matches!(self, Lazy::Null)
    }
    fn string(&self) -> Option<&str> {
        match self {
            Lazy::Str(s) => Some(s),
            _ => None,
        }
    }
    fn integer(&self) -> Option<i64> {
        // As `serde_json::Number`: an integer that fits, or a float with no fraction.
        match self {
            Lazy::I64(i) => Some(*i),
            Lazy::U64(u) => i64::try_from(*u).ok(),
            Lazy::F64(x) => Some(*x).filter(|x| x.fract() == 0.0 && x.abs() < 9.0e15).map(|x| x as i64),
            _ => None,
        }
    }
    fn number(&self) -> Option<f64> {
        match self {
            Lazy::I64(i) => Some(*i as f64),
            Lazy::U64(u) => Some(*u as f64),
            Lazy::F64(x) => Some(*x),
            _ => None,
        }
    }
    fn boolean(&self) -> Option<bool> {
        match self {
            Lazy::Bool(b) => Some(*b),
            _ => None,
        }
    }
    /// Never shown: a rejected record goes through the exact path, which says it with the value.
    fn short(&self) -> String {
        format!("{self:?}")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// The fast record holds what a `serde_json::Map` holds, key by key (its last repeat).
    fn same_as_map(json: &str) {
        let r = Record::parse(json.as_bytes()).expect(json);
        let v: Value = serde_json::from_str(json).unwrap();
        let m = v.as_object().unwrap();
        let mut last: std::collections::BTreeMap<&str, &Lazy> = std::collections::BTreeMap::new();
        for (k, v) in r.iter() {
            last.insert(k, v);
        }
        assert_eq!(last.keys().copied().collect::<Vec<_>>(), m.keys().map(String::as_str).collect::<Vec<_>>(), "{json}");
        for ((_, lazy), (_, value)) in last.into_iter().zip(m) {
            assert_eq!(lazy.string(), value.string(), "{json}");
            assert_eq!(lazy.integer(), value.integer(), "{json}");
            assert_eq!(lazy.number(), value.number(), "{json}");
            assert_eq!(lazy.boolean(), value.boolean(), "{json}");
            assert_eq!(JsonField::is_null(lazy), JsonField::is_null(value), "{json}");
        }
    }

    #[test]
    fn fields_match_a_json_map() {
        same_as_map(r#"{"b":1,"a":"x","c":null,"d":true,"e":1.5,"f":100000.0,"g":-3}"#);
        same_as_map(r#"{"k":1,"k":"last wins","j":[1,{"x":2}],"i":{"nested":[]}}"#);
        same_as_map(r#"{"esc\u0061ped":"line\nbreak \"quoted\"","n":18446744073709551615,"m":-9223372036854775808}"#);
        same_as_map(r#"{"big":9.5e15,"small":1e-3,"neg":-0.0}"#);
        same_as_map("{}");
    }

    /// The one-pass read takes flat records with the fields the parser gives and the length
    /// of the object, and leaves everything else to the framer and the parser.
    #[test]
    fn flat_records_are_read_in_one_pass_and_the_rest_left_alone() {
        let flat = [
            r#"{"b":1,"a":"x","c":null,"d":true,"e":1.5,"f":100000.0,"g":-3,"h":false}"#,
            r#"{ "k" : 1 , "k" : "repeat" , "z":"}{[" }"#,
            r#"{"n":18446744073709551615,"m":-9223372036854775808,"o":123456789012345678,"p":0,"q":-0,"r":1e3}"#,
            r#"{"big":9.5e15,"small":1e-3,"neg":-0.0,"u":"é€😀"}"#,
            "{}",
            "{\n\t\"a\": 1\r\n}",
        ];
        for json in flat {
            let tail = format!("{json}{{\"next\":1}}\n");
            let parsed = Record::parse(json.as_bytes()).unwrap();
            // Checked string by string, and sliced from the chunk checked once: the same.
            for text in [None, Some(tail.as_str())] {
                let (rec, len) = Record::scan_flat(tail.as_bytes(), text, 1 << 20, Vec::new()).expect(json);
                assert_eq!(len, json.len(), "{json}");
                assert_eq!(rec.iter().collect::<Vec<_>>(), parsed.iter().collect::<Vec<_>>(), "{json}");
            }
            // A limit inside a character: the slice is no text, the strings are checked.
            let cut = json.len().saturating_sub(3);
            let checked = Record::scan_flat(json.as_bytes(), None, cut, Vec::new()).is_ok();
            assert_eq!(Record::scan_flat(json.as_bytes(), Some(json), cut, Vec::new()).is_ok(), checked, "{json}");
        }
        let other = [
            r#"{"a":"esc\"aped"}"#,
            r#"{"a":{"b":1}}"#,
            r#"{"a":[1]}"#,
            "{\"a\":\"tab\tin\"}",
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":+1}"#,
            r#"{"a":truex}"#,
            r#"{"a":nul}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":1 2}"#,
            r#"{"a":1"#,
            r#"["a"]"#,
            " {}",
        ];
        for json in other {
            assert!(Record::scan_flat(json.as_bytes(), None, 1 << 20, Vec::new()).is_err(), "{json}");
            assert!(Record::scan_flat(json.as_bytes(), Some(json), 1 << 20, Vec::new()).is_err(), "{json}");
        }
        // Invalid UTF-8 (a chunk that is not text has no `text`).
        assert!(Record::scan_flat(b"{\"a\":\"\xff\"}", None, 1 << 20, Vec::new()).is_err());
        // Over the limit: the framer cuts it and says it is too large.
        let long = r#"{"a":"0123456789"}"#;
        for text in [None, Some(long)] {
            assert!(Record::scan_flat(long.as_bytes(), text, 10, Vec::new()).is_err());
            assert!(Record::scan_flat(long.as_bytes(), text, 18, Vec::new()).is_ok());
        }
    }

    #[test]
    fn a_repeated_event_type_is_left_to_the_exact_path() {
        assert!(Record::parse(br#"{"event_type":"a","x":1,"event_type":"b"}"#).unwrap().event_type().is_none());
        assert_eq!(Record::parse(br#"{"x":1}"#).unwrap().event_type(), Some(None));
    }

    #[test]
    fn anything_but_one_object_is_left_to_the_exact_path() {
        for bad in ["[1]", "\"s\"", "{\"a\":1", "{\"a\":1} x", "not json", ""] {
            assert!(Record::parse(bad.as_bytes()).is_none(), "{bad}");
        }
    }
}

#[cfg(test)]
mod equivalence {
    use serde_json::Value;

    use super::*;
    use crate::ingest::validate::{Cell, validate, validate_fields};
    use crate::schema::Contract;

    /// Whatever the fast path accepts, it accepts with the cells of the exact path.
    #[test]
    fn the_fast_path_accepts_only_what_the_exact_path_accepts_the_same_way() {
        let c = Contract::parse(include_str!("../../schemas/events.toml"), "events.toml").unwrap();
        let cases = [
            ("bigdatajobs", r#"{"event_type":"job_submitted","event_id":"e","companyID":"c","userID":"u","nbJobs":2}"#),
            ("bigdatajobs", r#"{"companyID":"c","event_type":"job_submitted","userID":"u","companyID":"d","event_id":"e"}"#),
            (
                "bigdatajobs",
                r#"{"event_type":"job_submitted","event_id":"e","companyID":"c","userID":"u","nbJobs":2,"nbJobs":null}"#,
            ),
            ("bigdatajobs", r#"{"event_type":"job_submitted","event_id":"e","tenantID":"t","companyID":"c","userID":"u"}"#),
            ("bigdatajobs", r#"{"event_type":"job_submitted","event_id":"e","tenantID":null,"companyID":"c","userID":"u"}"#),
            ("bigdatajobs", r#"{"event_id":"e","companyID":"c","userID":"u","nbJobs":1,"creationDate":1700000000000}"#),
            ("companies", r#"{"event_type":"tenant_updated","event_id":"e","tenantID":"t 1","revenu":100000.0,"x":{"y":[1]}}"#),
            ("companies", r#"{"event_type":"user_login","event_id":"e","companyID":"c","userID":"u","sessionID":"s"}"#),
        ];
        for (stream, json) in cases {
            let sc = c.stream(stream).unwrap();
            let v: Value = serde_json::from_str(json).unwrap();
            let mut exact = Vec::new();
            let want = validate(&c, sc, v.as_object().unwrap(), &mut exact).map(|a| (a.event_type, a.legacy, a.event_time_ms));
            let rec = Record::parse(json.as_bytes()).unwrap();
            let Some(et) = rec.event_type() else { continue };
            let mut fast: Vec<Cell> = Vec::new();
            if let Ok(a) = validate_fields(&c, sc, et, rec.iter(), false, &mut fast) {
                assert_eq!(Ok((a.event_type, a.legacy, a.event_time_ms)), want.clone().map_err(|_| ()), "{json}");
                assert_eq!(fast, exact, "{json}");
            }
        }
    }
}
