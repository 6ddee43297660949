//! Configuration: what runs where.
//!
//! Layers, lowest to highest precedence (README "Configuration"):
//! 1. embedded defaults (the local pipeline over `data/` and `./warehouse`);
//! 2. `runner.toml` in the working directory, or the file given by `--config` / `RUNNER_CONFIG`;
//! 3. environment variables `RUNNER__<SECTION>__<KEY>` (`RUNNER__WAREHOUSE`,
//!    `RUNNER__SOURCES__COMPANIES__URL`, `RUNNER__INGEST__MAX_OBJECTS_PER_BATCH`, ...);
//! 4. command-line flags of the command being run.
//!
//! Unknown keys are errors that name the key and where it came from. Relative paths are relative
//! to the config file's folder (the working directory when there is no file).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

pub const DEFAULT_FILE: &str = "runner.toml";
pub const ENV_PREFIX: &str = "RUNNER__";

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    warehouse: Option<String>,
    jobs_dir: Option<String>,
    sql_dir: Option<String>,
    schemas_dir: Option<String>,
    scheduler_dir: Option<String>,
    catalog: Option<CatalogFile>,
    #[serde(default)]
    sources: BTreeMap<String, SourceFile>,
    ingest: Option<IngestFile>,
    scoring: Option<ScoringFile>,
    aws: Option<AwsFile>,
    athena: Option<AthenaFile>,
    engine: Option<EngineFile>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EngineFile {
    kind: Option<EngineKind>,
    scheduler: Option<String>,
}

/// Where SQL runs: jobs' SQL, export datasets and `runner query`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// DataFusion in this process.
    #[default]
    Local,
    /// A Ballista cluster (`runner cluster scheduler` and executors): planned here, executed there.
    Ballista,
}

/// The scheduler a Ballista engine uses when none is set.
pub const DEFAULT_SCHEDULER: &str = "df://localhost:50050";

/// The `[engine]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSettings {
    pub kind: EngineKind,
    /// The Ballista scheduler, `df://host:port`.
    pub scheduler: String,
}

