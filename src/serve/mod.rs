//! The HTTP API (axum): events in, endpoints and SQL out, health and tokens.
//!
//! Handlers only parse requests, check tokens and format answers; everything else is the
//! runtime's. Pull requests read maintained views and never wait on the dataflow, except the
//! first request for a new parameter binding, which installs its view and waits for it.

mod admin;
mod error;
mod format;
mod metrics;
mod subscribe;
mod tokens;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tower_http::decompression::RequestDecompressionLayer;

pub use error::{ApiError, DOCUMENTATION};
pub use format::{render, Format, ResultSet};
pub use metrics::resident_bytes;
pub use tokens::{new_token_value, parse_scope, write_private, Grant, Scope, Token, Tokens};

use crate::runtime::{QueryResult, Runtime};

/// The largest request body the Events API takes (Tinybird's paid-plan limit); larger ones
/// get 413.
pub const MAX_BODY_BYTES: usize = 100 * 1024 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The running project.
    pub runtime: Arc<Runtime>,
    /// The tokens.
    pub tokens: Arc<Tokens>,
    /// The admin token (returned by `GET /tokens` on loopback).
    pub admin_token: String,
    /// Request counters for `GET /metrics`.
    pub requests: Arc<metrics::RequestMetrics>,
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v0/events", post(events))
        .route("/v0/pipes", get(list_pipes))
        .route("/v0/pipes/{file}", get(pipe).post(pipe_post))
        .route("/v0/pipes/{name}/copy", post(copy_pipe))
        .route("/v0/sql", get(sql_get).post(sql_post))
        .route(
            "/v0/datasources",
            get(list_datasources).post(append_datasource),
        )
        .route("/v0/health", get(health))
        .route("/v0/tokens", get(list_tokens).post(create_token))
        .route("/v0/views", get(list_views))
        .route("/v0/datasources/{name}", get(get_datasource))
        .route("/v0/datasources/{name}/truncate", post(truncate_datasource))
        .route("/v0/datasources/{name}/delete", post(delete_rows))
        .route("/tokens", get(local_tokens))
        .route("/", get(live_page))
        .route("/v1/deploy", post(admin::deploy))
        .route("/v0/admin/shutdown", post(admin::shutdown))
        .route("/metrics", get(metrics_route))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count_requests,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(RequestDecompressionLayer::new())
        // A handler that panics (a bug) answers 500 with a JSON body; the server goes on.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error while answering the request",
                )
                .into_response()
            },
        ))
        .with_state(state)
}

/// Browsers may call the API from any page (as Tinybird allows): the token, not the origin,
/// is the credential. `/tokens`, the one route without a token, refuses requests from other
/// origins itself.
fn cors() -> tower_http::cors::CorsLayer {
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
        .allow_headers(tower_http::cors::Any)
        .expose_headers([header::HeaderName::from_static("x-petrel-upper")])
        .max_age(Duration::from_secs(3600))
}

/// How many connections the server holds and how long a client may take to send a
/// request's headers.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Connections served at once; further ones wait in the listen backlog until one ends.
    pub max_connections: usize,
    /// A connection that has not sent a whole request head within this time (a new
    /// connection, or an idle keep-alive one) is closed.
    pub header_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 10_000,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves the API on `listener` until the process ends, with the default limits.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    serve_with(listener, state, ConnectionLimits::default()).await
}

/// Serves the API on `listener` until the process ends: each connection is served by hyper
/// (HTTP/1.1 with upgrades for WebSocket) within `limits`.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower::{Layer as _, ServiceExt as _};
    // Around the whole router, so preflight OPTIONS requests are answered on every route.
    let app = cors().layer(router(state));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait, keep serving the others.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let app = app.clone();
        let service = hyper::service::service_fn(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(request.map(axum::body::Body::new))
            },
        );
        tokio::spawn(async move {
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
            drop(slot);
        });
    }
}

/// The token of a request: `Authorization: Bearer T`, else `?token=T`.
fn request_token<'a>(
    headers: &'a HeaderMap,
    params: &'a BTreeMap<String, String>,
) -> Option<&'a str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .or_else(|| params.get("token").map(String::as_str))
}

fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    params: &BTreeMap<String, String>,
    scope: &Scope,
) -> Result<(), ApiError> {
    grant(state, headers, params, scope).map(|_| ())
}

/// Checks the request's token for `scope` and returns what it grants.
fn grant(
    state: &AppState,
    headers: &HeaderMap,
    params: &BTreeMap<String, String>,
    scope: &Scope,
) -> Result<Grant, ApiError> {
    let Some(token) = request_token(headers, params) else {
        return Err(ApiError::forbidden(
            "token is missing: send it as 'Authorization: Bearer <token>' or '?token=<token>'",
        ));
    };
    let Some(grant) = state.tokens.grant(token) else {
        return Err(ApiError::forbidden("invalid or expired token"));
    };
    if !grant.allows(scope) {
        return Err(ApiError::forbidden(format!(
            "token has no {} scope for this resource",
            scope_name(scope)
        )));
    }
    Ok(grant)
}

/// The request's token, when it is one the server knows (static or a valid JWT).
fn known_token<'a>(
    state: &AppState,
    headers: &'a HeaderMap,
    params: &'a BTreeMap<String, String>,
) -> Result<&'a str, ApiError> {
    let token =
        request_token(headers, params).ok_or_else(|| ApiError::forbidden("token is missing"))?;
    if state.tokens.grant(token).is_none() {
        return Err(ApiError::forbidden("invalid or expired token"));
    }
    Ok(token)
}

fn scope_name(scope: &Scope) -> &'static str {
    match scope {
        Scope::Admin => "ADMIN",
        Scope::PipesRead(_) => "PIPES:READ",
        Scope::DatasourcesAppend(_) => "DATASOURCES:APPEND",
        Scope::DatasourcesRead(_) => "DATASOURCES:READ",
    }
}

async fn events(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = params.get("name").ok_or_else(|| {
        ApiError::bad_request("the 'name' parameter (the datasource) is required")
    })?;
    authorize(
        &state,
        &headers,
        &params,
        &Scope::DatasourcesAppend(name.clone()),
    )?;
    let wait = params.get("wait").is_some_and(|w| w == "true" || w == "1");
    let runtime = state.runtime.clone();
    let ds = name.clone();
    let report = tokio::task::spawn_blocking(move || runtime.ingest_ndjson(&ds, &body))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let status = if wait {
        state
            .runtime
            .wait_durable_and_visible(name, report.ts)
            .await?;
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let body = serde_json::json!({
        "successful_rows": report.successful_rows,
        "quarantined_rows": report.quarantined_rows,
        "ts": report.ts,
    });
    Ok((status, Json(body)).into_response())
}

async fn list_pipes(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = known_token(&state, &headers, &params)?;
    let pipes: Vec<serde_json::Value> = state
        .runtime
        .describe_pipes()
        .into_iter()
        .filter(|p| {
            state
                .tokens
                .allows(token, &Scope::PipesRead(p.name.clone()))
        })
        .map(|p| serde_json::to_value(p).unwrap_or_default())
        .collect();
    Ok(Json(serde_json::json!({ "pipes": pipes })).into_response())
}

/// How an endpoint request wants its answer.
enum Answer {
    /// Pulled once, in a format.
    Pull(Format),
    /// Pushed over a WebSocket.
    WebSocket,
    /// Pushed as Server-Sent Events.
    Sse,
}

/// Splits `name.ext` into the pipe name and how to answer.
fn pipe_file(file: &str) -> Result<(&str, Answer), ApiError> {
    match file.rsplit_once('.') {
        None => Ok((file, Answer::Pull(Format::Json))),
        Some((name, "ws")) => Ok((name, Answer::WebSocket)),
        Some((name, "sse")) => Ok((name, Answer::Sse)),
        Some((name, ext)) => Format::from_extension(ext)
            .map(|f| (name, Answer::Pull(f)))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unsupported format '{ext}': use json, csv, ndjson, ws or sse"
                ))
            }),
    }
}

/// Request parameters that are not the pipe's own.
const RESERVED_PARAMS: [&str; 2] = ["token", "q"];

/// Further parameters a subscription reserves for itself.
const SUBSCRIPTION_PARAMS: [&str; 4] = ["since", "snapshot", "envelope", "overflow"];

