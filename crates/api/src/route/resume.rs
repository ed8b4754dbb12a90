//! Mid-stream failover: a streamed answer whose node goes away (its connection breaks, it goes
//! silent, or it reports that its backend failed) is finished by another replica, and the client
//! sees one unbroken stream. The replica is asked, over the peer channel, to continue from the
//! prompt plus the text already sent ([`CONTINUE_HEADER`] and the body's [`FIELD`]); its chunks
//! are stitched into the client's stream ([`infermesh_state::resume`]).
//!
//! Events are relayed whole, as they came (a client never sees half an event, so a continuation
//! can start on an event boundary); they are only parsed when a failover needs the text so far.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::BytesMut;
use futures::stream::BoxStream;
use futures::StreamExt;
use infermesh_backend::Continuation;
use infermesh_state::relay::{self, event_len};
use infermesh_state::resume::{classify, Data, Stitch, Transcript};

use super::{proxy, Target};
use crate::app::App;
use crate::error::OpenAiError;
use crate::openai::{parse::Parsed, serve_local, Shape};

pub use super::proxy::CONTINUE_HEADER;
/// The body field of a continuation request: a [`Continuation`].
pub const FIELD: &str = "infermesh_continue";
/// A node that sends nothing for this long (not even the keep-alive comment it writes every
/// 15 s) is gone as far as this stream is concerned.
const SILENCE: Duration = Duration::from_secs(45);
/// An event larger than this is not one of ours: the stream is treated as broken.
const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// The continuation a peer asks for, when it asks for one. `Err` for a continuation request whose
/// body lacks a usable [`FIELD`].
pub fn requested(headers: &HeaderMap, body: &[u8]) -> Result<Option<Continuation>, OpenAiError> {
    if !headers.contains_key(CONTINUE_HEADER) {
        return Ok(None);
    }
    #[derive(serde::Deserialize)]
    struct Field {
        infermesh_continue: Continuation,
    }
    serde_json::from_slice::<Field>(body)
        .map(|f| Some(f.infermesh_continue))
        .map_err(|e| {
            OpenAiError::bad_request(format!("invalid continuation request: {e}"), Some(FIELD))
        })
}

/// The original request's body with the continuation added.
fn continuation_body(body: &[u8], c: &Continuation) -> Option<Bytes> {
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.as_object_mut()?
        .insert(FIELD.into(), serde_json::to_value(c).ok()?);
    Some(Bytes::from(v.to_string()))
}

/// What a stream needs to be continued elsewhere.
pub struct Failover {
    pub app: Arc<App>,
    pub parsed: Parsed,
    pub body: Bytes,
    pub shape: Shape,
    /// Where the stream comes from now.
    pub current: Target,
    /// Nodes this stream was on, or a failover tried: the next failover goes elsewhere (those
    /// that failed before answering it stay, last, in the routing order).
    pub tried: Vec<String>,
}

