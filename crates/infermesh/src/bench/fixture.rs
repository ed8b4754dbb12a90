//! The benchmark's deterministic backend: a tiny OpenAI-compatible server that answers every
//! completion with the same fixed text, streamed as fixed chunks, in (almost) no time. Pointed at
//! by an `openai`-driver backend it lets the router's own cost be measured without a model's time
//! hiding it. `infermesh bench fixture` runs it on its own (the reliability tests kill it as a
//! backend that dies).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{json, Value};

/// The model answered at once.
pub const MODEL: &str = "bench-fixture";
/// The same answer paced like a fast real backend: [`PACED_DELAY`] before each chunk.
pub const PACED_MODEL: &str = "bench-fixture-paced";
pub const PACED_DELAY: Duration = Duration::from_millis(1);

/// The fixed answer, one piece per streamed chunk (16 chunks, 16 "tokens").
const PIECES: [&str; 16] = [
    "The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", " and", " runs",
    " far", " away", " from", " the", " farm.",
];

#[derive(Clone, Copy, Debug, Default)]
pub struct FixtureOptions {
    /// Pause before each streamed chunk (0: the whole answer is one precomputed write).
    pub chunk_delay: Duration,
}

/// A running fixture; stops when dropped.
pub struct Fixture {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Fixture {
    /// `http://ADDR/v1`, what an `openai` backend's `url` names.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves the fixture on `bind` (port 0 picks one) in the current runtime.
pub async fn start(bind: SocketAddr, opts: FixtureOptions) -> Result<Fixture> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot bind the fixture on {bind}"))?;
    let addr = listener.local_addr()?;
    let app = router(opts);
    // A fast backend answers small writes at once, not after the client's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |s: &mut tokio::net::TcpStream| {
        let _ = s.set_nodelay(true);
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Fixture { addr, task })
}

fn router(opts: FixtureOptions) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route(
            "/v1/chat/completions",
            post(move |body: Bytes| complete(body, true, opts)),
        )
        .route(
            "/v1/completions",
            post(move |body: Bytes| complete(body, false, opts)),
        )
}

async fn models() -> Json<Value> {
    Json(json!({"object": "list", "data": [
        {"id": MODEL, "object": "model", "owned_by": "bench"},
        {"id": PACED_MODEL, "object": "model", "owned_by": "bench"},
    ]}))
}

/// Usage of an answer of `n` chunks: one token each, as it counts them.
fn usage(n: usize) -> Value {
    json!({"prompt_tokens": 8, "completion_tokens": n, "total_tokens": 8 + n})
}

/// What is left of the fixed answer when its first `written` bytes are already written (a
/// continued answer, as llama-server continues a last assistant message): the rest of a piece cut
/// in the middle, then the whole pieces after it.
fn pieces_after(written: usize) -> Vec<String> {
    let mut at = 0;
    let mut out = Vec::new();
    for p in PIECES {
        let end = at + p.len();
        if end > written {
            out.push(p[written.saturating_sub(at)..].to_string());
        }
        at = end;
    }
    out
}

/// How much of the fixed answer the request already holds: the text of a last assistant message
/// (chat), or the longest start of the answer the prompt ends with (completions).
fn already_written(req: &Value, chat: bool) -> usize {
    let text = PIECES.concat();
    if chat {
        let last = req["messages"].as_array().and_then(|m| m.last());
        return last
            .filter(|m| m["role"] == "assistant")
            .and_then(|m| m["content"].as_str())
            .filter(|c| text.starts_with(c))
            .map_or(0, str::len);
    }
    let prompt = req["prompt"].as_str().unwrap_or_default();
    (1..=text.len())
        .rev()
        .find(|&n| text.is_char_boundary(n) && prompt.ends_with(&text[..n]))
        .unwrap_or(0)
}

/// The SSE events of one streamed answer, `[DONE]` included.
fn events(chat: bool, include_usage: bool, written: usize) -> Vec<String> {
    let (object, id) = if chat {
        ("chat.completion.chunk", "chatcmpl-bench")
    } else {
        ("text_completion", "cmpl-bench")
    };
    let choice = |text: Option<&str>, finish: Option<&str>| {
        if chat {
            let delta = match text {
                Some(t) => json!({"content": t}),
                None => json!({}),
            };
            json!({"index": 0, "delta": delta, "finish_reason": finish})
        } else {
            json!({"index": 0, "text": text.unwrap_or(""), "finish_reason": finish})
        }
    };
    let chunk = |choices: Value, usage: Value| {
        json!({"id": id, "object": object, "created": 0, "model": MODEL,
               "choices": choices, "usage": usage})
        .to_string()
    };
    let pieces = pieces_after(written);
    // Chat streams open with the role, as OpenAI's and llama-server's do.
    let opening = chat.then(|| {
        chunk(
            json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
            Value::Null,
        )
    });
    let mut out: Vec<String> = opening
        .into_iter()
        .chain(
            pieces
                .iter()
                .map(|p| chunk(json!([choice(Some(p), None)]), Value::Null)),
        )
        .collect();
    out.push(chunk(json!([choice(None, Some("stop"))]), Value::Null));
    if include_usage {
        out.push(chunk(json!([]), usage(pieces.len())));
    }
    out.push("[DONE]".to_string());
    out
}

