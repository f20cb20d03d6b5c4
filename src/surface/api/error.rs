//! The JSON API's one mapping from domain errors to HTTP:
//! `{"error": {"code": "snake_case", "message": "...", "field"?: "..."}}`.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::foundation::error::Error;

/// A domain error on its way out of an `/api` handler.
#[derive(Debug)]
pub struct ApiError(pub Error);

/// Result alias for `/api` handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl<E: Into<Error>> From<E> for ApiError {
    fn from(err: E) -> Self {
        ApiError(err.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let err = self.0;
        err.log_if_internal();
        let mut body = json!({ "code": err.code(), "message": err.public_message() });
        if let Some(field) = err.field() {
            body["field"] = json!(field);
        }
        let mut response = (err.status_code(), Json(json!({ "error": body }))).into_response();
        if let Error::RateLimited { retry_after_secs, .. } = err {
            if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}
