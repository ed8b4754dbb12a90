//! OpenAI features of the embedded engine on a real node: structured output (grammar sampling),
//! logprobs streamed and not, cheap rejection of prompts that cannot fit, and embeddings.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

fn chat(node: &NodeProc, extra: Value) -> (u16, Value) {
    let mut body = json!({"model": MODEL, "temperature": 0, "max_tokens": 96,
        "messages": [{"role": "user", "content": "Describe a cat named Tom who is 3 years old."}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    post_json(&format!("{}/v1/chat/completions", node.url), &body)
}

fn content(v: &Value) -> &str {
    v["choices"][0]["message"]["content"].as_str().unwrap()
}

#[test]
fn structured_output_logprobs_and_cheap_rejection() {
    let node = NodeProc::start(&[]);
    node.wait_state("serving", Duration::from_secs(180));

    // json_object: the answer is one JSON object, whatever the model would have said.
    let (code, v) = chat(&node, json!({"response_format": {"type": "json_object"}}));
    assert_eq!(code, 200, "{v}");
    if v["choices"][0]["finish_reason"] == "stop" {
        let parsed: Value = serde_json::from_str(content(&v))
            .unwrap_or_else(|e| panic!("json_object answer is not JSON ({e}): {}", content(&v)));
        assert!(parsed.is_object(), "{parsed}");
    } else {
        assert!(content(&v).trim_start().starts_with('{'), "{}", content(&v));
    }

    // json_schema: required fields with their types.
    let schema = json!({"type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"], "additionalProperties": false});
    let (code, v) = chat(
        &node,
        json!({"max_tokens": 64, "response_format": {"type": "json_schema",
               "json_schema": {"name": "cat", "schema": schema}}}),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    let cat: Value = serde_json::from_str(content(&v)).unwrap();
    assert!(cat["name"].is_string() && cat["age"].is_i64(), "{cat}");
    assert_eq!(cat.as_object().unwrap().len(), 2, "{cat}");

    // logprobs, not streamed: one entry per completion token, each with its alternatives.
    let (code, v) = chat(
        &node,
        json!({"max_tokens": 8, "logprobs": true, "top_logprobs": 2}),
    );
    assert_eq!(code, 200, "{v}");
    let lps = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(
        lps.len() as u64,
        v["usage"]["completion_tokens"].as_u64().unwrap()
    );
    let joined: String = lps.iter().map(|l| l["token"].as_str().unwrap()).collect();
    assert_eq!(joined, content(&v));
    for l in lps {
        let lp = l["logprob"].as_f64().unwrap();
        assert!(lp <= 0.0, "{l}");
        let top = l["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 2, "{l}");
        // Greedy: the chosen token is the most likely one.
        assert!(
            (top[0]["logprob"].as_f64().unwrap() - lp).abs() < 1e-4,
            "{l}"
        );
    }
    // Without the option there are none.
    let (_, v) = chat(&node, json!({"max_tokens": 4}));
    assert!(v["choices"][0]["logprobs"].is_null(), "{v}");

    // logprobs, streamed: the chunks that carry text carry their tokens' logprobs.
    let (code, body) = post_raw(
        &format!("{}/v1/chat/completions", node.url),
        &json!({"model": MODEL, "temperature": 0, "max_tokens": 8, "stream": true,
                "logprobs": true, "messages": [{"role": "user", "content": "Hi"}]})
        .to_string(),
    );
    assert_eq!(code, 200, "{body}");
    let mut streamed = 0;
    for d in sse_data(&body).iter().filter(|d| *d != "[DONE]") {
        let c: Value = serde_json::from_str(d).unwrap();
        if let Some(content) = c["choices"][0]["logprobs"]["content"].as_array() {
            streamed += content.len();
        }
    }
    assert!(streamed >= 1, "{body}");

    // Legacy completions: OpenAI's parallel arrays.
    let (code, v) = post_json(
        &format!("{}/v1/completions", node.url),
        &json!({"model": MODEL, "prompt": "Once upon a time", "max_tokens": 5,
                "temperature": 0, "logprobs": 1}),
    );
    assert_eq!(code, 200, "{v}");
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 5, "{v}");
    assert_eq!(lp["token_logprobs"].as_array().unwrap().len(), 5);
    assert_eq!(lp["text_offset"][0], 0);

    // A prompt far beyond the context is rejected from its size, naming the field.
    let huge = "word ".repeat(400_000);
    let (code, v) = post_json(
        &format!("{}/v1/chat/completions", node.url),
        &json!({"model": MODEL, "messages": [{"role": "user", "content": huge}]}),
    );
    assert_eq!(code, 400, "{v}");
    assert_eq!(v["error"]["param"], "messages", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("bytes"),
        "{v}"
    );
}

fn embed(node: &NodeProc, body: Value) -> (u16, Value) {
    post_json(&format!("{}/v1/embeddings", node.url), &body)
}

fn dot(a: &Value, b: &Value) -> f64 {
    let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
    a.iter()
        .zip(b)
        .map(|(x, y)| x.as_f64().unwrap() * y.as_f64().unwrap())
        .sum()
}

#[test]
fn embeddings_are_unit_vectors_in_input_order_and_bad_input_is_400() {
    let node = NodeProc::start(&[]);
    node.wait_state("serving", Duration::from_secs(180));
    let inputs = [
        "The cat sat on the mat.",
        "Quarterly revenue grew 4%.",
        "The cat sat on the mat.",
    ];
    let (code, v) = embed(&node, json!({"model": MODEL, "input": inputs}));
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["object"].as_str(), v["model"].as_str()),
        (Some("list"), Some(MODEL))
    );
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    let vecs: Vec<&Value> = data.iter().map(|d| &d["embedding"]).collect();
    for (i, d) in data.iter().enumerate() {
        assert_eq!(
            (d["object"].as_str(), d["index"].as_u64()),
            (Some("embedding"), Some(i as u64))
        );
        // SmolLM2-135M's hidden width; unit length, so a dot product is the cosine.
        assert_eq!(d["embedding"].as_array().unwrap().len(), 576);
        assert!((dot(vecs[i], vecs[i]) - 1.0).abs() < 1e-3);
    }
    assert!(
        (dot(vecs[0], vecs[2]) - 1.0).abs() < 1e-4,
        "same text, same vector"
    );
    assert!(dot(vecs[0], vecs[1]) < 0.999, "different texts differ");
    let tokens = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(
        tokens >= 12 && v["usage"]["total_tokens"].as_u64() == Some(tokens),
        "{v}"
    );

    // base64 (what the official clients ask for): the same floats, little-endian.
    let (code, b) = embed(
        &node,
        json!({"model": MODEL, "input": inputs[0], "encoding_format": "base64"}),
    );
    assert_eq!(code, 200, "{b}");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let floats: Vec<f64> = raw
        .chunks_exact(4)
        .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
        .collect();
    assert!((dot(&json!(floats), vecs[0]) - 1.0).abs() < 1e-4);

    // One string is one input; generation still works beside it.
    let (code, one) = embed(&node, json!({"model": MODEL, "input": inputs[0]}));
    assert_eq!(code, 200, "{one}");
    assert!((dot(&one["data"][0]["embedding"], vecs[0]) - 1.0).abs() < 1e-4);
    let (code, c) = chat(&node, json!({"max_tokens": 4}));
    assert_eq!(code, 200, "{c}");

    for (body, param) in [
        (json!({"model": MODEL, "input": [1, 2, 3]}), "input"),
        (json!({"model": MODEL, "input": []}), "input"),
        (json!({"model": MODEL, "input": [""]}), "input"),
        (json!({"model": MODEL}), "input"),
        (json!({"input": "x"}), "model"),
        (
            json!({"model": MODEL, "input": "x", "encoding_format": "int8"}),
            "encoding_format",
        ),
        (
            json!({"model": MODEL, "input": "x", "dimensions": 8}),
            "dimensions",
        ),
    ] {
        let (code, e) = embed(&node, body.clone());
        assert_eq!(code, 400, "{body} → {e}");
        assert_eq!(e["error"]["param"], param, "{body} → {e}");
    }
    let (code, e) = embed(&node, json!({"model": "no-such-model", "input": "x"}));
    assert_eq!(code, 404, "{e}");
}

#[test]
fn n_choices_come_back_indexed_streamed_and_not_with_usage_for_all() {
    // One slot: the choices then never share a batch, whose make-up changes the floating-point
    // sums and so what a seed gives (docs/api.md, `seed`).
    let node = NodeProc::start(&["--slots", "1"]);
    node.wait_state("serving", Duration::from_secs(180));

    // Not streamed: three choices, indexed 0..3, usage counting every choice's tokens.
    let (code, v) = chat(
        &node,
        json!({"n": 3, "max_tokens": 6, "temperature": 0.9, "seed": 11}),
    );
    assert_eq!(code, 200, "{v}");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{v}");
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i, "{v}");
        assert!(!c["message"]["content"].as_str().unwrap().is_empty(), "{v}");
    }
    let usage = &v["usage"];
    let done = usage["completion_tokens"].as_u64().unwrap();
    assert!((3..=18).contains(&done), "{v}");
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + done
    );
    // The same seed gives the same choices: each sub-request's seed is derived from it.
    let (_, again) = chat(
        &node,
        json!({"n": 3, "max_tokens": 6, "temperature": 0.9, "seed": 11}),
    );
    assert_eq!(again["choices"], v["choices"], "{again}");

    // Streamed: every choice's deltas under its index, one usage chunk, one [DONE].
    let (code, body) = post_raw(
        &format!("{}/v1/chat/completions", node.url),
        &json!({"model": MODEL, "max_tokens": 5, "stream": true, "n": 2, "seed": 3,
                "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "Hi"}]})
        .to_string(),
    );
    assert_eq!(code, 200, "{body}");
    let data = sse_data(&body);
    assert_eq!(data.iter().filter(|d| *d == "[DONE]").count(), 1, "{body}");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let mut text = [String::new(), String::new()];
    let mut usage_chunks = 0;
    for c in &chunks {
        assert_eq!(c["id"], chunks[0]["id"], "one stream, one id: {body}");
        for choice in c["choices"].as_array().unwrap() {
            let i = choice["index"].as_u64().unwrap() as usize;
            text[i] += choice["delta"]["content"].as_str().unwrap_or("");
        }
        if c["usage"].is_object() {
            usage_chunks += 1;
            assert!(
                c["usage"]["completion_tokens"].as_u64().unwrap() >= 2,
                "{c}"
            );
        }
    }
    assert_eq!(usage_chunks, 1, "{body}");
    assert!(text.iter().all(|t| !t.is_empty()), "{text:?}");

    // Legacy completions take `n` too.
    let (code, v) = post_json(
        &format!("{}/v1/completions", node.url),
        &json!({"model": MODEL, "prompt": "Once upon a time", "max_tokens": 4, "n": 2}),
    );
    assert_eq!(code, 200, "{v}");
    let idx: Vec<u64> = v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, vec![0, 1], "{v}");

    // Beyond the bound: 400 naming `n`; and a sub-request's refusal is the request's.
    let (code, v) = chat(&node, json!({"n": 9}));
    assert_eq!(code, 400, "{v}");
    assert_eq!(v["error"]["param"], "n");
    let (code, v) = chat(&node, json!({"n": 2, "model": "no-such-model"}));
    assert_eq!(code, 404, "{v}");
}
