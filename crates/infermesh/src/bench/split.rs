//! A model split over three nodes (host + two workers, forced by `--max-mem`) against the same
//! GGUF on one `llama-server`, the same program without RPC, in the same run: decode tokens/s,
//! time to first token, and the RPC bytes the host's tunnels carry per generated token.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};

use super::concurrency::{start_llama_server, streamed, Streamed};
use super::nodes::BenchNode;
use super::Report;
use crate::split_setup::find_tool;

const SUITE: &str = "split";
const MODEL: &str = "smollm2";
const ANSWER_TOKENS: u32 = 64;
const RUNS: usize = 5;

async fn one(http: &reqwest::Client, base: &str, n: usize) -> Result<Streamed> {
    let body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": format!("Question {n}: in two sentences, why do meshes of machines fail over?")}],
        "max_tokens": ANSWER_TOKENS, "temperature": 0.0, "stream": true,
        "stream_options": {"include_usage": true},
    });
    streamed(http, &format!("{base}/v1/chat/completions"), &body).await
}

/// Medians over `RUNS` answers after one warm-up: (decode tok/s, TTFT s, tokens generated).
async fn measure(http: &reqwest::Client, base: &str) -> Result<(f64, f64, u64)> {
    one(http, base, 0).await?;
    let (mut rates, mut ttfts, mut tokens) = (Vec::new(), Vec::new(), 0);
    for i in 1..=RUNS {
        let s = one(http, base, i).await?;
        let decode = (s.total - s.first).as_secs_f64();
        if s.tokens > 1 && decode > 0.0 {
            rates.push((s.tokens - 1) as f64 / decode);
        }
        ttfts.push(s.first.as_secs_f64());
        tokens += s.tokens;
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    Ok((median(rates), median(ttfts), tokens))
}

/// The reference: one `llama-server` on the GGUF with the split host's own flags.
async fn single(binary: &Path, gguf: &Path, http: &reqwest::Client) -> Result<(f64, f64)> {
    let flags = ["--ctx-size", "2048", "--threads", "1", "--alias", MODEL];
    let (mut child, base) = start_llama_server(binary, gguf, &flags, http).await?;
    let out = measure(http, &base).await;
    let _ = child.kill().await;
    out.map(|(rate, ttft, _)| (rate, ttft))
}

fn traffic(status: &Value) -> (u64, u64) {
    let t = &status["split"]["rpc_traffic"];
    (
        t["to_workers_bytes"].as_u64().unwrap_or(0),
        t["from_workers_bytes"].as_u64().unwrap_or(0),
    )
}

pub async fn run(model_dir: &Path, report: &mut Report) -> Result<()> {
    let llama = find_tool("llama-server", None, "INFERMESH_LLAMA_SERVER");
    let rpc = find_tool("rpc-server", None, "INFERMESH_RPC_SERVER");
    let gguf = infermesh_backend::model_fetch::ensure_model(
        &infermesh_backend::model_fetch::SMOLLM2_135M,
        model_dir,
        &mut |l| eprintln!("bench: {l}"),
    )
    .map_err(|e| anyhow!("{e}"))?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(300))
        .build()?;
    let (one_rate, one_ttft) = single(&llama, &gguf, &http)
        .await
        .with_context(|| format!("llama-server at {}", llama.display()))?;

    let s = |x: &str| x.to_string();
    let host = BenchNode::start(
        "split-host",
        &[
            s("--model"),
            gguf.display().to_string(),
            s("--model-name"),
            s(MODEL),
            s("--max-mem"),
            s("0.22"),
            s("--threads"),
            s("1"),
            s("--llama-server"),
            llama.display().to_string(),
        ],
        model_dir,
    )
    .await?;
    let started = Instant::now();
    let mut workers = Vec::new();
    for i in 1..=2 {
        workers.push(
            BenchNode::start(
                &format!("split-worker-{i}"),
                &[
                    s("--standby"),
                    s("--max-mem"),
                    s("0.06"),
                    s("--threads"),
                    s("1"),
                    s("--rpc-server"),
                    rpc.display().to_string(),
                    s("--join"),
                    host.invite.clone(),
                ],
                model_dir,
            )
            .await?,
        );
    }
    host.wait_status(&http, "the split serving", Duration::from_secs(180), |st| {
        st["split"]["serving"] == true
    })
    .await?;
    let ready_s = started.elapsed().as_secs_f64();
    let before = traffic(&host.status(&http).await?);
    let (rate, ttft, tokens) = measure(&http, &host.url).await?;
    let after = traffic(&host.status(&http).await?);
    let (to, from) = (after.0 - before.0, after.1 - before.1);
    // The warm-up's tokens are in the bytes too: RUNS + 1 answers of about the same length.
    let per_token = |b: u64| b as f64 / (tokens as f64 * (RUNS + 1) as f64 / RUNS as f64);
    report.row(
        SUITE,
        "decode tok/s: 3-node split vs one llama-server",
        format!(
            "{rate:.1} vs {one_rate:.1} tok/s ({:.2}×)",
            rate / one_rate.max(f64::MIN_POSITIVE)
        ),
    );
    report.row(
        SUITE,
        "time to first token: 3-node split vs one llama-server",
        format!(
            "{ttft:.3} vs {one_ttft:.3} s ({:.2}×)",
            ttft / one_ttft.max(f64::MIN_POSITIVE)
        ),
    );
    report.row(
        SUITE,
        "RPC traffic per generated token (host ⇄ workers, prompt included)",
        format!(
            "{:.1} KB to workers, {:.1} KB back",
            per_token(to) / 1e3,
            per_token(from) / 1e3
        ),
    );
    report.row(
        SUITE,
        "workers joined → split serving",
        format!("{ready_s:.1} s"),
    );
    for w in workers {
        w.stop().await;
    }
    host.stop().await;
    Ok(())
}
