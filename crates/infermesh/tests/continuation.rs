//! A continued answer, on each driver that runs a model here: the backend is given the prompt and
//! the first part of an answer (what a client had received when the node generating it went
//! away) and must write only what follows. With greedy decoding that is the rest of the very
//! answer it would have written in one go, and the usage counts the whole answer.

mod common;
mod driver_support;

use std::collections::BTreeMap;

use common::model_dir;
use driver_support::*;
use infermesh_backend::embedded::{EmbeddedBackend, ModelSource};
use infermesh_backend::engine::EngineConfig;
use infermesh_backend::model_fetch::{ensure_model, SMOLLM2_135M};
use infermesh_backend::{Backend, Continuation, FinishReason, InferEvent, ModelSpec};

const PROMPT: &str = "Write two sentences about the sea.";
const MAX_TOKENS: u32 = 24;

/// The answer's text as its `Text` events came, one string each.
async fn pieces(b: &dyn Backend) -> Vec<String> {
    let mut rx = b
        .infer(chat(SMOLLM2_135M.name, PROMPT, MAX_TOKENS))
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(ev) = rx.recv().await {
        if let InferEvent::Text(t) = ev.unwrap() {
            out.push(t);
        }
    }
    out
}

/// Writes the answer in one go, then again from its first `cut` pieces, and compares.
async fn continues_exactly(b: &dyn Backend, cut: usize) {
    let whole = answer(b, chat(SMOLLM2_135M.name, PROMPT, MAX_TOKENS))
        .await
        .unwrap();
    let pieces = pieces(b).await;
    assert_eq!(pieces.concat(), whole.text, "greedy answers repeat");
    assert!(pieces.len() > cut, "the answer is long enough: {pieces:?}");
    let sent = pieces[..cut].concat();
    let mut req = chat(SMOLLM2_135M.name, PROMPT, MAX_TOKENS);
    req.params.continuation = Some(Continuation {
        text: sent.clone(),
        chunks: cut as u32,
    });
    let rest = answer(b, req).await.unwrap();
    eprintln!(
        "whole {:?}; sent {sent:?}; continued {:?}",
        whole.text, rest.text
    );
    assert_eq!(
        format!("{sent}{}", rest.text),
        whole.text,
        "the continuation is the rest of the same answer"
    );
    assert_eq!(rest.finish, whole.finish);
    assert_eq!(
        rest.usage.completion_tokens, whole.usage.completion_tokens,
        "usage counts the continued text as completion"
    );
    assert_eq!(rest.usage.prompt_tokens, whole.usage.prompt_tokens);
    assert_eq!(whole.finish, FinishReason::Length, "{:?}", whole.text);
}

#[test]
fn the_embedded_engine_continues_an_answer() {
    let _turn = engine_turn();
    let gguf = ensure_model(&SMOLLM2_135M, &model_dir(), &mut |l| eprintln!("{l}")).unwrap();
    let models = BTreeMap::from([(SMOLLM2_135M.name.to_string(), ModelSource::File(gguf))]);
    let b = EmbeddedBackend::new("embedded", models, EngineConfig::default());
    block_on(async {
        b.load(SMOLLM2_135M.name).await.unwrap();
        continues_exactly(&b, 7).await;
    });
}

#[test]
fn llama_server_continues_an_answer() {
    let Some((binary, gguf, _turn)) = llama_setup() else {
        return;
    };
    let b = llama_backend(
        binary,
        vec![ModelSpec {
            name: SMOLLM2_135M.name.into(),
            args: BTreeMap::from([
                ("path".to_string(), serde_json::json!(gguf)),
                ("parallel".to_string(), serde_json::json!(1)),
            ]),
        }],
    );
    block_on(async {
        b.load(SMOLLM2_135M.name).await.unwrap();
        continues_exactly(&b, 7).await;
        b.stop().await.unwrap();
    });
}
