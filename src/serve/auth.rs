//! Who may do what: the request's token (header or `token=`), checked against the scope a
//! route needs, including JWTs and their fixed parameters.

use super::*;

/// The token of a request: `Authorization: Bearer T`, else `?token=T`.
pub(super) fn request_token<'a>(
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

pub(super) fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    params: &BTreeMap<String, String>,
    scope: &Scope,
) -> Result<(), ApiError> {
    grant(state, headers, params, scope).map(|_| ())
}

/// Checks the request's token for `scope` and returns what it grants.
pub(super) fn grant(
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
pub(super) fn known_token<'a>(
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
