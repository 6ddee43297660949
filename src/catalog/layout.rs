//! Where a table's data lives: Hive partition folders, and the versioned-partition rule.
//!
//! A partition folder is `<table>/<key>=<value>/...` with each value escaped by [`hive_escape`].
//! A *versioned* table (catalog parameter [`VERSIONED`]) keeps each partition's data in version
//! folders below it, `<partition>/v=<version>/`, and the catalog points each partition at its
//! current version; an unpartitioned versioned table names its version in [`CURRENT_VERSION`].
//! Readers see only the versions the catalog points at, so a new version is invisible until it
//! is published and a replaced one disappears in one step. Ingest and compaction name versions
//! by ledger seq ([`version_dir`]), SQL jobs by run id ([`version_folder`]).

/// Catalog parameter marking a table whose partitions point at versions.
pub const VERSIONED: &str = "runner.versioned";
/// For an unpartitioned versioned table: the version readers see.
pub const CURRENT_VERSION: &str = "runner.current_version";

/// Escapes a partition value for a Hive path segment (as Hive's `FileUtils.escapePathName`
/// does), so a value can never add a path segment (`/`), climb out (`..` stays inside one
/// escaped segment), or fake a key (`=`).
pub fn hive_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for ch in v.chars() {
        let needs = ch.is_control()
            || matches!(ch, '"' | '#' | '%' | '\'' | '*' | '/' | ':' | '=' | '?' | '\\' | '{' | '[' | ']' | '^' | '\x7f');
        if needs {
            let mut buf = [0u8; 4];
            for b in ch.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(ch);
        }
    }
    if out.is_empty() {
        // Hive's name for a partition whose value is empty.
        return "__HIVE_DEFAULT_PARTITION__".into();
    }
    if out.chars().all(|c| c == '.') {
        // `.` and `..` alone are path syntax, not names.
        return out.replace('.', "%2E");
    }
    out
}

/// `k1=v1/k2=v2` for partition keys and their values (each value escaped).
pub fn partition_dir(keys: &[String], values: &[String]) -> String {
    keys.iter().zip(values).map(|(k, v)| format!("{k}={}", hive_escape(v))).collect::<Vec<_>>().join("/")
}

/// The folder name of the version numbered `v` (a ledger seq): `v=000000000042`.
pub fn version_dir(v: u64) -> String {
    format!("v={v:012}")
}

/// The folder of an event table's day: `<table>/dt=<day>`, with the version folder of ledger
/// seq `version` below it when the table is versioned (`<table>/dt=<day>/v=<seq>`).
pub fn day_folder(table: &str, day: &str, version: Option<u64>) -> String {
    let dir = format!("{table}/{}", partition_dir(&[crate::schema::PARTITION_COL.to_string()], &[day.to_string()]));
    match version {
        Some(v) => format!("{dir}/{}", version_dir(v)),
        None => dir,
    }
}

/// The quarantine's partition folder for `[day, stream]` at ledger version `version`:
/// `quarantine/dt=<day>/stream=<stream>/v=<seq>` (each stream's ledger versions its own).
pub fn quarantine_folder(values: &[String], version: u64) -> String {
    use crate::schema::{PARTITION_COL, QUARANTINE_STREAM_COL, QUARANTINE_TABLE};
    let keys = [PARTITION_COL.to_string(), QUARANTINE_STREAM_COL.to_string()];
    format!("{QUARANTINE_TABLE}/{}/{}", partition_dir(&keys, values), version_dir(version))
}

/// `<table>/<key>=<value>...` of a ledger partition (an event table's day, or the quarantine's
/// day and stream), without its version: how summaries name the partitions a run touched.
pub fn partition_path(table: &str, values: &[String]) -> String {
    use crate::schema::{PARTITION_COL, QUARANTINE_STREAM_COL, QUARANTINE_TABLE};
    let keys: Vec<String> = if table == QUARANTINE_TABLE {
        vec![PARTITION_COL.to_string(), QUARANTINE_STREAM_COL.to_string()]
    } else {
        vec![PARTITION_COL.to_string()]
    };
    format!("{table}/{}", partition_dir(&keys, values))
}

/// The folder of version `version` of a table's partition: `<table>/<partition>/v=<version>`
/// (an unpartitioned table: `<table>/v=<version>`).
pub fn version_folder(table: &str, partition_dir: &str, version: &str) -> String {
    [table, partition_dir, &format!("v={version}")].iter().filter(|s| !s.is_empty()).cloned().collect::<Vec<_>>().join("/")
}

/// The `v=<id>` segment of a path or URL.
pub fn version_of(path: &str) -> Option<String> {
    path.split('/').find_map(|s| s.strip_prefix("v=")).map(str::to_string)
}

/// Whether catalog parameters mark a table as versioned.
pub fn is_versioned(parameters: &std::collections::BTreeMap<String, String>) -> bool {
    parameters.get(VERSIONED).is_some_and(|v| v == "true")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hive_escape_keeps_values_in_one_segment() {
        assert_eq!(hive_escape("2026-11-20"), "2026-11-20");
        assert_eq!(hive_escape("a/b"), "a%2Fb");
        assert_eq!(hive_escape("k=v"), "k%3Dv");
        assert_eq!(hive_escape("%2F"), "%252F");
        assert_eq!(hive_escape(".."), "%2E%2E");
        assert_eq!(hive_escape(""), "__HIVE_DEFAULT_PARTITION__");
        assert_eq!(hive_escape("café x"), "café x");
    }

    #[test]
    fn version_folders_sit_below_their_partition() {
        let keys = vec!["dt".to_string()];
        let dir = partition_dir(&keys, &["2026-11-20".to_string()]);
        assert_eq!(dir, "dt=2026-11-20");
        assert_eq!(version_folder("t", &dir, "abc"), "t/dt=2026-11-20/v=abc");
        assert_eq!(version_folder("t", "", "abc"), "t/v=abc");
        assert_eq!(version_of("file:///wh/t/dt=2026-11-20/v=abc/"), Some("abc".into()));
        assert_eq!(format!("t/{}", version_dir(42)), "t/v=000000000042");
        assert_eq!(partition_dir(&keys, &["a/../b".to_string()]), "dt=a%2F..%2Fb");
        assert_eq!(day_folder("job_events", "2026-11-20", Some(7)), "job_events/dt=2026-11-20/v=000000000007");
        assert_eq!(day_folder("quarantine", "2026-11-20", None), "quarantine/dt=2026-11-20");
        let q = vec!["2026-11-20".to_string(), "companies".to_string()];
        assert_eq!(quarantine_folder(&q, 3), "quarantine/dt=2026-11-20/stream=companies/v=000000000003");
        assert_eq!(partition_path("quarantine", &q), "quarantine/dt=2026-11-20/stream=companies");
        assert_eq!(partition_path("job_events", &q[..1]), "job_events/dt=2026-11-20");
    }
}
