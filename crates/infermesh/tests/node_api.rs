//! `infermesh up` end to end: a real node, the real default model, real HTTP.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn chat_body(content: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 24,
        "temperature": 0,
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

#[test]
fn node_serves_the_default_model_and_reports_state() {
    let node = NodeProc::start(&["--name", "alpha"]);
    let first = node.status();
    assert!(
        ["loading", "serving"].contains(&first["node_state"].as_str().unwrap()),
        "a node with an assigned model is loading or serving, never standby: {first}"
    );

    let s = node.wait_state("serving", Duration::from_secs(180));
    assert_eq!(s["node_status"], "Serving");
    assert_eq!(s["name"], "alpha");
    assert_eq!(s["node_id"].as_str().unwrap().len(), 16);
    assert_eq!(s["models"], json!([MODEL]));
    assert_eq!(s["peers"], json!([]));
    assert_eq!(s["wakeable"], json!([]));
    assert_eq!(s["backends"][0]["phase"], "ready");
    assert!(s["vram_gb"].as_f64().unwrap() > 0.05, "{s}");

    let (code, models) = get_json(&format!("{}/v1/models", node.url));
    assert_eq!(code, 200);
    assert_eq!(models["data"][0]["id"], MODEL);

    // Non-streamed: model-generated text and consistent usage.
    let (code, r) = post_json(
        &format!("{}/v1/chat/completions", node.url),
        &chat_body("What is the capital of France?", json!({})),
    );
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["object"], "chat.completion");
    let text = r["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!text.trim().is_empty(), "empty completion: {r}");
    assert!(
        text.contains("Paris"),
        "the model should know this one: {text}"
    );
    let u = &r["usage"];
    assert!(u["prompt_tokens"].as_u64().unwrap() > 5);
    let completion = u["completion_tokens"].as_u64().unwrap();
    assert!((1..=24).contains(&completion), "{u}");
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + completion
    );

    // Streamed: role chunk, content chunks, finish chunk, usage chunk, [DONE]; same greedy text.
    let (code, body) = post_raw(
        &format!("{}/v1/chat/completions", node.url),
        &chat_body(
            "What is the capital of France?",
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        )
        .to_string(),
    );
    assert_eq!(code, 200, "{body}");
    let data = sse_data(&body);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        streamed, text,
        "streamed and non-streamed greedy output differ"
    );
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str())
        .expect("a finish chunk");
    assert!(["stop", "length"].contains(&finish));
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], completion);

    // max_tokens and stop are honoured.
    let (_, r) = post_json(
        &format!("{}/v1/chat/completions", node.url),
        &chat_body("Count from 1 to 20.", json!({"max_tokens": 3})),
    );
    assert_eq!(r["usage"]["completion_tokens"], 3, "{r}");
    assert_eq!(r["choices"][0]["finish_reason"], "length");
    let (_, r) = post_json(
        &format!("{}/v1/chat/completions", node.url),
        &chat_body("What is the capital of France?", json!({"stop": ["Paris"]})),
    );
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    assert!(!r["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("Paris"));

    // Legacy completions take a raw prompt.
    let (code, r) = post_json(
        &format!("{}/v1/completions", node.url),
        &json!({"model": MODEL, "prompt": "The capital of France is", "max_tokens": 5, "temperature": 0}),
    );
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["object"], "text_completion");
    assert!(!r["choices"][0]["text"].as_str().unwrap().is_empty());
}

#[test]
fn bad_requests_get_openai_errors() {
    let node = NodeProc::start(&[]);
    node.wait_state("serving", Duration::from_secs(180));
    let url = format!("{}/v1/chat/completions", node.url);
    let cases: [(&str, u16, Option<&str>); 7] = [
        ("{not json", 400, None),
        (
            r#"{"model":"smollm2-135m-instruct"}"#,
            400,
            Some("messages"),
        ),
        (
            r#"{"model":"smollm2-135m-instruct","messages":[]}"#,
            400,
            Some("messages"),
        ),
        (
            r#"{"model":"smollm2-135m-instruct","messages":[{"role":"user","content":"x"}],"temperature":9}"#,
            400,
            Some("temperature"),
        ),
        (
            r#"{"model":"no-such-model","messages":[{"role":"user","content":"x"}]}"#,
            404,
            Some("model"),
        ),
        (
            r#"{"model":"smollm2-135m-instruct","messages":[{"role":"tool","content":"x","tool_call_id":"1"}]}"#,
            400,
            Some("messages[0].role"),
        ),
        // The embedded engine renders no tool definitions: a 400 naming what would.
        (
            r#"{"model":"smollm2-135m-instruct","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}]}"#,
            400,
            Some("tools"),
        ),
    ];
    for (body, want, param) in cases {
        let (code, text) = post_raw(&url, body);
        assert_eq!(code, want, "{body} -> {text}");
        let v: Value = serde_json::from_str(&text).expect("error body is JSON");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{text}"
        );
        assert!(v["error"]["type"].is_string(), "{text}");
        if let Some(p) = param {
            assert_eq!(v["error"]["param"], p, "{text}");
        }
    }
    // A prompt longer than the context is the client's error, reported before any byte streams.
    let long = "word ".repeat(3000);
    let (code, text) = post_raw(&url, &chat_body(&long, json!({"stream": true})).to_string());
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("context"), "{text}");

    let (code, v) = get_json(&format!("{}/no/such/route", node.url));
    assert_eq!(code, 404);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("GET /no/such/route"));
}

