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
    let Some((mut ctx, template)) = open_context(backend, model, params, &ready) else {
        return;
    };
    while let Some((job, priority)) = shared.take(kind) {
        if !claim(&job) {
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

/// A worker's context and the model's chat template (chatml when the model has none), with
/// the outcome sent on `ready`: a context that cannot be made is a failed load.
pub(super) fn open_context<'m>(
    backend: &LlamaBackend,
    model: &'m LlamaModel,
    params: LlamaContextParams,
    ready: &std::sync::mpsc::Sender<Result<(), BackendError>>,
) -> Option<(LlamaContext<'m>, Option<LlamaChatTemplate>)> {
    let ctx = match model.new_context(backend, params) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(BackendError::Failed(format!(
                "cannot create context: {e}"
            ))));
            return None;
        }
    };
    let template = model
        .chat_template(None)
        .or_else(|_| LlamaChatTemplate::new("chatml"))
        .ok();
    let _ = ready.send(Ok(()));
    Some((ctx, template))
}

/// Takes `job` off its wait timer. A client that already hung up, or a job the timer answered,
/// costs nothing more: `false`.
pub(super) fn claim(job: &Job) -> bool {
    !job.tx.is_closed()
        && job
            .state
            .compare_exchange(QUEUED, STARTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
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

/// A job whose prompt is tokenized and checked, ready to decode.
pub(super) struct Prepared {
    /// Prompt tokens, then those of a continued answer's text.
    pub tokens: Vec<LlamaToken>,
    pub n_prompt: u32,
    pub n_continued: u32,
    /// Tokens it may still generate.
    pub budget: u32,
    pub sampler: LlamaSampler,
}

/// Renders and tokenizes `job`'s prompt (and the text of an answer it continues) and checks it
/// against the context of `n_ctx` tokens.
pub(super) fn prepare(
    model: &LlamaModel,
    template: Option<&LlamaChatTemplate>,
    n_ctx: u32,
    job: &Job,
) -> Result<Prepared, BackendError> {
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
    Ok(Prepared {
        tokens,
        n_prompt,
        n_continued,
        budget,
        sampler,
    })
}

/// One answer being generated: what it has produced, and whether it goes on.
pub(super) struct Generation {
    pub job: Job,
    pub sampler: LlamaSampler,
    gate: TextGate,
    /// Position of the next token in the sequence.
    pub pos: i32,
    generated: u32,
    budget: u32,
    n_prompt: u32,
    n_continued: u32,
    prompt_ms: f64,
    gen_started: Instant,
}

/// What a generation does after a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Decode the token and sample the next one.
    Next(LlamaToken),
    /// The answer is over (its `Done` is sent) or its client went away.
    Over,
}

impl Generation {
    pub fn new(job: Job, p: Prepared, prompt_ms: f64) -> Self {
        Self {
            gate: TextGate::new(&job.params.stop),
            pos: p.tokens.len() as i32,
            generated: 0,
            budget: p.budget,
            n_prompt: p.n_prompt,
            n_continued: p.n_continued,
            sampler: p.sampler,
            prompt_ms,
            gen_started: Instant::now(),
            job,
        }
    }

    /// Samples the token after the logits at batch index `idx` and sends what it adds.
    pub fn step(&mut self, model: &LlamaModel, ctx: &LlamaContext<'_>, idx: i32) -> Step {
        if self.generated >= self.budget {
            return self.done(FinishReason::Length, false);
        }
        if self.job.tx.is_closed() {
            return Step::Over; // the client went away: stop spending CPU on it
        }
        let token = self.sampler.sample(ctx, idx);
        if model.vocab().is_eog(token) {
            return self.done(FinishReason::Stop, false);
        }
        self.generated += 1;
        if let Some(top) = self.job.params.logprobs {
            let lp = logprob(model, ctx.get_logits_ith(idx), token, top);
            if self.send(InferEvent::Logprobs(vec![lp])).is_err() {
                return Step::Over;
            }
        }
        let feed = self
            .gate
            .feed(&model.vocab().token_to_piece(token, false, None));
        if !feed.emit.is_empty() && self.send(InferEvent::Text(feed.emit)).is_err() {
            return Step::Over;
        }
        if feed.stopped {
            return self.done(FinishReason::Stop, true);
        }
        if self.generated >= self.budget {
            return self.done(FinishReason::Length, false);
        }
        self.pos += 1;
        Step::Next(token)
    }

    fn send(&self, ev: InferEvent) -> Result<(), ()> {
        self.job.tx.blocking_send(Ok(ev)).map_err(|_| ())
    }

    /// Sends the held-back text (unless a stop sequence ended the answer) and `Done`.
    fn done(&mut self, finish: FinishReason, hit_stop_sequence: bool) -> Step {
        let rest = self.gate.finish();
        if !rest.is_empty() && !hit_stop_sequence {
            let _ = self.send(InferEvent::Text(rest));
        }
        let _ = self.send(InferEvent::Done {
            finish_reason: finish,
            usage: Usage {
                prompt_tokens: self.n_prompt,
                completion_tokens: self.n_continued + self.generated,
            },
            prompt_ms: self.prompt_ms,
            gen_ms: self.gen_started.elapsed().as_secs_f64() * 1e3,
        });
        Step::Over
    }
}

/// Adds `tokens` to `batch` for sequence `seq` from position `pos`, logits for the last only.
pub(super) fn add_tokens(
    batch: &mut LlamaBatch,
    tokens: &[LlamaToken],
    pos: i32,
    seq: i32,
) -> Result<(), BackendError> {
    let last = tokens.len().saturating_sub(1);
    for (i, t) in tokens.iter().enumerate() {
        batch
            .add(*t, pos + i as i32, &[seq], i == last)
            .map_err(|e| BackendError::Failed(format!("batch: {e}")))?;
    }
    Ok(())
}

/// Runs one job alone on `ctx`, sequence 0.
fn run_job(
    model: &LlamaModel,
    template: Option<&LlamaChatTemplate>,
    ctx: &mut LlamaContext<'_>,
    n_ctx: u32,
    job: Job,
) -> Result<(), BackendError> {
    let failed =
        |what: &str, e: &dyn std::fmt::Display| BackendError::Failed(format!("{what}: {e}"));
    let p = prepare(model, template, n_ctx, &job)?;
    ctx.clear_kv_cache();
    let started = Instant::now();
    let mut batch = LlamaBatch::new(n_ctx as usize, 1);
    add_tokens(&mut batch, &p.tokens, 0, 0)?;
    ctx.decode(&mut batch)
        .map_err(|e| failed("prompt decode", &e))?;
    let mut g = Generation::new(job, p, started.elapsed().as_secs_f64() * 1e3);
    while let Step::Next(token) = g.step(model, ctx, batch.n_tokens() - 1) {
        batch.clear();
        add_tokens(&mut batch, &[token], g.pos - 1, 0)?;
        ctx.decode(&mut batch).map_err(|e| failed("decode", &e))?;
    }
    Ok(())
}
