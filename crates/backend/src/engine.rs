//! The embedded inference engine: llama.cpp through `llama-cpp-2`, on CPU.
//!
//! llama.cpp contexts borrow the model and are not `Sync`, so each slot is a dedicated OS thread
//! that owns one context for its whole life and takes jobs from a shared queue. Generation is
//! CPU-bound and must never run on the async runtime's workers.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{mpsc as std_mpsc, Arc, Mutex, OnceLock};
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use tokio::sync::mpsc;

use crate::api::BackendError;
use crate::stop::TextGate;
use crate::types::{ChatMessage, FinishReason, GenParams, InferEvent, Prompt, Usage};

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Context length per slot, in tokens (prompt + completion).
    pub n_ctx: u32,
    /// CPU threads per slot.
    pub n_threads: i32,
    /// Parallel slots: requests beyond this wait in the queue.
    pub slots: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            n_ctx: 2048,
            n_threads: cores as i32,
            slots: 1,
        }
    }
}

/// llama.cpp's global backend may be initialised once per process.
fn llama_backend() -> Result<&'static LlamaBackend, BackendError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            // llama.cpp logs every tensor at load; route it through tracing where it is filtered.
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| BackendError::Failed(format!("llama.cpp init failed: {e}")))
}

struct Job {
    prompt: Prompt,
    params: GenParams,
    tx: mpsc::Sender<Result<InferEvent, BackendError>>,
}

/// A loaded model with its worker slots. Dropping it stops the workers once queued jobs finish.
pub struct Engine {
    model: Arc<LlamaModel>,
    jobs: Option<std_mpsc::Sender<Job>>,
    workers: Vec<std::thread::JoinHandle<()>>,
    pub n_ctx: u32,
    pub size_bytes: u64,
}

impl Engine {
    /// Loads a GGUF file. Blocking: call from `spawn_blocking`. `progress` gets 0.0..=1.0.
    pub fn load(
        path: &Path,
        cfg: &EngineConfig,
        progress: impl FnMut(f32) -> bool + 'static,
    ) -> Result<Self, BackendError> {
        let backend = llama_backend()?;
        if !path.exists() {
            return Err(BackendError::Failed(format!(
                "model file {} does not exist",
                path.display()
            )));
        }
        let params = LlamaModelParams::default().with_progress_callback(progress);
        let model = LlamaModel::load_from_file(backend, path, &params)
            .map_err(|e| BackendError::Failed(format!("cannot load {}: {e}", path.display())))?;
        let model = Arc::new(model);
        let n_ctx = cfg.n_ctx.min(model.n_ctx_train().max(1));
        let (tx, rx) = std_mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::new();
        for slot in 0..cfg.slots.max(1) {
            let model = model.clone();
            let rx = rx.clone();
            let threads = cfg.n_threads.max(1);
            // Create the context before returning so a context failure is a load failure.
            let (ready_tx, ready_rx) = std_mpsc::channel();
            let handle = std::thread::Builder::new()
                .name(format!("llama-slot-{slot}"))
                .spawn(move || worker(backend, &model, n_ctx, threads, &rx, ready_tx))
                .map_err(|e| BackendError::Failed(format!("cannot start worker: {e}")))?;
            ready_rx
                .recv()
                .map_err(|_| BackendError::Failed("worker died during start".into()))??;
            workers.push(handle);
        }
        let size_bytes = model.size();
        Ok(Self {
            model,
            jobs: Some(tx),
            workers,
            n_ctx,
            size_bytes,
        })
    }

    /// Queues a generation; events arrive on the returned stream.
    pub fn submit(
        &self,
        prompt: Prompt,
        params: GenParams,
    ) -> Result<mpsc::Receiver<Result<InferEvent, BackendError>>, BackendError> {
        let (tx, rx) = mpsc::channel(64);
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| BackendError::Unavailable("engine is stopping".into()))?;
        jobs.send(Job { prompt, params, tx })
            .map_err(|_| BackendError::Unavailable("engine workers have stopped".into()))?;
        Ok(rx)
    }

    /// Model metadata value, e.g. `general.name`.
    pub fn meta(&self, key: &str) -> Option<String> {
        self.model.meta_val_str(key).ok()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.jobs.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(
    backend: &LlamaBackend,
    model: &LlamaModel,
    n_ctx: u32,
    threads: i32,
    rx: &Mutex<std_mpsc::Receiver<Job>>,
    ready: std_mpsc::Sender<Result<(), BackendError>>,
) {
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(n_ctx)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = match model.new_context(backend, params) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(BackendError::Failed(format!(
                "cannot create context: {e}"
            ))));
            return;
        }
    };
    let template = model
        .chat_template(None)
        .or_else(|_| LlamaChatTemplate::new("chatml"))
        .ok();
    let _ = ready.send(Ok(()));
    loop {
        // The lock is held only while waiting, so idle slots queue up behind it fairly.
        let job = match rx.lock().map(|r| r.recv()) {
            Ok(Ok(job)) => job,
            _ => return,
        };
        let tx = job.tx.clone();
        let result = run_job(model, template.as_ref(), &mut ctx, n_ctx, job);
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    }
}

