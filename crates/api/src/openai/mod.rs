//! OpenAI-compatible answers produced by this node's own backends. Which node answers is decided
//! in [`crate::route`].

pub mod choices;
pub mod parse;
mod shape;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use infermesh_backend::{Backend, BackendError, InferEvent, InferStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::OpenAiError;
use crate::node::{LocalModel, Node};
use parse::Parsed;
pub use shape::Shape;

pub(crate) fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

/// A local attempt that did not produce an answer. `retry` says another replica may succeed
/// (the backend is loading, failed or overloaded), as opposed to a request that is itself wrong.
#[derive(Debug)]
pub struct LocalFailure {
    pub error: OpenAiError,
    pub retry: bool,
}

impl From<BackendError> for LocalFailure {
    fn from(e: BackendError) -> Self {
        let retry = matches!(
            e,
            BackendError::Unavailable(_)
                | BackendError::Failed(_)
                | BackendError::Overloaded { .. }
        );
        Self {
            error: backend_error(e),
            retry,
        }
    }
}

pub fn backend_error(e: BackendError) -> OpenAiError {
    match e {
        BackendError::BadRequest(m) => OpenAiError::bad_request(m, None),
        BackendError::BadParam { message, param } => {
            OpenAiError::bad_request(message, Some(&param))
        }
        BackendError::Overloaded {
            message,
            retry_after_s,
        } => OpenAiError::overloaded(message, retry_after_s),
        BackendError::UnknownModel(m) => OpenAiError::model_not_found(&m),
        BackendError::Unavailable(m) => OpenAiError::unavailable(m),
        BackendError::Failed(m) => OpenAiError::internal(m),
    }
}

fn ended_early(what: &str) -> LocalFailure {
    LocalFailure {
        error: OpenAiError::internal(format!("backend ended {what}")),
        retry: true,
    }
}

/// This node's own backend for `model`, or why it cannot answer (another replica may).
pub fn local_backend(node: &Node, model: &str) -> Result<Arc<dyn Backend>, LocalFailure> {
    let error = match node.find_local(model) {
        LocalModel::Ready(b) => return Ok(b),
        LocalModel::NotReady(why) => OpenAiError::unavailable(why),
        LocalModel::Absent => OpenAiError::model_not_found(model),
    };
    Err(LocalFailure { error, retry: true })
}

/// Runs `p` on this node's own backend. Nothing reaches the client before this returns `Ok`, so
/// an `Err` with `retry` can still be sent to another replica.
pub async fn serve_local(
    node: Arc<Node>,
    p: &Parsed,
    shape: Shape,
) -> Result<Response, LocalFailure> {
    let backend = local_backend(&node, &p.req.model)?;
    let guard = node.begin_request(p.req.priority != infermesh_state::Priority::Validation);
    // An answer the remote already shapes as OpenAI JSON goes out as it came: whole, or as its
    // own events.
    if !p.stream {
        if let Some(answer) = backend.complete(&p.req).await {
            return Ok(Json(answer?).into_response());
        }
    } else if let Some(events) = backend.stream(&p.req, p.include_usage).await {
        return Ok(relayed(events?, guard));
    }
    let mut events = backend.infer(p.req.clone()).await?;
    // Wait for the first event before committing to a status: an early failure (prompt too long)
    // is then a proper HTTP error, and nothing has reached the client yet.
    let first = match events.recv().await {
        Some(Ok(ev)) => ev,
        Some(Err(e)) => return Err(e.into()),
        None => return Err(ended_early("without an answer")),
    };
    let meta = shape::Meta::new(shape, &p.req.model, unix_now());
    let logprobs = p.req.params.logprobs.is_some();
    if p.stream {
        Ok(stream(meta, first, events, p.include_usage, logprobs, guard).into_response())
    } else {
        collect(meta, first, events, logprobs).await
    }
}

/// A remote's own event stream as the response, counted in flight until it ends.
fn relayed(events: infermesh_backend::EventStream, guard: crate::node::InFlight) -> Response {
    let body = events.map(move |b| {
        let _ = &guard;
        Ok::<_, Infallible>(b)
    });
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/event-stream"),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

/// A non-streamed answer is assembled before anything is sent, so even a failure mid-generation
/// is still retryable elsewhere.
async fn collect(
    meta: shape::Meta,
    first: InferEvent,
    mut events: InferStream,
    logprobs: bool,
) -> Result<Response, LocalFailure> {
    let mut text = String::new();
    let mut lps = Vec::new();
    let mut calls = Vec::new();
    let mut next: Option<Result<InferEvent, BackendError>> = Some(Ok(first));
    loop {
        match next {
            Some(Ok(InferEvent::Text(t))) => text.push_str(&t),
            Some(Ok(InferEvent::Logprobs(l))) => lps.extend(l),
            Some(Ok(InferEvent::ToolCalls(c))) => calls.push(c),
            Some(Ok(InferEvent::Done {
                finish_reason,
                usage,
                ..
            })) => {
                let lps = logprobs.then_some(lps.as_slice());
                let mut answer = meta.full(&text, finish_reason, usage, lps);
                if !calls.is_empty() {
                    answer["choices"][0]["message"]["tool_calls"] = shape::merge_tool_calls(&calls);
                }
                return Ok(Json(answer).into_response());
            }
            Some(Err(e)) => return Err(e.into()),
            None => return Err(ended_early("mid-answer")),
        }
        next = events.recv().await;
    }
}

/// Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`. A task of its own
/// turns events into chunks while the connection writes the previous ones (measured: polling the
/// events from the body instead saves ~30-60 µs of CPU per request but adds ~0.1 ms to a streamed
/// answer on 2 cores). The task ends when the client disconnects, which drops `events` and so
/// cancels generation.
fn stream(
    meta: shape::Meta,
    first: InferEvent,
    events: InferStream,
    include_usage: bool,
    logprobs: bool,
    guard: crate::node::InFlight,
) -> impl IntoResponse {
    let mut frames = Frames {
        queue: VecDeque::from([meta.chunk(Some(""), true, None, None)]),
        meta,
        first: Some(first),
        events,
        include_usage,
        logprobs: logprobs.then(Vec::new),
        sent_chars: 0,
        finished: false,
        _guard: guard,
    };
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(32);
    tokio::spawn(async move {
        while let Some(data) = frames.next().await {
            if tx.send(Ok(Event::default().data(data))).await.is_err() {
                return;
            }
        }
    });
    Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default())
}

/// The state of one streamed answer: what is still to be sent, and where it comes from.
struct Frames {
    meta: shape::Meta,
    /// Serialized chunks ready to go out, oldest first.
    queue: VecDeque<String>,
    first: Option<InferEvent>,
    events: InferStream,
    include_usage: bool,
    /// Logprobs not yet sent (they go out with the text of their tokens), when asked for.
    logprobs: Option<Vec<infermesh_backend::TokenLogprob>>,
    /// Characters of the answer sent so far: the legacy shape's `text_offset`.
    sent_chars: usize,
    /// The backend is done (or failed) and the closing chunks are queued.
    finished: bool,
    /// Counts the request as in flight until the last chunk is sent or the client goes.
    _guard: crate::node::InFlight,
}

impl Frames {
    /// The `data` of the next event; `None` after `[DONE]`.
    async fn next(&mut self) -> Option<String> {
        if let Some(data) = self.queue.pop_front() {
            return Some(data);
        }
        if self.finished {
            return None;
        }
        let next = loop {
            let next = match self.first.take() {
                Some(ev) => Some(Ok(ev)),
                None => self.events.recv().await,
            };
            match (next, self.logprobs.as_mut()) {
                (Some(Ok(InferEvent::Logprobs(l))), Some(held)) => held.extend(l),
                (Some(Ok(InferEvent::Logprobs(_))), None) => {}
                (other, _) => break other,
            }
        };
        let held = self.logprobs.as_mut().map(std::mem::take);
        let at = self.sent_chars;
        let closing = match next {
            Some(Ok(InferEvent::ToolCalls(c))) => return Some(self.meta.tool_chunk(&c)),
            Some(Ok(InferEvent::Text(t))) => {
                self.sent_chars += t.chars().count();
                let lps = held.as_deref().map(|l| (l, at));
                return Some(self.meta.chunk(Some(&t), false, None, lps));
            }
            Some(Ok(InferEvent::Done {
                finish_reason,
                usage,
                ..
            })) => {
                let mut c = Vec::new();
                // Tokens whose text the stop gate held back still report their logprobs.
                if let Some(l) = held.as_deref().filter(|l| !l.is_empty()) {
                    c.push(self.meta.chunk(Some(""), false, None, Some((l, at))));
                }
                c.push(self.meta.chunk(None, false, Some(finish_reason), None));
                if self.include_usage {
                    c.push(self.meta.usage_chunk(usage));
                }
                c
            }
            Some(Ok(InferEvent::Logprobs(_))) => unreachable!("logprobs are held above"),
            Some(Err(e)) => vec![backend_error(e).body().to_string()],
            None => vec![OpenAiError::internal("backend ended mid-answer")
                .body()
                .to_string()],
        };
        self.finished = true;
        self.queue.extend(closing);
        self.queue.push_back("[DONE]".into());
        self.queue.pop_front()
    }
}
