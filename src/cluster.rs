//! Scale-out on Apache DataFusion Ballista, DataFusion's own distributed engine.
//!
//! With `[engine] kind = "ballista"` the runner still plans every SQL job, export dataset and
//! `runner query` itself (the same catalog, the same tables, the same parameters); the logical
//! plan goes to Ballista's scheduler, which cuts it into stages its executors run with a disk
//! shuffle. Results stream back to the runner, which writes, audits and publishes them exactly
//! as it does for a local run: outputs are aggregates, small next to their inputs, and the
//! write-audit-publish steps (the version folder, the audit read-back, the catalog swap) stay in
//! one place. Ingest, scoring, the ledger and compaction never go to the cluster: they are
//! object-store and HTTP work with exactly-once bookkeeping.
//!
//! `runner cluster scheduler` and `runner cluster executor` are thin starts of Ballista's own
//! scheduler and executor, built from its crates, with the runner's object stores
//! ([`RunnerStores`]: local files, and S3 through the standard AWS credential chain, as the
//! runner itself reads them).

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ballista::prelude::SessionContextExt;
use ballista_core::extension::SessionConfigExt;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use object_store::ObjectStore;
use url::Url;

use crate::config::{EngineKind, EngineSettings, scheduler_addr};
use crate::error::{Error, Result};

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A session whose queries run on the Ballista cluster of `engine`. Before anything is planned:
/// the tables must be where the executors can read them, and the scheduler must answer.
pub async fn remote_context(engine: &EngineSettings, config: SessionConfig, warehouse: &str) -> Result<SessionContext> {
    debug_assert_eq!(engine.kind, EngineKind::Ballista);
    let (host, port) = preflight(engine, warehouse).await?;
    let runtime = RuntimeEnvBuilder::new()
        .with_object_store_registry(Arc::new(RunnerStores::default()))
        .build_arc()
        .map_err(Error::df("starting the query engine"))?;
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config.upgrade_for_ballista())
        .with_runtime_env(runtime)
        .build();
    SessionContext::remote_with_state(&format!("df://{host}:{port}"), state)
        .await
        .map_err(|e| Error::Failed(format!("connecting to the Ballista scheduler at {}: {e}", engine.scheduler)))
}

/// The checks before anything goes to the cluster of `engine` (every Ballista session, and
/// `runner validate`): the warehouse is readable by its executors and the scheduler answers.
/// Returns the scheduler's host and port.
pub async fn preflight(engine: &EngineSettings, warehouse: &str) -> Result<(String, u16)> {
    let (host, port) = scheduler_addr(&engine.scheduler).map_err(Error::Usage)?;
    check_readable(&engine.scheduler, &host, warehouse)?;
    check_reachable(&engine.scheduler, &host, port).await?;
    Ok((host, port))
}

/// Ballista's executors read the tables themselves. A local folder is readable by executors on
/// this machine only, and an executor that cannot see a folder lists it as empty: the query
/// would answer from no data instead of failing. So a local warehouse with a scheduler that is
/// not on this machine is refused.
pub fn check_readable(scheduler: &str, host: &str, warehouse: &str) -> Result<()> {
    if warehouse.starts_with("file:") && !is_loopback(host) {
        return Err(Error::Usage(format!(
            "the warehouse {warehouse} is a local folder, which the executors of the Ballista cluster at {scheduler} cannot \
             read (they would see empty tables): put the warehouse on S3 (warehouse = \"s3://BUCKET/PREFIX/\" in runner.toml), \
             run the scheduler and its executors on this machine (--scheduler df://127.0.0.1:50050), or use --engine local"
        )));
    }
    Ok(())
}

