//! Framing: cutting a drop's bytes into records.
//!
//! Firehose concatenates records with no delimiter, and producers may add `\n` or `\r\n`, leave
//! blank lines, or omit the last newline. So records are found by their JSON structure, not by
//! lines: from a `{`, the matching `}` (outside strings) ends the record. Anything that does not
//! start with `{`, or an object that does not close within the record limit, is cut at the end
//! of its line and handed on as a record too, so that validation quarantines it with its exact
//! bytes and offset. A record may span lines (pretty-printed JSON).
//!
//! One pass, whatever the input: a single scanner walks the object once, matching braces with a
//! stack, and every record start is answered from what it found. (Scanning afresh from each
//! `{` made an object of unclosed braces quadratic: each one scanned to the end of the object.)
//! A raw newline ends a string (JSON strings cannot hold one), so at every line start the
//! scanner is outside strings, whichever point it started from. The scanner looks at most the
//! record limit ahead of the record it answers, and keeps only what that window holds, so its
//! memory is bounded by the limit too.

use std::collections::{BTreeMap, VecDeque};

use memchr::{memchr, memchr3};

/// One record's bytes and its byte offset in the (uncompressed) object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub offset: usize,
    pub bytes: &'a [u8],
    /// The scanner could not find a closing `}`: the frame runs to the end of its line.
    pub unterminated: bool,
    /// Longer than the record limit: never parsed, quarantined by its length, hash and start.
    pub too_large: bool,
}

pub struct Frames<'a> {
    buf: &'a [u8],
    pos: usize,
    limit: usize,
    scan: Scan,
}

/// The brace matcher's state: where it is, the objects open there (position, depth before
/// them), and the objects it saw close (open position -> one past the close).
#[derive(Default)]
struct Scan {
    at: usize,
    depth: i64,
    in_string: bool,
    open: VecDeque<(usize, i64)>,
    closed: BTreeMap<usize, usize>,
    /// Bytes scanned so far, over every scan (what the one-pass promise is checked on).
    scanned: usize,
}

/// The records of `buf`; a record longer than `limit` bytes is a `too_large` frame.
pub fn frames(buf: &[u8], limit: usize) -> Frames<'_> {
    frames_at(buf, limit, true)
}

/// [`frames`] of a part of an object: `object_start` says whether `buf` starts the object (only
/// there is a byte-order mark skipped).
pub fn frames_at(buf: &[u8], limit: usize, object_start: bool) -> Frames<'_> {
    // A UTF-8 byte-order mark is not part of any record.
    let pos = if object_start && buf.starts_with(&[0xEF, 0xBB, 0xBF]) { 3 } else { 0 };
    Frames { buf, pos, limit: limit.max(2), scan: Scan { at: pos, ..Default::default() } }
}

