//! The `Backend` trait every driver implements.

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::types::{Embeddings, InferEvent, InferRequest};

/// A running inference. Dropping the receiver cancels generation.
pub type InferStream = mpsc::Receiver<Result<InferEvent, BackendError>>;

/// A streamed answer as the remote's own OpenAI server-sent events, whole events per item; a
/// failure mid-answer is an in-band error event and `[DONE]`. Dropping it closes the remote's
/// stream.
pub type EventStream = futures::stream::BoxStream<'static, bytes::Bytes>;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum BackendError {
    /// The request itself is wrong (prompt too long, bad template input): the client's fault.
    #[error("{0}")]
    BadRequest(String),
    /// The request is wrong in one field, named by its JSON path (`messages`, `response_format`).
    #[error("{message}")]
    BadParam { message: String, param: String },
    /// The model is not known to this backend.
    #[error("model `{0}` is not served by this backend")]
    UnknownModel(String),
    /// The backend cannot serve right now (loading, stopped); another replica may.
    #[error("{0}")]
    Unavailable(String),
    /// Every slot is taken and the request could not start within its patience: answer 503
    /// with `Retry-After` rather than hold the client.
    #[error("{message}")]
    Overloaded { message: String, retry_after_s: u32 },
    /// The backend failed while working.
    #[error("{0}")]
    Failed(String),
}

/// The 400 for a request with `tools` on a backend that cannot take them: what this node serves
/// the model on (`on`), and what would.
pub fn tools_unsupported(model: &str, on: &str) -> BackendError {
    BackendError::BadParam {
        message: format!(
            "`tools` are not supported by this replica: it serves `{model}` on {on}; serve the \
             model with a `llama_server` backend whose args have `\"jinja\": true` (or an \
             OpenAI-compatible backend), or send the request without `tools`"
        ),
        param: "tools".into(),
    }
}

/// What a backend says about itself, for `/api/status` and the admin API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendInfo {
    pub id: String,
    /// Driver name: `embedded`, `llama_server`, `openai`.
    pub driver: String,
    pub models: Vec<String>,
    /// The model currently loaded, if any.
    pub loaded: Option<String>,
    /// Approximate memory the loaded model occupies, in GB.
    pub mem_gb: f32,
    /// While a model is being read in: how far (0..1) and for how long.
    pub loading: Option<LoadProgress>,
}

/// A model load under way, as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LoadProgress {
    pub fraction: f32,
    pub elapsed_ms: u64,
}

#[async_trait]
pub trait Backend: Send + Sync {
    fn describe(&self) -> BackendInfo;
    /// Loads `model`, replacing whatever was loaded. Returns when the model can answer.
    async fn load(&self, model: &str) -> Result<(), BackendError>;
    /// Cheap liveness check of the loaded model.
    async fn health(&self) -> Result<(), BackendError>;
    /// Starts an inference; events arrive on the returned stream.
    async fn infer(&self, req: InferRequest) -> Result<InferStream, BackendError>;
    /// The whole answer to a non-streamed request, as the remote's own OpenAI JSON, for drivers
    /// whose remote speaks OpenAI: one upstream call relayed, instead of a stream decoded into
    /// events and re-encoded. `None` when this driver has no such path (then [`Backend::infer`]).
    async fn complete(
        &self,
        _req: &InferRequest,
    ) -> Option<Result<serde_json::Value, BackendError>> {
        None
    }
    /// A streamed answer relayed as the remote's own events (see [`EventStream`]), for drivers
    /// whose remote speaks OpenAI: nothing decoded and re-encoded, and whatever the remote
    /// streams comes through. `include_usage` is the client's `stream_options.include_usage`.
    /// `None` when this driver has no such path or the request needs its events decoded (then
    /// [`Backend::infer`]).
    async fn stream(
        &self,
        _req: &InferRequest,
        _include_usage: bool,
    ) -> Option<Result<EventStream, BackendError>> {
        None
    }
    /// Embeddings of `inputs` with `model`. A driver that cannot embed says so as the client's
    /// error (400 naming `model`), never an empty answer.
    async fn embed(&self, model: &str, _inputs: &[String]) -> Result<Embeddings, BackendError> {
        Err(BackendError::BadParam {
            message: format!(
                "model `{model}` cannot make embeddings here: its backend ({} driver) has no \
                 embeddings endpoint",
                self.describe().driver
            ),
            param: "model".into(),
        })
    }
    /// Unloads and releases resources. Idempotent.
    async fn stop(&self) -> Result<(), BackendError>;
    /// Called by the node's health watch while the loaded model fails its health checks:
    /// restores what this driver owns and has lost (a managed process that exited). `Ok(true)`
    /// when something was restarted, `Ok(false)` when there is nothing this driver can restart
    /// (the default: an external server or an in-process engine is not ours to restart).
    async fn recover(&self) -> Result<bool, BackendError> {
        Ok(false)
    }
}

/// An error with its causes, `: `-joined: a transport error's top-level message ("error sending
/// request") hides the cause an operator needs ("Connection refused").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