/// A TCP connection to the scheduler within 5 s, so that a wrong address or a stopped cluster
/// is one clear error before any job starts (Ballista's client retries for much longer).
async fn check_reachable(scheduler: &str, host: &str, port: u16) -> Result<()> {
    let fail = |why: String| {
        Error::Failed(format!(
            "cannot reach the Ballista scheduler at {scheduler} ({why}): start it with `runner cluster scheduler --port {port}`, \
             set [engine] scheduler in runner.toml (or --scheduler), or use --engine local"
        ))
    };
    let addrs: Vec<SocketAddr> =
        (host, port).to_socket_addrs().map_err(|e| fail(format!("the host does not resolve: {e}")))?.collect();
    let mut last = String::from("no address");
    for addr in addrs {
        match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "no answer within 5 s".into(),
        }
    }
    Err(fail(last))
}

/// Whether Ballista can send `plan` to its scheduler: every table and function in it must have a
/// wire form. `runner validate` checks each job's plan with it, so a plan that only runs locally
/// is found before a scheduled run.
pub fn check_plan_ships(plan: &datafusion::logical_expr::LogicalPlan) -> std::result::Result<(), String> {
    let codec = ballista_core::serde::BallistaLogicalExtensionCodec::default();
    datafusion_proto::bytes::logical_plan_to_bytes_with_extension_codec(plan, &codec)
        .map(|_| ())
        .map_err(|e| format!("the plan cannot be sent to a Ballista cluster: {}", e.strip_backtrace()))
}

/// The object stores of the scheduler and the executors: local files, and S3 buckets opened
/// the way the runner opens them (`aws::s3_store`: the standard credential chain, the
/// endpoint override of emulators), one client per bucket.
#[derive(Debug, Default)]
pub struct RunnerStores {
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl RunnerStores {
    fn key(url: &Url) -> String {
        format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""))
    }
}

impl ObjectStoreRegistry for RunnerStores {
    fn register_store(&self, url: &Url, store: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        self.stores.lock().expect("store registry").insert(Self::key(url), store)
    }

    fn deregister_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        self.stores
            .lock()
            .expect("store registry")
            .remove(&Self::key(url))
            .ok_or_else(|| datafusion::error::DataFusionError::Execution(format!("no object store is registered for {url}")))
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        let key = Self::key(url);
        let mut stores = self.stores.lock().expect("store registry");
        if let Some(s) = stores.get(&key) {
            return Ok(s.clone());
        }
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "" | "file" => Arc::new(object_store::local::LocalFileSystem::new()),
            "s3" | "s3a" => {
                let bucket = url.host_str().unwrap_or_default();
                Arc::new(crate::aws::s3_store(bucket).map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?)
            }
            other => {
                return Err(datafusion::error::DataFusionError::Execution(format!(
                    "the runner's cluster reads file:// and s3:// locations, not {other}:// ({url})"
                )));
            }
        };
        stores.insert(key, store.clone());
        Ok(store)
    }
}

fn runtime_env(temp_dir: Option<String>) -> datafusion::error::Result<Arc<RuntimeEnv>> {
    let mut b = RuntimeEnvBuilder::new().with_object_store_registry(Arc::new(RunnerStores::default()));
    if let Some(d) = temp_dir {
        b = b.with_temp_file_path(d);
    }
    b.build_arc()
}

/// `runner cluster scheduler`.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    pub bind: SocketAddr,
    /// The host executors and clients are told to use for this scheduler.
    pub external_host: Option<String>,
    /// An executor that sent no heartbeat for this long is dead: its tasks run elsewhere.
    pub executor_timeout: Duration,
}

