//! Job definitions: `jobs/*.toml` say what runs.
//!
//! A job is named after its file (`jobs/ingest_companies.toml` is job `ingest_companies`). Today
//! a job is an ingest of one delivery stream; the SQL jobs of later issues add their own section.
//! Unknown keys are errors naming the file and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::schema::Contract;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    #[serde(default)]
    description: String,
    ingest: Option<IngestSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestSection {
    stream: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobKind {
    /// Ingest new drops of a delivery stream into its typed table.
    Ingest { stream: String },
}

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub description: String,
    pub file: PathBuf,
    pub kind: JobKind,
}

/// Every job, by name.
#[derive(Debug, Clone, Default)]
pub struct Jobs {
    pub jobs: BTreeMap<String, Job>,
}

impl Jobs {
    pub fn load(dir: &Path, config: &Config, contract: &Contract) -> Result<Jobs> {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::Config {
            file: dir.display().to_string(),
            message: format!("cannot read the jobs folder ({e}); set `jobs_dir` in runner.toml"),
        })?;
        let mut files: Vec<PathBuf> =
            entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect();
        files.sort();
        let mut jobs = BTreeMap::new();
        for file in files {
            let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            let cfg_err = |message: String| Error::Config { file: file.display().to_string(), message };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                return Err(cfg_err(format!("job name `{name}` (the file name) may only hold letters, digits, `_` and `-`")));
            }
            let text = std::fs::read_to_string(&file).map_err(|e| cfg_err(e.to_string()))?;
            let jf: JobFile = toml::from_str(&text).map_err(|e| cfg_err(e.to_string()))?;
            let kind = match jf.ingest {
                Some(i) => {
                    contract.stream(&i.stream).map_err(|_| {
                        cfg_err(format!(
                            "[ingest] stream `{}` is not in schemas/events.toml (streams: {})",
                            i.stream,
                            contract.streams.keys().cloned().collect::<Vec<_>>().join(", ")
                        ))
                    })?;
                    config.source(&i.stream)?;
                    JobKind::Ingest { stream: i.stream }
                }
                None => return Err(cfg_err("a job needs a section saying what it runs: [ingest]".into())),
            };
            jobs.insert(name.clone(), Job { name, description: jf.description, file, kind });
        }
        Ok(Jobs { jobs })
    }

    pub fn get(&self, name: &str) -> Result<&Job> {
        self.jobs.get(name).ok_or_else(|| {
            let names: Vec<&str> = self.jobs.keys().map(String::as_str).collect();
            let hint = names
                .iter()
                .find(|n| n.contains(name) || name.contains(*n))
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            Error::Usage(format!("no job `{name}`{hint}; jobs: {}", names.join(", ")))
        })
    }
}
