//! Streamed answers relayed as the remote sent them: its events, cut at event boundaries, with
//! only `model` set to the mesh's name ([`infermesh_state::relay`]). Nothing is decoded into
//! events and re-encoded, so whatever the remote streams (tool calls, logprobs, reasoning) comes
//! through, at the cost of one pass over the bytes.
//!
//! The stream never ends silently: a transport failure, an event too long, or an end without
//! `[DONE]` before the answer said how it finished becomes an in-band error event and `[DONE]`,
//! the shape a router recognises to continue the answer elsewhere.

use std::collections::VecDeque;

use bytes::Bytes;
use futures::StreamExt;
use infermesh_state::relay::{data, set_model, whole_as_events, Events};
use reqwest::header::CONTENT_TYPE;
use serde_json::{json, Value};

use super::wire::request_body;
use super::OpenAiBackend;
use crate::api::{error_chain, BackendError, EventStream};
use crate::types::InferRequest;

/// One event longer than this is not an answer chunk.
const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

impl OpenAiBackend {
    /// Sends `req` upstream as a stream and relays the answer. The first event is awaited
    /// before this returns, so a remote that fails before answering is still an `Err` that
    /// another replica may take.
    pub(super) async fn relay_once(
        &self,
        req: &InferRequest,
        include_usage: bool,
    ) -> Result<EventStream, BackendError> {
        let spec = self.loaded_spec(&req.model)?;
        let (endpoint, mut body) = request_body(req, &spec.args);
        if let (false, Some(b)) = (include_usage, body.as_object_mut()) {
            // The client's choice: a usage chunk it did not ask for breaks code that reads
            // `choices[0]` of every chunk.
            b.remove("stream_options");
        }
        let url = self.url(endpoint);
        let resp = self.post(&url, &body, &req.model).await?;
        let streaming = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.contains("text/event-stream"));
        let mut relay = Relay {
            name: req.model.clone(),
            url: url.clone(),
            events: Events::default(),
            out: VecDeque::new(),
            done: false,
            finished: false,
            ended: false,
        };
        let mut resp = Some(resp);
        if !streaming {
            // A server that ignored `stream: true`: its whole answer, as events.
            let whole = resp.take().expect("just set");
            let answer: Value = whole.json().await.map_err(|e| {
                BackendError::Unavailable(format!("{url} sent an answer that is not JSON: {e}"))
            })?;
            if !answer["error"].is_null() {
                return Err(super::wire::stream_error(&answer, &req.model, &url));
            }
            for e in whole_as_events(&answer, include_usage) {
                relay.event(e);
            }
            relay.ended = true;
        }
        // Wait for the first event: nothing has reached the client yet.
        while relay.out.is_empty() && !relay.ended {
            match next_chunk(&mut resp).await {
                Ok(Some(bytes)) => relay.absorb(&bytes),
                Ok(None) => relay.end(),
                Err(e) => {
                    return Err(BackendError::Unavailable(format!(
                        "{url} broke off before answering: {}",
                        error_chain(&e)
                    )))
                }
            }
        }
        if let Some(first) = relay.out.front() {
            if let Some(err) = in_band_error(first) {
                return Err(super::wire::stream_error(&err, &req.model, &url));
            }
        }
        Ok(
            futures::stream::unfold((resp, relay), |(mut resp, mut relay)| async move {
                loop {
                    // What one read brought goes out as one write.
                    if let Some(b) = relay.take_all() {
                        return Some((b, (resp, relay)));
                    }
                    if relay.ended {
                        return None;
                    }
                    match next_chunk(&mut resp).await {
                        Ok(Some(bytes)) => relay.absorb(&bytes),
                        Ok(None) => relay.end(),
                        Err(e) => relay.fail(&format!("stream broke: {}", error_chain(&e))),
                    }
                }
            })
            .boxed(),
        )
    }
}

async fn next_chunk(resp: &mut Option<reqwest::Response>) -> reqwest::Result<Option<Bytes>> {
    match resp {
        Some(r) => r.chunk().await,
        None => Ok(None),
    }
}

/// The error a remote's first event reports, when it is one.
fn in_band_error(event: &Bytes) -> Option<Value> {
    let d = data(event)?;
    let v: Value = serde_json::from_slice(d).ok()?;
    (!v["error"].is_null()).then_some(v)
}

struct Relay {
    name: String,
    url: String,
    events: Events,
    out: VecDeque<Bytes>,
    /// `[DONE]` went out.
    done: bool,
    /// A chunk said how the answer finished.
    finished: bool,
    /// Nothing more will be read.
    ended: bool,
}

