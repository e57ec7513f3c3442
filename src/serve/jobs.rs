//! Import jobs as Tinybird's clients follow them: `POST /v1/datasources/NAME/append` answers
//! a job id, and `GET /v0/jobs/ID` its status and counts. Petrel appends synchronously (the
//! answer comes once the rows are durable and visible), so a job is done when it is listed;
//! the last jobs are kept in memory for clients to read back.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde_json::{json, Value as Json};

use super::*;

/// How many finished jobs are kept for clients to read back.
const KEPT: usize = 1_000;

/// The last import jobs of this server.
#[derive(Debug, Default)]
pub struct Jobs {
    next: AtomicU64,
    done: Mutex<VecDeque<Json>>,
}

impl Jobs {
    /// Records a finished import into `datasource` and returns the job as clients read it.
    pub(super) fn record(&self, datasource: &str, successful: usize, quarantined: usize) -> Json {
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let id = crate::project::resource_id(&format!("job:{n}:{datasource}"));
        let now = petrel_value::Value::DateTime64(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as i64)
                .unwrap_or(0),
            6,
        )
        .to_text();
        let job = json!({
            "id": id,
            "job_id": id,
            "import_id": id,
            "kind": "import",
            "status": "done",
            "created_at": now,
            "updated_at": now,
            "datasource": { "name": datasource },
            "successful_rows": successful,
            "quarantined_rows": quarantined,
            "blocks": [{ "process_return": [{ "lines": successful, "quarantine": quarantined }] }],
            "block_log": [{ "block_id": id, "status": "done" }],
        });
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        done.push_back(job.clone());
        while done.len() > KEPT {
            done.pop_front();
        }
        job
    }

    fn get(&self, id: &str) -> Option<Json> {
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        done.iter().find(|j| j["id"] == id).cloned()
    }

    fn list(&self) -> Vec<Json> {
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        done.iter().rev().cloned().collect()
    }
}

/// `POST /v1/datasources/NAME/append?format=ndjson|csv|parquet` (DATASOURCES:APPEND) with the
/// rows as the body, or `url=` a file to fetch: appends them as `POST /v0/datasources?mode=append`
/// does and answers the finished job.
pub(super) async fn append(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if params.contains_key("url") {
        return super::url_import::import(&state, &name, &params, &headers).await;
    }
    let report = datasources::append_rows(&state, &name, &params, &headers, body).await?;
    let job = state
        .jobs
        .record(&name, report.successful_rows, report.quarantined_rows);
    Ok(Json(job).into_response())
}

/// `GET /v0/jobs/ID` (any valid token): a job this server ran.
pub(super) async fn job(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    known_token(&state, &headers, &params)?;
    match state.jobs.get(&id) {
        Some(job) => Ok(Json(job).into_response()),
        None => Err(ApiError::not_found(format!("Job '{id}' not found"))),
    }
}

/// `GET /v0/jobs` (any valid token): the last jobs, newest first.
pub(super) async fn jobs(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    known_token(&state, &headers, &params)?;
    Ok(Json(json!({ "jobs": state.jobs.list() })).into_response())
}