impl EngineSettings {
    /// How status and history name the engine: `local`, or `ballista df://host:port`.
    pub fn label(&self) -> String {
        match self.kind {
            EngineKind::Local => "local".into(),
            EngineKind::Ballista => format!("ballista {}", self.scheduler),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AwsFile {
    region: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AthenaFile {
    workgroup: Option<String>,
    output_location: Option<String>,
    poll: Option<String>,
    max_poll: Option<String>,
}

/// The `[athena]` section: where `runner query --engine athena` runs.
#[derive(Debug, Clone)]
pub struct AthenaSettings {
    pub workgroup: String,
    /// `s3://...` for results; `None` when the workgroup enforces its own.
    pub output_location: Option<String>,
    /// First wait between GetQueryExecution polls; doubled up to `max_poll`.
    pub poll: Duration,
    pub max_poll: Duration,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ScoringFile {
    endpoint: Option<EndpointKind>,
    url: Option<String>,
    model: Option<String>,
    api_key_env: Option<String>,
    api_key_file: Option<String>,
    timeout: Option<String>,
    concurrency: Option<usize>,
    batch_rows: Option<usize>,
    max_attempts: Option<u32>,
    backoff: Option<String>,
    breaker_failures: Option<u32>,
    endpoint_name: Option<String>,
    region: Option<String>,
    sigv4: Option<bool>,
    drift: Option<DriftFile>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DriftFile {
    max_out_of_range_share: Option<f64>,
    max_psi: Option<f64>,
    refuse: Option<bool>,
}

/// `[scoring.drift]`: when a scoring run's input is too far from the model's training data.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftSettings {
    /// Warn when more than this share of the companies has a feature outside its training range.
    pub max_out_of_range_share: f64,
    /// Warn when a feature's population stability index is above this (0.25: significant shift).
    pub max_psi: f64,
    /// Over a threshold, fail the run and publish no scores (the drift is still recorded).
    pub refuse: bool,
}

impl Default for DriftSettings {
    fn default() -> Self {
        DriftSettings { max_out_of_range_share: 0.2, max_psi: 0.25, refuse: false }
    }
}

/// How the scoring job reaches the churn model (`../shared/spec/scoring.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointKind {
    /// In-process, with the model declaration's weights: no HTTP.
    Local,
    /// A SageMaker-compatible container: `POST <url>/invocations`, CSV rows, batched.
    Container,
    /// API Gateway `assessChurn`: one Company JSON per call.
    Apigateway,
    /// SageMaker `InvokeEndpoint` through the AWS SDK: CSV rows, batched under 6 MB.
    Sagemaker,
}

impl EndpointKind {
    /// The name `[scoring] endpoint` uses.
    pub fn name(self) -> &'static str {
        match self {
            EndpointKind::Local => "local",
            EndpointKind::Container => "container",
            EndpointKind::Apigateway => "apigateway",
            EndpointKind::Sagemaker => "sagemaker",
        }
    }
}

/// The `[scoring]` section: where the churn endpoint is and how hard to try.
#[derive(Debug, Clone)]
pub struct ScoringSettings {
    pub endpoint: EndpointKind,
    /// Base URL (container: the server root; apigateway: the full assessChurn URL).
    pub url: Option<String>,
    /// The model declaration (feature order, industry levels, output, weights).
    pub model: PathBuf,
    /// Environment variable holding the API key sent as `x-api-key`.
    pub api_key_env: Option<String>,
    /// File holding the API key (first line).
    pub api_key_file: Option<PathBuf>,
    pub timeout: Duration,
    pub concurrency: usize,
    pub batch_rows: usize,
    pub max_attempts: u32,
    /// First retry delay; doubled per attempt, with full jitter.
    pub backoff: Duration,
    /// Consecutive failed calls after which the endpoint is considered down for this run.
    pub breaker_failures: u32,
    /// SageMaker: the endpoint's name.
    pub endpoint_name: Option<String>,
    /// AWS region (SageMaker, SigV4); default: the standard AWS chain (AWS_REGION, profile).
    pub region: Option<String>,
    /// API Gateway: sign calls with SigV4 (service `execute-api`) for IAM-authorized APIs.
    pub sigv4: bool,
    pub drift: DriftSettings,
}
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    kind: CatalogKind,
    database: Option<String>,
    catalog_id: Option<String>,
    #[serde(default)]
    projection: Vec<String>,
    keep_replaced: Option<String>,
    glue_replay_after: Option<String>,
}

/// The `[catalog]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogSettings {
    pub kind: CatalogKind,
    /// Glue database the tables are registered in.
    pub database: String,
    /// The AWS account that owns the Glue catalog (default: the caller's).
    pub catalog_id: Option<String>,
    /// Tables Athena should read with partition projection instead of registered partitions.
    pub projection: Vec<String>,
    /// A partition version a SQL job replaced is deleted once replaced this long (queries in
    /// flight may still read it).
    pub keep_replaced: Duration,
    /// A Glue publish left pending this long (by the store's time) is finished by the next run;
    /// a younger one may be a publish in flight.
    pub glue_replay_after: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceFile {
    url: String,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct IngestFile {
    max_objects_per_batch: Option<usize>,
    max_bytes_per_batch: Option<String>,
    max_file_bytes: Option<String>,
    dedup_horizon: Option<String>,
    lookback: Option<String>,
    parallelism: Option<usize>,
    io_concurrency: Option<usize>,
    checkpoint_every: Option<u64>,
    checkpoint_retention: Option<String>,
    commit_grace: Option<String>,
    max_record_bytes: Option<String>,
    max_object_bytes: Option<String>,
    max_raw_bytes: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatalogKind {
    /// JSON objects under `<warehouse>/_runner/catalog/`.
    Local,
    /// The local catalog, mirrored to the AWS Glue Data Catalog on every publish.
    Glue,
}

/// The resolved configuration every command works from.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config came from (for messages), or `None` for the embedded defaults.
    pub file: Option<PathBuf>,
    /// Base folder for relative paths.
    pub base_dir: PathBuf,
    /// Warehouse root URL (`file:///...` or `s3://...`).
    pub warehouse: String,
    pub jobs_dir: PathBuf,
    pub sql_dir: PathBuf,
    pub schemas_dir: PathBuf,
    /// Where `schedules.toml` is.
    pub scheduler_dir: PathBuf,
    pub catalog: CatalogSettings,
    /// `[aws] region`: wins over the standard chain's region.
    pub aws_region: Option<String>,
    pub athena: AthenaSettings,
    /// Delivery stream name -> source root URL (the folder holding `YYYY/MM/DD/HH/`).
    pub sources: BTreeMap<String, String>,
    pub ingest: IngestSettings,
    pub scoring: ScoringSettings,
    pub engine: EngineSettings,
}

#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub max_objects_per_batch: usize,
    pub max_bytes_per_batch: u64,
    /// A batch's rows of one partition are written in files of at most about this many bytes
    /// in memory (a batch of GZIP drops can inflate to many times its listed size, and one
    /// Arrow batch holds at most 2 GiB of strings per column).
    pub max_file_bytes: u64,
    pub dedup_horizon: Duration,
    pub parallelism: usize,
    /// Drops downloaded at once (independent of the cores: it hides S3's first-byte latency).
    pub io_concurrency: usize,
    /// Discovery lists drops from the last ingested hour minus this (Firehose retries failed
    /// deliveries for up to 24 h, and a key's hour is the arrival of its oldest record).
    pub lookback: Duration,
    /// List the whole source prefix (`runner run --full-listing`).
    pub full_listing: bool,
    /// A ledger checkpoint is written once this many commits follow the last one.
    pub checkpoint_every: u64,
    /// What a checkpoint replaces (commit records, older checkpoints, dedup keys out of the
    /// horizon) is deleted by a later run once the checkpoint is this old: a run that read the
    /// ledger before the checkpoint may still be reading it.
    pub checkpoint_retention: Duration,
    /// An attempt (ingest batch, compaction, run record) older than this when it would commit
    /// does not: it re-plans from the ledger as it is then (the process was paused, e.g. a VM
    /// suspended between staging and commit).
    pub commit_grace: Duration,
    /// What one object may hold: record and inflated object size, quarantine `raw` cap.
    pub limits: Limits,
}

/// What one object may hold (`[ingest]` in `runner.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A record longer than this is quarantined as `record_too_large`, never parsed.
    pub max_record_bytes: usize,
    /// An object that inflates past this stops being read and is quarantined whole as
    /// `object_too_large` (no record of it is ingested).
    pub max_object_bytes: u64,
    /// A quarantine `raw` value keeps at most this much of the record's text.
    pub max_raw_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // Firehose's own maximum record size; twice its largest buffer; what Athena shows well.
        Limits { max_record_bytes: 1000 * 1024, max_object_bytes: 256 << 20, max_raw_bytes: 64 << 10 }
    }
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            max_objects_per_batch: 256,
            max_bytes_per_batch: 64 << 20,
            max_file_bytes: 512 << 20,
            dedup_horizon: Duration::from_secs(7 * 86_400),
            lookback: Duration::from_secs(26 * 3600),
            full_listing: false,
            checkpoint_every: 25,
            checkpoint_retention: Duration::from_secs(3600),
            commit_grace: Duration::from_secs(3600),
            limits: Default::default(),
            parallelism: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            io_concurrency: 16,
        }
    }
}

