//! `POST /v1/embeddings`, routed like chat: this node's own backend when it serves the model,
//! else one hop to an admitted peer that does, the next replica when one cannot answer.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Value};

use super::{proxy, start, Failures, FromPeer};
use crate::app::App;
use crate::error::OpenAiError;
use crate::openai::{local_backend, LocalFailure};

/// Most inputs one request may carry (OpenAI allows 2048; a CPU node embeds them in turn).
const MAX_INPUTS: usize = 64;

struct EmbedRequest {
    model: String,
    inputs: Vec<String>,
    /// Each vector as base64 of its little-endian f32 bytes, as OpenAI sends it when asked.
    base64: bool,
}

fn parse(body: &[u8]) -> Result<EmbedRequest, OpenAiError> {
    let bad = |m: &str, p: &str| OpenAiError::bad_request(m, Some(p));
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| OpenAiError::bad_request(format!("body is not JSON: {e}"), None))?;
    let model = v["model"]
        .as_str()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("`model` is required (a string)", "model"))?
        .to_string();
    let inputs: Vec<String> = match &v["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        Value::Array(_) => {
            return Err(bad(
                "`input` must be a string or an array of strings; token arrays are not \
                 supported (send the text)",
                "input",
            ))
        }
        _ => {
            return Err(bad(
                "`input` is required (a string or an array of strings)",
                "input",
            ))
        }
    };
    if inputs.is_empty() || inputs.len() > MAX_INPUTS {
        return Err(bad(
            &format!(
                "`input` takes 1 to {MAX_INPUTS} strings (got {})",
                inputs.len()
            ),
            "input",
        ));
    }
    let base64 = match &v["encoding_format"] {
        Value::Null => false,
        Value::String(f) if f == "float" => false,
        // The official clients ask for this by default: smaller on the wire.
        Value::String(f) if f == "base64" => true,
        other => {
            return Err(bad(
                &format!("`encoding_format` must be `float` or `base64` (got {other})"),
                "encoding_format",
            ))
        }
    };
    if !v["dimensions"].is_null() {
        return Err(bad(
            "`dimensions` is not supported: vectors have the model's own width",
            "dimensions",
        ));
    }
    Ok(EmbedRequest {
        model,
        inputs,
        base64,
    })
}

pub async fn embeddings(State(app): State<Arc<App>>, peer: FromPeer, body: Bytes) -> Response {
    let req = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let (plan, mut pending, _) = start(&app, peer, &req.model, "embeddings", false);
    let mut failures = Failures::default();
    for target in &plan.targets {
        pending.attempts += 1;
        let attempt = match &target.addr {
            None => local(&app, &req).await.map_err(|f| (f.error, f.retry)),
            Some(addr) => {
                proxy::forward(&app, target, addr, "/v1/embeddings", body.clone(), false).await
            }
        };
        match attempt {
            Ok(resp) => return pending.answered(app, target, resp),
            Err((err, retry)) => {
                if let Some(err) = failures.book(&app, &req.model, target, err, retry) {
                    return pending.failed(&app, Some(target), err);
                }
            }
        }
    }
    let err = failures.unanswered(&app, &req.model, plan);
    pending.failed(&app, None, err)
}

async fn local(app: &Arc<App>, req: &EmbedRequest) -> Result<Response, LocalFailure> {
    let backend = local_backend(&app.node, &req.model)?;
    let _guard = app.node.begin_request(true);
    let e = backend.embed(&req.model, &req.inputs).await?;
    let data: Vec<Value> = e
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if req.base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": req.model,
        "usage": {"prompt_tokens": e.prompt_tokens, "total_tokens": e.prompt_tokens},
    }))
    .into_response())
}
