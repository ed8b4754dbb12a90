//! The engine itself, over `llama-cpp-2`.

#[path = "batch.rs"]
mod batch;
#[path = "embed.rs"]
mod embed;
#[path = "run.rs"]
mod run;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use infermesh_state::queue::{
    admit, next_lane, prompt_bytes_cannot_fit, retry_after_s, Admission, SlotKind,
};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use tokio::sync::mpsc;

use super::config::EngineConfig;
use crate::api::BackendError;
use crate::types::{GenParams, InferEvent, Priority, Prompt};

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

/// A job's life: queued, then either started by a slot or abandoned by its wait timer — never
/// both, which one compare-and-swap on this decides.
const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const ABANDONED: u8 = 2;

type Tx = mpsc::Sender<Result<InferEvent, BackendError>>;

struct Job {
    prompt: Prompt,
    params: GenParams,
    tx: Tx,
    state: Arc<AtomicU8>,
}

#[derive(Default)]
struct Lanes {
    user: VecDeque<Job>,
    validation: VecDeque<Job>,
    closed: bool,
}

/// What the slots and the submitters share.
struct Shared {
    lanes: Mutex<Lanes>,
    wake: Condvar,
    /// User jobs running on the shared slots now.
    running: AtomicUsize,
    /// Moving average of a finished user job's wall time, for admission and `Retry-After`.
    mean_job_ms: Mutex<Option<f64>>,
    slots: usize,
}

impl Shared {
    fn lanes(&self) -> MutexGuard<'_, Lanes> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mean_job_ms(&self) -> Option<f64> {
        *self.mean_job_ms.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn observe_job(&self, ms: f64) {
        let mut m = self.mean_job_ms.lock().unwrap_or_else(|e| e.into_inner());
        // Weighted towards recent jobs: load shifts with the prompts clients send.
        *m = Some(m.map_or(ms, |old| old * 0.8 + ms * 0.2));
    }