/// `POST /v0/pipes/NAME.{json,csv,ndjson}` with the parameters in a JSON object body (what
/// Tinybird's clients send when a URL would be too long); query-string ones count too.
async fn pipe_post(
    State(state): State<AppState>,
    Path(file): Path<String>,
    Query(mut params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !body.iter().all(u8::is_ascii_whitespace) {
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&body)
            .map_err(|e| {
                ApiError::bad_request(format!("the body must be a JSON object of parameters: {e}"))
            })?;
        for (k, v) in object {
            let text = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|i| match i {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            params.insert(k, text);
        }
    }
    let (_, answer) = pipe_file(&file)?;
    if !matches!(answer, Answer::Pull(_)) {
        return Err(ApiError::bad_request(
            "subscriptions are opened with GET (.ws or .sse)",
        ));
    }
    let request = axum::extract::Request::new(axum::body::Body::empty());
    pipe(State(state), Path(file), Query(params), headers, request).await
}

async fn pipe(
    State(state): State<AppState>,
    Path(file): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let (name, answer) = pipe_file(&file)?;
    if !state.runtime.has_endpoint(name) {
        authorize(&state, &headers, &params, &Scope::Admin)?;
        return Err(ApiError::not_found(format!(
            "The pipe '{name}' does not exist or does not have an endpoint"
        )));
    }
    let grant = grant(
        &state,
        &headers,
        &params,
        &Scope::PipesRead(name.to_string()),
    )?;
    let subscribing = !matches!(answer, Answer::Pull(_));
    let mut pipe_params: BTreeMap<String, String> = params
        .iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            let reserved =
                RESERVED_PARAMS.contains(&k) || (subscribing && SUBSCRIPTION_PARAMS.contains(&k));
            !reserved
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // A JWT's fixed_params override what the request says (row-level security).
    if let Some(fixed) = grant.fixed_params.get(name) {
        pipe_params.extend(fixed.clone());
    }
    let format = match answer {
        Answer::Pull(format) => format,
        Answer::WebSocket | Answer::Sse => {
            let options = subscribe_options(&params, &headers)?;
            let slot = state
                .runtime
                .subscription_slot(request_token(&headers, &params).unwrap_or_default())?;
            let sub = state.runtime.subscribe(name, &pipe_params).await?;
            if let Answer::Sse = answer {
                return Ok(subscribe::sse(subscribe::start(
                    sub,
                    options,
                    state.runtime.subscriber_buffers(),
                    slot,
                )));
            }
            let (mut parts, _) = request.into_parts();
            let upgrade =
                axum::extract::ws::WebSocketUpgrade::from_request_parts(&mut parts, &state)
                    .await
                    .map_err(|e| ApiError::bad_request(format!("not a WebSocket request: {e}")))?;
            let frames = subscribe::start(sub, options, state.runtime.subscriber_buffers(), slot);
            return Ok(upgrade.on_upgrade(move |socket| subscribe::websocket(socket, frames)));
        }
    };
    let mut result = state.runtime.query_pipe(name, &pipe_params).await?;
    if let Some(q) = params.get("q") {
        // Consistent at the pipe result's frontier, whatever the query over it.
        let upper = result.upper;
        result = state.runtime.query_over(result, q).await?;
        result.upper = upper;
    }
    Ok(respond(format, &result, started))
}

/// `since=T` (or SSE's `Last-Event-ID`) and `snapshot=false`.
fn subscribe_options(
    params: &BTreeMap<String, String>,
    headers: &HeaderMap,
) -> Result<subscribe::Options, ApiError> {
    let since_text = params
        .get("since")
        .map(String::as_str)
        .or_else(|| headers.get("last-event-id").and_then(|v| v.to_str().ok()));
    let since = since_text
        .map(|t| {
            t.trim().parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!(
                    "since must be a timestamp in milliseconds, got '{t}'"
                ))
            })
        })
        .transpose()?;
    let snapshot = match params.get("snapshot").map(String::as_str) {
        None | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "snapshot must be true or false, got '{other}'"
            )))
        }
    };
    let upsert = match params.get("envelope").map(String::as_str) {
        None | Some("diff") => false,
        Some("upsert") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "envelope must be diff or upsert, got '{other}'"
            )))
        }
    };
    let close_on_overflow = match params.get("overflow").map(String::as_str) {
        None | Some("resync") => false,
        Some("close") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "overflow must be resync or close, got '{other}'"
            )))
        }
    };
    Ok(subscribe::Options {
        since,
        snapshot,
        upsert,
        close_on_overflow,
    })
}