fn render_prompt(
    model: &LlamaModel,
    template: Option<&LlamaChatTemplate>,
    prompt: &Prompt,
) -> Result<String, BackendError> {
    match prompt {
        Prompt::Raw(s) => Ok(s.clone()),
        Prompt::Chat(msgs) => {
            let template = template
                .ok_or_else(|| BackendError::Failed("model has no usable chat template".into()))?;
            let chat = msgs
                .iter()
                .map(|ChatMessage { role, content }| {
                    LlamaChatMessage::new(role.clone(), content.clone())
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| BackendError::BadRequest(format!("invalid message: {e}")))?;
            model
                .apply_chat_template(template, &chat, true)
                .map_err(|e| BackendError::BadRequest(format!("chat template failed: {e}")))
        }
    }
}

fn sampler(params: &GenParams) -> LlamaSampler {
    if params.temperature <= 0.0 {
        return LlamaSampler::greedy();
    }
    let seed = params.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    });
    LlamaSampler::chain_simple([
        LlamaSampler::top_k(40),
        LlamaSampler::top_p(params.top_p.clamp(0.01, 1.0), 1),
        LlamaSampler::temp(params.temperature),
        LlamaSampler::dist(seed),
    ])
}

fn run_job(
    model: &LlamaModel,
    template: Option<&LlamaChatTemplate>,
    ctx: &mut LlamaContext<'_>,
    n_ctx: u32,
    job: Job,
) -> Result<(), BackendError> {
    let failed =
        |what: &str, e: &dyn std::fmt::Display| BackendError::Failed(format!("{what}: {e}"));
    let text = render_prompt(model, template, &job.prompt)?;
    let vocab = model.vocab();
    let tokens = vocab.tokenize(text.as_bytes(), true, true);
    if tokens.is_empty() {
        return Err(BackendError::BadRequest("prompt is empty".into()));
    }
    let n_prompt = tokens.len() as u32;
    if n_prompt >= n_ctx {
        return Err(BackendError::BadRequest(format!(
            "prompt is {n_prompt} tokens; this model's context holds {n_ctx}"
        )));
    }
    let budget = job.params.max_tokens.min(n_ctx - n_prompt);
    ctx.clear_kv_cache();

    let started = Instant::now();
    let mut batch = LlamaBatch::new(n_ctx as usize, 1);
    let last = tokens.len() - 1;
    for (i, t) in tokens.iter().enumerate() {
        batch
            .add(*t, i as i32, &[0], i == last)
            .map_err(|e| failed("batch", &e))?;
    }
    ctx.decode(&mut batch)
        .map_err(|e| failed("prompt decode", &e))?;
    let prompt_ms = started.elapsed().as_secs_f64() * 1e3;

    let gen_started = Instant::now();
    let mut sampler = sampler(&job.params);
    let mut gate = TextGate::new(&job.params.stop);
    let mut pos = n_prompt as i32;
    let mut generated = 0u32;
    let mut finish = FinishReason::Length;
    let mut hit_stop_sequence = false;
    while generated < budget {
        let token = sampler.sample(ctx, batch.n_tokens() - 1);
        if vocab.is_eog(token) {
            finish = FinishReason::Stop;
            break;
        }
        generated += 1;
        let feed = gate.feed(&vocab.token_to_piece(token, false, None));
        if !feed.emit.is_empty()
            && job
                .tx
                .blocking_send(Ok(InferEvent::Text(feed.emit)))
                .is_err()
        {
            return Ok(()); // the client went away: stop spending CPU on it
        }
        if feed.stopped {
            finish = FinishReason::Stop;
            hit_stop_sequence = true;
            break;
        }
        batch.clear();
        batch
            .add(token, pos, &[0], true)
            .map_err(|e| failed("batch", &e))?;
        pos += 1;
        ctx.decode(&mut batch).map_err(|e| failed("decode", &e))?;
    }
    let rest = gate.finish();
    if !rest.is_empty() && !hit_stop_sequence {
        let _ = job.tx.blocking_send(Ok(InferEvent::Text(rest)));
    }
    let _ = job.tx.blocking_send(Ok(InferEvent::Done {
        finish_reason: finish,
        usage: Usage {
            prompt_tokens: n_prompt,
            completion_tokens: generated,
        },
        prompt_ms,
        gen_ms: gen_started.elapsed().as_secs_f64() * 1e3,
    }));
    Ok(())
}
