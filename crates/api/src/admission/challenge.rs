//! The admission challenge: one short inference a verifier asks of a peer over the peer channel,
//! with a fresh nonce in the prompt so no earlier answer can be replayed, inside a time budget.

use std::time::Duration;

use axum::http::header;
use serde_json::{json, Value};

use crate::error::error_chain;

/// Marks a peer-channel request as an admission check, so the peer runs it in the validation
/// lane and it never waits behind user traffic. Honoured only on the authenticated peer channel.
pub const CHECK_HEADER: &str = "x-infermesh-check";
/// How a failure to connect at all begins (a stopped member, before gossip declares it dead).
pub const UNREACHABLE: &str = "unreachable on the peer channel";
/// Enough to prove decoding works; short enough for any CPU inside the budget.
const CHALLENGE_MAX_TOKENS: u32 = 8;
/// A chat completion of a few tokens is well under this; anything larger is not an answer.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Sends the challenge for `model` to the peer API at `base` and checks the answer: HTTP 200, an
/// OpenAI `chat.completion` for that model with non-empty text and at least one generated token.
/// Returns the token count, or why it failed in words an operator can act on.
pub async fn challenge(
    http: &reqwest::Client,
    base: &str,
    model: &str,
    budget: Duration,
) -> Result<u32, String> {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let body = json!({
        "model": model,
        "messages": [{
            "role": "user",
            "content": format!("Admission check {nonce}. Reply with one short sentence."),
        }],
        "max_tokens": CHALLENGE_MAX_TOKENS,
        "temperature": 0,
    });
    let call = async {
        let resp = http
            .post(format!("{base}/v1/chat/completions"))
            .header(CHECK_HEADER, &nonce)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("{UNREACHABLE}: {}", error_chain(&e)))?;
        let status = resp.status();
        let bytes = crate::peer::read_bounded(resp, MAX_ANSWER_BYTES, "answer").await?;
        let answer: Value = serde_json::from_slice(&bytes)
            .map_err(|_| format!("answered HTTP {status} with a body that is not JSON"))?;
        if !status.is_success() {
            let msg = answer["error"]["message"].as_str().unwrap_or("no message");
            return Err(format!("answered HTTP {}: {msg}", status.as_u16()));
        }
        check_answer(&answer, model)
    };
    match tokio::time::timeout(budget, call).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "did not answer within {} s",
            budget.as_secs_f32().ceil() as u64
        )),
    }
}

/// The shape check of a challenge answer (pure, so it is tested without a peer).
pub fn check_answer(answer: &Value, model: &str) -> Result<u32, String> {
    if answer["object"] != "chat.completion" {
        return Err("answer is not a chat.completion".into());
    }
    if answer["model"] != model {
        return Err(format!(
            "answered for model {} instead of `{model}`",
            answer["model"]
        ));
    }
    let text = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    if text.trim().is_empty() {
        return Err("answer has no text".into());
    }
    let tokens = answer["usage"]["completion_tokens"].as_u64().unwrap_or(0);
    if tokens == 0 {
        return Err("answer reports no generated tokens".into());
    }
    Ok(tokens.min(u32::MAX as u64) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Value {
        json!({
            "object": "chat.completion",
            "model": "m",
            "choices": [{"message": {"role": "assistant", "content": "Hello there."}}],
            "usage": {"completion_tokens": 4}
        })
    }

    #[test]
    fn a_well_formed_answer_passes_with_its_token_count() {
        assert_eq!(check_answer(&good(), "m"), Ok(4));
    }

    #[test]
    fn every_malformed_answer_fails_with_a_reason() {
        type Mutation = fn(&mut Value);
        let cases: Vec<(Mutation, &str)> = vec![
            (
                |v| v["object"] = json!("text_completion"),
                "not a chat.completion",
            ),
            (|v| v["model"] = json!("other"), "instead of `m`"),
            (|v| v["choices"] = json!([]), "no text"),
            (
                |v| v["choices"][0]["message"]["content"] = json!("  \n"),
                "no text",
            ),
            (
                |v| v["choices"][0]["message"]["content"] = json!(5),
                "no text",
            ),
            (
                |v| v["usage"]["completion_tokens"] = json!(0),
                "no generated tokens",
            ),
            (|v| v["usage"] = json!(null), "no generated tokens"),
        ];
        for (mutate, want) in cases {
            let mut v = good();
            mutate(&mut v);
            let err = check_answer(&v, "m").unwrap_err();
            assert!(err.contains(want), "{err} vs {want}");
        }
    }
}