fn respond(format: Format, result: &QueryResult, started: Instant) -> Response {
    let body = render(
        format,
        &ResultSet {
            columns: &result.columns,
            rows: &result.rows,
            rows_before_limit: result.rows_before_limit,
            elapsed: started.elapsed().as_secs_f64(),
            rows_read: result.rows_read,
            upper: result.upper,
        },
    );
    (
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (
                header::HeaderName::from_static("x-petrel-upper"),
                result.upper.to_string(),
            ),
        ],
        body,
    )
        .into_response()
}

/// Strips a trailing `FORMAT X` clause and returns the format it asks for.
fn split_format_clause(sql: &str) -> Result<(&str, Format), ApiError> {
    let trimmed = sql.trim().trim_end_matches(';').trim_end();
    let upper = trimmed.to_ascii_uppercase();
    if let Some(pos) = upper.rfind(" FORMAT ") {
        let name = trimmed[pos + 8..].trim();
        if !name.contains(char::is_whitespace) {
            let format = match name.to_ascii_lowercase().as_str() {
                "json" => Format::Json,
                "csv" | "csvwithnames" => Format::Csv,
                "jsoneachrow" | "ndjson" => Format::Ndjson,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unsupported FORMAT '{other}'"
                    )))
                }
            };
            return Ok((&trimmed[..pos], format));
        }
    }
    Ok((trimmed, Format::Json))
}

async fn run_sql(
    state: AppState,
    sql: String,
    params: BTreeMap<String, String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let (query, format) = split_format_clause(&sql)?;
    let pipe_params: BTreeMap<String, String> = params
        .iter()
        .filter(|(k, _)| !RESERVED_PARAMS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let prepared = state.runtime.prepare_sql(query, &pipe_params)?;
    // A token needs to read what the SQL names: a pipe by its pipe scope (its result, not
    // its datasources), a datasource or quarantine table by its datasource scope.
    for name in prepared.named() {
        if state.runtime.has_endpoint(name) {
            let grant = grant(&state, &headers, &params, &Scope::PipesRead(name.clone()))?;
            // Here the pipe is read with its default parameters: a JWT whose fixed
            // parameters restrict it must go through the pipe's endpoint instead.
            if grant.fixed_params.contains_key(name) {
                return Err(ApiError::forbidden(format!(
                    "the token fixes parameters of '{name}': read it through /v0/pipes/{name}.json"
                )));
            }
        } else {
            authorize(
                &state,
                &headers,
                &params,
                &Scope::DatasourcesRead(name.clone()),
            )?;
        }
    }
    if prepared.named().is_empty() {
        authorize(&state, &headers, &params, &Scope::Admin)?;
    }
    let result = state.runtime.run_sql(prepared).await?;
    Ok(respond(format, &result, started))
}

async fn sql_get(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = params
        .get("q")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("the 'q' parameter (the SQL) is required"))?;
    run_sql(state, q, params, headers).await
}

async fn sql_post(
    State(state): State<AppState>,
    Query(mut params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        let form: BTreeMap<String, String> = serde_urlencoded::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("malformed form body: {e}")))?;
        params.extend(form);
    } else if !text.trim().is_empty() {
        params.insert("q".into(), text.to_string());
    }
    let q = params
        .get("q")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("the SQL is required, as 'q' or as the body"))?;
    run_sql(state, q, params, headers).await
}

/// `GET /v0/health`: 503 while starting; then 200, with `"status": "degraded"` when some
/// view stopped while the rest keep serving. Anyone sees the count of failed views; an admin
/// token also sees which views and their errors (labels carry parameter values).
async fn health(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let ready = state.runtime.is_ready();
    let failed: Vec<serde_json::Value> = state
        .runtime
        .describe_views()
        .into_iter()
        .filter_map(|v| {
            v.error
                .map(|e| serde_json::json!({"view": v.label, "error": e}))
        })
        .collect();
    let (code, status) = match (ready, failed.is_empty()) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
        (true, true) => (StatusCode::OK, "ok"),
        (true, false) => (StatusCode::OK, "degraded"),
    };
    let mut body = serde_json::json!({"status": status, "failed_view_count": failed.len()});
    if authorize(&state, &headers, &params, &Scope::Admin).is_ok() {
        body["failed_views"] = serde_json::Value::Array(failed);
    }
    (code, Json(body)).into_response()
}

