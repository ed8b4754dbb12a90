//! Driver-neutral request and event types.

pub use infermesh_state::Priority;
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
    /// A GBNF grammar (root rule `root`) every completion must match: structured output.
    #[serde(default)]
    pub grammar: Option<String>,
    /// Report each generated token's log-probability, with this many most likely alternatives
    /// (0..=20) at each position.
    #[serde(default)]
    pub logprobs: Option<u8>,
    /// The client's `response_format` as it sent it (already checked, and compiled into
    /// `grammar`): a backend that speaks OpenAI enforces this itself, as it takes no GBNF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<serde_json::Value>,
    /// Generate as if the answer already began with this text: the rest of a stream whose node
    /// went away mid-answer (see [`Continuation`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuation: Option<Continuation>,
    /// A request with `tools`: the client's `tools`, `tool_choice`, `parallel_tool_calls` and
    /// `messages` as it sent them. Only a backend whose chat template renders tool definitions
    /// and whose server parses the calls back (llama-server with `--jinja`, an OpenAI-compatible
    /// remote) takes them; the others refuse the request with a 400 that says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The part of an answer a client already received from a node that then went away. The
/// continuing backend reads it as the start of its own answer and generates only what follows;
/// its usage counts the continued text as completion, as if it had written it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Continuation {
    pub text: String,
    /// How many chunks carried `text` (about one token each): the count a backend that cannot
    /// tokenize it here uses for `max_tokens` and usage.
    pub chunks: u32,
}

impl Default for GenParams {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            temperature: 0.7,
            top_p: 0.95,
            stop: Vec::new(),
            seed: None,
            grammar: None,
            logprobs: None,
            response_format: None,
            continuation: None,
            tools: None,
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
    /// Validation requests get a slot user traffic cannot hold (see [`Priority`]).
    #[serde(default)]
    pub priority: Priority,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    /// The model called one or more tools (the answer is `ToolCalls` events).
    ToolCalls,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ToolCalls => "tool_calls",
        }
    }
}

/// Embeddings of a request's inputs, in input order, and the tokens read to make them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// One generated token's log-probability and, when asked for, the most likely alternatives at
/// its position (OpenAI's `logprobs.content[]` entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
    pub top: Vec<(String, Vec<u8>, f32)>,
}

/// One step of a running inference. A stream is any number of `Text` (each possibly preceded by
/// the `Logprobs` of the tokens it holds, when they were asked for) followed by one `Done`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InferEvent {
    Text(String),
    /// Log-probabilities of the tokens generated since the last `Text`; sent just before it.
    Logprobs(Vec<TokenLogprob>),
    /// A piece of the answer's tool calls: a streamed delta's `tool_calls` array as the remote
    /// sent it (each entry with its `index`; `id`, `type` and `function.name` on the first piece
    /// of a call, `function.arguments` in pieces).
    ToolCalls(serde_json::Value),
    Done {
        finish_reason: FinishReason,
        usage: Usage,
        /// Wall time spent on the prompt and on generation, for tokens/s reporting.
        prompt_ms: f64,
        gen_ms: f64,
    },
}
