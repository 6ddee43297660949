//! Calling the churn endpoint reliably: bounded attempts with exponential backoff and full
//! jitter on timeouts, connection errors, 429 and 5xx (a `Retry-After` header wins), and a
//! circuit breaker that stops a run from calling an endpoint that keeps failing.
//!
//! A call scores one batch of companies (one company for API Gateway). Its result is either a
//! prediction per company, in order, or a reason why the whole batch failed for good; the job
//! records that reason on each company of the batch. Keys never appear in a reason or a log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use reqwest::StatusCode;

use crate::config::{EndpointKind, ScoringSettings};
use crate::error::{Error, Result};
use crate::model::{ModelDecl, Prediction, Row, parse_churn_answer, parse_predictions};

/// The longest wait a `Retry-After` header is honoured for (a bigger one is capped).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Backoff never waits longer than this between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A company ready to score: its id, the Company JSON fields and its model row.
#[derive(Debug, Clone)]
pub struct Item {
    pub company_id: String,
    pub json: serde_json::Value,
    pub row: Row,
}

/// Why an attempt failed, and whether another attempt may succeed.
#[derive(Debug, Clone)]
struct Failure {
    /// Short code for the summary: `timeout`, `connect`, `http_429`, `http_503`, `bad_answer`...
    code: String,
    message: String,
    retryable: bool,
    retry_after: Option<Duration>,
}

/// Counters shared by every call of a run.
#[derive(Debug, Default)]
pub struct CallStats {
    pub calls: AtomicU64,
    pub retries: AtomicU64,
}

/// AWS parts, loaded through the standard credential chain only when an endpoint needs them.
struct Aws {
    sagemaker: Option<aws_sdk_sagemakerruntime::Client>,
    credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    region: String,
}

pub struct Endpoint {
    kind: EndpointKind,
    aws: Option<Aws>,
    model: Arc<ModelDecl>,
    http: reqwest::Client,
    url: String,
    api_key: Option<String>,
    settings: ScoringSettings,
    consecutive_failures: AtomicU32,
    open: AtomicBool,
    pub stats: CallStats,
}

impl std::fmt::Debug for Endpoint {
    // The API key stays out of every Debug print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("kind", &self.kind).field("url", &self.url).finish_non_exhaustive()
    }
}

impl Endpoint {
    pub async fn new(settings: &ScoringSettings, model: Arc<ModelDecl>) -> Result<Endpoint> {
        let api_key = match (&settings.api_key_env, &settings.api_key_file) {
            (Some(var), _) => Some(std::env::var(var).map_err(|_| {
                Error::Usage(format!("scoring.api_key_env names `{var}`, which is not set: export it or use api_key_file"))
            })?),
            (None, Some(file)) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| Error::Io { what: format!("reading the API key file {}", file.display()), source: e })?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .pool_max_idle_per_host(settings.concurrency)
            .build()
            .map_err(|e| Error::Internal(format!("building the HTTP client: {e}")))?;
        let url = settings.url.clone().unwrap_or_default();
        let url = match settings.endpoint {
            EndpointKind::Container => format!("{}/invocations", url.trim_end_matches('/')),
            _ => url,
        };
        let aws =
            if settings.endpoint == EndpointKind::Sagemaker || settings.sigv4 { Some(load_aws(settings).await?) } else { None };
        Ok(Endpoint {
            kind: settings.endpoint,
            aws,
            model,
            http,
            url,
            api_key,
            settings: settings.clone(),
            consecutive_failures: AtomicU32::new(0),
            open: AtomicBool::new(false),
            stats: CallStats::default(),
        })
    }

    /// What the scores record as the endpoint: the kind and URL (never a key).
    pub fn describe(&self) -> String {
        let target = match self.kind {
            EndpointKind::Local => return "local".into(),
            EndpointKind::Sagemaker => self.settings.endpoint_name.as_deref().unwrap_or_default(),
            EndpointKind::Container | EndpointKind::Apigateway => &self.url,
        };
        format!("{} {target}", self.kind.name())
    }

    /// Companies per call: `batch_rows`, fewer if that many of the longest row would not fit
    /// SageMaker's 6 MB payload limit; one for API Gateway.
    pub fn batch_size(&self, items: &[Item]) -> usize {
        match self.kind {
            EndpointKind::Apigateway => 1,
            EndpointKind::Local => self.settings.batch_rows,
            EndpointKind::Container | EndpointKind::Sagemaker => {
                let longest = items.iter().map(|i| ModelDecl::csv_line(&i.row).len() + 1).max().unwrap_or(1);
                self.settings.batch_rows.min((crate::model::serve::MAX_PAYLOAD_BYTES / longest).max(1))
            }
        }
    }

