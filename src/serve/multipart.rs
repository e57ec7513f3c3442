//! `multipart/form-data` bodies, as Tinybird's clients send them: the Forward CLI's deploys
//! and builds (one `data_project://` part per datafile) and the Classic CLI's file appends
//! (one `csv`, `ndjson` or `parquet` part). The body is already read and bounded by the
//! router's body limit, so the parts are parsed from memory.

use axum::http::{header, HeaderMap};
use bytes::Bytes;

use super::ApiError;

/// One part of a form body.
pub struct Part {
    /// The form field's name (`data_project://`, `csv`, ...).
    pub name: String,
    /// The part's file name, when it has one (a datafile's relative path, an upload's name).
    pub file_name: Option<String>,
    /// The part's bytes.
    pub data: Bytes,
}

/// The form's boundary when `headers` say the body is `multipart/form-data`, else `None`.
pub fn boundary(headers: &HeaderMap) -> Option<String> {
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    if !content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        return None;
    }
    multer::parse_boundary(content_type).ok()
}

/// Every part of a `multipart/form-data` body, in order; a malformed body is a 400.
pub async fn parts(boundary: &str, body: Bytes) -> Result<Vec<Part>, ApiError> {
    let stream = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let bad = |e: multer::Error| ApiError::bad_request(format!("malformed multipart body: {e}"));
    let mut out = Vec::new();
    while let Some(field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let data = field.bytes().await.map_err(bad)?;
        out.push(Part {
            name,
            file_name,
            data,
        });
    }
    Ok(out)
}
