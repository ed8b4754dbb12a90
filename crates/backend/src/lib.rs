//! Backends (model servers) and their drivers.
//!
//! A [`Backend`] is anything that can load a model, report health, run an inference and stop.
//! The node never talks to llama.cpp or an HTTP model server directly: it holds `Arc<dyn Backend>`
//! so the tester, the router and the status code treat every driver alike.

pub mod api;
pub mod child;
pub mod config;
pub mod disk;
#[cfg(feature = "llama")]
pub mod embedded;
pub mod engine;
pub mod gguf;
#[cfg(feature = "llama")]
pub mod grammar;
pub mod llama_server;
pub mod model_fetch;
pub mod openai;
pub mod stop;
pub mod tester;
pub mod types;

pub use api::{Backend, BackendError, BackendInfo, EventStream, InferStream, LoadProgress};
pub use config::{merge_args, ModelSpec};
pub use types::{
    ChatMessage, Continuation, Embeddings, FinishReason, GenParams, InferEvent, InferRequest,
    Priority, Prompt, TokenLogprob, Usage,
};