    /// Scores a batch: one prediction per item in order (`score` is NaN when the endpoint
    /// answers a label only), or `(code, message)` when it failed for good.
    pub async fn score(&self, items: &[Item]) -> std::result::Result<Vec<Prediction>, (String, String)> {
        if self.kind == EndpointKind::Local {
            self.stats.calls.fetch_add(1, Ordering::Relaxed);
            return Ok(items.iter().map(|i| self.model.predict(&i.row.values)).collect());
        }
        let mut attempt = 0u32;
        loop {
            if self.open.load(Ordering::Relaxed) {
                return Err((
                    "circuit_open".into(),
                    format!(
                        "not called: the endpoint failed {} calls in a row, so this run stopped calling it",
                        self.settings.breaker_failures
                    ),
                ));
            }
            attempt += 1;
            self.stats.calls.fetch_add(1, Ordering::Relaxed);
            let failure = match self.attempt(items).await {
                Ok(p) => {
                    self.consecutive_failures.store(0, Ordering::Relaxed);
                    return Ok(p);
                }
                Err(f) => f,
            };
            if failure.retryable {
                let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= self.settings.breaker_failures && !self.open.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        endpoint = %self.describe(),
                        "circuit open: {n} calls failed in a row (last: {}); the remaining companies are recorded as errors",
                        failure.message
                    );
                }
            }
            if !failure.retryable || attempt >= self.settings.max_attempts {
                let msg = if failure.retryable {
                    format!("{} (gave up after {attempt} attempts)", failure.message)
                } else {
                    failure.message
                };
                return Err((failure.code, msg));
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            let wait = failure.retry_after.unwrap_or_else(|| self.backoff(attempt));
            tracing::debug!(code = %failure.code, attempt, ?wait, "retrying a scoring call");
            tokio::time::sleep(wait).await;
        }
    }

    /// Full jitter: uniform in [0, base * 2^(attempt-1)], capped.
    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self.settings.backoff.saturating_mul(1u32 << (attempt - 1).min(16)).min(MAX_BACKOFF);
        let ms = cap.as_millis() as u64;
        Duration::from_millis(if ms == 0 { 0 } else { rand::rng().random_range(0..=ms) })
    }

    async fn attempt(&self, items: &[Item]) -> std::result::Result<Vec<Prediction>, Failure> {
        let csv = || {
            let mut body = String::with_capacity(items.len() * 64);
            for i in items {
                body.push_str(&ModelDecl::csv_line(&i.row));
                body.push('\n');
            }
            body
        };
        let req = match self.kind {
            EndpointKind::Container => {
                self.http.post(&self.url).header("content-type", "text/csv").header("accept", "application/json").body(csv())
            }
            EndpointKind::Apigateway => {
                let body = serde_json::to_vec(&items[0].json).unwrap_or_default();
                let mut headers: Vec<(String, String)> = vec![("content-type".into(), "application/json".into())];
                if let Some(k) = &self.api_key {
                    headers.push(("x-api-key".into(), k.clone()));
                }
                if let Some(aws) = &self.aws {
                    headers.extend(sigv4_headers(aws, &self.url, &headers, &body).await?);
                }
                let mut r = self.http.post(&self.url).body(body);
                for (k, v) in headers {
                    r = r.header(k, v);
                }
                r
            }
            EndpointKind::Sagemaker => return self.invoke_sagemaker(items, csv()).await,
            EndpointKind::Local => unreachable!("local scoring makes no call"),
        };
        let resp = req.send().await.map_err(transport_failure)?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        let body = resp.bytes().await.map_err(transport_failure)?;
        if !status.is_success() {
            let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            let head: String =
                String::from_utf8_lossy(&body[..body.len().min(200)]).chars().filter(|c| !c.is_control()).collect();
            return Err(Failure {
                code: format!("http_{}", status.as_u16()),
                message: format!("HTTP {status}: {head}"),
                retryable,
                retry_after,
            });
        }
        let parsed = match self.kind {
            EndpointKind::Container => parse_predictions(&body, items.len()),
            _ => parse_churn_answer(&body).map(|churn| vec![Prediction { score: f64::NAN, predicted_label: u8::from(churn) }]),
        };
        // A malformed answer may come from a proxy in trouble: worth another attempt.
        parsed.map_err(|m| Failure { code: "bad_answer".into(), message: m, retryable: true, retry_after: None })
    }
}

