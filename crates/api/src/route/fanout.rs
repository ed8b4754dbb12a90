//! `n > 1`: the request's choices come from `n` sub-requests of one choice, each dispatched as a
//! request of its own (so each is routed, balanced, failed over and recorded like any other, and
//! they run side by side on the engine's slots or on several replicas); the answers are merged
//! into one ([`crate::openai::choices`]).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use infermesh_state::sse::SseParser;
use serde_json::Value;

use super::{dispatch, FromPeer};
use crate::app::App;
use crate::error::OpenAiError;
use crate::openai::choices::{merge_answers, sub_body, StreamMerge};
use crate::openai::{parse, Shape};

/// A non-streamed sub-answer larger than this is not an answer to merge.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// Each sub-request holds its own copy of the body while it runs, outside the shared body
/// budget; this bounds what one request for several choices can hold.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Answers a request for `n` choices from `n` sub-requests.
pub(super) async fn choices(
    app: Arc<App>,
    peer: FromPeer,
    body: &[u8],
    n: u8,
    stream: bool,
    shape: Shape,
) -> Response {
    if body.len() > MAX_BODY_BYTES {
        return OpenAiError::bad_request(
            format!(
                "a request for several choices (`n` = {n}) is limited to {MAX_BODY_BYTES} bytes \
                 (this one has {}); send it with `n` = 1, once per choice",
                body.len()
            ),
            Some("n"),
        )
        .into_response();
    }
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        // The body parsed a moment ago; this cannot fail, but is not worth a panic.
        return OpenAiError::bad_request("invalid JSON body", None).into_response();
    };
    let subs = (0..n).map(|i| {
        let (app, peer) = (app.clone(), peer.clone());
        let sub = Bytes::from(sub_body(&value, i).to_string());
        async move {
            let parsed = match shape {
                Shape::Chat => parse::chat(&sub),
                Shape::Text => parse::completion(&sub),
            };
            match parsed {
                Ok(p) => dispatch(app, p, shape, sub, peer).await,
                Err(e) => e.into_response(),
            }
        }
    });
    let answers = futures::future::join_all(subs).await;
    // One refused sub-request refuses the request: a partial set of choices is not the answer
    // that was asked for. The others' records say what they did.
    if let Some(i) = answers.iter().position(|r| !r.status().is_success()) {
        return answers.into_iter().nth(i).expect("position is in range");
    }
    if stream {
        merged_stream(answers)
    } else {
        merged_answer(answers).await
    }
}

async fn merged_answer(answers: Vec<Response>) -> Response {
    let mut bodies = Vec::with_capacity(answers.len());
    for resp in answers {
        let bytes = match axum::body::to_bytes(resp.into_body(), MAX_ANSWER_BYTES).await {
            Ok(b) => b,
            Err(e) => return upstream_error(format!("a choice's answer was cut off: {e}")),
        };
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => bodies.push(v),
            Err(e) => return upstream_error(format!("a choice's answer is not JSON: {e}")),
        }
    }
    match merge_answers(bodies) {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => upstream_error(e),
    }
}

fn upstream_error(message: String) -> Response {
    OpenAiError {
        status: StatusCode::BAD_GATEWAY,
        kind: "server_error",
        ..OpenAiError::internal(message)
    }
    .into_response()
}

/// The `n` event streams as one: chunks as they come, each choice under its index, then one
/// usage chunk (when asked for) and one `[DONE]`.
fn merged_stream(answers: Vec<Response>) -> Response {
    let subs: Vec<BoxStream<'static, (usize, String)>> = answers
        .into_iter()
        .enumerate()
        .map(|(i, resp)| events(i, resp.into_body()))
        .collect();
    let merged = stream::select_all(subs);
    let body = stream::unfold(
        (merged, StreamMerge::default(), false),
        |(mut events, mut merge, ended)| async move {
            if ended {
                return None;
            }
            loop {
                match events.next().await {
                    Some((i, data)) => {
                        if let Some(out) = merge.chunk(i, &data) {
                            let bytes = Bytes::from(format!("data: {out}\n\n"));
                            return Some((
                                Ok::<_, std::convert::Infallible>(bytes),
                                (events, merge, false),
                            ));
                        }
                    }
                    None => {
                        let tail: String = merge
                            .trailer()
                            .iter()
                            .map(|d| format!("data: {d}\n\n"))
                            .collect();
                        return Some((Ok(Bytes::from(tail)), (events, merge, true)));
                    }
                }
            }
        },
    );
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// Sub-stream `i`'s SSE `data` payloads, in order.
fn events(i: usize, body: Body) -> BoxStream<'static, (usize, String)> {
    let chunks = body.into_data_stream();
    stream::unfold(
        (chunks, SseParser::new(), false),
        move |(mut chunks, mut parser, ended)| async move {
            if ended {
                return None;
            }
            let (batch, ended) = match chunks.next().await {
                Some(Ok(bytes)) => (parser.push(&bytes), false),
                // A sub-stream that breaks ends here; the merged stream goes on with the others.
                Some(Err(_)) | None => (parser.finish(), true),
            };
            let out: Vec<(usize, String)> = batch.into_iter().map(|e| (i, e.data)).collect();
            Some((stream::iter(out), (chunks, parser, ended)))
        },
    )
    .flatten()
    .boxed()
}
