//! The console's data calls on keys and usage are the admin API's own: each
//! is passed to its `/v1/...` route with the admin token, so the console
//! shows and does exactly what the API does (the same checks, the same JSON
//! errors) and never holds a copy of its logic. Only an allow-listed set of
//! routes is reachable this way (see `super::router`).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceExt;

use crate::http::error::ApiError;
use crate::http::AppState;

/// The prefix of the console's data calls that the admin API answers.
pub const PREFIX: &str = "/console/api";

/// `/console/api/keys?x` -> `/v1/keys?x`.
pub fn admin_path(uri: &Uri) -> Option<String> {
    let path = uri.path().strip_prefix(PREFIX)?;
    if !path.starts_with('/') {
        return None;
    }
    Some(match uri.query() {
        Some(query) => format!("/v1{path}?{query}"),
        None => format!("/v1{path}"),
    })
}

/// Passes `request` (already checked: a session, and for a POST its CSRF
/// token) to the admin API's route, with the admin token and the request's
/// body and content type, and nothing else of what the browser sent.
pub async fn to_admin_api(state: &AppState, admin_api: Router, request: Request) -> Response {
    let Some(token) = state.auth.admin_token.as_deref() else {
        return ApiError::AdminApiDisabled.into_response();
    };
    let Some(path) = admin_path(request.uri()) else {
        return ApiError::NoRoute.into_response();
    };
    let (parts, body) = request.into_parts();
    let mut inner = Request::new(Body::new(body));
    // Nothing of the outer request's extensions: its path parameters would
    // be taken for the admin route's own. The admin route applies axum's
    // default body limit (2 MiB), far above any console call.
    *inner.method_mut() = parts.method;
    let Ok(uri) = path.parse() else {
        return ApiError::NoRoute.into_response();
    };
    *inner.uri_mut() = uri;
    if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
        inner
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type.clone());
    }
    let Ok(bearer) = HeaderValue::from_str(&format!("Bearer {token}")) else {
        return ApiError::AdminApiDisabled.into_response();
    };
    inner.headers_mut().insert(header::AUTHORIZATION, bearer);
    match admin_api.oneshot(inner).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_paths_map_onto_the_admin_api() {
        let map = |uri: &str| admin_path(&uri.parse().unwrap());
        assert_eq!(map("/console/api/keys").as_deref(), Some("/v1/keys"));
        assert_eq!(
            map("/console/api/keys/3/usage/series?window=day").as_deref(),
            Some("/v1/keys/3/usage/series?window=day")
        );
        assert_eq!(map("/console/apikeys"), None);
        assert_eq!(map("/v1/keys"), None);
    }
}
