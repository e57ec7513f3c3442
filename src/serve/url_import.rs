//! Imports from a URL (`POST /v0/datasources?mode=append&name=DS&url=URL`), as Tinybird's
//! clients start them: the server fetches the file, appends its rows and answers the
//! finished job. `http(s)://` URLs are fetched directly; `s3://BUCKET/KEY` with the server's
//! AWS settings (the same environment its `--storage` uses). A fetch is bounded like a
//! request body (size, time), follows at most five redirects, and refuses link-local,
//! multicast and unspecified addresses (cloud metadata services live there), so a token that
//! may append cannot make the server reach them.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::IpAddr;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;

use super::{authorize, base_url, datasources, ApiError, AppState, Scope, MAX_BODY_BYTES};

/// How long fetching one file may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(300);

/// True for addresses a fetch must not reach.
fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_link_local() || v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| forbidden(IpAddr::V4(v4)))
        }
    }
}

/// Refuses a URL whose host resolves to a forbidden address.
async fn check_host(url: &reqwest::Url) -> Result<(), ApiError> {
    let host = url
        .host_str()
        .ok_or_else(|| ApiError::bad_request("the import URL has no host"))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot resolve '{host}': {e}")))?;
    for addr in addrs {
        if forbidden(addr.ip()) {
            return Err(ApiError::forbidden(format!(
                "imports do not reach {} (link-local, multicast or unspecified addresses)",
                addr.ip()
            )));
        }
    }
    Ok(())
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the imported file is over {MAX_BODY_BYTES} bytes"),
    )
}

/// The bytes at an `http(s)://` URL, bounded in size and time.
async fn fetch_http(url: reqwest::Url) -> Result<Bytes, ApiError> {
    check_host(&url).await?;
    let client = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            let literal_forbidden = attempt
                .url()
                .host_str()
                .and_then(|h| h.trim_matches(['[', ']']).parse::<IpAddr>().ok())
                .is_some_and(forbidden);
            if attempt.previous().len() >= 5 || literal_forbidden {
                attempt.stop()
            } else {
                attempt.follow()
            }
        }))
        .build()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot fetch {url}: {e}")))?;
    if !response.status().is_success() {
        return Err(ApiError::bad_request(format!(
            "fetching {url} answered HTTP {}",
            response.status()
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot fetch {url}: {e}")))?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

/// The object at `s3://BUCKET/KEY`, with the server's AWS settings.
async fn fetch_s3(url: &str) -> Result<Bytes, ApiError> {
    use object_store::ObjectStoreExt as _;
    let rest = url.trim_start_matches("s3://");
    let (bucket, key) = rest
        .split_once('/')
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        .ok_or_else(|| ApiError::bad_request("an s3:// import URL is s3://BUCKET/KEY"))?;
    let store = crate::storage::s3_builder(bucket)
        .build()
        .map_err(|e| ApiError::bad_request(format!("cannot reach {url}: {e}")))?;
    let path = object_store::path::Path::from(key);
    let got = tokio::time::timeout(FETCH_TIMEOUT, async {
        let result = store.get(&path).await?;
        if result.meta.size > MAX_BODY_BYTES as u64 {
            return Ok(None);
        }
        result.bytes().await.map(Some)
    })
    .await
    .map_err(|_| ApiError::bad_request(format!("fetching {url} took over {FETCH_TIMEOUT:?}")))?
    .map_err(|e| ApiError::bad_request(format!("cannot fetch {url}: {e}")))?;
    got.ok_or_else(too_large)
}

/// The format a file's name says (`.csv`, `.ndjson`, `.jsonl`, `.json`, `.parquet`, each
/// maybe followed by `.gz`).
fn format_of(path: &str) -> Option<&'static str> {
    let path = path.trim_end_matches(".gz");
    let ext = path.rsplit('.').next()?.to_ascii_lowercase();
    match ext.as_str() {
        "csv" => Some("csv"),
        "ndjson" | "jsonl" | "json" => Some("ndjson"),
        "parquet" => Some("parquet"),
        _ => None,
    }
}

/// Gunzips `data` when it is gzip (by its magic bytes), bounded like a body.
fn gunzipped(data: Bytes) -> Result<Bytes, ApiError> {
    if !data.starts_with(&[0x1f, 0x8b]) {
        return Ok(data);
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&data[..])
        .take(MAX_BODY_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::bad_request(format!("the imported file is not valid gzip: {e}")))?;
    if out.len() > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(out.into())
}

/// Fetches `params["url"]` and appends its rows to `name` (DATASOURCES:APPEND); answers the
/// finished job with its `job_url`.
pub(super) async fn import(
    state: &AppState,
    name: &str,
    params: &BTreeMap<String, String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    authorize(
        state,
        headers,
        params,
        &Scope::DatasourcesAppend(name.to_string()),
    )?;
    let url = params.get("url").map(String::as_str).unwrap_or_default();
    let (data, path) = if url.starts_with("s3://") {
        (fetch_s3(url).await?, url.to_string())
    } else {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| ApiError::bad_request(format!("'{url}' is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ApiError::bad_request(format!(
                "'{url}': imports read http://, https:// or s3:// URLs"
            )));
        }
        let path = parsed.path().to_string();
        (fetch_http(parsed).await?, path)
    };
    let data = gunzipped(data)?;
    let mut params = params.clone();
    if !params.contains_key("format") {
        if let Some(format) = format_of(&path) {
            params.insert("format".into(), format.into());
        }
    }
    // The fetched file is the body; the request's own content type says nothing about it.
    let mut headers = headers.clone();
    headers.remove(axum::http::header::CONTENT_TYPE);
    let report = datasources::append_rows(state, name, &params, &headers, data).await?;
    let mut job = state
        .jobs
        .record(name, report.successful_rows, report.quarantined_rows);
    if let (Some(base), Some(id)) = (base_url(&headers), job["id"].as_str()) {
        job["job_url"] = serde_json::json!(format!("{base}/v0/jobs/{id}"));
    }
    job["url"] = serde_json::json!(url);
    Ok(Json(job).into_response())
}
