//! Datasource routes: the Events API, appends of files, metadata, truncate and delete.

use super::*;

pub(super) async fn events(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Body,
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
    state.runtime.admit_events().await?;
    let chunks = body_chunks(body).await?;
    let runtime = state.runtime.clone();
    let ds = name.clone();
    let report =
        crate::runtime::run_blocking(move || runtime.ingest_ndjson_chunks(&ds, &chunks)).await??;
    state.runtime.hold_until_read_and_stored(
        name,
        report.ts,
        (report.successful_rows + report.quarantined_rows) as u64,
    );
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

/// A request's body as the chunks it arrived in, up to [`MAX_BODY_BYTES`] (413 past them,
/// read no further): the Events API decodes the chunks where they lie, instead of having the
/// body copied into one buffer first (a 5 MB body's copy was on every write's path).
async fn body_chunks(body: axum::body::Body) -> Result<Vec<Bytes>, ApiError> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let (mut chunks, mut total) = (Vec::new(), 0usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        total = total.saturating_add(chunk.len());
        if total > MAX_BODY_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is over {MAX_BODY_BYTES} bytes"),
            ));
        }
        if !chunk.is_empty() {
            chunks.push(chunk);
        }
    }
    Ok(chunks)
}

/// `GET /v0/datasources`: the datasources the token may read or append to.
pub(super) async fn list_datasources(
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
    let mut described = serde_json::to_value(visible).unwrap_or_default();
    super::cluster::add_followers_shares(&state, &mut described).await?;
    Ok(Json(serde_json::json!({ "datasources": described })).into_response())
}

/// `POST /v0/datasources?name=DS&mode=append&format=csv|ndjson|parquet` with the rows as the body
/// (gzip allowed): appends them durably, answering once they are visible.
pub(super) async fn append_datasource(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // The Classic CLI creates a datasource from its definition, as a form.
    let creating = params.get("mode").is_some_and(|m| m == "create")
        || (!params.contains_key("mode") && params.contains_key("schema"));
    if creating || (!params.contains_key("mode") && !params.contains_key("name")) {
        let mut definition = params.clone();
        if let Some(form) = form_params(&headers, &body)? {
            definition.extend(form);
        }
        if creating || definition.contains_key("schema") {
            return super::classic::create_datasource(&state, &definition, &headers).await;
        }
    }
    let name = params
        .get("name")
        .ok_or_else(|| ApiError::bad_request("the 'name' parameter is required"))?
        .clone();
    let mode = params.get("mode").map(String::as_str);
    if params.contains_key("url") && matches!(mode, None | Some("append")) {
        return super::url_import::import(&state, &name, &params, &headers).await;
    }
    match mode {
        None | Some("append") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "mode '{other}' is not supported: use append or create (other datasources come from datafiles)"
            )))
        }
    }
    let report = append_rows(&state, &name, &params, &headers, body).await?;
    Ok(Json(serde_json::json!({
        "datasource": {"name": name},
        "successful_rows": report.successful_rows,
        "quarantined_rows": report.quarantined_rows,
        "ts": report.ts,
    }))
    .into_response())
}

/// Appends a body of rows (`format=csv|ndjson|parquet`, or told by its content type) to the
/// datasource `name` with the token's append scope; returns once they are durable and
/// visible. Bad rows go to quarantine.
pub(super) async fn append_rows(
    state: &AppState,
    name: &str,
    params: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<crate::runtime::IngestReport, ApiError> {
    authorize(
        state,
        headers,
        params,
        &Scope::DatasourcesAppend(name.to_string()),
    )?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    enum Format {
        Csv,
        Ndjson,
        Parquet,
    }
    // A form upload (the Classic CLI's `datasource append`) carries the rows in a field
    // named after their format.
    let (body, field) = match multipart::boundary(headers) {
        Some(boundary) => {
            let part = multipart::parts(&boundary, body)
                .await?
                .into_iter()
                .find(|p| matches!(p.name.as_str(), "csv" | "ndjson" | "parquet"))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "a multipart upload needs a csv, ndjson or parquet field with the rows",
                    )
                })?;
            (part.data, Some(part.name))
        }
        None => (body, None),
    };
    let format = match params.get("format").or(field.as_ref()).map(String::as_str) {
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
    let ds = name.to_string();
    let report = tokio::task::spawn_blocking(move || match format {
        Format::Csv => runtime.ingest_csv(&ds, &body),
        Format::Ndjson => runtime.ingest_ndjson(&ds, &body),
        Format::Parquet => runtime.ingest_parquet(&ds, body),
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    state
        .runtime
        .wait_durable_and_visible(name, report.ts)
        .await?;
    Ok(report)
}

/// `GET /v0/datasources/NAME`.
pub(super) async fn get_datasource(
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
        .describe_datasource_named(&name)
        .ok_or_else(|| ApiError::not_found(format!("Data Source '{name}' not found")))?;
    let mut described = serde_json::json!([ds]);
    super::cluster::add_followers_shares(&state, &mut described).await?;
    Ok(Json(described[0].take()).into_response())
}

/// `POST /v0/datasources/NAME/truncate` (admin): retracts every row, from every view too.
pub(super) async fn truncate_datasource(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    // In a cluster, every other process removes its share first.
    let others = super::cluster::on_followers(
        &state,
        "/v0/cluster/truncate",
        serde_json::json!({"datasource": name}),
    )
    .await?;
    let (rows, ts) = truncate_share(&state, &name).await?;
    Ok(
        Json(serde_json::json!({ "truncated_rows": rows as u64 + others, "ts": ts }))
            .into_response(),
    )
}

/// Removes this process's rows of `name` (all of them outside a cluster) and waits until
/// that is durable and visible.
pub(super) async fn truncate_share(state: &AppState, name: &str) -> Result<(usize, u64), ApiError> {
    let runtime = state.runtime.clone();
    let ds = name.to_string();
    let (rows, ts) = tokio::task::spawn_blocking(move || runtime.truncate(&ds))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    state.runtime.wait_durable_and_visible(name, ts).await?;
    Ok((rows, ts))
}

/// `POST /v0/datasources/NAME/delete?delete_condition=SQL[&dry_run=true]` (admin; the
/// condition may also come as a form field): retracts the matching rows everywhere.
pub(super) async fn delete_rows(
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
    // In a cluster, every other process deletes from its share first.
    let others = super::cluster::on_followers(
        &state,
        "/v0/cluster/delete",
        serde_json::json!({"datasource": name, "condition": condition, "dry_run": dry_run}),
    )
    .await?;
    let (rows, ts) = delete_from_share(&state, &name, condition, dry_run).await?;
    Ok(Json(
        serde_json::json!({ "deleted_rows": rows as u64 + others, "dry_run": dry_run, "ts": ts }),
    )
    .into_response())
}

/// Deletes this process's rows of `name` that match `condition` (all of them outside a
/// cluster) and waits until that is durable and visible.
pub(super) async fn delete_from_share(
    state: &AppState,
    name: &str,
    condition: &str,
    dry_run: bool,
) -> Result<(usize, u64), ApiError> {
    let (rows, ts) = state.runtime.delete_where(name, condition, dry_run).await?;
    if !dry_run {
        state.runtime.wait_durable_and_visible(name, ts).await?;
    }
    Ok((rows, ts))
}