async fn list_tokens(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    let tokens: Vec<Token> = state.tokens.all();
    Ok(Json(serde_json::json!({ "tokens": tokens })).into_response())
}

/// The live page: lists the pipes and shows one as a table (and a chart) kept current over a
/// WebSocket subscription. Embedded in the binary; it reads data only with the user's token.
async fn live_page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("ui.html"))
}

/// `GET /v0/datasources`: the datasources the token may read or append to.
async fn list_datasources(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = known_token(&state, &headers, &params)?;
    let visible: Vec<_> = state
        .runtime
        .describe_datasources()
        .into_iter()
        .filter(|d| {
            state
                .tokens
                .allows(token, &Scope::DatasourcesRead(d.name.clone()))
                || state
                    .tokens
                    .allows(token, &Scope::DatasourcesAppend(d.name.clone()))
        })
        .collect();
    Ok(Json(serde_json::json!({ "datasources": visible })).into_response())
}

/// `POST /v0/datasources?name=DS&mode=append&format=csv|ndjson|parquet` with the rows as the body
/// (gzip allowed): appends them durably, answering once they are visible.
async fn append_datasource(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = params
        .get("name")
        .ok_or_else(|| ApiError::bad_request("the 'name' parameter is required"))?
        .clone();
    authorize(
        &state,
        &headers,
        &params,
        &Scope::DatasourcesAppend(name.clone()),
    )?;
    match params.get("mode").map(String::as_str) {
        None | Some("append") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "mode '{other}' is not supported: use append (datasources come from datafiles)"
            )))
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    enum Format {
        Csv,
        Ndjson,
        Parquet,
    }
    let format = match params.get("format").map(String::as_str) {
        Some("csv") => Format::Csv,
        Some("ndjson") => Format::Ndjson,
        Some("parquet") => Format::Parquet,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format '{other}' is not supported: use csv, ndjson or parquet"
            )))
        }
        None if content_type.starts_with("text/csv") => Format::Csv,
        None if content_type.contains("parquet") || body.starts_with(b"PAR1") => Format::Parquet,
        None => Format::Ndjson,
    };
    let runtime = state.runtime.clone();
    let ds = name.clone();
    let report = tokio::task::spawn_blocking(move || match format {
        Format::Csv => runtime.ingest_csv(&ds, &body),
        Format::Ndjson => runtime.ingest_ndjson(&ds, &body),
        Format::Parquet => runtime.ingest_parquet(&ds, body),
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    state
        .runtime
        .wait_durable_and_visible(&name, report.ts)
        .await?;
    Ok(Json(serde_json::json!({
        "datasource": {"name": name},
        "successful_rows": report.successful_rows,
        "quarantined_rows": report.quarantined_rows,
        "ts": report.ts,
    }))
    .into_response())
}

/// `GET /v0/datasources/NAME`.
async fn get_datasource(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(
        &state,
        &headers,
        &params,
        &Scope::DatasourcesRead(name.clone()),
    )?;
    let ds = state
        .runtime
        .describe_datasources()
        .into_iter()
        .find(|d| d.name == name)
        .ok_or_else(|| ApiError::not_found(format!("Data Source '{name}' not found")))?;
    Ok(Json(ds).into_response())
}

/// `POST /v0/datasources/NAME/truncate` (admin): retracts every row, from every view too.
async fn truncate_datasource(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    let runtime = state.runtime.clone();
    let ds = name.clone();
    let (rows, ts) = tokio::task::spawn_blocking(move || runtime.truncate(&ds))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    state.runtime.wait_durable_and_visible(&name, ts).await?;
    Ok(Json(serde_json::json!({ "truncated_rows": rows, "ts": ts })).into_response())
}

/// `POST /v0/pipes/NAME/copy` (admin): runs a `TYPE copy` pipe now and answers once the
/// copied rows are stored and visible.
async fn copy_pipe(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    let (rows, ts) = state.runtime.copy_pipe(&name).await?;
    Ok(
        Json(serde_json::json!({ "pipe": name, "status": "done", "rows": rows, "ts": ts }))
            .into_response(),
    )
}

/// `POST /v0/datasources/NAME/delete?delete_condition=SQL[&dry_run=true]` (admin; the
/// condition may also come as a form field): retracts the matching rows everywhere.
async fn delete_rows(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(mut params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if let Ok(form) = serde_urlencoded::from_bytes::<BTreeMap<String, String>>(&body) {
        params.extend(form);
    }
    authorize(&state, &headers, &params, &Scope::Admin)?;
    let condition = params
        .get("delete_condition")
        .ok_or_else(|| ApiError::bad_request("the 'delete_condition' parameter is required"))?;
    let dry_run = params
        .get("dry_run")
        .is_some_and(|v| v == "true" || v == "1");
    let (rows, ts) = state
        .runtime
        .delete_where(&name, condition, dry_run)
        .await?;
    if !dry_run {
        state.runtime.wait_durable_and_visible(&name, ts).await?;
    }
    Ok(
        Json(serde_json::json!({ "deleted_rows": rows, "dry_run": dry_run, "ts": ts }))
            .into_response(),
    )
}

/// `GET /metrics` (admin): Prometheus text.
async fn metrics_route(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    Ok(metrics::metrics(State(state)).await)
}

/// True for `localhost`, `*.localhost`, `127.x.y.z` and `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                name
            } else {
                host
            }
        })
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `GET /v0/views` (admin): the maintained views, their bindings, sizes and subscribers.
async fn list_views(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    let buffers = state.runtime.subscriber_buffers();
    Ok(Json(serde_json::json!({
        "views": state.runtime.describe_views(),
        "subscriber_buffers": {
            "queued_bytes": buffers.queued_bytes(),
            "capacity_bytes": buffers.capacity,
            "per_subscriber_bytes": buffers.per_subscriber,
        },
    }))
    .into_response())
}

