//! The embedded engine on SmolLM2-135M: prompt processing and generation tokens/s measured in the
//! engine itself, then the same request end to end through a node's HTTP API. The two runs never
//! overlap: on a small machine they would share the same cores.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use infermesh_backend::engine::{Engine, EngineConfig};
use infermesh_backend::model_fetch::{ensure_model, SMOLLM2_135M};
use infermesh_backend::{ChatMessage, GenParams, InferEvent, Priority, Prompt};
use serde_json::{json, Value};

use super::nodes::BenchNode;
use super::Report;

const SUITE: &str = "engine";
const RUNS: usize = 3;
const MAX_TOKENS: u32 = 128;
/// About 200 prompt tokens, so prompt processing is measured on a real batch.
const PROMPT: &str = "You are reviewing the design of a small service that serves language \
models from several machines as one mesh. Each machine runs a node; nodes gossip their state \
over UDP, validate their backends in rounds at fixed times, and route each request to a node \
that serves the model, preferring the local one and then the least loaded peer. Requests that \
fail before any byte reached the client are retried on another replica. Operators sign admin \
changes with an ed25519 key. Write a detailed, friendly explanation of how such a mesh keeps \
serving when one machine crashes, what the client sees, and what an operator should watch on a \
dashboard, in several paragraphs with concrete examples.";

struct Sample {
    prompt_tokens: u32,
    completion_tokens: u32,
    prompt_ms: f64,
    gen_ms: f64,
    wall: Duration,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

async fn direct(engine: &Engine) -> Result<Sample> {
    let t0 = Instant::now();
    let mut rx = engine.submit(
        Prompt::Chat(vec![ChatMessage {
            role: "user".into(),
            content: PROMPT.into(),
        }]),
        GenParams {
            max_tokens: MAX_TOKENS,
            temperature: 0.0,
            ..GenParams::default()
        },
        Priority::User,
    )?;
    while let Some(ev) = rx.recv().await {
        if let InferEvent::Done {
            usage,
            prompt_ms,
            gen_ms,
            ..
        } = ev?
        {
            return Ok(Sample {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                prompt_ms,
                gen_ms,
                wall: t0.elapsed(),
            });
        }
    }
    bail!("the engine ended without a Done event")
}

async fn over_http(
    http: &reqwest::Client,
    node: &BenchNode,
    model: &str,
) -> Result<(u32, u32, Duration)> {
    let t0 = Instant::now();
    let resp = http
        .post(format!("{}/v1/chat/completions", node.url))
        .json(
            &json!({"model": model, "max_tokens": MAX_TOKENS, "temperature": 0,
                      "messages": [{"role": "user", "content": PROMPT}]}),
        )
        .send()
        .await?;
    let status = resp.status();
    let v: Value = resp.json().await?;
    let wall = t0.elapsed();
    if !status.is_success() {
        bail!("{status}: {v}");
    }
    let u = &v["usage"];
    Ok((
        u["prompt_tokens"].as_u64().unwrap_or(0) as u32,
        u["completion_tokens"].as_u64().unwrap_or(0) as u32,
        wall,
    ))
}

pub async fn run(model_dir: &Path, report: &mut Report) -> Result<()> {
    let dir = model_dir.to_path_buf();
    let path = tokio::task::spawn_blocking(move || {
        ensure_model(&SMOLLM2_135M, &dir, &mut |line| eprintln!("bench: {line}"))
    })
    .await??;
    let cfg = EngineConfig::default();
    let threads = cfg.n_threads;
    let (engine, load) = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            Engine::load(&path, &cfg, |_| true).map(|e| (e, t0.elapsed()))
        })
        .await??
    };
    // One warm-up (page cache, first-use allocations), then the measured runs.
    direct(&engine).await?;
    let mut samples = Vec::new();
    for _ in 0..RUNS {
        samples.push(direct(&engine).await?);
    }
    drop(engine);
    let s0 = &samples[0];
    let prompt_tps = median(
        samples
            .iter()
            .map(|s| s.prompt_tokens as f64 / (s.prompt_ms / 1e3))
            .collect(),
    );
    let gen_tps = median(
        samples
            .iter()
            .map(|s| s.completion_tokens as f64 / (s.gen_ms / 1e3))
            .collect(),
    );
    let wall = median(samples.iter().map(|s| s.wall.as_secs_f64()).collect());
    let e2e_tps = s0.completion_tokens as f64 / wall;
    report.row(
        SUITE,
        "model load (SmolLM2-135M Q4_1)",
        format!("{:.2} s", load.as_secs_f64()),
    );
    report.row(
        SUITE,
        format!(
            "prompt processing, engine ({} tokens, {threads} threads)",
            s0.prompt_tokens
        ),
        format!("{prompt_tps:.0} tok/s"),
    );
    report.row(
        SUITE,
        format!(
            "generation, engine ({} tokens, greedy)",
            s0.completion_tokens
        ),
        format!("{gen_tps:.0} tok/s"),
    );
    report.row(
        SUITE,
        "whole request in the engine (prompt + generation)",
        format!("{:.3} s = {e2e_tps:.0} completion tok/s", wall),
    );

    // The same request through a node's HTTP API (non-streamed, so the wall time is the whole
    // answer), the node loading the same file.
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()?;
    let node = BenchNode::serving_file(
        "bench-engine",
        &path,
        SMOLLM2_135M.name,
        &[],
        model_dir,
        &http,
    )
    .await?;
    let (idle, _) = node.rss_mib();
    over_http(&http, &node, SMOLLM2_135M.name)
        .await
        .context("warm-up over HTTP")?;
    let mut walls = Vec::new();
    let mut tokens = (0, 0);
    for _ in 0..RUNS {
        let (p, c, w) = over_http(&http, &node, SMOLLM2_135M.name).await?;
        tokens = (p, c);
        walls.push(w.as_secs_f64());
    }
    let (_, peak) = node.rss_mib();
    node.stop().await;
    let http_wall = median(walls);
    if tokens != (s0.prompt_tokens, s0.completion_tokens) {
        report.note(format!(
            "engine and HTTP runs differ in tokens: engine {}+{}, HTTP {}+{}",
            s0.prompt_tokens, s0.completion_tokens, tokens.0, tokens.1
        ));
    }
    let http_tps = tokens.1 as f64 / http_wall;
    let overhead = http_wall / wall;
    report.row(
        SUITE,
        "whole request over HTTP (same prompt, non-streamed)",
        format!("{http_wall:.3} s = {http_tps:.0} completion tok/s"),
    );
    report.goal(
        SUITE,
        "HTTP API overhead (HTTP wall / engine wall)",
        format!("{overhead:.3}×"),
        "≤ 1.05×",
        overhead <= 1.05,
    );
    report.row(
        SUITE,
        "engine node RSS idle (model loaded) → peak",
        format!("{idle:.1} → {peak:.1} MiB"),
    );
    super::concurrency::run(&path, model_dir, report).await
}