impl Relay {
    /// Every event ready, as one buffer.
    fn take_all(&mut self) -> Option<Bytes> {
        match self.out.len() {
            0 => None,
            1 => self.out.pop_front(),
            _ => Some(Bytes::from(self.out.drain(..).collect::<Vec<_>>().concat())),
        }
    }

    fn absorb(&mut self, bytes: &[u8]) {
        match self.events.push(bytes, MAX_EVENT_BYTES) {
            Ok(events) => {
                for e in events {
                    self.event(e);
                }
            }
            Err(_) => self.fail(&format!("sent an event over {MAX_EVENT_BYTES} bytes")),
        }
    }

    fn event(&mut self, e: Vec<u8>) {
        if self.done {
            return; // after [DONE]: nothing a client would read
        }
        match data(&e) {
            Some(b"[DONE]") => self.done = true,
            Some(d) if !self.finished => {
                self.finished = memchr_finish(d);
            }
            _ => {}
        }
        let e = set_model(&e, &self.name).unwrap_or(e);
        self.out.push_back(Bytes::from(e));
        if self.done {
            self.ended = true;
        }
    }

    /// The remote closed the stream.
    fn end(&mut self) {
        if let Some(last) = self.events.finish() {
            let mut last = last;
            last.extend_from_slice(b"\n\n");
            self.event(last);
        }
        if !self.done {
            if self.finished {
                self.out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
            } else {
                self.fail("closed the stream before the answer was complete");
            }
        }
        self.ended = true;
    }

    fn fail(&mut self, why: &str) {
        if !self.done {
            let e = json!({"error": {"message": format!("{}: {why}", self.url),
                                     "type": "server_error", "param": null, "code": null}});
            self.out.push_back(Bytes::from(format!("data: {e}\n\n")));
            self.out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
            self.done = true;
        }
        self.ended = true;
    }
}

/// Whether a chunk's data carries a finish reason (a non-null `"finish_reason"`).
fn memchr_finish(d: &[u8]) -> bool {
    const KEY: &[u8] = b"\"finish_reason\":";
    d.windows(KEY.len())
        .position(|w| w == KEY)
        .is_some_and(|i| {
            let rest = d[i + KEY.len()..].trim_ascii_start();
            rest.first() == Some(&b'"')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay() -> Relay {
        Relay {
            name: "smol".into(),
            url: "http://h/v1/chat/completions".into(),
            events: Events::default(),
            out: VecDeque::new(),
            done: false,
            finished: false,
            ended: false,
        }
    }

    fn text(r: &Relay) -> String {
        r.out
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    #[test]
    fn events_go_through_with_the_mesh_name_and_end_at_done() {
        let mut r = relay();
        r.absorb(b"data: {\"model\":\"/x.gguf\",\"choices\":[{\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\nda");
        r.absorb(b"ta: [DONE]\n\ndata: {\"late\":1}\n\n");
        let t = text(&r);
        assert!(
            t.contains("\"model\":\"smol\"") && !t.contains("x.gguf"),
            "{t}"
        );
        assert!(
            t.ends_with("data: [DONE]\n\n") && !t.contains("late"),
            "{t}"
        );
        assert!(r.ended);
    }

    #[test]
    fn an_end_without_done_is_closed_or_reported() {
        let mut r = relay();
        r.absorb(b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
        r.end();
        assert!(text(&r).ends_with("data: [DONE]\n\n"));
        assert!(!text(&r).contains("error"));

        let mut r = relay();
        r.absorb(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
        );
        r.end();
        let t = text(&r);
        assert!(
            t.contains("\"error\"") && t.contains("before the answer was complete"),
            "{t}"
        );
        assert!(t.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn a_broken_stream_ends_with_an_error_event_once() {
        let mut r = relay();
        r.fail("stream broke: reset");
        r.fail("again");
        let t = text(&r);
        assert_eq!(t.matches("\"error\"").count(), 1, "{t}");
        assert_eq!(t.matches("[DONE]").count(), 1, "{t}");
    }

    #[test]
    fn finish_reasons_are_seen_only_when_set() {
        assert!(memchr_finish(b"{\"finish_reason\":\"stop\"}"));
        assert!(memchr_finish(b"{\"finish_reason\": \"length\"}"));
        assert!(!memchr_finish(b"{\"finish_reason\":null}"));
        assert!(!memchr_finish(b"{\"choices\":[]}"));
    }
}
