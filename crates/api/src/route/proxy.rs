//! Forwarding one attempt to a peer: the peer's answer is streamed through as it arrives, and
//! the attempt only counts as committed once the first byte of the body is in hand.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::Response;
use futures::{stream, StreamExt};

use super::Target;
use crate::app::App;
use crate::error::{error_chain, OpenAiError};

/// Set by a router on a continuation request it sends to a peer (see `resume`). Only honoured
/// from an authenticated member, and only together with the body's `infermesh_continue`: a
/// client's body that happens to carry the field is forwarded without the header and continues
/// nothing.
pub const CONTINUE_HEADER: &str = "x-infermesh-continue";

/// Statuses that say "this replica cannot answer now" rather than "the request is wrong": the
/// next replica may succeed. 404 is here because the peer may have dropped the model after our
/// view of it was gossiped.
fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::NOT_FOUND
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// Sends the original body to `path` of the peer at `base` over the peer channel. `Err((error, retry))`
/// means nothing reached the client.
pub async fn forward(
    app: &Arc<App>,
    target: &Target,
    base: &str,
    path: &str,
    body: Bytes,
    continuing: bool,
) -> Result<Response, (OpenAiError, bool)> {
    let unreachable = |what: String| {
        (
            OpenAiError::unavailable(format!("{} {what}", target.name)),
            true,
        )
    };
    let Some(http) = app.peer_http.as_ref() else {
        return Err(unreachable(
            "cannot be reached: this node has no peer channel".into(),
        ));
    };
    let outstanding = app.balance.begin_outstanding(&target.node_id);
    let mut req = http
        .post(format!("{base}{path}"))
        .header(header::CONTENT_TYPE, "application/json");
    if continuing {
        req = req.header(CONTINUE_HEADER, "1");
    }
    let resp = req
        .body(body)
        .send()
        .await
        .map_err(|e| unreachable(format!("is unreachable: {}", error_chain(&e))))?;
    let status = resp.status();
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let retry_after_s = resp
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let mut chunks = resp.bytes_stream();
    // Wait for the first body byte: a peer that dies after the headers is still a failed
    // attempt we can retry, because the client has seen nothing.
    let first = loop {
        match chunks.next().await {
            Some(Ok(b)) if b.is_empty() => continue,
            Some(Ok(b)) => break b,
            Some(Err(e)) => {
                return Err(unreachable(format!(
                    "broke off before answering: {}",
                    error_chain(&e)
                )))
            }
            None => return Err(unreachable("answered with an empty body".into())),
        }
    };
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&first)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&first).into_owned());
        let err = OpenAiError {
            status,
            message,
            kind: if status.is_client_error() {
                "invalid_request_error"
            } else {
                "server_error"
            },
            param: None,
            code: None,
            retry_after_s,
        };
        return Err((err, retryable(status)));
    }
    let rest = chunks.map(move |r| {
        // Keeps the outstanding count up while the answer streams.
        let _ = &outstanding;
        r.map_err(|e| std::io::Error::other(error_chain(&e)))
    });
    let body = Body::from_stream(stream::once(async move { Ok(first) }).chain(rest));
    let mut builder = Response::builder().status(status);
    if let Some(ct) = content_type {
        builder = builder.header(header::CONTENT_TYPE, ct);
    }
    Ok(builder
        .body(body)
        .expect("status and content type are valid"))
}
