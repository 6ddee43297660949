//! The command line: flags parsed by clap, turned once into calls of the library, and the
//! results printed. Nothing here decides how a job runs: that is `pipeline`'s.
//!
//! Config (`runner.toml`, `jobs/`) says what runs; flags say how this invocation behaves.
//! Results go to stdout in `--format`; logs, progress and errors go to stderr.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Parser, Subcommand};

use crate::config::{Config, EngineKind};
use crate::dates::parse_time;
use crate::error::{Error, Result, exit};
use crate::job::{JobMetrics, summary_table};
use crate::output::{Format, notice, write_batches, write_records};
use crate::pipeline::locked::{Locked, LockedRun, first_failure, run_locked_dag};
use crate::pipeline::{RunOptions, run_jobs};
use crate::progress::Progress;
use crate::schedule::cli::ScheduleCommand;
use crate::simulate::{Framing, Mix, SimulateOptions, simulate};
use crate::store::Location;
use crate::workspace::Workspace;

const EXIT_CODES: &str = "Exit codes:
  0    success (quarantined records do not fail a run: see table `quarantine`)
  1    the run failed (storage, data or engine error; the message says what and whether a retry helps)
  2    usage error (bad command line, unknown job or table, SQL that does not plan)
  75   skipped: another run of a job holds its lock (the other jobs named still ran)
  78   configuration error (runner.toml, jobs/, schemas/)
  130  interrupted (Ctrl-C, SIGTERM): leases given back; rerunning is always safe";

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
    /// Where SQL runs (jobs, export datasets, `query`), overriding [engine] kind: DataFusion in
    /// this process, a Ballista cluster, or (`query` only) Athena over the Glue catalog.
    #[arg(long, global = true, value_enum)]
    pub engine: Option<Engine>,
    /// The Ballista scheduler, df://HOST:PORT, overriding [engine] scheduler.
    #[arg(long, global = true)]
    pub scheduler: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// `--engine`: where SQL runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// DataFusion in this process.
    #[value(alias = "datafusion")]
    Local,
    /// The Ballista cluster at [engine] scheduler (or --scheduler).
    Ballista,
    /// Athena over the Glue catalog: `runner query` only (needs [catalog] kind = "glue").
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
        /// Plan each job and say what it would do (SQL: run the query and the checks; ingest:
        /// the pending drops; compaction: the partitions; export and scoring: rows and
        /// companies); write nothing.
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
        /// Run SQL, export and scoring jobs even when they are up to date (their inputs did not
        /// change since their last successful run for the same logical date).
        #[arg(long)]
        force: bool,
        /// Jobs that do not depend on each other run at the same time, this many at once
        /// (ingest jobs only next to other ingest jobs, compaction alone). 1: one job at a time.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
        parallel: u16,
    },
    /// Schedules (scheduler/schedules.toml): list them, run them, export them.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Run a SQL job for each day from --from to --to (inclusive), in turn.
    Backfill {
        /// The SQL job to rebuild (its name in jobs/).
        job: String,
        /// First logical date to run it for, YYYY-MM-DD (UTC).
        #[arg(long)]
        from: NaiveDate,
        /// Last logical date to run it for, YYYY-MM-DD, inclusive.
        #[arg(long)]
        to: NaiveDate,
        /// Summary format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Validate quarantined records again against today's schemas/events.toml and add those that
    /// now pass to their tables, exactly once (a ledger commit like a batch); rows that still
    /// fail stay quarantined with today's reason. Prints, per stream and original reason, how
    /// many were accepted, were already in the table, still fail, or were left alone.
    Replay {
        /// Only this delivery stream (default: every stream).
        #[arg(long)]
        stream: Option<String>,
        /// Only rows with this reason_code (e.g. unknown_event_type).
        #[arg(long)]
        reason: Option<String>,
        /// First arrival date (the quarantine's dt), YYYY-MM-DD.
        #[arg(long)]
        from: Option<NaiveDate>,
        /// Last arrival date, YYYY-MM-DD, inclusive.
        #[arg(long)]
        to: Option<NaiveDate>,
        /// Say what would be accepted and what stays, with examples; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Summary format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Each job's last run and how fresh its output is.
    Status {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// What the runner keeps for itself in the warehouse, per ledger and kind: objects, bytes,
    /// the newest checkpoint, and what the next clean-up removes.
    State {
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
    /// The dashboard: the QuickSight sheets (Customer Monitoring, Jobs) plus Churn and
    /// Operations, served on 127.0.0.1, or written as one HTML file (--out). Every chart is a
    /// SQL file in sql/dashboard/.
    Dashboard {
        /// Port to listen on (0: any free port; the address is printed on stderr).
        #[arg(long, default_value_t = 8050)]
        port: u16,
        /// Address to bind (loopback by default: expose it on purpose).
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// Write the sheets, with their data, as one self-contained HTML file instead of serving.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The date of a --out report (default: the latest `tenants` snapshot).
        #[arg(long, requires = "out")]
        as_of: Option<NaiveDate>,
        /// The company a --out report's filtered charts show (default: all).
        #[arg(long, requires = "out", default_value = "")]
        company: String,
    },
    /// QuickSight over the published tables.
    #[command(subcommand)]
    Quicksight(QuicksightCommand),
    /// Ballista's scheduler and executor, for `[engine] kind = "ballista"` (README "Scaling out").
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Debug, Subcommand)]
pub enum QuicksightCommand {
    /// A CloudFormation template with an Athena data source and one QuickSight dataset per table
    /// of the catalog (columns and types from it); stdout, or --out FILE.
    Export {
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Start Ballista's scheduler: it plans stages and hands tasks to executors. Stops on
    /// SIGTERM or Ctrl-C.
    Scheduler {
        /// Address to bind (loopback by default: expose it on purpose).
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        #[arg(long, default_value_t = 50050)]
        port: u16,
        /// The host name executors and runners use for this scheduler (default: --host).
        #[arg(long)]
        external_host: Option<String>,
        /// An executor silent this long is dead and its tasks run elsewhere.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        executor_timeout: std::time::Duration,
    },
    /// Start a Ballista executor: it runs tasks and serves their shuffle output. Stops on
    /// SIGTERM or Ctrl-C.
    Executor {
        /// The scheduler, HOST:PORT or df://HOST:PORT.
        #[arg(long, default_value = "localhost:50050")]
        scheduler: String,
        /// Address to bind.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// The host name the scheduler, runners and other executors use for this executor
        /// (default: --host).
        #[arg(long)]
        external_host: Option<String>,
        /// Arrow Flight port: shuffle reads and results.
        #[arg(long, default_value_t = 50051)]
        port: u16,
        /// gRPC port: tasks from the scheduler.
        #[arg(long, default_value_t = 50052)]
        grpc_port: u16,
        /// Folder for shuffle files and spills (default: a temporary folder).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Tasks at once (default: the cores of this machine).
        #[arg(long)]
        concurrency: Option<usize>,
        /// Memory for the tasks' operators, spilling to --work-dir beyond it (e.g. "4GiB";
        /// default: most of the machine's).
        #[arg(long)]
        memory: Option<String>,
    },
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
    /// Where to write (required: no default folder is written behind your back): a folder or
    /// URL; drops go under <out>/raw/<stream>/, next to any already there.
    #[arg(long)]
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
    /// Buffer interval in seconds: an object closes after this long (Firehose allows 0-900;
    /// up to 3600 shapes drops like a producer that delivers one object per stream per hour, as
    /// `make bench`'s many-small-objects shape does).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(0..=3600))]
    pub buffer_seconds: u32,
    /// Also write Firehose error output, a stray file and a `.snappy` drop per stream.
    #[arg(long)]
    pub noise: bool,
    /// How records are laid out in an object: every framing the contract allows, or
    /// newline-delimited only.
    #[arg(long, value_enum, default_value_t = Framing::Mixed)]
    pub framing: Framing,
    /// What the tenants send: sessions and a few jobs in the churn model's ranges, or a
    /// job-heavy producer (about three events in four job events; for benchmarks).
    #[arg(long, value_enum, default_value_t = Mix::Churn)]
    pub mix: Mix,
}

pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("runner={default},warn")));
    // Colours only on a terminal: logs piped to a file or a collector stay plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// Runs a parsed command line; returns the exit code.
pub async fn run(cli: Cli) -> Result<i32> {
    let mut config = Config::load(cli.config.as_deref())?;
    let athena = match cli.engine {
        Some(Engine::Local) => {
            config.engine.kind = EngineKind::Local;
            false
        }
        Some(Engine::Ballista) => {
            config.engine.kind = EngineKind::Ballista;
            false
        }
        Some(Engine::Athena) if matches!(cli.command, Command::Query { .. }) => true,
        Some(Engine::Athena) => return Err(Error::Usage("--engine athena runs `runner query` only".into())),
        None => false,
    };
    if let Some(s) = cli.scheduler {
        crate::config::scheduler_addr(&s).map_err(|m| Error::Usage(format!("--scheduler: {m}")))?;
        config.engine.scheduler = s;
    }
    let simulate_to_s3 = matches!(&cli.command, Command::Simulate(a) if a.out.starts_with("s3"));
    // The cluster's processes read S3 with the standard chain whatever this config says, when
    // the environment points at AWS (on a laptop the chain's probes would only warn).
    let cluster_on_aws = matches!(cli.command, Command::Cluster(_))
        && (config.aws_region.is_some() || std::env::vars().any(|(k, _)| crate::aws::POINTS_AT_AWS.contains(&k.as_str())));
    if config.uses_aws() || simulate_to_s3 || cluster_on_aws {
        crate::aws::init(config.aws_region.as_deref()).await;
    }
    let mut stdout = std::io::stdout().lock();
    let out: &mut dyn Write = &mut stdout;
    let io = |e: std::io::Error| Error::Io { what: "writing the result".into(), source: e };
    let progress = Progress::new(!cli.quiet && std::io::stderr().is_terminal());
    match cli.command {
        Command::Model(ModelCommand::Train { data, out: path, seed, epochs }) => {
            let path = path.unwrap_or_else(|| config.scoring.model.clone());
            let decl = crate::model::train::train_file(&data, &path, seed, epochs)?;
            let t = decl.training.as_ref().expect("set by train");
            let (h, c) = (&t.holdout, &t.holdout.confusion);
            writeln!(
                out,
                "model {} {}: trained on {} rows, held out {}\n\
                 holdout accuracy {:.4}  precision {:.4}  recall {:.4}  AUC {:.4}\n\
                 confusion (churn is positive)  predicted churn  predicted stay\n\
                 \x20 actual churn                  {:>15}  {:>14}\n\
                 \x20 actual stay                   {:>15}  {:>14}\n\
                 training ranges: {}\nwrote {}",
                decl.id,
                decl.version,
                t.train_rows,
                t.holdout_rows,
                h.accuracy,
                h.precision,
                h.recall,
                h.auc,
                c.true_positive,
                c.false_negative,
                c.false_positive,
                c.true_negative,
                decl.profile.iter().map(|p| format!("{} {}..{}", p.feature, p.min, p.max)).collect::<Vec<_>>().join(", "),
                path.display()
            )
            .map_err(io)?;
            Ok(exit::OK)
        }
        Command::Model(ModelCommand::Bench { url, data, batch_rows, concurrency, format }) => {
            let model = Arc::new(crate::model::ModelDecl::load(&config.scoring.model)?);
            let rows = crate::model::train::read_companies_csv(&data)?;
            let results = crate::score::bench::run(model, &rows, &url, batch_rows, concurrency).await?;
            let ms = |v: f64| (v * 1000.0).round() / 1000.0;
            let batch = RecordBatch::try_from_iter(vec![
                ("mode", Arc::new(StringArray::from_iter_values(results.iter().map(|r| r.mode.clone()))) as ArrayRef),
                ("companies", Arc::new(UInt64Array::from_iter_values(results.iter().map(|r| r.companies as u64))) as ArrayRef),
                ("calls", Arc::new(UInt64Array::from_iter_values(results.iter().map(|r| r.calls as u64))) as ArrayRef),
                ("seconds", Arc::new(Float64Array::from_iter_values(results.iter().map(|r| ms(r.seconds))))),
                ("companies_per_s", Arc::new(Float64Array::from_iter_values(results.iter().map(|r| r.companies_per_s.round())))),
                ("p50_ms", Arc::new(Float64Array::from_iter_values(results.iter().map(|r| ms(r.p50_ms))))),
                ("p99_ms", Arc::new(Float64Array::from_iter_values(results.iter().map(|r| ms(r.p99_ms))))),
                ("mismatches", Arc::new(UInt64Array::from_iter_values(results.iter().map(|r| r.mismatches as u64))) as ArrayRef),
            ])
            .map_err(Error::arrow("building the benchmark table"))?;
            write_batches(out, format, &[batch])?;
            Ok(exit::OK)
        }
        Command::Model(ModelCommand::Serve { port, host, model, max_concurrency }) => {
            let path = model.unwrap_or_else(|| config.scoring.model.clone());
            let decl = crate::model::ModelDecl::load(&path)?;
            let (id, version) = (decl.id.clone(), decl.version.clone());
            crate::model::serve::serve(
                decl,
                std::net::SocketAddr::new(host, port),
                max_concurrency,
                |addr| notice(format!("serving model {id} {version} on http://{addr} (/ping, /invocations, /assessChurn)")),
                crate::model::serve::termination(),
            )
            .await?;
            Ok(exit::OK)
        }
        Command::Simulate(a) => {
            let url = crate::config::to_url(&config.base_dir, &a.out).map_err(Error::Usage)?;
            let dest = Location::parse(&url)?;
            let o = SimulateOptions {
                tenants: a.tenants,
                users_per_tenant: a.users_per_tenant,
                days: a.days,
                end_date: a.end_date.unwrap_or_else(|| Utc::now().date_naive()),
                seed: a.seed,
                late_share: share("late-share", a.late_share)?,
                duplicate_share: share("duplicate-share", a.duplicate_share)?,
                gzip_share: share("gzip-share", a.gzip_share)?,
                invalid_share: share("invalid-share", a.invalid_share)?,
                legacy_share: share("legacy-share", a.legacy_share)?,
                object_size: a.object_size.max(1),
                buffer_seconds: a.buffer_seconds,
                noise: a.noise,
                framing: a.framing,
                mix: a.mix,
            };
            let s = simulate(&dest, &o).await?;
            // Say so when the drops went where an ingest job reads.
            let base = dest.url.trim_end_matches('/');
            let read_by: Vec<String> = config
                .sources
                .iter()
                .filter(|(stream, url)| url.trim_end_matches('/') == format!("{base}/raw/{stream}"))
                .map(|(stream, _)| format!("`{stream}`"))
                .collect();
            let note = match read_by.is_empty() {
                true => String::new(),
                false => format!("; they are in the configured source of {}: the next ingest reads them", read_by.join(" and ")),
            };
            notice(format!(
                "wrote {} objects ({:.1} MB) to {}: {} events, {} records with {} duplicates and {} invalid{note}",
                s.objects,
                s.bytes as f64 / 1e6,
                dest.url,
                s.events,
                s.records,
                s.duplicates,
                s.invalid
            ));
            Ok(exit::OK)
        }
        Command::Validate => {
            let ws = Workspace::open(config)?;
            let v = crate::validate::validate(&ws).await?;
            notice(format!(
                "ok: config {}, {} jobs, {} streams in schemas/events.toml, {} schedules, engine {}",
                v.config_file, v.jobs, v.streams, v.schedules, v.engine
            ));
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
            force,
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
                let s = schedules.get(name)?;
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
                let runs =
                    run_jobs(&ws, &names, &RunOptions { at, dry_run, parallel, force, ..Default::default() }, &progress).await?;
                write_records(out, format, &runs, || summary_table(&runs))?;
                return Ok(exit::OK);
            };
            let opts = LockedRun {
                at: at.unwrap_or_else(Utc::now),
                period,
                holder: crate::pipeline::lease::holder_id(),
                ttl: schedules.lease_ttl,
                parallel,
                wait_when_held: false,
                force,
                finished: Default::default(),
            };
            // Ctrl-C or SIGTERM gives the leases back (the next run need not wait for them to
            // expire) and says what finished; a batch in flight is rolled forward or discarded
            // by the next run.
            let runs = tokio::select! {
                r = run_locked_dag(&ws, &names, &opts, &progress) => r?,
                _ = crate::pipeline::lease::interrupted() => {
                    let n = crate::pipeline::lease::release_held().await;
                    let finished = opts.finished.lock().expect("finished jobs").join(", ");
                    notice(format!(
                        "interrupted: {n} job lease(s) given back; finished: {}. Rerunning is safe",
                        if finished.is_empty() { "none" } else { &finished }
                    ));
                    return Ok(exit::INTERRUPTED);
                }
            };
            // After a failure the summary still says what ran and what was skipped, and why;
            // then the error.
            if runs.iter().any(|(_, l)| matches!(l, Locked::Ran(r) if r.is_err())) {
                let done: Vec<JobMetrics> = runs
                    .iter()
                    .filter_map(|(_, l)| if let Locked::Ran(r) = l { r.as_ref().as_ref().ok().cloned() } else { None })
                    .collect();
                write_records(out, format, &done, || summary_table(&done))?;
            }
            let runs = first_failure(runs)?;
            let mut held = false;
            let mut done = Vec::new();
            for (job, l) in runs {
                match l {
                    Locked::Ran(r) => done.push((*r)?),
                    Locked::Held(h) => {
                        held = true;
                        notice(format!(
                            "skipped `{job}`: another run holds its lock ({}, until {}); the next trigger catches up",
                            h.holder,
                            h.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        ));
                    }
                    Locked::AlreadyDone => {
                        notice(format!("skipped `{job}`: the period {} already ran", period.unwrap_or(opts.at)))
                    }
                }
            }
            write_records(out, format, &done, || summary_table(&done))?;
            Ok(if held { exit::LOCKED } else { exit::OK })
        }
        Command::Schedule(cmd) => {
            let ws = Workspace::open(config)?;
            let schedules = crate::schedule::Schedules::load(&ws.config.scheduler_dir, &ws.jobs)?;
            crate::schedule::cli::run(&ws, &schedules, cmd, out, &progress).await
        }
        Command::Backfill { job, from, to, format } => {
            let ws = Workspace::open(config)?;
            let runs = crate::pipeline::backfill(&ws, &job, from, to, &progress).await?;
            write_records(out, format, &runs, || summary_table(&runs))?;
            Ok(exit::OK)
        }
        Command::Replay { stream, reason, from, to, dry_run, format } => {
            if let (Some(f), Some(t)) = (from, to)
                && f > t
            {
                return Err(Error::Usage(format!("--from {f} is after --to {t}")));
            }
            let ws = Workspace::open(config)?;
            if let Some(r) = &reason
                && !crate::ingest::validate::reason::ALL.contains(&r.as_str())
            {
                let hint = crate::error::did_you_mean(r, crate::ingest::validate::reason::ALL.iter().copied());
                return Err(Error::Usage(format!("--reason {r} is not a quarantine reason code{hint}")));
            }
            let opts = crate::replay::ReplayOptions { streams: stream.into_iter().collect(), reason, from, to, dry_run };
            let run_id = crate::pipeline::new_run_id();
            let reports = crate::replay::run(&ws, &opts, &run_id).await?;
            for r in &reports {
                let days = r.days();
                let what = if dry_run { "would change" } else { "changed" };
                if !days.is_empty() {
                    notice(format!(
                        "{}: {what} {} (the incremental SQL jobs rebuild them on their next run)",
                        r.stream,
                        days.into_iter().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
            write_batches(out, format, &[crate::replay::to_batch(&reports, dry_run, &run_id)?])?;
            Ok(exit::OK)
        }
        Command::Status { format } => {
            let ws = Workspace::open(config)?;
            let batch = crate::runs::status(&ws).await?;
            write_batches(out, format, &[batch])?;
            Ok(exit::OK)
        }
        Command::State { format } => {
            let ws = Workspace::open(config)?;
            let rows = crate::state::report(&ws).await?;
            write_batches(out, format, &[crate::state::to_batch(&rows)?])?;
            Ok(exit::OK)
        }
        Command::History { job, limit, format } => {
            let ws = Workspace::open(config)?;
            ws.jobs.get(&job)?;
            let batches = crate::runs::history(&ws, &job, limit).await?;
            write_batches(out, format, &batches)?;
            Ok(exit::OK)
        }
        Command::Tables { format } => {
            let ws = Workspace::open(config)?;
            ws.check_format(false).await?;
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
            write_batches(out, format, &[batch])?;
            Ok(exit::OK)
        }
        Command::Describe { table, format } => {
            let ws = Workspace::open(config)?;
            ws.check_format(false).await?;
            let Some(t) = ws.catalog.table(&table).await? else {
                let names: Vec<String> = ws.catalog.tables().await?.into_iter().map(|t| t.name).collect();
                let hint = crate::error::did_you_mean(&table, names.iter().map(String::as_str));
                return Err(Error::Usage(format!("no table `{table}` in the catalog{hint}; tables: {}", names.join(", "))));
            };
            let parts = ws.catalog.partitions(&table).await?;
            if format == Format::Table {
                let span = match (parts.first(), parts.last()) {
                    (Some(a), Some(b)) => format!(" ({} .. {})", a.values.join(","), b.values.join(",")),
                    _ => String::new(),
                };
                writeln!(
                    out,
                    "table:       {}\ndescription: {}\nlocation:    {}\nformat:      {}\npartitions:  {}{span}",
                    t.name,
                    t.description,
                    t.location,
                    t.format,
                    parts.len()
                )
                .map_err(io)?;
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
            write_batches(out, format, &[batch])?;
            Ok(exit::OK)
        }
        Command::Publish { format } => {
            let ws = Workspace::open(config)?;
            ws.check_format(false).await?;
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
            write_batches(out, format, &[batch])?;
            if r.changed() {
                notice(format!("Glue database `{}` now matches the local catalog", glue.database()));
            } else {
                notice(format!("nothing changed: Glue database `{}` already matched the local catalog", glue.database()));
            }
            Ok(exit::OK)
        }
        Command::Dashboard { out: Some(path), as_of, company, .. } => {
            let ws = Workspace::open(config)?;
            let charts = crate::dashboard::load(&ws.config.sql_dir.join("dashboard"))?;
            let html = crate::dashboard::report(&ws, &charts, &crate::dashboard::Selection { as_of, company }).await?;
            std::fs::write(&path, html).map_err(|e| Error::Io { what: format!("writing {}", path.display()), source: e })?;
            notice(format!("wrote {} ({} charts)", path.display(), charts.len()));
            Ok(exit::OK)
        }
        Command::Dashboard { port, host, out: None, .. } => {
            let ws = Workspace::open(config)?;
            let charts = crate::dashboard::load(&ws.config.sql_dir.join("dashboard"))?;
            let n = charts.len();
            crate::dashboard::serve(
                ws,
                charts,
                std::net::SocketAddr::new(host, port),
                |addr| notice(format!("dashboard on http://{addr}/ ({n} charts; Ctrl-C to stop)")),
                crate::model::serve::termination(),
            )
            .await?;
            Ok(exit::OK)
        }
        Command::Quicksight(QuicksightCommand::Export { out: path }) => {
            let ws = Workspace::open(config)?;
            ws.check_format(false).await?;
            let tables = ws.catalog.tables().await?;
            if tables.is_empty() {
                return Err(Error::Usage("the catalog has no table yet: run `runner run --all` first".into()));
            }
            let t = crate::dashboard::quicksight::template(&tables, &ws.config.catalog.database, &ws.config.athena.workgroup)?;
            match path {
                Some(p) => {
                    std::fs::write(&p, t).map_err(|e| Error::Io { what: format!("writing {}", p.display()), source: e })?;
                    notice(format!("wrote {} ({} datasets)", p.display(), tables.len()));
                }
                None => out.write_all(t.as_bytes()).map_err(io)?,
            }
            Ok(exit::OK)
        }
        Command::Cluster(ClusterCommand::Scheduler { host, port, external_host, executor_timeout }) => {
            let o =
                crate::cluster::SchedulerOptions { bind: std::net::SocketAddr::new(host, port), external_host, executor_timeout };
            crate::cluster::run_scheduler(o, crate::model::serve::termination()).await?;
            Ok(exit::OK)
        }
        Command::Cluster(ClusterCommand::Executor {
            scheduler,
            host,
            external_host,
            port,
            grpc_port,
            work_dir,
            concurrency,
            memory,
        }) => {
            let memory = memory
                .map(|m| {
                    crate::config::parse_size(&m)
                        .ok_or_else(|| Error::Usage(format!("--memory `{m}` is not a size (e.g. \"4GiB\")")))
                })
                .transpose()?;
            let o = crate::cluster::ExecutorOptions {
                scheduler,
                bind_host: host,
                external_host,
                flight_port: port,
                grpc_port,
                work_dir,
                concurrency: concurrency.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)),
                memory,
            };
            crate::cluster::run_executor(o).await?;
            Ok(exit::OK)
        }
        Command::Query { sql, file, format } if athena => {
            let sql = read_sql(sql, file)?;
            if config.catalog.kind != crate::config::CatalogKind::Glue {
                return Err(Error::Usage(
                    "--engine athena reads the tables Glue knows: set [catalog] kind = \"glue\" (and [athena] workgroup, \
                     output_location)"
                        .into(),
                ));
            }
            let batches = crate::athena::query(&config, &sql).await?;
            write_batches(out, format, &batches)?;
            Ok(exit::OK)
        }
        Command::Query { sql, file, format } => {
            let sql = read_sql(sql, file)?;
            let ws = Workspace::open(config)?;
            let batches = crate::engine::query(&ws, &sql).await?;
            write_batches(out, format, &batches)?;
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
