//! Issue 14, item 3: the validation check never waits behind user traffic. With the engine's one
//! user slot busy on a long answer, a validation-priority request still runs (on the reserved
//! slot) and finishes while the user answer is still streaming.

mod common;

use infermesh_backend::engine::{Engine, EngineConfig};
use infermesh_backend::model_fetch::{ensure_model, SMOLLM2_135M};
use infermesh_backend::{ChatMessage, GenParams, InferEvent, Priority, Prompt};

#[test]
fn validation_finishes_while_a_long_user_answer_holds_the_only_slot() {
    let gguf = ensure_model(&SMOLLM2_135M, &common::model_dir(), &mut |l| {
        eprintln!("{l}")
    })
    .unwrap();
    let cfg = EngineConfig {
        slots: 1,
        n_threads: 1,
        ..EngineConfig::default()
    };
    let engine = Engine::load(&gguf, &cfg, |_| true).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // A grammar with no early end: the user answer is long whatever the model prefers.
        let long = GenParams {
            max_tokens: 1500,
            temperature: 0.0,
            grammar: Some("root ::= [0-9, ]{600}".into()),
            ..GenParams::default()
        };
        let mut user = engine
            .submit(Prompt::Raw("1, 2, 3,".into()), long, Priority::User)
            .unwrap();
        // It is running (holding the slot) once its first token arrives.
        assert!(matches!(user.recv().await, Some(Ok(InferEvent::Text(_)))));

        let check = GenParams {
            max_tokens: 8,
            temperature: 0.0,
            ..GenParams::default()
        };
        let msgs = vec![ChatMessage {
            role: "user".into(),
            content: "Say hi".into(),
        }];
        let mut val = engine
            .submit(Prompt::Chat(msgs), check, Priority::Validation)
            .unwrap();
        let mut val_done = false;
        while let Some(ev) = val.recv().await {
            if let InferEvent::Done { usage, .. } = ev.unwrap() {
                assert!(usage.completion_tokens >= 1);
                val_done = true;
            }
        }
        assert!(val_done, "the validation request did not finish");
        // The user answer has not finished: the check did not wait for it.
        let mut user_done = false;
        while let Ok(ev) = user.try_recv() {
            user_done |= matches!(ev, Ok(InferEvent::Done { .. }));
        }
        assert!(
            !user_done,
            "the user answer ended before the check: nothing was shown"
        );
    });
}
