//! `GET /v0/pipes/openapi.json`: an OpenAPI 3 description of the endpoints a token may read
//! (Tinybird's route), with each endpoint's typed parameters and the columns it answers, so
//! client generators and API tools work against Petrel unchanged.

use serde_json::{json, Map, Value as Json};

use super::*;
use crate::project::{ParamDescription, Pipe};
use petrel_value::ColumnType;

pub(super) fn openapi(
    state: &AppState,
    headers: &HeaderMap,
    params: &BTreeMap<String, String>,
) -> Result<Response, ApiError> {
    let token = known_token(state, headers, params)?;
    let project = state.runtime.project();
    let server = base_url(headers);
    let readable = project.pipes.values().filter(|p| {
        p.is_endpoint()
            && state
                .tokens
                .allows(token, &Scope::PipesRead(p.name.clone()))
    });
    Ok(Json(document(readable, server)).into_response())
}

/// The OpenAPI document for `pipes`, served from `server` when known.
fn document<'a>(pipes: impl Iterator<Item = &'a Pipe>, server: Option<String>) -> Json {
    let mut paths = Map::new();
    for pipe in pipes {
        for format in ["json", "csv", "ndjson"] {
            paths.insert(
                format!("/v0/pipes/{}.{format}", pipe.name),
                json!({ "get": operation(pipe, format) }),
            );
        }
    }
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Petrel endpoints",
            "version": "1.0.0",
            "description": "The published pipes of this Petrel project: pull them as JSON, CSV or NDJSON (and subscribe with .ws or .sse, see docs/subscriptions.md).",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "token": { "type": "http", "scheme": "bearer" },
                "token_param": { "type": "apiKey", "in": "query", "name": "token" },
            },
        },
        "security": [{ "token": [] }, { "token_param": [] }],
    });
    if let Some(url) = server {
        doc["servers"] = json!([{ "url": url }]);
    }
    doc
}

/// One endpoint in one format.
fn operation(pipe: &Pipe, format: &str) -> Json {
    let described = pipe.describe();
    let mut parameters: Vec<Json> = described.params.iter().map(parameter).collect();
    parameters.push(json!({
        "name": "q",
        "in": "query",
        "required": false,
        "description": "SQL over the pipe's result, read as the table _",
        "schema": { "type": "string" },
    }));
    let row = row_schema(pipe);
    let content = match format {
        "json" => json!({ "application/json": { "schema": {
            "type": "object",
            "properties": {
                "meta": { "type": "array", "items": {
                    "type": "object",
                    "properties": { "name": { "type": "string" }, "type": { "type": "string" } },
                } },
                "data": { "type": "array", "items": row },
                "rows": { "type": "integer" },
                "rows_before_limit_at_least": { "type": "integer" },
                "statistics": { "type": "object" },
            },
        } } }),
        "csv" => json!({ "text/csv": { "schema": { "type": "string" } } }),
        _ => json!({ "application/x-ndjson": { "schema": row } }),
    };
    let error = json!({ "application/json": { "schema": {
        "type": "object",
        "properties": { "error": { "type": "string" } },
    } } });
    json!({
        "operationId": format!("{}_{format}", pipe.name),
        "summary": pipe.name,
        "description": pipe.description.clone().unwrap_or_default(),
        "parameters": parameters,
        "responses": {
            "200": { "description": "The endpoint's rows", "content": content },
            "400": { "description": "A bad parameter or query", "content": error.clone() },
            "403": { "description": "A missing or insufficient token", "content": error.clone() },
            "404": { "description": "No such endpoint", "content": error },
        },
    })
}

/// A template parameter as an OpenAPI query parameter.
fn parameter(p: &ParamDescription) -> Json {
    let mut schema = param_schema(&p.ty);
    if let Some(default) = &p.default {
        schema["default"] = default_value(&schema, default);
    }
    let mut out = json!({
        "name": p.name,
        "in": "query",
        "required": p.required,
        "schema": schema,
    });
    if let Some(d) = &p.description {
        out["description"] = json!(d);
    }
    out
}

/// The JSON Schema of a template type (`String`, `Int32`, `Array(String)`, `DateTime`, ..).
fn param_schema(ty: &str) -> Json {
    if let Some(inner) = ty.strip_prefix("Array(").and_then(|t| t.strip_suffix(')')) {
        // Arrays travel as comma-separated values.
        return json!({ "type": "array", "items": param_schema(inner), "style": "form", "explode": false });
    }
    match ty {
        t if t.starts_with("Int") || t.starts_with("UInt") => json!({ "type": "integer" }),
        t if t.starts_with("Float") || t.starts_with("Decimal") => json!({ "type": "number" }),
        "Boolean" | "Bool" => json!({ "type": "boolean" }),
        "Date" | "Date32" => json!({ "type": "string", "format": "date" }),
        t if t.starts_with("DateTime") => json!({ "type": "string", "format": "date-time" }),
        _ => json!({ "type": "string" }),
    }
}

/// A default given as text, as a value of the parameter's schema type.
fn default_value(schema: &Json, text: &str) -> Json {
    let unquoted = text.trim_matches('\'');
    match schema["type"].as_str() {
        Some("integer") => unquoted
            .parse::<i64>()
            .map(Json::from)
            .unwrap_or(json!(unquoted)),
        Some("number") => unquoted
            .parse::<f64>()
            .map(Json::from)
            .unwrap_or(json!(unquoted)),
        Some("boolean") => json!(matches!(unquoted, "1" | "true" | "True")),
        _ => json!(unquoted),
    }
}

/// The schema of one answered row: the endpoint's columns as planned with the parameters'
/// defaults (an object without properties when the pipe did not plan).
fn row_schema(pipe: &Pipe) -> Json {
    let mut properties = Map::new();
    if let Some(checked) = &pipe.checked_plan {
        let query = &checked.1;
        for c in query.plan.columns.iter().take(query.visible) {
            properties.insert(c.name.clone(), column_schema(&c.ty));
        }
    }
    json!({ "type": "object", "properties": properties })
}

/// How Petrel writes a value of a column type in JSON.
fn column_schema(ty: &ColumnType) -> Json {
    match ty {
        ColumnType::Bool => json!({ "type": "boolean" }),
        ColumnType::Int(_) | ColumnType::UInt(_) => json!({ "type": "integer" }),
        ColumnType::Float32 | ColumnType::Float64 => json!({ "type": "number" }),
        ColumnType::Date => json!({ "type": "string", "format": "date" }),
        ColumnType::DateTime | ColumnType::DateTime64(_) => {
            json!({ "type": "string", "description": ty.name() })
        }
        ColumnType::Nullable(inner) => {
            let mut s = column_schema(inner);
            s["nullable"] = json!(true);
            s
        }
        ColumnType::LowCardinality(inner) => column_schema(inner),
        ColumnType::Array(inner) => json!({ "type": "array", "items": column_schema(inner) }),
        ColumnType::Tuple(_) => json!({ "type": "array" }),
        ColumnType::Map(_, value) => {
            json!({ "type": "object", "additionalProperties": column_schema(value) })
        }
        _ => json!({ "type": "string", "description": ty.name() }),
    }
}
