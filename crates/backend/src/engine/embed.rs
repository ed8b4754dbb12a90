//! Embeddings: a short-lived context per request, with embeddings on and mean pooling, so an
//! embedding never changes a generation slot's context and a slot never waits behind one.

use std::num::NonZeroU32;

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_batch::LlamaBatch;

use super::{llama_backend, Engine};
use crate::api::BackendError;
use crate::types::Embeddings;

fn bad(message: String) -> BackendError {
    BackendError::BadParam {
        message,
        param: "input".into(),
    }
}

impl Engine {
    /// L2-normalised, mean-pooled embeddings of `inputs` in order. Blocking: call from
    /// `spawn_blocking`.
    pub fn embed(&self, inputs: &[String]) -> Result<Embeddings, BackendError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            BackendError::Failed(format!("embedding {what}: {e}"))
        };
        let vocab = self.model.vocab();
        let mut tokenized = Vec::with_capacity(inputs.len());
        for (i, text) in inputs.iter().enumerate() {
            let tokens = vocab.tokenize(text.as_bytes(), true, false);
            if text.is_empty() || tokens.is_empty() {
                return Err(bad(format!("`input[{i}]` is empty")));
            }
            if tokens.len() as u32 > self.n_ctx {
                return Err(bad(format!(
                    "`input[{i}]` is {} tokens; this model reads at most {}",
                    tokens.len(),
                    self.n_ctx
                )));
            }
            tokenized.push(tokens);
        }
        let longest = tokenized.iter().map(Vec::len).max().unwrap_or(1) as u32;
        let n = longest.max(8);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n))
            .with_n_batch(n)
            .with_n_ubatch(n)
            .with_n_threads(self.n_threads)
            .with_n_threads_batch(self.n_threads)
            .with_embeddings(true)
            .with_pooling_type(LlamaPoolingType::Mean);
        let mut ctx = self
            .model
            .new_context(llama_backend()?, params)
            .map_err(|e| failed("context", &e))?;
        let mut out = Embeddings {
            vectors: Vec::with_capacity(tokenized.len()),
            prompt_tokens: 0,
        };
        for tokens in &tokenized {
            ctx.clear_kv_cache();
            let mut batch = LlamaBatch::new(tokens.len(), 1);
            for (i, t) in tokens.iter().enumerate() {
                batch
                    .add(*t, i as i32, &[0], true)
                    .map_err(|e| failed("batch", &e))?;
            }
            ctx.decode(&mut batch).map_err(|e| failed("decode", &e))?;
            let v = ctx.embeddings_seq_ith(0).map_err(|e| failed("read", &e))?;
            out.vectors.push(normalised(v));
            out.prompt_tokens += tokens.len() as u32;
        }
        Ok(out)
    }
}

/// Unit length, as OpenAI's embeddings are, so a dot product is the cosine similarity.
fn normalised(v: &[f32]) -> Vec<f32> {
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 {
        return v.to_vec();
    }
    v.iter().map(|x| (f64::from(*x) / norm) as f32).collect()
}
