//! The decode path of a streamed answer: the remote's events read into [`InferEvent`]s, for
//! what needs them decoded (a continued answer, whose echo is dropped; the engine-neutral
//! consumers such as the tester).

use std::time::Instant;

use reqwest::header::CONTENT_TYPE;
use tokio::sync::mpsc;

use super::decode::StreamDecoder;
use crate::api::{error_chain, BackendError};
use crate::types::InferEvent;
use infermesh_state::sse::SseParser;

pub(super) type Tx = mpsc::Sender<Result<InferEvent, BackendError>>;

/// Reads the response body into the event channel until `Done`, an error, or the receiver
/// going away (which drops the response and so closes the connection: the remote stops).
pub(super) async fn pump(
    mut resp: reqwest::Response,
    mut dec: StreamDecoder,
    started: Instant,
    tx: Tx,
) {
    let ms = || started.elapsed().as_secs_f64() * 1000.0;
    let streaming = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("text/event-stream"));
    let url = resp.url().to_string();
    let mut sse = SseParser::new();
    // A server that ignored `stream: true` answers with one JSON body, decoded as one chunk.
    let mut whole = Vec::new();
    loop {
        // Waiting on the receiver too: a client that hangs up during a long silent stretch
        // (prompt processing) must free the remote now, not at its next token.
        let chunk = tokio::select! {
            _ = tx.closed() => return,
            chunk = resp.chunk() => chunk,
        };
        let (payloads, eof): (Vec<String>, bool) = match chunk {
            Ok(Some(bytes)) if streaming => (
                sse.push(&bytes).into_iter().map(|e| e.data).collect(),
                false,
            ),
            Ok(Some(bytes)) => {
                whole.extend_from_slice(&bytes);
                continue;
            }
            Ok(None) if streaming => (sse.finish().into_iter().map(|e| e.data).collect(), true),
            Ok(None) => (vec![String::from_utf8_lossy(&whole).into_owned()], true),
            Err(e) => {
                let err = BackendError::Failed(format!("{url}: stream broke: {}", error_chain(&e)));
                let _ = tx.send(Err(err)).await;
                return;
            }
        };
        for data in payloads {
            match dec.feed(&data, ms()) {
                Ok(events) => {
                    for ev in events {
                        if tx.send(Ok(ev)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
            if dec.is_done() {
                return;
            }
        }
        if eof {
            let last = dec.finish(ms()).transpose();
            if let Some(last) = last {
                let _ = tx.send(last).await;
            }
            return;
        }
    }
}
