//! Tester orchestration checked against a scripted in-memory backend: ordering, stopping
//! between models, timeouts, answer validation and the failing model. Real drivers are tested
//! against the tester in the integration tests.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::mpsc;

use super::*;
use crate::api::{BackendInfo, InferStream};
use crate::types::{FinishReason, Usage};

/// How the scripted backend behaves for one model.
#[derive(Clone, Default)]
struct Script {
    load_err: Option<BackendError>,
    load_hangs: bool,
    /// Events the inference streams; `None` means a normal one-word answer.
    events: Option<Vec<Result<InferEvent, BackendError>>>,
}

#[derive(Default)]
struct Scripted {
    scripts: HashMap<String, Script>,
    calls: Mutex<Vec<String>>,
    loaded: Mutex<Option<String>>,
}

fn done() -> InferEvent {
    InferEvent::Done {
        finish_reason: FinishReason::Stop,
        usage: Usage::default(),
        prompt_ms: 1.0,
        gen_ms: 1.0,
    }
}

impl Scripted {
    fn new(scripts: &[(&str, Script)]) -> Self {
        Self {
            scripts: scripts
                .iter()
                .map(|(m, s)| (m.to_string(), s.clone()))
                .collect(),
            ..Default::default()
        }
    }

    fn log(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl Backend for Scripted {
    fn describe(&self) -> BackendInfo {
        BackendInfo {
            id: "fake".into(),
            driver: "scripted".into(),
            models: self.scripts.keys().cloned().collect(),
            loaded: self.loaded.lock().unwrap().clone(),
            mem_gb: 0.0,
            loading: None,
        }
    }

    async fn load(&self, model: &str) -> Result<(), BackendError> {
        self.log(format!("load {model}"));
        let script = self.scripts.get(model).cloned().unwrap_or_default();
        if script.load_hangs {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if let Some(e) = script.load_err {
            return Err(e);
        }
        *self.loaded.lock().unwrap() = Some(model.to_string());
        Ok(())
    }

    async fn health(&self) -> Result<(), BackendError> {
        self.log("health".into());
        Ok(())
    }

    async fn infer(&self, req: InferRequest) -> Result<InferStream, BackendError> {
        self.log(format!("infer {}", req.model));
        assert_eq!(req.params.temperature, 0.0);
        assert_eq!(req.params.max_tokens, 8);
        let script = self.scripts.get(&req.model).cloned().unwrap_or_default();
        let events = script
            .events
            .unwrap_or_else(|| vec![Ok(InferEvent::Text("Hello".into())), Ok(done())]);
        let (tx, rx) = mpsc::channel(events.len().max(1));
        for e in events {
            tx.send(e).await.unwrap();
        }
        Ok(rx)
    }

    async fn stop(&self) -> Result<(), BackendError> {
        self.log("stop".into());
        *self.loaded.lock().unwrap() = None;
        Ok(())
    }
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn models_run_in_sorted_order_with_a_stop_after_each() {
    let b = Scripted::new(&[]);
    let seen = Mutex::new(Vec::new());
    let r = run_test(&b, &names(&["b", "a", "b"]), T, |p| {
        seen.lock().unwrap().push(p)
    })
    .await;
    assert_eq!(
        b.calls(),
        ["load a", "health", "infer a", "stop", "load b", "health", "infer b", "stop"]
    );
    assert!(r.ok, "{r:?}");
    assert_eq!(r.backend_id, "fake");
    assert_eq!(r.failing_model, None);
    assert_eq!(r.models.len(), 2);
    for m in &r.models {
        assert!(
            m.load_ms >= 1 && m.health_ms >= 1 && m.infer_ms >= 1,
            "{m:?}"
        );
        assert_eq!(m.error, None);
    }
    let seen = seen.into_inner().unwrap();
    let step = |s| TestProgress::Step {
        model: "a".into(),
        step: s,
    };
    assert_eq!(
        seen[..5],
        [
            TestProgress::Started { model: "a".into() },
            step(TestStep::Load),
            step(TestStep::Health),
            step(TestStep::Infer),
            step(TestStep::Stop),
        ]
    );
    assert_eq!(seen[5], TestProgress::ModelDone(r.models[0].clone()));
    assert_eq!(seen.len(), 12);
}

#[tokio::test]
async fn a_failure_does_not_stop_the_run_and_the_first_sorted_failure_is_reported() {
    let fail = Script {
        load_err: Some(BackendError::Failed("file not found".into())),
        ..Default::default()
    };
    let b = Scripted::new(&[("c", fail.clone()), ("b", fail)]);
    let r = run_test(&b, &names(&["c", "b", "a"]), T, |_| {}).await;
    assert!(!r.ok);
    assert_eq!(r.failing_model.as_deref(), Some("b"));
    assert_eq!(
        b.calls(),
        ["load a", "health", "infer a", "stop", "load b", "stop", "load c", "stop"]
    );
    assert_eq!(
        r.models[1],
        ModelResult {
            model: "b".into(),
            load_ms: 0,
            health_ms: 0,
            infer_ms: 0,
            error: Some("load failed: file not found".into()),
        }
    );
    assert_eq!(r.models[0].error, None);
}

#[tokio::test]
async fn a_hanging_step_times_out_and_the_backend_is_still_stopped() {
    let hang = Script {
        load_hangs: true,
        ..Default::default()
    };
    let b = Scripted::new(&[("slow", hang)]);
    let r = run_test(&b, &names(&["slow"]), Duration::from_millis(50), |_| {}).await;
    assert_eq!(
        r.models[0].error.as_deref(),
        Some("load timed out after 50ms")
    );
    assert_eq!(b.calls(), ["load slow", "stop"]);
    assert_eq!(fmt_duration(Duration::from_secs(300)), "300s");
}

async fn answer_error(events: Vec<Result<InferEvent, BackendError>>) -> Option<String> {
    let script = Script {
        events: Some(events),
        ..Default::default()
    };
    let b = Scripted::new(&[("m", script)]);
    let r = run_test(&b, &names(&["m"]), T, |_| {}).await;
    assert_eq!(b.calls().last().unwrap(), "stop");
    assert_eq!(r.ok, r.models[0].error.is_none());
    r.models[0].error.clone()
}

#[tokio::test]
async fn only_a_well_formed_non_empty_answer_passes() {
    let text = |t: &str| Ok(InferEvent::Text(t.into()));
    assert_eq!(answer_error(vec![text(" hi"), Ok(done())]).await, None);
    assert_eq!(
        answer_error(vec![text(" \n"), Ok(done())]).await.as_deref(),
        Some("infer failed: empty response")
    );
    assert_eq!(
        answer_error(vec![Ok(done())]).await.as_deref(),
        Some("infer failed: empty response")
    );
    assert_eq!(
        answer_error(vec![text("hi")]).await.as_deref(),
        Some("infer failed: stream ended without completion")
    );
    assert_eq!(
        answer_error(vec![text("hi"), Ok(done()), Ok(done())])
            .await
            .as_deref(),
        Some("infer failed: stream completed more than once")
    );
    assert_eq!(
        answer_error(vec![text("hi"), Ok(done()), text("more")])
            .await
            .as_deref(),
        Some("infer failed: stream sent text after completion")
    );
    assert_eq!(
        answer_error(vec![
            text("hi"),
            Err(BackendError::Failed("decode error".into()))
        ])
        .await
        .as_deref(),
        Some("infer failed: decode error")
    );
}

#[tokio::test]
async fn no_models_is_not_a_pass() {
    let b = Scripted::new(&[]);
    let r = run_test(&b, &[], T, |_| {}).await;
    assert!(!r.ok);
    assert!(r.models.is_empty() && r.failing_model.is_none());
}

#[test]
fn results_serialize_as_documented_in_the_api() {
    let r = TestResult {
        ok: false,
        backend_id: "embedded".into(),
        started_at_ms: 1_790_000_000_000,
        models: vec![
            ModelResult {
                model: "a".into(),
                load_ms: 120,
                health_ms: 2,
                infer_ms: 95,
                error: None,
            },
            ModelResult {
                model: "b".into(),
                load_ms: 0,
                health_ms: 0,
                infer_ms: 0,
                error: Some("load failed: file not found".into()),
            },
        ],
        failing_model: Some("b".into()),
    };
    let doc = json!({"ok": false, "backend_id": "embedded", "started_at_ms": 1790000000000u64,
     "models": [{"model": "a", "load_ms": 120, "health_ms": 2, "infer_ms": 95, "error": null},
                {"model": "b", "load_ms": 0, "health_ms": 0, "infer_ms": 0,
                 "error": "load failed: file not found"}],
     "failing_model": "b"});
    assert_eq!(serde_json::to_value(&r).unwrap(), doc);
    assert_eq!(serde_json::from_value::<TestResult>(doc).unwrap(), r);
}

#[test]
fn progress_serializes_with_a_kind_tag() {
    let p = TestProgress::Step {
        model: "a".into(),
        step: TestStep::Health,
    };
    assert_eq!(
        serde_json::to_value(&p).unwrap(),
        json!({"kind": "step", "model": "a", "step": "health"})
    );
}

/// The node runs tests on spawned tasks, which needs the test future to be `Send`.
#[test]
fn a_test_run_can_be_spawned() {
    fn assert_send<T: Send>(_: &T) {}
    let b = Scripted::new(&[]);
    let models = names(&["a"]);
    let fut = run_test(&b, &models, T, |_| {});
    assert_send(&fut);
}