/// `resp` (a committed streamed answer from `f.current`) relayed through failover.
pub fn relay(resp: Response, f: Failover) -> Response {
    let (parts, body) = resp.into_parts();
    let relay = Relay {
        upstream: upstream(body),
        buf: BytesMut::new(),
        sent: Vec::new(),
        out: VecDeque::new(),
        stitch: None,
        finished: false,
        f,
    };
    let stream = futures::stream::unfold(relay, |mut r| async move {
        let next = r.next().await?;
        Some((Ok::<_, std::io::Error>(next), r))
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

fn upstream(body: Body) -> BoxStream<'static, Result<Bytes, String>> {
    body.into_data_stream()
        .map(|r| r.map_err(|e| e.to_string()))
        .boxed()
}

struct Relay {
    f: Failover,
    upstream: BoxStream<'static, Result<Bytes, String>>,
    /// Bytes of an event not complete yet.
    buf: BytesMut,
    /// The `data` of every answer chunk relayed, for the transcript a failover needs.
    sent: Vec<Bytes>,
    /// Events ready for the client.
    out: VecDeque<Bytes>,
    /// Set once a continuation is under way: its chunks are rewritten.
    stitch: Option<Stitch>,
    finished: bool,
}

impl Relay {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            // What one read brought goes out as one write.
            match self.out.len() {
                0 => {}
                1 => return self.out.pop_front(),
                _ => return Some(Bytes::from(self.out.drain(..).collect::<Vec<_>>().concat())),
            }
            if self.finished {
                return None;
            }
            let why = match tokio::time::timeout(SILENCE, self.upstream.next()).await {
                Ok(Some(Ok(bytes))) => match self.absorb(&bytes) {
                    Ok(()) => continue,
                    Err(why) => why,
                },
                Ok(Some(Err(e))) => format!("its stream broke: {e}"),
                Ok(None) => "it closed the stream before the answer was complete".into(),
                Err(_) => format!("it sent nothing for {} s", SILENCE.as_secs()),
            };
            self.fail_over(why).await;
        }
    }

    /// Queues each complete event of `bytes`; `Err` when the stream can no longer be trusted to
    /// finish the answer (an in-band error, an oversized event).
    fn absorb(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.buf.extend_from_slice(bytes);
        while let Some(n) = event_len(&self.buf) {
            let event = self.buf.split_to(n).freeze();
            self.event(event)?;
            if self.finished {
                return Ok(());
            }
        }
        if self.buf.len() > MAX_EVENT_BYTES {
            return Err(format!("it sent an event over {MAX_EVENT_BYTES} bytes"));
        }
        Ok(())
    }

    fn event(&mut self, event: Bytes) -> Result<(), String> {
        // Our nodes write one `data:` line per event; anything else (keep-alive comments) goes
        // through untouched.
        let Some(raw) = relay::data(&event).map(|d| event.slice_ref(d)) else {
            self.out.push_back(event);
            return Ok(());
        };
        let Ok(data) = std::str::from_utf8(&raw) else {
            self.out.push_back(event);
            return Ok(());
        };
        match classify(data) {
            Data::Done => {
                self.out.push_back(event);
                self.finished = true;
            }
            Data::Error => {
                let msg = serde_json::from_str::<serde_json::Value>(data)
                    .ok()
                    .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                    .unwrap_or_else(|| data.to_string());
                return Err(format!("it reported: {msg}"));
            }
            Data::Chunk => {
                let data = match self.stitch.as_mut() {
                    None => {
                        self.out.push_back(event.clone());
                        raw.clone()
                    }
                    Some(s) => match s.rewrite(data) {
                        Some(d) => {
                            self.out.push_back(Bytes::from(format!("data: {d}\n\n")));
                            Bytes::from(d)
                        }
                        None => return Ok(()),
                    },
                };
                self.sent.push(data);
            }
        }
        Ok(())
    }

    /// The stream from `current` ended early for `why`: continue it on the next replica that
    /// takes it, or end it with an in-band error and `[DONE]` when none does.
    async fn fail_over(&mut self, why: String) {
        let transcript =
            Transcript::of(self.sent.iter().filter_map(|d| std::str::from_utf8(d).ok()));
        let model = self.f.parsed.req.model.clone();
        let gone = self.f.current.name.clone();
        if self.f.current.addr.is_some() {
            self.f.app.balance.mark_failed(&self.f.current.node_id);
        }
        self.buf.clear();
        if transcript.finished {
            // The answer is whole; only its closing usage chunk or `[DONE]` was lost.
            tracing::info!(%model, from = %gone, %why, "stream ended after its last chunk; closing it");
            self.close(None);
            return;
        }
        let cont = Continuation {
            text: transcript.text.clone(),
            chunks: transcript.chunks,
        };
        // A tool call half sent has no text to continue from: another replica would call again.
        self.f.tried.push(self.f.current.node_id.clone());
        // The routing view now, not when the stream began: a replica admitted since counts.
        let targets: Vec<Target> = if transcript.tool_calls {
            Vec::new()
        } else {
            super::plan(&self.f.app, &model, false)
                .targets
                .into_iter()
                .filter(|t| !self.f.tried.contains(&t.node_id))
                .collect()
        };
        for target in targets {
            self.f.tried.push(target.node_id.clone());
            match continue_on(&self.f, &target, &cont).await {
                Ok(resp) => {
                    tracing::info!(%model, from = %gone, to = %target.name, %why,
                        chars = cont.text.chars().count(), "stream continued on another replica");
                    self.upstream = upstream(resp.into_body());
                    self.stitch = Some(Stitch::new(&transcript));
                    self.f.current = target;
                    return;
                }
                Err(e) => {
                    if target.addr.is_some() {
                        self.f.app.balance.mark_failed(&target.node_id);
                    }
                    tracing::info!(%model, to = %target.name, error = %e.message,
                        "replica could not continue a stream");
                }
            }
        }
        let (log, nobody) = if transcript.tool_calls {
            (
                "a streamed tool call was cut: a call half sent cannot be continued",
                "a tool call half sent cannot be continued elsewhere".to_string(),
            )
        } else {
            (
                "a streamed answer was cut: no other replica could continue it",
                format!("no other replica of `{model}` could continue it"),
            )
        };
        tracing::warn!(%model, from = %gone, %why, "{log}");
        self.close(Some(OpenAiError::unavailable(format!(
            "the answer broke off after {} characters: {gone} went away ({why}) and {nobody}; \
             retry the request",
            cont.text.chars().count()
        ))));
    }

    fn close(&mut self, err: Option<OpenAiError>) {
        if let Some(e) = err {
            self.out
                .push_back(Bytes::from(format!("data: {}\n\n", e.body())));
        }
        self.out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
        self.finished = true;
    }
}