impl Frames<'_> {
    /// Where the object opening at `start` closes, if it does within the limit.
    fn close_of(&mut self, start: usize) -> Option<usize> {
        if self.scan.at < start {
            // Skipped ahead (past a long line cut at its end): `start` is a line start or
            // right after a closed object, so a fresh scan from it sees the same.
            self.scan = Scan { at: start, scanned: self.scan.scanned, ..Default::default() };
        }
        let until = (start + self.limit).min(self.buf.len());
        if !self.scan.closed.contains_key(&start) {
            self.advance(until, start);
        }
        // What the frames have passed is no longer asked for.
        self.scan.closed = self.scan.closed.split_off(&start);
        self.scan.closed.get(&start).copied().filter(|end| end - start <= self.limit)
    }

    /// Scans on to `until`, or until the object opened at `stop` closes: a record's scan ends
    /// with it (scanning on to the limit kept every object of the next megabyte in `closed`).
    /// The state is whole at every byte, so the next record's scan goes on from here.
    fn advance(&mut self, until: usize, stop: usize) {
        let (buf, limit) = (self.buf, self.limit);
        let s = &mut self.scan;
        let from = s.at;
        while s.at < until {
            if s.in_string {
                let Some(q) = memchr3(b'"', b'\\', b'\n', &buf[s.at..until]) else {
                    s.at = until;
                    break;
                };
                let j = s.at + q;
                match buf[j] {
                    // The escaped byte is skipped even when it lies past `until`, unless it is a
                    // raw newline: that ends the string like any other, so every line starts
                    // outside strings whichever record the scan began at.
                    b'\\' if buf.get(j + 1) != Some(&b'\n') => s.at = j + 2,
                    _ => {
                        s.in_string = false;
                        s.at = j + 1;
                    }
                }
                continue;
            }
            let Some(q) = memchr3(b'{', b'}', b'"', &buf[s.at..until]) else {
                s.at = until;
                break;
            };
            let j = s.at + q;
            s.at = j + 1;
            match buf[j] {
                b'{' => {
                    s.open.push_back((j, s.depth));
                    s.depth += 1;
                }
                b'}' => {
                    s.depth -= 1;
                    if s.open.back().is_some_and(|&(_, d)| d == s.depth) {
                        let (p, _) = s.open.pop_back().expect("checked");
                        s.closed.insert(p, j + 1);
                        if p == stop {
                            break;
                        }
                    }
                }
                _ => s.in_string = true,
            }
            // An object open for longer than the limit can no longer close within it.
            while s.open.front().is_some_and(|&(p, _)| p + limit < s.at) {
                s.open.pop_front();
            }
        }
        s.scanned += s.at.saturating_sub(from);
    }
}

impl<'a> Frames<'a> {
    /// Where the next record starts (past blank space), without taking it; `None` at the end.
    pub fn next_start(&mut self) -> Option<usize> {
        let buf = self.buf;
        while self.pos < buf.len() && matches!(buf[self.pos], b' ' | b'\t' | b'\r' | b'\n') {
            self.pos += 1;
        }
        (self.pos < buf.len()).then_some(self.pos)
    }

    /// Takes the next record as a closed object of `len` bytes that the caller read itself (see
    /// `Record::scan_flat`): the frame the scanner would have found for a valid object. Framing
    /// goes on right after it, where a fresh scan sees what a running one would.
    pub fn take_closed(&mut self, len: usize) -> Frame<'a> {
        let start = self.next_start().expect("a record to take");
        self.pos = start + len;
        Frame { offset: start, bytes: &self.buf[start..start + len], unterminated: false, too_large: false }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Frame<'a>;

    fn next(&mut self) -> Option<Frame<'a>> {
        let buf = self.buf;
        let start = self.next_start()?;
        if buf[start] == b'{'
            && let Some(end) = self.close_of(start)
        {
            self.pos = end;
            return Some(Frame { offset: start, bytes: &buf[start..end], unterminated: false, too_large: false });
        }
        // Not an object, or one that does not close: the rest of the line is one bad record.
        let end = memchr(b'\n', &buf[start..]).map(|i| start + i).unwrap_or(buf.len());
        self.pos = end;
        let mut bytes = &buf[start..end];
        if bytes.last() == Some(&b'\r') {
            bytes = &bytes[..bytes.len() - 1];
        }
        let too_large = bytes.len() > self.limit;
        Some(Frame { offset: start, bytes, unterminated: buf[start] == b'{' && !too_large, too_large })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(s: &str) -> Vec<(usize, &str)> {
        frames(s.as_bytes(), 1 << 20).map(|f| (f.offset, std::str::from_utf8(f.bytes).unwrap())).collect()
    }

    #[test]
    fn ndjson_crlf_blank_lines_and_no_final_newline() {
        assert_eq!(texts("{\"a\":1}\n{\"a\":2}\n"), vec![(0, "{\"a\":1}"), (8, "{\"a\":2}")]);
        assert_eq!(texts("{\"a\":1}\r\n\r\n\n{\"a\":2}"), vec![(0, "{\"a\":1}"), (12, "{\"a\":2}")]);
    }

