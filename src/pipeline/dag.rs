//! Running jobs in dependency order, several at once where the DAG allows (`--parallel`).

use std::collections::HashSet;
use std::future::Future;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::error::Result;
use crate::job::{Job, Jobs};

/// Runs `run` for each job of `names`, up to `parallel` at once: a job starts once every job it
/// depends on (among `names`) has finished. Grouped jobs run only next to their group
/// ([`crate::job::JobKind::group`]): ingest jobs of different streams side by side (each has its
/// own ledger and quarantine partitions), compaction alone. With `parallel` 1 the jobs run one by one in `Jobs::order`. After a failure no
/// further job starts, the running ones finish (and are recorded), and the first error is
/// returned. A result for which `stop` holds also stops new jobs from starting, without an
/// error (a lease held elsewhere, for a caller that waits for it). Results come in
/// `Jobs::order`; a job that never started has none.
pub async fn run_dag<'a, T, F, Fut>(
    jobs: &'a Jobs,
    names: &[String],
    parallel: usize,
    stop: impl Fn(&T) -> bool,
    mut run: F,
) -> Result<Vec<T>>
where
    F: FnMut(&'a Job) -> Fut,
    Fut: Future<Output = Result<T>> + 'a,
{
    run_dag_with_tails(jobs, names, parallel, stop, |job| {
        let fut = run(job);
        async move { fut.await.map(|t| (t, None)) }
    })
    .await
}

/// What a job leaves to do once its dependents may start: recording the run, marking its
/// period done, giving its lease back. An error fails the whole run, as the job's would.
pub type Tail<'a> = futures::future::LocalBoxFuture<'a, Result<()>>;

/// [`run_dag`] for jobs that finish with a [`Tail`]: a job's dependents start as soon as its
/// work is done, while its tail runs beside them; every tail is done before this returns.
pub async fn run_dag_with_tails<'a, T, F, Fut>(
    jobs: &'a Jobs,
    names: &[String],
    parallel: usize,
    stop: impl Fn(&T) -> bool,
    mut run: F,
) -> Result<Vec<T>>
where
    F: FnMut(&'a Job) -> Fut,
    Fut: Future<Output = Result<(T, Option<Tail<'a>>)>> + 'a,
{
    let mut tails: FuturesUnordered<Tail<'a>> = FuturesUnordered::new();
    let names = jobs.with_state_jobs(names);
    let order = jobs.order(&names)?;
    let group = |i: usize| order[i].kind.group();
    let mut stopped = false;
    let mut results: Vec<Option<T>> = order.iter().map(|_| None).collect();
    let mut started = vec![false; order.len()];
    let mut finished: HashSet<&str> = HashSet::new();
    let mut running = FuturesUnordered::new();
    let mut first_error = None;
    // Indices of the jobs running now.
    let mut now: Vec<usize> = Vec::new();
    loop {
        let mut start: Vec<usize> = Vec::new();
        if first_error.is_none() && !stopped {
            for (i, job) in order.iter().enumerate() {
                if started[i] || now.len() + start.len() >= parallel.max(1) {
                    continue;
                }
                if !job.depends_on.iter().all(|d| finished.contains(d.as_str()) || !names.contains(d)) {
                    continue;
                }
                let busy: Vec<Option<&str>> = now.iter().chain(&start).map(|j| group(*j)).collect();
                match group(i) {
                    // A grouped job starts when only its group runs, and later jobs wait for
                    // it, so the order stays the DAG's.
                    Some(g) if busy.iter().all(|b| *b == Some(g)) => start.push(i),
                    Some(_) => break,
                    // An ungrouped job starts when no grouped job runs.
                    None if busy.iter().all(Option::is_none) => start.push(i),
                    None => {}
                }
            }
        }
        for i in start {
            started[i] = true;
            now.push(i);
            let fut = run(order[i]);
            running.push(async move { (i, fut.await) });
        }
        let next = loop {
            if tails.is_empty() {
                break running.next().await;
            }
            match futures::future::select(running.next(), tails.next()).await {
                futures::future::Either::Left((r, _)) => break r,
                futures::future::Either::Right((Some(Err(e)), _)) => {
                    first_error.get_or_insert(e);
                }
                futures::future::Either::Right(_) => {}
            }
        };
        let Some((i, result)) = next else { break };
        finished.insert(order[i].name.as_str());
        now.retain(|j| *j != i);
        match result {
            Ok((t, tail)) => {
                stopped |= stop(&t);
                results[i] = Some(t);
                tails.extend(tail);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    while let Some(t) = tails.next().await {
        if let Err(e) = t {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(results.into_iter().flatten().collect()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::job::{IngestJob, JobKind, SqlJob};

    fn job(name: &str, ingest: bool, depends_on: &[&str]) -> (String, Job) {
        let kind = if ingest {
            JobKind::Ingest(IngestJob { stream: name.to_string() })
        } else {
            JobKind::Sql(Box::new(SqlJob {
                file: Default::default(),
                sql: String::new(),
                inputs: Vec::new(),
                output: name.to_string(),
                partition_by: Vec::new(),
                mode: Default::default(),
                incremental: false,
                cumulative: false,
                checks: Default::default(),
            }))
        };
        let depends_on = depends_on.iter().map(|d| d.to_string()).collect();
        let j = Job {
            name: name.into(),
            description: String::new(),
            file: Default::default(),
            kind,
            depends_on,
            reads_published: Vec::new(),
        };
        (name.to_string(), j)
    }

    fn dag() -> Jobs {
        Jobs {
            jobs: [
                job("ingest_a", true, &[]),
                job("ingest_b", true, &[]),
                job("x", false, &["ingest_a"]),
                job("y", false, &["ingest_a"]),
                job("z", false, &["x", "y"]),
            ]
            .into_iter()
            .collect(),
        }
    }

    /// Runs the DAG with jobs that take a little while; returns (results, start/end log).
    async fn run(jobs: &Jobs, parallel: usize, failing: &str) -> (Result<Vec<String>>, Vec<String>) {
        let names: Vec<String> = jobs.jobs.keys().cloned().collect();
        let log = Mutex::new(Vec::new());
        let result = run_dag(
            jobs,
            &names,
            parallel,
            |_| false,
            |j| {
                let log = &log;
                async move {
                    log.lock().unwrap().push(format!("+{}", j.name));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    log.lock().unwrap().push(format!("-{}", j.name));
                    if j.name == failing { Err(crate::Error::Failed(format!("{} failed", j.name))) } else { Ok(j.name.clone()) }
                }
            },
        )
        .await;
        (result, log.into_inner().unwrap())
    }

    fn overlapping(log: &[String]) -> Vec<Vec<String>> {
        // The sets of jobs running at the same time, as they grow.
        let mut now: Vec<String> = Vec::new();
        let mut out = Vec::new();
        for e in log {
            let name = e[1..].to_string();
            if e.starts_with('+') {
                now.push(name);
                out.push(now.clone());
            } else {
                now.retain(|n| *n != name);
            }
        }
        out
    }

    #[tokio::test]
    async fn independent_jobs_overlap_ingests_overlap_only_each_other_and_dependents_wait() {
        let jobs = dag();
        let (result, log) = run(&jobs, 2, "").await;
        assert_eq!(result.unwrap(), ["ingest_a", "ingest_b", "x", "y", "z"]);
        let sets = overlapping(&log);
        assert!(sets.contains(&vec!["x".to_string(), "y".to_string()]), "x and y run together: {log:?}");
        assert!(sets.contains(&vec!["ingest_a".to_string(), "ingest_b".to_string()]), "the streams ingest together: {log:?}");
        for s in &sets {
            assert!(s.len() <= 2, "{log:?}");
            if s.iter().any(|n| n.starts_with("ingest")) {
                assert!(s.iter().all(|n| n.starts_with("ingest")), "ingest runs only next to ingest: {log:?}");
            }
        }
        let pos = |e: &str| log.iter().position(|l| l == e).unwrap();
        assert!(pos("+z") > pos("-x") && pos("+z") > pos("-y"), "{log:?}");
        assert!(pos("+x") > pos("-ingest_a"), "{log:?}");
    }

    #[tokio::test]
    async fn a_dependent_starts_while_its_upstreams_tail_runs_and_every_tail_ends_first() {
        let jobs = dag();
        let names: Vec<String> = jobs.jobs.keys().cloned().collect();
        let log = Mutex::new(Vec::new());
        let run = |failing_tail: &'static str| {
            let log = &log;
            run_dag_with_tails(
                &jobs,
                &names,
                1,
                |_| false,
                move |j| async move {
                    log.lock().unwrap().push(format!("+{}", j.name));
                    let tail: Tail<'_> = Box::pin(async move {
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        log.lock().unwrap().push(format!("tail {}", j.name));
                        if j.name == failing_tail { Err(crate::Error::Failed(format!("{} tail failed", j.name))) } else { Ok(()) }
                    });
                    Ok((j.name.clone(), Some(tail)))
                },
            )
        };
        let result = run("").await;
        assert_eq!(result.unwrap(), ["ingest_a", "ingest_b", "x", "y", "z"]);
        let log_now = log.lock().unwrap().clone();
        let pos = |e: &str| log_now.iter().position(|l| l == e).unwrap();
        assert!(pos("+x") < pos("tail ingest_a"), "x starts before ingest_a's tail ends: {log_now:?}");
        assert_eq!(log_now.iter().filter(|l| l.starts_with("tail")).count(), 5, "every tail ran before the return: {log_now:?}");
        log.lock().unwrap().clear();
        let failed = run("y").await;
        assert!(matches!(&failed, Err(crate::Error::Failed(m)) if m.contains("y tail")), "{failed:?}");
    }

    #[tokio::test]
    async fn one_at_a_time_is_the_dag_order() {
        let jobs = dag();
        let (result, log) = run(&jobs, 1, "").await;
        assert_eq!(result.unwrap(), ["ingest_a", "ingest_b", "x", "y", "z"]);
        assert_eq!(
            log,
            ["+ingest_a", "-ingest_a", "+ingest_b", "-ingest_b", "+x", "-x", "+y", "-y", "+z", "-z"].map(String::from)
        );
    }

    #[tokio::test]
    async fn a_stopping_result_starts_nothing_new_without_an_error() {
        let jobs = dag();
        let names: Vec<String> = jobs.jobs.keys().cloned().collect();
        let done = run_dag(&jobs, &names, 1, |n: &String| n == "ingest_b", |j| async move { Ok(j.name.clone()) }).await;
        assert_eq!(done.unwrap(), ["ingest_a", "ingest_b"], "nothing starts after ingest_b");
    }

    #[tokio::test]
    async fn after_a_failure_running_jobs_finish_and_nothing_new_starts() {
        let jobs = dag();
        let (result, log) = run(&jobs, 2, "x").await;
        assert!(result.unwrap_err().to_string().contains("x failed"));
        assert!(log.contains(&"-y".to_string()), "y was running and finishes: {log:?}");
        assert!(!log.contains(&"+z".to_string()), "{log:?}");
    }
}