/// Asks `t` to continue the stream: this node's own backend, or a peer over the peer channel.
async fn continue_on(f: &Failover, t: &Target, c: &Continuation) -> Result<Response, OpenAiError> {
    match &t.addr {
        None => {
            let mut p = f.parsed.clone();
            p.req.params.continuation = Some(c.clone());
            serve_local(f.app.node.clone(), &p, f.shape)
                .await
                .map_err(|f| f.error)
        }
        Some(addr) => {
            let body = continuation_body(&f.body, c)
                .ok_or_else(|| OpenAiError::internal("the request body is not an object"))?;
            proxy::forward(&f.app, t, addr, f.shape.path(), body, true)
                .await
                .map_err(|(e, _)| e)
        }
    }
}

/// Whether a response is a stream this module can relay (our nodes' `text/event-stream`).
pub fn is_event_stream(resp: &Response) -> bool {
    resp.status().is_success()
        && resp
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_continuation_body_is_the_request_plus_the_field() {
        let c = Continuation {
            text: "The".into(),
            chunks: 1,
        };
        let b = continuation_body(br#"{"model":"m","stream":true}"#, &c).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["model"], "m");
        assert_eq!(v[FIELD]["text"], "The");
        assert_eq!(v[FIELD]["chunks"], 1);
        assert!(continuation_body(b"[1]", &c).is_none());
    }

    #[test]
    fn only_a_request_with_the_header_continues() {
        let body = br#"{"model":"m","infermesh_continue":{"text":"x","chunks":1}}"#;
        assert_eq!(requested(&HeaderMap::new(), body).unwrap(), None);
        let mut h = HeaderMap::new();
        h.insert(CONTINUE_HEADER, "1".parse().unwrap());
        assert_eq!(
            requested(&h, body).unwrap(),
            Some(Continuation {
                text: "x".into(),
                chunks: 1
            })
        );
        let e = requested(&h, br#"{"model":"m"}"#).unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
    }
}