impl Config {
    /// Loads the layered configuration. `explicit` is `--config`; without it `runner.toml` in
    /// the working directory is used when present, and the embedded defaults otherwise.
    pub fn load(explicit: Option<&Path>) -> Result<Config> {
        let env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
        let (file, text) = match explicit {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| Error::Config {
                    file: p.display().to_string(),
                    message: format!("cannot read the config file: {e}"),
                })?;
                (Some(p.to_path_buf()), text)
            }
            // As cargo and git find theirs: the working directory, then each folder above it.
            None => match find_upward(&std::env::current_dir().unwrap_or_else(|_| ".".into())) {
                Some(p) => {
                    let text = std::fs::read_to_string(&p).map_err(|e| Error::Config {
                        file: p.display().to_string(),
                        message: format!("cannot read the config file: {e}"),
                    })?;
                    (Some(p), text)
                }
                None => (None, String::new()),
            },
        };
        Self::from_parts(file, &text, &env)
    }

    /// Builds the config from a file's text and environment overrides (testable without I/O).
    pub fn from_parts(file: Option<PathBuf>, text: &str, env: &[(String, String)]) -> Result<Config> {
        let file_name = file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(embedded defaults)".into());
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| Error::Config { file: file_name.clone(), message: plain_types(&e.to_string()) })?;
        // Check the file alone first so that its errors name the file, not the environment.
        FileConfig::deserialize(toml::Value::Table(table.clone()))
            .map_err(|e| Error::Config { file: file_name.clone(), message: plain_types(&e.to_string()) })?;
        let mut env_names = Vec::new();
        for (k, v) in env {
            let path: Vec<String> = k[ENV_PREFIX.len()..].split("__").map(|s| s.to_ascii_lowercase()).collect();
            if path.iter().any(String::is_empty) {
                return Err(Error::Config { file: format!("environment variable {k}"), message: "empty key segment".into() });
            }
            set_path(&mut table, &path, parse_env_value(v))
                .map_err(|m| Error::Config { file: format!("environment variable {k}"), message: m })?;
            env_names.push(k.clone());
        }
        let fc = FileConfig::deserialize(toml::Value::Table(table)).map_err(|e| Error::Config {
            file: format!("environment overrides ({})", env_names.join(", ")),
            message: plain_types(&e.to_string()),
        })?;

        let base_dir = match &file {
            Some(p) => p.parent().map(Path::to_path_buf).filter(|p| !p.as_os_str().is_empty()).unwrap_or_else(|| ".".into()),
            None => PathBuf::from("."),
        };
        let base_dir = std::path::absolute(&base_dir).unwrap_or(base_dir);
        let cfg_err = |m: String| Error::Config { file: file_name.clone(), message: m };

        let warehouse = to_url(&base_dir, fc.warehouse.as_deref().unwrap_or("warehouse")).map_err(cfg_err)?;
        let mut sources = BTreeMap::new();
        for (stream, default) in [("bigdatajobs", "data/drops/raw/bigdatajobs"), ("companies", "data/drops/raw/companies")] {
            sources.insert(stream.to_string(), to_url(&base_dir, default).map_err(cfg_err)?);
        }
        for (stream, s) in fc.sources {
            sources.insert(stream, to_url(&base_dir, &s.url).map_err(cfg_err)?);
        }
        let mut ingest = IngestSettings::default();
        if let Some(i) = fc.ingest {
            if let Some(n) = i.max_objects_per_batch {
                if n == 0 {
                    return Err(cfg_err("ingest.max_objects_per_batch must be at least 1".into()));
                }
                ingest.max_objects_per_batch = n;
            }
            if let Some(s) = i.max_bytes_per_batch {
                ingest.max_bytes_per_batch = parse_size(&s)
                    .ok_or_else(|| cfg_err(format!("ingest.max_bytes_per_batch `{s}` is not a size (e.g. \"64MiB\")")))?;
            }
            if let Some(s) = i.max_file_bytes {
                let n = parse_size(&s)
                    .ok_or_else(|| cfg_err(format!("ingest.max_file_bytes `{s}` is not a size (e.g. \"512MiB\")")))?;
                if !((1 << 20)..=(1 << 30)).contains(&n) {
                    return Err(cfg_err(format!(
                        "ingest.max_file_bytes must be between 1MiB and 1GiB (Arrow's 2 GiB of strings per batch) (it is {n})"
                    )));
                }
                ingest.max_file_bytes = n;
            }
            if let Some(s) = i.dedup_horizon {
                ingest.dedup_horizon = humantime::parse_duration(&s)
                    .map_err(|e| cfg_err(format!("ingest.dedup_horizon `{s}` is not a duration (e.g. \"7d\"): {e}")))?;
            }
            if let Some(s) = i.lookback {
                ingest.lookback = humantime::parse_duration(&s)
                    .map_err(|e| cfg_err(format!("ingest.lookback `{s}` is not a duration (e.g. \"26h\"): {e}")))?;
            }
            if let Some(n) = i.parallelism {
                ingest.parallelism = n.max(1);
            }
            if let Some(n) = i.io_concurrency {
                if !(1..=256).contains(&n) {
                    return Err(cfg_err(format!("ingest.io_concurrency must be between 1 and 256 (it is {n})")));
                }
                ingest.io_concurrency = n;
            }
            if let Some(n) = i.checkpoint_every {
                if n < 2 {
                    return Err(cfg_err("ingest.checkpoint_every must be at least 2".into()));
                }
                ingest.checkpoint_every = n;
            }
            if let Some(s) = i.checkpoint_retention {
                ingest.checkpoint_retention = humantime::parse_duration(&s)
                    .map_err(|e| cfg_err(format!("ingest.checkpoint_retention `{s}` is not a duration (e.g. \"1h\"): {e}")))?;
            }
            let size = |key: &str, v: Option<String>, default: u64| -> Result<u64> {
                v.map(|s| parse_size(&s).ok_or_else(|| cfg_err(format!("ingest.{key} `{s}` is not a size (e.g. \"1000KiB\")"))))
                    .transpose()
                    .map(|n| n.unwrap_or(default))
            };
            let l = &mut ingest.limits;
            l.max_record_bytes = size("max_record_bytes", i.max_record_bytes, l.max_record_bytes as u64)? as usize;
            l.max_object_bytes = size("max_object_bytes", i.max_object_bytes, l.max_object_bytes)?;
            l.max_raw_bytes = size("max_raw_bytes", i.max_raw_bytes, l.max_raw_bytes as u64)? as usize;
            if l.max_record_bytes < 1024 || l.max_record_bytes > 1 << 30 {
                return Err(cfg_err(format!(
                    "ingest.max_record_bytes must be between 1KiB and 1GiB (it is {})",
                    l.max_record_bytes
                )));
            }
            if l.max_object_bytes < l.max_record_bytes as u64 || l.max_object_bytes > 1 << 31 {
                return Err(cfg_err(format!(
                    "ingest.max_object_bytes must be at least ingest.max_record_bytes and at most 2GiB, Arrow's limit for one object's strings (it is {})",
                    l.max_object_bytes
                )));
            }
            if l.max_raw_bytes < 64 || l.max_raw_bytes > 16 << 20 {
                return Err(cfg_err(format!(
                    "ingest.max_raw_bytes must be between 64 and 16MiB, so Athena can read quarantine rows (it is {})",
                    l.max_raw_bytes
                )));
            }
            if let Some(s) = i.commit_grace {
                ingest.commit_grace = humantime::parse_duration(&s)
                    .map_err(|e| cfg_err(format!("ingest.commit_grace `{s}` is not a duration (e.g. \"1h\"): {e}")))?;
            }
        }
        let sc = fc.scoring.unwrap_or_default();
        // `<key> = "5s"` or the default; an error names the key.
        let duration = |key: &str, v: Option<String>, default: Duration| -> Result<Duration> {
            v.map(|s| {
                humantime::parse_duration(&s)
                    .map_err(|e| cfg_err(format!("{key} `{s}` is not a duration (e.g. \"5s\" or \"500ms\"): {e}")))
            })
            .transpose()
            .map(|d| d.unwrap_or(default))
        };
        let scoring = ScoringSettings {
            endpoint: sc.endpoint.unwrap_or(EndpointKind::Local),
            url: sc.url,
            model: base_dir.join(sc.model.as_deref().unwrap_or("data/model/churn.json")),
            api_key_env: sc.api_key_env,
            api_key_file: sc.api_key_file.map(|f| base_dir.join(f)),
            timeout: duration("scoring.timeout", sc.timeout, Duration::from_secs(10))?,
            concurrency: sc.concurrency.unwrap_or(8).max(1),
            batch_rows: sc.batch_rows.unwrap_or(1000).max(1),
            max_attempts: sc.max_attempts.unwrap_or(5).max(1),
            backoff: duration("scoring.backoff", sc.backoff, Duration::from_millis(200))?,
            breaker_failures: sc.breaker_failures.unwrap_or(20).max(1),
            endpoint_name: sc.endpoint_name,
            region: sc.region,
            sigv4: sc.sigv4.unwrap_or(false),
            drift: {
                let d = sc.drift.unwrap_or_default();
                let defaults = DriftSettings::default();
                let share = d.max_out_of_range_share.unwrap_or(defaults.max_out_of_range_share);
                if !(0.0..=1.0).contains(&share) {
                    return Err(cfg_err(format!("scoring.drift.max_out_of_range_share = {share} must be between 0 and 1")));
                }
                DriftSettings {
                    max_out_of_range_share: share,
                    max_psi: d.max_psi.unwrap_or(defaults.max_psi),
                    refuse: d.refuse.unwrap_or(false),
                }
            },
        };
        if scoring.endpoint == EndpointKind::Sagemaker && scoring.endpoint_name.is_none() {
            return Err(cfg_err(
                "scoring.endpoint = \"sagemaker\" needs scoring.endpoint_name (the SageMaker endpoint to invoke)".into(),
            ));
        }
        if matches!(scoring.endpoint, EndpointKind::Container | EndpointKind::Apigateway) && scoring.url.is_none() {
            return Err(cfg_err(format!(
                "scoring.endpoint = \"{}\" needs scoring.url (e.g. \"http://127.0.0.1:8080\")",
                scoring.endpoint.name()
            )));
        }
        let cf = fc.catalog;
        let catalog = CatalogSettings {
            kind: cf.as_ref().map(|c| c.kind).unwrap_or(CatalogKind::Local),
            database: cf.as_ref().and_then(|c| c.database.clone()).unwrap_or_else(|| "runner".into()),
            catalog_id: cf.as_ref().and_then(|c| c.catalog_id.clone()),
            projection: cf.as_ref().map(|c| c.projection.clone()).unwrap_or_default(),
            keep_replaced: match cf.as_ref().and_then(|c| c.keep_replaced.clone()) {
                Some(s) => humantime::parse_duration(&s)
                    .map_err(|e| cfg_err(format!("catalog.keep_replaced `{s}` is not a duration (e.g. \"1h\"): {e}")))?,
                None => Duration::from_secs(3600),
            },
            glue_replay_after: match cf.as_ref().and_then(|c| c.glue_replay_after.clone()) {
                Some(s) => humantime::parse_duration(&s)
                    .map_err(|e| cfg_err(format!("catalog.glue_replay_after `{s}` is not a duration (e.g. \"10m\"): {e}")))?,
                None => Duration::from_secs(600),
            },
        };
        if !catalog.database.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            return Err(cfg_err(format!(
                "catalog.database `{}`: Glue/Athena database names are lowercase letters, digits and `_`",
                catalog.database
            )));
        }
        let af = fc.athena.unwrap_or_default();
        let athena = AthenaSettings {
            workgroup: af.workgroup.unwrap_or_else(|| "primary".into()),
            output_location: af.output_location,
            poll: duration("athena.poll", af.poll, Duration::from_millis(200))?,
            max_poll: duration("athena.max_poll", af.max_poll, Duration::from_secs(5))?,
        };
        if let Some(o) = &athena.output_location
            && !o.starts_with("s3://")
        {
            return Err(cfg_err(format!("athena.output_location `{o}` must be an s3:// URL")));
        }
        let ef = fc.engine.unwrap_or_default();
        let engine = EngineSettings {
            kind: ef.kind.unwrap_or_default(),
            scheduler: ef.scheduler.unwrap_or_else(|| DEFAULT_SCHEDULER.into()),
        };
        scheduler_addr(&engine.scheduler).map_err(|m| cfg_err(format!("engine.scheduler: {m}")))?;
        Ok(Config {
            engine,
            catalog,
            aws_region: fc.aws.and_then(|a| a.region),
            athena,
            scoring,
            warehouse,
            jobs_dir: base_dir.join(fc.jobs_dir.as_deref().unwrap_or("jobs")),
            sql_dir: base_dir.join(fc.sql_dir.as_deref().unwrap_or("sql")),
            schemas_dir: base_dir.join(fc.schemas_dir.as_deref().unwrap_or("schemas")),
            scheduler_dir: base_dir.join(fc.scheduler_dir.as_deref().unwrap_or("scheduler")),
            sources,
            ingest,
            file,
            base_dir,
        })
    }

    pub fn source(&self, stream: &str) -> Result<&str> {
        self.sources.get(stream).map(String::as_str).ok_or_else(|| Error::Config {
            file: self.file_name(),
            message: format!("no source for stream `{stream}`: add [sources.{stream}] url = \"...\""),
        })
    }

    /// Whether anything here lives in AWS (then the SDK config is loaded first).
    pub fn uses_aws(&self) -> bool {
        self.catalog.kind == CatalogKind::Glue
            || self.warehouse.starts_with("s3")
            || self.sources.values().any(|u| u.starts_with("s3"))
            || self.scoring.endpoint == EndpointKind::Sagemaker
    }

    pub fn file_name(&self) -> String {
        self.file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(embedded defaults)".into())
    }
}