#[test]
fn client_node_serves_no_model() {
    let node = NodeProc::start(&["--client"]);
    let s = node.status();
    assert_eq!(s["node_state"], "client");
    assert_eq!(s["node_status"], "Client");
    assert_eq!(s["models"], json!([]));
    assert_eq!(s["backends"], json!([]));
    // A client alone can answer nothing, and says why rather than "no such model".
    let (code, body) = post_json(
        &format!("{}/v1/chat/completions", node.url),
        &chat_body("hi", json!({})),
    );
    assert_eq!(code, 503, "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.starts_with("no peers reachable"), "{msg}");
}

#[test]
fn requests_while_loading_get_503_and_a_broken_model_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    // A FIFO with no writer: llama.cpp blocks opening it, so the node stays `loading`.
    let fifo = dir.path().join("slow.gguf");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let node = NodeProc::start(&["--model", fifo.to_str().unwrap()]);
    let s = node.wait_state("loading", Duration::from_secs(10));
    assert_eq!(s["backends"][0]["phase"], "loading");
    let body = json!({"model": "slow", "messages": [{"role": "user", "content": "x"}]});
    let (code, v) = post_json(&format!("{}/v1/chat/completions", node.url), &body);
    assert_eq!(code, 503, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("loading"),
        "{v}"
    );
    // Closing the FIFO empty makes the load fail: the node says so and keeps answering 503.
    std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let start = std::time::Instant::now();
    loop {
        let s = node.status();
        if s["backends"][0]["phase"] == "failed" {
            assert!(
                s["backends"][0]["detail"]
                    .as_str()
                    .unwrap()
                    .contains("slow.gguf"),
                "{s}"
            );
            assert_eq!(
                s["node_state"], "loading",
                "assigned but not healthy is loading"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "load never failed: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, v) = post_json(&format!("{}/v1/chat/completions", node.url), &body);
    assert_eq!(code, 503, "{v}");
    assert!(node
        .stderr_lines()
        .iter()
        .any(|l| l.contains("ERROR") && l.contains("Backend embedded failed: ")));
}

#[test]
fn identity_persists_and_sigterm_is_clean() {
    let mut a = NodeProc::start(&["--client"]);
    let id = a.status()["node_id"].clone();
    assert!(a.terminate().success(), "SIGTERM must exit 0");
    let b = NodeProc::start_in(
        std::mem::replace(&mut a.data_dir, tempfile::tempdir().unwrap()),
        &["--client"],
    );
    assert_eq!(b.status()["node_id"], id, "node id must survive a restart");
}

#[test]
fn missing_model_file_is_a_clear_cli_error() {
    let out = std::process::Command::new(bin())
        .args([
            "up",
            "--port",
            "0",
            "--model",
            "/nonexistent/m.gguf",
            "--data-dir",
        ])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/m.gguf") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn a_second_node_on_a_data_dir_in_use_exits_1_naming_the_first_and_the_fix() {
    let first = NodeProc::start(&["--standby", "--name", "first"]);
    first.wait_state("standby", Duration::from_secs(60));
    let before = std::fs::read_dir(first.data_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect::<std::collections::BTreeSet<_>>();
    let mut second = std::process::Command::new(bin())
        .args([
            "up",
            "--standby",
            "--port",
            "0",
            "--gossip-port",
            "0",
            "--data-dir",
        ])
        .arg(first.data_dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A second node that starts anyway must fail this test, not hang it.
    let t0 = std::time::Instant::now();
    while second.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = second.kill();
            panic!("a second node started on a data dir in use");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = second.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let pid = first.child.id().to_string();
    assert!(
        err.contains("is in use by a running node")
            && err.contains(&format!("(pid {pid})"))
            && err.contains("--data-dir"),
        "{err}"
    );
    // Nothing of the first node was touched: same files, still answering as before.
    let after = std::fs::read_dir(first.data_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(before, after);
    assert_eq!(first.status()["name"], "first");
    assert_eq!(first.status()["node_state"], "standby");
}