    #[test]
    fn back_to_back_records() {
        assert_eq!(texts("{\"a\":1}{\"b\":{\"c\":2}}{}"), vec![(0, "{\"a\":1}"), (7, "{\"b\":{\"c\":2}}"), (20, "{}")]);
    }

    #[test]
    fn braces_and_quotes_inside_strings() {
        let s = r#"{"a":"}{\"x"}{"b":"\\"}"#;
        assert_eq!(texts(s), vec![(0, r#"{"a":"}{\"x"}"#), (13, r#"{"b":"\\"}"#)]);
    }

    #[test]
    fn garbage_is_cut_at_its_line() {
        let s = "not json\n[1,2]\r\n{\"a\":1}\n{\"open\":1\n{\"b\":2}\n";
        let f: Vec<_> = frames(s.as_bytes(), 1 << 20).collect();
        let t: Vec<_> = f.iter().map(|f| std::str::from_utf8(f.bytes).unwrap()).collect();
        assert_eq!(t, vec!["not json", "[1,2]", "{\"a\":1}", "{\"open\":1", "{\"b\":2}"]);
        assert!(f[3].unterminated && !f[2].unterminated);
    }

    #[test]
    fn multi_line_object_is_one_record() {
        assert_eq!(texts("{\n  \"a\": 1\n}\n"), vec![(0, "{\n  \"a\": 1\n}")]);
    }

    #[test]
    fn bom_and_only_whitespace() {
        assert_eq!(texts("\u{feff}{}"), vec![(3, "{}")]);
        assert!(texts(" \n\r\n").is_empty());
    }

    #[test]
    fn records_over_the_limit_are_too_large_and_reading_goes_on() {
        let long = format!("{{\"a\":\"{}\"}}", "x".repeat(100));
        let s = format!("{long}\n{{\"b\":1}}\n{}\n{{\"c\":2}}", "y".repeat(100));
        let f: Vec<_> = frames(s.as_bytes(), 50).collect();
        assert_eq!(f.len(), 4);
        assert!(f[0].too_large && !f[0].unterminated && f[0].bytes.len() == long.len());
        assert_eq!(f[1].bytes, b"{\"b\":1}");
        assert!(f[2].too_large);
        assert_eq!(f[3].bytes, b"{\"c\":2}");
    }

    /// Unclosed braces, each on its own line: one pass, so twice the input costs twice the time,
    /// and every line is its own record, the valid ones between them exact.
    #[test]
    fn unclosed_braces_are_linear_and_cut_at_their_lines() {
        let line = "{\"open\":\"never closes\",\"n\":1\n";
        let mut s = line.repeat(20_000);
        s.push_str("{\"ok\":1}\n");
        let mut it = frames(s.as_bytes(), 1 << 20);
        let f: Vec<_> = it.by_ref().collect();
        assert_eq!(f.len(), 20_001);
        assert!(f[..20_000].iter().all(|f| f.unterminated));
        assert_eq!(f.last().unwrap().bytes, b"{\"ok\":1}");
        // Scanning afresh from every `{` read 20,000 lines 10,000 times on average.
        assert!(it.scan.scanned <= s.len() + (1 << 20), "{} bytes scanned for {}", it.scan.scanned, s.len());
    }

    /// A string whose last byte escapes the line's newline still ends there: the next line's
    /// record is read the same whatever came before it.
    #[test]
    fn an_escaped_newline_ends_the_string_too() {
        for before in ["{\"a\":1}\n", "{\"open\":1\n"] {
            let s = format!("{before}x\"\\\n{{\"b\":2}}\n");
            let f: Vec<_> = frames(s.as_bytes(), 1 << 20).collect();
            let last = f.last().unwrap();
            assert_eq!(last.bytes, b"{\"b\":2}", "{s:?}");
            assert!(!last.unterminated, "{s:?}");
        }
    }

    #[test]
    fn a_string_never_spans_a_raw_newline() {
        assert_eq!(texts("{\"a\":\"open\n{\"b\":1}"), vec![(0, "{\"a\":\"open"), (11, "{\"b\":1}")]);
    }
}