    /// The next job for a slot of `kind`, waiting for one; `None` once the engine is closed and
    /// nothing is left for this slot.
    fn take(&self, kind: SlotKind) -> Option<(Job, Priority)> {
        let mut lanes = self.lanes();
        loop {
            if let Some(next) = Self::pop(&mut lanes, kind) {
                return Some(next);
            }
            if lanes.closed {
                return None;
            }
            lanes = self.wake.wait(lanes).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The next job for a slot of `kind` if one waits now.
    fn try_take(&self, kind: SlotKind) -> Option<(Job, Priority)> {
        Self::pop(&mut self.lanes(), kind)
    }

    fn pop(lanes: &mut Lanes, kind: SlotKind) -> Option<(Job, Priority)> {
        match next_lane(kind, lanes.user.len(), lanes.validation.len())? {
            Priority::Validation => lanes
                .validation
                .pop_front()
                .map(|j| (j, Priority::Validation)),
            Priority::User => lanes.user.pop_front().map(|j| (j, Priority::User)),
        }
    }
}

/// A loaded model with its worker slots. Dropping it stops the workers once queued jobs finish.
pub struct Engine {
    model: Arc<LlamaModel>,
    shared: Arc<Shared>,
    workers: Vec<std::thread::JoinHandle<()>>,
    patience: Duration,
    /// The longest byte length of any token's text: bounds a prompt's token count from below.
    longest_token_bytes: usize,
    n_threads: i32,
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
        let longest_token_bytes = model
            .tokens(true)
            .map(|(_, bytes)| bytes.len())
            .max()
            .unwrap_or(1);
        let slots = cfg.slots.max(1);
        let shared = Arc::new(Shared {
            lanes: Mutex::default(),
            wake: Condvar::new(),
            running: AtomicUsize::new(0),
            mean_job_ms: Mutex::new(None),
            slots,
        });
        // Batched: the shared slots are sequences of one context, decoded together by one
        // worker; otherwise each slot is a worker with a context of its own.
        let batched = cfg.batched && slots > 1;
        let shared_workers = if batched { 1 } else { slots };
        let kinds = (0..shared_workers)
            .map(|_| SlotKind::Shared)
            .chain(cfg.reserved_validation_slot.then_some(SlotKind::Reserved));
        let mut engine = Self {
            model: model.clone(),
            shared: shared.clone(),
            workers: Vec::new(),
            patience: cfg.queue_patience,
            longest_token_bytes,
            n_threads: cfg.n_threads.max(1),
            n_ctx,
            size_bytes: model.size(),
        };
        for (slot, kind) in kinds.enumerate() {
            let model = model.clone();
            let shared = shared.clone();
            let threads = cfg.n_threads.max(1);
            // Create the context before returning so a context failure is a load failure.
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let handle = std::thread::Builder::new()
                .name(format!("llama-slot-{slot}"))
                .spawn(move || {
                    if batched && kind == SlotKind::Shared {
                        batch::worker(backend, &model, n_ctx, slots, threads, &shared, ready_tx)
                    } else {
                        run::worker(backend, &model, n_ctx, threads, kind, &shared, ready_tx)
                    }
                })
                .map_err(|e| BackendError::Failed(format!("cannot start worker: {e}")))?;
            // On failure `engine` drops here, which closes the queues and joins started slots.
            ready_rx
                .recv()
                .map_err(|_| BackendError::Failed("worker died during start".into()))??;
            engine.workers.push(handle);
        }
        Ok(engine)
    }

    /// Queues a generation; events arrive on the returned stream. A prompt that cannot fit the
    /// context is rejected here, before it is tokenized or queued; a user request that cannot
    /// start within the engine's patience is answered `Overloaded`.
    pub fn submit(
        &self,
        prompt: Prompt,
        params: GenParams,
        priority: Priority,
    ) -> Result<mpsc::Receiver<Result<InferEvent, BackendError>>, BackendError> {
        let (bytes, param) = match &prompt {
            Prompt::Raw(s) => (s.len(), "prompt"),
            // The template only adds text, so the messages alone are a lower bound.
            Prompt::Chat(m) => (m.iter().map(|m| m.content.len()).sum(), "messages"),
        };
        if prompt_bytes_cannot_fit(bytes, self.n_ctx, self.longest_token_bytes) {
            return Err(BackendError::BadParam {
                message: format!(
                    "`{param}` is {bytes} bytes, more than this model's context of {} tokens can \
                     hold (at most {} bytes per token)",
                    self.n_ctx, self.longest_token_bytes
                ),
                param: param.into(),
            });
        }
        let (tx, rx) = mpsc::channel(64);
        let state = Arc::new(AtomicU8::new(QUEUED));
        let job = Job {
            prompt,
            params,
            tx: tx.clone(),
            state: state.clone(),
        };
        {
            let mut lanes = self.shared.lanes();
            if lanes.closed {
                return Err(BackendError::Unavailable("engine is stopping".into()));
            }
            match priority {
                Priority::Validation => lanes.validation.push_back(job),
                Priority::User => {
                    let running = self.shared.running.load(Ordering::Relaxed);
                    let mean = self.shared.mean_job_ms();
                    let patience_ms = self.patience.as_millis() as u64;
                    let queued = lanes.user.len();
                    if let Admission::Reject { retry_after_s } =
                        admit(queued, running, self.shared.slots, mean, patience_ms)
                    {
                        return Err(overloaded(queued, running, self.patience, retry_after_s));
                    }
                    lanes.user.push_back(job);
                }
            }
        }
        self.shared.wake.notify_all();
        if priority == Priority::User {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(abandon_after(self.shared.clone(), self.patience, state, tx));
            }
        }
        Ok(rx)
    }

    /// Model metadata value, e.g. `general.name`.
    pub fn meta(&self, key: &str) -> Option<String> {
        self.model.meta_val_str(key).ok()
    }
}

fn overloaded(queued: usize, running: usize, patience: Duration, retry: u32) -> BackendError {
    BackendError::Overloaded {
        message: format!(
            "all slots are busy ({running} running, {queued} queued) and this request could not \
             start within {} s; retry in {retry} s",
            patience.as_secs()
        ),
        retry_after_s: retry,
    }
}

/// Answers a user job that is still queued after `patience` with `Overloaded`, and takes it out
/// of the queue so it neither runs nor counts as waiting.
async fn abandon_after(shared: Arc<Shared>, patience: Duration, state: Arc<AtomicU8>, tx: Tx) {
    // A weak handle: the timer must not keep the answer's channel open after the job ended
    // (a reader waiting for the channel to close would wait out the whole patience).
    let weak = tx.downgrade();
    drop(tx);
    tokio::time::sleep(patience).await;
    // The client went away, or the job finished: nothing to answer.
    let Some(tx) = weak.upgrade() else {
        return;
    };
    if state
        .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    let (queued, running) = {
        let mut lanes = shared.lanes();
        lanes
            .user
            .retain(|j| j.state.load(Ordering::Acquire) != ABANDONED);
        (lanes.user.len(), shared.running.load(Ordering::Relaxed))
    };
    let retry = retry_after_s(queued + running, shared.slots, shared.mean_job_ms());
    let _ = tx
        .send(Err(overloaded(queued, running, patience, retry)))
        .await;
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.lanes().closed = true;
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
