//! Framing: cutting a drop's bytes into records.
//!
//! Firehose concatenates records with no delimiter, and producers may add `\n` or `\r\n`, leave
//! blank lines, or omit the last newline. So records are found by their JSON structure, not by
//! lines: from a `{`, scan to the matching `}` (outside strings). Anything that does not start
//! with `{`, or an object that never closes, is cut at the end of its line and handed on as a
//! record too, so that validation quarantines it with its exact bytes and offset. A record may
//! span lines (pretty-printed JSON).

use memchr::{memchr, memchr2, memchr3};

/// One record's bytes and its byte offset in the (uncompressed) object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub offset: usize,
    pub bytes: &'a [u8],
    /// The scanner could not find a closing `}`: the frame runs to the end of its line.
    pub unterminated: bool,
}

pub struct Frames<'a> {
    buf: &'a [u8],
    pos: usize,
}

pub fn frames(buf: &[u8]) -> Frames<'_> {
    // A UTF-8 byte-order mark is not part of any record.
    let pos = if buf.starts_with(&[0xEF, 0xBB, 0xBF]) { 3 } else { 0 };
    Frames { buf, pos }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Frame<'a>;

    fn next(&mut self) -> Option<Frame<'a>> {
        let buf = self.buf;
        while self.pos < buf.len() && matches!(buf[self.pos], b' ' | b'\t' | b'\r' | b'\n') {
            self.pos += 1;
        }
        if self.pos >= buf.len() {
            return None;
        }
        let start = self.pos;
        if buf[start] == b'{'
            && let Some(end) = object_end(buf, start)
        {
            self.pos = end;
            return Some(Frame { offset: start, bytes: &buf[start..end], unterminated: false });
        }
        // Not an object, or one that never closes: the rest of the line is one bad record.
        let end = memchr(b'\n', &buf[start..]).map(|i| start + i).unwrap_or(buf.len());
        self.pos = end;
        let mut bytes = &buf[start..end];
        if bytes.last() == Some(&b'\r') {
            bytes = &bytes[..bytes.len() - 1];
        }
        Some(Frame { offset: start, bytes, unterminated: buf[start] == b'{' })
    }
}

/// Index one past the `}` closing the object that opens at `start`, or `None` if it never closes.
fn object_end(buf: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    loop {
        let j = i + memchr3(b'{', b'}', b'"', &buf[i..])?;
        match buf[j] {
            b'{' => {
                depth += 1;
                i = j + 1;
            }
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(j + 1);
                }
                i = j + 1;
            }
            _ => {
                // Inside a string: skip to its closing quote, stepping over escapes.
                let mut k = j + 1;
                loop {
                    let q = k + memchr2(b'"', b'\\', &buf[k..])?;
                    if buf[q] == b'\\' {
                        k = q + 2;
                        if k > buf.len() {
                            return None;
                        }
                    } else {
                        i = q + 1;
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(s: &str) -> Vec<(usize, &str)> {
        frames(s.as_bytes()).map(|f| (f.offset, std::str::from_utf8(f.bytes).unwrap())).collect()
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
        let f: Vec<_> = frames(s.as_bytes()).collect();
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
}
