//! The embedded inference engine: llama.cpp through `llama-cpp-2`, on CPU.
//!
//! llama.cpp contexts borrow the model and are not `Sync`, so each slot is a dedicated OS thread
//! that owns one context for its whole life and takes jobs from shared queues. Generation is
//! CPU-bound and must never run on the async runtime's workers.
//!
//! Two queues: user jobs run on the shared slots; validation jobs (the mesh's check of this node)
//! go first on any slot and also have a reserved slot of their own, so a long user answer never
//! makes a node fail its round. Which job a slot takes, whether a user job is admitted and what
//! `Retry-After` to answer are decided in [`infermesh_state::queue`].

mod config;
#[cfg(feature = "llama")]
mod llama;

pub use config::{EngineConfig, DEFAULT_QUEUE_PATIENCE};
#[cfg(feature = "llama")]
pub use llama::*;
