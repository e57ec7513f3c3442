//! Deployments as Tinybird Forward's clients follow them (`tb deploy`, `tb deployment ls`):
//! each deploy that changes the project is numbered, goes live at once (Petrel swaps a
//! validated project in place, so there is no staging step to wait for) and retires the
//! deployment before it. The record is kept in `.petrel/deployments.json` so the numbering
//! and history survive restarts. The project a server first starts with is deployment 0, as
//! Tinybird's seed deployment.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value as JsonValue};

use super::{authorize, ApiError, AppState, Scope};
use crate::runtime::DeployReport;

/// One recorded deployment.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Record {
    id: u64,
    created_at: String,
    updated_at: String,
    live: bool,
    /// What the deployment changed (the deploy report's fields).
    changes: JsonValue,
}

/// The deployments of this server's workspace, newest last.
pub struct Deployments {
    path: PathBuf,
    records: Mutex<Vec<Record>>,
}

fn now_stamp() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    petrel_value::Value::DateTime64(micros, 6).to_text()
}

impl Deployments {
    /// The deployments recorded at `path` (none yet when it is missing or unreadable).
    pub fn load(path: PathBuf) -> Deployments {
        let records = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable deployment history");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        Deployments {
            path,
            records: Mutex::new(records),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Record>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a deploy that went live and retires the previous live deployment; returns the
    /// new deployment as clients read it.
    pub fn record(&self, report: &DeployReport) -> JsonValue {
        let mut records = self.lock();
        if records.is_empty() {
            records.push(seed());
        }
        let now = now_stamp();
        for r in records.iter_mut().filter(|r| r.live) {
            r.live = false;
            r.updated_at = now.clone();
        }
        let id = records.last().map_or(1, |r| r.id + 1);
        let record = Record::new(id, true, serde_json::to_value(report).unwrap_or_default());
        records.push(record.clone());
        if let Err(e) = self.save(&records) {
            tracing::warn!(error = %e, "the deployment history was not saved");
        }
        describe(&record)
    }

    fn save(&self, records: &[Record]) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(records).unwrap_or_default())?;
        std::fs::rename(tmp, &self.path)
    }

    /// Every deployment, newest first; retired ones only with `include_deleted`.
    fn list(&self, include_deleted: bool) -> Vec<JsonValue> {
        let records = self.lock();
        if records.is_empty() {
            return vec![describe(&seed())];
        }
        records
            .iter()
            .rev()
            .filter(|r| include_deleted || r.live)
            .map(describe)
            .collect()
    }

    /// The live deployment.
    pub fn live(&self) -> JsonValue {
        let records = self.lock();
        records
            .iter()
            .find(|r| r.live)
            .map_or_else(|| describe(&seed()), describe)
    }

    fn get(&self, id: u64) -> Option<JsonValue> {
        let records = self.lock();
        if records.is_empty() && id == 0 {
            return Some(describe(&seed()));
        }
        records.iter().find(|r| r.id == id).map(describe)
    }
}

impl Record {
    /// A deployment created now.
    fn new(id: u64, live: bool, changes: JsonValue) -> Record {
        let now = now_stamp();
        Record {
            id,
            created_at: now.clone(),
            updated_at: now,
            live,
            changes,
        }
    }
}

/// Deployment 0: the project the server started with, before any deploy.
fn seed() -> Record {
    Record::new(0, true, json!({}))
}

/// A deployment as Tinybird's API describes it.
fn describe(r: &Record) -> JsonValue {
    let mut out = json!({
        "id": r.id.to_string(),
        "status": if r.live { "data_ready" } else { "deleted" },
        "live": r.live,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "errors": [],
        "feedback": [],
        "new_data_connector_names": [],
        "changed_data_connector_names": [],
        "deleted_data_connector_names": [],
        "new_data_connector_ids": [],
    });
    for key in [
        "new_datasource_names",
        "changed_datasource_names",
        "deleted_datasource_names",
        "new_pipe_names",
        "changed_pipe_names",
        "deleted_pipe_names",
    ] {
        out[key] = r.changes.get(key).cloned().unwrap_or_else(|| json!([]));
    }
    out
}

/// The deploy report's changes in a deployment's shape, for a check or a failed deploy
/// (no deployment is recorded for either).
pub fn unrecorded(status: &str, report: Option<&DeployReport>, errors: JsonValue) -> JsonValue {
    let changes = report
        .and_then(|r| serde_json::to_value(r).ok())
        .unwrap_or_else(|| json!({}));
    let mut out = describe(&Record::new(0, false, changes));
    out["id"] = JsonValue::Null;
    out["status"] = json!(status);
    out["errors"] = errors;
    out
}

/// The deployment `id` names, or a 404.
fn find(state: &AppState, id: &str) -> Result<JsonValue, ApiError> {
    id.parse()
        .ok()
        .and_then(|n| state.deployments.get(n))
        .ok_or_else(|| ApiError::not_found(format!("there is no deployment '{id}'")))
}

/// `GET /v1/deployments[?include_deleted=true]` (admin): the live deployment, newest first,
/// with the retired ones when asked.
pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    let include_deleted = params
        .get("include_deleted")
        .is_some_and(|v| v == "true" || v == "1");
    Ok(Json(json!({"deployments": state.deployments.list(include_deleted)})).into_response())
}

/// `GET /v1/deployments/ID` (admin): one deployment.
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    let deployment = find(&state, &id)?;
    Ok(Json(json!({ "deployment": deployment })).into_response())
}

/// `POST /v1/deployments/ID/set-live` (admin): every deployment is live as soon as it is
/// created, so promoting the live one answers it; any other is refused.
pub async fn set_live(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    let deployment = find(&state, &id)?;
    if deployment["live"] != json!(true) {
        return Err(ApiError::bad_request(format!(
            "deployment {id} was retired: Petrel makes each deployment live when it is created; deploy the project again to return to it"
        )));
    }
    Ok(Json(json!({ "result": "success", "deployment": deployment })).into_response())
}

/// `DELETE /v1/deployments/ID` (admin): a retired deployment is already deleted; the live
/// one cannot be (deploy another project instead).
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    let deployment = find(&state, &id)?;
    if deployment["live"] == json!(true) {
        return Err(ApiError::bad_request(format!(
            "deployment {id} is live and cannot be deleted: deploy another project instead"
        )));
    }
    Ok(Json(json!({ "result": "success", "deployment": deployment })).into_response())
}
