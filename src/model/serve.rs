//! `runner model serve`: the local churn endpoint, speaking both contracts users have.
//!
//! - SageMaker model container: `GET /ping`; `POST /invocations` with `text/csv` rows (no
//!   header), answering `{"predictions":[{"score":..,"predicted_label":..}]}` in row order; the
//!   same at `POST /endpoints/<name>/invocations`, the SageMaker runtime API's own path.
//! - API Gateway: `POST /assessChurn` with a Company JSON, answering `{"churn": true|false}`.
//!
//! Bad input gets a 400 with a JSON body naming the row and field, never a 5xx. At most
//! `max_concurrency` requests are scored at once (others wait); bodies are capped at SageMaker's
//! 6 MB. SIGTERM or Ctrl-C stops accepting connections and lets requests in flight finish.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::{Company, ModelDecl};
use crate::error::{Error, Result};

/// SageMaker's payload limit for one invocation.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

struct AppState {
    model: ModelDecl,
    permits: Semaphore,
}

/// Serves `model` on `addr` until `shutdown` resolves; `ready` receives the bound address
/// (useful with port 0).
pub async fn serve(
    model: ModelDecl,
    addr: SocketAddr,
    max_concurrency: usize,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let state = Arc::new(AppState { model, permits: Semaphore::new(max_concurrency.max(1)) });
    let app = Router::new()
        .route("/ping", get(|| async { StatusCode::OK }))
        .route("/invocations", post(invocations))
        // The SageMaker runtime API's path, so the AWS SDK's InvokeEndpoint reaches this server
        // when its endpoint URL points here (AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME).
        .route("/endpoints/{name}/invocations", post(invocations))
        .route("/assessChurn", post(assess_churn))
        .layer(DefaultBodyLimit::max(MAX_PAYLOAD_BYTES))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Io { what: format!("binding {addr} (is the port in use? try --port 0)"), source: e })?;
    let local = listener.local_addr().map_err(|e| Error::Io { what: "reading the bound address".into(), source: e })?;
    ready(local);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::Io { what: "serving HTTP".into(), source: e })
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn termination() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("stopping: finishing requests in flight");
}

fn bad_request(message: String, row: Option<usize>, field: Option<&str>) -> Response {
    let mut body = json!({ "error": message });
    if let Some(r) = row {
        body["row"] = json!(r);
    }
    if let Some(f) = field {
        body["field"] = json!(f);
    }
    (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn json_ok(body: String) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn invocations(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.starts_with("text/csv") {
        return bad_request(format!("Content-Type `{ct}`: send text/csv rows (no header)"), None, Some("Content-Type"));
    }
    let Ok(_permit) = st.permits.acquire().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return bad_request("the body is not UTF-8 text".into(), None, None);
    };
    let mut out = String::with_capacity(text.len());
    out.push_str("{\"predictions\":[");
    let mut n = 0;
    for (i, line) in text.split('\n').enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match st.model.parse_csv_line(line) {
            Ok(row) => {
                let p = st.model.predict(&row);
                if n > 0 {
                    out.push(',');
                }
                out.push_str(&format!("{{\"score\":{},\"predicted_label\":{}}}", p.score, p.predicted_label));
                n += 1;
            }
            Err(e) => {
                let field = e.strip_prefix("column `").and_then(|r| r.split('`').next()).map(str::to_string);
                return bad_request(format!("row {}: {e}", i + 1), Some(i + 1), field.as_deref());
            }
        }
    }
    if n == 0 {
        return bad_request("no rows: send one CSV row per company".into(), None, None);
    }
    out.push_str("]}");
    json_ok(out)
}

async fn assess_churn(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let Ok(_permit) = st.permits.acquire().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    };
    let company = match company_from_json(&body) {
        Ok(c) => c,
        Err((msg, field)) => return bad_request(msg, None, field.as_deref()),
    };
    match st.model.row(&company) {
        Ok(row) => {
            if row.unknown_industry {
                tracing::debug!(company = %company.company_id, "industry unknown to the model: scored with zeros");
            }
            json_ok(json!({ "churn": st.model.predict(&row.values).predicted_label == 1 }).to_string())
        }
        Err(e) => {
            let field = e.split('`').nth(1).map(str::to_string);
            bad_request(e, None, field.as_deref())
        }
    }
}

/// Reads a Company JSON, naming the field when one has the wrong type.
pub fn company_from_json(body: &[u8]) -> std::result::Result<Company, (String, Option<String>)> {
    let v: Value = serde_json::from_slice(body).map_err(|e| (format!("the body is not JSON: {e}"), None))?;
    let Value::Object(map) = &v else {
        return Err(("the body must be a Company JSON object".into(), None));
    };
    match map.get("companyID") {
        Some(Value::String(_)) => {}
        Some(_) => return Err(("`companyID` must be a string".into(), Some("companyID".into()))),
        None => return Err(("`companyID` is missing".into(), Some("companyID".into()))),
    }
    if let Some(x) = map.get("industry")
        && !x.is_string()
        && !x.is_null()
    {
        return Err(("`industry` must be a string".into(), Some("industry".into())));
    }
    for f in ["revenu", "employees", "employee", "job30", "job90", "monthlyFee", "totalFee"] {
        if let Some(x) = map.get(f)
            && !x.is_number()
            && !x.is_null()
        {
            return Err((format!("`{f}` must be a number, found {x}"), Some(f.into())));
        }
    }
    serde_json::from_value(v).map_err(|e| (format!("not a Company: {e}"), None))
}
