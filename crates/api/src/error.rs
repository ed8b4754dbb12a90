//! Error bodies. OpenAI routes (and unknown routes, which an OpenAI client reaches with a wrong
//! base URL) answer in OpenAI's shape so unmodified clients surface the message; the node's own
//! routes answer `{"error": "..."}`.

use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Sent as `Retry-After` (seconds): when a busy replica expects to take the request.
    pub retry_after_s: Option<u32>,
}

impl OpenAiError {
    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
            retry_after_s: None,
        }
    }

    pub fn model_not_found(model: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("The model `{model}` does not exist or is not served by this mesh"),
            kind: "invalid_request_error",
            param: Some("model".into()),
            code: Some("model_not_found"),
            retry_after_s: None,
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            kind: "service_unavailable",
            param: None,
            code: None,
            retry_after_s: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
            retry_after_s: None,
        }
    }

    /// Every slot of the replica is busy: 503 with `Retry-After`, the client's cue to back off.
    pub fn overloaded(message: impl Into<String>, retry_after_s: u32) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            kind: "server_overloaded",
            param: None,
            code: Some("server_overloaded"),
            retry_after_s: Some(retry_after_s),
        }
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body())).into_response();
        if let Some(s) = self.retry_after_s {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// `{"error": message}` with a status, for the node's own routes.
pub fn plain_error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({"error": message.to_string()}))).into_response()
}

/// Unknown routes answer like OpenAI's own API does, so a client with a mistyped base URL reports
/// the path it actually called instead of failing to parse the error.
pub async fn not_found(method: Method, uri: Uri) -> Response {
    OpenAiError {
        status: StatusCode::NOT_FOUND,
        message: format!("Invalid URL ({method} {}): no such route", uri.path()),
        kind: "invalid_request_error",
        param: None,
        code: Some("unknown_url"),
        retry_after_s: None,
    }
    .into_response()
}

pub use infermesh_backend::api::error_chain;
