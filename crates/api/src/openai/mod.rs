//! OpenAI-compatible ingress: `/v1/models`, `/v1/chat/completions`, `/v1/completions`.

pub mod parse;
mod shape;

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use infermesh_backend::{BackendError, InferEvent, InferStream};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::OpenAiError;
use crate::node::{LocalModel, Node};
use parse::Parsed;
pub use shape::Shape;

fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

pub async fn list_models(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    let created = unix_now();
    let data: Vec<_> = node
        .serving_models()
        .into_iter()
        .map(|id| json!({"id": id, "object": "model", "created": created, "owned_by": "infermesh"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

pub async fn chat_completions(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    match parse::chat(&body) {
        Ok(p) => serve(node, p, Shape::Chat).await,
        Err(e) => e.into_response(),
    }
}

pub async fn completions(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    match parse::completion(&body) {
        Ok(p) => serve(node, p, Shape::Text).await,
        Err(e) => e.into_response(),
    }
}

pub fn backend_error(e: BackendError) -> OpenAiError {
    match e {
        BackendError::BadRequest(m) => OpenAiError::bad_request(m, None),
        BackendError::UnknownModel(m) => OpenAiError::model_not_found(&m),
        BackendError::Unavailable(m) => OpenAiError::unavailable(m),
        BackendError::Failed(m) => OpenAiError::internal(m),
    }
}

async fn serve(node: Arc<Node>, p: Parsed, shape: Shape) -> Response {
    let backend = match node.find_local(&p.req.model) {
        LocalModel::Ready(b) => b,
        LocalModel::NotReady(why) => return OpenAiError::unavailable(why).into_response(),
        LocalModel::Absent => return OpenAiError::model_not_found(&p.req.model).into_response(),
    };
    let guard = node.begin_request();
    let mut events = match backend.infer(p.req.clone()).await {
        Ok(rx) => rx,
        Err(e) => return backend_error(e).into_response(),
    };
    // Wait for the first event before committing to a status: an early failure (prompt too long)
    // is then a proper HTTP error, and nothing has reached the client yet.
    let first = match events.recv().await {
        Some(Ok(ev)) => ev,
        Some(Err(e)) => return backend_error(e).into_response(),
        None => return OpenAiError::internal("backend ended without an answer").into_response(),
    };
    let meta = shape::Meta::new(shape, &p.req.model, unix_now());
    if p.stream {
        stream(meta, first, events, p.include_usage, guard).into_response()
    } else {
        collect(meta, first, events).await.into_response()
    }
}

async fn collect(meta: shape::Meta, first: InferEvent, mut events: InferStream) -> Response {
    let mut text = String::new();
    let mut next = Some(Ok(first));
    loop {
        match next {
            Some(Ok(InferEvent::Text(t))) => text.push_str(&t),
            Some(Ok(InferEvent::Done {
                finish_reason,
                usage,
                ..
            })) => return Json(meta.full(&text, finish_reason, usage)).into_response(),
            Some(Err(e)) => return backend_error(e).into_response(),
            None => return OpenAiError::internal("backend ended mid-answer").into_response(),
        }
        next = events.recv().await;
    }
}

/// Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`. The forwarding task
/// ends when the client disconnects, which drops `events` and so cancels generation.
fn stream(
    meta: shape::Meta,
    first: InferEvent,
    mut events: InferStream,
    include_usage: bool,
    guard: crate::node::InFlight,
) -> impl IntoResponse {
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(32);
    tokio::spawn(async move {
        let _guard = guard;
        let send = |v: serde_json::Value| {
            let tx = tx.clone();
            async move {
                tx.send(Ok(Event::default().data(v.to_string())))
                    .await
                    .is_ok()
            }
        };
        if !send(meta.chunk(Some(""), true, None)).await {
            return;
        }
        let mut next = Some(Ok(first));
        loop {
            match next {
                Some(Ok(InferEvent::Text(t))) => {
                    if !send(meta.chunk(Some(&t), false, None)).await {
                        return;
                    }
                }
                Some(Ok(InferEvent::Done {
                    finish_reason,
                    usage,
                    ..
                })) => {
                    send(meta.chunk(None, false, Some(finish_reason))).await;
                    if include_usage {
                        send(meta.usage_chunk(usage)).await;
                    }
                    break;
                }
                Some(Err(e)) => {
                    send(backend_error(e).body()).await;
                    break;
                }
                None => {
                    send(OpenAiError::internal("backend ended mid-answer").body()).await;
                    break;
                }
            }
            next = events.recv().await;
        }
        let _ = tx.send(Ok(Event::default().data("[DONE]"))).await;
    });
    Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default())
}