async fn complete(body: Bytes, chat: bool, opts: FixtureOptions) -> Response {
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(
                    json!({"error": {"message": format!("body is not JSON: {e}"),
                                      "type": "invalid_request_error"}}),
                ),
            )
                .into_response()
        }
    };
    let written = already_written(&req, chat);
    let text: String = PIECES.concat()[written..].to_string();
    if req["stream"] != json!(true) {
        let choice = if chat {
            json!({"index": 0, "message": {"role": "assistant", "content": text},
                   "finish_reason": "stop"})
        } else {
            json!({"index": 0, "text": text, "finish_reason": "stop"})
        };
        let object = if chat {
            "chat.completion"
        } else {
            "text_completion"
        };
        return Json(
            json!({"id": "bench", "object": object, "created": 0, "model": MODEL,
                           "choices": [choice], "usage": usage(pieces_after(written).len())}),
        )
        .into_response();
    }
    let include_usage = req["stream_options"]["include_usage"] == json!(true);
    let frames: Vec<Bytes> = events(chat, include_usage, written)
        .into_iter()
        .map(|e| Bytes::from(format!("data: {e}\n\n")))
        .collect();
    let delay = if req["model"] == PACED_MODEL {
        PACED_DELAY
    } else {
        opts.chunk_delay
    };
    let body = if delay.is_zero() {
        Body::from(frames.concat())
    } else {
        Body::from_stream(futures::stream::iter(frames).then(move |f| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, std::convert::Infallible>(f)
        }))
    };
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `infermesh bench fixture`: serve until killed, printing the address like `up` does.
pub async fn serve_forever(port: u16, opts: FixtureOptions) -> Result<()> {
    let fixture = start(SocketAddr::from(([127, 0, 0, 1], port)), opts).await?;
    println!("infermesh fixture on {}", fixture.base_url());
    // Whoever reads stdout sees the line now, not at exit.
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    tokio::signal::ctrl_c().await.ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_is_pieces_then_finish_then_usage_then_done() {
        let ev = events(true, true, 0);
        assert_eq!(ev.len(), PIECES.len() + 4);
        assert_eq!(ev.last().unwrap(), "[DONE]");
        let o: Value = serde_json::from_str(&ev[0]).unwrap();
        assert_eq!(o["choices"][0]["delta"]["role"], "assistant");
        let u: Value = serde_json::from_str(&ev[ev.len() - 2]).unwrap();
        assert_eq!(u["usage"]["completion_tokens"], 16);
        let f: Value = serde_json::from_str(&ev[PIECES.len() + 1]).unwrap();
        assert_eq!(f["choices"][0]["finish_reason"], "stop");
        let text: String = ev[1..=PIECES.len()]
            .iter()
            .map(|e| {
                let v: Value = serde_json::from_str(e).unwrap();
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(text, PIECES.concat());
        assert_eq!(events(false, false, 0).len(), PIECES.len() + 2);
    }

    #[test]
    fn a_continued_answer_is_the_rest_of_the_text() {
        assert_eq!(pieces_after(0).concat(), PIECES.concat());
        assert_eq!(
            pieces_after(9),
            [
                " brown", " fox", " jumps", " over", " the", " lazy", " dog", " and", " runs",
                " far", " away", " from", " the", " farm."
            ]
        );
        assert_eq!(pieces_after(5)[0], "uick", "a piece cut in the middle");
        let chat = json!({"messages": [{"role": "user", "content": "hi"},
                                       {"role": "assistant", "content": "The quick"}]});
        assert_eq!(already_written(&chat, true), 9);
        let other = json!({"messages": [{"role": "assistant", "content": "Hello"}]});
        assert_eq!(already_written(&other, true), 0);
        let text = json!({"prompt": "Say: The quick b"});
        assert_eq!(already_written(&text, false), 11);
    }
}
