//! `/v0/sql`: ad-hoc queries over the datasources and pipes a token may read, or over one
//! pipe's result (`pipeline=NAME`, read as `_`).

use super::*;

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
    let mut pipe_params: BTreeMap<String, String> = params
        .iter()
        .filter(|(k, _)| !RESERVED_PARAMS.contains(&k.as_str()) && k.as_str() != "pipeline")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // `pipeline=NAME` (Tinybird's Query API): the query reads the pipe's result as `_`, with
    // the request's other parameters, as `q=` on the endpoint does.
    if let Some(name) = params.get("pipeline") {
        let grant = grant(&state, &headers, &params, &Scope::PipesRead(name.clone()))?;
        if !state.runtime.has_endpoint(name) {
            return Err(ApiError::not_found(format!(
                "The pipe '{name}' does not exist or does not have an endpoint"
            )));
        }
        if let Some(fixed) = grant.fixed_params.get(name) {
            pipe_params.extend(fixed.clone());
        }
        let result = state.runtime.query_pipe(name, &pipe_params).await?;
        let upper = result.upper;
        let mut result = state.runtime.query_over(result, query).await?;
        result.upper = upper;
        return Ok(respond(format, &result, started));
    }
    let mut prepared = state.runtime.prepare_sql(query, &pipe_params)?;
    // A token needs to read what the SQL names: a pipe by its pipe scope (its result, not
    // its datasources), a datasource or quarantine table by its datasource scope.
    let mut row_filters = BTreeMap::new();
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
            let grant = grant(
                &state,
                &headers,
                &params,
                &Scope::DatasourcesRead(name.clone()),
            )?;
            if let Some(filter) = grant.row_filters.get(name) {
                row_filters.insert(name.clone(), filter.clone());
            }
        }
    }
    state.runtime.filter_rows(&mut prepared, &row_filters)?;
    if prepared.named().is_empty() {
        authorize(&state, &headers, &params, &Scope::Admin)?;
    }
    let result = state.runtime.run_sql(prepared).await?;
    Ok(respond(format, &result, started))
}

pub(super) async fn sql_get(
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

pub(super) async fn sql_post(
    State(state): State<AppState>,
    Query(mut params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
    if let Some(form) = form_params(&headers, &body)? {
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