/// serde's type names in words a config's reader knows.
fn plain_types(msg: &str) -> String {
    let mut m = msg.to_string();
    for (rust, words) in [
        ("expected usize", "expected a whole number (no quotes)"),
        ("expected u64", "expected a whole number (no quotes)"),
        ("expected u32", "expected a whole number (no quotes)"),
        ("expected u16", "expected a whole number (no quotes)"),
        ("expected f64", "expected a number (no quotes)"),
        ("expected a boolean", "expected true or false (no quotes)"),
        ("expected a string", "expected a quoted string"),
    ] {
        m = m.replace(rust, words);
    }
    m
}

/// The nearest `runner.toml` in `dir` or a folder above it. A path relative to the working
/// directory when it is there (messages stay short), absolute otherwise.
fn find_upward(dir: &Path) -> Option<PathBuf> {
    if Path::new(DEFAULT_FILE).is_file() {
        return Some(PathBuf::from(DEFAULT_FILE));
    }
    dir.ancestors().map(|d| d.join(DEFAULT_FILE)).find(|p| p.is_file())
}

/// What to say when a command needs the project and none was found from `cwd` up.
pub fn not_found_message(cwd: &Path) -> String {
    format!(
        "no {DEFAULT_FILE} in {} or any folder above it, and this folder is not a runner project (no schemas/events.toml): run \
         runner from the project folder (the one holding {DEFAULT_FILE}), or pass --config /path/to/{DEFAULT_FILE} (or set \
         RUNNER_CONFIG; cron and EventBridge entries need one of these)",
        cwd.display()
    )
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> std::result::Result<(), String> {
    let (last, parents) = path.split_last().expect("non-empty");
    let mut t = table;
    for p in parents {
        let entry = t.entry(p.clone()).or_insert_with(|| toml::Value::Table(Default::default()));
        t = entry.as_table_mut().ok_or_else(|| format!("`{p}` is not a section"))?;
    }
    t.insert(last.clone(), value);
    Ok(())
}

/// `42` and `true` become typed values; anything else is a string.
fn parse_env_value(v: &str) -> toml::Value {
    if let Ok(i) = v.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match v {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(v.to_string()),
    }
}

/// `df://host:port` (or `host:port`) as host and port.
pub fn scheduler_addr(url: &str) -> std::result::Result<(String, u16), String> {
    let rest = url.strip_prefix("df://").unwrap_or(url).trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("`{url}` is not a scheduler address: write df://HOST:PORT (Ballista's default port is 50050)"))?;
    let port = port.parse::<u16>().map_err(|_| format!("`{url}`: the port `{port}` is not a number from 1 to 65535"))?;
    if host.is_empty() || port == 0 {
        return Err(format!("`{url}` is not a scheduler address: write df://HOST:PORT"));
    }
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

/// A URL for a location: `s3://` and `file://` pass through; a path becomes an absolute
/// `file://` URL (relative to `base`). Folders end in `/`.
pub fn to_url(base: &Path, loc: &str) -> std::result::Result<String, String> {
    let url = if loc.contains("://") {
        url::Url::parse(loc).map_err(|e| format!("`{loc}` is not a valid URL: {e}"))?
    } else {
        let p = if Path::new(loc).is_absolute() { PathBuf::from(loc) } else { base.join(loc) };
        let p = std::path::absolute(&p).map_err(|e| format!("`{loc}`: {e}"))?;
        url::Url::from_directory_path(&p).map_err(|_| format!("`{loc}` is not a usable path"))?
    };
    let mut s = url.to_string();
    if !s.ends_with('/') {
        s.push('/');
    }
    Ok(s)
}

/// `1048576`, `64MiB`, `64MB`, `1GiB`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_errors_are_in_words() {
        let e = Config::from_parts(Some("runner.toml".into()), "[ingest]\nparallelism = \"4\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("expected a whole number") && !e.contains("usize"), "{e}");
    }

    #[test]
    fn scheduler_addresses_parse_and_bad_ones_say_the_form() {
        assert_eq!(scheduler_addr("df://localhost:50050").unwrap(), ("localhost".into(), 50050));
        assert_eq!(scheduler_addr("10.0.0.5:7000").unwrap(), ("10.0.0.5".into(), 7000));
        assert!(scheduler_addr("df://localhost").unwrap_err().contains("df://HOST:PORT"));
        assert!(scheduler_addr("df://h:99999").unwrap_err().contains("not a number"));
    }

    #[test]
    fn defaults_without_a_file() {
        let c = Config::from_parts(None, "", &[]).unwrap();
        assert!(c.warehouse.starts_with("file:///") && c.warehouse.ends_with("/warehouse/"));
        assert!(c.sources["companies"].ends_with("data/drops/raw/companies/"));
        assert_eq!(c.catalog.kind, CatalogKind::Local);
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let e = Config::from_parts(Some("conf/runner.toml".into()), "wearhouse = \"x\"", &[]).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("conf/runner.toml") && m.contains("wearhouse"), "{m}");
        assert_eq!(e.exit_code(), 78);
    }

    #[test]
    fn env_overrides_file_and_names_itself_on_error() {
        let text = "warehouse = \"/tmp/a\"\n[ingest]\nmax_objects_per_batch = 5\n";
        let env = vec![
            ("RUNNER__WAREHOUSE".to_string(), "s3://bucket/wh".to_string()),
            ("RUNNER__INGEST__MAX_OBJECTS_PER_BATCH".to_string(), "7".to_string()),
        ];
        let c = Config::from_parts(Some("runner.toml".into()), text, &env).unwrap();
        assert_eq!(c.warehouse, "s3://bucket/wh/");
        assert_eq!(c.ingest.max_objects_per_batch, 7);
        let bad = vec![("RUNNER__INGEST__MAX_OBJECT".to_string(), "7".to_string())];
        let m = Config::from_parts(Some("runner.toml".into()), text, &bad).unwrap_err().to_string();
        assert!(m.contains("RUNNER__INGEST__MAX_OBJECT") && m.contains("max_object"), "{m}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("10"), Some(10));
        assert_eq!(parse_size("1 GiB"), Some(1 << 30));
        assert_eq!(parse_size("lots"), None);
    }
}
