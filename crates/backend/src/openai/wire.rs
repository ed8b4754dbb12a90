//! The OpenAI-compatible wire format: request bodies going out, errors coming back.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::api::BackendError;
use crate::types::{InferRequest, Prompt};

/// The endpoint (relative to the base URL) and JSON body for a streamed inference.
///
/// `extra` (the model's merged args) adds fields such as `top_k`, but never replaces one the
/// request itself set: the client's explicit sampling choices and the streaming contract this
/// driver parses must hold whatever the operator configured.
pub fn request_body(req: &InferRequest, extra: &BTreeMap<String, Value>) -> (&'static str, Value) {
    let p = &req.params;
    let mut body = Map::new();
    body.insert("model".into(), json!(req.model));
    let cont = p.continuation.as_ref();
    let path = match &req.prompt {
        Prompt::Chat(messages) => {
            let mut messages = json!(messages);
            // A last assistant message is continued, not answered (llama-server's "prefill"):
            // the remote streams only what follows it.
            if let (Some(c), Some(list)) = (cont, messages.as_array_mut()) {
                list.push(json!({"role": "assistant", "content": c.text}));
            }
            body.insert("messages".into(), messages);
            "chat/completions"
        }
        Prompt::Raw(prompt) => {
            let prompt = match cont {
                Some(c) => format!("{prompt}{}", c.text),
                None => prompt.clone(),
            };
            body.insert("prompt".into(), json!(prompt));
            "completions"
        }
    };
    body.insert("stream".into(), json!(true));
    // Without this the remote never reports token counts on a streamed response.
    body.insert("stream_options".into(), json!({"include_usage": true}));
    // What was already sent counts against the client's limit.
    let max_tokens = match cont {
        Some(c) => p.max_tokens.saturating_sub(c.chunks).max(1),
        None => p.max_tokens,
    };
    body.insert("max_tokens".into(), json!(max_tokens));
    body.insert("temperature".into(), json!(p.temperature));
    body.insert("top_p".into(), json!(p.top_p));
    if !p.stop.is_empty() {
        body.insert("stop".into(), json!(p.stop));
    }
    if let Some(seed) = p.seed {
        body.insert("seed".into(), json!(seed));
    }
    // The remote enforces the format itself: it takes OpenAI's field, not llama.cpp's GBNF.
    if let Some(format) = &p.response_format {
        body.insert("response_format".into(), format.clone());
    }
    // Chat asks with a flag and a count; the legacy endpoint with the count alone.
    match (p.logprobs, &req.prompt) {
        (Some(n), Prompt::Chat(_)) => {
            body.insert("logprobs".into(), json!(true));
            body.insert("top_logprobs".into(), json!(n));
        }
        (Some(n), Prompt::Raw(_)) => {
            body.insert("logprobs".into(), json!(n));
        }
        (None, _) => {}
    }
    // Tool definitions and the conversation as the client wrote it (tool calls and results
    // included), which the plain messages above cannot carry.
    if let Some(tools) = &p.tools {
        for (k, v) in tools {
            body.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in extra {
        body.entry(k.clone()).or_insert_with(|| v.clone());
    }
    (path, Value::Object(body))
}

/// The human part of an error body: the OpenAI envelope `{"error": {"message"}}`, the flat
/// `{"error": "..."}` many servers use, `{"message"}`/`{"detail"}`, or else the text itself.
pub fn error_message(body: &str) -> String {
    let from_json = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        let e = &v["error"];
        [&e["message"], e, &v["message"], &v["detail"]]
            .into_iter()
            .find_map(|m| m.as_str().map(str::to_string))
    });
    let text = from_json.unwrap_or_else(|| body.trim().to_string());
    // An HTML error page or a stack trace must not become a multi-kilobyte log line.
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// What an HTTP error status from the remote means for the caller.
///
/// Client mistakes (400/422) are passed through so the client sees the remote's reason; overload
/// and server faults (408/429/5xx) are `Unavailable` so the router may try another replica.
pub fn status_error(status: u16, body: &str, model: &str, url: &str) -> BackendError {
    let msg = error_message(body);
    let said = if msg.is_empty() {
        String::new()
    } else {
        format!(": {msg}")
    };
    match status {
        400 | 422 => BackendError::BadRequest(if msg.is_empty() {
            format!("{url} rejected the request ({status})")
        } else {
            msg
        }),
        404 => BackendError::UnknownModel(model.to_string()),
        401 | 403 => BackendError::Failed(format!(
            "{url} refused the request ({status}){said}; check the backend's api_key"
        )),
        408 | 429 | 500..=599 => {
            BackendError::Unavailable(format!("{url} answered {status}{said}"))
        }
        _ => BackendError::Failed(format!("{url} answered {status}{said}")),
    }
}

/// An `{"error": ...}` object sent inside a stream (after the 200 status was already sent).
pub fn stream_error(payload: &Value, model: &str, url: &str) -> BackendError {
    let body = payload.to_string();
    match payload["error"]["code"].as_u64() {
        Some(code @ 400..=599) => status_error(code as u16, &body, model, url),
        _ => BackendError::Failed(format!("{url} failed mid-stream: {}", error_message(&body))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ChatMessage, GenParams};

    fn req(prompt: Prompt) -> InferRequest {
        InferRequest {
            model: "m".into(),
            prompt,
            params: GenParams {
                max_tokens: 8,
                temperature: 0.0,
                top_p: 1.0,
                stop: vec!["\n".into()],
                seed: Some(7),
                ..GenParams::default()
            },
            priority: Default::default(),
        }
    }

    #[test]
    fn chat_body_streams_with_usage_and_carries_params() {
        let msgs = vec![ChatMessage {
            role: "user".into(),
            content: "hi".into(),
        }];
        let (path, body) = request_body(&req(Prompt::Chat(msgs)), &BTreeMap::new());
        assert_eq!(path, "chat/completions");
        assert_eq!(
            body,
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                   "stream": true, "stream_options": {"include_usage": true},
                   "max_tokens": 8, "temperature": 0.0, "top_p": 1.0, "stop": ["\n"], "seed": 7})
        );
    }

    #[test]
    fn a_continuation_is_asked_as_a_prefilled_answer_with_what_is_left_of_max_tokens() {
        let cont = Some(crate::types::Continuation {
            text: "The quick".into(),
            chunks: 2,
        });
        let mut chat = req(Prompt::Chat(vec![ChatMessage {
            role: "user".into(),
            content: "hi".into(),
        }]));
        chat.params.continuation = cont.clone();
        let (_, body) = request_body(&chat, &BTreeMap::new());
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": "hi"},
                   {"role": "assistant", "content": "The quick"}])
        );
        assert_eq!(body["max_tokens"], 6);
        let mut raw = req(Prompt::Raw("Once".into()));
        raw.params.continuation = cont;
        raw.params.max_tokens = 2;
        let (_, body) = request_body(&raw, &BTreeMap::new());
        assert_eq!(body["prompt"], "OnceThe quick");
        assert_eq!(body["max_tokens"], 1, "never 0: the remote would reject it");
    }

    #[test]
    fn raw_prompt_goes_to_completions_and_omits_unset_options() {
        let mut r = req(Prompt::Raw("Once".into()));
        r.params.stop.clear();
        r.params.seed = None;
        let (path, body) = request_body(&r, &BTreeMap::new());
        assert_eq!(path, "completions");
        assert_eq!(body["prompt"], "Once");
        assert!(body.get("messages").is_none());
        assert!(body.get("stop").is_none() && body.get("seed").is_none());
    }

    #[test]
    fn response_format_and_logprobs_are_asked_of_the_remote_in_each_endpoints_words() {
        let format = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}});
        let mut chat = req(Prompt::Chat(Vec::new()));
        chat.params.response_format = Some(format.clone());
        chat.params.grammar = Some("root ::= \"{}\"".into());
        chat.params.logprobs = Some(3);
        let (_, body) = request_body(&chat, &BTreeMap::new());
        assert_eq!(body["response_format"], format);
        assert_eq!(
            (&body["logprobs"], &body["top_logprobs"]),
            (&json!(true), &json!(3))
        );
        assert!(
            body.get("grammar").is_none(),
            "GBNF is llama.cpp's, not OpenAI's"
        );

        let mut raw = req(Prompt::Raw("x".into()));
        raw.params.logprobs = Some(2);
        let (_, body) = request_body(&raw, &BTreeMap::new());
        assert_eq!(body["logprobs"], 2);
        assert!(body.get("top_logprobs").is_none() && body.get("response_format").is_none());
        let (_, body) = request_body(&req(Prompt::Raw("x".into())), &BTreeMap::new());
        assert!(body.get("logprobs").is_none());
    }

    #[test]
    fn extra_args_add_fields_but_never_replace_request_fields() {
        let extra: BTreeMap<String, Value> =
            serde_json::from_value(json!({"top_k": 40, "temperature": 1.5, "stream": false}))
                .unwrap();
        let (_, body) = request_body(&req(Prompt::Raw("x".into())), &extra);
        assert_eq!(body["top_k"], 40);
        assert_eq!(body["temperature"], 0.0);
        assert_eq!(body["stream"], true);
    }

    #[test]
    fn error_messages_are_found_in_every_common_shape() {
        let cases = [
            (r#"{"error":{"message":"bad","type":"x"}}"#, "bad"),
            (r#"{"error":"flat"}"#, "flat"),
            (r#"{"message":"msg"}"#, "msg"),
            (r#"{"detail":"fastapi"}"#, "fastapi"),
            ("  plain text \n", "plain text"),
            ("", ""),
        ];
        for (body, want) in cases {
            assert_eq!(error_message(body), want, "{body}");
        }
        let long = "x".repeat(1000);
        assert_eq!(error_message(&long).chars().count(), 301);
    }

    #[test]
    fn statuses_map_to_what_the_caller_can_do() {
        let u = "http://h/v1";
        let body = r#"{"error":{"message":"prompt too long"}}"#;
        assert_eq!(
            status_error(400, body, "m", u),
            BackendError::BadRequest("prompt too long".into())
        );
        assert_eq!(
            status_error(422, "", "m", u),
            BackendError::BadRequest("http://h/v1 rejected the request (422)".into())
        );
        assert_eq!(
            status_error(404, body, "m", u),
            BackendError::UnknownModel("m".into())
        );
        for s in [408, 429, 500, 502, 503] {
            assert!(
                matches!(status_error(s, body, "m", u), BackendError::Unavailable(_)),
                "{s}"
            );
        }
        assert_eq!(
            status_error(503, "loading", "m", u),
            BackendError::Unavailable("http://h/v1 answered 503: loading".into())
        );
        match status_error(401, "", "m", u) {
            BackendError::Failed(m) => assert!(m.contains("api_key"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            status_error(418, "", "m", u),
            BackendError::Failed(_)
        ));
    }

    #[test]
    fn in_stream_errors_use_their_code_when_it_is_an_http_status() {
        let u = "http://h/v1";
        let e = json!({"error": {"message": "context overflow", "code": 400}});
        assert_eq!(
            stream_error(&e, "m", u),
            BackendError::BadRequest("context overflow".into())
        );
        let e = json!({"error": {"message": "boom", "code": "internal"}});
        assert_eq!(
            stream_error(&e, "m", u),
            BackendError::Failed("http://h/v1 failed mid-stream: boom".into())
        );
    }
}