impl Endpoint {
    /// One `InvokeEndpoint` call through the AWS SDK (its own retries are off: ours count).
    async fn invoke_sagemaker(&self, items: &[Item], body: String) -> std::result::Result<Vec<Prediction>, Failure> {
        use aws_sdk_sagemakerruntime::error::SdkError;
        let client = self.aws.as_ref().and_then(|a| a.sagemaker.as_ref()).expect("loaded for sagemaker");
        let name = self.settings.endpoint_name.clone().unwrap_or_default();
        let sent = client
            .invoke_endpoint()
            .endpoint_name(name)
            .content_type("text/csv")
            .accept("application/json")
            .body(aws_sdk_sagemakerruntime::primitives::Blob::new(body.into_bytes()))
            .send()
            .await;
        match sent {
            Ok(out) => {
                let bytes = out.body().map(|b| b.as_ref().to_vec()).unwrap_or_default();
                parse_predictions(&bytes, items.len()).map_err(|m| Failure {
                    code: "bad_answer".into(),
                    message: m,
                    retryable: true,
                    retry_after: None,
                })
            }
            Err(SdkError::ServiceError(se)) => {
                let status = se.raw().status().as_u16();
                let retry_after = se
                    .raw()
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
                let err = se.err();
                // ModelError (424) wraps the container's own status: retry what it would.
                let original = match err {
                    aws_sdk_sagemakerruntime::operation::invoke_endpoint::InvokeEndpointError::ModelError(m) => {
                        m.original_status_code().map(|c| c as u16)
                    }
                    _ => None,
                };
                let effective = original.unwrap_or(status);
                Err(Failure {
                    code: format!("http_{effective}"),
                    message: format!(
                        "SageMaker answered {status}: {}",
                        aws_sdk_sagemakerruntime::error::DisplayErrorContext(err)
                    ),
                    retryable: effective == 429 || effective >= 500,
                    retry_after,
                })
            }
            Err(SdkError::TimeoutError(_)) => {
                Err(Failure { code: "timeout".into(), message: "timeout".into(), retryable: true, retry_after: None })
            }
            Err(e) => Err(Failure {
                code: "connect".into(),
                message: format!("calling SageMaker: {}", aws_sdk_sagemakerruntime::error::DisplayErrorContext(&e)),
                retryable: true,
                retry_after: None,
            }),
        }
    }
}

/// The standard AWS chain (environment, profile, instance role), with the SDK's own retries off
/// and the call timeout of `[scoring]`. `url` overrides the SageMaker runtime endpoint (as does
/// `AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`).
async fn load_aws(settings: &ScoringSettings) -> Result<Aws> {
    // This client retries by itself (backoff, Retry-After, circuit breaker): no SDK retries.
    let conf = crate::aws::loader(settings.region.as_deref())
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .timeout_config(aws_config::timeout::TimeoutConfig::builder().operation_attempt_timeout(settings.timeout).build())
        .load()
        .await;
    let region = conf
        .region()
        .map(|r| r.to_string())
        .ok_or_else(|| Error::Usage("no AWS region: set scoring.region in runner.toml or AWS_REGION".into()))?;
    let sagemaker = (settings.endpoint == EndpointKind::Sagemaker).then(|| {
        let mut b = aws_sdk_sagemakerruntime::config::Builder::from(&conf);
        if let Some(url) = &settings.url {
            b = b.endpoint_url(url.clone());
        }
        aws_sdk_sagemakerruntime::Client::from_conf(b.build())
    });
    Ok(Aws { sagemaker, credentials: conf.credentials_provider(), region })
}

/// SigV4 headers (service `execute-api`) for a POST of `body` to `url` with `headers`.
async fn sigv4_headers(
    aws: &Aws,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::result::Result<Vec<(String, String)>, Failure> {
    use aws_credential_types::provider::ProvideCredentials;
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let fail = |m: String| Failure { code: "signing".into(), message: m, retryable: false, retry_after: None };
    let provider = aws.credentials.as_ref().ok_or_else(|| fail("sigv4 = true but no AWS credentials were found".into()))?;
    let creds = provider.provide_credentials().await.map_err(|e| fail(format!("no AWS credentials: {e}")))?;
    let identity = creds.into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(&aws.region)
        .name("execute-api")
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| fail(format!("SigV4 parameters: {e}")))?
        .into();
    let signable =
        SignableRequest::new("POST", url, headers.iter().map(|(k, v)| (k.as_str(), v.as_str())), SignableBody::Bytes(body))
            .map_err(|e| fail(format!("SigV4 request: {e}")))?;
    let (instructions, _) = sign(signable, &params).map_err(|e| fail(format!("SigV4 signing: {e}")))?.into_parts();
    Ok(instructions.headers().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

fn transport_failure(e: reqwest::Error) -> Failure {
    let code = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    };
    // Without the URL: it is in the summary already, and a query string could hold a secret.
    let message = format!("{code}: {}", e.without_url());
    Failure { code: code.into(), message, retryable: true, retry_after: None }
}
