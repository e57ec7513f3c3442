//! `GET /metrics`: Prometheus text exposition of what operators watch, so the server's
//! limits are visible before they bite: requests by route and status with their latency,
//! rows stored and quarantined per datasource, views and their lag behind the clock,
//! subscribers and their queued bytes, queries cancelled, views dropped to make room, and the
//! process's memory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

/// Request counters, by route template and status.
#[derive(Default)]
pub struct RequestMetrics {
    by_route: Mutex<BTreeMap<(String, u16), (u64, f64)>>,
}

impl RequestMetrics {
    fn record(&self, route: String, status: u16, seconds: f64) {
        let mut by_route = self.by_route.lock().unwrap_or_else(|e| e.into_inner());
        let entry = by_route.entry((route, status)).or_insert((0, 0.0));
        entry.0 += 1;
        entry.1 += seconds;
    }
}

/// Counts every request by its route template (not its path, so parameters and pipe names
/// do not blow up the series) and status, with the time to its response head.
pub async fn count_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let response = next.run(request).await;
    state.requests.record(
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The process's resident memory, from /proc (0 where there is none).
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// Escapes a label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /metrics` (admin).
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        &mut out,
        "petrel_http_requests_total",
        "counter",
        "HTTP requests by route template and status.",
    );
    let by_route = state
        .requests
        .by_route
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for ((route, status), (count, _)) in &by_route {
        let _ = writeln!(
            out,
            "petrel_http_requests_total{{route=\"{}\",status=\"{status}\"}} {count}",
            label(route)
        );
    }
    family(
        &mut out,
        "petrel_http_request_seconds_total",
        "counter",
        "Time to the response head, summed, by route template and status.",
    );
    for ((route, status), (_, seconds)) in &by_route {
        let _ = writeln!(
            out,
            "petrel_http_request_seconds_total{{route=\"{}\",status=\"{status}\"}} {seconds}",
            label(route)
        );
    }
    let runtime = &state.runtime;
    family(
        &mut out,
        "petrel_datasource_rows",
        "gauge",
        "Rows stored per datasource.",
    );
    let datasources = runtime.describe_datasources();
    for d in &datasources {
        let _ = writeln!(
            out,
            "petrel_datasource_rows{{datasource=\"{}\"}} {}",
            label(&d.name),
            d.row_count
        );
    }
    family(
        &mut out,
        "petrel_datasource_quarantined_rows",
        "gauge",
        "Rows in each datasource's quarantine table.",
    );
    for d in &datasources {
        let _ = writeln!(
            out,
            "petrel_datasource_quarantined_rows{{datasource=\"{}\"}} {}",
            label(&d.name),
            d.quarantine_rows
        );
    }
    let views = runtime.describe_views();
    let open = runtime.engine().open_ts();
    family(
        &mut out,
        "petrel_views",
        "gauge",
        "Maintained views and running ad-hoc queries.",
    );
    let _ = writeln!(out, "petrel_views {}", views.len());
    family(
        &mut out,
        "petrel_view_lag_milliseconds",
        "gauge",
        "How far each view's frontier is behind the clock's open tick.",
    );
    family(
        &mut out,
        "petrel_view_rows",
        "gauge",
        "Distinct rows each view holds.",
    );
    family(
        &mut out,
        "petrel_view_subscribers",
        "gauge",
        "Open subscriptions of each view.",
    );
    family(
        &mut out,
        "petrel_view_windows",
        "gauge",
        "Windows of each view that subscriptions with a LIMIT read (each counts under --max-views).",
    );
    for v in &views {
        let id = format!("id=\"{}\",label=\"{}\"", v.id, label(&v.label));
        let _ = writeln!(
            out,
            "petrel_view_lag_milliseconds{{{id}}} {}",
            open.saturating_sub(v.upper)
        );
        let _ = writeln!(out, "petrel_view_rows{{{id}}} {}", v.rows);
        let _ = writeln!(out, "petrel_view_subscribers{{{id}}} {}", v.subscribers);
        let _ = writeln!(out, "petrel_view_windows{{{id}}} {}", v.windows);
    }
    let buffers = runtime.subscriber_buffers();
    family(
        &mut out,
        "petrel_subscriber_queued_bytes",
        "gauge",
        "Bytes of frames queued for subscribers, not yet written.",
    );
    let _ = writeln!(
        out,
        "petrel_subscriber_queued_bytes {}",
        buffers.queued_bytes()
    );
    family(
        &mut out,
        "petrel_subscriber_queued_bytes_limit",
        "gauge",
        "--subscribers-buffer-bytes.",
    );
    let _ = writeln!(
        out,
        "petrel_subscriber_queued_bytes_limit {}",
        buffers.capacity
    );
    let limits = runtime.limit_counters();
    family(
        &mut out,
        "petrel_queries_cancelled_total",
        "counter",
        "Ad-hoc queries cancelled, by reason.",
    );
    let _ = writeln!(
        out,
        "petrel_queries_cancelled_total{{reason=\"timeout\"}} {}",
        limits.query_timeouts
    );
    let _ = writeln!(
        out,
        "petrel_queries_cancelled_total{{reason=\"abandoned\"}} {}",
        limits.queries_abandoned
    );
    let _ = writeln!(
        out,
        "petrel_queries_cancelled_total{{reason=\"max_rows\"}} {}",
        limits.queries_too_large
    );
    family(
        &mut out,
        "petrel_queries_refused_total",
        "counter",
        "Ad-hoc queries refused with 429 by --max-concurrent-queries.",
    );
    let _ = writeln!(
        out,
        "petrel_queries_refused_total {}",
        limits.queries_refused
    );
    family(
        &mut out,
        "petrel_views_dropped_for_room_total",
        "counter",
        "Views dropped to stay within --max-views.",
    );
    let _ = writeln!(
        out,
        "petrel_views_dropped_for_room_total {}",
        limits.views_dropped
    );
    family(
        &mut out,
        "petrel_views_refused_total",
        "counter",
        "Requests refused with 429 because subscribers held every view.",
    );
    let _ = writeln!(out, "petrel_views_refused_total {}", limits.views_refused);
    family(
        &mut out,
        "petrel_rows_waiting",
        "gauge",
        "Rows accepted by the Events API that some view has not read or the storage has not stored yet (--max-waiting-rows bounds it).",
    );
    let _ = writeln!(out, "petrel_rows_waiting {}", runtime.waiting_rows());
    family(
        &mut out,
        "petrel_resident_memory_bytes",
        "gauge",
        "The server process's resident memory.",
    );
    let _ = writeln!(out, "petrel_resident_memory_bytes {}", resident_bytes());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response()
}
