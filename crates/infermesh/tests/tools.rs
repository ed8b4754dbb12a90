//! `tools` on a real llama-server (its Jinja chat template renders the definitions and its parser
//! returns the calls): through the `llama_server` driver, a whole answer and a stream each come
//! back with the call; with `--jinja` turned off the driver refuses the request, naming why.
//! Then through a real node serving the model on llama-server, as a client sees it.
//!
//! SmolLM2's own template describes no tools, so the model runs with a ChatML template that does
//! (`assets/chatml-tools.jinja`, Hermes/Qwen style). A 135M model does not decide to call a tool
//! by itself, so the conversation ends with the start of the call as the assistant's own words
//! (llama-server continues a last assistant message): what is tested is that definitions,
//! messages and calls pass through infermesh intact, not the model's judgement.

mod common;
mod driver_support;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{post_json, NodeProc};
use driver_support::*;
use infermesh_backend::model_fetch::SMOLLM2_135M;
use infermesh_backend::{Backend, BackendError, FinishReason, InferEvent, ModelSpec};
use serde_json::{json, Map, Value};

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "The weather in a city now.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}])
}

fn messages() -> Value {
    json!([{"role": "user", "content": "What is the weather in Paris?"},
           {"role": "assistant",
            "content": "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Par"}])
}

/// The client's tool fields, as `parse::chat` keeps them.
fn tool_fields() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("tools".into(), weather_tool());
    m.insert("tool_choice".into(), json!("required"));
    m.insert("parallel_tool_calls".into(), json!(false));
    m.insert("messages".into(), messages());
    m
}

fn template() -> String {
    format!(
        "{}/tests/assets/chatml-tools.jinja",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn spec(gguf: &std::path::Path, extra: Value) -> ModelSpec {
    let mut args = BTreeMap::from([
        ("path".to_string(), json!(gguf)),
        ("chat-template-file".to_string(), json!(template())),
        ("threads".to_string(), json!(1)),
        ("parallel".to_string(), json!(1)),
    ]);
    if let Value::Object(o) = extra {
        args.extend(o);
    }
    ModelSpec {
        name: SMOLLM2_135M.name.into(),
        args,
    }
}

fn assert_weather_call(call: &Value) {
    assert_eq!(call["function"]["name"], "get_weather", "{call}");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("arguments are JSON ({e}): {call}"));
    assert_eq!(args, json!({"city": "Paris"}), "{call}");
}

#[test]
fn llama_server_answers_with_tool_calls_whole_and_streamed() {
    let Some((binary, gguf, _turn)) = llama_setup() else {
        return;
    };
    let b = llama_backend(binary, vec![spec(&gguf, json!({}))]);
    block_on(async {
        b.load(SMOLLM2_135M.name).await.unwrap();
        let mut req = chat(SMOLLM2_135M.name, "What is the weather in Paris?", 32);
        req.params.tools = Some(tool_fields());
        let whole = b.complete(&req).await.expect("a relay path").unwrap();
        eprintln!("whole answer: {whole}");
        assert_weather_call(&whole["choices"][0]["message"]["tool_calls"][0]);

        let mut rx = b.infer(req).await.unwrap();
        let (mut pieces, mut finish) = (Vec::new(), None);
        while let Some(ev) = rx.recv().await {
            match ev.unwrap() {
                InferEvent::ToolCalls(c) => pieces.push(c),
                InferEvent::Done { finish_reason, .. } => finish = Some(finish_reason),
                _ => {}
            }
        }
        // The model goes on calling until the token limit; a call it closed is what counts.
        assert!(
            matches!(finish, Some(FinishReason::ToolCalls | FinishReason::Length)),
            "{finish:?}"
        );
        let first: Vec<&Value> = pieces
            .iter()
            .filter_map(|p| p.get(0))
            .filter(|c| c["index"] == 0)
            .collect();
        let name: String = first
            .iter()
            .filter_map(|c| c["function"]["name"].as_str())
            .collect();
        let args: String = first
            .iter()
            .filter_map(|c| c["function"]["arguments"].as_str())
            .collect();
        eprintln!("streamed: {} pieces, {name}({args})", pieces.len());
        assert_eq!(name, "get_weather");
        assert_eq!(
            serde_json::from_str::<Value>(&args).ok(),
            Some(json!({"city": "Paris"})),
            "{args}"
        );
        b.stop().await.unwrap();
    });
}

#[test]
fn llama_server_without_jinja_refuses_tools_saying_why() {
    let Some((binary, gguf, _turn)) = llama_setup() else {
        return;
    };
    let b = llama_backend(binary, vec![spec(&gguf, json!({"jinja": false}))]);
    let mut req = chat(SMOLLM2_135M.name, "hi", 8);
    req.params.tools = Some(tool_fields());
    // Refused before anything is sent: no model needs to be loaded.
    let err = block_on(b.infer(req)).expect_err("refused");
    match err {
        BackendError::BadParam { message, param } => {
            assert_eq!(param, "tools");
            assert!(message.contains("--jinja"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_node_on_llama_server_passes_tools_through() {
    let Some((binary, gguf, _turn)) = llama_setup() else {
        return;
    };
    let node = NodeProc::start(&["--standby", "--schedule", "learn"]);
    let (code, v) = post_json(
        &format!("{}/admin/v1/nodes", node.url),
        &json!({"id": "ls", "driver": "llama_server", "binary": binary,
                "models": [{"name": "smol", "args": {"path": gguf, "threads": 1, "parallel": 1,
                                                     "chat-template-file": template()}}],
                "serve": "smol"}),
    );
    assert_eq!(code, 201, "{v}");
    node.wait_state("serving", Duration::from_secs(60));
    let url = format!("{}/v1/chat/completions", node.url);
    let body = json!({"model": "smol", "max_tokens": 32, "temperature": 0,
        "tools": weather_tool(), "tool_choice": "required", "parallel_tool_calls": false,
        "messages": messages()});
    let (code, v) = post_json(&url, &body);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["model"], "smol");
    assert_weather_call(&v["choices"][0]["message"]["tool_calls"][0]);

    // Streamed: the call arrives in pieces, in OpenAI's chunk shape.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let text = reqwest::blocking::Client::new()
        .post(&url)
        .json(&streamed)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let datas = common::sse_data(&text);
    let chunks: Vec<Value> = datas
        .iter()
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    let first: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["delta"]["tool_calls"][0])
        .filter(|c| c["index"] == 0)
        .collect();
    let args: String = first
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .collect();
    assert!(
        chunks.iter().any(
            |c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "get_weather"
        ),
        "{text}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&args).ok(),
        Some(json!({"city": "Paris"})),
        "{args}"
    );
    assert_eq!(datas.last().map(String::as_str), Some("[DONE]"));
}
