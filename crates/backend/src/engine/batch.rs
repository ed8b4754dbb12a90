//! The shared slots as one continuous batch: one context whose KV cache holds a sequence per
//! slot, and one thread that decodes every running answer's next token in a single
//! `llama_decode`. A new request joins at the next step (its prompt in the same batch), a
//! finished one leaves and frees its sequence: nobody waits for a whole other answer, and the
//! cores work on one batch instead of being split between contexts that spin against each other.

use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::time::Instant;

use infermesh_state::queue::SlotKind;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;

use super::run::{add_tokens, claim, open_context, prepare, Generation, Prepared, Step};
use super::{Job, Shared};
use crate::api::BackendError;
use crate::types::Priority;

/// One running answer in its sequence.
struct Seq {
    g: Generation,
    /// The token sampled last, to decode at the next step.
    next: LlamaToken,
    /// Where its logits are in the current batch.
    idx: i32,
    user: bool,
    started: Instant,
}

/// A job admitted this step: its prompt is in the batch.
struct Fresh {
    seq: usize,
    job: Job,
    prep: Prepared,
    idx: i32,
    user: bool,
    started: Instant,
}

pub(super) fn worker(
    backend: &LlamaBackend,
    model: &LlamaModel,
    n_ctx: u32,
    seqs: usize,
    threads: i32,
    shared: &Shared,
    ready: std::sync::mpsc::Sender<Result<(), BackendError>>,
) {
    // Room for every sequence's whole context, and a whole prompt per sequence in one step.
    let total = n_ctx * seqs as u32;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(total))
        .with_n_batch(total)
        .with_n_seq_max(seqs as u32)
        .with_kv_unified(true)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let Some((mut ctx, template)) = open_context(backend, model, params, &ready) else {
        return;
    };
    let mut running: Vec<Option<Seq>> = (0..seqs).map(|_| None).collect();
    let mut batch = LlamaBatch::new(total as usize + seqs, seqs as i32);
    loop {
        batch.clear();
        let Some(fresh) = admit(
            model,
            template.as_ref(),
            &mut ctx,
            n_ctx,
            shared,
            &running,
            &mut batch,
        ) else {
            return; // closed, and nothing left to run
        };
        for (i, s) in running.iter_mut().enumerate() {
            if let Some(s) = s {
                if add_tokens(&mut batch, &[s.next], s.g.pos - 1, i as i32).is_err() {
                    continue; // the batch has room for every sequence: cannot happen
                }
                s.idx = batch.n_tokens() - 1;
            }
        }
        if batch.n_tokens() == 0 {
            continue;
        }
        let t0 = Instant::now();
        if let Err(e) = ctx.decode(&mut batch) {
            fail_all(
                &mut ctx,
                shared,
                &mut running,
                fresh,
                &format!("decode: {e}"),
            );
            continue;
        }
        let prompt_ms = t0.elapsed().as_secs_f64() * 1e3;
        for f in fresh {
            running[f.seq] = Some(Seq {
                g: Generation::new(f.job, f.prep, prompt_ms),
                next: LlamaToken(0),
                idx: f.idx,
                user: f.user,
                started: f.started,
            });
        }
        for (i, slot) in running.iter_mut().enumerate() {
            let Some(s) = slot.as_mut() else {
                continue;
            };
            match s.g.step(model, &ctx, s.idx) {
                Step::Next(t) => s.next = t,
                Step::Over => {
                    let s = slot.take().expect("checked above");
                    finish(&mut ctx, shared, i, &s);
                }
            }
        }
    }
}

/// Fills free sequences with waiting jobs, their prompts added to `batch`. Blocks for a job
/// only when nothing runs; `None` once the engine is closed and nothing runs.
fn admit(
    model: &LlamaModel,
    template: Option<&LlamaChatTemplate>,
    ctx: &mut LlamaContext<'_>,
    n_ctx: u32,
    shared: &Shared,
    running: &[Option<Seq>],
    batch: &mut LlamaBatch,
) -> Option<Vec<Fresh>> {
    let mut fresh = Vec::new();
    let idle = running.iter().all(Option::is_none);
    for seq in (0..running.len()).filter(|&i| running[i].is_none()) {
        loop {
            let next = if idle && fresh.is_empty() {
                match shared.take(SlotKind::Shared) {
                    Some(n) => Some(n),
                    None => return None,
                }
            } else {
                shared.try_take(SlotKind::Shared)
            };
            let Some((job, priority)) = next else {
                return Some(fresh);
            };
            if !claim(&job) {
                continue;
            }
            let user = priority == Priority::User;
            match prepare(model, template, n_ctx, &job) {
                Err(e) => {
                    let _ = job.tx.blocking_send(Err(e));
                }
                Ok(prep) => {
                    let _ = ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
                    if add_tokens(batch, &prep.tokens, 0, seq as i32).is_err() {
                        let _ = job
                            .tx
                            .blocking_send(Err(BackendError::Failed("batch is full".into())));
                        continue;
                    }
                    if user {
                        shared.running.fetch_add(1, Ordering::Relaxed);
                    }
                    fresh.push(Fresh {
                        seq,
                        idx: batch.n_tokens() - 1,
                        job,
                        prep,
                        user,
                        started: Instant::now(),
                    });
                    break;
                }
            }
        }
    }
    Some(fresh)
}

/// A sequence is over: its cache is freed and its time counted.
fn finish(ctx: &mut LlamaContext<'_>, shared: &Shared, seq: usize, s: &Seq) {
    let _ = ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
    if s.user {
        shared.running.fetch_sub(1, Ordering::Relaxed);
        shared.observe_job(s.started.elapsed().as_secs_f64() * 1e3);
    }
}

/// A decode failed: every answer in the batch ends with the error, and the cache starts over.
fn fail_all(
    ctx: &mut LlamaContext<'_>,
    shared: &Shared,
    running: &mut [Option<Seq>],
    fresh: Vec<Fresh>,
    why: &str,
) {
    for (i, slot) in running.iter_mut().enumerate() {
        if let Some(s) = slot.take() {
            let _ =
                s.g.job
                    .tx
                    .blocking_send(Err(BackendError::Failed(why.into())));
            finish(ctx, shared, i, &s);
        }
    }
    for f in fresh {
        let _ = f
            .job
            .tx
            .blocking_send(Err(BackendError::Failed(why.into())));
        if f.user {
            shared.running.fetch_sub(1, Ordering::Relaxed);
        }
    }
    ctx.clear_kv_cache();
}
