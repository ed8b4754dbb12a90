//! Driver-neutral request and event types.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// Sampling and length controls, already validated by the API layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenParams {
    pub max_tokens: u32,
    /// 0.0 means greedy decoding.
    pub temperature: f32,
    pub top_p: f32,
    pub stop: Vec<String>,
    pub seed: Option<u32>,
}

impl Default for GenParams {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            temperature: 0.7,
            top_p: 0.95,
            stop: Vec::new(),
            seed: None,
        }
    }
}

/// What to run: chat messages (the chat template is applied by the driver) or a raw prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Prompt {
    Chat(Vec<ChatMessage>),
    Raw(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferRequest {
    pub model: String,
    pub prompt: Prompt,
    pub params: GenParams,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// One step of a running inference. A stream is any number of `Text` followed by one `Done`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InferEvent {
    Text(String),
    Done {
        finish_reason: FinishReason,
        usage: Usage,
        /// Wall time spent on the prompt and on generation, for tokens/s reporting.
        prompt_ms: f64,
        gen_ms: f64,
    },
}
