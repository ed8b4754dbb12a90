//! Turns one routed request into one [`RequestRecord`]: the answer's body is wrapped so the record
//! is written when the last byte has gone to the client (or the client went away), with the
//! tokens counted on the way and nothing buffered.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use super::Target;
use crate::app::App;
use crate::error::OpenAiError;
use crate::requests::{RequestRecord, TokenScan};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A request whose outcome is not known yet.
pub struct Pending {
    rec: RequestRecord,
    started: Instant,
    pub attempts: u32,
}

impl Pending {
    pub fn new(
        from: String,
        model: &str,
        model_known: bool,
        endpoint: &'static str,
        stream: bool,
        started: Instant,
    ) -> Self {
        Self {
            rec: RequestRecord {
                id: 0,
                at_ms: now_ms(),
                from,
                to: None,
                to_name: None,
                model: model.to_string(),
                endpoint: endpoint.to_string(),
                status: 0,
                latency_ms: 0,
                ttft_ms: None,
                tokens: 0,
                attempts: 0,
                stream,
                error: None,
                model_known,
                admission_check: false,
            },
            started,
            attempts: 0,
        }
    }

    /// Marks the request as a peer's admission check (see [`RequestRecord::admission_check`]).
    pub fn admission_check(&mut self) {
        self.rec.admission_check = true;
    }

    fn finish(mut self, target: Option<&Target>, status: u16) -> RequestRecord {
        self.rec.to = target.map(|t| t.node_id.clone());
        self.rec.to_name = target.map(|t| t.name.clone());
        self.rec.status = status;
        self.rec.attempts = self.attempts;
        self.rec.latency_ms = self.started.elapsed().as_millis() as u64;
        self.rec
    }

    /// The request ends with an error and nothing else was sent.
    pub fn failed(self, app: &App, target: Option<&Target>, err: OpenAiError) -> Response {
        let mut rec = self.finish(target, err.status.as_u16());
        rec.error = Some(err.message.clone());
        app.requests.push(rec);
        err.into_response()
    }

    /// `resp` is committed: its body streams to the client through a recorder.
    pub fn answered(self, app: Arc<App>, target: &Target, resp: Response) -> Response {
        let started = self.started;
        let rec = self.finish(Some(target), resp.status().as_u16());
        let (parts, body) = resp.into_parts();
        let inner = body
            .into_data_stream()
            .map(|r| r.map_err(|e| e.to_string()))
            .boxed();
        let recorded = RecordedBody {
            inner,
            rec: Some(rec),
            app,
            started,
            scan: TokenScan::default(),
            ended: false,
            error: None,
        };
        Response::from_parts(parts, Body::from_stream(recorded))
    }
}

struct RecordedBody {
    inner: BoxStream<'static, Result<Bytes, String>>,
    rec: Option<RequestRecord>,
    app: Arc<App>,
    started: Instant,
    scan: TokenScan,
    ended: bool,
    error: Option<String>,
}

impl Stream for RecordedBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                if let Some(rec) = this.rec.as_mut() {
                    rec.ttft_ms
                        .get_or_insert_with(|| this.started.elapsed().as_millis() as u64);
                }
                this.scan.feed(&bytes);
                Poll::Ready(Some(Ok(bytes)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.error = Some(format!("answer broke off: {e}"));
                Poll::Ready(Some(Err(std::io::Error::other(e))))
            }
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for RecordedBody {
    fn drop(&mut self) {
        let Some(mut rec) = self.rec.take() else {
            return;
        };
        rec.tokens = self.scan.tokens();
        rec.latency_ms = self.started.elapsed().as_millis() as u64;
        rec.error = self.error.take().or_else(|| {
            (!self.ended).then(|| "client went away before the end of the answer".to_string())
        });
        self.app.requests.push(rec);
    }
}