/// `POST /v0/tokens?name=N&scope=PIPES:READ:pipe&scope=..` (admin): creates or updates a
/// static token, kept across restarts.
async fn create_token(
    State(state): State<AppState>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("malformed query: {e}")))?;
    let params: BTreeMap<String, String> = pairs.iter().cloned().collect();
    authorize(&state, &headers, &params, &Scope::Admin)?;
    let name = params
        .get("name")
        .ok_or_else(|| ApiError::bad_request("the 'name' parameter is required"))?;
    let mut scopes = Vec::new();
    for (k, v) in pairs.iter().filter(|(k, _)| k == "scope") {
        let scope = parse_scope(v).ok_or_else(|| {
            ApiError::bad_request(format!("unknown {k} '{v}': use PIPES:READ:<pipe>, DATASOURCES:APPEND:<ds> or DATASOURCES:READ:<ds>"))
        })?;
        scopes.push(scope);
    }
    if scopes.is_empty() {
        return Err(ApiError::bad_request("at least one 'scope' is required"));
    }
    let token = state
        .tokens
        .create_static(name, scopes)
        .map_err(ApiError::bad_request)?;
    Ok(Json(token).into_response())
}

/// Tinybird Local's `GET /tokens`: the admin token, to clients on this machine only.
async fn local_tokens(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !peer.ip().is_loopback() {
        return Err(ApiError::forbidden("GET /tokens answers only on loopback"));
    }
    // A page in a local browser (DNS rebinding) or a reverse proxy on this host connects
    // from loopback too: it must also name a loopback host, and come from no other origin.
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if !host.is_some_and(is_loopback_host) {
        return Err(ApiError::forbidden(
            "GET /tokens answers only requests to localhost, 127.0.0.1 or [::1]",
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, rest)| rest);
        if !origin_host.is_some_and(is_loopback_host) {
            return Err(ApiError::forbidden(
                "GET /tokens does not answer pages from other origins",
            ));
        }
    }
    Ok(Json(serde_json::json!({
        "user_token": state.admin_token,
        "admin_token": state.admin_token,
        "workspace_admin_token": state.admin_token,
    }))
    .into_response())
}
