//! Response bodies in OpenAI's wire format (async-openai's types for chat).

use async_openai::types::chat::{
    ChatChoice, ChatChoiceStream, ChatCompletionResponseMessage, ChatCompletionStreamResponseDelta,
    CompletionUsage, CreateChatCompletionResponse, CreateChatCompletionStreamResponse,
    FinishReason as OaFinish, Role,
};
use infermesh_backend::{FinishReason, Usage};
use serde_json::{json, Value};

/// Which endpoint's format to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `/v1/chat/completions`
    Chat,
    /// `/v1/completions`
    Text,
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

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("response types serialize")
}

fn to_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("response types serialize")
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

    /// The whole answer (non-streamed).
    pub fn full(&self, text: &str, finish: FinishReason, usage: Usage) -> Value {
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
                    logprobs: None,
                }],
                usage: Some(oa_usage(usage)),
                ..Default::default()
            }),
            Shape::Text => json!({
                "id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model,
                "choices": [{"text": text, "index": 0, "logprobs": null,
                             "finish_reason": finish.as_str()}],
                "usage": to_value(&oa_usage(usage)),
            }),
        }
    }

    /// One streamed chunk, serialized: a piece of text, the opening role chunk, or the closing
    /// finish chunk. Straight to text, with no `Value` in between: this runs once per token.
    pub fn chunk(&self, text: Option<&str>, opening: bool, finish: Option<FinishReason>) -> String {
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
                    logprobs: None,
                }],
                ..Default::default()
            }),
            Shape::Text => json!({
                "id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model,
                "choices": [{"text": text.unwrap_or(""), "index": 0, "logprobs": null,
                             "finish_reason": finish.map(FinishReason::as_str)}],
            })
            .to_string(),
        }
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
