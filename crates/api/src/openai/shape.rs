//! Response bodies in OpenAI's wire format (async-openai's types for chat).

use async_openai::types::chat::{
    ChatChoice, ChatChoiceLogprobs, ChatChoiceStream, ChatCompletionResponseMessage,
    ChatCompletionStreamResponseDelta, ChatCompletionTokenLogprob, CompletionUsage,
    CreateChatCompletionResponse, CreateChatCompletionStreamResponse, FinishReason as OaFinish,
    Role, TopLogprobs,
};
use infermesh_backend::{FinishReason, TokenLogprob, Usage};
use serde_json::{json, Value};

/// Which endpoint's format to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `/v1/chat/completions`
    Chat,
    /// `/v1/completions`
    Text,
}

impl Shape {
    /// The endpoint that answers in this shape.
    pub fn path(self) -> &'static str {
        match self {
            Self::Chat => "/v1/chat/completions",
            Self::Text => "/v1/completions",
        }
    }

    /// The word `/api/requests` records for it.
    pub fn endpoint(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Text => "completion",
        }
    }
}

pub struct Meta {
    shape: Shape,
    id: String,
    model: String,
    created: u32,
}

fn oa_finish(f: FinishReason) -> OaFinish {
    match f {
        FinishReason::Stop => OaFinish::Stop,
        FinishReason::Length => OaFinish::Length,
        FinishReason::ToolCalls => OaFinish::ToolCalls,
    }
}

fn oa_usage(u: Usage) -> CompletionUsage {
    CompletionUsage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.prompt_tokens + u.completion_tokens,
        ..Default::default()
    }
}

/// Whole tool calls from their streamed pieces: per `index`, the first piece's `id`, `type`
/// and `function.name`, and `function.arguments` concatenated.
pub fn merge_tool_calls(pieces: &[Value]) -> Value {
    let mut calls: Vec<Value> = Vec::new();
    for p in pieces.iter().filter_map(Value::as_array).flatten() {
        let i = p["index"].as_u64().unwrap_or(calls.len() as u64) as usize;
        if i > calls.len() {
            continue; // a gap: not a stream of calls this can assemble
        }
        if i == calls.len() {
            calls.push(json!({"id": p["id"], "type": p["type"],
                              "function": {"name": p["function"]["name"], "arguments": ""}}));
        }
        let args = p["function"]["arguments"].as_str().unwrap_or_default();
        let call = &mut calls[i];
        if let Some(a) = call["function"]["arguments"].as_str() {
            call["function"]["arguments"] = Value::String(format!("{a}{args}"));
        }
    }
    Value::Array(calls)
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("response types serialize")
}

fn to_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("response types serialize")
}

fn chat_logprobs(lps: &[TokenLogprob]) -> ChatChoiceLogprobs {
    ChatChoiceLogprobs {
        content: Some(
            lps.iter()
                .map(|l| ChatCompletionTokenLogprob {
                    token: l.token.clone(),
                    logprob: l.logprob,
                    bytes: Some(l.bytes.clone()),
                    top_logprobs: l
                        .top
                        .iter()
                        .map(|(token, bytes, logprob)| TopLogprobs {
                            token: token.clone(),
                            logprob: *logprob,
                            bytes: Some(bytes.clone()),
                        })
                        .collect(),
                })
                .collect(),
        ),
        refusal: None,
    }
}

/// The legacy completions shape: parallel arrays, `text_offset` counted from `offset` (the
/// characters of the answer before these tokens).
fn text_logprobs(lps: &[TokenLogprob], offset: usize) -> Value {
    let mut at = offset;
    let offsets: Vec<usize> = lps
        .iter()
        .map(|l| {
            let here = at;
            at += l.token.chars().count();
            here
        })
        .collect();
    json!({
        "tokens": lps.iter().map(|l| &l.token).collect::<Vec<_>>(),
        "token_logprobs": lps.iter().map(|l| l.logprob).collect::<Vec<_>>(),
        "top_logprobs": lps.iter().map(|l| {
            l.top.iter().map(|(t, _, lp)| (t.clone(), json!(lp))).collect::<serde_json::Map<_, _>>()
        }).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

impl Meta {
    pub fn new(shape: Shape, model: &str, created: u32) -> Self {
        let prefix = match shape {
            Shape::Chat => "chatcmpl",
            Shape::Text => "cmpl",
        };
        Self {
            shape,
            id: format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
            model: model.to_string(),
            created,
        }
    }

    /// The whole answer (non-streamed); `logprobs` when the request asked for them.
    pub fn full(
        &self,
        text: &str,
        finish: FinishReason,
        usage: Usage,
        logprobs: Option<&[TokenLogprob]>,
    ) -> Value {
        match self.shape {
            Shape::Chat => to_value(&CreateChatCompletionResponse {
                id: self.id.clone(),
                object: "chat.completion".into(),
                created: self.created,
                model: self.model.clone(),
                choices: vec![ChatChoice {
                    index: 0,
                    message: ChatCompletionResponseMessage {
                        content: Some(text.to_string()),
                        role: Role::Assistant,
                        ..Default::default()
                    },
                    finish_reason: Some(oa_finish(finish)),
                    logprobs: logprobs.map(chat_logprobs),
                }],
                usage: Some(oa_usage(usage)),
                ..Default::default()
            }),
            Shape::Text => json!({
                "id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model,
                "choices": [{"text": text, "index": 0,
                             "logprobs": logprobs.map(|l| text_logprobs(l, 0)),
                             "finish_reason": finish.as_str()}],
                "usage": to_value(&oa_usage(usage)),
            }),
        }
    }

    /// One streamed chunk, serialized: a piece of text, the opening role chunk, or the closing
    /// finish chunk. Straight to text, with no `Value` in between: this runs once per token.
    /// `logprobs` are those of the tokens in `text`, with the answer's length so far in
    /// characters (the legacy shape's `text_offset`).
    pub fn chunk(
        &self,
        text: Option<&str>,
        opening: bool,
        finish: Option<FinishReason>,
        logprobs: Option<(&[TokenLogprob], usize)>,
    ) -> String {
        match self.shape {
            Shape::Chat => to_text(&CreateChatCompletionStreamResponse {
                id: self.id.clone(),
                object: "chat.completion.chunk".into(),
                created: self.created,
                model: self.model.clone(),
                choices: vec![ChatChoiceStream {
                    index: 0,
                    delta: ChatCompletionStreamResponseDelta {
                        content: text.map(str::to_string),
                        role: opening.then_some(Role::Assistant),
                        ..Default::default()
                    },
                    finish_reason: finish.map(oa_finish),
                    logprobs: logprobs.map(|(l, _)| chat_logprobs(l)),
                }],
                ..Default::default()
            }),
            Shape::Text => json!({
                "id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model,
                "choices": [{"text": text.unwrap_or(""), "index": 0,
                             "logprobs": logprobs.map(|(l, at)| text_logprobs(l, at)),
                             "finish_reason": finish.map(FinishReason::as_str)}],
            })
            .to_string(),
        }
    }

    /// A streamed piece of the answer's tool calls, as the backend sent it (chat only).
    pub fn tool_chunk(&self, calls: &Value) -> String {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": null}],
        })
        .to_string()
    }

    /// The extra chunk sent when `stream_options.include_usage` is set: no choices, only usage.
    pub fn usage_chunk(&self, usage: Usage) -> String {
        let object = match self.shape {
            Shape::Chat => "chat.completion.chunk",
            Shape::Text => "text_completion",
        };
        json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": [], "usage": to_value(&oa_usage(usage)),
        })
        .to_string()
    }
}
