//! Source discovery: which objects under a delivery stream's prefix are Firehose drops.
//!
//! Firehose writes `YYYY/MM/DD/HH/<stream>-<version>-YYYY-MM-DD-HH-MM-SS-<uuid>[.ext]`. Only
//! keys in exactly that layout are drops; error output (`processing-failed/...`) and anything a
//! person dropped by hand are skipped and counted; drops in a compression we cannot read are
//! refused by name (never guessed at). Stream names may contain `-`, so the key is split from the
//! right: the uuid is 36 characters, the timestamp six `-`-separated numbers.

use chrono::{DateTime, NaiveDate, Utc};

/// How a drop is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

/// What a key under a source prefix is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// A drop we read.
    Drop(DropKey),
    /// A drop in a format we refuse (`.snappy`, `.zip`, `.hsnappy`, `.parquet`, ...), with the reason.
    Refused(DropKey, String),
    /// Firehose error output (`processing-failed`, `format-conversion-failed`, ...).
    ErrorOutput,
    /// Anything else: not in the Firehose layout.
    Stray,
}

/// The parts of a drop's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropKey {
    /// Path relative to the source root.
    pub rel: String,
    /// The UTC arrival hour from the `YYYY/MM/DD/HH/` folders.
    pub arrival_hour: DateTime<Utc>,
    pub firehose_stream: String,
    pub version: u32,
    pub compression: Compression,
}

pub fn classify(rel: &str) -> KeyKind {
    let segs: Vec<&str> = rel.split('/').collect();
    if segs.iter().any(|s| s.ends_with("-failed") || *s == "errors") {
        return KeyKind::ErrorOutput;
    }
    if segs.len() != 5 {
        return KeyKind::Stray;
    }
    let Some(hour) = folder_hour(&segs[..4]) else { return KeyKind::Stray };
    let name = segs[4];
    // Split off the extension: the uuid has no dots, the stream name may not either in practice,
    // but split at the first dot after the uuid position to be safe.
    let (stem, ext) = split_ext(name);
    let Some((stream, version)) = parse_stem(stem) else { return KeyKind::Stray };
    let key = |compression| DropKey {
        rel: rel.to_string(),
        arrival_hour: hour,
        firehose_stream: stream.to_string(),
        version,
        compression,
    };
    match ext {
        "" => KeyKind::Drop(key(Compression::None)),
        "gz" => KeyKind::Drop(key(Compression::Gzip)),
        "snappy" | "zip" | "hsnappy" | "parquet" | "orc" => KeyKind::Refused(
            key(Compression::None),
            format!(
                "`.{ext}` drops are not supported: set the delivery stream's compression to GZIP or UNCOMPRESSED \
                 (and no record format conversion)"
            ),
        ),
        other => KeyKind::Refused(
            key(Compression::None),
            format!("unknown extension `.{other}`: only uncompressed and `.gz` drops are read"),
        ),
    }
}

fn split_ext(name: &str) -> (&str, &str) {
    // The uuid ends the stem and contains no '.', so the extension starts at the last '.' that
    // comes after the 36-character uuid.
    match name.rfind('.') {
        Some(i) if i >= 36 => (&name[..i], &name[i + 1..]),
        _ => (name, ""),
    }
}

/// `<stream>-<version>-YYYY-MM-DD-HH-MM-SS-<uuid>` -> (stream, version).
fn parse_stem(stem: &str) -> Option<(&str, u32)> {
    if stem.len() < 37 {
        return None;
    }
    let (rest, uuid) = stem.split_at(stem.len() - 36);
    uuid::Uuid::try_parse(uuid).ok()?;
    let rest = rest.strip_suffix('-')?;
    // Six timestamp numbers from the right, then the version, then the stream name.
    let mut parts = rest.rsplitn(8, '-');
    let mut ts = [0u32; 6];
    for slot in ts.iter_mut().rev() {
        let p = parts.next()?;
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = p.parse().ok()?;
    }
    NaiveDate::from_ymd_opt(ts[0] as i32, ts[1], ts[2])?.and_hms_opt(ts[3], ts[4], ts[5])?;
    let version: u32 = parts.next()?.parse().ok()?;
    let stream = parts.next()?;
    if stream.is_empty() {
        return None;
    }
    Some((stream, version))
}

fn folder_hour(segs: &[&str]) -> Option<DateTime<Utc>> {
    let num = |s: &str, len: usize| -> Option<u32> {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
    };
    let (y, m, d, h) = (num(segs[0], 4)?, num(segs[1], 2)?, num(segs[2], 2)?, num(segs[3], 2)?);
    Some(NaiveDate::from_ymd_opt(y as i32, m, d)?.and_hms_opt(h, 0, 0)?.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "5f0c3e1a-8d0b-4a51-9b7e-0d3f4c2a9e11";

    #[test]
    fn drops_in_the_firehose_layout() {
        let k = format!("2026/11/20/13/bigdatajobs-1-2026-11-20-13-05-12-{U}");
        let KeyKind::Drop(d) = classify(&k) else { panic!("{k}") };
        assert_eq!(d.firehose_stream, "bigdatajobs");
        assert_eq!(d.version, 1);
        assert_eq!(d.compression, Compression::None);
        assert_eq!(d.arrival_hour.to_rfc3339(), "2026-11-20T13:00:00+00:00");
        let KeyKind::Drop(d) = classify(&format!("{k}.gz")) else { panic!() };
        assert_eq!(d.compression, Compression::Gzip);
    }

    #[test]
    fn stream_names_with_dashes_split_from_the_right() {
        let k = format!("2026/11/20/13/prod-big-data-jobs-12-2026-11-20-13-05-12-{U}.gz");
        let KeyKind::Drop(d) = classify(&k) else { panic!() };
        assert_eq!(d.firehose_stream, "prod-big-data-jobs");
        assert_eq!(d.version, 12);
    }

    #[test]
    fn other_compressions_are_refused_by_name() {
        for ext in ["snappy", "zip", "hsnappy", "parquet"] {
            let k = format!("2026/11/20/13/companies-1-2026-11-20-13-05-12-{U}.{ext}");
            match classify(&k) {
                KeyKind::Refused(_, why) => assert!(why.contains(ext), "{why}"),
                other => panic!("{ext}: {other:?}"),
            }
        }
    }

    #[test]
    fn error_output_and_strays_are_not_drops() {
        assert_eq!(
            classify(&format!("processing-failed/2026/11/20/13/companies-1-2026-11-20-13-05-12-{U}")),
            KeyKind::ErrorOutput
        );
        assert_eq!(classify("2026/11/20/13/format-conversion-failed/x"), KeyKind::ErrorOutput);
        for stray in [
            "notes.txt",
            "2026/11/20/13/export.json",
            "2026/11/20/companies-1-2026-11-20-13-05-12-x",
            &format!("2026/13/20/13/companies-1-2026-11-20-13-05-12-{U}"),
            &format!("2026/11/20/13/companies-1-2026-11-20-13-05-{U}"),
            &format!("2026/11/20/13/x/companies-1-2026-11-20-13-05-12-{U}"),
            &format!("2026/11/20/13/companies-x-2026-11-20-13-05-12-{U}"),
        ] {
            assert_eq!(classify(stray), KeyKind::Stray, "{stray}");
        }
    }
}
