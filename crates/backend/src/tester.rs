//! The tester: proves a backend can serve each of its models, the same way for every driver.
//!
//! Per model, in sorted order (so results and the reported failing model are reproducible):
//! load → health → one real inference whose output is checked → stop. Every model is tested
//! even after a failure, so one run tells the operator everything that is wrong, and the
//! backend is stopped after each model, even a failed one, so a half-loaded model never holds
//! memory while the next one loads.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::api::{Backend, BackendError};
use crate::types::{ChatMessage, GenParams, InferEvent, InferRequest, Priority, Prompt};

/// The fixed validation prompt: short, so the test costs little, and one any chat model answers.
pub const TEST_PROMPT: &str = "Reply with one word: hello";
const TEST_MAX_TOKENS: u32 = 8;

/// The outcome of testing one model. A `*_ms` of 0 means the step did not complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelResult {
    pub model: String,
    pub load_ms: u64,
    pub health_ms: u64,
    pub infer_ms: u64,
    pub error: Option<String>,
}

/// The outcome of a whole test run (`POST /admin/v1/nodes/:id/test`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    /// Every model passed. A backend with no models has proven nothing, so that is not ok.
    pub ok: bool,
    pub backend_id: String,
    pub started_at_ms: u64,
    pub models: Vec<ModelResult>,
    /// The first failing model in sorted order.
    pub failing_model: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestStep {
    Load,
    Health,
    Infer,
    Stop,
}

impl TestStep {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Load => "load",
            Self::Health => "health",
            Self::Infer => "infer",
            Self::Stop => "stop",
        }
    }
}

/// What the tester is doing, for live progress display.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TestProgress {
    Started { model: String },
    Step { model: String, step: TestStep },
    ModelDone(ModelResult),
}

/// Tests `models` on `backend`, each step bounded by `timeout`.
pub async fn run_test(
    backend: &dyn Backend,
    models: &[String],
    timeout: Duration,
    progress: impl Fn(TestProgress),
) -> TestResult {
    let started_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut sorted = models.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut results = Vec::with_capacity(sorted.len());
    for model in sorted {
        progress(TestProgress::Started {
            model: model.clone(),
        });
        let result = test_model(backend, &model, timeout, &progress).await;
        progress(TestProgress::ModelDone(result.clone()));
        results.push(result);
    }
    let failing_model = results
        .iter()
        .find(|r| r.error.is_some())
        .map(|r| r.model.clone());
    TestResult {
        ok: !results.is_empty() && failing_model.is_none(),
        backend_id: backend.describe().id,
        started_at_ms,
        models: results,
        failing_model,
    }
}

async fn test_model(
    backend: &dyn Backend,
    model: &str,
    timeout: Duration,
    progress: &impl Fn(TestProgress),
) -> ModelResult {
    let mut r = ModelResult {
        model: model.to_string(),
        load_ms: 0,
        health_ms: 0,
        infer_ms: 0,
        error: None,
    };
    let step = |s: TestStep| {
        progress(TestProgress::Step {
            model: model.to_string(),
            step: s,
        });
        s
    };
    let passed = async {
        r.load_ms = timed(step(TestStep::Load), timeout, backend.load(model)).await?;
        r.health_ms = timed(step(TestStep::Health), timeout, backend.health()).await?;
        r.infer_ms = timed(step(TestStep::Infer), timeout, infer_once(backend, model)).await?;
        Ok::<(), String>(())
    }
    .await;
    let stopped = timed(step(TestStep::Stop), timeout, backend.stop()).await;
    // The first failure is the cause; a stop failure after it is a consequence.
    r.error = passed.err().or(stopped.err());
    r
}

/// Runs one step; its duration in whole milliseconds, rounded up so a step that ran is never 0.
async fn timed<E: std::fmt::Display>(
    step: TestStep,
    timeout: Duration,
    fut: impl Future<Output = Result<(), E>>,
) -> Result<u64, String> {
    let start = Instant::now();
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(format!(
            "{} timed out after {}",
            step.as_str(),
            fmt_duration(timeout)
        )),
        Ok(Err(e)) => Err(format!("{} failed: {e}", step.as_str())),
        Ok(Ok(())) => Ok(start.elapsed().as_nanos().div_ceil(1_000_000) as u64),
    }
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Why a test inference's stream does not count as an answer.
#[derive(Debug, PartialEq)]
pub enum BadAnswer {
    Backend(BackendError),
    Empty,
    Unfinished,
    TextAfterDone,
    DoneTwice,
}

impl std::fmt::Display for BadAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Backend(e) => write!(f, "{e}"),
            Self::Empty => f.write_str("empty response"),
            Self::Unfinished => f.write_str("stream ended without completion"),
            Self::TextAfterDone => f.write_str("stream sent text after completion"),
            Self::DoneTwice => f.write_str("stream completed more than once"),
        }
    }
}

async fn infer_once(backend: &dyn Backend, model: &str) -> Result<(), BadAnswer> {
    checked_answer(backend, model, TEST_PROMPT, TEST_MAX_TOKENS)
        .await
        .map(|_| ())
}

/// One greedy chat inference of `prompt`, accepted only if it is a well-formed stream (text,
/// then exactly one `Done`) with visible text; returns the completion tokens. Shared by the
/// tester and the validation round, so both judge an answer the same way.
pub async fn checked_answer(
    backend: &dyn Backend,
    model: &str,
    prompt: &str,
    max_tokens: u32,
) -> Result<u32, BadAnswer> {
    let req = InferRequest {
        model: model.to_string(),
        prompt: Prompt::Chat(vec![ChatMessage {
            role: "user".into(),
            content: prompt.into(),
        }]),
        params: GenParams {
            max_tokens,
            temperature: 0.0,
            ..GenParams::default()
        },
        // The tester and the round judge this node: never behind its user traffic.
        priority: Priority::Validation,
    };
    let mut rx = backend.infer(req).await.map_err(BadAnswer::Backend)?;
    let mut text = String::new();
    let mut tokens = None;
    while let Some(event) = rx.recv().await {
        match event.map_err(BadAnswer::Backend)? {
            InferEvent::Text(_) if tokens.is_some() => return Err(BadAnswer::TextAfterDone),
            InferEvent::Text(t) => text.push_str(&t),
            // The tester sends no tools; a backend that calls one anyway answered no text,
            // which `Empty` below reports.
            InferEvent::Logprobs(_) | InferEvent::ToolCalls(_) => {}
            InferEvent::Done { .. } if tokens.is_some() => return Err(BadAnswer::DoneTwice),
            InferEvent::Done { usage, .. } => tokens = Some(usage.completion_tokens),
        }
    }
    match tokens {
        None => Err(BadAnswer::Unfinished),
        Some(_) if text.trim().is_empty() => Err(BadAnswer::Empty),
        Some(n) => Ok(n),
    }
}

#[cfg(test)]
#[path = "tester_tests.rs"]
mod tests;
