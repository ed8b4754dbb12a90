//! What the driver tests share: one engine at a time, the requests they send, and where a real
//! `llama-server` is.
#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::common::model_dir;
use infermesh_backend::llama_server::{LlamaServerBackend, LlamaServerConfig};
use infermesh_backend::model_fetch::{ensure_model, SMOLLM2_135M};
use infermesh_backend::{
    Backend, BackendError, ChatMessage, FinishReason, GenParams, InferEvent, InferRequest,
    ModelSpec, Priority, Prompt, Usage,
};

pub const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Held by the tests that run a model. Two llama.cpp engines busy-waiting on the same two cores
/// slow each other down more than tenfold (a 0.7 s test inference was measured at 14 s).
pub static ONE_ENGINE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub fn engine_turn() -> MutexGuard<'static, ()> {
    // A failed test poisons the lock; the next test is still entitled to its turn.
    ONE_ENGINE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The reqwest blocking client used by the harness cannot run inside an async runtime, so each
/// test drives its async part on a runtime of its own.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

pub fn chat(model: &str, content: &str, max_tokens: u32) -> InferRequest {
    InferRequest {
        model: model.into(),
        prompt: Prompt::Chat(vec![ChatMessage {
            role: "user".into(),
            content: content.into(),
        }]),
        params: GenParams {
            max_tokens,
            temperature: 0.0,
            ..GenParams::default()
        },
        priority: Priority::User,
    }
}

/// An inference's text and its single `Done`'s fields.
pub struct Answer {
    pub text: String,
    pub finish: FinishReason,
    pub usage: Usage,
    pub prompt_ms: f64,
    pub gen_ms: f64,
}

pub async fn answer(b: &dyn Backend, req: InferRequest) -> Result<Answer, BackendError> {
    let mut rx = b.infer(req).await?;
    let mut text = String::new();
    let mut done = None;
    while let Some(ev) = rx.recv().await {
        match ev? {
            InferEvent::Text(t) => {
                assert!(done.is_none(), "text after Done");
                text.push_str(&t);
            }
            InferEvent::Logprobs(_) => panic!("logprobs that were not asked for"),
            InferEvent::ToolCalls(c) => panic!("tool calls that were not asked for: {c}"),
            InferEvent::Done {
                finish_reason,
                usage,
                prompt_ms,
                gen_ms,
            } => {
                assert!(done.is_none(), "two Done events");
                done = Some((finish_reason, usage, prompt_ms, gen_ms));
            }
        }
    }
    let (finish, usage, prompt_ms, gen_ms) = done.expect("stream ended without Done");
    Ok(Answer {
        text,
        finish,
        usage,
        prompt_ms,
        gen_ms,
    })
}

/// `$INFERMESH_LLAMA_SERVER`, else `llama-server` on `PATH`, else what
/// `scripts/build-llama-server` installs by default.
pub fn find_llama_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("INFERMESH_LLAMA_SERVER") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("llama-server"))
            .find(|p| p.is_file())
    });
    let built =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/llama-server/llama-server");
    on_path.or_else(|| built.is_file().then_some(built))
}

/// The llama-server binary, the SmolLM2 GGUF and this test's turn at the engine; `None` (the
/// test is skipped, saying so) when no binary is found.
pub fn llama_setup() -> Option<(PathBuf, PathBuf, MutexGuard<'static, ()>)> {
    let Some(binary) = find_llama_server() else {
        eprintln!("skipped: llama-server not found on PATH");
        return None;
    };
    let turn = engine_turn();
    let gguf = ensure_model(&SMOLLM2_135M, &model_dir(), &mut |l| eprintln!("{l}")).unwrap();
    Some((binary, gguf, turn))
}

pub fn llama_backend(binary: PathBuf, models: Vec<ModelSpec>) -> LlamaServerBackend {
    LlamaServerBackend::new(LlamaServerConfig {
        id: "ls".into(),
        binary,
        models,
        ctx: 2048,
        startup_timeout: Duration::from_secs(60),
    })
}