/// Runs Ballista's scheduler until `shutdown` completes.
pub async fn run_scheduler(o: SchedulerOptions, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    use ballista_scheduler::cluster::BallistaCluster;
    use ballista_scheduler::config::SchedulerConfig;
    let secs = o.executor_timeout.as_secs().max(2);
    let config = SchedulerConfig {
        bind_host: o.bind.ip().to_string(),
        bind_port: o.bind.port(),
        external_host: o.external_host.unwrap_or_else(|| o.bind.ip().to_string()),
        executor_timeout_seconds: secs,
        expire_dead_executor_interval_seconds: (secs / 3).clamp(1, 15),
        no_executors_grace_period_seconds: secs,
        override_session_builder: Some(Arc::new(|config: SessionConfig| {
            let state = ballista_core::utils::default_session_builder(config)?;
            Ok(SessionStateBuilder::new_from_existing(state).with_runtime_env(runtime_env(None)?).build())
        })),
        ..Default::default()
    };
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| Error::Failed(format!("starting the Ballista scheduler: {e}")))?;
    crate::output::notice(format!(
        "Ballista scheduler listening on df://{} (runner [engine] scheduler = \"df://{}:{}\")",
        o.bind,
        config.external_host,
        o.bind.port()
    ));
    let server = ballista_scheduler::scheduler_process::start_server(cluster, o.bind, Arc::new(config));
    tokio::select! {
        r = server => r.map_err(|e| Error::Failed(format!("the Ballista scheduler on {} stopped: {e}", o.bind))),
        _ = shutdown => Ok(()),
    }
}

/// `runner cluster executor`.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler, `host:port`.
    pub scheduler: String,
    pub bind_host: String,
    /// The host the scheduler, the client and other executors reach this executor on.
    pub external_host: Option<String>,
    /// Arrow Flight: shuffle reads by other executors, results read by the runner.
    pub flight_port: u16,
    /// gRPC: tasks pushed by the scheduler.
    pub grpc_port: u16,
    /// Shuffle files and spills.
    pub work_dir: Option<std::path::PathBuf>,
    /// Tasks run at once.
    pub concurrency: usize,
    /// Memory for the tasks' operators (spilling beyond it); `None`: a share of the host's.
    pub memory: Option<u64>,
}

/// Runs Ballista's executor until SIGTERM or Ctrl-C.
pub async fn run_executor(o: ExecutorOptions) -> Result<()> {
    use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
    let (scheduler_host, scheduler_port) = scheduler_addr(&o.scheduler).map_err(Error::Usage)?;
    let work_dir = match &o.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::Io { what: format!("creating the work dir {}", d.display()), source: e })?;
            Some(d.display().to_string())
        }
        None => None,
    };
    let external_host = o.external_host.clone().or_else(|| (o.bind_host != "0.0.0.0").then(|| o.bind_host.clone()));
    let temp = work_dir.clone();
    let config = ExecutorProcessConfig {
        bind_host: o.bind_host.clone(),
        external_host,
        port: o.flight_port,
        grpc_port: o.grpc_port,
        scheduler_host,
        scheduler_port,
        scheduler_connect_timeout_seconds: 30,
        vcores: o.concurrency.max(1),
        work_dir,
        memory_pool_size: o.memory,
        // Heartbeats often enough for a scheduler that declares an executor dead after seconds.
        executor_heartbeat_interval_seconds: 2,
        override_runtime_producer: Some(Arc::new(move |_config: &SessionConfig| runtime_env(temp.clone()))),
        ..Default::default()
    };
    crate::output::notice(format!(
        "Ballista executor: flight {}:{}, grpc {}:{}, scheduler {}",
        o.bind_host, o.flight_port, o.bind_host, o.grpc_port, o.scheduler
    ));
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| Error::Failed(format!("the Ballista executor stopped: {e} (scheduler {})", o.scheduler)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_warehouse_is_refused_for_a_remote_cluster_only() {
        assert!(check_readable("df://127.0.0.1:50050", "127.0.0.1", "file:///w/").is_ok());
        assert!(check_readable("df://localhost:50050", "localhost", "file:///w/").is_ok());
        assert!(check_readable("df://10.0.0.5:50050", "10.0.0.5", "s3://b/w/").is_ok());
        let e = check_readable("df://10.0.0.5:50050", "10.0.0.5", "file:///w/").unwrap_err().to_string();
        assert!(e.contains("file:///w/") && e.contains("s3://") && e.contains("--engine local"), "{e}");
    }
}
