//! `runner model bench`: scores labelled companies against a running model server through the
//! scoring job's own client, batched (`/invocations`) and one request per company
//! (`/assessChurn`, the seed's pattern), and prints companies/s and per-call latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::endpoint::{Endpoint, Item};
use crate::config::{EndpointKind, ScoringSettings};
use crate::error::{Error, Result};
use crate::model::ModelDecl;
use crate::model::train::Labelled;

#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    pub mode: String,
    pub companies: usize,
    pub calls: usize,
    pub seconds: f64,
    pub companies_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Predictions that differ from the in-process model (must be 0).
    pub mismatches: usize,
}

/// Runs both patterns against `url` with `concurrency` calls in flight.
pub async fn run(
    model: Arc<ModelDecl>,
    companies: &[Labelled],
    url: &str,
    batch_rows: usize,
    concurrency: usize,
) -> Result<Vec<BenchResult>> {
    let items: Vec<Item> = companies
        .iter()
        .map(|l| {
            let row = model.row(&l.company).map_err(|e| Error::Usage(format!("{}: {e}", l.company.company_id)))?;
            let json = serde_json::to_value(&l.company).map_err(|e| Error::Internal(e.to_string()))?;
            Ok(Item { company_id: l.company.company_id.clone(), json, row })
        })
        .collect::<Result<_>>()?;
    let mut out = Vec::new();
    for (mode, kind, url, rows) in [
        ("batched /invocations", EndpointKind::Container, url.to_string(), batch_rows),
        ("one per company /assessChurn", EndpointKind::Apigateway, format!("{}/assessChurn", url.trim_end_matches('/')), 1),
    ] {
        let settings = ScoringSettings {
            endpoint: kind,
            url: Some(url),
            model: Default::default(),
            api_key_env: None,
            api_key_file: None,
            timeout: Duration::from_secs(30),
            concurrency,
            batch_rows: rows,
            max_attempts: 1,
            backoff: Duration::ZERO,
            breaker_failures: u32::MAX,
            endpoint_name: None,
            region: None,
            sigv4: false,
            drift: Default::default(),
        };
        let endpoint = Arc::new(Endpoint::new(&settings, model.clone()).await?);
        let started = Instant::now();
        let results: Vec<_> = futures::stream::iter(items.chunks(endpoint.batch_size(&items)))
            .map(|chunk| {
                let endpoint = endpoint.clone();
                async move {
                    let t = Instant::now();
                    let r = endpoint.score(chunk).await;
                    (chunk, r, t.elapsed())
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let seconds = started.elapsed().as_secs_f64();
        let mut latencies: Vec<Duration> = Vec::with_capacity(results.len());
        let mut mismatches = 0;
        for (chunk, r, d) in &results {
            let preds = r.as_ref().map_err(|(c, m)| Error::Failed(format!("{mode}: {c}: {m}")))?;
            for (item, p) in chunk.iter().zip(preds) {
                mismatches += usize::from(model.predict(&item.row.values).predicted_label != p.predicted_label);
            }
            latencies.push(*d);
        }
        latencies.sort();
        let pct = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
        out.push(BenchResult {
            mode: mode.to_string(),
            companies: items.len(),
            calls: results.len(),
            seconds,
            companies_per_s: items.len() as f64 / seconds,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            mismatches,
        });
    }
    Ok(out)
}
