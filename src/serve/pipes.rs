//! Pipe routes: list, pull (`.json`, `.csv`, `.ndjson`, with `q=` over the result),
//! subscribe (`.ws`, `.sse`), and run copy pipes.

use super::*;

pub(super) async fn list_pipes(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = known_token(&state, &headers, &params)?;
    let project = state.runtime.project();
    let pipes: Vec<serde_json::Value> = state
        .runtime
        .describe_pipes()
        .into_iter()
        .filter(|p| {
            state
                .tokens
                .allows(token, &Scope::PipesRead(p.name.clone()))
        })
        .map(|p| {
            let mut item = serde_json::to_value(&p).unwrap_or_default();
            // Tinybird's fields that its clients list pipes by (`tb pipe ls`).
            if let Some(pipe) = project.pipes.get(&p.name) {
                let stamp = crate::project::modified_stamp(&pipe.file);
                item["id"] = serde_json::json!(crate::project::resource_id(&pipe.name));
                item["created_at"] = serde_json::json!(stamp);
                item["updated_at"] = serde_json::json!(stamp);
                item["nodes"] = pipe
                    .nodes
                    .iter()
                    .map(|n| serde_json::json!({ "name": n.name }))
                    .collect();
            }
            item
        })
        .collect();
    Ok(Json(serde_json::json!({ "pipes": pipes })).into_response())
}

/// How an endpoint request wants its answer.
enum Answer {
    /// `GET /v0/pipes/NAME` with no extension: the pipe's description, not its data.
    Describe,
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
        None => Ok((file, Answer::Describe)),
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
pub(super) const RESERVED_PARAMS: [&str; 2] = ["token", "q"];

/// The bytes a WebSocket subscription's connection reads into at a time (a larger message
/// from the client still arrives whole; the buffer grows for it).
const SUBSCRIBER_READ_BUFFER: usize = 4 * 1024;

/// Further parameters a subscription reserves for itself.
const SUBSCRIPTION_PARAMS: [&str; 4] = ["since", "snapshot", "envelope", "overflow"];

/// `POST /v0/pipes/NAME.{json,csv,ndjson}` with the parameters in a JSON object body (what
/// Tinybird's clients send when a URL would be too long) or as a form (the Classic CLI's
/// `pipe data`); query-string ones count too.
pub(super) async fn pipe_post(
    State(state): State<AppState>,
    Path(file): Path<String>,
    Query(mut params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if let Some(form) = form_params(&headers, &body)? {
        params.extend(form);
    } else if !body.iter().all(u8::is_ascii_whitespace) {
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
            "POST reads data: use NAME.json, NAME.csv or NAME.ndjson (subscriptions are opened with GET .ws or .sse)",
        ));
    }
    let request = axum::extract::Request::new(axum::body::Body::empty());
    pipe(State(state), Path(file), Query(params), headers, request).await
}

pub(super) async fn pipe(
    State(state): State<AppState>,
    Path(file): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    if file == "openapi.json" {
        return super::openapi::openapi(&state, &headers, &params);
    }
    let (name, answer) = pipe_file(&file)?;
    let may_read = || {
        authorize(
            &state,
            &headers,
            &params,
            &Scope::PipesRead(name.to_string()),
        )
    };
    if let Answer::Describe = answer {
        may_read()?;
        let project = state.runtime.project();
        return match project.pipes.get(name) {
            Some(p) => Ok(Json(pipe_resource(&project, p)).into_response()),
            None => Err(ApiError::not_found(format!(
                "The pipe '{name}' does not exist"
            ))),
        };
    }
    let project = state.runtime.project();
    if let Some(error) = project
        .pipes
        .get(name)
        .filter(|p| p.endpoint.is_some())
        .and_then(|p| p.broken.as_deref())
    {
        may_read()?;
        return Err(ApiError::bad_request(format!(
            "The pipe '{name}' is not served: {}",
            project.relative_message(error)
        )));
    }
    drop(project);
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
        // Answered above.
        Answer::Describe => return Err(ApiError::bad_request("no format")),
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
            // A subscriber sends next to nothing (pings, a close): a small read buffer, not
            // the 128 KiB default, so thousands of subscribers cost little memory each.
            let upgrade = upgrade.read_buffer_size(SUBSCRIBER_READ_BUFFER);
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

pub(super) fn respond(format: Format, result: &QueryResult, started: Instant) -> Response {
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

/// `POST /v0/pipes/NAME/copy` (admin): runs a `TYPE copy` pipe now and answers once the
/// copied rows are stored and visible.
pub(super) async fn copy_pipe(
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

/// The pipe as Tinybird's `GET /v0/pipes/NAME` describes it (`id`, `name`, `description`,
/// `type`, `endpoint` node id, `nodes` with their SQL and parameters, `created_at` and
/// `updated_at`), with Petrel's `params` and `error` alongside.
pub(super) fn pipe_resource(
    project: &crate::project::Project,
    pipe: &crate::project::Pipe,
) -> serde_json::Value {
    let pipe_type = if pipe.sink.is_some() {
        "sink"
    } else if pipe.copy.is_some() {
        "copy"
    } else if project
        .materialized
        .values()
        .flatten()
        .any(|p| p == &pipe.name)
    {
        "materialized"
    } else if pipe.is_endpoint() {
        "endpoint"
    } else {
        "default"
    };
    let mut described = pipe.describe();
    described.error = described.error.map(|e| project.relative_message(&e));
    let node_id = |node: &str| crate::project::resource_id(&format!("{}.{node}", pipe.name));
    let nodes: Vec<serde_json::Value> = pipe
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let node_type = match (pipe.endpoint == Some(i), pipe_type) {
                (true, _) => "endpoint",
                (false, _) if i + 1 == pipe.nodes.len() && pipe_type != "endpoint" => pipe_type,
                _ => "standard",
            };
            serde_json::json!({
                "id": node_id(&n.name),
                "name": n.name,
                "sql": n.template.source(),
                "description": null,
                "materialized": null,
                "node_type": node_type,
                "params": described.params,
            })
        })
        .collect();
    let stamp = crate::project::modified_stamp(&pipe.file);
    serde_json::json!({
        "id": crate::project::resource_id(&pipe.name),
        "name": pipe.name,
        "description": pipe.description,
        "type": pipe_type,
        "endpoint": pipe.endpoint.and_then(|i| pipe.nodes.get(i)).map(|n| node_id(&n.name)),
        "nodes": nodes,
        "created_at": stamp,
        "updated_at": stamp,
        "parent": null,
        "params": described.params,
        "error": described.error,
    })
}
