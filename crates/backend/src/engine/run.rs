//! One slot's thread: its context, and running a job on it.

use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::time::Instant;

use infermesh_state::queue::SlotKind;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use super::{Job, Shared, QUEUED, STARTED};
use crate::api::BackendError;
use crate::stop::TextGate;
use crate::types::{
    ChatMessage, FinishReason, GenParams, InferEvent, Priority, Prompt, TokenLogprob, Usage,
};

pub(super) fn worker(
    backend: &LlamaBackend,
    model: &LlamaModel,
    n_ctx: u32,
    threads: i32,
    kind: SlotKind,
    shared: &Shared,
    ready: std::sync::mpsc::Sender<Result<(), BackendError>>,
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
    while let Some((job, priority)) = shared.take(kind) {
        // A client that already hung up, or a job its wait timer answered, costs nothing more.
        if job.tx.is_closed()
            || job
                .state
                .compare_exchange(QUEUED, STARTED, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            continue;
        }
        let user = priority == Priority::User;
        if user {
            shared.running.fetch_add(1, Ordering::Relaxed);
        }
        let started = Instant::now();
        let tx = job.tx.clone();
        let result = run_job(model, template.as_ref(), &mut ctx, n_ctx, job);
        if user {
            shared.running.fetch_sub(1, Ordering::Relaxed);
            shared.observe_job(started.elapsed().as_secs_f64() * 1e3);
        }
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

fn sampler(model: &LlamaModel, params: &GenParams) -> Result<LlamaSampler, BackendError> {
    // The grammar goes first so the later samplers only ever see tokens it allows.
    let grammar =
        match &params.grammar {
            Some(g) => Some(LlamaSampler::grammar(model, g, "root").map_err(|e| {
                BackendError::BadParam {
                    message: format!("the grammar for `response_format` is not usable: {e}"),
                    param: "response_format".into(),
                }
            })?),
            None => None,
        };
    let rest = if params.temperature <= 0.0 {
        vec![LlamaSampler::greedy()]
    } else {
        let seed = params.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        });
        vec![
            LlamaSampler::top_k(40),
            LlamaSampler::top_p(params.top_p.clamp(0.01, 1.0), 1),
            LlamaSampler::temp(params.temperature),
            LlamaSampler::dist(seed),
        ]
    };
    Ok(LlamaSampler::chain_simple(grammar.into_iter().chain(rest)))
}

/// The token's text as OpenAI reports it: lossy UTF-8, with the raw bytes alongside.
fn piece(model: &LlamaModel, t: LlamaToken) -> (String, Vec<u8>) {
    let bytes = model.vocab().token_to_piece(t, false, None);
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

/// `token`'s log-probability under the model's own distribution at this position (before
/// temperature or truncation, as OpenAI reports it) and the `top` most likely alternatives.
fn logprob(model: &LlamaModel, logits: &[f32], token: LlamaToken, top: u8) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln();
    let mut best: Vec<(usize, f32)> = Vec::with_capacity(usize::from(top) + 1);
    if top > 0 {
        for (i, l) in logits.iter().enumerate() {
            if best.len() < usize::from(top) || *l > best[best.len() - 1].1 {
                let at = best.partition_point(|(_, b)| b >= l);
                best.insert(at, (i, *l));
                best.truncate(usize::from(top));
            }
        }
    }
    let (text, bytes) = piece(model, token);
    TokenLogprob {
        token: text,
        bytes,
        logprob: logits
            .get(token.0 as usize)
            .map_or(f32::NEG_INFINITY, |l| l - lse),
        top: best
            .into_iter()
            .map(|(i, l)| {
                let (t, b) = piece(model, LlamaToken(i as i32));
                (t, b, l - lse)
            })
            .collect(),
    }
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
    let mut tokens = vocab.tokenize(text.as_bytes(), true, true);
    if tokens.is_empty() {
        return Err(BackendError::BadRequest("prompt is empty".into()));
    }
    let n_prompt = tokens.len() as u32;
    // A continued answer: its text so far follows the prompt as the model's own tokens (never
    // parsed for special tokens: it is output, not markup).
    let continued = match &job.params.continuation {
        Some(c) => vocab.tokenize(c.text.as_bytes(), false, false),
        None => Vec::new(),
    };
    let n_continued = continued.len() as u32;
    tokens.extend_from_slice(&continued);
    let n_read = n_prompt + n_continued;
    if n_read >= n_ctx {
        return Err(BackendError::BadRequest(format!(
            "prompt is {n_read} tokens; this model's context holds {n_ctx}"
        )));
    }
    let budget = job
        .params
        .max_tokens
        .saturating_sub(n_continued)
        .min(n_ctx - n_read);
    let mut sampler = sampler(model, &job.params)?;
    // The grammar (structured output) must stand where the earlier node's answer left it.
    sampler.accept_many(&continued);
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
    let mut gate = TextGate::new(&job.params.stop);
    let mut pos = n_read as i32;
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
        if let Some(top) = job.params.logprobs {
            let lp = logprob(model, ctx.get_logits_ith(batch.n_tokens() - 1), token, top);
            if job
                .tx
                .blocking_send(Ok(InferEvent::Logprobs(vec![lp])))
                .is_err()
            {
                return Ok(());
            }
        }
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
            completion_tokens: n_continued + generated,
        },
        prompt_ms,
        gen_ms: gen_started.elapsed().as_secs_f64() * 1e3,
    }));
    Ok(())
}
