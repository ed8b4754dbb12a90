//! How the embedded engine is sized: plain settings, known to builds without llama.cpp too.

use std::time::Duration;

/// How long a user request may wait for a slot before it is answered 503 with `Retry-After`.
/// Well under common client timeouts (OpenAI's Python client: 600 s), so the client can retry
/// elsewhere rather than find out at its own deadline.
pub const DEFAULT_QUEUE_PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Context length per slot, in tokens (prompt + completion).
    pub n_ctx: u32,
    /// CPU threads per slot.
    pub n_threads: i32,
    /// Parallel slots for user requests: beyond this they wait in the queue.
    pub slots: usize,
    /// Slots are sequences of one continuous batch (one context, one decode for all running
    /// answers), rather than contexts of their own each with a share of the cores.
    pub batched: bool,
    /// One more slot that only validation requests use (see the module docs).
    pub reserved_validation_slot: bool,
    /// How long a user request may wait in the queue.
    pub queue_patience: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            n_ctx: 2048,
            n_threads: cores as i32,
            slots: 1,
            batched: true,
            reserved_validation_slot: true,
            queue_patience: DEFAULT_QUEUE_PATIENCE,
        }
    }
}
