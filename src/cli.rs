//! The command line: flags parsed by clap, then turned once into calls of the library.
//!
//! Config (`runner.toml`, `jobs/`) says what runs; flags say how this invocation behaves.
//! Results go to stdout in `--format`; logs, progress and errors go to stderr.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::error::{Error, Result, exit};
use crate::ingest::IngestSummary;
use crate::job::JobKind;
use crate::output::{Format, write_batches};
use crate::pipeline::{Outcome, RunOptions, run_jobs};
use crate::progress::Progress;
use crate::simulate::{SimulateOptions, simulate};
use crate::store::Location;
use crate::transform::SqlSummary;
use crate::workspace::Workspace;

const EXIT_CODES: &str = "Exit codes:
  0    success (quarantined records do not fail a run: see table `quarantine`)
  1    the run failed (storage, data or engine error; the message says what and whether a retry helps)
  2    usage error (bad command line, unknown job or table, SQL that does not plan)
  75   skipped: another run of a job holds its lock (the other jobs named still ran)
  78   configuration error (runner.toml, jobs/, schemas/)
  130  interrupted (Ctrl-C); rerunning is always safe";

#[derive(Debug, Parser)]
#[command(name = "runner", version, about = "Batch and micro-batch analytics job runner for SaaS tenant data", after_help = EXIT_CODES)]
pub struct Cli {
    /// Config file (default: ./runner.toml if present, else the embedded defaults).
    #[arg(long, global = true, env = "RUNNER_CONFIG")]
    pub config: Option<PathBuf>,
    /// More logging on stderr (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No progress bars.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Where `runner query` runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    #[default]
    Datafusion,
    Athena,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run jobs from jobs/ (ingest new drops exactly once) and print a summary.
    Run {
        /// Jobs to run, by name (the file name in jobs/ without .toml).
        jobs: Vec<String>,
        /// Run every job.
        #[arg(long, conflicts_with = "jobs")]
        all: bool,
        /// Summary format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// Override ingest.max_objects_per_batch for this run.
        #[arg(long)]
        max_objects_per_batch: Option<usize>,
        /// Logical time of the run: YYYY-MM-DD or RFC 3339 (SQL jobs run as of its UTC date). Default: now.
        #[arg(long, value_parser = parse_time)]
        at: Option<DateTime<Utc>>,
        /// Plan and run the SQL, run the checks, list what would be written; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Ingest: list the whole source prefix instead of the hours since the last ingested one
        /// minus ingest.lookback (for drops copied by hand into old hour folders).
        #[arg(long)]
        full_listing: bool,
        /// Run a schedule of scheduler/schedules.toml: its jobs, in order, for the fire time
        /// --at (default now), with its lag; a period that already ran is skipped.
        #[arg(long, conflicts_with_all = ["jobs", "all"])]
        schedule: Option<String>,
        /// Read an EventBridge Scheduled Event (JSON) from this file or `-` (stdin) and take its
        /// `time` as the logical time; a period that already ran is skipped.
        #[arg(long, conflicts_with = "at")]
        event: Option<String>,
        /// Do not take the jobs' leases (the ledger still keeps ingest exactly once).
        #[arg(long)]
        no_lock: bool,
        /// Jobs that do not depend on each other run at the same time, this many at once
        /// (ingest and compaction jobs always run alone). 1: one job at a time.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
        parallel: u16,
    },
    /// Schedules (scheduler/schedules.toml): list them, run them, export them.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Run a SQL job for each day from --from to --to (inclusive), in turn.
    Backfill {
        job: String,
        #[arg(long)]
        from: NaiveDate,
        #[arg(long)]
        to: NaiveDate,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Each job's last run and how fresh its output is.
    Status {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// The runs of one job, newest first.
    History {
        job: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Write realistic Firehose drops (both streams) for testing and demos.
    Simulate(SimulateArgs),
    /// List the tables in the catalog.
    Tables {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show a table's columns, location and partitions.
    Describe {
        table: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Run DataFusion SQL over every catalog table (filters on `dt` prune partitions).
    Query {
        /// The SQL text (or use --file).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        sql: Option<String>,
        /// Read the SQL from a file.
        #[arg(short, long)]
        file: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// Where the query runs: DataFusion in this process over the warehouse (no Athena cost),
        /// or Athena over the Glue catalog (needs [catalog] kind = "glue" and [athena]).
        #[arg(long, value_enum, default_value_t)]
        engine: Engine,
    },
    /// Sync the whole local catalog to Glue (tables, partitions, deletions): a repair after
    /// drift. Idempotent: a second run changes nothing and says so.
    Publish {
        /// Summary format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Check config, jobs and schemas offline (no data is read). Exit 78 on an error.
    Validate,
    /// The churn model: train it, or serve it as the local endpoint.
    #[command(subcommand)]
    Model(ModelCommand),
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Each scheduled job: expression, time zone, policy, next fire times, last run.
    List {
        /// Fire times to show.
        #[arg(long, default_value_t = 3)]
        count: usize,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Run due schedules until SIGTERM/Ctrl-C: catch-up by policy, leases, dependency order.
    Daemon {
        /// Treat fire times since this time as missed (default: since each schedule's last done period).
        #[arg(long, value_parser = parse_time)]
        from: Option<DateTime<Utc>>,
        /// Exit once this time has passed and nothing due is left (default: run forever).
        #[arg(long, value_parser = parse_time)]
        until: Option<DateTime<Utc>>,
        /// Format of the list of runs printed at exit.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Write the schedules as crontab lines, EventBridge Scheduler definitions or CloudFormation.
    Export {
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// The runner command in crontab lines.
        #[arg(long, default_value = "runner")]
        runner: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Crontab,
    Eventbridge,
    Cloudformation,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Fit the churn classifier on labelled companies, print holdout accuracy, precision and
    /// recall, and write the model declaration (default: [scoring] model in runner.toml).
    Train {
        /// Labelled companies: Company,Industry,Revenue,Employees,#job30,#job90,MonthlyCharge,TotalCharge,Churn.
        #[arg(long)]
        data: PathBuf,
        /// Where to write the declaration (default: scoring.model).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Seed of the 80/20 train/holdout split.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 3000)]
        epochs: usize,
    },
    /// Serve the model over HTTP: SageMaker container (/ping, /invocations) and API Gateway
    /// (/assessChurn). Stops on SIGTERM or Ctrl-C after finishing requests in flight.
    Serve {
        /// Port to listen on (0: any free port; the address is printed on stderr).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Address to bind (loopback by default: expose it on purpose).
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// The model declaration (default: scoring.model).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Requests scored at once; more wait.
        #[arg(long, default_value_t = 64)]
        max_concurrency: usize,
    },
    /// Benchmark a running model server with the scoring client: batched /invocations next to
    /// one /assessChurn request per company; prints companies/s and p50/p99 per call.
    Bench {
        /// The server root, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        url: String,
        /// Companies to score (the seed's companies.csv).
        #[arg(long, default_value = "data/companies.csv")]
        data: PathBuf,
        #[arg(long, default_value_t = 1000)]
        batch_rows: usize,
        /// Calls in flight.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Where to write: a folder or URL; drops go under <out>/raw/<stream>/.
    #[arg(long, default_value = "data/drops")]
    pub out: String,
    #[arg(long, default_value_t = 20)]
    pub tenants: usize,
    #[arg(long, default_value_t = 5)]
    pub users_per_tenant: usize,
    #[arg(long, default_value_t = 14)]
    pub days: u32,
    /// Last day of events (UTC), YYYY-MM-DD; default today. Output is deterministic for a seed and end date.
    #[arg(long)]
    pub end_date: Option<NaiveDate>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Share of events arriving hours to days late.
    #[arg(long, default_value_t = 0.02)]
    pub late_share: f64,
    /// Share of records (and objects) Firehose delivers twice.
    #[arg(long, default_value_t = 0.01)]
    pub duplicate_share: f64,
    /// Share of objects written GZIP-compressed.
    #[arg(long, default_value_t = 0.5)]
    pub gzip_share: f64,
    /// Chance per record of an invalid record next to it.
    #[arg(long, default_value_t = 0.001)]
    pub invalid_share: f64,
    /// Share of records in the legacy form (no event_type).
    #[arg(long, default_value_t = 0.02)]
    pub legacy_share: f64,
    /// Target object size in bytes (uncompressed).
    #[arg(long, default_value_t = 1 << 20)]
    pub object_size: usize,
    /// Firehose buffer interval in seconds (an object closes after this long; 0-900).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(0..=900))]
    pub buffer_seconds: u32,
    /// Also write Firehose error output, a stray file and a `.snappy` drop per stream.
    #[arg(long)]
    pub noise: bool,
}

pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("runner={default},warn")));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}

/// Runs a parsed command line; returns the exit code.
pub async fn run(cli: Cli) -> Result<i32> {
    let config = Config::load(cli.config.as_deref())?;
    let simulate_to_s3 = matches!(&cli.command, Command::Simulate(a) if a.out.starts_with("s3"));
    if config.uses_aws() || simulate_to_s3 {
        crate::aws::init(config.aws_region.as_deref()).await;
    }
    let mut stdout = std::io::stdout().lock();
    let progress = Progress::new(!cli.quiet && std::io::stderr().is_terminal());
    match cli.command {
        Command::Model(ModelCommand::Train { data, out, seed, epochs }) => {
            let rows = crate::model::train::read_companies_csv(&data)?;
            let decl = crate::model::train::train(&rows, &data.display().to_string(), seed, epochs)?;
            let out_path = out.unwrap_or_else(|| config.scoring.model.clone());
            if let Some(dir) = out_path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::Io { what: format!("creating {}", dir.display()), source: e })?;
            }
            let text = serde_json::to_string_pretty(&decl).map_err(|e| Error::Internal(e.to_string()))?;
            std::fs::write(&out_path, text + "\n")
                .map_err(|e| Error::Io { what: format!("writing {}", out_path.display()), source: e })?;
            let t = decl.training.as_ref().expect("set by train");
            writeln!(
                stdout,
                "model {} {}: trained on {} rows, held out {}\nholdout accuracy {:.4}  precision {:.4}  recall {:.4}\nwrote {}",
                decl.id,
                decl.version,
                t.train_rows,
                t.holdout_rows,
                t.holdout.accuracy,
                t.holdout.precision,
                t.holdout.recall,
                out_path.display()
            )
            .map_err(|e| Error::Io { what: "writing the result".into(), source: e })?;
            Ok(0)
        }
        Command::Model(ModelCommand::Bench { url, data, batch_rows, concurrency, format }) => {
            let model = std::sync::Arc::new(crate::model::ModelDecl::load(&config.scoring.model)?);
            let rows = crate::model::train::read_companies_csv(&data)?;
            let results = crate::model::bench::run(model, &rows, &url, batch_rows, concurrency).await?;
            let batch = RecordBatch::try_from_iter(vec![
                ("mode", Arc::new(StringArray::from_iter_values(results.iter().map(|r| r.mode.clone()))) as ArrayRef),
                ("companies", Arc::new(UInt64Array::from_iter_values(results.iter().map(|r| r.companies as u64))) as ArrayRef),
                ("calls", Arc::new(UInt64Array::from_iter_values(results.iter().map(|r| r.calls as u64))) as ArrayRef),
                (
                    "seconds",
                    Arc::new(Float64Array::from_iter_values(results.iter().map(|r| (r.seconds * 1000.0).round() / 1000.0))),
                ),
                ("companies_per_s", Arc::new(Float64Array::from_iter_values(results.iter().map(|r| r.companies_per_s.round())))),
                (
                    "p50_ms",
                    Arc::new(Float64Array::from_iter_values(results.iter().map(|r| (r.p50_ms * 1000.0).round() / 1000.0))),
                ),
                (
                    "p99_ms",
                    Arc::new(Float64Array::from_iter_values(results.iter().map(|r| (r.p99_ms * 1000.0).round() / 1000.0))),
                ),
                ("mismatches", Arc::new(UInt64Array::from_iter_values(results.iter().map(|r| r.mismatches as u64))) as ArrayRef),
            ])
            .map_err(Error::arrow("building the benchmark table"))?;
            write_batches(&mut stdout, format, &[batch])?;
            Ok(0)
        }
        Command::Model(ModelCommand::Serve { port, host, model, max_concurrency }) => {
            let path = model.unwrap_or_else(|| config.scoring.model.clone());
            let decl = crate::model::ModelDecl::load(&path)?;
            let (id, version) = (decl.id.clone(), decl.version.clone());
            crate::model::serve::serve(
                decl,
                std::net::SocketAddr::new(host, port),
                max_concurrency,
                |addr| eprintln!("serving model {id} {version} on http://{addr} (/ping, /invocations, /assessChurn)"),
                crate::model::serve::termination(),
            )
            .await?;
            Ok(0)
        }
        Command::Simulate(a) => {
            let base = config.base_dir.clone();
            let url = crate::config::to_url(&base, &a.out).map_err(Error::Usage)?;
            let out = Location::parse(&url)?;
            let o = SimulateOptions {
                tenants: a.tenants,
                users_per_tenant: a.users_per_tenant,
                days: a.days,
                end_date: a.end_date.unwrap_or_else(|| chrono::Utc::now().date_naive()),
                seed: a.seed,
                late_share: share("late-share", a.late_share)?,
                duplicate_share: share("duplicate-share", a.duplicate_share)?,
                gzip_share: share("gzip-share", a.gzip_share)?,
                invalid_share: share("invalid-share", a.invalid_share)?,
                legacy_share: share("legacy-share", a.legacy_share)?,
                object_size: a.object_size.max(1),
                buffer_seconds: a.buffer_seconds,
                noise: a.noise,
            };
            let s = simulate(&out, &o).await?;
            eprintln!(
                "wrote {} objects ({:.1} MB) to {}: {} events, {} records with {} duplicates and {} invalid",
                s.objects,
                s.bytes as f64 / 1e6,
                out.url,
                s.events,
                s.records,
                s.duplicates,
                s.invalid
            );
            Ok(exit::OK)
        }
        Command::Validate => {
            let ws = Workspace::open(config)?;
            for url in ws.config.sources.values().chain(std::iter::once(&ws.config.warehouse)) {
                Location::parse(url).map_err(|e| Error::Config { file: ws.config.file_name(), message: e.to_string() })?;
            }
            let schedules = crate::schedule::Schedules::load(&ws.config.scheduler_dir, &ws.jobs)?;
            let problems = crate::sqlcheck::plan_all(&ws).await;
            if !problems.is_empty() {
                for p in &problems {
                    eprintln!("error: {p}");
                }
                return Err(Error::Config {
                    file: "jobs/, sql/".into(),
                    message: format!("{} problem(s) found", problems.len()),
                });
            }
            eprintln!(
                "ok: config {}, {} jobs, {} streams in schemas/events.toml, {} schedules",
                ws.config.file_name(),
                ws.jobs.jobs.len(),
                ws.contract.streams.len(),
                schedules.schedules.len()
            );
            Ok(exit::OK)
        }
        Command::Run {
            jobs,
            all,
            format,
            max_objects_per_batch,
            at,
            dry_run,
            full_listing,
            schedule,
            event,
            no_lock,
            parallel,
        } => {
            let parallel = usize::from(parallel);
            let mut config = config;
            if let Some(n) = max_objects_per_batch {
                config.ingest.max_objects_per_batch = n.max(1);
            }
            config.ingest.full_listing |= full_listing;
            let ws = Workspace::open(config)?;
            let at = match &event {
                Some(src) => Some(crate::schedule::daemon::event_time(src)?),
                None => at,
            };
            // Read once, and only when needed: for --schedule, and for the lease ttl of locked runs.
            let locked = !(dry_run || no_lock);
            let schedules = match schedule.is_some() || locked {
                true => Some(crate::schedule::Schedules::load(&ws.config.scheduler_dir, &ws.jobs)?),
                false => None,
            };
            // Triggered runs (--schedule, --event) are periods: one that already ran is skipped.
            let (names, at, period) = if let (Some(name), Some(schedules)) = (&schedule, &schedules) {
                let s = schedules.schedules.iter().find(|s| &s.name == name).ok_or_else(|| {
                    let names: Vec<&str> = schedules.schedules.iter().map(|s| s.name.as_str()).collect();
                    Error::Usage(format!("no schedule `{name}` in {}; schedules: {}", schedules.file.display(), names.join(", ")))
                })?;
                let fire = at.unwrap_or_else(Utc::now);
                (s.jobs.clone(), Some(s.logical_time(fire)), Some(fire))
            } else if all {
                (ws.jobs.jobs.keys().cloned().collect(), at, event.as_ref().and(at))
            } else if jobs.is_empty() {
                return Err(Error::Usage("name the jobs to run, --all, or --schedule NAME".into()));
            } else {
                (jobs, at, event.as_ref().and(at))
            };
            let Some(schedules) = schedules.filter(|_| locked) else {
                let outcomes = run_jobs(&ws, &names, &RunOptions { at, dry_run, days: None, parallel }, &progress).await?;
                print_outcomes(&mut stdout, format, &outcomes)?;
                return Ok(exit::OK);
            };
            let ttl = schedules.lease_ttl;
            let holder = crate::schedule::lease::holder_id();
            let at = at.unwrap_or_else(Utc::now);
            // Each job: its outcome if it ran, and whether another run held its lock.
            let runs = crate::pipeline::run_dag(&ws.jobs, &names, parallel, |job| {
                let (ws, holder, progress) = (&ws, &holder, &progress);
                async move {
                    use crate::schedule::daemon::{Locked, run_locked};
                    match run_locked(ws, job, at, period, holder, ttl, progress).await? {
                        Locked::Ran(r) => r.map(|o| (Some(o), false)),
                        Locked::Held(h) => {
                            eprintln!(
                                "skipped `{}`: another run holds its lock ({}, until {}); the next trigger catches up",
                                job.name,
                                h.holder,
                                h.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                            );
                            Ok((None, true))
                        }
                        Locked::AlreadyDone => {
                            eprintln!("skipped `{}`: the period {} already ran", job.name, period.unwrap_or(at));
                            Ok((None, false))
                        }
                    }
                }
            })
            .await?;
            let skipped = runs.iter().any(|(_, held)| *held);
            let outcomes: Vec<Outcome> = runs.into_iter().filter_map(|(o, _)| o).collect();
            print_outcomes(&mut stdout, format, &outcomes)?;
            Ok(if skipped { exit::LOCKED } else { exit::OK })
        }
        Command::Schedule(cmd) => {
            let ws = Workspace::open(config)?;
            let schedules = crate::schedule::Schedules::load(&ws.config.scheduler_dir, &ws.jobs)?;
            crate::schedule::cli::run(&ws, &schedules, cmd, &mut stdout, &progress).await
        }
        Command::Backfill { job, from, to, format } => {
            let ws = Workspace::open(config)?;
            if from > to {
                return Err(Error::Usage(format!("--from {from} is after --to {to}")));
            }
            let j = ws.jobs.get(&job)?;
            let JobKind::Sql(sj) = &j.kind else {
                return Err(Error::Usage(format!("`{job}` is an ingest job: backfill is for SQL jobs")));
            };
            let days: Vec<NaiveDate> = from.iter_days().take_while(|d| *d <= to).collect();
            let mut outcomes = Vec::new();
            if sj.incremental {
                let opts = RunOptions {
                    at: Some(to.and_hms_opt(0, 0, 0).expect("midnight").and_utc()),
                    days: Some(days),
                    ..Default::default()
                };
                outcomes.push(crate::pipeline::run_job(&ws, j, &opts, &progress).await?);
            } else {
                for d in days {
                    let opts = RunOptions { at: Some(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc()), ..Default::default() };
                    outcomes.push(crate::pipeline::run_job(&ws, j, &opts, &progress).await?);
                }
            }
            print_outcomes(&mut stdout, format, &outcomes)?;
            Ok(exit::OK)
        }
        Command::Status { format } => {
            let ws = Workspace::open(config)?;
            let batch = crate::history::status(&ws).await?;
            write_batches(&mut stdout, format, &[batch])?;
            Ok(exit::OK)
        }
        Command::History { job, limit, format } => {
            let ws = Workspace::open(config)?;
            ws.jobs.get(&job)?;
            let batches = crate::history::history(&ws, &job, limit).await?;
            write_batches(&mut stdout, format, &batches)?;
            Ok(exit::OK)
        }
        Command::Tables { format } => {
            let ws = Workspace::open(config)?;
            let tables = ws.catalog.tables().await?;
            let mut parts = Vec::new();
            for t in &tables {
                parts.push(ws.catalog.partitions(&t.name).await?.len() as u64);
            }
            let batch = RecordBatch::try_from_iter(vec![
                ("table", Arc::new(StringArray::from_iter_values(tables.iter().map(|t| t.name.as_str()))) as ArrayRef),
                ("partitions", Arc::new(UInt64Array::from(parts)) as ArrayRef),
                ("location", Arc::new(StringArray::from_iter_values(tables.iter().map(|t| t.location.as_str())))),
                ("description", Arc::new(StringArray::from_iter_values(tables.iter().map(|t| t.description.as_str())))),
            ])
            .map_err(Error::arrow("listing tables"))?;
            write_batches(&mut stdout, format, &[batch])?;
            Ok(exit::OK)
        }
        Command::Describe { table, format } => {
            let ws = Workspace::open(config)?;
            let Some(t) = ws.catalog.table(&table).await? else {
                let names: Vec<String> = ws.catalog.tables().await?.into_iter().map(|t| t.name).collect();
                return Err(Error::Usage(format!("no table `{table}` in the catalog; tables: {}", names.join(", "))));
            };
            let parts = ws.catalog.partitions(&table).await?;
            if format == Format::Table {
                let span = match (parts.first(), parts.last()) {
                    (Some(a), Some(b)) => format!(" ({} .. {})", a.values.join(","), b.values.join(",")),
                    _ => String::new(),
                };
                writeln!(
                    stdout,
                    "table:       {}\ndescription: {}\nlocation:    {}\nformat:      {}\npartitions:  {}{span}",
                    t.name,
                    t.description,
                    t.location,
                    t.format,
                    parts.len()
                )
                .map_err(|e| Error::Io { what: "writing".into(), source: e })?;
            }
            let mut names = Vec::new();
            let mut types = Vec::new();
            let mut kinds = Vec::new();
            for (c, kind) in t.columns.iter().map(|c| (c, "column")).chain(t.partition_keys.iter().map(|c| (c, "partition key")))
            {
                names.push(c.name.clone());
                types.push(c.ty.clone());
                kinds.push(kind);
            }
            let batch = RecordBatch::try_from_iter(vec![
                ("column", Arc::new(StringArray::from(names)) as ArrayRef),
                ("type", Arc::new(StringArray::from(types)) as ArrayRef),
                ("kind", Arc::new(StringArray::from(kinds)) as ArrayRef),
            ])
            .map_err(Error::arrow("describing"))?;
            write_batches(&mut stdout, format, &[batch])?;
            Ok(exit::OK)
        }
        Command::Publish { format } => {
            let ws = Workspace::open(config)?;
            let Some(glue) = ws.glue() else {
                return Err(Error::Usage(
                    "`runner publish` syncs the local catalog to Glue: set [catalog] kind = \"glue\" (and an s3:// warehouse)"
                        .into(),
                ));
            };
            let r = glue.publish_all().await?;
            let batch = RecordBatch::try_from_iter(vec![
                ("database", Arc::new(StringArray::from(vec![glue.database()])) as ArrayRef),
                ("tables_created", Arc::new(UInt64Array::from(vec![r.tables_created])) as ArrayRef),
                ("tables_updated", Arc::new(UInt64Array::from(vec![r.tables_updated]))),
                ("tables_unchanged", Arc::new(UInt64Array::from(vec![r.tables_unchanged]))),
                ("partitions_created", Arc::new(UInt64Array::from(vec![r.partitions_created]))),
                ("partitions_updated", Arc::new(UInt64Array::from(vec![r.partitions_updated]))),
                ("partitions_deleted", Arc::new(UInt64Array::from(vec![r.partitions_deleted]))),
                ("partitions_unchanged", Arc::new(UInt64Array::from(vec![r.partitions_unchanged]))),
            ])
            .map_err(Error::arrow("summarizing the publish"))?;
            write_batches(&mut stdout, format, &[batch])?;
            if r.changed() {
                eprintln!("Glue database `{}` now matches the local catalog", glue.database());
            } else {
                eprintln!("nothing changed: Glue database `{}` already matched the local catalog", glue.database());
            }
            Ok(exit::OK)
        }
        Command::Query { sql, file, format, engine: Engine::Athena } => {
            let sql = read_sql(sql, file)?;
            if config.catalog.kind != crate::config::CatalogKind::Glue {
                return Err(Error::Usage(
                    "--engine athena reads the tables Glue knows: set [catalog] kind = \"glue\" (and [athena] workgroup, \
                     output_location)"
                        .into(),
                ));
            }
            let batches = crate::athena::query(&config, &sql).await?;
            write_batches(&mut stdout, format, &batches)?;
            Ok(exit::OK)
        }
        Command::Query { sql, file, format, engine: Engine::Datafusion } => {
            let sql = read_sql(sql, file)?;
            let ws = Workspace::open(config)?;
            let ctx = crate::engine::session(&ws).await?;
            let df = ctx.sql(&sql).await.map_err(|e| Error::Usage(format!("the query does not plan: {e}")))?;
            let batches = df.collect().await.map_err(Error::df("running the query"))?;
            write_batches(&mut stdout, format, &batches)?;
            Ok(exit::OK)
        }
    }
}

fn read_sql(sql: Option<String>, file: Option<PathBuf>) -> Result<String> {
    match (sql, file) {
        (Some(s), _) => Ok(s),
        (None, Some(f)) => {
            std::fs::read_to_string(&f).map_err(|e| Error::Usage(format!("cannot read SQL file {}: {e}", f.display())))
        }
        (None, None) => Err(Error::Usage("give the SQL or --file".into())),
    }
}

fn share(name: &str, v: f64) -> Result<f64> {
    if (0.0..=1.0).contains(&v) { Ok(v) } else { Err(Error::Usage(format!("--{name} must be between 0 and 1, got {v}"))) }
}

fn parse_time(s: &str) -> std::result::Result<DateTime<Utc>, String> {
    if let Ok(d) = s.parse::<NaiveDate>() {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("`{s}` is not a date (YYYY-MM-DD) or an RFC 3339 time (2026-11-20T13:05:00Z): {e}"))
}

/// The run summary: one table for ingest jobs and one for SQL jobs, or a JSON list of both.
fn print_outcomes(out: &mut dyn Write, format: Format, outcomes: &[Outcome]) -> Result<()> {
    if matches!(format, Format::Json | Format::Ndjson) {
        let text = if format == Format::Json {
            serde_json::to_string_pretty(outcomes)
        } else {
            outcomes.iter().map(serde_json::to_string).collect::<std::result::Result<Vec<_>, _>>().map(|v| v.join("\n"))
        }
        .map_err(|e| Error::Internal(e.to_string()))?;
        return writeln!(out, "{text}").map_err(|e| Error::Io { what: "writing the summary".into(), source: e });
    }
    let ingest: Vec<IngestSummary> =
        outcomes.iter().filter_map(|o| if let Outcome::Ingest(s) = o { Some(s.clone()) } else { None }).collect();
    let sql: Vec<SqlSummary> =
        outcomes.iter().filter_map(|o| if let Outcome::Sql(s) = o { Some(s.clone()) } else { None }).collect();
    if !ingest.is_empty() {
        print_summaries(out, format, &ingest)?;
    }
    if !sql.is_empty() {
        print_sql_summaries(out, format, &sql)?;
    }
    // Compaction, scoring and export runs: one line each.
    for o in outcomes {
        let line = match o {
            Outcome::Score(c) => {
                let reasons: Vec<String> = c.errors_by_reason.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!(
                    "{}: as of {}: {} companies, {} scored, {} kept from an earlier run, {} churn, {} errors{}; {} unknown industries; {} calls, {} retries to {} (model {} {}) ({:.2}s)",
                    c.job,
                    c.as_of,
                    c.companies,
                    c.scored,
                    c.kept,
                    c.churn,
                    c.errors,
                    if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join(" ")) },
                    c.unknown_industry,
                    c.calls,
                    c.retries,
                    c.endpoint,
                    c.model_id,
                    c.model_version,
                    c.seconds
                )
            }
            Outcome::Compact(c) => format!(
                "{}: compacted {} partitions: {} files ({:.1} MB) into {} ({:.1} MB), {} rows; removed {} replaced files ({:.2}s)",
                c.job,
                c.partitions,
                c.files_in,
                c.bytes_in as f64 / 1e6,
                c.files_out,
                c.bytes_out as f64 / 1e6,
                c.rows,
                c.removed_files,
                c.seconds
            ),
            Outcome::Export(e) => format!(
                "{}: exported {} rows of {} tenants as of {} in {} files ({:.2}s)",
                e.job, e.rows, e.tenants, e.as_of, e.files, e.seconds
            ),
            Outcome::Ingest(_) | Outcome::Sql(_) => continue,
        };
        writeln!(out, "{line}").map_err(|err| Error::Io { what: "writing the summary".into(), source: err })?;
    }
    Ok(())
}

fn print_sql_summaries(out: &mut dyn Write, format: Format, s: &[SqlSummary]) -> Result<()> {
    let u = |f: fn(&SqlSummary) -> u64| Arc::new(UInt64Array::from_iter_values(s.iter().map(f))) as ArrayRef;
    let strs = |f: fn(&SqlSummary) -> String| Arc::new(StringArray::from_iter_values(s.iter().map(f))) as ArrayRef;
    let span = |v: &[String]| match (v.first(), v.last()) {
        (Some(a), Some(b)) if a != b => format!("{a} .. {b} ({})", v.len()),
        (Some(a), _) => a.clone(),
        _ => "nothing changed".into(),
    };
    let batch = RecordBatch::try_from_iter(vec![
        ("job", strs(|x| x.job.clone())),
        ("as_of", strs(|x| x.as_of.clone())),
        ("periods", Arc::new(StringArray::from_iter_values(s.iter().map(|x| span(&x.periods)))) as ArrayRef),
        ("rows_in", u(|x| x.rows_in)),
        ("rows_out", u(|x| x.rows_out)),
        ("partitions", u(|x| x.partitions.len() as u64)),
        ("files", u(|x| x.files)),
        ("written", strs(|x| if x.dry_run { "no (dry run)".into() } else { "published".into() })),
        ("seconds", Arc::new(Float64Array::from_iter_values(s.iter().map(|x| (x.seconds * 100.0).round() / 100.0))) as ArrayRef),
    ])
    .map_err(Error::arrow("building the summary"))?;
    write_batches(out, format, &[batch])
}

fn print_summaries(out: &mut dyn Write, format: Format, s: &[IngestSummary]) -> Result<()> {
    let u = |f: fn(&IngestSummary) -> u64| Arc::new(UInt64Array::from_iter_values(s.iter().map(f))) as ArrayRef;
    let reasons: Vec<String> =
        s.iter().map(|x| x.stats.quarantined.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")).collect();
    let schema = Schema::new(vec![
        Field::new("job", DataType::Utf8, false),
        Field::new("batches", DataType::UInt64, false),
        Field::new("objects", DataType::UInt64, false),
        Field::new("records", DataType::UInt64, false),
        Field::new("valid", DataType::UInt64, false),
        Field::new("duplicates", DataType::UInt64, false),
        Field::new("quarantined", DataType::UInt64, false),
        Field::new("by_reason", DataType::Utf8, false),
        Field::new("refused", DataType::UInt64, false),
        Field::new("skipped", DataType::UInt64, false),
        Field::new("recovered", DataType::UInt64, false),
        Field::new("mb", DataType::Float64, false),
        Field::new("seconds", DataType::Float64, false),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from_iter_values(s.iter().map(|x| x.job.as_str()))),
            u(|x| x.batches),
            u(|x| x.objects),
            u(|x| x.stats.records),
            u(|x| x.stats.valid),
            u(|x| x.stats.duplicates),
            u(|x| x.stats.quarantined_total()),
            Arc::new(StringArray::from(reasons)),
            u(|x| x.refused),
            u(|x| x.skipped_error_output + x.skipped_stray),
            u(|x| x.recovered_batches),
            Arc::new(Float64Array::from_iter_values(
                s.iter().map(|x| (x.stats.bytes_uncompressed as f64 / 1e6 * 10.0).round() / 10.0),
            )),
            Arc::new(Float64Array::from_iter_values(s.iter().map(|x| (x.seconds * 100.0).round() / 100.0))),
        ],
    )
    .map_err(Error::arrow("building the summary"))?;
    write_batches(out, format, &[batch])
}
